//! Reference kernels for `tf.keras.losses.Hinge`, `SquaredHinge` and `CategoricalHinge`.
//!
//! Keras 3.15.1 (`keras/src/losses/losses.py`), every op in the loss dtype:
//!
//! ```text
//! hinge:             t = convert_binary_labels_to_hinge(y_true)
//!                    mean(maximum(1 - t * y_pred, 0), axis=-1)
//! squared_hinge:     mean(square(maximum(1 - t * y_pred, 0)), axis=-1)
//! categorical_hinge: pos = sum(y_true * y_pred, axis=-1)
//!                    neg = max((1 - y_true) * y_pred, axis=-1)
//!                    maximum(neg - pos + 1, 0)
//! ```
//!
//! `convert_binary_labels_to_hinge` maps `{0, 1}` to `{-1, +1}` only if *every* element of
//! `y_true` is 0 or 1 (an empty `y_true` counts as binary); one NaN, -1 or 0.5 anywhere leaves all
//! labels as they are. `tf.maximum` and `reduce_max` propagate NaN. Keras' `ops.max` refuses an
//! empty tensor ("Cannot compute the max of an empty tensor"), so `CategoricalHinge` on an empty
//! batch raises for every reduction.

use super::probabilistic::sum_axis;
use super::reduction::{only_known, Common};
use super::{mean_axis, reduce_axis_index, Inputs};
use crate::backend::CallError;
use crate::reference::tf_nn::nd::{Fp, Nd};
use crate::reference::{Args, Kernel};
use crate::tensor::Tensor;
use crate::reference::GradientKernel;

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[
    ("tf.keras.losses.CategoricalHinge", categorical_hinge),
    ("tf.keras.losses.Hinge", hinge),
    ("tf.keras.losses.SquaredHinge", squared_hinge),
];

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[];

/// `tf.maximum(a, b)`: NaN if either is NaN.
fn maximum(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// `convert_binary_labels_to_hinge`: `2 y - 1` if all of `y` is 0 or 1, else `y` unchanged.
fn hinge_labels(p: Fp, y: Nd) -> Nd {
    if y.data.iter().all(|&t| t == 0.0 || t == 1.0) {
        y.map(|t| p.r(p.r(2.0 * t) - 1.0))
    } else {
        y
    }
}

/// Shared body of `Hinge` and `SquaredHinge`: `mean(f(maximum(1 - t * y_pred, 0)), axis=-1)`.
fn margin_loss(a: &Args, squared: bool) -> Result<Tensor, CallError> {
    only_known(a, &[])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let inp = Inputs::read(a, c)?;
    let t = hinge_labels(p, inp.y_true.clone());
    let terms = t.zip(&inp.y_pred, |t, y| {
        let m = maximum(p.r(1.0 - p.r(t * y)), 0.0);
        if squared {
            p.r(m * m)
        } else {
            m
        }
    })?;
    let values = mean_axis(p, &terms, Some(-1))?;
    inp.finish(values, None, c)
}

fn hinge(a: &Args) -> Result<Tensor, CallError> {
    margin_loss(a, false)
}

fn squared_hinge(a: &Args) -> Result<Tensor, CallError> {
    margin_loss(a, true)
}

fn categorical_hinge(a: &Args) -> Result<Tensor, CallError> {
    only_known(a, &[])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let inp = Inputs::read(a, c)?;
    let (y, x) = (&inp.y_true, &inp.y_pred);
    let pos = sum_axis(p, &y.zip(x, |y, x| p.r(y * x))?, -1)?;
    let wrong = y.zip(x, |y, x| p.r(p.r(1.0 - y) * x))?;
    if wrong.is_empty() {
        return Err(CallError::shape(
            "Cannot compute the max of an empty tensor. Condition x > y did not hold.",
        ));
    }
    let k = reduce_axis_index(&wrong, -1)?;
    let neg = wrong.reduce_axis(k, |f| f.iter().copied().fold(f64::NEG_INFINITY, maximum));
    let values = neg.zip(&pos, |n, s| maximum(p.r(p.r(n - s) + 1.0), 0.0))?;
    inp.finish(values, None, c)
}

#[cfg(test)]
mod tests {
    use crate::backend::{Backend, Call, ErrorKind, Outcome, Value};
    use crate::reference::Reference;
    use crate::tensor::{DType, Tensor};

    fn f32(shape: &[usize], data: &[f64]) -> Value {
        Value::Tensor(Tensor::from_f64(DType::Float32, shape.to_vec(), data.to_vec()).unwrap())
    }

    fn none(class: &str, y_true: Value, y_pred: Value) -> Vec<f64> {
        let call = Call {
            api: format!("tf.keras.losses.{class}"),
            args: [
                ("y_true", y_true),
                ("y_pred", y_pred),
                ("reduction", Value::Str("none".into())),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        };
        match Reference.forward(&call) {
            Outcome::Value(t) => t.to_f64_vec(),
            other => panic!("expected a value, got {other:?}"),
        }
    }

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    }

    #[test]
    fn binary_labels_are_converted_for_the_whole_batch_or_not_at_all() {
        let pred = f32(&[2, 2], &[0.3, -0.2, 0.5, 2.0]);
        let binary = none("Hinge", f32(&[2, 2], &[0.0, 1.0, 1.0, 1.0]), pred.clone());
        assert!(close(&binary, &[1.25, 0.25]), "{binary:?}");
        // One -1 in the second row: the first row's 0 is no longer -1.
        let mixed = none("Hinge", f32(&[2, 2], &[0.0, 1.0, -1.0, 1.0]), pred.clone());
        assert!(close(&mixed, &[1.1, 0.75]), "{mixed:?}");
        let squared = none("SquaredHinge", f32(&[2, 2], &[0.0, 1.0, 1.0, 1.0]), pred);
        assert!(
            close(&squared, &[(1.69 + 1.44) / 2.0, 0.125]),
            "{squared:?}"
        );
    }

    #[test]
    fn categorical_hinge_takes_the_largest_wrong_score() {
        // framework-differences #22: 0.6 on the seed input.
        let out = none(
            "CategoricalHinge",
            f32(&[2, 4], &[0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]),
            f32(&[2, 4], &[0.1, 0.2, 0.4, 0.8, -5.0, -5.0, -5.0, -6.0]),
        );
        // Row 2: the masked target entry 0 is the largest "wrong" score: max(0 + 6 + 1, 0).
        assert!(close(&out, &[0.6, 7.0]), "{out:?}");
        let empty = Call {
            api: "tf.keras.losses.CategoricalHinge".into(),
            args: [("y_true", f32(&[0, 4], &[])), ("y_pred", f32(&[0, 4], &[]))]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        };
        assert!(
            matches!(Reference.forward(&empty), Outcome::Error(e) if e.kind == ErrorKind::Shape)
        );
    }
}
