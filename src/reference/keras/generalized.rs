//! Reference kernel for `tf.keras.losses.CategoricalGeneralizedCrossEntropy` (Keras 3.15.1,
//! `categorical_generalized_cross_entropy` in `keras/src/losses/losses.py`).
//!
//! `(1 - p^q) / q` of the true-class probability, picked by multiplying `y_pred` with a one-hot
//! of the labels and summing the last axis. Nothing is validated but `q`: labels (cast to the
//! loss dtype, then truncated to int64) outside `[0, C)` one-hot to zeros, and the one-hot
//! broadcasts against `y_pred`, so `(N, 1)` labels give an `(N, N)` loss.

use super::focal::tf_pow;
use super::reduction::{collect, reduce_to, tf_sum};
use super::reduction::{only_known, py_float, Common};
use super::{cast_to_int64, Inputs};
use crate::backend::CallError;
use crate::backend::Gradients;
use crate::reference::tf_nn::nd::{Fp, Nd};
use crate::reference::{Args, Kernel};
use crate::reference::{Backward, GradientKernel};
use crate::tensor::Tensor;

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[(
    "tf.keras.losses.CategoricalGeneralizedCrossEntropy",
    categorical_generalized_cross_entropy_backward,
)];

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[(
    "tf.keras.losses.CategoricalGeneralizedCrossEntropy",
    categorical_generalized_cross_entropy,
)];

fn categorical_generalized_cross_entropy(a: &Args) -> Result<Tensor, CallError> {
    only_known(a, &["q"])?;
    // The constructor checks q before anything else.
    let q = py_float(a, "q", 0.5)?;
    if !(0.0 < q && q < 1.0) {
        return Err(CallError::argument(format!(
            "q must be in the interval (0, 1), got {q}"
        )));
    }
    let c = Common::read(a)?;
    let p = c.fp();
    let q = p.r(q);
    let inp = Inputs::read(a, c)?;
    let (_, picked) = pick_true_class(p, &inp.y_true, &inp.y_pred)?;
    let last = picked.rank() - 1;
    let values = picked
        .reduce_axis(last, |f| p.sum(f))
        .map(|v| p.r(p.r(1.0 - tf_pow(p, v, q)) / q));
    inp.finish(values, None, c)
}

/// The one-hot of the labels (cast to int64) and `y_pred * one_hot`, broadcast.
fn pick_true_class(p: Fp, labels: &Nd, y: &Nd) -> Result<(Nd, Nd), CallError> {
    let Some(&n) = y.shape.last() else {
        return Err(CallError::shape(
            "tuple index out of range (y_pred.shape[-1] of a scalar)",
        ));
    };
    let mut shape = labels.shape.clone();
    shape.push(n);
    let mut one_hot = Vec::with_capacity(labels.len() * n);
    for &l in &labels.data {
        let k = cast_to_int64(l);
        one_hot.extend((0..n).map(|j| if k == j as f64 { 1.0 } else { 0.0 }));
    }
    let one_hot = Nd::new(shape, one_hot);
    let picked = y.zip(&one_hot, |v, h| p.r(v * h))?;
    Ok((one_hot, picked))
}

/// `(1 - pow(p_true, q)) / q`: `RealDiv` by the constant `q`, `Sub`, TF's `Pow` gradient for a
/// constant scalar exponent `g * q * pow(x, q - 1)` (infinite at `p_true = 0`, so an
/// out-of-range label's row gets `inf * 0 = NaN` through the one-hot product), `Sum` and `Mul`.
/// The labels go through an integer cast: no gradient.
fn categorical_generalized_cross_entropy_backward(
    a: &Args,
    b: &Backward,
) -> Result<Gradients, CallError> {
    only_known(a, &["q"])?;
    let q = py_float(a, "q", 0.5)?;
    let c = Common::read(a)?;
    let p = c.fp();
    let q = p.r(q);
    let inp = Inputs::read(a, c)?;
    let (one_hot, picked) = pick_true_class(p, &inp.y_true, &inp.y_pred)?;
    let last = picked.rank() - 1;
    let true_p = picked.reduce_axis(last, |f| tf_sum(p, f));
    let values = true_p.map(|v| p.r(p.r(1.0 - tf_pow(p, v, q)) / q));
    let red = inp.finish_backward(&values, None, c, b)?;
    let g_true_p = red.values.zip(&true_p, |g, v| {
        let g_pow = -p.r(g / q);
        p.r(p.r(g_pow * q) * tf_pow(p, v, p.r(q - 1.0)))
    })?;
    let g_picked = g_true_p.expand(last).broadcast_to(&picked.shape);
    let oh = one_hot.broadcast_to(&picked.shape);
    let g_y = g_picked.zip(&oh, |g, h| p.r(g * h))?;
    let g_y = reduce_to(p, g_y, &inp.y_pred.shape)?;
    collect(
        a,
        b,
        [
            ("y_true", None),
            ("y_pred", Some(g_y)),
            ("sample_weight", red.sample_weight),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::super::focal::tests::{call, f32, kind, values};
    use crate::backend::{ErrorKind, Value};
    use crate::tensor::{DType, Tensor};

    fn labels(data: &[f64]) -> Value {
        Value::Tensor(Tensor::from_f64(DType::Int64, vec![data.len()], data.to_vec()).unwrap())
    }

    #[test]
    fn q_outside_the_open_interval_is_an_argument_error() {
        for q in [0.0, 1.0, -0.5, 1.5, f64::NAN] {
            let o = call(
                "CategoricalGeneralizedCrossEntropy",
                &[
                    ("y_true", labels(&[0.0])),
                    ("y_pred", f32(&[1, 2], &[0.5, 0.5])),
                    ("q", Value::Float(q)),
                ],
            );
            assert_eq!(kind(o), ErrorKind::Argument, "q = {q}");
        }
    }

    #[test]
    fn out_of_range_labels_cost_one_over_q_and_column_labels_broadcast() {
        let p = f32(&[3, 2], &[0.7, 0.3, 0.2, 0.8, 0.6, 0.4]);
        let none = ("reduction", Value::Str("none".into()));
        let o = values(call(
            "CategoricalGeneralizedCrossEntropy",
            &[
                ("y_true", labels(&[5.0, -1.0, 0.0])),
                ("y_pred", p.clone()),
                none.clone(),
            ],
        ));
        assert_eq!(o.shape(), &[3]);
        let v = o.to_f64_vec();
        assert_eq!((v[0], v[1]), (2.0, 2.0));
        assert!(v[2] > 0.0 && v[2] < 2.0);
        let column =
            Value::Tensor(Tensor::from_f64(DType::Int64, vec![3, 1], vec![0.0, 1.0, 0.0]).unwrap());
        let o = values(call(
            "CategoricalGeneralizedCrossEntropy",
            &[("y_true", column), ("y_pred", p), none],
        ));
        assert_eq!(o.shape(), &[3, 3]);
    }
}
