//! `binary_cross_entropy`, `binary_cross_entropy_with_logits`, `multilabel_soft_margin_loss`.
//!
//! `binary_cross_entropy` is one ATen kernel: same-dtype input and target, both checked to lie
//! in [0, 1] (NaN fails the check), logs clamped at -100, then `loss.mul_(weight)` in place.
//! `binary_cross_entropy_with_logits` is a chain of in-place tensor ops starting from
//! `1 - target`, so its result has the *target's* dtype. `multilabel_soft_margin_loss` is plain
//! Python: it broadcasts, sums over the input's last dimension index and divides by its size.

use super::reduction::{self, Reduction};
use super::{
    broadcast_shapes, mean_all, require_float, round_to, sum_all, sum_axis, torch_dtype_name, zip,
    zip_inplace, Arr,
};
use crate::backend::CallError;
use crate::reference::Args;
use crate::tensor::{DType, Tensor};
use crate::reference::GradientKernel;

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[];

fn read(args: &Args) -> Result<(Arr, Arr, Option<Arr>), CallError> {
    Ok((
        Arr::of(args.tensor("input")?),
        Arr::of(args.tensor("target")?),
        args.opt_tensor("weight")?.map(Arr::of),
    ))
}

/// `log_sigmoid(x)`: float16/bfloat16 are computed in float32 and rounded once.
fn log_sigmoid(x: &Arr) -> Result<Arr, CallError> {
    require_float("log_sigmoid_cpu", x.dt)?;
    Ok(x.map(x.dt, super::super::numeric::log_sigmoid))
}

/// `scalar - x` or `x + scalar` with an integral Python scalar: the result keeps `x`'s dtype
/// (bool cannot be subtracted).
fn rsub_one(x: &Arr) -> Result<Arr, CallError> {
    if x.dt == DType::Bool {
        return Err(CallError::dtype(
            "Subtraction, the `-` operator, with a bool tensor is not supported",
        ));
    }
    Ok(x.map(x.dt, |v| 1.0 - v))
}

pub fn binary_cross_entropy(args: &Args) -> Result<Tensor, CallError> {
    let (input, target, weight) = read(args)?;
    let red = reduction::read(args, true)?.get_enum()?;
    if target.shape() != input.shape() {
        return Err(CallError::shape(format!(
            "Using a target size ({:?}) that is different to the input size ({:?}) is deprecated. Please ensure they have the same size.",
            target.shape(),
            input.shape()
        )));
    }
    // Python expands the weight to broadcast_shapes(target, weight); a weight that broadcasts
    // to something larger than the loss only fails later, at `loss.mul_(weight)`.
    let weight = match weight {
        Some(w) => {
            let shape = broadcast_shapes(target.shape(), w.shape())?;
            Some(w.expand(&shape)?)
        }
        None => None,
    };
    if target.dt != input.dt {
        return Err(CallError::dtype(format!(
            "Found dtype {} but expected {}",
            torch_dtype_name(target.dt),
            torch_dtype_name(input.dt)
        )));
    }
    require_float("binary_cross_entropy", input.dt)?;
    for (&x, &t) in input.a.iter().zip(target.a.iter()) {
        if !(0.0..=1.0).contains(&x) {
            return Err(CallError::value(
                "all elements of input should be between 0 and 1",
            ));
        }
        if !(0.0..=1.0).contains(&t) {
            return Err(CallError::value(
                "all elements of target should be between 0 and 1",
            ));
        }
    }
    let dt = input.dt;
    let r = |v: f64| round_to(dt, v);
    let mut loss = zip(
        &input,
        &target,
        |_| Ok(()),
        |x, t| {
            let log_1mx = r(r((-x).ln_1p()).max(-100.0));
            let log_x = r(r(x.ln()).max(-100.0));
            r(r(t - 1.0) * log_1mx) - r(t * log_x)
        },
    )?;
    if let Some(w) = &weight {
        loss = zip_inplace(&loss, w, |l, w| l * w)?;
    }
    Ok(reduction::apply(loss, red)?.tensor())
}

pub fn binary_cross_entropy_with_logits(args: &Args) -> Result<Tensor, CallError> {
    let (input, target, weight) = read(args)?;
    let pos_weight = args.opt_tensor("pos_weight")?.map(Arr::of);
    let red = reduction::read(args, true)?.get_enum()?;
    if target.shape() != input.shape() {
        return Err(CallError::shape(format!(
            "Target size ({:?}) must be the same as input size ({:?})",
            target.shape(),
            input.shape()
        )));
    }
    // ATen: log_sigmoid_input = log_sigmoid(input);
    //       log_sigmoid_input.mul_((pos_weight - 1).mul(target).add_(1));
    //       loss = (1 - target).mul_(input).sub_(log_sigmoid_input); loss.mul_(weight)
    let mut lsi = log_sigmoid(&input)?;
    if let Some(pw) = &pos_weight {
        if pw.dt == DType::Bool {
            return Err(CallError::dtype(
                "Subtraction, the `-` operator, with a bool tensor is not supported",
            ));
        }
        let pw1 = pw.map(pw.dt, |v| v - 1.0);
        let lw = zip(&pw1, &target, |_| Ok(()), |a, b| a * b)?;
        let lw = lw.map(lw.dt, |v| v + 1.0);
        lsi = zip_inplace(&lsi, &lw, |a, b| a * b)?;
    }
    let mut loss = rsub_one(&target)?;
    loss = zip_inplace(&loss, &input, |a, b| a * b)?;
    loss = zip_inplace(&loss, &lsi, |a, b| a - b)?;
    if let Some(w) = &weight {
        loss = zip_inplace(&loss, w, |a, b| a * b)?;
    }
    Ok(reduction::apply(loss, red)?.tensor())
}

pub fn multilabel_soft_margin_loss(args: &Args) -> Result<Tensor, CallError> {
    let (input, target, weight) = read(args)?;
    let req = reduction::read(args, true)?;
    // loss = -(target * logsigmoid(input) + (1 - target) * logsigmoid(-input))
    let a = zip(&target, &log_sigmoid(&input)?, |_| Ok(()), |t, l| t * l)?;
    let one_minus = rsub_one(&target)?;
    let neg_input = input.map(input.dt, |v| -v);
    let b = zip(
        &one_minus,
        &log_sigmoid(&neg_input)?,
        |_| Ok(()),
        |t, l| t * l,
    )?;
    let s = zip(&a, &b, |_| Ok(()), |x, y| x + y)?;
    let mut loss = s.map(s.dt, |v| -v);
    if let Some(w) = &weight {
        loss = zip(&loss, w, |_| Ok(()), |l, w| l * w)?;
    }
    // class_dim = input.dim() - 1 indexes the (possibly broadcast, higher-rank) loss from the
    // front; C = input.size(-1).
    let Some(&c) = input.shape().last() else {
        return Err(CallError::shape(
            "Dimension specified as -1 but tensor has no dimensions",
        ));
    };
    let summed = sum_axis(&loss, input.shape().len() - 1);
    let per_sample = summed.map(summed.dt, |v| round_to(summed.dt, v / c as f64));
    let out = match req.strict(|shown| format!("{shown} is not valid"))? {
        Reduction::None => per_sample,
        Reduction::Mean => mean_all(&per_sample)?,
        Reduction::Sum => sum_all(&per_sample),
    };
    Ok(out.tensor())
}
