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
    lp: std::borrow::Cow<'a, [f64]>,
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

/// Extended-range positive numbers for the CTC recursions: `m * 2^k` with `m` an `f64` in
/// `[1, 2)` (or 0) and `k` an integer held in an `f64` (exact up to 2^53), the two in separate
/// slices so that the loops over states vectorise.
///
/// Why not one scale per frame (what this kernel did before): a frame's alpha values span far
/// more than `f64`'s range. With log-probabilities spread over 20 nats (accuracy case
/// `ctc_loss/mean_T1500`), the states that ran ahead of the alignment collect more than e^709
/// times the mass of the states that the complete paths go through, so dividing a frame by its
/// sum left those states subnormal or 0 and lost up to 61 nats of path mass per sequence (4e4
/// float32 ulps of the mean). Here every state carries its own exponent, so nothing under- or
/// overflows: the recursions are sums and products of positive numbers, each rounded once in
/// `f64` (relative error `2^-53`), the powers of two are exact, and a term below `2^-1022` of
/// the largest in its sum is dropped (changing the sum by less than `2^-1022` of it). A frame
/// adds at most three roundings and one emission's `exp` error (below 1e-15 relative) to every
/// path, and sums of positive terms do not amplify relative errors, so after `T` frames the
/// likelihood is off by at most about `1.4e-15 T` relative (`2e-12` for `T = 1500`): an
/// absolute error of about `2e-12` in the negative log-likelihood, against float32 ulps of
/// `6e-8` relative. Rounding the `f64` result once gives the correctly rounded value, or its
/// neighbour when the exact value is that close to a tie.
mod xr {
    use crate::reference::fast::math::MAGIC;

    /// The exponent of 0: so far below any other that `2^(ZERO_K - k)` is 0 for every live `k`,
    /// and small enough that sums of two stay exact.
    pub const ZERO_K: f64 = -1_099_511_627_776.0; // -2^40

    /// `2^d` for an integral `d <= 0`, and 0 for `d < -1022`, from the exponent bits.
    #[inline(always)]
    pub fn pow2(d: f64) -> f64 {
        let d = if d < -1023.0 { -1023.0 } else { d };
        f64::from_bits((d + (MAGIC + 1023.0)).to_bits() << 52)
    }

    /// `(m, k)` with `v = m 2^k`, `m` in `[1, 2)`, for `v` 0 or a positive normal number;
    /// `(0, ZERO_K)` for 0.
    #[inline(always)]
    pub fn split(v: f64) -> (f64, f64) {
        let bits = v.to_bits();
        let k = f64::from_bits((bits >> 52) | MAGIC.to_bits()) - (MAGIC + 1023.0);
        let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 1f64.to_bits());
        if v > 0.0 {
            (m, k)
        } else {
            (0.0, ZERO_K)
        }
    }

    /// The larger of two exponents (no NaN handling: exponents are never NaN).
    #[inline(always)]
    pub fn max(a: f64, b: f64) -> f64 {
        if a > b {
            a
        } else {
            b
        }
    }

    /// `a + b + c` as `(v, k)` with the sum `v 2^k` (`v` not normalised); each argument is
    /// `(m, k)`.
    #[inline(always)]
    pub fn add3(a: (f64, f64), b: (f64, f64), c: (f64, f64)) -> (f64, f64) {
        let k = max(max(a.1, b.1), c.1);
        (
            a.0 * pow2(a.1 - k) + b.0 * pow2(b.1 - k) + c.0 * pow2(c.1 - k),
            k,
        )
    }

    /// `ln(m 2^k)`.
    pub fn ln(m: f64, k: f64) -> f64 {
        m.ln() + k * std::f64::consts::LN_2
    }
}

/// One frame of a recursion over the states, in extended range:
/// `out(s) = (x0(s) + x1(s) + [skip(s)] x2(s)) * emit(s)`, where `x0, x1, x2` are the previous
/// frame and its neighbours one and two states away (before for alpha, after for beta),
/// zero-padded by the caller so that every index is in bounds. `skip` is 1 or 0.
#[inline(always)]
fn step(
    (m0, k0): (&[f64], &[f64]),
    (m1, k1): (&[f64], &[f64]),
    (m2, k2): (&[f64], &[f64]),
    skip: &[f64],
    emit: &[f64],
    (om, ok): (&mut [f64], &mut [f64]),
) {
    let n = om.len();
    let (m0, k0, m1, k1, m2, k2) = (&m0[..n], &k0[..n], &m1[..n], &k1[..n], &m2[..n], &k2[..n]);
    let (skip, emit, ok) = (&skip[..n], &emit[..n], &mut ok[..n]);
    for s in 0..n {
        let c = (
            m2[s] * skip[s],
            if skip[s] > 0.0 { k2[s] } else { xr::ZERO_K },
        );
        let (v, k) = xr::add3((m0[s], k0[s]), (m1[s], k1[s]), c);
        let (m, e) = xr::split(v * emit[s]);
        om[s] = m;
        ok[s] = if m > 0.0 { k + e } else { xr::ZERO_K };
    }
}

/// Gathers frame `t`'s log-probabilities of the extended labels `ext` from `row` into `emit`
/// as `exp(lp - max)`, returning `max`; `None` when a value is not finite or the frame spans
/// more than 700 nats (a factor `e^-700` stays a normal `f64` after multiplying numbers in
/// `[1, 6]`, which [`xr::split`] needs).
#[inline(always)]
fn emissions(row: &[f64], ext: &[usize], emit: &mut [f64]) -> Option<f64> {
    let (mut hi, mut lo, mut chk) = (f64::NEG_INFINITY, f64::INFINITY, 0.0);
    for (e, &k) in emit.iter_mut().zip(ext) {
        let v = row[k];
        *e = v;
        hi = if v > hi { v } else { hi };
        lo = if v < lo { v } else { lo };
        chk += v - v; // NaN for a non-finite value
    }
    if chk != 0.0 || !(hi - lo <= 700.0) {
        return None;
    }
    for e in emit.iter_mut() {
        *e = super::math::exp(*e - hi);
    }
    Some(hi)
}

/// The alpha recursion over `frames = emit.len() / len` frames: the last frame as
/// `(mantissas, exponents)` with two zero states in front, and every frame (without padding)
/// appended to `keep` when it is given.
#[inline(always)]
fn alpha(
    emit: &[f64],
    skip: &[f64],
    len: usize,
    mut keep: Option<(&mut Vec<f64>, &mut Vec<f64>)>,
) -> (Vec<f64>, Vec<f64>) {
    let w = len + 2;
    let (mut pm, mut pk) = (vec![0.0; w], vec![xr::ZERO_K; w]);
    let (mut cm, mut ck) = (pm.clone(), pk.clone());
    for s in 0..len.min(2) {
        (cm[2 + s], ck[2 + s]) = xr::split(emit[s]);
    }
    for (t, e) in emit.chunks_exact(len).enumerate() {
        if t > 0 {
            std::mem::swap(&mut pm, &mut cm);
            std::mem::swap(&mut pk, &mut ck);
            step(
                (&pm[2..], &pk[2..]),
                (&pm[1..], &pk[1..]),
                (&pm, &pk),
                skip,
                e,
                (&mut cm[2..], &mut ck[2..]),
            );
        }
        if let Some((am, ak)) = keep.as_mut() {
            am.extend_from_slice(&cm[2..]);
            ak.extend_from_slice(&ck[2..]);
        }
    }
    (cm, ck)
}

/// One frame of the gradient: the occupation `alpha_t(s) beta_t(s) / e_t(l'_s)` of each state,
/// normalised over the states and summed per class, subtracted from `exp(lp)`, times `g`.
/// `false` when the occupations vanish (the caller falls back to the general kernel).
#[inline(always)]
fn grad_frame(
    (am, ak): (&[f64], &[f64]),
    (bm, bk): (&[f64], &[f64]),
    (e, ext, r): (&[f64], &[usize], &[f64]),
    g: f64,
    (wm, wk): (&mut [f64], &mut [f64]),
    occ: &mut [f64],
    out: &mut [f64],
) -> bool {
    let n = e.len();
    let (am, ak, bm, bk, wm, wk) = (
        &am[..n],
        &ak[..n],
        &bm[..n],
        &bk[..n],
        &mut wm[..n],
        &mut wk[..n],
    );
    let mut top = xr::ZERO_K;
    for s in 0..n {
        wm[s] = am[s] * bm[s] / e[s];
        wk[s] = ak[s] + bk[s];
        top = xr::max(top, wk[s]);
    }
    occ.fill(0.0);
    let mut z = 0.0;
    for s in 0..n {
        let v = wm[s] * xr::pow2(wk[s] - top);
        occ[ext[s]] += v;
        z += v;
    }
    if !(z > 0.0) || !z.is_finite() {
        return false;
    }
    for ((o, &x), &q) in out.iter_mut().zip(r).zip(&*occ) {
        *o = (super::math::exp(x) - q / z) * g;
    }
    true
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
    // Emissions of each frame over the extended labels, divided by their maximum (whose logs
    // are summed separately), so that every factor is in [e^-700, 1].
    let mut emit = vec![0.0; frames * len];
    let mut shift = vec![0.0; frames];
    {
        let ext: &[usize] = &ext;
        for (t, (e, sh)) in emit.chunks_exact_mut(len).zip(&mut shift).enumerate() {
            let r = row(t);
            *sh = super::math::simd!(Option<f64>, |r: &[f64], ext: &[usize], e: &mut [f64]| {
                emissions(r, ext, e)
            })?;
        }
    }
    // skip[s] = 1: state s may be entered from s - 2 (a label that differs from the one before).
    let skip: Vec<f64> = (0..len)
        .map(|s| f64::from(u8::from(s >= 2 && ext[s] != ext[s - 2])))
        .collect();
    let (mut am, mut ak) = (Vec::new(), Vec::new());
    let keep = grad.is_some().then(|| {
        am.reserve(frames * len);
        ak.reserve(frames * len);
        (&mut am, &mut ak)
    });
    let (cm, ck) = {
        let (emit, skip): (&[f64], &[f64]) = (&emit, &skip);
        super::math::simd!((Vec<f64>, Vec<f64>), |emit: &[f64],
                                                  skip: &[f64],
                                                  len: usize,
                                                  keep: Option<(
            &mut Vec<f64>,
            &mut Vec<f64>
        )>| {
            alpha(emit, skip, len, keep)
        })
    };
    // The two final states (with len == 1 the second is the zero padding).
    let w = len + 2;
    let (em, ek) = xr::add3(
        (cm[w - 1], ck[w - 1]),
        (cm[w - 2], ck[w - 2]),
        (0.0, xr::ZERO_K),
    );
    if !(em > 0.0) {
        return None; // impossible alignment: the general kernel knows inf and zero_infinity
    }
    let nll = -(crate::reference::numeric::sum(shift.iter().copied()) + xr::ln(em, ek));
    if !nll.is_finite() {
        return None;
    }
    let Some((grad, g)) = grad else {
        return Some(nll);
    };
    // beta (including the frame's own emission, as PyTorch defines it), one frame at a time
    // with two zero states after the last, and the gradient of that frame.
    let (mut bm, mut bk) = (vec![0.0; w], vec![xr::ZERO_K; w]);
    let (mut nm, mut nk) = (bm.clone(), bk.clone());
    // skip_b[s] = 1: state s may be left to s + 2.
    let skip_b: Vec<f64> = (0..len)
        .map(|s| if s + 2 < len { skip[s + 2] } else { 0.0 })
        .collect();
    let mut occ = vec![0.0; p.c];
    let (mut wm, mut wk) = (vec![0.0; len], vec![0.0; len]);
    for t in (0..frames).rev() {
        let e = &emit[t * len..(t + 1) * len];
        if t == frames - 1 {
            for s in len.saturating_sub(2)..len {
                (bm[s], bk[s]) = xr::split(e[s]);
            }
        } else {
            let (nm, nk, skip_b): (&[f64], &[f64], &[f64]) = (&nm, &nk, &skip_b);
            let (bm, bk): (&mut [f64], &mut [f64]) = (&mut bm[..len], &mut bk[..len]);
            super::math::simd!((), |nm: &[f64],
                                    nk: &[f64],
                                    skip_b: &[f64],
                                    e: &[f64],
                                    bm: &mut [f64],
                                    bk: &mut [f64]| {
                step(
                    (nm, nk),
                    (&nm[1..], &nk[1..]),
                    (&nm[2..], &nk[2..]),
                    skip_b,
                    e,
                    (bm, bk),
                )
            });
        }
        let ok = {
            let fr = t * len..(t + 1) * len;
            let alpha: (&[f64], &[f64]) = (&am[fr.clone()], &ak[fr]);
            let beta: (&[f64], &[f64]) = (&bm, &bk);
            let work: (&mut [f64], &mut [f64]) = (&mut wm, &mut wk);
            let frame: (&[f64], &[usize], &[f64]) = (e, &ext, row(t));
            let (occ, out): (&mut [f64], _) = (&mut occ, &mut grad[t * p.c..(t + 1) * p.c]);
            super::math::simd!(
                bool,
                |alpha: (&[f64], &[f64]),
                 beta: (&[f64], &[f64]),
                 frame: (&[f64], &[usize], &[f64]),
                 g: f64,
                 work: (&mut [f64], &mut [f64]),
                 occ: &mut [f64],
                 out: &mut [f64]| {
                    grad_frame(alpha, beta, frame, g, work, occ, out)
                }
            )
        };
        if !ok {
            return None;
        }
        std::mem::swap(&mut bm, &mut nm);
        std::mem::swap(&mut bk, &mut nk);
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
    // PyTorch's `exp(lp) - exp(lcab + nll - lp)` is NaN wherever `lp` is -inf (even for a class
    // no state uses: -inf - -inf) and overflows for huge `lp`; the general kernel reproduces
    // that literally, so any such value (not only those of the emitted classes) goes there.
    if p.lp.iter().any(|v| !(v.abs() <= 700.0)) {
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
    let mut grad = super::zeroed(p.t_max * p.n * p.c);
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

#[cfg(test)]
mod tests {
    use super::xr;
    use crate::backend::{Call, Value};
    use crate::tensor::{DType, Tensor};

    #[test]
    fn extended_range_split_and_powers_of_two_are_exact() {
        for v in [
            1.0,
            1.5,
            6.0,
            0.75,
            1e-300,
            3e-305,
            1e300,
            f64::MIN_POSITIVE,
        ] {
            let (m, k) = xr::split(v);
            assert!((1.0..2.0).contains(&m), "{v}: mantissa {m}");
            assert_eq!(m * 2f64.powi(k as i32), v, "{v}");
        }
        assert_eq!(xr::split(0.0), (0.0, xr::ZERO_K));
        for d in [0, -1, -52, -1022] {
            assert_eq!(xr::pow2(d as f64), 2f64.powi(d));
        }
        assert_eq!(xr::pow2(-1023.0), 0.0);
        assert_eq!(xr::pow2(xr::ZERO_K - 5000.0), 0.0);
        // A term 2^-2000 below the largest does not change the sum; a zero never wins the max.
        assert_eq!(
            xr::add3((1.5, 10.0), (1.0, -1990.0), (0.0, xr::ZERO_K)),
            (1.5, 10.0)
        );
    }

    /// Log-probabilities uniform in `[-spread, 0]` from a 64-bit LCG, rounded to float32.
    fn draw(len: usize, seed: u64, spread: f64) -> Vec<f64> {
        let mut z = seed;
        (0..len)
            .map(|_| {
                z = z
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                -spread * ((z >> 11) as f64 / (1u64 << 53) as f64) as f32 as f64
            })
            .collect()
    }

    /// `log(e^a + e^b)` in the careful form `max + log1p(e^-|a - b|)`.
    fn lae(a: f64, b: f64) -> f64 {
        if a == f64::NEG_INFINITY && b == f64::NEG_INFINITY {
            return a;
        }
        a.max(b) + (-(a - b).abs()).exp().ln_1p()
    }

    /// The textbook log-space alpha (`fwd`) or beta recursion table, `T x S`.
    fn table(lp: &[f64], c: usize, ext: &[usize], fwd: bool) -> Vec<Vec<f64>> {
        let (t_len, n) = (lp.len() / c, ext.len());
        let e = |t: usize, s: usize| lp[t * c + ext[s]];
        let mut out = vec![vec![f64::NEG_INFINITY; n]; t_len];
        let first = if fwd { 0 } else { t_len - 1 };
        for s in 0..2 {
            let s = if fwd { s } else { n - 1 - s };
            out[first][s] = e(first, s);
        }
        let order: Vec<usize> = if fwd {
            (1..t_len).collect()
        } else {
            (0..t_len - 1).rev().collect()
        };
        for t in order {
            let prev = if fwd { t - 1 } else { t + 1 };
            for s in 0..n {
                let (n1, n2) = if fwd {
                    (s.checked_sub(1), s.checked_sub(2))
                } else {
                    (
                        Some(s + 1).filter(|&x| x < n),
                        Some(s + 2).filter(|&x| x < n),
                    )
                };
                let mut a = out[prev][s];
                if let Some(i) = n1 {
                    a = lae(a, out[prev][i]);
                }
                if let Some(i) = n2.filter(|&i| ext[i] != ext[s]) {
                    a = lae(a, out[prev][i]);
                }
                out[t][s] = a + e(t, s);
            }
        }
        out
    }

    fn ctc_call(lp: &[f64], t_len: usize, c: usize, labels: &[i64], red: &str) -> Call {
        let f = Tensor::from_f64(DType::Float64, vec![t_len, 1, c], lp.to_vec()).unwrap();
        let tg = Tensor::from_i64(DType::Int64, vec![1, labels.len()], labels.to_vec()).unwrap();
        let args = [
            ("log_probs", Value::Tensor(f)),
            ("targets", Value::Tensor(tg)),
            ("input_lengths", Value::IntList(vec![t_len as i64])),
            ("target_lengths", Value::IntList(vec![labels.len() as i64])),
            ("reduction", Value::Str(red.into())),
        ];
        Call {
            api: "torch.nn.functional.ctc_loss".into(),
            args: args.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    /// A 1500-frame sequence whose log-probabilities spread over 20 nats (like the accuracy
    /// case `ctc_loss/mean_T1500`): one scale per frame loses path mass to underflow here (the
    /// old kernel lost up to 61 nats per sequence on that case); the extended-range recursion agrees with a
    /// float64 log-space recursion, and so does its gradient with the log-space posteriors.
    #[test]
    fn long_wide_sequences_match_the_log_space_recursion() {
        let (t_len, c, s_len) = (1500, 12, 60);
        let lp = draw(t_len * c, 7, 20.0);
        let labels: Vec<i64> = draw(s_len, 8, 1.0)
            .iter()
            .map(|v| 1 + ((-v * 1e6) as i64).rem_euclid(c as i64 - 1))
            .collect();
        let mut ext = vec![0];
        for &l in &labels {
            ext.extend([l as usize, 0]);
        }
        let alpha = table(&lp, c, &ext, true);
        let beta = table(&lp, c, &ext, false);
        let n = ext.len();
        let log_z = lae(alpha[t_len - 1][n - 1], alpha[t_len - 1][n - 2]);
        let call = ctc_call(&lp, t_len, c, &labels, "sum");
        let got = super::forward(&call).unwrap().to_f64_vec()[0];
        assert!(
            (got + log_z).abs() <= 1e-12 * log_z.abs(),
            "fast {got}, log space {}",
            -log_z
        );
        let g = super::backward(&call, &["log_probs".into()], &[1.0]).unwrap()["log_probs"]
            .to_f64_vec();
        for t in [0, 1, 700, t_len - 2, t_len - 1] {
            for k in 0..c {
                let post: f64 = (0..n)
                    .filter(|&s| ext[s] == k)
                    .map(|s| (alpha[t][s] + beta[t][s] - lp[t * c + k] - log_z).exp())
                    .sum();
                let want = lp[t * c + k].exp() - post;
                let v = g[t * c + k];
                assert!((v - want).abs() <= 1e-9, "t {t} k {k}: {v} vs {want}");
            }
        }
    }
}
