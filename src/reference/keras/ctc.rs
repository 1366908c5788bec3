//! `tf.keras.losses.CTC` (Keras 3.15.1, TensorFlow backend).
//!
//! `keras.losses.ctc` derives the lengths itself: every sequence uses all `T` frames of the
//! batch-major `(N, T, C)` logits, and the label length is the number of non-zero entries of
//! `y_true`, whose first `label_length` entries are read as the labels. Class 0 is both the
//! padding and the blank (`blank_index=0`), so a 0 inside a label row shortens the sequence and
//! turns a real label into the blank. The backend casts `y_true` to int32 and the logits to
//! float32 (float64 is computed in float32 and cast back; float16 and bfloat16 compute and return
//! float32, which the loss then casts to its dtype) and calls `tf.nn.ctc_loss`, so an impossible
//! alignment gives TensorFlow's large finite value. The per-sequence losses then go through the
//! usual Keras reduction with sample weights.
//!
//! The backward ([`ctc_backward`]) reuses `tf.nn.ctc_loss`'s gradient and carries its own small
//! reduction backward ([`reduce_weighted_backward`]) for one loss per sequence.

use super::reduction::{only_known, reduce_weighted, squeeze_or_expand, Common, Reduction};
use crate::backend::{CallError, Gradients};
use crate::reference::gradient::{zeros_like, Backward};
use crate::reference::tf_nn::ctc::{ctc_dense, Lengths};
use crate::reference::tf_nn::nd::Nd;
use crate::reference::GradientKernel;
use crate::reference::{Args, Kernel};
use crate::tensor::{DType, Tensor};

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[("tf.keras.losses.CTC", ctc_backward)];

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[("tf.keras.losses.CTC", ctc)];

/// The call prepared as `keras.losses.ctc` prepares it for `tf.nn.ctc_loss`.
struct Prepared {
    c: Common,
    /// `y_true` cast to int32.
    labels: Tensor,
    /// `y_pred` cast to the loss dtype, then to float32.
    logits: Tensor,
    lengths: Lengths,
    sample_weight: Option<Nd>,
}

fn prepare(a: &Args) -> Result<Prepared, CallError> {
    only_known(a, &[])?;
    let c = Common::read(a)?;
    let y_true = Nd::cast(a.tensor("y_true")?, c.dtype);
    let y_pred = Nd::cast(a.tensor("y_pred")?, c.dtype);
    let sample_weight = a.opt_tensor("sample_weight")?.map(|t| Nd::cast(t, c.dtype));
    let (y_true, y_pred) = squeeze_or_expand(y_true, y_pred, true);
    if y_true.rank() != 2 {
        return Err(CallError::shape(format!(
            "Targets `y_true` are expected to be a tensor of shape `(batch_size, max_length)` in integer format. Received: y_true.shape={:?}",
            y_true.shape
        )));
    }
    if y_pred.rank() != 3 {
        return Err(CallError::shape(format!(
            "Logits `y_pred` are expected to be a tensor of shape `(batch_size, max_length, num_classes)`. Received: y_pred.shape={:?}",
            y_pred.shape
        )));
    }
    let (n, t) = (y_pred.shape[0], y_pred.shape[1]);
    let s = y_true.shape[1];
    // label_length = sum(y_true != 0) on the loss-dtype values; the labels are their int32 casts.
    let label_length: Vec<f64> = (0..y_true.shape[0])
        .map(|b| {
            let row = &y_true.data[b * s..(b + 1) * s];
            row.iter().filter(|&&v| v != 0.0).count() as f64
        })
        .collect();
    let labels: Vec<f64> = y_true.data.iter().map(|&v| cast_to_int32(v)).collect();
    let labels = Tensor::from_f64(DType::Int32, y_true.shape.clone(), labels)
        .map_err(|e| CallError::value(e.0))?;
    // The logits in float32 (every loss dtype computes CTC in float32).
    let logits = y_pred
        .map(|v| DType::Float32.round(v))
        .to_tensor(DType::Float32);
    let label_len = (vec![y_true.shape[0]], DType::Int32, label_length);
    let logit_len = (vec![n], DType::Int32, vec![t as f64; n]);
    Ok(Prepared {
        c,
        labels,
        logits,
        lengths: (label_len, logit_len),
        sample_weight,
    })
}

fn ctc(a: &Args) -> Result<Tensor, CallError> {
    let r = prepare(a)?;
    let (loss, _) = ctc_dense(&r.labels, &r.logits, r.lengths, false, 0, None)?;
    // Cast to float32 / float64 by the backend, then to the loss dtype by the loss.
    let n = loss.len();
    let values = Nd::new(
        vec![n],
        loss.into_iter().map(|v| r.c.dtype.round(v)).collect(),
    );
    Ok(reduce_weighted(values, r.sample_weight, None, r.c)?.to_tensor(r.c.dtype))
}

/// The backward of `reduce_weighted_values` for one loss per sequence, in the loss dtype `p`
/// (a local stand-in for the general Keras reduction backward, which lives elsewhere):
/// `Sum`'s gradient broadcasts, `DivNoNan`'s is `div_no_nan(g, divisor)` for the values and,
/// for `mean_with_sample_weight`, `g * div_no_nan(div_no_nan(-loss, d), d)` for every weight
/// through `sum(sample_weight)`; `Mul(values, weights)` gives `g * w` and `values * g`.
/// Returns the gradients of the unweighted per-sequence values and of the (flat) weights.
fn reduce_weighted_backward(
    values: &[f64],
    sample_weight: Option<&Nd>,
    c: Common,
    g: &[f64],
) -> (Vec<f64>, Option<Vec<f64>>) {
    let p = c.fp();
    let n = values.len();
    let ddn = |x: f64, y: f64| if y == 0.0 { 0.0 } else { p.r(x / y) };
    // A `(N,)` or `(N, 1)` weight pairs element for element (the values are expanded to
    // `(N, 1)` for the latter); a single weight broadcasts and collects every gradient.
    let sw: Option<Vec<f64>> = sample_weight.map(|w| {
        if w.len() == n {
            w.data.clone()
        } else {
            vec![w.data.first().copied().unwrap_or(0.0); n]
        }
    });
    let weighted: Vec<f64> = match &sw {
        Some(w) => values.iter().zip(w).map(|(&v, &w)| p.r(v * w)).collect(),
        None => values.to_vec(),
    };
    let (g_w, g_div): (Vec<f64>, f64) = match c.reduction {
        Reduction::None => (g.to_vec(), 0.0),
        Reduction::Sum => (vec![g[0]; n], 0.0),
        Reduction::MeanWithSampleWeight if sw.is_some() => {
            let w = sw.as_ref().expect("checked");
            let d = p.sum(w);
            let loss = p.sum(&weighted);
            (vec![ddn(g[0], d); n], p.r(g[0] * ddn(ddn(-loss, d), d)))
        }
        _ => (vec![ddn(g[0], p.r(n as f64)); n], 0.0),
    };
    match sw {
        None => (g_w, None),
        Some(w) => {
            let g_values = g_w.iter().zip(&w).map(|(&g, &w)| p.r(g * w)).collect();
            let g_sw = g_w
                .iter()
                .zip(values)
                .map(|(&g, &v)| p.r(p.r(v * g) + g_div))
                .collect();
            (g_values, Some(g_sw))
        }
    }
}

/// The gradient of `tf.keras.losses.CTC` w.r.t. `y_pred` (and `sample_weight`): the reduction's
/// backward in the loss dtype ([`reduce_weighted_backward`]), the per-sequence gradients cast to
/// float32, then `tf.nn.ctc_loss`'s own gradient ([`ctc_dense`]) cast back to the loss dtype and
/// to `y_pred`'s. `y_true` is cast to int32 and gets a zero gradient.
fn ctc_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    let r = prepare(a)?;
    let (loss, _) = ctc_dense(&r.labels, &r.logits, r.lengths.clone(), false, 0, None)?;
    let values: Vec<f64> = loss.iter().map(|&v| r.c.dtype.round(v)).collect();
    let g = b.grad_output.to_f64_vec();
    let (g_values, g_sw) = reduce_weighted_backward(&values, r.sample_weight.as_ref(), r.c, &g);
    let g32: Vec<f64> = g_values.iter().map(|&v| DType::Float32.round(v)).collect();
    let (_, grad) = ctc_dense(&r.labels, &r.logits, r.lengths, false, 0, Some(&g32))?;
    let mut out = Gradients::new();
    let y_pred = a.tensor("y_pred")?;
    let grad: Vec<f64> = grad.iter().map(|&v| r.c.dtype.round(v)).collect();
    out.insert(
        "y_pred".into(),
        Tensor::from_f64(r.c.dtype, y_pred.shape().to_vec(), grad)
            .map_err(|e| CallError::shape(e.0))?,
    );
    if let (Some(t), Some(mut gw)) = (a.opt_tensor("sample_weight")?, g_sw) {
        if t.numel() != gw.len() {
            let p = r.c.fp();
            gw = vec![p.sum(&gw); t.numel()];
        }
        out.insert(
            "sample_weight".into(),
            Tensor::from_f64(r.c.dtype, t.shape().to_vec(), gw)
                .map_err(|e| CallError::shape(e.0))?,
        );
    }
    if let Ok(t) = a.tensor("y_true") {
        out.insert("y_true".into(), zeros_like(t));
    }
    Ok(out)
}

/// `tf.cast(float, int32)`: truncation; NaN and out-of-range values become `i32::MIN`.
fn cast_to_int32(x: f64) -> f64 {
    if x.is_finite() && x > i32::MIN as f64 - 1.0 && x < i32::MAX as f64 + 1.0 {
        x.trunc()
    } else {
        i32::MIN as f64
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::{Backend, Call, Outcome, Value};
    use crate::reference::Reference;
    use crate::tensor::{DType, Tensor};

    fn t(dt: DType, shape: &[usize], data: &[f64]) -> Value {
        Value::Tensor(Tensor::from_f64(dt, shape.to_vec(), data.to_vec()).unwrap())
    }

    fn run(api: &str, args: Vec<(&str, Value)>) -> Tensor {
        let call = Call {
            api: api.into(),
            args: args.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        match Reference.forward(&call) {
            Outcome::Value(v) => v,
            other => panic!("{other:?}"),
        }
    }

    fn logits(len: usize) -> Vec<f64> {
        (0..len)
            .map(|i| ((i * 37 % 23) as f64 - 11.0) / 4.0)
            .collect()
    }

    #[test]
    fn keras_is_tf_nn_with_derived_lengths() {
        // (N, T, C) = (3, 5, 4); rows with padding and a 0 inside a row, which shortens it to
        // its count of non-zero labels and is read as the blank.
        let (n, tn, c) = (3, 5, 4);
        let x = logits(n * tn * c);
        let y = [1.0, 0.0, 2.0, 3.0, 3.0, 0.0, 2.0, 0.0, 0.0];
        let keras = run(
            "tf.keras.losses.CTC",
            vec![
                ("y_true", t(DType::Int32, &[3, 3], &y)),
                ("y_pred", t(DType::Float32, &[n, tn, c], &x)),
                ("reduction", Value::Str("none".into())),
            ],
        );
        let tf = run(
            "tf.nn.ctc_loss",
            vec![
                ("labels", t(DType::Int32, &[3, 3], &y)),
                ("logits", t(DType::Float32, &[n, tn, c], &x)),
                ("label_length", Value::IntList(vec![2, 2, 1])),
                ("logit_length", Value::IntList(vec![5, 5, 5])),
                ("logits_time_major", Value::Bool(false)),
            ],
        );
        assert_eq!(keras, tf);
        let mean = run(
            "tf.keras.losses.CTC",
            vec![
                ("y_true", t(DType::Int32, &[3, 3], &y)),
                ("y_pred", t(DType::Float32, &[n, tn, c], &x)),
            ],
        );
        let v = keras.to_f64_vec();
        let want = (v[0] + v[1] + v[2]) / 3.0;
        assert_eq!(mean.shape(), &[] as &[usize]);
        assert!((mean.to_f64_vec()[0] - want).abs() <= 1e-6 * want);
    }

    #[test]
    fn float64_is_computed_in_float32() {
        let x = logits(2 * 4 * 3);
        let y = t(DType::Int32, &[2, 2], &[1.0, 2.0, 2.0, 0.0]);
        let f32 = run(
            "tf.keras.losses.CTC",
            vec![
                ("y_true", y.clone()),
                ("y_pred", t(DType::Float32, &[2, 4, 3], &x)),
                ("reduction", Value::Str("none".into())),
            ],
        );
        let f64 = run(
            "tf.keras.losses.CTC",
            vec![
                ("y_true", y),
                ("y_pred", t(DType::Float32, &[2, 4, 3], &x)),
                ("reduction", Value::Str("none".into())),
                ("dtype", Value::Str("float64".into())),
            ],
        );
        assert_eq!(f64.dtype(), DType::Float64);
        assert_eq!(f32.to_f64_vec(), f64.to_f64_vec());
    }
}
