//! Reference kernel for `tf.keras.losses.Circle` (Keras 3.15.1, `circle` in
//! `keras/src/losses/losses.py`, `build_pos_neg_masks` in `keras/src/utils/numerical_utils.py`).
//!
//! Cosine distances of the batch against itself, positive/negative pair masks from the labels
//! (cast to the loss dtype, then truncated to int32), two masked `reduce_logsumexp`s and a
//! softplus per anchor. The loss sets a Keras mask `loss > 0`, which the reduction merges into
//! the sample weights: anchors without a positive or a negative pair drop out of the mean.

use super::reduction::{only_known, py_float, Common};
use super::regression_extra::{flush_denormal, tf_softplus};
use super::Inputs;
use crate::backend::CallError;
use crate::reference::tf_nn::nd::{Fp, Nd};
use crate::reference::GradientKernel;
use crate::reference::{Args, Kernel};
use crate::tensor::Tensor;

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[];

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[("tf.keras.losses.Circle", circle)];

/// `tf.cast(float, int32)` on x86: NaN and out-of-range values become `i32::MIN`.
fn cast_to_int32(x: f64) -> i64 {
    if x.is_finite() && x > i32::MIN as f64 - 1.0 && x < i32::MAX as f64 + 1.0 {
        x.trunc() as i64
    } else {
        i32::MIN as i64
    }
}

/// `1 - matmul(e, transpose(e))` for embeddings of rank 1 (one dot product, a 0-d result) or
/// rank 2 (`(N, N)`), each dot product rounded once to the working dtype.
fn cosine_distances(p: Fp, e: &Nd) -> Result<Nd, CallError> {
    let dot = |a: &[f64], b: &[f64]| p.r(a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>());
    match e.rank() {
        1 => Ok(Nd::scalar(p.r(1.0 - dot(&e.data, &e.data)))),
        2 => {
            let (n, d) = (e.shape[0], e.shape[1]);
            let row = |i: usize| &e.data[i * d..(i + 1) * d];
            let mut out = Vec::with_capacity(n * n);
            for i in 0..n {
                for j in 0..n {
                    out.push(p.r(1.0 - dot(row(i), row(j))));
                }
            }
            Ok(Nd::new(vec![n, n], out))
        }
        r => Err(CallError::shape(format!(
            "circle: y_pred must hold embeddings of rank 1 or 2, got rank {r}"
        ))),
    }
}

/// `tf.math.reduce_logsumexp` over one row: the maximum (0 when it is not finite) is
/// subtracted before `exp` and added back after `log`.
fn logsumexp(p: Fp, row: &[f64]) -> f64 {
    let raw_max = row.iter().copied().fold(f64::NEG_INFINITY, |a, b| {
        if a.is_nan() || b.is_nan() {
            f64::NAN
        } else {
            a.max(b)
        }
    });
    let m = if raw_max.is_finite() { raw_max } else { 0.0 };
    let terms: Vec<f64> = row
        .iter()
        .map(|&x| flush_denormal(p, p.exp(p.r(x - m))))
        .collect();
    p.r(p.ln(p.sum(&terms)) + m)
}

fn circle(a: &Args) -> Result<Tensor, CallError> {
    only_known(a, &["gamma", "margin", "remove_diagonal"])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let gamma = py_float(a, "gamma", 80.0)?;
    let margin = py_float(a, "margin", 0.4)?;
    let remove_diagonal = a.bool_or("remove_diagonal", true)?;
    let inp = Inputs::read(a, c)?;
    let labels: Vec<i64> = inp.y_true.data.iter().map(|&x| cast_to_int32(x)).collect();
    let m = labels.len();
    let dist = cosine_distances(p, &inp.y_pred)?.map(|d| if d.is_nan() { d } else { d.max(0.0) });
    // Masks are (M, M) for M labels; the distances must broadcast against them.
    let pos_mask = Nd::new(
        vec![m, m],
        (0..m * m)
            .map(|k| {
                let (i, j) = (k / m, k % m);
                f64::from(u8::from(
                    labels[i] == labels[j] && !(remove_diagonal && i == j),
                ))
            })
            .collect(),
    );
    let neg_mask = Nd::new(
        vec![m, m],
        (0..m * m)
            .map(|k| f64::from(u8::from(labels[k / m] != labels[k % m])))
            .collect(),
    );
    let (optim_pos, optim_neg) = (p.r(margin), p.r(1.0 + margin));
    let (delta_pos, delta_neg) = (p.r(margin), p.r(1.0 - margin));
    let (neg_gamma, gamma) = (p.r(-gamma), p.r(gamma));
    let relu = |x: f64| if x.is_nan() { x } else { x.max(0.0) };
    let pos_weights = dist.zip(&pos_mask, |d, mk| relu(p.r(p.r(optim_pos + d) * mk)))?;
    let neg_weights = dist.zip(&neg_mask, |d, mk| relu(p.r(p.r(optim_neg - d) * mk)))?;
    let pos_scores = pos_weights.zip(&dist, |w, d| p.r(p.r(neg_gamma * w) * p.r(delta_pos - d)))?;
    let neg_scores = neg_weights.zip(&dist, |w, d| p.r(p.r(gamma * w) * p.r(delta_neg - d)))?;
    let masked = |scores: &Nd, mask: &Nd| {
        scores.zip(mask, |s, mk| if mk != 0.0 { s } else { f64::NEG_INFINITY })
    };
    let pos = masked(&pos_scores, &pos_mask)?;
    let neg = masked(&neg_scores, &neg_mask)?;
    let p_loss = pos.reduce_axis(1, |r| logsumexp(p, r));
    let n_loss = neg.reduce_axis(1, |r| logsumexp(p, r));
    let values = p_loss.zip(&n_loss, |a, b| tf_softplus(p, p.r(a + b)))?;
    let mask = values.map(|l| f64::from(u8::from(l > 0.0)));
    inp.finish(values, Some(&mask), c)
}

#[cfg(test)]
mod tests {
    use super::super::focal::tests::{call, f32, kind, values};
    use crate::backend::{ErrorKind, Value};
    use crate::tensor::{DType, Tensor};

    fn labels(data: &[f64]) -> Value {
        Value::Tensor(Tensor::from_f64(DType::Int64, vec![data.len()], data.to_vec()).unwrap())
    }

    fn embeddings() -> Value {
        f32(&[4, 2], &[0.6, 0.8, 0.0, 1.0, 1.0, 0.0, 0.8, -0.6])
    }

    #[test]
    fn no_positive_or_no_negative_pairs_give_zero() {
        for l in [[0.0, 1.0, 2.0, 3.0], [5.0; 4]] {
            let none = values(call(
                "Circle",
                &[
                    ("y_true", labels(&l)),
                    ("y_pred", embeddings()),
                    ("reduction", Value::Str("none".into())),
                ],
            ));
            assert_eq!(none.to_f64_vec(), vec![0.0; 4]);
            let mean = values(call(
                "Circle",
                &[("y_true", labels(&l)), ("y_pred", embeddings())],
            ));
            assert_eq!(mean.to_f64_vec(), vec![0.0]);
        }
    }

    #[test]
    fn the_mean_skips_anchors_with_zero_loss() {
        let l = labels(&[0.0, 1.0, 0.0, 2.0]);
        let none = values(call(
            "Circle",
            &[
                ("y_true", l.clone()),
                ("y_pred", embeddings()),
                ("reduction", Value::Str("none".into())),
            ],
        ))
        .to_f64_vec();
        let positive: Vec<f64> = none.iter().copied().filter(|&x| x > 0.0).collect();
        assert_eq!(positive.len(), 2);
        let mean =
            values(call("Circle", &[("y_true", l), ("y_pred", embeddings())])).to_f64_vec()[0];
        let want = positive.iter().sum::<f64>() / 2.0;
        assert!((mean - want).abs() <= 1e-5 * want, "{mean} vs {want}");
    }

    #[test]
    fn label_count_must_match_the_batch() {
        let o = call(
            "Circle",
            &[
                ("y_true", labels(&[0.0, 1.0, 0.0])),
                ("y_pred", embeddings()),
            ],
        );
        assert_eq!(kind(o), ErrorKind::Shape);
    }
}
