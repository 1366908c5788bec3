//! `cross_entropy` with class-index targets: float input `(N, C)`, int64 target `(N,)`, no
//! weight, any `ignore_index`, `label_smoothing` in [0, 1].
//!
//! Per row: `m = max x`, `S = sum exp(x - m)` (the maxima counted apart, so that `log S` keeps
//! its accuracy when one class dominates: `log S = log1p(cnt - 1 + rest)`),
//! `nll = (m - x_k) + log S`, `smooth = sum(m - x_j) + C log S`,
//! `loss = (1 - ls) nll + (ls / C) smooth`. Gradient: `p_j - (1 - ls) [j == k] - ls / C`, with
//! `p_k - 1 = -rest / S` when `x_k` is the only maximum; zero on ignored rows; divided by the
//! number of non-ignored rows for `mean`.

use super::math::{exp, simd};
use super::{
    float_tensor, floats, load, nullish, only, reduction, store, tensor, with_elt, zeroed, Elt,
    Red, Scratch, PAR_MIN,
};
use crate::backend::{Call, Gradients, Value};
use crate::tensor::{DType, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;

struct Parsed<'a> {
    input: &'a Tensor,
    target: &'a [i64],
    n: usize,
    c: usize,
    ignore: i64,
    ls: f64,
    red: Red,
    /// The dtype's largest finite value: PyTorch's float32 `x - max` overflows beyond it.
    lim: f64,
}

fn parse(call: &Call) -> Option<Parsed<'_>> {
    let names = [
        "input",
        "target",
        "weight",
        "size_average",
        "ignore_index",
        "reduce",
        "reduction",
        "label_smoothing",
    ];
    if !only(call, &names) || !nullish(call, "weight") {
        return None;
    }
    let input = float_tensor(call, "input")?;
    let Some(Value::Tensor(target)) = call.args.get("target") else {
        return None;
    };
    let &[n, c] = input.shape() else {
        return None;
    };
    if target.dtype() != DType::Int64 || target.shape() != [n] || n == 0 || c == 0 {
        return None;
    }
    let ignore = match call.args.get("ignore_index") {
        None => -100,
        Some(Value::Int(i)) => *i,
        _ => return None,
    };
    let ls = match call.args.get("label_smoothing") {
        None => 0.0,
        Some(Value::Float(v)) => *v,
        Some(Value::Int(i)) => *i as f64,
        _ => return None,
    };
    // PyTorch ignores a negative or NaN smoothing; above 1 is its error.
    let ls = if ls > 0.0 { ls } else { 0.0 };
    if ls > 1.0 {
        return None;
    }
    let target = target.as_i64()?;
    if target
        .iter()
        .any(|&k| k != ignore && (k < 0 || k as usize >= c))
    {
        return None;
    }
    Some(Parsed {
        input,
        target,
        n,
        c,
        ignore,
        ls,
        red: reduction(call, false)?,
        lim: if input.dtype() == DType::Float32 {
            f32::MAX as f64
        } else {
            f64::MAX
        },
    })
}

/// A row's maximum, and 0 when every element is finite (NaN otherwise).
#[inline(always)]
fn row_max(x: &[f64]) -> (f64, f64) {
    let mut mx = [f64::NEG_INFINITY; 4];
    let mut ck = [0.0f64; 4];
    let chunks = x.chunks_exact(4);
    let tail = chunks.remainder();
    for ch in chunks {
        for l in 0..4 {
            mx[l] = if ch[l] > mx[l] { ch[l] } else { mx[l] };
            ck[l] += ch[l] - ch[l];
        }
    }
    let mut m = f64::NEG_INFINITY;
    let mut chk = (ck[0] + ck[1]) + (ck[2] + ck[3]);
    for &v in mx.iter().chain(tail) {
        m = if v > m { v } else { m };
    }
    for &v in tail {
        chk += v - v;
    }
    (m, chk)
}

/// `sum(m - x)`.
#[inline(always)]
fn row_dsum(x: &[f64], m: f64) -> f64 {
    let mut d = [0.0f64; 4];
    let chunks = x.chunks_exact(4);
    let tail = chunks.remainder();
    for ch in chunks {
        for l in 0..4 {
            d[l] += m - ch[l];
        }
    }
    (d[0] + d[2]) + (d[1] + d[3]) + tail.iter().map(|&v| m - v).sum::<f64>()
}

/// One row's statistics: `(m, cnt, rest, dsum, chk)` with `m` the maximum, `cnt` how many
/// elements equal it, `rest = sum of exp(x - m)` over the others (so that a maximum's exact
/// `exp(0) = 1` does not swallow the low bits of the smaller terms), `dsum = sum(m - x)` (when
/// `need_dsum`), and `chk` 0 when every element is finite (NaN otherwise). `short`: float32
/// logits, whose loss needs far less than `f64`'s precision: the AVX2 `exp` then evaluates 10
/// terms of its series instead of 14 (relative error below 1e-11 instead of 1e-16; every term
/// of the row sum is positive, so the sum keeps that relative error, 4 orders of magnitude below
/// half a float32 ulp).
fn stats(x: &[f64], need_dsum: bool, short: bool) -> (f64, f64, f64, f64, f64) {
    let (m, chk) = simd!((f64, f64), |x: &[f64]| row_max(x));
    if chk != 0.0 {
        return (m, 0.0, 0.0, 0.0, chk);
    }
    #[cfg(target_arch = "x86_64")]
    let (rest, cnt) = if super::math::has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe {
            if short {
                super::math::avx2::exp_sum_split::<10>(x, m)
            } else {
                super::math::avx2::exp_sum_split::<14>(x, m)
            }
        }
    } else {
        exp_sum_split(x, m)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (rest, cnt) = exp_sum_split(x, m);
    let dsum = if need_dsum {
        simd!(f64, |x: &[f64], m: f64| row_dsum(x, m))
    } else {
        0.0
    };
    (m, cnt, rest, dsum, chk)
}

/// The portable `exp_sum_split`.
#[allow(dead_code)]
fn exp_sum_split(x: &[f64], m: f64) -> (f64, f64) {
    let (mut rest, mut cnt) = (0.0, 0.0);
    for &v in x {
        if v == m {
            cnt += 1.0;
        } else {
            rest += exp(v - m);
        }
    }
    (rest, cnt)
}

/// `out = exp(x - m) * a + b` (`short` as in [`stats`]: float32 logits).
fn row_grad(x: &[f64], out: &mut [f64], m: f64, a: f64, b: f64, short: bool) {
    #[cfg(target_arch = "x86_64")]
    if super::math::has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA.
        unsafe {
            if short {
                super::math::avx2::exp_affine::<10>(x, out, m, a, b)
            } else {
                super::math::avx2::exp_affine::<14>(x, out, m, a, b)
            }
        };
        return;
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = exp(v - m) * a + b;
    }
}

/// `(nll, smooth, log S)` of a row, `None` when it holds a non-finite value.
fn row_loss(p: &Parsed, x: &[f64], k: usize) -> Option<(f64, f64, f64, f64, f64)> {
    let (m, cnt, rest, dsum, chk) = stats(x, p.ls > 0.0, p.input.dtype() == DType::Float32);
    if chk != 0.0 {
        return None;
    }
    let log_s = ((cnt - 1.0) + rest).ln_1p();
    let nll = (m - x[k]) + log_s;
    let smooth = dsum + p.c as f64 * log_s;
    if !(nll <= p.lim && (p.ls == 0.0 || smooth <= p.lim)) {
        return None;
    }
    Some((nll, smooth, m, cnt, rest))
}

/// A row's loss from its `(nll, smooth)`.
fn row_value(p: &Parsed, nll: f64, smooth: f64) -> f64 {
    if p.ls > 0.0 {
        (1.0 - p.ls) * nll + (p.ls / p.c as f64) * smooth
    } else {
        nll
    }
}

/// The number of rows whose target is not `ignore_index`.
fn counted(p: &Parsed) -> usize {
    p.target.iter().filter(|&&k| k != p.ignore).count()
}

/// The loss tensor from the rows' losses: `None` when the reduced value overflows the dtype (or
/// is NaN: a mean over no counted row), which the general kernel reproduces.
fn reduced(p: &Parsed, losses: Vec<f64>) -> Option<Tensor> {
    let dt = p.input.dtype();
    let out = match p.red {
        Red::None => return tensor(dt, vec![p.n], losses),
        Red::Sum => crate::reference::numeric::sum(losses.iter().copied()),
        Red::Mean => crate::reference::numeric::sum(losses.iter().copied()) / counted(p) as f64,
        Red::BatchMean => return None,
    };
    if !(out.abs() <= p.lim) {
        return None;
    }
    tensor(dt, vec![], vec![out])
}

pub fn forward(call: &Call) -> Option<Tensor> {
    let p = parse(call)?;
    with_elt!(p.input.dtype(), forward_as(&p))
}

fn forward_as<X: Elt>(p: &Parsed) -> Option<Tensor> {
    let x = X::of(p.input)?;
    let one = |buf: &mut Vec<f64>, i: usize, x: &[X]| -> Option<f64> {
        let k = p.target[i];
        if k == p.ignore {
            return Some(0.0);
        }
        let (nll, smooth, ..) = row_loss(p, load(x, buf), k as usize)?;
        Some(row_value(p, nll, smooth))
    };
    let losses: Option<Vec<f64>> = if x.len() < PAR_MIN {
        let mut buf = Vec::new();
        x.chunks(p.c)
            .enumerate()
            .map(|(i, x)| one(&mut buf, i, x))
            .collect()
    } else {
        x.par_chunks(p.c)
            .enumerate()
            .map_init(Vec::new, |buf, (i, x)| one(buf, i, x))
            .collect()
    };
    reduced(p, losses?)
}

/// The gradient for `grad_output` `g` (one value per row for `none`, else one), each row
/// rounded to the dtype while it is in cache, and each row's loss (the values [`forward`]
/// reduces). `None` when a value is not finite or the mean has no counted row.
fn gradient<X: Elt>(p: &Parsed, g: &[f64]) -> Option<(Vec<X>, Vec<f64>)> {
    let x = X::of(p.input)?;
    let count = counted(p);
    let scale = |i: usize| -> f64 {
        match p.red {
            Red::None => g[i],
            Red::Sum => g[0],
            _ => g[0] / count as f64,
        }
    };
    let want = if p.red == Red::None { p.n } else { 1 };
    if g.len() != want || g.iter().any(|v| !v.is_finite()) {
        return None;
    }
    if p.red == Red::Mean && count == 0 {
        return None;
    }
    let (ls, cf) = (p.ls, p.c as f64);
    let one = |s: &mut Scratch, i: usize, x: &[X], out: &mut [X]| -> Option<f64> {
        let k = p.target[i];
        if k == p.ignore {
            out.fill(X::default());
            return Some(0.0);
        }
        let k = k as usize;
        let Scratch { a, out: so, .. } = s;
        let x = load(x, a);
        let (nll, smooth, m, cnt, rest) = row_loss(p, x, k)?;
        let s = cnt + rest;
        let sc = scale(i);
        let (a, b) = (sc / s, -(ls / cf) * sc);
        store(out, so, |out| {
            row_grad(x, out, m, a, b, p.input.dtype() == DType::Float32);
            // p_k - 1 without cancellation when x_k is the only maximum.
            let pk1 = if x[k] == m && cnt == 1.0 {
                -(rest / s)
            } else {
                exp(x[k] - m) / s - 1.0
            };
            out[k] = (pk1 + ls - ls / cf) * sc;
        });
        Some(row_value(p, nll, smooth))
    };
    let mut grad = zeroed::<X>(x.len());
    let losses: Option<Vec<f64>> = if x.len() < PAR_MIN {
        let mut s = Scratch::default();
        x.chunks(p.c)
            .zip(grad.chunks_mut(p.c))
            .enumerate()
            .map(|(i, (x, o))| one(&mut s, i, x, o))
            .collect()
    } else {
        x.par_chunks(p.c)
            .zip(grad.par_chunks_mut(p.c))
            .enumerate()
            .map_init(Scratch::default, |s, (i, (x, o))| one(s, i, x, o))
            .collect()
    };
    Some((grad, losses?))
}

pub fn backward(call: &Call, wrt: &[String], g: &[f64]) -> Option<Gradients> {
    if wrt.iter().any(|w| w != "input") {
        return None;
    }
    let p = parse(call)?;
    let grad = with_elt!(p.input.dtype(), gradient_tensor(&p, g))?.0;
    let mut out = Gradients::new();
    out.insert("input".into(), grad);
    Some(out)
}

/// [`gradient`] as a tensor of the logits' shape and dtype, with the rows' losses.
fn gradient_tensor<X: Elt>(p: &Parsed, g: &[f64]) -> Option<(Tensor, Vec<f64>)> {
    let (grad, losses) = gradient::<X>(p, g)?;
    Some((X::tensor(p.input.shape().to_vec(), grad)?, losses))
}

/// The loss and its gradient in one pass over the logits: the gradient of a row needs the
/// row's maximum and sum of exponentials, which are its loss.
pub fn forward_backward(
    call: &Call,
    wrt: &str,
    grad_output: Option<&Tensor>,
) -> Option<(Tensor, Gradients)> {
    if wrt != "input" {
        return None;
    }
    let p = parse(call)?;
    let want: &[usize] = if p.red == Red::None { &[p.n] } else { &[] };
    if grad_output.is_some_and(|t| t.shape() != want) {
        return None;
    }
    let g = match grad_output {
        Some(g) => floats(g)?,
        None => Cow::Owned(vec![1.0; if p.red == Red::None { p.n } else { 1 }]),
    };
    let (grad, losses) = with_elt!(p.input.dtype(), gradient_tensor(&p, &g))?;
    let loss = reduced(&p, losses)?;
    let mut grads = Gradients::new();
    grads.insert("input".into(), grad);
    Some((loss, grads))
}
