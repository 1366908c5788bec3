//! `torch.nn.functional.poisson_nll_loss`.
//!
//! The Python wrapper resolves the legacy `size_average`/`reduce` pair, accepts only `none`,
//! `mean` and `sum` (no `elementwise_mean` alias), then calls the composite ATen op, which is a
//! chain of ordinary tensor ops, each with PyTorch's type promotion and rounding:
//!
//! ```text
//! loss = log_input ? exp(input) - target * input : input - target * log(input + eps)
//! if full: loss += (target * log(target) - target + 0.5 * log(2 * pi * target))
//!                  .masked_fill(target <= 1, 0)
//! ```
//!
//! so integer tensors are promoted (`exp`/`log` of an integer tensor and `int + eps` give the
//! default float32), `eps` is rounded to the input's dtype (0 in float16), and the in-place
//! `+=` keeps the loss's dtype.

use super::reduction;
use super::{round_to, zip, zip_inplace, Arr};
use crate::backend::CallError;
use crate::reference::{Args, Kernel};
use crate::tensor::{DType, Tensor};
use crate::reference::GradientKernel;

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[];

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] =
    &[("torch.nn.functional.poisson_nll_loss", poisson_nll_loss)];

/// The dtype of a unary float op (`exp`, `log`) or of `tensor (op) python_float`: a float
/// tensor keeps its dtype, integers and bool give the default dtype float32.
pub(crate) fn float_result(dt: DType) -> DType {
    if dt.is_float() {
        dt
    } else {
        DType::Float32
    }
}

/// The op math type: float32 for the half types.
pub(crate) fn opmath(dt: DType) -> DType {
    match dt {
        DType::Float16 | DType::Bfloat16 => DType::Float32,
        d => d,
    }
}

/// Elementwise unary float op (`exp`, `log`): computed in float, rounded once.
pub(crate) fn unary(x: &Arr, f: fn(f64) -> f64) -> Arr {
    x.map(float_result(x.dt), f)
}

/// `tensor * python_float` (either side): the scalar is kept in the op math type.
pub(crate) fn mul_scalar(x: &Arr, s: f64) -> Arr {
    let dt = float_result(x.dt);
    let s = round_to(opmath(dt), s);
    x.map(dt, |v| v * s)
}

/// `tensor + python_float`: the scalar is first cast to the result dtype.
pub(crate) fn add_scalar(x: &Arr, s: f64) -> Arr {
    let dt = float_result(x.dt);
    let s = round_to(dt, s);
    x.map(dt, |v| v + s)
}

/// A float `a * b` or `a / b`. When the result is float16/bfloat16 and `b` is a 0-d tensor of
/// another dtype, PyTorch's CPU mul and div kernels read `b` as its original value in float32
/// (`original_scalar_value<opmath_t>`) instead of casting it to the result dtype first; a 0-d
/// `a` is cast as usual (measured: `bf16[2] * f16[]` keeps the float16 value, `f16[] * bf16[2]`
/// rounds it to bfloat16).
fn scalar_aware(a: &Arr, b: &Arr, f: fn(f64, f64) -> f64) -> Result<Arr, CallError> {
    let dt = super::result_type(&[(a.dt, a.is_0d()), (b.dt, b.is_0d())]);
    if matches!(dt, DType::Float16 | DType::Bfloat16) && b.is_0d() && b.dt != dt {
        let s = round_to(
            DType::Float32,
            b.a.iter().copied().next().unwrap_or(f64::NAN),
        );
        return Ok(a.map(dt, |x| f(round_to(dt, x), s)));
    }
    zip(a, b, |_| Ok(()), f)
}

pub(crate) fn mul(a: &Arr, b: &Arr) -> Result<Arr, CallError> {
    scalar_aware(a, b, |x, y| x * y)
}

/// True division of float tensors (see [`mul`] for a 0-d divisor).
pub(crate) fn div(a: &Arr, b: &Arr) -> Result<Arr, CallError> {
    scalar_aware(a, b, |x, y| x / y)
}

pub(crate) fn sub(a: &Arr, b: &Arr) -> Result<Arr, CallError> {
    if a.dt == DType::Bool && b.dt == DType::Bool {
        return Err(CallError::dtype(
            "Subtraction, the `-` operator, with two bool tensors is not supported. Use the `^` or `logical_xor()` operator instead.",
        ));
    }
    if a.dt == DType::Bool || b.dt == DType::Bool {
        return Err(CallError::dtype(
            "Subtraction, the `-` operator, with a bool tensor is not supported. If you are trying to invert a mask, use the `~` or `logical_not()` operator instead.",
        ));
    }
    let dt = super::result_type(&[(a.dt, a.is_0d()), (b.dt, b.is_0d())]);
    if dt.is_float() {
        return zip(a, b, |_| Ok(()), |x, y| x - y);
    }
    zip(
        a,
        b,
        |_| Ok(()),
        |x, y| (x as i64).wrapping_sub(y as i64) as f64,
    )
}

/// `target * input` where both may be integers: integer products wrap in the result dtype.
pub(crate) fn mul_any(a: &Arr, b: &Arr) -> Result<Arr, CallError> {
    let dt = super::result_type(&[(a.dt, a.is_0d()), (b.dt, b.is_0d())]);
    if dt.is_float() {
        return mul(a, b);
    }
    zip(
        a,
        b,
        |_| Ok(()),
        |x, y| (x as i64).wrapping_mul(y as i64) as f64,
    )
}

pub fn poisson_nll_loss(args: &Args) -> Result<Tensor, CallError> {
    let input = Arr::of(args.tensor("input")?);
    let target = Arr::of(args.tensor("target")?);
    let log_input = args.bool_or("log_input", true)?;
    let full = args.bool_or("full", false)?;
    let eps = super::float_arg(args, "eps", 1e-8)?;
    let red = reduction::read(args, true)?
        .strict(|shown| format!("{shown} is not a valid value for reduction"))?;

    let mut loss = if log_input {
        sub(&unary(&input, f64::exp), &mul_any(&target, &input)?)?
    } else {
        let log = unary(&add_scalar(&input, eps), f64::ln);
        sub(&input, &mul(&target, &log)?)?
    };
    if full {
        let t_log_t = mul(&target, &unary(&target, f64::ln))?;
        let a = sub(&t_log_t, &target)?;
        let b = mul_scalar(
            &unary(&mul_scalar(&target, 2.0 * std::f64::consts::PI), f64::ln),
            0.5,
        );
        let stirling = zip(&a, &b, |_| Ok(()), |x, y| x + y)?;
        let mask = target.map(DType::Bool, |t| (t <= 1.0) as u8 as f64);
        let masked = zip(
            &stirling,
            &mask,
            |_| Ok(()),
            |s, m| if m != 0.0 { 0.0 } else { s },
        )?;
        let masked = Arr {
            dt: stirling.dt,
            a: masked.a,
        };
        loss = zip_inplace(&loss, &masked, |l, s| l + s)?;
    }
    Ok(reduction::apply(loss, red)?.tensor())
}
