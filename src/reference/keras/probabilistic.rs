//! Reference kernels for `tf.keras.losses.KLDivergence` and `Poisson`.
//!
//! Keras 3.15.1 (`keras/src/losses/losses.py`), every op in the loss dtype:
//!
//! ```text
//! kl_divergence: y_true = clip(y_true, 1e-7, 1); y_pred = clip(y_pred, 1e-7, 1)
//!                sum(y_true * log(y_true / y_pred), axis=-1)
//! poisson:       mean(y_pred - y_true * log(y_pred + 1e-7), axis=-1)
//! ```
//!
//! Clipping makes every KL term finite (P = 0 contributes `1e-7 log(1e-7 / q)`, not 0); NaN
//! passes `clip_by_value`. `ops.sum` is `tf.reduce_sum` in the loss dtype ([`reduce_sum`]);
//! `ops.mean` averages float16 and bfloat16 in float32. Inputs and weights are then reduced by
//! [`Inputs::finish`].

use super::reduction::{only_known, Common};
use super::{elementwise_backward, Fold};
use super::{mean_axis, reduce_axis_index, Inputs, EPSILON};
use crate::backend::CallError;
use crate::backend::Gradients;
use crate::reference::tf_nn::l2::reduce_sum;
use crate::reference::tf_nn::nd::{Fp, Nd};
use crate::reference::{Args, Kernel};
use crate::reference::{Backward, GradientKernel};
use crate::tensor::Tensor;

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[
    ("tf.keras.losses.KLDivergence", kl_divergence),
    ("tf.keras.losses.Poisson", poisson),
];

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[
    ("tf.keras.losses.KLDivergence", kl_divergence_backward),
    ("tf.keras.losses.Poisson", poisson_backward),
];

/// `tf.clip_by_value(x, lo, hi)`: `maximum(minimum(x, hi), lo)`, NaN propagating.
pub(crate) fn clip_by_value(x: f64, lo: f64, hi: f64) -> f64 {
    if x.is_nan() {
        x
    } else {
        x.min(hi).max(lo)
    }
}

/// `ops.sum(x, axis)` for one Python axis.
pub(crate) fn sum_axis(p: Fp, x: &Nd, axis: i64) -> Result<Nd, CallError> {
    let k = reduce_axis_index(x, axis)?;
    Ok(x.reduce_axis(k, |f| reduce_sum(p, f)))
}

fn kl_divergence(a: &Args) -> Result<Tensor, CallError> {
    only_known(a, &[])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let inp = Inputs::read(a, c)?;
    let lo = p.r(EPSILON);
    let clip = |x: f64| clip_by_value(x, lo, 1.0);
    let terms = inp.y_true.zip(&inp.y_pred, |t, q| {
        let (t, q) = (clip(t), clip(q));
        p.r(t * p.ln(p.r(t / q)))
    })?;
    let values = sum_axis(p, &terms, -1)?;
    inp.finish(values, None, c)
}

fn poisson(a: &Args) -> Result<Tensor, CallError> {
    only_known(a, &[])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let inp = Inputs::read(a, c)?;
    let eps = p.r(EPSILON);
    let terms = inp
        .y_true
        .zip(&inp.y_pred, |t, q| p.r(q - p.r(t * p.ln(p.r(q + eps)))))?;
    let values = mean_axis(p, &terms, Some(-1))?;
    inp.finish(values, None, c)
}

/// The gradient `clip_by_value(x, lo, hi)` passes on (`minimum` then `maximum`, ties to `x`):
/// `g` where `lo <= x <= hi`, 0 outside and for NaN.
pub(crate) fn clip_by_value_grad(x: f64, lo: f64, hi: f64, g: f64) -> f64 {
    if x >= lo && x <= hi {
        g
    } else {
        0.0
    }
}

/// `sum(tc * log(tc / qc))` with `tc, qc` clipped to `[1e-7, 1]`: TF's `Mul`, `Log`
/// (`g * reciprocal(x)`) and `RealDiv` (`g / y`, `g * ((-x / y) / y)`) gradients; `tc` adds
/// its two paths; both clips stop the gradient outside `[1e-7, 1]` (so `y_true = 0` gets none).
fn kl_divergence_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    only_known(a, &[])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let lo = p.r(EPSILON);
    let clip = move |x: f64| clip_by_value(x, lo, 1.0);
    let f = |t: f64, q: f64| {
        let (t, q) = (clip(t), clip(q));
        p.r(t * p.ln(p.r(t / q)))
    };
    elementwise_backward(a, b, c, p, Fold::Sum, f, |t, q, g| {
        let (tc, qc) = (clip(t), clip(q));
        let ratio = p.r(tc / qc);
        let g_ratio = p.r(p.r(g * tc) * p.r(1.0 / ratio));
        let g_tc = p.r(p.r(g * p.ln(ratio)) + p.r(g_ratio / qc));
        let g_qc = p.r(g_ratio * p.r(p.r(-tc / qc) / qc));
        (
            clip_by_value_grad(t, lo, 1.0, g_tc),
            clip_by_value_grad(q, lo, 1.0, g_qc),
        )
    })
}

/// `mean(q - t * log(q + 1e-7))`: `Sub`, `Mul`, `Log` (`g * reciprocal(x)`) gradients; `q`
/// adds its two paths.
fn poisson_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    only_known(a, &[])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let eps = p.r(EPSILON);
    let f = |t: f64, q: f64| p.r(q - p.r(t * p.ln(p.r(q + eps))));
    elementwise_backward(a, b, c, p, Fold::Mean, f, |t, q, g| {
        let shifted = p.r(q + eps);
        let g_t = p.r(-g * p.ln(shifted));
        let g_log = p.r(p.r(-g * t) * p.r(1.0 / shifted));
        (g_t, p.r(g + g_log))
    })
}

#[cfg(test)]
mod tests {
    use crate::backend::{Backend, Call, ErrorKind, Outcome, Value};
    use crate::reference::testing::values;
    use crate::reference::Reference;
    use crate::tensor::{DType, Tensor};

    fn f32(shape: &[usize], data: &[f64]) -> Value {
        Value::Tensor(Tensor::from_f64(DType::Float32, shape.to_vec(), data.to_vec()).unwrap())
    }

    fn call(class: &str, args: Vec<(&str, Value)>) -> Outcome {
        let call = Call {
            api: format!("tf.keras.losses.{class}"),
            args: args.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        Reference.forward(&call)
    }

    #[test]
    fn kl_is_the_batch_mean_of_row_divergences() {
        // The definition: mean over rows of sum p log(p / q) (torch's batchmean).
        let args = || {
            vec![
                ("y_true", f32(&[2, 2], &[0.5, 0.5, 0.9, 0.1])),
                ("y_pred", f32(&[2, 2], &[0.25, 0.75, 0.5, 0.5])),
            ]
        };
        let v = values(call("KLDivergence", args()))[0];
        let row =
            |p: [f64; 2], q: [f64; 2]| -> f64 { (0..2).map(|i| p[i] * (p[i] / q[i]).ln()).sum() };
        let want = (row([0.5, 0.5], [0.25, 0.75]) + row([0.9, 0.1], [0.5, 0.5])) / 2.0;
        assert!((v - want).abs() < 1e-6, "{v} vs {want}");
        let mut none = args();
        none.push(("reduction", Value::Str("none".into())));
        assert_eq!(values(call("KLDivergence", none)).len(), 2);
    }

    #[test]
    fn kl_clips_both_arguments() {
        let out = values(call(
            "KLDivergence",
            vec![
                ("y_true", f32(&[2, 2], &[1.0, 0.0, 2.0, -1.0])),
                ("y_pred", f32(&[2, 2], &[0.0, 1.0, 1.0, 1.0])),
                ("reduction", Value::Str("none".into())),
            ],
        ));
        // P = 1 against Q = 0 (read as 1e-7): log(1e7); P = 0 adds 1e-7 log(1e-7).
        let eps = 1e-7f32 as f64;
        let want = (1.0 / eps).ln() + eps * eps.ln();
        assert!((out[0] - want).abs() < 1e-5 * want, "{} vs {want}", out[0]);
        assert!((out[1] - eps * eps.ln()).abs() < 1e-9, "{}", out[1]);
    }

    #[test]
    fn poisson_adds_epsilon_inside_the_log() {
        let out = values(call(
            "Poisson",
            vec![
                ("y_true", f32(&[2, 1], &[1.0, 0.0])),
                ("y_pred", f32(&[2, 1], &[0.0, 0.0])),
                ("reduction", Value::Str("none".into())),
            ],
        ));
        // y_pred - y_true * log(y_pred + eps) with the float32 epsilon: -log(1e-7).
        let want = -((1e-7f32) as f64).ln();
        assert!((out[0] - want).abs() < 1e-5, "{} vs {want}", out[0]);
        assert_eq!(out[1], 0.0);
        let scalar = call(
            "Poisson",
            vec![("y_true", f32(&[], &[1.0])), ("y_pred", f32(&[], &[1.0]))],
        );
        assert!(matches!(scalar, Outcome::Error(e) if e.kind == ErrorKind::Shape));
    }
}
