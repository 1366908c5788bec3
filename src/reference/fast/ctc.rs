//! `ctc_loss` on `(T, N, C)` float log-probabilities with integer targets (padded `(N, S)` or
//! concatenated), lengths as int lists or integer tensors, every input length at least 1.
//!
//! The alpha and beta recursions run in the probability domain in `f64`, each frame rescaled
//! (its sum carried as a logarithm) and each frame's emissions divided by their largest value,
//! so nothing under- or overflows; a call where that could lose a path (emissions of one frame
//! more than 700 nats apart, a non-finite value, an impossible alignment) is left to the
//! general kernel. The gradient is PyTorch's: `exp(lp) - sum over s with l'_s = c of
//! alpha_t(s) beta_t(s) / (e_t(c) p)`, zero from frame `input_length` on.

use super::{float_tensor, floats, only, reduction, tensor, Red};
use crate::backend::{Call, Gradients, Value};
use crate::tensor::{DType, Tensor};
use rayon::prelude::*;

struct Parsed<'a> {
    input: &'a Tensor,
    lp: &'a [f64],
    t_max: usize,
    n: usize,
    c: usize,
    /// Each sample's labels.
    labels: Vec<Vec<usize>>,
    il: Vec<usize>,
    blank: usize,
    red: Red,
}

fn lengths(v: &Value) -> Option<Vec<i64>> {
    match v {
        Value::IntList(l) => Some(l.clone()),
        Value::Tensor(t) if matches!(t.dtype(), DType::Int64 | DType::Int32) => {
            t.as_i64().map(|s| s.to_vec())
        }
        _ => None,
    }
}

fn parse(call: &Call) -> Option<Parsed<'_>> {
    let names = [
        "log_probs",
        "targets",
        "input_lengths",
        "target_lengths",
        "blank",
        "reduction",
        "zero_infinity",
    ];
    if !only(call, &names) {
        return None;
    }
    let input = float_tensor(call, "log_probs")?;
    let &[t_max, n, c] = input.shape() else {
        return None;
    };
    if t_max == 0 || n == 0 || c == 0 {
        return None;
    }
    let Some(Value::Tensor(targets)) = call.args.get("targets") else {
        return None;
    };
    if !matches!(targets.dtype(), DType::Int64 | DType::Int32) {
        return None;
    }
    let (il, tl) = match (
        call.args.get("input_lengths")?,
        call.args.get("target_lengths")?,
    ) {
        (a @ Value::IntList(_), b @ Value::IntList(_))
        | (a @ Value::Tensor(_), b @ Value::Tensor(_)) => (lengths(a)?, lengths(b)?),
        _ => return None,
    };
    let blank = match call.args.get("blank") {
        None => 0,
        Some(Value::Int(b)) => *b,
        _ => return None,
    };
    match call.args.get("zero_infinity") {
        None | Some(Value::Bool(_)) => {}
        _ => return None,
    }
    if il.len() != n || tl.len() != n || blank < 0 || blank as usize >= c {
        return None;
    }
    if il.iter().any(|&l| l < 1 || l as usize > t_max) || tl.iter().any(|&l| l < 0) {
        return None;
    }
    let tg = targets.as_i64()?;
    let mut labels = Vec::with_capacity(n);
    match *targets.shape() {
        [len] => {
            if tl.iter().sum::<i64>() != len as i64 {
                return None;
            }
            let mut pos = 0;
            for &l in &tl {
                labels.push(&tg[pos..pos + l as usize]);
                pos += l as usize;
            }
        }
        [rows, width] => {
            if rows != n || tl.iter().any(|&l| l as usize > width) {
                return None;
            }
            for (b, &l) in tl.iter().enumerate() {
                labels.push(&tg[b * width..b * width + l as usize]);
            }
        }
        _ => return None,
    }
    let mut out = Vec::with_capacity(n);
    for l in labels {
        if l.iter().any(|&k| k < 0 || k as usize >= c) {
            return None;
        }
        out.push(l.iter().map(|&k| k as usize).collect());
    }
    Some(Parsed {
        input,
        lp: floats(input)?,
        t_max,
        n,
        c,
        labels: out,
        il: il.into_iter().map(|l| l as usize).collect(),
        blank: blank as usize,
        red: reduction(call, false)?,
    })
}

/// One sample's recursion. Returns the negative log-likelihood, and when `grad` is given (a
/// `T x C` buffer) writes `d nll / d lp` there (times `g`).
fn sample(p: &Parsed, b: usize, grad: Option<(&mut [f64], f64)>) -> Option<f64> {
    let labels = &p.labels[b];
    let frames = p.il[b];
    let mut ext = Vec::with_capacity(2 * labels.len() + 1);
    ext.push(p.blank);
    for &l in labels {
        ext.push(l);
        ext.push(p.blank);
    }
    let len = ext.len();
    let row = |t: usize| &p.lp[(t * p.n + b) * p.c..(t * p.n + b + 1) * p.c];
    // Emissions of each frame over the extended labels, divided by their maximum.
    let mut emit = vec![0.0; frames * len];
    let mut shift = vec![0.0; frames];
    for t in 0..frames {
        let r = row(t);
        let mut m = f64::NEG_INFINITY;
        for &k in &ext {
            if !r[k].is_finite() {
                return None;
            }
            m = m.max(r[k]);
        }
        for (s, &k) in ext.iter().enumerate() {
            if r[k] - m < -700.0 {
                return None;
            }
            emit[t * len + s] = (r[k] - m).exp();
        }
        shift[t] = m;
    }
    let skip = |s: usize| s >= 2 && ext[s] != ext[s - 2];
    let want_grad = grad.is_some();
    // alpha, every frame kept when the gradient is wanted.
    let mut alpha = vec![0.0; if want_grad { frames * len } else { 2 * len }];
    let mut log_scale = 0.0;
    let at = |t: usize| if want_grad { t * len } else { (t % 2) * len };
    alpha[0] = emit[0];
    if len > 1 {
        alpha[1] = emit[1];
    }
    let mut sum: f64 = alpha[..len].iter().sum();
    if sum <= 0.0 {
        return None;
    }
    for v in &mut alpha[..len] {
        *v /= sum;
    }
    log_scale += sum.ln() + shift[0];
    for t in 1..frames {
        let (prev, cur) = (at(t - 1), at(t));
        sum = 0.0;
        for s in 0..len {
            let mut a = alpha[prev + s];
            if s >= 1 {
                a += alpha[prev + s - 1];
            }
            if skip(s) {
                a += alpha[prev + s - 2];
            }
            let v = a * emit[t * len + s];
            alpha[cur + s] = v;
            sum += v;
        }
        if !(sum > 1e-280) {
            return None;
        }
        for v in &mut alpha[cur..cur + len] {
            *v /= sum;
        }
        log_scale += sum.ln() + shift[t];
    }
    let last = at(frames - 1);
    let end = alpha[last + len - 1] + if len > 1 { alpha[last + len - 2] } else { 0.0 };
    if !(end > 1e-280) {
        return None;
    }
    let nll = -(log_scale + end.ln());
    if !nll.is_finite() {
        return None;
    }
    let Some((grad, g)) = grad else {
        return Some(nll);
    };
    // beta (including the frame's own emission, as PyTorch defines it), one frame at a time,
    // and the gradient of that frame.
    let mut beta = vec![0.0; len];
    let mut next = vec![0.0; len];
    let mut occ = vec![0.0; p.c];
    for t in (0..frames).rev() {
        if t == frames - 1 {
            beta[len - 1] = emit[t * len + len - 1];
            if len > 1 {
                beta[len - 2] = emit[t * len + len - 2];
            }
        } else {
            for s in 0..len {
                let mut v = next[s];
                if s + 1 < len {
                    v += next[s + 1];
                }
                if s + 2 < len && ext[s + 2] != ext[s] {
                    v += next[s + 2];
                }
                beta[s] = v * emit[t * len + s];
            }
        }
        let bs: f64 = beta.iter().sum();
        if !(bs > 1e-280) {
            return None;
        }
        for v in &mut beta {
            *v /= bs;
        }
        // alpha_t(s) beta_t(s) / e_t(l'_s), normalised over s: the occupation of each state.
        let a = &alpha[t * len..(t + 1) * len];
        occ.fill(0.0);
        let mut z = 0.0;
        for s in 0..len {
            let w = a[s] * beta[s] / emit[t * len + s];
            occ[ext[s]] += w;
            z += w;
        }
        if !(z > 0.0) || !z.is_finite() {
            return None;
        }
        let r = row(t);
        let out = &mut grad[t * p.c..(t + 1) * p.c];
        for k in 0..p.c {
            out[k] = (r[k].exp() - occ[k] / z) * g;
        }
        std::mem::swap(&mut beta, &mut next);
    }
    Some(nll)
}

pub fn forward(call: &Call) -> Option<Tensor> {
    let p = parse(call)?;
    let nll: Option<Vec<f64>> = (0..p.n)
        .into_par_iter()
        .with_min_len(4)
        .map(|b| sample(&p, b, None))
        .collect();
    let nll = nll?;
    let dt = p.input.dtype();
    let v = match p.red {
        Red::None => return tensor(dt, vec![p.n], nll),
        Red::Sum => crate::reference::numeric::sum(nll.iter().copied()),
        Red::Mean => {
            let per = nll
                .iter()
                .zip(&p.labels)
                .map(|(l, lab)| l / lab.len().max(1) as f64);
            crate::reference::numeric::sum(per) / p.n as f64
        }
        Red::BatchMean => return None,
    };
    tensor(dt, vec![], vec![v])
}

pub fn backward(call: &Call, wrt: &[String], g: &[f64]) -> Option<Gradients> {
    if wrt.iter().any(|w| w != "log_probs") || g.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let p = parse(call)?;
    if p.red == Red::None && g.len() != p.n {
        return None;
    }
    let per: Option<Vec<Vec<f64>>> = (0..p.n)
        .into_par_iter()
        .map(|b| {
            let gb = match p.red {
                Red::None => g[b],
                Red::Sum => g[0],
                _ => g[0] / (p.n * p.labels[b].len().max(1)) as f64,
            };
            let mut buf = vec![0.0; p.il[b] * p.c];
            sample(&p, b, Some((&mut buf, gb)))?;
            Some(buf)
        })
        .collect();
    let per = per?;
    let mut grad = vec![0.0; p.t_max * p.n * p.c];
    for (b, buf) in per.iter().enumerate() {
        for t in 0..p.il[b] {
            let at = (t * p.n + b) * p.c;
            grad[at..at + p.c].copy_from_slice(&buf[t * p.c..(t + 1) * p.c]);
        }
    }
    let mut out = Gradients::new();
    out.insert(
        "log_probs".into(),
        tensor(p.input.dtype(), p.input.shape().to_vec(), grad)?,
    );
    Some(out)
}
