//! Reference kernels for `tf.nn.*` cross-entropy ops (TensorFlow 2.21, CPU).
//!
//! The computations mirror TensorFlow's kernels op by op in the working dtype (see [`nd::Fp`]):
//! `sigmoid_cross_entropy_with_logits` is the Python composite
//! `relu(x) - x * z + log1p(exp(-|x|))`; the two softmax ops follow `xent_op.h` /
//! `sparse_xent_op.h`: shift by the row maximum, `log(sum(exp))`, then `labels * (lse - shifted)`.
//! That is why `labels = 0` against a `-inf` logit gives NaN (0 * inf), exactly as TensorFlow.

pub mod ctc;
pub mod l2;
pub mod nd;
pub mod poisson;
pub mod weighted;

use super::{Args, Kernel};
use crate::backend::{CallError, Value};
use crate::tensor::{DType, Tensor};
use nd::{Fp, Nd};
use crate::reference::GradientKernel;

/// Every gradient table of this framework: one per kernel module.
pub const GRADIENT_TABLES: &[&[(&str, GradientKernel)]] = &[
    GRADIENTS,
    ctc::GRADIENTS,
    l2::GRADIENTS,
    poisson::GRADIENTS,
    weighted::GRADIENTS,
];

/// Every forward kernel table of this module.
pub const TABLES: &[&[(&str, Kernel)]] = &[
    KERNELS,
    ctc::KERNELS,
    l2::KERNELS,
    poisson::KERNELS,
    weighted::KERNELS,
];

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[
    (
        "tf.nn.sigmoid_cross_entropy_with_logits",
        sigmoid_cross_entropy_with_logits,
    ),
    (
        "tf.nn.softmax_cross_entropy_with_logits",
        softmax_cross_entropy_with_logits,
    ),
    (
        "tf.nn.sparse_softmax_cross_entropy_with_logits",
        sparse_softmax_cross_entropy_with_logits,
    ),
];

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[];

/// Checks for unknown arguments first (Python's `TypeError` comes before anything runs), then
/// reads the op's `name`: TensorFlow only uses it for the graph name scope.
pub(crate) fn read_name(a: &Args, params: &[&'static str]) -> Result<(), CallError> {
    for p in params.iter().chain(&["name"]) {
        a.get(p);
    }
    a.finish()?;
    match a.get("name") {
        None | Some(Value::Null) | Some(Value::Str(_)) => Ok(()),
        Some(v) => Err(CallError::argument(format!(
            "{}: 'name' must be a string or None, got {}",
            a.api(),
            v.describe()
        ))),
    }
}

/// Float dtypes TensorFlow's cross-entropy kernels are registered for.
fn check_float(op: &str, t: &Tensor) -> Result<DType, CallError> {
    if t.dtype().is_float() {
        Ok(t.dtype())
    } else {
        Err(CallError::dtype(format!(
            "{op}: value for attr 'T' of {} is not in the list of allowed values: half, bfloat16, float, double",
            t.dtype()
        )))
    }
}

/// One element of `sigmoid_cross_entropy_with_logits` in working precision `p`:
/// `where(x >= 0, x, 0) - x * z + log1p(exp(where(x >= 0, -x, x)))`.
pub(crate) fn sigmoid_xent(p: Fp, z: f64, x: f64) -> f64 {
    let ge = x >= 0.0;
    let relu = if ge { x } else { 0.0 };
    let neg_abs = if ge { -x } else { x };
    let lhs = p.r(relu - p.r(x * z));
    p.r(lhs + p.r(p.exp(neg_abs).ln_1p()))
}

fn sigmoid_cross_entropy_with_logits(a: &Args) -> Result<Tensor, CallError> {
    read_name(a, &["labels", "logits"])?;
    let labels = a.tensor("labels")?;
    let logits = a.tensor("logits")?;
    if labels.shape() != logits.shape() {
        return Err(CallError::shape(format!(
            "`logits` and `labels` must have the same shape, received ({:?} vs {:?}).",
            logits.shape(),
            labels.shape()
        )));
    }
    if labels.dtype() != logits.dtype() {
        return Err(CallError::dtype(format!(
            "cannot compute Mul as input #1 was expected to be a {} tensor but is a {} tensor",
            logits.dtype(),
            labels.dtype()
        )));
    }
    let dt = logits.dtype();
    if !dt.is_float() {
        return Err(CallError::dtype(format!(
            "sigmoid_cross_entropy_with_logits: logits of dtype {dt} are not supported"
        )));
    }
    let p = Fp(dt);
    let z = Nd::of(labels);
    let x = Nd::of(logits);
    let out = z.zip(&x, |z, x| sigmoid_xent(p, z, x))?;
    Ok(out.to_tensor(dt))
}

/// The `SoftmaxCrossEntropyWithLogits` kernel on 2-D inputs in precision `p`; rows of `labels`
/// and `logits` already broadcast to the same `(n, c)`.
/// `c` must be positive.
fn softmax_xent_rows(p: Fp, labels: &[f64], logits: &[f64], c: usize) -> Vec<f64> {
    labels
        .chunks(c)
        .zip(logits.chunks(c))
        .map(|(z, x)| {
            let (shifted, lse) = shifted_lse(p, x);
            let terms: Vec<f64> = z
                .iter()
                .zip(&shifted)
                .map(|(&z, &s)| p.r(z * p.r(lse - s)))
                .collect();
            p.sum(&terms)
        })
        .collect()
}

/// `logits - max(logits)` and `log(sum(exp(shifted)))`, each rounded to `p`.
fn shifted_lse(p: Fp, x: &[f64]) -> (Vec<f64>, f64) {
    let m = if x.iter().any(|v| v.is_nan()) {
        f64::NAN
    } else {
        x.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    };
    let shifted: Vec<f64> = x.iter().map(|&v| p.r(v - m)).collect();
    let e: Vec<f64> = shifted.iter().map(|&s| p.exp(s)).collect();
    let lse = p.ln(p.sum(&e));
    (shifted, lse)
}

/// `tf.nn.softmax_cross_entropy_with_logits(labels, logits, axis)` on arrays: labels are cast to
/// the logits' working dtype; the result has the logits' dtype. Used by Keras' categorical
/// cross-entropy with `from_logits=True`.
pub(crate) fn softmax_xent(
    labels: &Tensor,
    logits: &Tensor,
    axis: i64,
) -> Result<Tensor, CallError> {
    let op = "softmax_cross_entropy_with_logits";
    let out_dt = logits.dtype();
    let work = match out_dt {
        DType::Float16 | DType::Bfloat16 => DType::Float32,
        d => d,
    };
    let rank = logits.shape().len();
    let mut z = Nd::cast(labels, if out_dt.is_float() { work } else { out_dt });
    let mut x = Nd::cast(logits, work);
    if axis != -1 {
        // `_move_dim_to_end` builds `range(axis)` and `range(axis + 1, rank)`: negative axes
        // other than -1 and axes past the end fail there.
        if axis < 0 || axis >= rank as i64 {
            return Err(CallError::argument(format!(
                "{op}: axis {axis} is not supported for logits of rank {rank} (only -1 or 0..rank)"
            )));
        }
        if z.rank() != rank {
            return Err(CallError::shape(format!(
                "{op}: transpose expects labels of rank {rank}, got shape {:?}",
                z.shape
            )));
        }
        z = z.move_axis_to_end(axis as usize);
        x = x.move_axis_to_end(axis as usize);
    }
    if rank == 0 || z.rank() == 0 {
        return Err(CallError::shape(format!(
            "{op}: logits and labels must have rank at least 1, got {:?} and {:?}",
            x.shape, z.shape
        )));
    }
    check_float(op, logits)?;
    let flat = |a: &Nd| {
        let c = *a.shape.last().expect("rank >= 1");
        let n: usize = a.shape[..a.rank() - 1].iter().product();
        (n, c)
    };
    let (nz, cz) = flat(&z);
    let (nx, cx) = flat(&x);
    let bcast = nd::broadcast_shapes(&[nz, cz], &[nx, cx]).ok_or_else(|| {
        CallError::shape(format!(
            "{op}: logits and labels must be broadcastable: logits_size=[{nx},{cx}] labels_size=[{nz},{cz}]"
        ))
    })?;
    let (n, c) = (bcast[0], bcast[1]);
    let out_shape = x.shape[..x.rank() - 1].to_vec();
    if n != out_shape.iter().product::<usize>() {
        return Err(CallError::shape(format!(
            "{op}: input to reshape is a tensor with {n} values, but the requested shape is {out_shape:?}"
        )));
    }
    let zb = Nd::new(vec![nz, cz], z.data).broadcast_to(&[n, c]);
    let xb = Nd::new(vec![nx, cx], x.data).broadcast_to(&[n, c]);
    // No classes: log(0) = -inf is never used, every row sums zero terms.
    let cost = if c == 0 {
        vec![0.0; n]
    } else {
        softmax_xent_rows(Fp(work), &zb.data, &xb.data, c)
    };
    Ok(Nd::new(out_shape, cost).to_tensor(out_dt))
}

fn softmax_cross_entropy_with_logits(a: &Args) -> Result<Tensor, CallError> {
    read_name(a, &["labels", "logits", "axis"])?;
    let labels = a.tensor("labels")?;
    let logits = a.tensor("logits")?;
    let axis = a.opt_i64("axis", Some(-1))?.unwrap_or(-1);
    softmax_xent(labels, logits, axis)
}

/// The shape checks `sparse_softmax_cross_entropy_with_logits` runs in Python, before its kernel
/// looks at dtypes or values.
fn sparse_shapes(labels: &[usize], logits: &[usize]) -> Result<(), CallError> {
    let op = "sparse_softmax_cross_entropy_with_logits";
    if logits.is_empty() {
        return Err(CallError::shape(format!(
            "{op}: `logits` cannot be a scalar"
        )));
    }
    if labels.len() + 1 != logits.len() || labels != &logits[..logits.len() - 1] {
        return Err(CallError::shape(format!(
            "{op}: `labels.shape` must equal `logits.shape` except for the last dimension. Received: labels.shape={labels:?} and logits.shape={logits:?}"
        )));
    }
    Ok(())
}

/// `tf.nn.sparse_softmax_cross_entropy_with_logits` on arrays: `labels` hold integer class
/// indices, `logits` the values of a float tensor of dtype `dt`. Used by Keras' sparse
/// categorical cross-entropy.
pub(crate) fn sparse_xent(labels: &Nd, logits: &Nd, dt: DType) -> Result<Nd, CallError> {
    let op = "sparse_softmax_cross_entropy_with_logits";
    sparse_shapes(&labels.shape, &logits.shape)?;
    // float16 is computed in float32 and cast back; bfloat16 runs in bfloat16.
    let work = if dt == DType::Float16 {
        DType::Float32
    } else {
        dt
    };
    let p = Fp(work);
    let c = *logits.shape.last().expect("rank >= 1");
    if c == 0 {
        return Err(CallError::shape(format!(
            "{op}: must have at least one class, but got logits shape {:?}",
            logits.shape
        )));
    }
    if let Some(&bad) = labels.data.iter().find(|&&l| !(0.0..c as f64).contains(&l)) {
        return Err(CallError::value(format!(
            "{op}: received a label value of {bad} which is outside the valid range of [0, {c})"
        )));
    }
    let out = labels
        .data
        .iter()
        .zip(logits.data.chunks(c))
        .map(|(&l, x)| {
            let x: Vec<f64> = x.iter().map(|&v| p.r(v)).collect();
            let (shifted, lse) = shifted_lse(p, &x);
            dt.round(p.r(lse - shifted[l as usize]))
        })
        .collect();
    Ok(Nd::new(labels.shape.clone(), out))
}

fn sparse_softmax_cross_entropy_with_logits(a: &Args) -> Result<Tensor, CallError> {
    read_name(a, &["labels", "logits"])?;
    let labels = a.tensor("labels")?;
    let logits = a.tensor("logits")?;
    let op = "sparse_softmax_cross_entropy_with_logits";
    sparse_shapes(labels.shape(), logits.shape())?;
    if !matches!(labels.dtype(), DType::Int32 | DType::Int64) {
        return Err(CallError::dtype(format!(
            "{op}: value for attr 'Tlabels' of {} is not in the list of allowed values: int32, int64",
            labels.dtype()
        )));
    }
    let dt = check_float(op, logits)?;
    let out = sparse_xent(&Nd::of(labels), &Nd::of(logits), dt)?;
    Ok(out.to_tensor(dt))
}

#[cfg(test)]
mod tests {
    use crate::backend::{Backend, Call, ErrorKind, Outcome, Value};
    use crate::reference::testing::{kind, t, value};
    use crate::reference::Reference;
    use crate::tensor::DType;

    fn call(api: &str, args: Vec<(&str, Value)>) -> Outcome {
        let call = Call {
            api: format!("tf.nn.{api}"),
            args: args.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        Reference.forward(&call)
    }

    #[test]
    fn sigmoid_equals_two_class_softmax() {
        // TensorFlow's documented identity: sigmoid(x) = softmax([x, 0])[0].
        let xs = [-30.0, -2.5, -0.1, 0.0, 0.7, 4.0, 25.0];
        let zs = [0.0, 1.0, 0.3, 0.5, 1.0, 0.0, 0.9];
        let sig = value(call(
            "sigmoid_cross_entropy_with_logits",
            vec![
                ("labels", t(DType::Float64, &[7], &zs)),
                ("logits", t(DType::Float64, &[7], &xs)),
            ],
        ));
        let pair_logits: Vec<f64> = xs.iter().flat_map(|&x| [x, 0.0]).collect();
        let pair_labels: Vec<f64> = zs.iter().flat_map(|&z| [z, 1.0 - z]).collect();
        let soft = value(call(
            "softmax_cross_entropy_with_logits",
            vec![
                ("labels", t(DType::Float64, &[7, 2], &pair_labels)),
                ("logits", t(DType::Float64, &[7, 2], &pair_logits)),
            ],
        ));
        assert_eq!(soft.shape(), &[7]);
        for (a, b) in sig.to_f64_vec().iter().zip(soft.to_f64_vec()) {
            assert!((a - b).abs() <= 1e-12 * (1.0 + a.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn float32_sigmoid_rounds_like_float32_arithmetic() {
        // x * z is rounded to float32 before the subtraction: with x = 1e4 the exact f64 answer
        // would be off by far more than float32 tolerances.
        let out = value(call(
            "sigmoid_cross_entropy_with_logits",
            vec![
                ("labels", t(DType::Float32, &[1], &[0.999_9])),
                ("logits", t(DType::Float32, &[1], &[1e4])),
            ],
        ));
        let z = 0.999_9f32;
        let expect = 1e4f32 - 1e4f32 * z;
        assert_eq!(out.dtype(), DType::Float32);
        assert_eq!(out.to_f64_vec()[0], expect as f64);
    }

    #[test]
    fn softmax_axis_moves_the_class_dimension() {
        let logits: Vec<f64> = (0..24).map(|i| (i as f64 * 0.37).sin()).collect();
        let labels: Vec<f64> = (0..24).map(|i| ((i * 7) % 5) as f64 / 4.0).collect();
        for (axis, shape) in [
            (0, vec![3, 4]),
            (1, vec![2, 4]),
            (2, vec![2, 3]),
            (-1, vec![2, 3]),
        ] {
            let out = value(call(
                "softmax_cross_entropy_with_logits",
                vec![
                    ("labels", t(DType::Float32, &[2, 3, 4], &labels)),
                    ("logits", t(DType::Float32, &[2, 3, 4], &logits)),
                    ("axis", Value::Int(axis)),
                ],
            ));
            assert_eq!(out.shape(), &shape[..], "axis {axis}");
        }
        // `_move_dim_to_end` builds range(axis): negative axes other than -1 fail.
        let o = call(
            "softmax_cross_entropy_with_logits",
            vec![
                ("labels", t(DType::Float32, &[2, 3, 4], &labels)),
                ("logits", t(DType::Float32, &[2, 3, 4], &logits)),
                ("axis", Value::Int(-2)),
            ],
        );
        assert_eq!(kind(o), ErrorKind::Argument);
    }

    #[test]
    fn softmax_labels_broadcast_but_logits_do_not() {
        let logits = t(DType::Float32, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, -1.0]);
        let row = t(DType::Float32, &[3], &[1.0, 0.0, 0.0]);
        let out = value(call(
            "softmax_cross_entropy_with_logits",
            vec![("labels", row.clone()), ("logits", logits.clone())],
        ));
        assert_eq!(out.shape(), &[2]);
        let o = call(
            "softmax_cross_entropy_with_logits",
            vec![
                ("labels", logits),
                ("logits", t(DType::Float32, &[3], &[1.0, 2.0, 3.0])),
            ],
        );
        assert_eq!(kind(o), ErrorKind::Shape);
    }

    #[test]
    fn softmax_half_precision_keeps_its_dtype() {
        let out = value(call(
            "softmax_cross_entropy_with_logits",
            vec![
                ("labels", t(DType::Float32, &[1, 2], &[1.0, 0.0])),
                ("logits", t(DType::Float16, &[1, 2], &[0.5, 1.5])),
            ],
        ));
        assert_eq!(out.dtype(), DType::Float16);
    }

    #[test]
    fn sparse_rejects_bad_labels_with_the_right_kind() {
        let logits = t(DType::Float32, &[2, 3], &[0.0; 6]);
        let cases = [
            (t(DType::Int64, &[2], &[0.0, 3.0]), ErrorKind::Value),
            (t(DType::Int32, &[2], &[-1.0, 0.0]), ErrorKind::Value),
            (t(DType::Float32, &[2], &[0.0, 1.0]), ErrorKind::Dtype),
            (t(DType::Uint8, &[2], &[0.0, 1.0]), ErrorKind::Dtype),
            (t(DType::Int64, &[3], &[0.0, 1.0, 2.0]), ErrorKind::Shape),
            (t(DType::Int64, &[2, 1], &[0.0, 1.0]), ErrorKind::Shape),
        ];
        for (labels, want) in cases {
            let o = call(
                "sparse_softmax_cross_entropy_with_logits",
                vec![("labels", labels), ("logits", logits.clone())],
            );
            assert_eq!(kind(o), want);
        }
        let no_classes = call(
            "sparse_softmax_cross_entropy_with_logits",
            vec![
                ("labels", t(DType::Int64, &[0], &[])),
                ("logits", t(DType::Float32, &[0, 0], &[])),
            ],
        );
        assert_eq!(kind(no_classes), ErrorKind::Shape);
    }

    #[test]
    fn sparse_matches_softmax_with_one_hot_labels() {
        let logits = [0.3, -1.2, 2.5, 0.0, 7.0, -3.0];
        let sparse = value(call(
            "sparse_softmax_cross_entropy_with_logits",
            vec![
                ("labels", t(DType::Int64, &[2], &[2.0, 0.0])),
                ("logits", t(DType::Float64, &[2, 3], &logits)),
            ],
        ));
        let dense = value(call(
            "softmax_cross_entropy_with_logits",
            vec![
                (
                    "labels",
                    t(DType::Float64, &[2, 3], &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0]),
                ),
                ("logits", t(DType::Float64, &[2, 3], &logits)),
            ],
        ));
        assert_eq!(sparse.shape(), dense.shape());
        for (a, b) in sparse.to_f64_vec().iter().zip(dense.to_f64_vec()) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }

    #[test]
    fn sigmoid_checks_shape_before_dtype_and_rejects_unknown_arguments() {
        let o = call(
            "sigmoid_cross_entropy_with_logits",
            vec![
                ("labels", t(DType::Float64, &[2], &[0.0, 1.0])),
                ("logits", t(DType::Float32, &[3], &[0.0; 3])),
            ],
        );
        assert_eq!(kind(o), ErrorKind::Shape);
        let o = call(
            "sigmoid_cross_entropy_with_logits",
            vec![
                ("labels", t(DType::Float64, &[2], &[0.0, 1.0])),
                ("logits", t(DType::Float32, &[2], &[0.0; 2])),
            ],
        );
        assert_eq!(kind(o), ErrorKind::Dtype);
        let o = call(
            "sigmoid_cross_entropy_with_logits",
            vec![
                ("labels", t(DType::Float32, &[2], &[0.0, 1.0])),
                ("logits", t(DType::Float32, &[2], &[0.0; 2])),
                ("name", Value::Str("loss".into())),
                ("dim", Value::Int(0)),
            ],
        );
        assert_eq!(kind(o), ErrorKind::Argument);
        for name in [Value::Str("loss".into()), Value::Null] {
            let o = call(
                "sigmoid_cross_entropy_with_logits",
                vec![
                    ("labels", t(DType::Float32, &[2], &[0.0, 1.0])),
                    ("logits", t(DType::Float32, &[2], &[0.0; 2])),
                    ("name", name),
                ],
            );
            assert_eq!(value(o).shape(), &[2]);
        }
    }
}
