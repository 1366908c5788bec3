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
use super::reduction::{collect, reduce_to};
use super::reduction::{only_known, Common};
use super::{elementwise_backward, Fold};
use super::{mean_axis, reduce_axis_index, Inputs};
use crate::backend::CallError;
use crate::backend::Gradients;
use crate::reference::tf_nn::nd::{Fp, Nd};
use crate::reference::{Args, Kernel};
use crate::reference::{Backward, GradientKernel};
use crate::tensor::Tensor;

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[
    ("tf.keras.losses.CategoricalHinge", categorical_hinge),
    ("tf.keras.losses.Hinge", hinge),
    ("tf.keras.losses.SquaredHinge", squared_hinge),
];

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[
    (
        "tf.keras.losses.CategoricalHinge",
        categorical_hinge_backward,
    ),
    ("tf.keras.losses.Hinge", hinge_backward),
    ("tf.keras.losses.SquaredHinge", squared_hinge_backward),
];

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

/// TF's `Maximum` gradient for `maximum(x, 0)`: `g` where `x >= 0` (ties go to `x`, so a
/// sample exactly at the margin still gets the gradient), 0 below and for NaN.
fn relu_grad(x: f64, g: f64) -> f64 {
    if x >= 0.0 {
        g
    } else {
        0.0
    }
}

/// Backward of [`margin_loss`]: `Maximum` ([`relu_grad`]), `Square` (`g * 2m`), `Sub` and `Mul`;
/// `convert_binary_labels_to_hinge`'s `cond` passes the gradient through the branch it took, so
/// binary labels get `2 g` (the `2.0 * y_true`) and others `g`.
fn margin_backward(a: &Args, b: &Backward, squared: bool) -> Result<Gradients, CallError> {
    only_known(a, &[])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let binary = {
        let y = Nd::cast(a.tensor("y_true")?, c.dtype);
        y.data.iter().all(|&t| t == 0.0 || t == 1.0)
    };
    let label = move |t: f64| if binary { p.r(p.r(2.0 * t) - 1.0) } else { t };
    let margin = move |t: f64, y: f64| p.r(1.0 - p.r(label(t) * y));
    let f = |t: f64, y: f64| {
        let m = maximum(margin(t, y), 0.0);
        if squared {
            p.r(m * m)
        } else {
            m
        }
    };
    elementwise_backward(a, b, c, p, Fold::Mean, f, |t, y, g| {
        let x = margin(t, y);
        let g = if squared {
            p.r(g * p.r(2.0 * maximum(x, 0.0)))
        } else {
            g
        };
        let g_prod = -relu_grad(x, g);
        let g_label = p.r(g_prod * y);
        let g_t = if binary { p.r(g_label * 2.0) } else { g_label };
        (g_t, p.r(g_prod * label(t)))
    })
}

fn hinge_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    margin_backward(a, b, false)
}

fn squared_hinge_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    margin_backward(a, b, true)
}

/// Backward of [`categorical_hinge`]: `Maximum` ([`relu_grad`]) on `neg - pos + 1`; `Sum` to
/// `y_true * y_pred`; `Max` (TF's `_MinOrMaxGrad`) splits the gradient equally between the
/// entries equal to the maximum (`indicators / count * g`; a NaN maximum matches nothing and
/// gives `0 / 0`, NaN, to the whole row); then `(1 - y_true) * y_pred`.
fn categorical_hinge_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    only_known(a, &[])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let inp = Inputs::read(a, c)?;
    let (y, x) = (&inp.y_true, &inp.y_pred);
    let prod = y.zip(x, |y, x| p.r(y * x))?;
    let pos = sum_axis(p, &prod, -1)?;
    let wrong = y.zip(x, |y, x| p.r(p.r(1.0 - y) * x))?;
    let k = reduce_axis_index(&wrong, -1)?;
    let neg = wrong.reduce_axis(k, |f| f.iter().copied().fold(f64::NEG_INFINITY, maximum));
    let values = neg.zip(&pos, |n, s| maximum(p.r(p.r(n - s) + 1.0), 0.0))?;
    let red = inp.finish_backward(&values, None, c, b)?;
    let shape = prod.shape.clone();
    let (yb, xb) = (y.broadcast_to(&shape), x.broadcast_to(&shape));
    let n = shape[k];
    let rows = values.len();
    let (mut gy, mut gx) = (vec![0.0; prod.len()], vec![0.0; prod.len()]);
    for r in 0..rows {
        let margin = p.r(p.r(neg.data[r] - pos.data[r]) + 1.0);
        let g_a = relu_grad(margin, red.values.data[r]);
        let (g_neg, g_pos) = (g_a, -g_a);
        let row = r * n..(r + 1) * n;
        let count = wrong.data[row.clone()]
            .iter()
            .filter(|&&w| w == neg.data[r])
            .count() as f64;
        for i in row {
            let indicator = if wrong.data[i] == neg.data[i / n] {
                1.0
            } else {
                0.0
            };
            let g_wrong = p.r(p.r(indicator / count) * g_neg);
            let one_minus_y = p.r(1.0 - yb.data[i]);
            gx[i] = p.r(p.r(g_pos * yb.data[i]) + p.r(g_wrong * one_minus_y));
            gy[i] = p.r(p.r(g_pos * xb.data[i]) - p.r(g_wrong * xb.data[i]));
        }
    }
    let gy = reduce_to(p, Nd::new(shape.clone(), gy), &y.shape)?;
    let gx = reduce_to(p, Nd::new(shape, gx), &x.shape)?;
    collect(
        a,
        b,
        [
            ("y_true", Some(gy)),
            ("y_pred", Some(gx)),
            ("sample_weight", red.sample_weight),
        ],
    )
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
