//! `cross_entropy` and `nll_loss`.
//!
//! `nll_loss` follows ATen's `nll_loss_nd`: 1-D and 2-D inputs go to `nll_loss`, 4-D to
//! `nll_loss2d`, and 3-D or 5+-D inputs are reshaped to 4-D first, so the shape checks (and
//! which weight shapes pass) differ by rank. `cross_entropy` takes three routes: probability
//! targets when `target` has exactly the input's shape, a label-smoothing formula when
//! `label_smoothing > 0` (a negative or NaN value is silently ignored), else
//! `nll_loss(log_softmax(input))`.

use super::reduction::{self, Reduction};
use super::{
    float_arg, require_float, round_to, sum_all, sum_axis, torch_dtype_name, zip, zip_into, Arr,
};
use crate::backend::CallError;
use crate::reference::Args;
use crate::reference::GradientKernel;
use crate::tensor::{DType, Tensor};
use ndarray::{ArrayD, Axis, IxDyn};

#[path = "cross_entropy_grad.rs"]
mod grad;
pub(super) use grad::cross_entropy_grads;

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[
    (
        "torch.nn.functional.cross_entropy",
        grad::cross_entropy_backward,
    ),
    ("torch.nn.functional.nll_loss", grad::nll_loss_backward),
];

/// `log_softmax(x, axis)` as PyTorch evaluates it: `(x - max) - log(sum(exp(x - max)))`, so a
/// lane that is all `-inf`, or holds `+inf` or NaN, gives NaN.
fn log_softmax(x: &Arr, axis: usize) -> Arr {
    let mut out = x.a.clone();
    let half_last_dim = matches!(x.dt, DType::Float16 | DType::Bfloat16) && axis + 1 == x.a.ndim();
    for mut lane in out.lanes_mut(Axis(axis)) {
        let m = lane.iter().copied().fold(f64::NEG_INFINITY, |m, v| {
            if v.is_nan() || m.is_nan() {
                f64::NAN
            } else {
                m.max(v)
            }
        });
        let sum = super::super::numeric::sum(lane.iter().map(|&v| (v - m).exp()));
        // PyTorch's last-dim kernel for float16/bfloat16 keeps the sum of exponentials and its
        // log in the tensor's dtype; the other kernels round once at the end (measured).
        let lse = if half_last_dim {
            round_to(x.dt, round_to(x.dt, sum).ln())
        } else {
            sum.ln()
        };
        lane.mapv_inplace(|v| round_to(x.dt, (v - m) - lse));
    }
    Arr { dt: x.dt, a: out }
}

/// The class dimension of a `cross_entropy` input, after `log_softmax`'s own checks.
fn checked_log_softmax(input: &Arr) -> Result<Arr, CallError> {
    let class_dim = if input.a.ndim() == 1 { 0 } else { 1 };
    if class_dim >= input.a.ndim() {
        return Err(CallError::shape(format!(
            "Dimension out of range (expected to be in range of [-1, 0], but got {class_dim})"
        )));
    }
    // An empty tensor never reaches the kernel, so an empty integer input passes here.
    if !input.a.is_empty() {
        require_float("log_softmax_lastdim_kernel_impl", input.dt)?;
    }
    Ok(log_softmax(input, class_dim))
}

fn check_target_dtype(target: &Tensor) -> Result<(), CallError> {
    if !matches!(target.dtype(), DType::Int64 | DType::Uint8) {
        return Err(CallError::dtype(format!(
            "expected target dtype to be Long or Byte, but got {}",
            torch_dtype_name(target.dtype())
        )));
    }
    Ok(())
}

fn weight_message(c: usize, w: &Arr) -> String {
    format!(
        "weight tensor should be defined either for all {c} classes or no classes but got weight tensor of shape: {:?}",
        w.shape()
    )
}

/// What `nll_loss_nd` computes before reducing: per-element losses and weights, laid out as
/// the unreduced output.
struct Nll {
    dt: DType,
    losses: Vec<f64>,
    weights: Vec<f64>,
    ignored: Vec<bool>,
    weighted: bool,
    /// Shape of the unreduced output: `[]` for a 1-D input, `[N]`, or `[N, d1, ..., dK]`.
    shape: Vec<usize>,
}

/// `nll_loss_nd`'s checks and per-element terms, in PyTorch's order: shapes, then dtypes, then
/// target values.
fn nll_terms(
    input: &Arr,
    target: &Tensor,
    weight: Option<&Arr>,
    ignore_index: i64,
) -> Result<Nll, CallError> {
    let ishape = input.shape().to_vec();
    let tshape = target.shape().to_vec();
    let nd = ishape.len();
    if nd < 1 {
        return Err(CallError::shape("Expected 1 or more dimensions (got 0)"));
    }
    if nd != 1 && (tshape.is_empty() || ishape[0] != tshape[0]) {
        return Err(CallError::shape(format!(
            "Expected input batch_size ({}) to match target batch_size ({}).",
            ishape[0],
            tshape.first().copied().unwrap_or(0)
        )));
    }
    let c = if nd == 1 { ishape[0] } else { ishape[1] };
    let (n, s, out_shape) = if nd <= 2 {
        if tshape.len() > 1 {
            return Err(CallError::shape(
                "0D or 1D target tensor expected, multi-target not supported",
            ));
        }
        // The target dtype is checked before the 1-D size (measured).
        check_target_dtype(target)?;
        if nd == 1 && tshape.len() == 1 && tshape[0] != 1 {
            return Err(CallError::shape(format!(
                "For 1D input, 1D target must have size 1, but got target size: {}",
                tshape[0]
            )));
        }
        if let Some(w) = weight {
            if w.shape().len() != 1 || w.a.len() != c {
                return Err(CallError::shape(weight_message(c, w)));
            }
        }
        if nd == 1 {
            (1, 1, vec![])
        } else {
            (ishape[0], 1, vec![ishape[0]])
        }
    } else {
        let mut out_size = vec![ishape[0]];
        out_size.extend_from_slice(&ishape[2..]);
        if nd != 4 && tshape[1..] != ishape[2..] {
            return Err(CallError::shape(format!(
                "Expected target size {out_size:?}, got {tshape:?}"
            )));
        }
        if nd == 4 && tshape.len() != 3 {
            return Err(CallError::shape(format!(
                "only batches of spatial targets supported (3D tensors) but got targets of dimension: {}",
                tshape.len()
            )));
        }
        check_target_dtype(target)?;
        if let Some(w) = weight {
            // nll_loss2d checks only the element count, so any weight shape holding C passes.
            if w.a.len() != c {
                return Err(CallError::shape(
                    "weight tensor should be defined either for all or no classes",
                ));
            }
        }
        let input_numel: usize = ishape.iter().product();
        let target_numel: usize = tshape.iter().product();
        let spatial_mismatch = if nd == 4 {
            tshape[1..] != ishape[2..]
        } else {
            // Reshaped to (N, C, 1, -1), or (N, C, 0, 0) when empty.
            input_numel == 0 && target_numel > 0
        };
        if spatial_mismatch {
            return Err(CallError::shape(format!(
                "size mismatch (got input: {ishape:?} , target: {tshape:?}"
            )));
        }
        (ishape[0], ishape[2..].iter().product(), out_size)
    };
    require_float(
        if nd <= 2 {
            "nll_loss_out_frame"
        } else {
            "nll_loss2d_forward_out_frame"
        },
        input.dt,
    )?;
    if let Some(w) = weight {
        if w.dt != input.dt {
            return Err(CallError::dtype(format!(
                "expected scalar type {} but found {}",
                torch_dtype_name(input.dt),
                torch_dtype_name(w.dt)
            )));
        }
    }
    // nll_loss2d (inputs of rank 3 and up) reads the target as int64 only.
    if nd > 2 && target.dtype() == DType::Uint8 {
        return Err(CallError::dtype("expected scalar type Long but found Byte"));
    }
    let t = target.as_i64().expect("integer target");
    let x: Vec<f64> = input.a.iter().copied().collect();
    let w: Option<Vec<f64>> = weight.map(|w| w.a.iter().copied().collect());
    let mut losses = Vec::with_capacity(n * s);
    let mut weights = Vec::with_capacity(n * s);
    let mut ignored = Vec::with_capacity(n * s);
    for i in 0..n {
        for j in 0..s {
            let k = t[i * s + j];
            ignored.push(k == ignore_index);
            if k == ignore_index {
                losses.push(0.0);
                weights.push(0.0);
                continue;
            }
            if k < 0 || k as usize >= c {
                return Err(CallError::value(format!("Target {k} is out of bounds.")));
            }
            let v = x[(i * c + k as usize) * s + j];
            match &w {
                Some(w) => {
                    let wk = w[k as usize];
                    losses.push(round_to(input.dt, -v * wk));
                    weights.push(wk);
                }
                None => {
                    losses.push(-v);
                    weights.push(1.0);
                }
            }
        }
    }
    Ok(Nll {
        dt: input.dt,
        losses,
        weights,
        ignored,
        weighted: weight.is_some(),
        shape: out_shape,
    })
}

impl Nll {
    /// The kernel's reduction: an 8-level cascade of partial sums carried every 16 elements,
    /// every addition rounded to the input's dtype (so float16 sums in float16). Returns the
    /// loss sum and the total weight (the count of non-ignored targets when unweighted).
    fn cascade(&self) -> (f64, f64) {
        const LEVELS: usize = 8;
        let r = |x: f64| round_to(self.dt, x);
        let n = self.losses.len();
        let ceil_log2 = if n <= 2 {
            1
        } else {
            64 - ((n - 1) as u64).leading_zeros() as usize
        };
        let level_power = (ceil_log2 / LEVELS).max(4);
        let level_mask = (1usize << level_power) - 1;
        let mut lp = [0.0f64; LEVELS];
        let mut wp = [0.0f64; LEVELS];
        let mut num_ignored = 0usize;
        for b in 0..n {
            if self.ignored[b] {
                num_ignored += 1;
                continue;
            }
            lp[0] = r(lp[0] + self.losses[b]);
            if self.weighted {
                wp[0] = r(wp[0] + self.weights[b]);
            }
            for j in 0..LEVELS - 1 {
                if b & (level_mask << (j * level_power)) != 0 {
                    break;
                }
                wp[j + 1] = r(wp[j + 1] + wp[j]);
                lp[j + 1] = r(lp[j + 1] + lp[j]);
                wp[j] = 0.0;
                lp[j] = 0.0;
            }
        }
        let total_weight = if self.weighted {
            wp.iter().fold(0.0, |acc, &v| r(acc + v))
        } else {
            r((n - num_ignored) as f64)
        };
        (lp.iter().fold(0.0, |acc, &v| r(acc + v)), total_weight)
    }

    fn reduce(&self, red: Reduction) -> Arr {
        let (sum, total_weight) = self.cascade();
        match red {
            // A 1-D input gives a 0-d result even unreduced.
            Reduction::None if !self.shape.is_empty() => Arr {
                dt: self.dt,
                a: ArrayD::from_shape_vec(IxDyn(&self.shape), self.losses.clone())
                    .expect("nll output shape"),
            },
            Reduction::None | Reduction::Sum => Arr::scalar(self.dt, sum),
            // Weighted mean: divided by the summed weights of the non-ignored targets (NaN when
            // there are none, or when there are no targets at all).
            Reduction::Mean => Arr::scalar(self.dt, sum / total_weight),
        }
    }
}

/// `a / b` for 0-d float tensors of one dtype, computed in the working dtype.
fn div(a: &Arr, b: &Arr) -> Arr {
    zip(a, b, |_| Ok(()), |x, y| x / y).expect("0-d operands")
}

pub fn nll_loss(args: &Args) -> Result<Tensor, CallError> {
    let input = Arr::of(args.tensor("input")?);
    let target = args.tensor("target")?;
    let weight = args.opt_tensor("weight")?.map(Arr::of);
    let ignore_index = args.i64_or("ignore_index", -100)?;
    let red = reduction::read(args, true)?.get_enum()?;
    let nll = nll_terms(&input, target, weight.as_ref(), ignore_index)?;
    Ok(nll.reduce(red).tensor())
}

pub fn cross_entropy(args: &Args) -> Result<Tensor, CallError> {
    let input = Arr::of(args.tensor("input")?);
    let target = args.tensor("target")?;
    let weight = args.opt_tensor("weight")?.map(Arr::of);
    let ignore_index = args.i64_or("ignore_index", -100)?;
    let label_smoothing = float_arg(args, "label_smoothing", 0.0)?;
    let red = reduction::read(args, true)?.get_enum()?;
    let out = if input.shape() == target.shape() {
        probability_targets(
            &input,
            target,
            weight.as_ref(),
            ignore_index,
            label_smoothing,
            red,
        )?
    } else if label_smoothing > 0.0 {
        check_smoothing(label_smoothing)?;
        smoothed(
            &input,
            target,
            weight.as_ref(),
            ignore_index,
            label_smoothing,
            red,
        )?
    } else {
        let logp = checked_log_softmax(&input)?;
        nll_terms(&logp, target, weight.as_ref(), ignore_index)?.reduce(red)
    };
    Ok(out.tensor())
}

fn check_smoothing(ls: f64) -> Result<(), CallError> {
    if ls > 1.0 {
        return Err(CallError::argument(format!(
            "label_smoothing must be between 0.0 and 1.0. Got: {ls}"
        )));
    }
    Ok(())
}

/// `tensor <op> python_float` on CPU: the op runs in the op math type (float32 for half types);
/// a multiplier or divisor is rounded to that type, an addend to the tensor's own dtype
/// (measured).
#[derive(Clone, Copy)]
enum ScalarOp {
    Mul,
    Div,
    Add,
}

fn with_scalar(x: &Arr, s: f64, op: ScalarOp) -> Arr {
    let math = match x.dt {
        DType::Float16 | DType::Bfloat16 => DType::Float32,
        d => d,
    };
    let s = match op {
        ScalarOp::Add => round_to(x.dt, s),
        _ => round_to(math, s),
    };
    x.map(x.dt, |v| {
        round_to(
            math,
            match op {
                ScalarOp::Mul => v * s,
                ScalarOp::Div => v / s,
                ScalarOp::Add => v + s,
            },
        )
    })
}

/// `weight` viewed as `[1, C, 1, ...]` to broadcast over an input of rank `nd`.
fn class_weight_view(w: &Arr, nd: usize) -> Result<Arr, CallError> {
    if nd <= 1 {
        return Ok(w.clone());
    }
    let c = *w.shape().first().ok_or_else(|| {
        CallError::shape("weight: dimension specified as 0 but tensor has no dimensions")
    })?;
    if c != w.a.len() {
        return Err(CallError::shape(format!(
            "shape '[1, {c}, ...]' is invalid for a weight of {} elements",
            w.a.len()
        )));
    }
    let mut shape = vec![1; nd];
    shape[1] = c;
    Ok(Arr {
        dt: w.dt,
        a: ArrayD::from_shape_vec(IxDyn(&shape), w.a.iter().copied().collect())
            .expect("numel matches"),
    })
}

/// Soft targets: `-(log_softmax(input) * target' * weight).sum(class_dim)`, with
/// `target' = target * (1 - ls) + ls / C`. The mean divides by the number of samples
/// (`numel / C`), never by the weights.
fn probability_targets(
    input: &Arr,
    target: &Tensor,
    weight: Option<&Arr>,
    ignore_index: i64,
    ls: f64,
    red: Reduction,
) -> Result<Arr, CallError> {
    if !target.dtype().is_float() {
        return Err(CallError::dtype(format!(
            "Expected floating point type for target with class probabilities, got {}",
            torch_dtype_name(target.dtype())
        )));
    }
    if ignore_index >= 0 {
        return Err(CallError::argument(
            "ignore_index is not supported for floating point target",
        ));
    }
    let nd = input.a.ndim();
    let class_dim = if nd == 1 { 0 } else { 1 };
    if class_dim >= nd {
        return Err(CallError::shape(
            "Dimension specified as 1 but tensor has no dimensions",
        ));
    }
    let c = input.shape()[class_dim];
    if let Some(w) = weight {
        if w.shape().len() != 1 || w.a.len() != c {
            return Err(CallError::shape(format!(
                "cross_entropy: {}",
                weight_message(c, w)
            )));
        }
    }
    let logp = checked_log_softmax(input)?;
    let mut t = Arr::of(target);
    if ls > 0.0 {
        check_smoothing(ls)?;
        t = with_scalar(&t, 1.0 - ls, ScalarOp::Mul);
        t = with_scalar(&t, ls / c as f64, ScalarOp::Add);
    }
    let mut prod = zip(&logp, &t, |_| Ok(()), |a, b| a * b)?;
    if let Some(w) = weight {
        prod = zip(&prod, &class_weight_view(w, nd)?, |_| Ok(()), |a, b| a * b)?;
    }
    let neg = |x: Arr| x.map(x.dt, |v| -v);
    Ok(match red {
        Reduction::None => neg(sum_axis(&prod, class_dim)),
        Reduction::Sum => neg(sum_all(&prod)),
        Reduction::Mean => {
            let s = neg(sum_all(&prod));
            let numel = logp.a.len();
            if numel == 0 {
                Arr::scalar(s.dt, f64::NAN)
            } else {
                with_scalar(&s, (numel / c) as f64, ScalarOp::Div)
            }
        }
    })
}

/// Class indices with label smoothing:
/// `(1 - ls) * nll_loss(logp) + (ls / C) * smooth`, where `smooth` is
/// `-(logp * weight).sum(class_dim)`, zero at ignored targets, and reduced like the NLL term
/// (the weighted mean divides by the summed weights of the non-ignored targets).
fn smoothed(
    input: &Arr,
    target: &Tensor,
    weight: Option<&Arr>,
    ignore_index: i64,
    ls: f64,
    red: Reduction,
) -> Result<Arr, CallError> {
    let logp = checked_log_softmax(input)?;
    let nll = nll_terms(&logp, target, weight, ignore_index)?;
    let nll_red = nll.reduce(red);
    let nd = logp.a.ndim();
    let class_dim = if nd == 1 { 0 } else { 1 };
    let c = logp.shape()[class_dim];
    let terms = match weight {
        Some(w) => zip(&logp, &class_weight_view(w, nd)?, |_| Ok(()), |a, b| a * b)?,
        None => logp.clone(),
    };
    let mut smooth = sum_axis(&terms, class_dim);
    smooth = smooth.map(smooth.dt, |v| -v);
    // masked_fill_(target == ignore_index, 0): the mask must broadcast to the smooth shape.
    let t = target.as_i64().expect("checked integer target");
    let mask = Arr {
        dt: DType::Bool,
        a: ArrayD::from_shape_vec(
            IxDyn(target.shape()),
            t.iter()
                .map(|&k| (k == ignore_index) as i64 as f64)
                .collect(),
        )
        .expect("target shape"),
    };
    smooth = zip_into(&smooth, &mask, smooth.dt, smooth.dt, |v, m| {
        if m != 0.0 {
            0.0
        } else {
            v
        }
    })?;
    if smooth.shape() != nll.shape.as_slice() {
        return Err(CallError::shape(format!(
            "masked_fill_: mask of shape {:?} does not broadcast to {:?}",
            target.shape(),
            nll.shape
        )));
    }
    let ret = match red {
        Reduction::None => smooth,
        Reduction::Sum => sum_all(&smooth),
        Reduction::Mean => match weight {
            Some(w) => {
                let kept = nll.ignored.iter().filter(|&&i| !i).count();
                if target.dtype() != DType::Int64 && kept > 0 {
                    return Err(CallError::dtype(
                        "gather(): Expected dtype int32/int64 for index",
                    ));
                }
                if w.shape().len() != 1 {
                    return Err(CallError::shape(
                        "gather(): Index tensor must have the same number of dimensions as input tensor",
                    ));
                }
                {
                    // weight.gather(0, target[~ignored]).sum(): a plain tensor sum.
                    let w = Arr {
                        dt: nll.dt,
                        a: ArrayD::from_shape_vec(IxDyn(&[nll.weights.len()]), nll.weights.clone())
                            .expect("length"),
                    };
                    div(&sum_all(&smooth), &sum_all(&w))
                }
            }
            None => {
                let count = nll.weights.len() - t.iter().filter(|&&k| k == ignore_index).count();
                with_scalar(&sum_all(&smooth), count as f64, ScalarOp::Div)
            }
        },
    };
    let a = with_scalar(&nll_red, 1.0 - ls, ScalarOp::Mul);
    let b = with_scalar(&ret, ls / c as f64, ScalarOp::Mul);
    zip(&a, &b, |_| Ok(()), |x, y| x + y)
}
