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
use crate::backend::Gradients;
use crate::reference::{Args, Backward, GradientKernel, Kernel};
use crate::tensor::{DType, Tensor};

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[(
    "torch.nn.functional.poisson_nll_loss",
    poisson_nll_loss_backward,
)];

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

// ---- Backward: autograd through the same chain of ops. ----

/// `mul` backward for `a * b`: `(grad * b)` in the promoted dtype, cast and summed to `a`.
pub(crate) fn mul_backward(g: &Arr, other: &Arr, a: &Arr) -> Result<Arr, CallError> {
    let p = zip(g, other, |_| Ok(()), |x, y| x * y)?;
    reduction::reduce_to(&p, a.shape(), a.dt)
}

/// `div` backward for `a / b` with respect to `a`: `grad / b`, cast and summed to `a`.
pub(crate) fn div_backward_self(g: &Arr, b: &Arr, a: &Arr) -> Result<Arr, CallError> {
    let p = zip(g, b, |_| Ok(()), |x, y| x / y)?;
    reduction::reduce_to(&p, a.shape(), a.dt)
}

/// Adds `g` to the gradient `acc` of one argument (autograd's accumulation, in its dtype).
pub(crate) fn add_to(acc: Option<Arr>, g: Arr) -> Result<Option<Arr>, CallError> {
    Ok(Some(match acc {
        None => g,
        Some(a) => reduction::accumulate(&a, &g)?,
    }))
}

/// The gradient of `poisson_nll_loss`, autograd op by op: with `log_input`,
/// `exp(x) * grad - t * grad` for the input and `-x * grad` for the target; otherwise
/// `grad - t * grad / (x + eps)` and `-log(x + eps) * grad`. With `full`, the Stirling term
/// (masked where `t <= 1`, so no gradient there) adds `log(t) * grad + (t * grad) / t - grad +
/// 0.5 * 2pi * grad / (2pi * t)` to the target.
pub fn poisson_nll_loss_backward(args: &Args, b: &Backward) -> Result<Gradients, CallError> {
    let input = Arr::of(args.tensor("input")?);
    let target = Arr::of(args.tensor("target")?);
    let log_input = args.bool_or("log_input", true)?;
    let full = args.bool_or("full", false)?;
    let eps = super::float_arg(args, "eps", 1e-8)?;
    let red = reduction::read(args, true)?
        .strict(|shown| format!("{shown} is not a valid value for reduction"))?;
    let loss_shape = super::broadcast_shapes(input.shape(), target.shape())?;
    let g = Arr::of(b.grad_output);
    let gl = reduction::backward(&g, &loss_shape, red)?;
    let neg = gl.map(gl.dt, |v| -v);
    let mut gi: Option<Arr> = None;
    let mut gt: Option<Arr> = None;
    let gt_main: Option<Arr>;
    if log_input {
        // loss = exp(x) - t * x
        let e = unary(&input, f64::exp);
        let g_e = reduction::reduce_to(&gl, e.shape(), e.dt)?;
        gi = add_to(gi, mul_backward(&g_e, &e, &input)?)?;
        let prod_dt = super::result_type(&[(target.dt, target.is_0d()), (input.dt, input.is_0d())]);
        let g_p = reduction::cast(&neg, prod_dt);
        gt_main = Some(mul_backward(&g_p, &input, &target)?);
        gi = add_to(gi, mul_backward(&g_p, &target, &input)?)?;
    } else {
        // loss = x - t * log(x + eps)
        gi = add_to(gi, reduction::reduce_to(&gl, input.shape(), input.dt)?)?;
        let xe = add_scalar(&input, eps);
        let log = unary(&xe, f64::ln);
        let prod_dt = super::result_type(&[(target.dt, target.is_0d()), (log.dt, log.is_0d())]);
        let g_p = reduction::cast(&neg, prod_dt);
        gt_main = Some(mul_backward(&g_p, &log, &target)?);
        let g_log = mul_backward(&g_p, &target, &log)?;
        let g_xe = div_backward_self(&g_log, &xe, &xe)?;
        gi = add_to(gi, reduction::reduce_to(&g_xe, input.shape(), input.dt)?)?;
    }
    if full && b.wants("target") {
        // stirling = (t * log(t) - t) + 0.5 * log(2 pi t), masked_fill(t <= 1, 0), added in place.
        let log_t = unary(&target, f64::ln);
        let t_log_t = mul(&target, &log_t)?;
        let a = sub(&t_log_t, &target)?;
        let two_pi_t = mul_scalar(&target, 2.0 * std::f64::consts::PI);
        let log_2pi_t = unary(&two_pi_t, f64::ln);
        let bterm = mul_scalar(&log_2pi_t, 0.5);
        let st_dt = super::result_type(&[(a.dt, a.is_0d()), (bterm.dt, bterm.is_0d())]);
        let g_st = reduction::reduce_to(&gl, &loss_shape, st_dt)?;
        let mask = target.expand(g_st.shape())?;
        let g_st = Arr {
            dt: st_dt,
            a: ndarray::Zip::from(&g_st.a)
                .and(&mask.a)
                .map_collect(|&g, &t| if t <= 1.0 { 0.0 } else { g }),
        };
        // The engine runs the most recently created node first. GCC builds the right operand
        // of `a - t + 0.5 * log(2 pi t)` first, so the target's gradient accumulates in this
        // order (measured on float16): `- t`, the `t` side of `t * log(t)`, its `log(t)` side,
        // `0.5 * log(2 pi t)`, and the main loss's term last.
        let g_a = reduction::reduce_to(&g_st, a.shape(), a.dt)?;
        let neg_a = g_a.map(g_a.dt, |v| -v);
        gt = add_to(gt, reduction::reduce_to(&neg_a, target.shape(), target.dt)?)?;
        let g_tlt = reduction::reduce_to(&g_a, t_log_t.shape(), t_log_t.dt)?;
        gt = add_to(gt, mul_backward(&g_tlt, &log_t, &target)?)?;
        let g_logt = mul_backward(&g_tlt, &target, &log_t)?;
        gt = add_to(gt, div_backward_self(&g_logt, &target, &target)?)?;
        let g_b = reduction::reduce_to(&g_st, bterm.shape(), bterm.dt)?;
        let g_log2 = mul_scalar(&g_b, 0.5);
        let g_2pit = div_backward_self(&g_log2, &two_pi_t, &two_pi_t)?;
        let g_t2 = mul_scalar(&g_2pit, 2.0 * std::f64::consts::PI);
        gt = add_to(gt, reduction::reduce_to(&g_t2, target.shape(), target.dt)?)?;
    }
    if let Some(g) = gt_main {
        gt = add_to(gt, g)?;
    }
    let mut out = Gradients::new();
    if let Some(gi) = gi {
        reduction::put(&mut out, b, "input", &input, &gi)?;
    }
    if let Some(gt) = gt {
        reduction::put(&mut out, b, "target", &target, &gt)?;
    }
    Ok(out)
}
