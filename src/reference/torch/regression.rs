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
use crate::backend::Gradients;
use crate::reference::{Args, Backward, GradientKernel};
use crate::tensor::{DType, Tensor};

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[
    ("torch.nn.functional.huber_loss", huber_loss_backward),
    ("torch.nn.functional.l1_loss", l1_loss_backward),
    ("torch.nn.functional.mse_loss", mse_loss_backward),
    (
        "torch.nn.functional.smooth_l1_loss",
        smooth_l1_loss_backward,
    ),
];

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

// ---- Backward ----
//
// `l1_loss` and the weighted branches are composites of tensor ops, so their gradients follow
// autograd op by op (each op's derivative rounded to its dtype, casts and `sum_to_size` where an
// input was promoted or broadcast). `mse_loss`, `smooth_l1_loss` and `huber_loss` have fused
// ATen backward kernels (`mse_backward_cpu_kernel`, `smooth_l1_backward_cpu_kernel`,
// `huber_backward_cpu_kernel`); their derivative for `target` is the same kernel with `input`
// and `target` swapped (derivatives.yaml), and for `mean` the kernel multiplies by
// `1 / numel` (rounded to the working dtype) instead of autograd dividing.

/// `sub` backward for `input - target` on the expanded pair: `grad` to input, `-grad` to
/// target, each cast and summed back to its argument.
fn sub_backward(
    out: &mut Gradients,
    b: &Backward,
    input: &Arr,
    target: &Arr,
    g_d: &Arr,
) -> Result<(), CallError> {
    super::reduction::put(out, b, "input", input, g_d)?;
    super::reduction::put(out, b, "target", target, &g_d.map(g_d.dt, |v| -v))
}

/// `abs` backward: `grad * self.sgn()`; torch's sign is 0 at 0 (the kink) and at NaN (measured:
/// `x.abs().backward()` gives 0 for a NaN element).
fn abs_backward(g: &Arr, d: &Arr) -> Result<Arr, CallError> {
    let sgn = d.map(d.dt, |x| {
        if x > 0.0 {
            1.0
        } else if x < 0.0 {
            -1.0
        } else {
            0.0
        }
    });
    let g = zip(g, &sgn, |_| Ok(()), |a, b| a * b)?;
    Ok(super::reduction::cast(&g, d.dt))
}

/// `mul` backward for `a * b`: `(grad * b).to(a.dtype)`, at the broadcast shape.
fn mul_grad(g: &Arr, other: &Arr, dt: DType) -> Result<Arr, CallError> {
    let p = zip(g, other, |_| Ok(()), |x, y| x * y)?;
    Ok(super::reduction::cast(&p, dt))
}

/// Backward of the Python weighted branch (`errors * weight`, then none / sum /
/// `sum(weighted) / sum(weight)`, or `.mean()` for huber when `mean_by_count`): the gradient of
/// `errors` and of `weight` (already summed to the weight's shape and dtype).
fn weighted_backward(
    g: &Arr,
    errors: &Arr,
    weight: &Arr,
    req: &Requested,
    mean_by_count: bool,
) -> Result<(Arr, Arr), CallError> {
    let weighted = mul(errors, weight)?;
    let mut g_weight_sum: Option<Arr> = None;
    let g_weighted = match req.strict(invalid_mode)? {
        Reduction::None => super::reduction::cast(g, weighted.dt),
        Reduction::Sum => super::reduction::backward(g, weighted.shape(), Reduction::Sum)?,
        Reduction::Mean if mean_by_count => {
            super::reduction::backward(g, weighted.shape(), Reduction::Mean)?
        }
        Reduction::Mean => {
            // out = S / W: div backward gives grad / W to S and -grad * ((S / W) / W) to W.
            let s = sum_all(&weighted);
            let w = sum_all(weight);
            let g_s = zip(g, &w, |_| Ok(()), |x, y| x / y)?;
            let q = zip(
                &zip(&s, &w, |_| Ok(()), |x, y| x / y)?,
                &w,
                |_| Ok(()),
                |x, y| x / y,
            )?;
            let g_w = zip(&g.map(g.dt, |v| -v), &q, |_| Ok(()), |x, y| x * y)?;
            let g_w = super::reduction::cast(&g_w, weight.dt);
            g_weight_sum = Some(g_w.expand(weight.shape())?);
            let g_s = super::reduction::cast(&g_s, s.dt);
            g_s.expand(weighted.shape())?
        }
    };
    let g_errors = mul_grad(&g_weighted, weight, errors.dt)?;
    let g_weight = super::reduction::reduce_to(
        &mul_grad(&g_weighted, errors, weight.dt)?,
        weight.shape(),
        weight.dt,
    )?;
    let g_weight = match g_weight_sum {
        Some(extra) => super::reduction::accumulate(&g_weight, &extra)?,
        None => g_weight,
    };
    Ok((g_errors, g_weight))
}

/// The gradient of `l1_loss`: autograd through `(input - target).abs()` and the reduction
/// (`torch._C._nn.l1_loss` is a composite), or through the Python weighted branch.
pub fn l1_loss_backward(args: &Args, b: &Backward) -> Result<Gradients, CallError> {
    let (input, target) = read_pair(args)?;
    let req = reduction::read(args, true)?;
    let weight = args.opt_tensor("weight")?.map(Arr::of);
    let (input_e, target_e) = expand_pair(&input, &target)?;
    let g = Arr::of(b.grad_output);
    let mut out = Gradients::new();
    let d = sub(&input_e, &target_e)?;
    let g_errors = match &weight {
        None => reduction::backward(&g, d.shape(), req.get_enum()?)?,
        Some(w) => {
            let errors = l1_errors(&input_e, &target_e)?;
            let (g_errors, g_w) = weighted_backward(&g, &errors, w, &req, false)?;
            reduction::put(&mut out, b, "weight", w, &g_w)?;
            g_errors
        }
    };
    let g_d = abs_backward(&g_errors, &d)?;
    sub_backward(&mut out, b, &input, &target, &g_d)?;
    Ok(out)
}

/// The gradient of `mse_loss`. Unweighted: ATen's `mse_loss_backward`,
/// `alpha * (input - target) * grad` with `alpha = 2 / numel` (mean) or 2 rounded to the
/// working dtype, each product rounded. Weighted: autograd through `pow(d, 2)` (whose
/// backward is `grad * (2 * d)`) and the Python weighted branch.
pub fn mse_loss_backward(args: &Args, b: &Backward) -> Result<Gradients, CallError> {
    let (input, target) = read_pair(args)?;
    let req = reduction::read(args, true)?;
    let weight = args.opt_tensor("weight")?.map(Arr::of);
    let (input_e, target_e) = expand_pair(&input, &target)?;
    let g = Arr::of(b.grad_output);
    let mut out = Gradients::new();
    match &weight {
        Some(w) => {
            let d = sub(&input_e, &target_e)?;
            let sq = mul(&d, &d)?;
            let (g_sq, g_w) = weighted_backward(&g, &sq, w, &req, false)?;
            reduction::put(&mut out, b, "weight", w, &g_w)?;
            let two_d = d.map(d.dt, |x| 2.0 * x);
            let g_d = mul_grad(&g_sq, &two_d, d.dt)?;
            sub_backward(&mut out, b, &input, &target, &g_d)?;
        }
        None => {
            let red = req.get_enum()?;
            let dt = kernel_dtype("mse_cpu", &input_e, &target_e)?;
            let n = input_e.a.len() as f64;
            let r = |x: f64| round_to(dt, x);
            let alpha = r(if red == Reduction::Mean { 2.0 / n } else { 2.0 });
            let ge = reduction::expanded(&g, input_e.shape())?;
            let kernel = |x: f64, t: f64, g: f64| r(r(alpha * r(x - t)) * g);
            let g_in = reduction::map3(&input_e, &target_e, &ge, dt, kernel);
            let g_t = reduction::map3(&target_e, &input_e, &ge, dt, kernel);
            reduction::put(&mut out, b, "input", &input, &g_in)?;
            reduction::put(&mut out, b, "target", &target, &g_t)?;
        }
    }
    Ok(out)
}

/// The gradient of `smooth_l1_loss`: ATen's `smooth_l1_backward_cpu_kernel` with
/// `norm = 1 / numel` (mean) or 1: `±norm * grad` where `|x| >= beta` (so the kink `|x| == beta`
/// takes the linear side) and `norm * x * grad / beta` inside. float16 rounds after every op;
/// bfloat16 computes in float32 and rounds once. `beta == 0` is `l1_loss`'s gradient.
pub fn smooth_l1_loss_backward(args: &Args, b: &Backward) -> Result<Gradients, CallError> {
    let (input, target) = read_pair(args)?;
    let req = reduction::read(args, true)?;
    let beta = float_arg(args, "beta", 1.0)?;
    if beta == 0.0 {
        return l1_loss_backward(args, b);
    }
    let (input_e, target_e) = expand_pair(&input, &target)?;
    let red = req.get_enum()?;
    let dt = kernel_dtype("smooth_l1_cpu", &input_e, &target_e)?;
    let w = if dt == DType::Bfloat16 {
        DType::Float32
    } else {
        dt
    };
    let r = |x: f64| round_to(w, x);
    let n = input_e.a.len() as f64;
    let norm = r(if red == Reduction::Mean { 1.0 / n } else { 1.0 });
    let beta_w = r(beta);
    let kernel = |a: f64, t: f64, g: f64| {
        let x = r(a - t);
        if x <= -beta_w {
            r(-norm * g)
        } else if x >= beta_w {
            r(norm * g)
        } else {
            r(r(r(norm * x) * g) / beta_w)
        }
    };
    let g = Arr::of(b.grad_output);
    let ge = reduction::expanded(&g, input_e.shape())?;
    let mut out = Gradients::new();
    let g_in = reduction::map3(&input_e, &target_e, &ge, dt, kernel);
    let g_t = reduction::map3(&target_e, &input_e, &ge, dt, kernel);
    reduction::put(&mut out, b, "input", &input, &g_in)?;
    reduction::put(&mut out, b, "target", &target, &g_t)?;
    Ok(out)
}

/// ATen's `huber_backward_cpu_kernel` for the element gradients of `huber_elements`:
/// `±norm * grad * delta` where `|x| >= delta` (the kink takes the linear side), else
/// `norm * x * grad`, each op rounded to the working dtype. Returns (input, target) gradients
/// at the broadcast shape, in the input's dtype.
fn huber_elements_backward(
    input: &Arr,
    target: &Arr,
    g: &Arr,
    delta: f64,
    norm: f64,
) -> Result<(Arr, Arr), CallError> {
    let dt = result_type(&[(input.dt, input.is_0d()), (target.dt, target.is_0d())]);
    let w = if dt == DType::Float16 {
        DType::Float32
    } else {
        dt
    };
    let r = |x: f64| round_to(w, x);
    let delta_w = r(delta);
    let norm = r(norm);
    let kernel = |a: f64, t: f64, g: f64| {
        let x = r(a - t);
        if x <= -delta_w {
            r(r(-norm * g) * delta_w)
        } else if x >= delta_w {
            r(r(norm * g) * delta_w)
        } else {
            r(r(norm * x) * g)
        }
    };
    Ok((
        reduction::map3(input, target, g, input.dt, kernel),
        reduction::map3(target, input, g, input.dt, kernel),
    ))
}

/// The gradient of `huber_loss`: the fused kernel (with `norm = 1 / numel` for an unweighted
/// mean), behind autograd through `loss * weight` and its reduction when weighted.
pub fn huber_loss_backward(args: &Args, b: &Backward) -> Result<Gradients, CallError> {
    let (input, target) = read_pair(args)?;
    // The forward promotes mixed dtypes, but `huber_loss_backward`'s TensorIterator does not:
    // a target of another dtype (an integer, or float64 against float32) fails the backward.
    if target.dt != input.dt {
        return Err(CallError::dtype(format!(
            "Found dtype {} but expected {}",
            super::torch_dtype_name(target.dt),
            super::torch_dtype_name(input.dt)
        )));
    }
    let req = reduction::read(args, false)?;
    let delta = float_arg(args, "delta", 1.0)?;
    let weight = args.opt_tensor("weight")?.map(Arr::of);
    let (input_e, target_e) = expand_pair(&input, &target)?;
    let g = Arr::of(b.grad_output);
    let mut out = Gradients::new();
    let (g_loss, norm) = match &weight {
        None => {
            let red = req.get_enum()?;
            let n = input_e.a.len() as f64;
            let norm = if red == Reduction::Mean { 1.0 / n } else { 1.0 };
            (reduction::expanded(&g, input_e.shape())?, norm)
        }
        Some(w) => {
            let loss = huber_elements(&input_e, &target_e, delta)?;
            let (g_loss, g_w) = weighted_backward(&g, &loss, w, &req, true)?;
            reduction::put(&mut out, b, "weight", w, &g_w)?;
            (g_loss, 1.0)
        }
    };
    let (g_in, g_t) = huber_elements_backward(&input_e, &target_e, &g_loss, delta, norm)?;
    reduction::put(&mut out, b, "input", &input, &g_in)?;
    reduction::put(&mut out, b, "target", &target, &g_t)?;
    Ok(out)
}
