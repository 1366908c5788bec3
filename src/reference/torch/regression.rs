//! `l1_loss`, `mse_loss`, `smooth_l1_loss`, `huber_loss`.
//!
//! All four broadcast `input` against `target` (PyTorch only warns). Their dtype rules differ:
//! `l1_loss` is `(input - target).abs()` and so works on integers (and wraps like them);
//! `mse_loss` and `smooth_l1_loss` run a float kernel on the promoted dtype; `huber_loss`
//! computes in the promoted dtype but writes the input's dtype. The optional `weight` of
//! `l1_loss`, `mse_loss` and `huber_loss` is applied in Python: its shape must equal the
//! *input's* (not the broadcast shape), and `mean` divides by `weight.sum()` for l1/mse but by
//! the element count for huber.

use super::reduction::{self, Reduction, Requested};
use super::{
    broadcast_shapes, float_arg, mean_all, require_float, result_type, round_to, sum_all,
    torch_dtype_name, zip, zip_into, Arr,
};
use crate::backend::CallError;
use crate::reference::Args;
use crate::tensor::{DType, Tensor};
use crate::reference::GradientKernel;

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[];

fn read_pair(args: &Args) -> Result<(Arr, Arr), CallError> {
    Ok((
        Arr::of(args.tensor("input")?),
        Arr::of(args.tensor("target")?),
    ))
}

/// `input` and `target`, expanded to their broadcast shape (`torch.broadcast_tensors`).
fn expand_pair(input: &Arr, target: &Arr) -> Result<(Arr, Arr), CallError> {
    let shape = broadcast_shapes(input.shape(), target.shape())?;
    Ok((input.expand(&shape)?, target.expand(&shape)?))
}

/// `a - b` as a tensor op: bool operands are rejected, integers wrap in their dtype.
fn sub(a: &Arr, b: &Arr) -> Result<Arr, CallError> {
    if a.dt == DType::Bool || b.dt == DType::Bool {
        return Err(CallError::dtype(
            "Subtraction, the `-` operator, with a bool tensor is not supported",
        ));
    }
    zip(a, b, |_| Ok(()), |x, y| x - y)
}

/// `a * b` as a tensor op; integer products wrap in the result dtype.
fn mul(a: &Arr, b: &Arr) -> Result<Arr, CallError> {
    let dt = result_type(&[(a.dt, a.is_0d()), (b.dt, b.is_0d())]);
    if dt.is_float() {
        return zip(a, b, |_| Ok(()), |x, y| x * y);
    }
    zip(
        a,
        b,
        |_| Ok(()),
        move |x, y| {
            let p = (x as i64).wrapping_mul(y as i64);
            match dt {
                DType::Int32 => p as i32 as f64,
                DType::Uint8 => p as u8 as f64,
                DType::Bool => (p != 0) as i64 as f64,
                _ => p as f64,
            }
        },
    )
}

fn check_weight_size(weight: &Arr, input: &Arr) -> Result<(), CallError> {
    if weight.shape() != input.shape() {
        return Err(CallError::shape(format!(
            "Weights and input must have the same size: weight {:?}, input {:?}",
            weight.shape(),
            input.shape()
        )));
    }
    Ok(())
}

fn invalid_mode(shown: &str) -> String {
    format!("Invalid reduction mode: {shown}. Expected one of 'none', 'mean', 'sum'.")
}

/// `a / b` for 0-d tensors: true division, integers give the default float dtype.
fn true_div(a: &Arr, b: &Arr) -> Arr {
    let mut dt = result_type(&[(a.dt, a.is_0d()), (b.dt, b.is_0d())]);
    if !dt.is_float() {
        dt = DType::Float32;
    }
    zip_into(a, b, dt, dt, |x, y| x / y).expect("0-d operands broadcast")
}

/// The Python-level weighted branch of l1/mse: `errors * weight`, then none / sum /
/// `sum(weighted) / sum(weight)`.
fn weighted_by_sum(errors: &Arr, weight: &Arr, req: &Requested) -> Result<Arr, CallError> {
    let weighted = mul(errors, weight)?;
    Ok(match req.strict(invalid_mode)? {
        Reduction::None => weighted,
        Reduction::Sum => sum_all(&weighted),
        Reduction::Mean => true_div(&sum_all(&weighted), &sum_all(weight)),
    })
}

fn l1_errors(input: &Arr, target: &Arr) -> Result<Arr, CallError> {
    let d = sub(input, target)?;
    Ok(d.map(d.dt, |x| {
        if d.dt == DType::Int64 && x == i64::MIN as f64 {
            x // wrapping abs
        } else {
            x.abs()
        }
    }))
}

pub fn l1_loss(args: &Args) -> Result<Tensor, CallError> {
    let (input, target) = read_pair(args)?;
    let req = reduction::read(args, true)?;
    let weight = args.opt_tensor("weight")?.map(Arr::of);
    let (input_e, target_e) = expand_pair(&input, &target)?;
    let out = match weight {
        Some(w) => {
            check_weight_size(&w, &input)?;
            weighted_by_sum(&l1_errors(&input_e, &target_e)?, &w, &req)?
        }
        None => l1_unweighted(&input_e, &target_e, &req)?,
    };
    Ok(out.tensor())
}

/// `torch._C._nn.l1_loss` on expanded tensors: `apply_loss_reduction((input - target).abs())`.
fn l1_unweighted(input: &Arr, target: &Arr, req: &Requested) -> Result<Arr, CallError> {
    let red = req.get_enum()?;
    reduction::apply(l1_errors(input, target)?, red)
}

/// The dtype a float loss kernel (`mse_cpu`, `smooth_l1_cpu`, `huber_cpu`) runs in.
fn kernel_dtype(op: &str, input: &Arr, target: &Arr) -> Result<DType, CallError> {
    let dt = result_type(&[(input.dt, input.is_0d()), (target.dt, target.is_0d())]);
    require_float(op, dt)?;
    Ok(dt)
}

pub fn mse_loss(args: &Args) -> Result<Tensor, CallError> {
    let (input, target) = read_pair(args)?;
    let req = reduction::read(args, true)?;
    let weight = args.opt_tensor("weight")?.map(Arr::of);
    let (input_e, target_e) = expand_pair(&input, &target)?;
    let out = match weight {
        Some(w) => {
            check_weight_size(&w, &input)?;
            // torch.pow(input - target, 2): integer inputs stay integers here.
            let d = sub(&input_e, &target_e)?;
            let sq = mul(&d, &d)?;
            weighted_by_sum(&sq, &w, &req)?
        }
        None => {
            let red = req.get_enum()?;
            let dt = kernel_dtype("mse_cpu", &input_e, &target_e)?;
            let sq = zip_into(&input_e, &target_e, dt, dt, |a, b| {
                let d = round_to(dt, a - b);
                d * d
            })?;
            reduction::apply(sq, red)?
        }
    };
    Ok(out.tensor())
}

pub fn smooth_l1_loss(args: &Args) -> Result<Tensor, CallError> {
    let (input, target) = read_pair(args)?;
    let req = reduction::read(args, true)?;
    let beta = float_arg(args, "beta", 1.0)?;
    let (input_e, target_e) = expand_pair(&input, &target)?;
    // Python sends beta == 0 to l1_loss (so integers and the l1 dtype rules apply there).
    if beta == 0.0 {
        return Ok(l1_unweighted(&input_e, &target_e, &req)?.tensor());
    }
    let red = req.get_enum()?;
    // NaN fails PyTorch's `beta >= 0` check too.
    if beta.is_nan() || beta < 0.0 {
        return Err(CallError::argument(
            "smooth_l1_loss does not support negative values for beta.",
        ));
    }
    let dt = kernel_dtype("smooth_l1_cpu", &input_e, &target_e)?;
    // The bfloat16 kernel works in float32 and rounds once; float16 rounds after every op.
    let w = if dt == DType::Bfloat16 {
        DType::Float32
    } else {
        dt
    };
    let r = |x: f64| round_to(w, x);
    let beta_w = r(beta);
    let loss = zip_into(&input_e, &target_e, w, dt, |a, b| {
        let z = r((a - b).abs());
        if z < beta_w {
            r(r(r(0.5 * z) * z) / beta_w)
        } else {
            r(z - r(0.5 * beta_w))
        }
    })?;
    Ok(reduction::apply(loss, red)?.tensor())
}

/// `torch._C._nn.huber_loss(input, target, 'none', delta)`: computed in the promoted dtype,
/// written in the input's dtype.
fn huber_elements(input: &Arr, target: &Arr, delta: f64) -> Result<Arr, CallError> {
    if delta.is_nan() || delta <= 0.0 {
        return Err(CallError::argument(
            "huber_loss does not support non-positive values for delta.",
        ));
    }
    let dt = result_type(&[(input.dt, input.is_0d()), (target.dt, target.is_0d())]);
    if dt.is_float() && !input.dt.is_float() {
        return Err(CallError::dtype(format!(
            "result type {} can't be cast to the desired output type {}",
            torch_dtype_name(dt),
            torch_dtype_name(input.dt)
        )));
    }
    require_float("huber_cpu", dt)?;
    // The float16 kernel works in float32 and rounds once; bfloat16 rounds after every op
    // (the reverse of smooth_l1: measured, not documented).
    let w = if dt == DType::Float16 {
        DType::Float32
    } else {
        dt
    };
    let r = |x: f64| round_to(w, x);
    let delta_w = r(delta);
    zip_into(input, target, w, input.dt, |a, b| {
        let z = r((a - b).abs());
        if z < delta_w {
            r(r(0.5 * z) * z)
        } else {
            r(delta_w * r(z - r(0.5 * delta_w)))
        }
    })
}

pub fn huber_loss(args: &Args) -> Result<Tensor, CallError> {
    let (input, target) = read_pair(args)?;
    let req = reduction::read(args, false)?;
    let delta = float_arg(args, "delta", 1.0)?;
    let weight = args.opt_tensor("weight")?.map(Arr::of);
    let (input_e, target_e) = expand_pair(&input, &target)?;
    let out = match weight {
        None => {
            let red = req.get_enum()?;
            reduction::apply(huber_elements(&input_e, &target_e, delta)?, red)?
        }
        Some(w) => {
            check_weight_size(&w, &input)?;
            let loss = huber_elements(&input_e, &target_e, delta)?;
            let weighted = mul(&loss, &w)?;
            // Unlike l1/mse, the weighted mean divides by the element count.
            match req.strict(invalid_mode)? {
                Reduction::None => weighted,
                Reduction::Sum => sum_all(&weighted),
                Reduction::Mean => mean_all(&weighted)?,
            }
        }
    };
    Ok(out.tensor())
}
