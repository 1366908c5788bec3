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
use crate::backend::Gradients;
use crate::backend::{CallError, Value};
use crate::reference::gradient::Backward;
use crate::reference::GradientKernel;
use crate::tensor::{DType, Tensor};
use nd::{Fp, Nd};

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
pub const GRADIENTS: &[(&str, GradientKernel)] = &[
    (
        "tf.nn.sigmoid_cross_entropy_with_logits",
        sigmoid_cross_entropy_with_logits_backward,
    ),
    (
        "tf.nn.softmax_cross_entropy_with_logits",
        softmax_cross_entropy_with_logits_backward,
    ),
    (
        "tf.nn.sparse_softmax_cross_entropy_with_logits",
        sparse_softmax_cross_entropy_with_logits_backward,
    ),
];

/// TensorFlow's `AddN` of the gradient contributions one tensor received, in the order the
/// eager tape produced them: `((a + b) + c) + ...`, each addition rounded to `p` (Eigen's
/// half-precision sums round after every addition, so the order shows in float16/bfloat16).
///
/// The tape keeps ready ops in a queue (`op_stack.insert(begin)`, `pop_back`): the gradient
/// functions run breadth-first from the loss, inputs of one op in argument order. Each backward
/// kernel below lists its contributions in that order; measured on float16 against TF 2.21.
pub(crate) fn add_n(p: Fp, terms: &[f64]) -> f64 {
    let mut it = terms.iter();
    let first = it.next().copied().unwrap_or(0.0);
    it.fold(first, |acc, &x| p.r(acc + x))
}

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

/// The gradient of the composite `relu(x) - x * z + log1p(exp(where(x >= 0, -x, x)))`, op by op
/// in the logits' dtype as TensorFlow's registered gradients compute it (`Select`, `Mul`, `Sub`,
/// `Log1p`: `g * reciprocal(1 + e)`, `Exp`: `g * e`, `Neg`), summed in tape order:
/// `d logits = relu + (-g * z) + else-branch + (-neg-branch)`, `d labels = x * -g`.
/// At `x = 0` both the relu and the `-x` branch take the `x >= 0` side: `g - g z - g/2`.
fn sigmoid_cross_entropy_with_logits_backward(
    a: &Args,
    b: &Backward,
) -> Result<Gradients, CallError> {
    let labels = a.tensor("labels")?;
    let logits = a.tensor("logits")?;
    let dt = logits.dtype();
    let p = Fp(dt);
    let g = b.grad_output.to_f64_vec();
    let z = labels.to_f64_vec();
    let x = logits.to_f64_vec();
    let mut gx = Vec::with_capacity(x.len());
    let mut gz = Vec::with_capacity(x.len());
    for ((&x, &z), &g) in x.iter().zip(&z).zip(&g) {
        let ge = x >= 0.0;
        let neg_abs = if ge { -x } else { x };
        let e = p.exp(neg_abs);
        let g_e = p.r(g * p.r(1.0 / p.r(1.0 + e)));
        let g_n = p.r(g_e * e);
        let relu = if ge { g } else { 0.0 };
        let mul = p.r(-g * z);
        let (els, neg) = if ge { (0.0, -g_n) } else { (g_n, 0.0) };
        gx.push(add_n(p, &[relu, mul, els, neg]));
        gz.push(p.r(x * -g));
    }
    let mut out = Gradients::new();
    let shape = logits.shape().to_vec();
    out.insert("logits".into(), Nd::new(shape.clone(), gx).to_tensor(dt));
    out.insert("labels".into(), Nd::new(shape, gz).to_tensor(dt));
    Ok(out)
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

/// The inputs of the `SoftmaxCrossEntropyWithLogits` op as the Python wrapper prepares them:
/// cast to the working dtype, the class axis moved to the end, flattened to 2-D and broadcast.
struct SoftmaxRows {
    /// float32 for float16/bfloat16 logits (the wrapper casts), else the logits' dtype.
    work: DType,
    /// Labels and logits, `(n, c)` row-major after broadcasting.
    z: Vec<f64>,
    x: Vec<f64>,
    n: usize,
    c: usize,
    /// The labels' and logits' flattened `(rows, classes)` before broadcasting.
    labels_2d: (usize, usize),
    logits_2d: (usize, usize),
    /// Shapes after moving the class axis to the end (before flattening).
    labels_moved: Vec<usize>,
    logits_moved: Vec<usize>,
    /// The loss shape: the moved logits' shape without its last axis.
    out_shape: Vec<usize>,
}

fn softmax_rows(labels: &Tensor, logits: &Tensor, axis: i64) -> Result<SoftmaxRows, CallError> {
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
    let (labels_moved, logits_moved) = (z.shape.clone(), x.shape.clone());
    let zb = Nd::new(vec![nz, cz], z.data).broadcast_to(&[n, c]);
    let xb = Nd::new(vec![nx, cx], x.data).broadcast_to(&[n, c]);
    Ok(SoftmaxRows {
        work,
        z: zb.data,
        x: xb.data,
        n,
        c,
        labels_2d: (nz, cz),
        logits_2d: (nx, cx),
        labels_moved,
        logits_moved,
        out_shape,
    })
}

/// `tf.nn.softmax_cross_entropy_with_logits(labels, logits, axis)` on arrays: labels are cast to
/// the logits' working dtype; the result has the logits' dtype. Used by Keras' categorical
/// cross-entropy with `from_logits=True`.
pub(crate) fn softmax_xent(
    labels: &Tensor,
    logits: &Tensor,
    axis: i64,
) -> Result<Tensor, CallError> {
    let r = softmax_rows(labels, logits, axis)?;
    // No classes: log(0) = -inf is never used, every row sums zero terms.
    let cost = if r.c == 0 {
        vec![0.0; r.n]
    } else {
        softmax_xent_rows(Fp(r.work), &r.z, &r.x, r.c)
    };
    Ok(Nd::new(r.out_shape, cost).to_tensor(logits.dtype()))
}

/// Undoes `_move_dim_to_end`: the last axis of `a` goes back to position `axis` (`-1`: stays).
fn move_end_to_axis(a: Nd, axis: i64) -> Nd {
    let r = a.rank();
    if axis == -1 || axis as usize + 1 == r {
        return a;
    }
    let axis = axis as usize;
    let view = ndarray::ArrayViewD::from_shape(ndarray::IxDyn(&a.shape), &a.data)
        .expect("Nd invariant: data length is the product of the shape");
    // Moved position k holds original axis perm[k]; the inverse puts axis `axis` back.
    let perm: Vec<usize> = (0..r).filter(|&i| i != axis).chain([axis]).collect();
    let mut inv = vec![0; r];
    for (k, &orig) in perm.iter().enumerate() {
        inv[orig] = k;
    }
    let t = view.permuted_axes(ndarray::IxDyn(&inv));
    Nd::new(t.shape().to_vec(), t.iter().copied().collect())
}

/// The gradient of `SoftmaxCrossEntropyWithLogits` as TensorFlow registers it
/// (`nn_grad._SoftmaxCrossEntropyWithLogitsGrad`), in the working dtype (float32 for half
/// inputs, which the wrapper casts):
///
/// - logits: `g * backprop`, where `backprop` is the op's second output, computed by the fused
///   kernel (`xent_op.h`) as `exp(x - max) / sum(exp(x - max)) - labels`;
/// - labels: `g * -log_softmax(logits)` (the `LogSoftmax` kernel: `(x - max) - log(sum)`),
///   *not* the derivative of the forward formula's rounding.
///
/// Both have the broadcast `(rows, classes)` shape; a broadcast input then fails to reshape back
/// (`Input to reshape is a tensor with 6 values, but the requested shape has 3`), as in
/// TensorFlow. The gradients go back through the reshape and the axis transpose, then the cast
/// rounds them to each argument's dtype.
fn softmax_cross_entropy_with_logits_backward(
    a: &Args,
    b: &Backward,
) -> Result<Gradients, CallError> {
    let labels = a.tensor("labels")?;
    let logits = a.tensor("logits")?;
    let axis = a.opt_i64("axis", Some(-1))?.unwrap_or(-1);
    let r = softmax_rows(labels, logits, axis)?;
    let p = Fp(r.work);
    let g: Vec<f64> = b.grad_output.to_f64_vec().iter().map(|&v| p.r(v)).collect();
    let (mut gx, mut gz) = (vec![0.0; r.n * r.c], vec![0.0; r.n * r.c]);
    if r.c > 0 {
        for (i, x) in r.x.chunks(r.c).enumerate() {
            let m = if x.iter().any(|v| v.is_nan()) {
                f64::NAN
            } else {
                x.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            };
            let shifted: Vec<f64> = x.iter().map(|&v| p.r(v - m)).collect();
            let e: Vec<f64> = shifted.iter().map(|&s| p.exp(s)).collect();
            let sum = p.sum(&e);
            let log_sum = p.ln(sum);
            for j in 0..r.c {
                let k = i * r.c + j;
                let backprop = p.r(p.r(e[j] / sum) - r.z[k]);
                gx[k] = p.r(g[i] * backprop);
                gz[k] = p.r(g[i] * -p.r(shifted[j] - log_sum));
            }
        }
    }
    // The op broadcasts its inputs, but their gradients go back through the reshape that
    // flattened them, which fails for a broadcast input.
    let reshape = |(rows, cols): (usize, usize)| {
        if rows * cols != r.n * r.c {
            return Err(CallError::shape(format!(
                "Input to reshape is a tensor with {} values, but the requested shape has {}",
                r.n * r.c,
                rows * cols
            )));
        }
        Ok(())
    };
    let mut out = Gradients::new();
    if b.wants("logits") {
        reshape(r.logits_2d)?;
    }
    if b.wants("labels") {
        reshape(r.labels_2d)?;
        let gz = move_end_to_axis(Nd::new(r.labels_moved.clone(), gz), axis);
        out.insert("labels".into(), gz.to_tensor(r.work));
    }
    if !b.wants("logits") {
        return Ok(out);
    }
    let gx = move_end_to_axis(Nd::new(r.logits_moved.clone(), gx), axis);
    out.insert("logits".into(), gx.to_tensor(r.work));
    Ok(out)
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

/// The gradient of `SparseSoftmaxCrossEntropyWithLogits` w.r.t. the logits
/// (`nn_grad._SparseSoftmaxCrossEntropyWithLogitsGrad`): `g * backprop`, the op's second output,
/// which `sparse_xent_op.h` computes as `exp(x - max) / sum(exp(x - max)) - (j == label)` in the
/// working dtype (float32 for float16, which the wrapper casts; bfloat16 runs in bfloat16).
/// The labels have no gradient.
fn sparse_softmax_cross_entropy_with_logits_backward(
    a: &Args,
    b: &Backward,
) -> Result<Gradients, CallError> {
    let labels = a.tensor("labels")?.to_f64_vec();
    let logits = a.tensor("logits")?;
    let dt = logits.dtype();
    let work = if dt == DType::Float16 {
        DType::Float32
    } else {
        dt
    };
    let p = Fp(work);
    let c = *logits.shape().last().expect("checked by the forward");
    let g = b.grad_output.to_f64_vec();
    let mut gx = Vec::with_capacity(logits.numel());
    if c > 0 {
        for ((&l, x), &g) in labels.iter().zip(logits.to_f64_vec().chunks(c)).zip(&g) {
            let x: Vec<f64> = x.iter().map(|&v| p.r(v)).collect();
            let m = if x.iter().any(|v| v.is_nan()) {
                f64::NAN
            } else {
                x.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            };
            let e: Vec<f64> = x.iter().map(|&v| p.exp(p.r(v - m))).collect();
            let sum = p.sum(&e);
            for (j, &e) in e.iter().enumerate() {
                let one = if j as f64 == l { 1.0 } else { 0.0 };
                gx.push(p.r(p.r(g) * p.r(p.r(e / sum) - one)));
            }
        }
    }
    let mut out = Gradients::new();
    out.insert(
        "logits".into(),
        Nd::new(logits.shape().to_vec(), gx).to_tensor(work),
    );
    Ok(out)
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

    #[test]
    fn softmax_gradients_follow_the_registered_formulas_along_any_axis() {
        // nn_grad: d logits = g (softmax - labels), d labels = -g log_softmax (not zero, not
        // the chain rule of the forward's rounding); with axis = 0 both go back through the
        // transpose.
        let logits: Vec<f64> = (0..6).map(|i| (i as f64 * 0.9).sin() * 3.0).collect();
        let labels = [0.2, 0.5, 0.8, 0.5, 0.0, 0.0];
        let call = Call {
            api: "tf.nn.softmax_cross_entropy_with_logits".into(),
            args: [
                ("labels", t(DType::Float64, &[2, 3], &labels)),
                ("logits", t(DType::Float64, &[2, 3], &logits)),
                ("axis", Value::Int(0)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        };
        let g = [0.5, -1.0, 2.0];
        let go = crate::tensor::Tensor::from_f64(DType::Float64, vec![3], g.to_vec()).unwrap();
        let wrt = ["labels".to_string(), "logits".to_string()];
        let Outcome::Value(grads) = Reference.backward(&call, &wrt, Some(&go)) else {
            panic!("expected gradients");
        };
        let (gz, gx) = (grads["labels"].to_f64_vec(), grads["logits"].to_f64_vec());
        for col in 0..3 {
            let (a, b) = (logits[col], logits[3 + col]);
            let lse = a.max(b) + ((a - a.max(b)).exp() + (b - a.max(b)).exp()).ln();
            for (row, x) in [(0, a), (1, b)] {
                let k = row * 3 + col;
                let want_x = g[col] * ((x - lse).exp() - labels[k]);
                let want_z = -g[col] * (x - lse);
                assert!(
                    (gx[k] - want_x).abs() < 1e-12,
                    "logits {k}: {} vs {want_x}",
                    gx[k]
                );
                assert!(
                    (gz[k] - want_z).abs() < 1e-12,
                    "labels {k}: {} vs {want_z}",
                    gz[k]
                );
            }
        }
    }
}
