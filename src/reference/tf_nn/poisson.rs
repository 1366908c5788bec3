//! Reference kernels for `tf.nn.log_poisson_loss`.
//!
//! TensorFlow 2.21 (`nn_impl.py`) evaluates, op by op in the inputs' dtype:
//!
//! ```text
//! result = exp(log_input) - log_input * targets
//! if compute_full_loss:
//!     stirling = targets * log(targets) - targets + 0.5 * log(2 pi * targets)
//!     result += where(0 <= targets <= 1, 0, stirling)
//! ```
//!
//! The mask keeps the Stirling term for negative targets, where `log` of a negative is NaN
//! (PyTorch masks `targets <= 1` instead). TensorFlow's CPU threads flush subnormal results to
//! zero, so `exp(-88)` in float32 is 0, not 6.05e-39 ([`flush`]).

use super::add_n;
use super::nd::{Fp, Nd};
use super::read_name;
use super::weighted::{float_kernel_error, mul_dtype_error};
use crate::backend::Gradients;
use crate::backend::{CallError, Value};
use crate::reference::gradient::Backward;
use crate::reference::GradientKernel;
use crate::reference::{Args, Kernel};
use crate::tensor::{DType, Tensor};

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] =
    &[("tf.nn.log_poisson_loss", log_poisson_loss_backward)];

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[("tf.nn.log_poisson_loss", log_poisson_loss)];

/// A result rounded to `dt` with TensorFlow's flush-to-zero: values below the smallest normal
/// float32 (float64 for float64) become a zero of the same sign. float16 and bfloat16 are
/// computed in float32, so the float32 threshold applies to them too.
pub(crate) fn flush(dt: DType, x: f64) -> f64 {
    let tiny = match dt {
        DType::Float64 => f64::MIN_POSITIVE,
        _ => f32::MIN_POSITIVE as f64,
    };
    let x = dt.round(x);
    if x != 0.0 && x.abs() < tiny {
        0.0f64.copysign(x)
    } else {
        x
    }
}

/// A Python truth value: `if compute_full_loss:`.
fn truthy(a: &Args, name: &'static str) -> Result<bool, CallError> {
    match a.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Int(i)) => Ok(*i != 0),
        Some(Value::Float(x)) => Ok(*x != 0.0),
        Some(Value::Str(s)) => Ok(!s.is_empty()),
        Some(v) => Err(CallError::argument(format!(
            "{}: '{name}' must be a boolean, got {}",
            a.api(),
            v.describe()
        ))),
    }
}

/// One element: `exp(c) - c * y`, plus the masked Stirling term when `full`.
fn element(p: Fp, y: f64, c: f64, full: bool) -> f64 {
    let dt = p.0;
    let result = flush(dt, p.r(flush(dt, c.exp()) - p.r(c * y)));
    if !full {
        return result;
    }
    let two_pi = p.r(2.0 * std::f64::consts::PI);
    let y_log_y = p.r(y * p.ln(y));
    let half_log = p.r(0.5 * p.ln(p.r(two_pi * y)));
    let stirling = p.r(p.r(y_log_y - y) + half_log);
    let masked = if (0.0..=1.0).contains(&y) {
        0.0
    } else {
        stirling
    };
    flush(dt, p.r(result + masked))
}

fn log_poisson_loss(a: &Args) -> Result<Tensor, CallError> {
    read_name(a, &["targets", "log_input", "compute_full_loss"])?;
    let targets = a.tensor("targets")?;
    let log_input = a.tensor("log_input")?;
    let full = truthy(a, "compute_full_loss")?;
    if targets.shape() != log_input.shape() {
        return Err(CallError::shape(format!(
            "`log_input` and `targets` must have the same shape, received ({:?} vs {:?}).",
            log_input.shape(),
            targets.shape()
        )));
    }
    let dt = log_input.dtype();
    // exp(log_input) has no integer kernel; log_input * targets does not promote.
    if !dt.is_float() {
        return Err(float_kernel_error(dt));
    }
    if targets.dtype() != dt {
        return Err(mul_dtype_error(dt, targets.dtype()));
    }
    let p = Fp(dt);
    let y = Nd::of(targets);
    let c = Nd::of(log_input);
    let out = y.zip(&c, |y, c| element(p, y, c, full))?;
    Ok(out.to_tensor(dt))
}

/// The gradient of the composite, op by op in the inputs' dtype with TensorFlow's registered
/// gradients (`Exp`: `g * exp(c)`, `Mul`, `Sub`, `Log`: `g * reciprocal(x)`, `SelectV2`),
/// summed in tape order (see [`add_n`]):
///
/// - `d log_input = g * exp(c) + (-g) * y`;
/// - `d targets = c * (-g)`, and with `compute_full_loss`, where `s = where(0 <= y <= 1, 0, g)`:
///   `- s + s * log(y) + (y * s) / y + 2 pi * ((0.5 s) / (2 pi y))`.
///
/// `where` only masks the gradient, so the Stirling branch still multiplies: at `y = 0` the
/// masked zero meets `log(0) = -inf` and `1 / 0`, and the targets gradient is NaN, as in
/// TensorFlow.
fn log_poisson_loss_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    let targets = a.tensor("targets")?;
    let log_input = a.tensor("log_input")?;
    let full = truthy(a, "compute_full_loss")?;
    let dt = log_input.dtype();
    let p = Fp(dt);
    let f = |x: f64| flush(dt, x);
    let g = b.grad_output.to_f64_vec();
    let y = targets.to_f64_vec();
    let c = log_input.to_f64_vec();
    let two_pi = p.r(2.0 * std::f64::consts::PI);
    let mut gc = Vec::with_capacity(c.len());
    let mut gy = Vec::with_capacity(c.len());
    for ((&y, &c), &g) in y.iter().zip(&c).zip(&g) {
        let e = f(c.exp());
        gc.push(add_n(p, &[f(p.r(g * e)), f(p.r(-g * y))]));
        let from_product = f(p.r(c * -g));
        if !full {
            gy.push(from_product);
            continue;
        }
        let s = if (0.0..=1.0).contains(&y) { 0.0 } else { g };
        let log_y = f(p.ln(y));
        let g_log2 = f(p.r(0.5 * s));
        let mul2 = f(p.r(two_pi * y));
        let g_mul2 = f(p.r(g_log2 * f(p.r(1.0 / mul2))));
        let g_log_y = f(p.r(y * s));
        let terms = [
            from_product,
            -s,
            f(p.r(s * log_y)),
            f(p.r(g_log_y * f(p.r(1.0 / y)))),
            f(p.r(two_pi * g_mul2)),
        ];
        gy.push(f(add_n(p, &terms)));
    }
    let shape = log_input.shape().to_vec();
    let mut out = Gradients::new();
    out.insert("log_input".into(), Nd::new(shape.clone(), gc).to_tensor(dt));
    out.insert("targets".into(), Nd::new(shape, gy).to_tensor(dt));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::backend::{Backend, Call, ErrorKind, Outcome, Value};
    use crate::reference::testing::values;
    use crate::reference::Reference;
    use crate::tensor::{DType, Tensor};

    fn t(dt: DType, data: &[f64]) -> Value {
        Value::Tensor(Tensor::from_f64(dt, vec![data.len()], data.to_vec()).unwrap())
    }

    fn call(args: Vec<(&str, Value)>) -> Outcome {
        let call = Call {
            api: "tf.nn.log_poisson_loss".into(),
            args: args.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        Reference.forward(&call)
    }

    #[test]
    fn stirling_term_is_masked_only_on_the_unit_interval() {
        let y = [-1.0, 0.0, 0.5, 1.0, 2.0, 5.0];
        let c = [0.0, 0.3, 0.3, 0.3, 0.3, 0.3];
        let out = values(call(vec![
            ("targets", t(DType::Float64, &y)),
            ("log_input", t(DType::Float64, &c)),
            ("compute_full_loss", Value::Bool(true)),
        ]));
        assert!(out[0].is_nan(), "log(-1) is kept for negative targets");
        for i in 1..4 {
            assert_eq!(out[i], c[i].exp() - c[i] * y[i]);
        }
        for i in 4..6 {
            let s = y[i] * y[i].ln() - y[i] + 0.5 * (2.0 * std::f64::consts::PI * y[i]).ln();
            let want = c[i].exp() - c[i] * y[i] + s;
            assert!((out[i] - want).abs() < 1e-12, "{} vs {want}", out[i]);
        }
    }

    #[test]
    fn subnormal_exp_flushes_to_zero_in_float32() {
        let out = values(call(vec![
            ("targets", t(DType::Float32, &[0.0])),
            ("log_input", t(DType::Float32, &[-88.0])),
        ]));
        assert_eq!(out, vec![0.0]);
    }

    #[test]
    fn shapes_and_dtypes_are_not_promoted() {
        let o = call(vec![
            ("targets", t(DType::Float64, &[1.0, 2.0])),
            ("log_input", t(DType::Float32, &[0.5, 0.1])),
        ]);
        assert!(matches!(o, Outcome::Error(e) if e.kind == ErrorKind::Dtype));
        let o = call(vec![
            ("targets", t(DType::Float32, &[1.0])),
            ("log_input", t(DType::Float32, &[0.5, 0.1])),
        ]);
        assert!(matches!(o, Outcome::Error(e) if e.kind == ErrorKind::Shape));
    }
}
