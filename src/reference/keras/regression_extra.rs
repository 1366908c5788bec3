//! Reference kernels for `tf.keras.losses.LogCosh`, `MeanAbsolutePercentageError` and
//! `MeanSquaredLogarithmicError` (Keras 3.15.1, `keras/src/losses/losses.py`).
//!
//! All three are `mean(f(y_true, y_pred), axis=-1)` over the broadcast inputs, in the loss dtype,
//! with two working-precision quirks: `log_cosh` subtracts `log 2` computed in float32 and then
//! cast, and `mean_squared_logarithmic_error` clamps with a float32 epsilon tensor, which
//! promotes float16/bfloat16 inputs to float32 until the reduction casts back.

use super::focal::tf_sigmoid;
use super::reduction::{only_known, Common};
use super::{elementwise, mean_axis, Inputs, EPSILON};
use super::{elementwise_backward, tf_sign, Fold};
use crate::backend::CallError;
use crate::backend::Gradients;
use crate::reference::tf_nn::nd::Fp;
use crate::reference::{Args, Kernel};
use crate::reference::{Backward, GradientKernel};
use crate::tensor::{DType, Tensor};

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[
    ("tf.keras.losses.LogCosh", log_cosh),
    (
        "tf.keras.losses.MeanAbsolutePercentageError",
        mean_absolute_percentage_error,
    ),
    (
        "tf.keras.losses.MeanSquaredLogarithmicError",
        mean_squared_logarithmic_error,
    ),
];

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[
    ("tf.keras.losses.LogCosh", log_cosh_backward),
    (
        "tf.keras.losses.MeanAbsolutePercentageError",
        mean_absolute_percentage_error_backward,
    ),
    (
        "tf.keras.losses.MeanSquaredLogarithmicError",
        mean_squared_logarithmic_error_backward,
    ),
];

/// TensorFlow's `Softplus` kernel in working precision `p`: `x` above `-t`, `exp(x)` below `t`,
/// `log1p(exp(x))` between, with `t = log(epsilon) + 2`. For float16 Eigen's epsilon is 2^-13
/// (not the machine epsilon), the threshold stays a float, and `exp` is rounded to float16
/// before `log1p` (measured on every float16 in [-20, 20]); bfloat16 is assumed to follow the
/// same pattern with its epsilon 2^-7.
pub(super) fn tf_softplus(p: Fp, x: f64) -> f64 {
    let (w, eps) = match p.0 {
        DType::Float64 => (p, f64::EPSILON),
        DType::Float16 => (Fp(DType::Float32), 2f64.powi(-13)),
        DType::Bfloat16 => (Fp(DType::Float32), 2f64.powi(-7)),
        _ => (p, f32::EPSILON as f64),
    };
    let threshold = w.r(w.r(eps.ln()) + 2.0);
    if x > -threshold {
        x
    } else if x < threshold {
        flush_denormal(p, p.exp(x))
    } else {
        p.r(p.exp(x).ln_1p())
    }
}

/// TensorFlow's CPU threads flush denormal float32/float64 results to zero (measured:
/// `tf.exp(-90.0)` is 0 in float32); float16 ops round from float32 and keep their subnormals.
pub(super) fn flush_denormal(p: Fp, x: f64) -> f64 {
    let tiny = match p.0 {
        DType::Float32 => f32::MIN_POSITIVE as f64,
        DType::Float64 => f64::MIN_POSITIVE,
        _ => 0.0,
    };
    if x.abs() < tiny {
        0.0
    } else {
        x
    }
}

fn log_cosh(a: &Args) -> Result<Tensor, CallError> {
    only_known(a, &[])?;
    let c = Common::read(a)?;
    let p = c.fp();
    // `ops.log(2.0)` runs in float32 (floatx) and is then cast to the loss dtype.
    let log2 = p.r(DType::Float32.round(2f64.ln()));
    elementwise(a, c, |t, y| {
        let e = p.r(y - t);
        p.r(p.r(e + tf_softplus(p, p.r(e * -2.0))) - log2)
    })
}

fn mean_absolute_percentage_error(a: &Args) -> Result<Tensor, CallError> {
    only_known(a, &[])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let eps = p.r(EPSILON);
    let inp = Inputs::read(a, c)?;
    let terms = inp
        .y_true
        .zip(&inp.y_pred, |t, y| p.r(p.r(t - y) / t.abs().max(eps)).abs())?;
    let values = mean_axis(p, &terms, Some(-1))?.map(|m| p.r(100.0 * m));
    inp.finish(values, None, c)
}

fn mean_squared_logarithmic_error(a: &Args) -> Result<Tensor, CallError> {
    only_known(a, &[])?;
    let c = Common::read(a)?;
    // The epsilon is a float32 tensor: `maximum` promotes float16/bfloat16 to float32, and the
    // loss is cast back to the loss dtype only in the reduction.
    let w = match c.dtype {
        DType::Float64 => Fp(DType::Float64),
        _ => Fp(DType::Float32),
    };
    let eps = DType::Float32.round(EPSILON);
    let inp = Inputs::read(a, c)?;
    let log1 = |x: f64| w.ln(w.r(fmax(x, eps) + 1.0));
    let terms = inp.y_true.zip(&inp.y_pred, |t, y| {
        let d = w.r(log1(y) - log1(t));
        w.r(d * d)
    })?;
    let values = mean_axis(w, &terms, Some(-1))?.map(|x| c.dtype.round(x));
    inp.finish(values, None, c)
}

/// `x + softplus(-2x) - log 2` with `x = y_pred - y_true`: TF registers the gradient of
/// `Softplus` as `grad * sigmoid(features)` (tensorflow/python/ops/nn_grad.py, not the
/// `SoftplusGrad` kernel), then `Mul` by -2; `x` adds its two paths. In float16 the two forms
/// round differently (a few ulps apart once `g - 2 g_sp` cancels).
fn log_cosh_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    only_known(a, &[])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let log2 = p.r(DType::Float32.round(2f64.ln()));
    let f = |t: f64, y: f64| {
        let e = p.r(y - t);
        p.r(p.r(e + tf_softplus(p, p.r(e * -2.0))) - log2)
    };
    elementwise_backward(a, b, c, p, Fold::Mean, f, |t, y, g| {
        let features = p.r(p.r(y - t) * -2.0);
        let g_sp = p.r(g * tf_sigmoid(p, features));
        let g_x = p.r(g + p.r(g_sp * -2.0));
        (-g_x, g_x)
    })
}

/// `100 * mean(|(t - y) / maximum(|t|, 1e-7)|)`: `Abs` (`g * sign`), `RealDiv`, `Maximum` (the
/// gradient goes to `|t|` where `|t| >= 1e-7`, ties included, else to the constant) and `Abs`
/// again on `t`.
fn mean_absolute_percentage_error_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    only_known(a, &[])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let eps = p.r(EPSILON);
    let f = |t: f64, y: f64| p.r(p.r(t - y) / t.abs().max(eps)).abs();
    elementwise_backward(a, b, c, p, Fold::MeanTimes(100.0), f, |t, y, g| {
        let m = fmax(t.abs(), eps);
        let num = p.r(t - y);
        let g_q = p.r(g * tf_sign(p.r(num / m)));
        let g_num = p.r(g_q / m);
        let g_m = p.r(g_q * p.r(p.r(-num / m) / m));
        let g_abs = if t.abs() >= eps { g_m } else { 0.0 };
        (p.r(g_num + p.r(g_abs * tf_sign(t))), -g_num)
    })
}

/// `mean(square(log(maximum(y, eps) + 1) - log(maximum(t, eps) + 1)))` in float32 for
/// float16/bfloat16 losses (the float32 epsilon promotes): `Square`, `Log`
/// (`g * reciprocal(x)`) and `Maximum` (the gradient passes where `x >= eps`, ties included).
fn mean_squared_logarithmic_error_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    only_known(a, &[])?;
    let c = Common::read(a)?;
    let w = match c.dtype {
        DType::Float64 => Fp(DType::Float64),
        _ => Fp(DType::Float32),
    };
    let eps = DType::Float32.round(EPSILON);
    let shifted = move |x: f64| w.r(fmax(x, eps) + 1.0);
    let f = |t: f64, y: f64| {
        let d = w.r(w.ln(shifted(y)) - w.ln(shifted(t)));
        w.r(d * d)
    };
    let log_grad = move |x: f64, g: f64| {
        if x >= eps {
            w.r(g * w.r(1.0 / shifted(x)))
        } else {
            0.0
        }
    };
    elementwise_backward(a, b, c, w, Fold::Mean, f, |t, y, g| {
        let d = w.r(w.ln(shifted(y)) - w.ln(shifted(t)));
        let g_d = w.r(g * w.r(2.0 * d));
        (log_grad(t, -g_d), log_grad(y, g_d))
    })
}

/// `tf.maximum`: NaN in either operand propagates.
fn fmax(x: f64, y: f64) -> f64 {
    if x.is_nan() || y.is_nan() {
        f64::NAN
    } else {
        x.max(y)
    }
}

#[cfg(test)]
mod tests {
    use super::super::focal::tests::{call, close, f32, kind, values};
    use crate::backend::{ErrorKind, Value};

    #[test]
    fn log_cosh_is_even_and_linear_in_the_tails() {
        let a = f32(&[1, 3], &[0.5, -2.0, 3.0]);
        let b = f32(&[1, 3], &[-1.5, 2.0, 1.0e4]);
        let ab = values(call(
            "LogCosh",
            &[("y_true", a.clone()), ("y_pred", b.clone())],
        ));
        let ba = values(call("LogCosh", &[("y_true", b), ("y_pred", a)]));
        close(&ab, &ba);
        assert!(ab.to_f64_vec()[0].is_finite());
    }

    #[test]
    fn msle_clamps_and_mape_guards_zero_targets() {
        let zero = f32(&[1, 3], &[0.0, 0.0, 0.0]);
        let negative = f32(&[1, 3], &[-5.0, -1.0, -1.0e30]);
        let msle = values(call(
            "MeanSquaredLogarithmicError",
            &[("y_true", zero.clone()), ("y_pred", negative)],
        ));
        assert_eq!(msle.to_f64_vec(), vec![0.0]);
        let mape = values(call(
            "MeanAbsolutePercentageError",
            &[("y_true", zero), ("y_pred", f32(&[1, 3], &[1.0, 0.0, 0.0]))],
        ));
        assert!(mape.to_f64_vec()[0].is_finite() && mape.to_f64_vec()[0] > 1e8);
    }

    #[test]
    fn scalars_and_mismatched_shapes_raise() {
        for class in [
            "LogCosh",
            "MeanAbsolutePercentageError",
            "MeanSquaredLogarithmicError",
        ] {
            let scalar = call(
                class,
                &[("y_true", f32(&[], &[1.0])), ("y_pred", f32(&[], &[2.0]))],
            );
            assert_eq!(kind(scalar), ErrorKind::Shape, "{class}");
            let mismatch = call(
                class,
                &[
                    ("y_true", f32(&[1, 2], &[1.0, 2.0])),
                    ("y_pred", f32(&[1, 3], &[1.0; 3])),
                ],
            );
            assert_eq!(kind(mismatch), ErrorKind::Shape, "{class}");
            let bad = call(
                class,
                &[
                    ("y_true", f32(&[1, 2], &[1.0, 2.0])),
                    ("y_pred", f32(&[1, 2], &[1.0, 2.0])),
                    ("reduction", Value::Str("avg".into())),
                ],
            );
            assert_eq!(kind(bad), ErrorKind::Argument, "{class}");
        }
    }
}
