//! `torch.nn.functional.ctc_loss` (PyTorch 2.15, CPU: `aten/src/ATen/native/LossCTC.cpp`).
//!
//! The log-probabilities are used exactly as given (never normalised or checked) and the forward
//! recursion runs in their own dtype ([`ctc_alpha`], shared with the TensorFlow kernel's tests).
//! An impossible alignment gives `inf` (0 with `zero_infinity`); `mean` divides each loss by
//! `max(target_length, 1)` before averaging over the batch. Unbatched `(T, C)` log-probabilities
//! are unsqueezed to `(T, 1, C)` while the targets are left alone, so 1-D targets are read as
//! the concatenated form. Lengths come as integer tensors (the tensor overload checks they are
//! integral) or as lists of ints (the `IntArrayRef` overload); a mix matches no overload.

use super::reduction::{self, Reduction};
use super::{mean_all, sum_all, torch_dtype_name, zip, Arr};
use crate::backend::Gradients;
use crate::backend::{CallError, Value};
use crate::reference::gradient::insert;
use crate::reference::tf_nn::ctc::{ctc_alpha, extended, log_add_exp3};
use crate::reference::tf_nn::nd::Fp;
use crate::reference::{Args, Kernel};
use crate::reference::{Backward, GradientKernel};
use crate::tensor::{DType, Tensor};

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] =
    &[("torch.nn.functional.ctc_loss", ctc_loss_backward)];

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[("torch.nn.functional.ctc_loss", ctc_loss)];

/// The overload PyTorch's argument parser picked for the two length arguments.
fn read_lengths(a: &Args) -> Result<(Vec<i64>, Vec<i64>), CallError> {
    let invalid = |got: &str| {
        CallError::argument(format!(
            "ctc_loss() received an invalid combination of arguments - got ({got}), but expected one of: (Tensor log_probs, Tensor targets, tuple of ints input_lengths, tuple of ints target_lengths, ...) or (Tensor log_probs, Tensor targets, Tensor input_lengths, Tensor target_lengths, ...)"
        ))
    };
    let kind = |v: Option<&Value>| match v {
        Some(Value::Tensor(_)) => "Tensor",
        Some(Value::IntList(_)) => "list",
        Some(Value::Int(_)) => "int",
        None => "missing",
        Some(Value::Null) => "NoneType",
        Some(_) => "other",
    };
    let (il, tl) = (a.get("input_lengths"), a.get("target_lengths"));
    match (il, tl) {
        (Some(Value::Tensor(i)), Some(Value::Tensor(t))) => {
            for (name, x) in [("input_lengths", i), ("target_lengths", t)] {
                if x.dtype().is_float() || x.dtype() == DType::Bool {
                    return Err(CallError::dtype(format!("{name} must be integral")));
                }
            }
            let ints = |x: &Tensor| x.to_f64_vec().into_iter().map(|v| v as i64).collect();
            Ok((ints(i), ints(t)))
        }
        (Some(Value::IntList(i)), Some(Value::IntList(t))) => Ok((i.clone(), t.clone())),
        _ => Err(invalid(&format!("..., {}, {}, ...", kind(il), kind(tl)))),
    }
}

fn shape_err(msg: impl Into<String>) -> CallError {
    CallError::shape(msg)
}

/// A checked `ctc_loss` call: what the forward and the backward both need.
struct Ctc {
    dt: DType,
    batched: bool,
    n: usize,
    classes: usize,
    blank: i64,
    zero_infinity: bool,
    red: Reduction,
    input_lengths: Vec<i64>,
    target_lengths: Vec<i64>,
    /// The labels of each sequence (the first `target_length` of its row or slice).
    labels: Vec<Vec<i64>>,
    /// `log_probs` as `(T, N, C)`, row-major.
    x: Vec<f64>,
}

/// Reads and checks a call in PyTorch's order, up to (not including) the label bounds check.
fn parse(a: &Args) -> Result<Ctc, CallError> {
    let log_probs = a.tensor("log_probs")?;
    let targets = a.tensor("targets")?;
    let requested = reduction::read(a, false)?;
    let blank = a.i64_or("blank", 0)?;
    let zero_infinity = a.bool_or("zero_infinity", false)?;
    // Python: the reduction name is resolved before the op is called.
    let red = requested.get_enum()?;
    let (input_lengths, target_lengths) = read_lengths(a)?;

    let dt = log_probs.dtype();
    let batched = log_probs.shape().len() == 3;
    let mut shape = log_probs.shape().to_vec();
    if !batched {
        if shape.is_empty() {
            return Err(shape_err(
                "Dimension out of range (expected to be in range of [-1, 0], but got 1)",
            ));
        }
        shape.insert(1, 1);
    }
    if !matches!(dt, DType::Float32 | DType::Float64) {
        return Err(CallError::dtype(format!(
            "\"ctc_loss_cpu\" not implemented for '{}'",
            torch_dtype_name(dt)
        )));
    }
    if shape.iter().product::<usize>() == 0 {
        return Err(shape_err("log_probs tensor must not be empty"));
    }
    let c = "(while checking arguments for ctc_loss_allocate_outputs)";
    if shape.len() != 3 {
        return Err(shape_err(format!(
            "Expected 3-dimensional tensor, but got {}-dimensional tensor for argument #1 'log_probs' {c}",
            shape.len()
        )));
    }
    let tdim = targets.shape().len();
    if !(1..=2).contains(&tdim) {
        return Err(shape_err(format!(
            "Expected 1 to 2 dimensions, but got {tdim}-dimensional tensor for argument #2 'targets' {c}"
        )));
    }
    let (t_max, n, classes) = (shape[0], shape[1], shape[2]);
    if !(0 <= blank && blank < classes as i64) {
        return Err(CallError::argument("blank must be in label range"));
    }
    if input_lengths.len() != n {
        return Err(shape_err("input_lengths must be of size batch_size"));
    }
    if target_lengths.len() != n {
        return Err(shape_err("target_lengths must be of size batch_size"));
    }
    let negative = |name: &str, v: i64| {
        CallError::value(format!(
            "Expected {name} to have value at least 0, but got value {v} {c}"
        ))
    };
    let mut offsets = Vec::with_capacity(n);
    let stride;
    if tdim == 1 {
        let mut pos = 0i64;
        for &l in &target_lengths {
            if l < 0 {
                return Err(negative("target_lengths", l));
            }
            offsets.push(pos);
            pos += l;
        }
        stride = 1;
        if targets.shape()[0] as i64 != pos {
            return Err(shape_err(format!(
                "Expected tensor to have size {pos} at dimension 0, but got size {} for argument #2 'targets' {c}",
                targets.shape()[0]
            )));
        }
    } else {
        let width = targets.shape()[1];
        let mut max_len = 0;
        for (b, &l) in target_lengths.iter().enumerate() {
            if l < 0 {
                return Err(negative("target_lengths", l));
            }
            offsets.push((b * width) as i64);
            max_len = max_len.max(l);
        }
        stride = 1;
        if targets.shape()[0] != n {
            return Err(shape_err(format!(
                "Expected tensor to have size {n} at dimension 0, but got size {} for argument #2 'targets' {c}",
                targets.shape()[0]
            )));
        }
        if (width as i64) < max_len {
            return Err(shape_err(format!(
                "Expected tensor to have size at least {max_len} at dimension 1, but got size {width} for argument #2 'targets' {c}"
            )));
        }
    }
    for &l in &input_lengths {
        if l < 0 {
            return Err(negative("input_lengths", l));
        }
        if l > t_max as i64 {
            return Err(CallError::value(format!(
                "Expected input_lengths to have value at most {t_max}, but got value {l} {c}"
            )));
        }
    }

    let x = log_probs.to_f64_vec();
    // `targets.to(kLong)`: floats truncate toward zero.
    let tg: Vec<i64> = targets.to_f64_vec().into_iter().map(|v| v as i64).collect();
    let labels = (0..n)
        .map(|b| {
            let start = offsets[b] as usize;
            (0..target_lengths[b] as usize)
                .map(|s| tg[start + stride * s])
                .collect()
        })
        .collect();
    Ok(Ctc {
        dt,
        batched,
        n,
        classes,
        blank,
        zero_infinity,
        red,
        input_lengths,
        target_lengths,
        labels,
        x,
    })
}

impl Ctc {
    /// `ext` of sequence `b` after the CPU kernel's (absent) label bounds check: a label the
    /// recursion reads outside `[0, C)` is reported as a value error.
    fn ext(&self, b: usize) -> Result<Vec<i64>, CallError> {
        let (il, labels) = (self.input_lengths[b] as usize, &self.labels[b]);
        // Labels are not bounds-checked on CPU: one outside [0, C) reads other memory. Only the
        // labels the recursion reads count (with one frame, just the first).
        let read = if il == 1 {
            labels.len().min(1)
        } else {
            labels.len()
        };
        if let Some(&bad) = labels[..read]
            .iter()
            .find(|&&l| l < 0 || l >= self.classes as i64)
        {
            return Err(CallError::value(format!(
                "ctc_loss: target {bad} is outside [0, {}); PyTorch reads out of bounds (undefined)",
                self.classes
            )));
        }
        Ok(extended(labels, self.blank))
    }

    /// `log_probs[t, b, k]`.
    fn lp(&self, t: usize, b: usize, k: i64) -> f64 {
        self.x[(t * self.n + b) * self.classes + k as usize]
    }

    /// The per-sequence negative log-likelihoods of `_ctc_loss` (before `zero_infinity`).
    fn nll(&self) -> Result<Vec<f64>, CallError> {
        let p = Fp(self.dt);
        let mut losses = Vec::with_capacity(self.n);
        for b in 0..self.n {
            let (il, tl) = (
                self.input_lengths[b] as usize,
                self.target_lengths[b] as usize,
            );
            if il == 0 {
                losses.push(if tl == 0 { -0.0 } else { f64::INFINITY });
                continue;
            }
            let ext = self.ext(b)?;
            let alpha = ctc_alpha(p, il, &ext, |t, s| self.lp(t, b, ext[s]));
            losses.push(-final_log_likelihood(p, &alpha, tl));
        }
        Ok(losses)
    }
}

/// The log-likelihood from the alphas at the last frame: `alpha[0]` for an empty target, else
/// the log-sum of the last two states.
fn final_log_likelihood(p: Fp, alpha: &[f64], tl: usize) -> f64 {
    if tl == 0 {
        alpha[0]
    } else {
        log_add_exp3(p, alpha[2 * tl], alpha[2 * tl - 1], f64::NEG_INFINITY)
    }
}

fn ctc_loss(a: &Args) -> Result<Tensor, CallError> {
    let c = parse(a)?;
    let (dt, n, red, batched) = (c.dt, c.n, c.red, c.batched);
    let mut losses = c.nll()?;
    let (zero_infinity, target_lengths) = (c.zero_infinity, &c.target_lengths);
    if zero_infinity {
        for l in losses.iter_mut() {
            if *l == f64::INFINITY {
                *l = 0.0;
            }
        }
    }
    let res = Arr::of(&Tensor::from_f64(dt, vec![n], losses).map_err(|e| shape_err(e.0))?);
    let out = match red {
        Reduction::Mean => {
            let tl: Vec<f64> = target_lengths.iter().map(|&l| l.max(1) as f64).collect();
            let tl = Arr::of(&Tensor::from_f64(dt, vec![n], tl).map_err(|e| shape_err(e.0))?);
            mean_all(&zip(&res, &tl, |_| Ok(()), |l, d| l / d)?)?
        }
        Reduction::Sum => sum_all(&res),
        Reduction::None if batched => res,
        Reduction::None => Arr::scalar(dt, res.a.iter().next().copied().unwrap_or(f64::NAN)),
    };
    Ok(out.tensor())
}

/// The alphas of every frame `t < frames`, with the recursion of [`ctc_alpha`] (PyTorch's
/// `ctc_loss_cpu_template`, every operation rounded to `p`).
fn alphas(p: Fp, frames: usize, ext: &[i64], emit: impl Fn(usize, usize) -> f64) -> Vec<Vec<f64>> {
    (1..=frames).map(|f| ctc_alpha(p, f, ext, &emit)).collect()
}

/// The betas of every frame `t < frames` (`ctc_loss_backward_cpu_template`, eq. 10-11):
/// `beta[T-1]` holds `emit` at the last two states, then
/// `beta[t][s] = lse(beta[t+1][s], beta[t+1][s+1], beta[t+1][s+2]) + emit(t, s)`, the third term
/// only when `ext[s+2] != ext[s]`.
fn betas(p: Fp, frames: usize, ext: &[i64], emit: impl Fn(usize, usize) -> f64) -> Vec<Vec<f64>> {
    let n = ext.len();
    let mut beta = vec![vec![f64::NEG_INFINITY; n]; frames];
    beta[frames - 1][n - 1] = emit(frames - 1, n - 1);
    if n > 1 {
        beta[frames - 1][n - 2] = emit(frames - 1, n - 2);
    }
    for t in (0..frames - 1).rev() {
        for s in (0..n).rev() {
            let b1 = beta[t + 1][s];
            let b2 = if s + 1 < n {
                beta[t + 1][s + 1]
            } else {
                f64::NEG_INFINITY
            };
            let b3 = if s + 2 < n && ext[s + 2] != ext[s] {
                beta[t + 1][s + 2]
            } else {
                f64::NEG_INFINITY
            };
            beta[t][s] = p.r(log_add_exp3(p, b1, b2, b3) + emit(t, s));
        }
    }
    beta
}

/// `log(exp(a) + exp(b))` as the backward kernel accumulates `lcab`: `-inf` start is replaced.
fn log_add(p: Fp, acc: f64, x: f64) -> f64 {
    if acc == f64::NEG_INFINITY {
        return x;
    }
    let m = acc.max(x);
    p.r(p.ln(p.r(p.exp(p.r(acc - m)) + p.exp(p.r(x - m)))) + m)
}

/// The gradient of `ctc_loss` with respect to `log_probs`, as PyTorch computes it
/// (`ctc_loss_backward_cpu_template`): per sequence `b` with `T_b` frames,
/// `grad[t, b, c] = (exp(lp[t, b, c]) - exp(lcab[t, c] + nll_b - lp[t, b, c])) * gr_b` for
/// `t < T_b`, where `lcab[t, c]` log-sums `alpha[t, s] + beta[t, s]` over the extended states
/// `s` of label `c`, and 0 for `t >= T_b`. This is the gradient with respect to the *logits* of
/// a log-softmax (it assumes normalised log-probabilities), not the chain rule of the forward:
/// for unnormalised inputs the two differ, and PyTorch returns this one. An impossible
/// alignment (`nll = inf`) gives NaN on its first `T_b` frames (`-inf + inf`), or zeros with
/// `zero_infinity`, whose `where` also stops `gr_b`. `gr_b` is the output gradient, divided by
/// `N` and then by `max(target_length, 1)` for `mean` (autograd of `(res / tl).mean()`).
pub fn ctc_loss_backward(a: &Args, bw: &Backward) -> Result<Gradients, CallError> {
    let c = parse(a)?;
    let p = Fp(c.dt);
    let nll = c.nll()?;
    let g = bw.grad().iter().copied().collect::<Vec<f64>>();
    let n = c.n;
    let mut grad = vec![0.0; c.x.len()];
    for b in 0..n {
        let go = match c.red {
            Reduction::None => g[if c.batched { b } else { 0 }],
            Reduction::Sum => g[0],
            Reduction::Mean => {
                let per = p.r(g[0] / n as f64);
                p.r(per / c.target_lengths[b].max(1) as f64)
            }
        };
        let il = c.input_lengths[b] as usize;
        if il == 0 || (c.zero_infinity && nll[b] == f64::INFINITY) {
            continue;
        }
        let gr = if c.zero_infinity && nll[b] == f64::INFINITY {
            0.0
        } else {
            go
        };
        let tl = c.target_lengths[b] as usize;
        let ext = c.ext(b)?;
        let emit = |t: usize, s: usize| c.lp(t, b, ext[s]);
        let alpha = alphas(p, il, &ext, emit);
        let beta = betas(p, il, &ext, emit);
        let mut lcab = vec![vec![f64::NEG_INFINITY; c.classes]; il];
        let last = il - 1;
        lcab[last][c.blank as usize] = p.r(alpha[last][2 * tl] + beta[last][2 * tl]);
        if tl > 0 {
            let k = ext[2 * tl - 1] as usize;
            lcab[last][k] = p.r(alpha[last][2 * tl - 1] + beta[last][2 * tl - 1]);
        }
        for t in (0..last).rev() {
            for s in (0..ext.len()).rev() {
                let ab = p.r(alpha[t][s] + beta[t][s]);
                let k = ext[s] as usize;
                lcab[t][k] = log_add(p, lcab[t][k], ab);
            }
        }
        for (t, row) in lcab.iter().enumerate() {
            for (k, &res) in row.iter().enumerate() {
                let lp = c.lp(t, b, k as i64);
                let e2 = p.exp(p.r(p.r(res + nll[b]) - lp));
                grad[(t * n + b) * c.classes + k] = p.r(p.r(p.exp(lp) - e2) * gr);
            }
        }
    }
    let shape = a.tensor("log_probs")?.shape().to_vec();
    let arr = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), grad)
        .map_err(|e| shape_err(e.to_string()))?;
    let mut out = Gradients::new();
    insert(&mut out, "log_probs", c.dt, &arr);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::backend::{ErrorKind, Outcome, Value};
    use crate::reference::testing::{forward, kind, t, value};

    use crate::tensor::DType;

    fn call(args: Vec<(&str, Value)>) -> Outcome {
        forward("torch.nn.functional.ctc_loss", args)
    }

    /// Deterministic pseudo-random log-probabilities in [-4, 0).
    fn lp(len: usize, seed: u64) -> Vec<f64> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                -4.0 * ((s >> 11) as f64 / (1u64 << 53) as f64)
            })
            .collect()
    }

    fn base(
        x: &[f64],
        shape: &[usize],
        targets: Value,
        il: &[i64],
        tl: &[i64],
        red: &str,
    ) -> Vec<(&'static str, Value)> {
        vec![
            ("log_probs", t(DType::Float64, shape, x)),
            ("targets", targets),
            ("input_lengths", Value::IntList(il.to_vec())),
            ("target_lengths", Value::IntList(tl.to_vec())),
            ("reduction", Value::Str(red.into())),
        ]
    }

    #[test]
    fn a_single_alignment_is_the_sum_of_its_log_probabilities() {
        // T = 3 frames for [1, 1]: the only path is 1, blank, 1.
        let x = lp(9, 1);
        let out = value(call(base(
            &x,
            &[3, 1, 3],
            t(DType::Int64, &[1, 2], &[1.0, 1.0]),
            &[3],
            &[2],
            "none",
        )));
        let direct = -(x[1] + x[3] + x[7]);
        assert!((out.to_f64_vec()[0] - direct).abs() < 1e-12);
        // One frame too few: no alignment at all.
        let out = value(call(base(
            &x,
            &[3, 1, 3],
            t(DType::Int64, &[1, 2], &[1.0, 1.0]),
            &[2],
            &[2],
            "none",
        )));
        assert_eq!(out.to_f64_vec()[0], f64::INFINITY);
    }

    #[test]
    fn the_loss_sums_every_alignment() {
        // T = 3, target [1], C = 2: paths 1bb, b1b, bb1, 11b, b11, 111 collapse to [1].
        let x = lp(6, 2);
        let out = value(call(base(
            &x,
            &[3, 1, 2],
            t(DType::Int64, &[1], &[1.0]),
            &[3],
            &[1],
            "none",
        )));
        let at = |t: usize, k: usize| x[t * 2 + k];
        let paths = [
            [1, 0, 0],
            [0, 1, 0],
            [0, 0, 1],
            [1, 1, 0],
            [0, 1, 1],
            [1, 1, 1],
        ];
        let total: f64 = paths
            .iter()
            .map(|p| (0..3).map(|t| at(t, p[t])).sum::<f64>().exp())
            .sum();
        assert!((out.to_f64_vec()[0] + total.ln()).abs() < 1e-12);
    }

    #[test]
    fn batch_order_does_not_matter_and_mean_divides_by_target_length() {
        let x = lp(5 * 2 * 4, 3);
        let targets = [[1.0, 2.0, 3.0], [3.0, 3.0, 0.0]];
        let flat: Vec<f64> = targets.iter().flatten().copied().collect();
        let out = value(call(base(
            &x,
            &[5, 2, 4],
            t(DType::Int64, &[2, 3], &flat),
            &[5, 4],
            &[3, 2],
            "none",
        )))
        .to_f64_vec();
        // Swap the two sequences.
        let mut xs = x.clone();
        for ti in 0..5 {
            for k in 0..4 {
                xs[(ti * 2) * 4 + k] = x[(ti * 2 + 1) * 4 + k];
                xs[(ti * 2 + 1) * 4 + k] = x[(ti * 2) * 4 + k];
            }
        }
        let swapped: Vec<f64> = targets.iter().rev().flatten().copied().collect();
        let back = value(call(base(
            &xs,
            &[5, 2, 4],
            t(DType::Int64, &[2, 3], &swapped),
            &[4, 5],
            &[2, 3],
            "none",
        )))
        .to_f64_vec();
        assert_eq!(out, vec![back[1], back[0]]);
        let mean = value(call(base(
            &x,
            &[5, 2, 4],
            t(DType::Int64, &[2, 3], &flat),
            &[5, 4],
            &[3, 2],
            "mean",
        )))
        .to_f64_vec()[0];
        assert!((mean - (out[0] / 3.0 + out[1] / 2.0) / 2.0).abs() < 1e-12);
        // Concatenated targets give the same losses.
        let concat = value(call(base(
            &x,
            &[5, 2, 4],
            t(DType::Int64, &[5], &[1.0, 2.0, 3.0, 3.0, 3.0]),
            &[5, 4],
            &[3, 2],
            "none",
        )))
        .to_f64_vec();
        assert_eq!(concat, out);
    }

    #[test]
    fn errors_have_pytorch_kinds() {
        let x = lp(18, 4);
        let tg = || t(DType::Int64, &[2, 2], &[1.0, 2.0, 1.0, 0.0]);
        let mut args = base(&x, &[3, 2, 3], tg(), &[3, 4], &[2, 1], "none");
        assert_eq!(kind(call(args.clone())), ErrorKind::Value);
        args[2].1 = Value::IntList(vec![3, 3]);
        args.push(("blank", Value::Int(3)));
        assert_eq!(kind(call(args.clone())), ErrorKind::Argument);
        args.pop();
        args[3].1 = t(DType::Int64, &[2], &[2.0, 1.0]);
        assert_eq!(kind(call(args.clone())), ErrorKind::Argument);
        args[2].1 = t(DType::Float32, &[2], &[3.0, 3.0]);
        assert_eq!(kind(call(args.clone())), ErrorKind::Dtype);
        args[2].1 = Value::IntList(vec![3, 3]);
        args[3].1 = Value::IntList(vec![3, 1]);
        assert_eq!(kind(call(args.clone())), ErrorKind::Shape);
        args[3].1 = Value::IntList(vec![2, 1]);
        args[0].1 = t(DType::Float16, &[3, 2, 3], &[0.0; 18]);
        assert_eq!(kind(call(args.clone())), ErrorKind::Dtype);
    }

    #[test]
    fn zero_infinity_and_output_shapes() {
        let x = lp(6, 5);
        let mut args = base(
            &x,
            &[2, 3],
            t(DType::Int64, &[2], &[1.0, 1.0]),
            &[2],
            &[2],
            "none",
        );
        let out = value(call(args.clone()));
        assert_eq!(out.shape(), &[] as &[usize]);
        assert_eq!(out.to_f64_vec()[0], f64::INFINITY);
        args.push(("zero_infinity", Value::Bool(true)));
        assert_eq!(value(call(args)).to_f64_vec()[0], 0.0);
    }
}

#[cfg(test)]
mod grad_tests {
    use crate::backend::{Backend, Call, Outcome, Value};
    use crate::reference::testing::t;
    use crate::reference::Reference;
    use crate::tensor::DType;

    fn grad(args: Vec<(&str, Value)>) -> Vec<f64> {
        let call = Call {
            api: "torch.nn.functional.ctc_loss".into(),
            args: args.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        match Reference.backward(&call, &["log_probs".to_string()], None) {
            Outcome::Value(mut g) => g.remove("log_probs").expect("gradient").to_f64_vec(),
            other => panic!("{other:?}"),
        }
    }

    /// Uniform log-probabilities over 3 classes, (T=4, N=2, C=3); sequence 0 has 3 frames and
    /// labels [1, 2], sequence 1 has 2 frames and labels [1, 1] (infeasible: needs 3 frames).
    fn args(zero_infinity: bool) -> Vec<(&'static str, Value)> {
        vec![
            (
                "log_probs",
                t(DType::Float64, &[4, 2, 3], &[-(3f64.ln()); 24]),
            ),
            ("targets", t(DType::Int64, &[2, 2], &[1.0, 2.0, 1.0, 1.0])),
            ("input_lengths", Value::IntList(vec![3, 2])),
            ("target_lengths", Value::IntList(vec![2, 2])),
            ("reduction", Value::Str("sum".into())),
            ("zero_infinity", Value::Bool(zero_infinity)),
        ]
    }

    #[test]
    fn frames_are_softmax_minus_posterior() {
        // With normalised inputs each frame's gradient is softmax - posterior occupancy, so it
        // sums to 0 over the classes; frames at or past input_length get exactly 0.
        let g = grad(args(true));
        for t in 0..4 {
            let row = &g[(t * 2) * 3..(t * 2) * 3 + 3];
            if t < 3 {
                assert!(row.iter().sum::<f64>().abs() < 1e-12, "{t}: {row:?}");
                assert!(row.iter().any(|&v| v != 0.0));
            } else {
                assert_eq!(row, &[0.0; 3]);
            }
        }
    }

    #[test]
    fn infeasible_sequences_are_nan_unless_zero_infinity() {
        let seq1 = |g: &[f64]| -> Vec<f64> {
            (0..4)
                .flat_map(|t| g[(t * 2 + 1) * 3..(t * 2 + 2) * 3].to_vec())
                .collect()
        };
        let with = seq1(&grad(args(true)));
        assert!(with.iter().all(|&v| v == 0.0), "{with:?}");
        let without = seq1(&grad(args(false)));
        assert!(without[..6].iter().all(|v| v.is_nan()), "{without:?}");
        assert_eq!(&without[6..], &[0.0; 6]);
    }
}
