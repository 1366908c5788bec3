//! Reference kernels for `tf.keras.losses.*` classes (Keras 3.15.1 on the TensorFlow backend).
//!
//! A call's map holds the constructor options and the call arguments (`y_true`, `y_pred`,
//! `sample_weight`). As Keras does, inputs are cast to the loss dtype (float32 unless `dtype`
//! says otherwise) and everything is computed in it: the `1e-7` clipping bounds are float32
//! values (`1 - 1e-7` becomes `1 - 2^-23`) unless the loss dtype is float64.

pub mod circle;
pub mod cosine;
pub mod crossentropy_grad;
pub mod ctc;
pub mod focal;
pub mod generalized;
pub mod hinge;
pub mod overlap;
pub mod probabilistic;
pub mod reduction;
pub mod regression_extra;

use super::tf_nn::nd::{canonical_axis, Fp, Nd};
use super::tf_nn::{sigmoid_xent, softmax_xent, sparse_xent};
use super::{Args, Kernel};
use crate::backend::CallError;
use crate::backend::Gradients;
use crate::reference::{Backward, GradientKernel};
use crate::tensor::Tensor;
use reduction::{
    collect, mean_axis_backward, only_known, py_float, reduce_to, reduce_weighted,
    reduce_weighted_backward, squeeze_or_expand, tf_mean, tf_sum, Common, ReducedGrad,
};

/// Every gradient table of this framework: one per kernel module.
pub const GRADIENT_TABLES: &[&[(&str, GradientKernel)]] = &[
    GRADIENTS,
    circle::GRADIENTS,
    cosine::GRADIENTS,
    ctc::GRADIENTS,
    focal::GRADIENTS,
    generalized::GRADIENTS,
    hinge::GRADIENTS,
    overlap::GRADIENTS,
    probabilistic::GRADIENTS,
    regression_extra::GRADIENTS,
];

/// Every forward kernel table of this module.
pub const TABLES: &[&[(&str, Kernel)]] = &[
    KERNELS,
    circle::KERNELS,
    cosine::KERNELS,
    ctc::KERNELS,
    focal::KERNELS,
    generalized::KERNELS,
    hinge::KERNELS,
    overlap::KERNELS,
    probabilistic::KERNELS,
    regression_extra::KERNELS,
];

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[
    ("tf.keras.losses.BinaryCrossentropy", binary_crossentropy),
    (
        "tf.keras.losses.CategoricalCrossentropy",
        categorical_crossentropy,
    ),
    ("tf.keras.losses.Huber", huber),
    ("tf.keras.losses.MeanAbsoluteError", mean_absolute_error),
    ("tf.keras.losses.MeanSquaredError", mean_squared_error),
    (
        "tf.keras.losses.SparseCategoricalCrossentropy",
        sparse_categorical_crossentropy,
    ),
];

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[
    (
        "tf.keras.losses.BinaryCrossentropy",
        crossentropy_grad::binary_crossentropy_backward,
    ),
    (
        "tf.keras.losses.CategoricalCrossentropy",
        crossentropy_grad::categorical_crossentropy_backward,
    ),
    ("tf.keras.losses.Huber", huber_backward),
    (
        "tf.keras.losses.MeanAbsoluteError",
        mean_absolute_error_backward,
    ),
    (
        "tf.keras.losses.MeanSquaredError",
        mean_squared_error_backward,
    ),
    (
        "tf.keras.losses.SparseCategoricalCrossentropy",
        crossentropy_grad::sparse_categorical_crossentropy_backward,
    ),
];

/// Keras' `backend.epsilon()`.
const EPSILON: f64 = 1e-7;

/// The call arguments, cast to the loss dtype and aligned as `LossFunctionWrapper.call` does.
struct Inputs {
    y_true: Nd,
    y_pred: Nd,
    sample_weight: Option<Nd>,
}

impl Inputs {
    fn read(a: &Args, c: Common) -> Result<Inputs, CallError> {
        let y_true = Nd::cast(a.tensor("y_true")?, c.dtype);
        let y_pred = Nd::cast(a.tensor("y_pred")?, c.dtype);
        let sample_weight = a.opt_tensor("sample_weight")?.map(|t| Nd::cast(t, c.dtype));
        let (y_true, y_pred) = squeeze_or_expand(y_true, y_pred, true);
        Ok(Inputs {
            y_true,
            y_pred,
            sample_weight,
        })
    }

    fn finish(self, values: Nd, mask: Option<&Nd>, c: Common) -> Result<Tensor, CallError> {
        Ok(reduce_weighted(values, self.sample_weight, mask, c)?.to_tensor(c.dtype))
    }

    /// The backward of [`Inputs::finish`]: the gradients of the per-sample `values` and of the
    /// sample weight, for the request's `grad_output`.
    fn finish_backward(
        &self,
        values: &Nd,
        mask: Option<&Nd>,
        c: Common,
        b: &Backward,
    ) -> Result<ReducedGrad, CallError> {
        let grad = Nd::of(b.grad_output).map(|x| c.dtype.round(x));
        reduce_weighted_backward(values, self.sample_weight.as_ref(), mask, c, &grad)
    }
}

/// TensorFlow's `Sign`, the gradient of `Abs`: 0 at ±0, NaN for NaN.
pub(super) fn tf_sign(x: f64) -> f64 {
    if x == 0.0 || x.is_nan() {
        x
    } else {
        x.signum()
    }
}

/// `ops.mean(x, axis)` for a Python axis (`None`: over everything).
fn mean_axis(p: Fp, x: &Nd, axis: Option<i64>) -> Result<Nd, CallError> {
    let Some(axis) = axis else {
        return Ok(Nd::scalar(p.mean(&x.data)));
    };
    let k = reduce_axis_index(x, axis)?;
    Ok(x.reduce_axis(k, |f| p.mean(f)))
}

/// The index of a reduction axis; TensorFlow's "Invalid reduction dimension" otherwise.
fn reduce_axis_index(x: &Nd, axis: i64) -> Result<usize, CallError> {
    if x.rank() == 0 {
        return Err(CallError::shape(format!(
            "Invalid reduction dimension ({axis} for input with 0 dimension(s)"
        )));
    }
    canonical_axis(axis, x.rank()).ok_or_else(|| {
        CallError::argument(format!(
            "Invalid reduction dimension ({axis} for input with {} dimension(s)",
            x.rank()
        ))
    })
}

/// Shared body of the elementwise regression losses: `mean(f(y_true, y_pred), axis=-1)`.
fn elementwise(a: &Args, c: Common, f: impl Fn(f64, f64) -> f64) -> Result<Tensor, CallError> {
    let inp = Inputs::read(a, c)?;
    let terms = inp.y_true.zip(&inp.y_pred, f)?;
    let values = mean_axis(c.fp(), &terms, Some(-1))?;
    inp.finish(values, None, c)
}

/// How an elementwise loss folds its terms along the last axis.
#[derive(Clone, Copy, Debug)]
pub(super) enum Fold {
    /// `ops.mean(terms, axis=-1)`.
    Mean,
    /// `ops.sum(terms, axis=-1)`.
    Sum,
    /// `s * ops.mean(terms, axis=-1)` (MeanAbsolutePercentageError's `100.0 *`).
    MeanTimes(f64),
}

/// Backward of an elementwise loss `fold(f(y_true, y_pred), axis=-1)`: `df(t, y, g)` is the
/// gradient of one term `f(t, y)` with respect to `t` and `y` when the term's gradient is `g`
/// (TF's per-op formulas, rounded by `df`). Terms and the fold run in `w` (the loss dtype, or
/// float32 where a float32 constant promotes a float16 loss), the result is cast to the loss
/// dtype; terms are broadcast from the inputs, so their gradients are summed back.
pub(super) fn elementwise_backward(
    a: &Args,
    b: &Backward,
    c: Common,
    w: Fp,
    fold: Fold,
    f: impl Fn(f64, f64) -> f64,
    df: impl Fn(f64, f64, f64) -> (f64, f64),
) -> Result<Gradients, CallError> {
    let p = c.fp();
    let inp = Inputs::read(a, c)?;
    let terms = inp.y_true.zip(&inp.y_pred, f)?;
    let k = reduce_axis_index(&terms, -1)?;
    let values = terms.reduce_axis(k, |x| match fold {
        Fold::Mean => p.r(tf_mean(w, x)),
        Fold::Sum => p.r(tf_sum(w, x)),
        Fold::MeanTimes(s) => p.r(s * tf_mean(w, x)),
    });
    let red = inp.finish_backward(&values, None, c, b)?;
    let g_terms = match fold {
        Fold::Mean => mean_axis_backward(w, &terms.shape, k, &red.values),
        Fold::Sum => {
            let mut kept = terms.shape.clone();
            kept[k] = 1;
            Nd::new(kept, red.values.data.clone()).broadcast_to(&terms.shape)
        }
        Fold::MeanTimes(s) => {
            let g = red.values.map(|g| w.r(g * s));
            mean_axis_backward(w, &terms.shape, k, &g)
        }
    };
    let t = inp.y_true.broadcast_to(&terms.shape);
    let y = inp.y_pred.broadcast_to(&terms.shape);
    let both: Vec<(f64, f64)> = (0..terms.len())
        .map(|i| df(t.data[i], y.data[i], g_terms.data[i]))
        .collect();
    let part = |pick: fn(&(f64, f64)) -> f64, shape: &[usize]| {
        let g = Nd::new(terms.shape.clone(), both.iter().map(pick).collect());
        reduce_to(w, g, shape).map(|g| g.map(|x| p.r(x)))
    };
    let g_true = part(|g| g.0, &inp.y_true.shape)?;
    let g_pred = part(|g| g.1, &inp.y_pred.shape)?;
    collect(
        a,
        b,
        [
            ("y_true", Some(g_true)),
            ("y_pred", Some(g_pred)),
            ("sample_weight", red.sample_weight),
        ],
    )
}

fn mean_squared_error(a: &Args) -> Result<Tensor, CallError> {
    only_known(a, &[])?;
    let c = Common::read(a)?;
    let p = c.fp();
    elementwise(a, c, |t, y| {
        let d = p.r(t - y);
        p.r(d * d)
    })
}

fn mean_absolute_error(a: &Args) -> Result<Tensor, CallError> {
    only_known(a, &[])?;
    let c = Common::read(a)?;
    let p = c.fp();
    elementwise(a, c, |t, y| p.r(t - y).abs())
}

/// `square(y_true - y_pred)`: TF's `Square` gradient `g * (2 * d)`, then `Sub`'s `(g, -g)`.
fn mean_squared_error_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    only_known(a, &[])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let f = |t: f64, y: f64| {
        let d = p.r(t - y);
        p.r(d * d)
    };
    elementwise_backward(a, b, c, p, Fold::Mean, f, |t, y, g| {
        let gd = p.r(g * p.r(2.0 * p.r(t - y)));
        (gd, -gd)
    })
}

/// `abs(y_true - y_pred)`: TF's `Abs` gradient `g * sign(d)`, zero where `y_true == y_pred`.
fn mean_absolute_error_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    only_known(a, &[])?;
    let c = Common::read(a)?;
    let p = c.fp();
    elementwise_backward(
        a,
        b,
        c,
        p,
        Fold::Mean,
        |t, y| p.r(t - y).abs(),
        |t, y, g| {
            let gd = p.r(g * tf_sign(p.r(t - y)));
            (gd, -gd)
        },
    )
}

fn huber(a: &Args) -> Result<Tensor, CallError> {
    only_known(a, &["delta"])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let delta = p.r(py_float(a, "delta", 1.0)?);
    elementwise(a, c, |t, y| huber_term(p, delta, t, y))
}

/// One Huber term: `0.5 * e^2` where `|e| <= delta`, else `delta * |e| - 0.5 * delta^2`.
fn huber_term(p: Fp, delta: f64, t: f64, y: f64) -> f64 {
    let err = p.r(y - t);
    let abs = err.abs();
    if abs <= delta {
        p.r(0.5 * p.r(err * err))
    } else {
        p.r(p.r(delta * abs) - p.r(0.5 * p.r(delta * delta)))
    }
}

/// `where(|e| <= delta, 0.5 * square(e), delta * |e| - 0.5 * delta^2)` with `e = y_pred -
/// y_true`: TF's `SelectV2` gradient sends `g` to the chosen branch and an explicit zero to the
/// other, and both branches' gradients are added, so an infinite error (where the quadratic
/// branch's `0 * 2e` is NaN) gives NaN. At `|e| == delta` the quadratic branch is taken.
fn huber_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    only_known(a, &["delta"])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let delta = p.r(py_float(a, "delta", 1.0)?);
    let f = |t, y| huber_term(p, delta, t, y);
    elementwise_backward(a, b, c, p, Fold::Mean, f, |t, y, g| {
        let err = p.r(y - t);
        let (g_quad, g_lin) = if err.abs() <= delta {
            (g, 0.0)
        } else {
            (0.0, g)
        };
        let from_quad = p.r(p.r(g_quad * 0.5) * p.r(2.0 * err));
        let from_lin = p.r(p.r(g_lin * delta) * tf_sign(err));
        let ge = p.r(from_quad + from_lin);
        (-ge, ge)
    })
}

/// Both arrays must have the same rank and shape (`binary_crossentropy` and
/// `categorical_crossentropy` in the TensorFlow backend).
fn same_shape(target: &Nd, output: &Nd) -> Result<(), CallError> {
    if target.shape != output.shape {
        return Err(CallError::shape(format!(
            "Arguments `target` and `output` must have the same shape. Received: target.shape={:?}, output.shape={:?}",
            target.shape, output.shape
        )));
    }
    Ok(())
}

/// `clip_by_value(x, epsilon, 1 - epsilon)` with both bounds in the working dtype.
fn clip(p: Fp, x: f64) -> f64 {
    let (lo, hi) = (p.r(EPSILON), p.r(1.0 - EPSILON));
    if x.is_nan() {
        x
    } else {
        x.max(lo).min(hi)
    }
}

/// The target of the TF backend's `binary_crossentropy`: `y_true` smoothed towards 0.5 by
/// `label_smoothing` (`t * (1 - ls) + 0.5 ls` in the loss dtype), after its rank and shape
/// checks against `output`.
fn binary_target(p: Fp, y_true: &Nd, output: &Nd, ls: f64) -> Result<Nd, CallError> {
    let mut target = y_true.clone();
    if ls != 0.0 {
        let (keep, add) = (p.r(1.0 - ls), p.r(0.5 * ls));
        target = target.map(|t| p.r(p.r(t * keep) + add));
    }
    if target.rank() != output.rank() {
        return Err(CallError::shape(format!(
            "Arguments `target` and `output` must have the same rank (ndim). Received: target.shape={:?}, output.shape={:?}",
            target.shape, output.shape
        )));
    }
    same_shape(&target, output)?;
    Ok(target)
}

/// The arguments of `BinaryCrossentropy` and `CategoricalCrossentropy`, read alike by their
/// forward and backward kernels: `(common options, their Fp, from_logits, label_smoothing,
/// axis (default -1), the inputs cast to the loss dtype)`.
type CrossentropyArgs = (Common, Fp, bool, f64, Option<i64>, Inputs);

fn crossentropy_args(a: &Args) -> Result<CrossentropyArgs, CallError> {
    only_known(a, &["from_logits", "label_smoothing", "axis"])?;
    let c = Common::read(a)?;
    Ok((
        c,
        c.fp(),
        a.bool_or("from_logits", false)?,
        py_float(a, "label_smoothing", 0.0)?,
        a.opt_i64("axis", Some(-1))?,
        Inputs::read(a, c)?,
    ))
}

fn binary_crossentropy(a: &Args) -> Result<Tensor, CallError> {
    let (c, p, from_logits, ls, axis, inp) = crossentropy_args(a)?;
    let target = binary_target(p, &inp.y_true, &inp.y_pred, ls)?;
    let output = &inp.y_pred;
    let terms = if from_logits {
        target.zip(output, |z, x| sigmoid_xent(p, z, x))?
    } else {
        target.zip(output, |t, o| {
            let o = clip(p, o);
            let pos = p.r(t * p.ln(o));
            let neg = p.r(p.r(1.0 - t) * p.ln(p.r(1.0 - o)));
            -p.r(pos + neg)
        })?
    };
    let values = mean_axis(p, &terms, axis)?;
    inp.finish(values, None, c)
}

fn categorical_crossentropy(a: &Args) -> Result<Tensor, CallError> {
    let (c, p, from_logits, ls, axis, inp) = crossentropy_args(a)?;
    let (mut target, output) = (inp.y_true.clone(), &inp.y_pred);
    if output.rank() == 0 {
        return Err(CallError::shape(
            "categorical_crossentropy: y_pred must be at least rank 1, got a scalar",
        ));
    }
    if ls != 0.0 {
        // The number of classes is always the last axis, whatever `axis` says.
        let Some(&n) = target.shape.last() else {
            return Err(CallError::shape(
                "categorical_crossentropy: label smoothing needs y_true of rank >= 1",
            ));
        };
        let (keep, add) = (p.r(1.0 - ls), p.r(p.r(ls) / p.r(n as f64)));
        target = target.map(|t| p.r(p.r(t * keep) + add));
    }
    if target.rank() != output.rank() {
        return Err(CallError::shape(format!(
            "Arguments `target` and `output` must have the same rank (ndim). Received: target.shape={:?}, output.shape={:?}",
            target.shape, output.shape
        )));
    }
    same_shape(&target, output)?;
    let values = if from_logits {
        let out = softmax_xent(
            &target.to_tensor(c.dtype),
            &output.to_tensor(c.dtype),
            axis.unwrap_or(-1),
        )?;
        Nd::of(&out)
    } else {
        let xent = |z: &[f64], o: &[f64]| {
            let s = p.sum(o);
            let terms: Vec<f64> = z
                .iter()
                .zip(o)
                .map(|(&z, &o)| p.r(z * p.ln(clip(p, p.r(o / s)))))
                .collect();
            -p.sum(&terms)
        };
        match axis {
            None => Nd::scalar(xent(&target.data, &output.data)),
            Some(axis) => {
                let k = reduce_axis_index(output, axis)?;
                // Pair each fibre of the target with the same fibre of the output.
                let n = output.shape[k];
                let both = Nd::new(
                    {
                        let mut s = output.shape.clone();
                        s[k] = 2 * n;
                        s
                    },
                    interleave_axis(&target, output, k),
                );
                both.reduce_axis(k, |f| xent(&f[..n], &f[n..]))
            }
        }
    };
    inp.finish(values, None, c)
}

/// Concatenates `a` and `b` (same shape) along axis `k`.
fn interleave_axis(a: &Nd, b: &Nd, k: usize) -> Vec<f64> {
    let outer: usize = a.shape[..k].iter().product();
    let chunk: usize = a.shape[k..].iter().product();
    let mut out = Vec::with_capacity(2 * a.len());
    for o in 0..outer {
        out.extend_from_slice(&a.data[o * chunk..(o + 1) * chunk]);
        out.extend_from_slice(&b.data[o * chunk..(o + 1) * chunk]);
    }
    out
}

/// `tf.cast(float, int64)` on x86: NaN, infinities and out-of-range values become `i64::MIN`.
fn cast_to_int64(x: f64) -> f64 {
    if x.is_finite() && x.abs() < 9.2e18 {
        x.trunc()
    } else {
        i64::MIN as f64
    }
}

fn sparse_categorical_crossentropy(a: &Args) -> Result<Tensor, CallError> {
    only_known(a, &["from_logits", "ignore_class", "axis"])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let from_logits = a.bool_or("from_logits", false)?;
    let ignore_class = a.opt_f64("ignore_class", None)?;
    let axis = a.i64_or("axis", -1)?;
    let inp = Inputs::read(a, c)?;
    let (mut y_true, mut y_pred) = (inp.y_true.clone(), inp.y_pred.clone());
    if y_true.rank() == y_pred.rank() {
        if y_pred.rank() == 0 {
            return Err(CallError::shape(
                "sparse_categorical_crossentropy: y_pred is a scalar (after squeezing a size-1 class axis)",
            ));
        }
        let k = canonical_axis(axis, y_true.rank()).ok_or_else(|| {
            CallError::argument(format!(
                "sparse_categorical_crossentropy: axis {axis} is out of range"
            ))
        })?;
        if y_true.shape[k] == 1 {
            y_true.shape.remove(k);
        }
    }
    let mut valid = None;
    if let Some(ignore) = ignore_class {
        let k = canonical_axis(axis, y_pred.rank()).ok_or_else(|| {
            CallError::argument(format!(
                "sparse_categorical_crossentropy: axis {axis} is out of range"
            ))
        })?;
        let mut res_shape = y_pred.shape.clone();
        res_shape.remove(k);
        let ignore = p.r(ignore);
        let mask = y_true.map(|t| if t != ignore { 1.0 } else { 0.0 });
        y_true = y_true.zip(&mask, |t, m| if m != 0.0 { t } else { 0.0 })?;
        let expanded = if axis < 0 {
            let at = (axis + mask.rank() as i64 + 1).max(0) as usize;
            mask.clone().expand(at.min(mask.rank()))
        } else {
            mask.clone().expand((axis as usize).min(mask.rank()))
        };
        y_pred = expanded.zip(&y_pred, |m, y| if m != 0.0 { y } else { 0.0 })?;
        valid = Some((mask, res_shape));
    }
    // The TensorFlow backend.
    if axis != -1 && axis != y_pred.rank() as i64 - 1 {
        return Err(CallError::argument(format!(
            "Only axis=-1 is currently supported. Received: axis={axis}"
        )));
    }
    let mut target = y_true.map(cast_to_int64);
    if target.rank() == y_pred.rank() && target.shape.last() == Some(&1) {
        target = target.squeeze_last();
    }
    if y_pred.rank() < 1 {
        return Err(CallError::shape(
            "Argument `output` must be at least rank 1.",
        ));
    }
    if !from_logits {
        y_pred = y_pred.map(|o| p.ln(clip(p, o)));
    }
    let mut res = sparse_xent(&target, &y_pred, c.dtype)?;
    let mut mask = None;
    if let Some((valid, res_shape)) = valid {
        if valid.len() != res_shape.iter().product::<usize>() {
            return Err(CallError::shape(format!(
                "Input to reshape is a tensor with {} values, but the requested shape is {res_shape:?}",
                valid.len()
            )));
        }
        let valid = valid.reshape(res_shape);
        res = res.zip(&valid, |r, m| if m != 0.0 { r } else { 0.0 })?;
        mask = Some(valid);
    }
    inp.finish(res, mask.as_ref(), c)
}

#[cfg(test)]
mod tests {
    use crate::backend::{Backend, Call, ErrorKind, Outcome, Value};
    use crate::reference::testing::{kind, t, value};
    use crate::reference::Reference;
    use crate::tensor::DType;

    fn f32(shape: &[usize], data: &[f64]) -> Value {
        t(DType::Float32, shape, data)
    }

    fn call(class: &str, args: Vec<(&str, Value)>) -> Outcome {
        let call = Call {
            api: format!("tf.keras.losses.{class}"),
            args: args.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        Reference.forward(&call)
    }

    fn scalar(o: Outcome) -> f64 {
        let t = value(o);
        assert_eq!(t.shape(), &[] as &[usize]);
        t.to_f64_vec()[0]
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-5 * (1.0 + a.abs())
    }

    const CLASSES: [&str; 6] = [
        "MeanSquaredError",
        "MeanAbsoluteError",
        "Huber",
        "BinaryCrossentropy",
        "CategoricalCrossentropy",
        "SparseCategoricalCrossentropy",
    ];

    fn inputs(class: &str) -> Vec<(&'static str, Value)> {
        let probs = [0.2, 0.5, 0.3, 0.1, 0.1, 0.8, 0.6, 0.3, 0.1];
        let y_true = if class == "SparseCategoricalCrossentropy" {
            t(DType::Int64, &[3], &[1.0, 2.0, 0.0])
        } else {
            f32(&[3, 3], &[0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
        };
        vec![("y_true", y_true), ("y_pred", f32(&[3, 3], &probs))]
    }

    #[test]
    fn reductions_relate_as_documented() {
        for class in CLASSES {
            let with = |extra: Vec<(&'static str, Value)>| {
                let mut args = inputs(class);
                args.extend(extra);
                call(class, args)
            };
            let none = value(with(vec![("reduction", Value::Str("none".into()))]));
            assert_eq!(none.shape(), &[3], "{class}");
            assert_eq!(none.dtype(), DType::Float32);
            let null = value(with(vec![("reduction", Value::Null)]));
            assert_eq!(none, null, "{class}: None and 'none' agree");
            let sum = scalar(with(vec![("reduction", Value::Str("sum".into()))]));
            let total: f64 = none.to_f64_vec().iter().sum();
            assert!(close(sum, total), "{class}: {sum} vs {total}");
            let default = scalar(with(vec![]));
            let mean = scalar(with(vec![("reduction", Value::Str("mean".into()))]));
            assert!(close(default, sum / 3.0) && default == mean, "{class}");
            // With weights, 'mean_with_sample_weight' divides by their sum.
            let w = f32(&[3], &[1.0, 2.0, 0.5]);
            let weighted_sum = scalar(with(vec![
                ("reduction", Value::Str("sum".into())),
                ("sample_weight", w.clone()),
            ]));
            let mws = scalar(with(vec![
                ("reduction", Value::Str("mean_with_sample_weight".into())),
                ("sample_weight", w.clone()),
            ]));
            assert!(close(mws, weighted_sum / 3.5), "{class}: {mws}");
            // (N,) and (N, 1) weights are the same thing.
            let column = scalar(with(vec![(
                "sample_weight",
                f32(&[3, 1], &[1.0, 2.0, 0.5]),
            )]));
            let flat = scalar(with(vec![("sample_weight", w)]));
            assert_eq!(column, flat, "{class}");
            let bad = with(vec![("reduction", Value::Str("batchmean".into()))]);
            assert_eq!(kind(bad), ErrorKind::Argument, "{class}");
            let unknown = with(vec![("weight", f32(&[3], &[1.0; 3]))]);
            assert_eq!(kind(unknown), ErrorKind::Argument, "{class}");
        }
    }

    #[test]
    fn loss_dtype_sets_the_output_dtype() {
        for class in CLASSES {
            let mut args = inputs(class);
            args.push(("dtype", Value::Str("float64".into())));
            assert_eq!(value(call(class, args)).dtype(), DType::Float64, "{class}");
            let mut args = inputs(class);
            args.push(("dtype", Value::Str("mixed_float16".into())));
            assert_eq!(value(call(class, args)).dtype(), DType::Float16, "{class}");
        }
    }

    #[test]
    fn rank_one_and_empty_values_are_never_reduced() {
        // mean over the last axis leaves a scalar, returned as is even for reduction='none'.
        let o = call(
            "MeanSquaredError",
            vec![
                ("y_true", f32(&[2], &[1.0, 2.0])),
                ("y_pred", f32(&[2], &[0.0, 0.0])),
                ("reduction", Value::Str("none".into())),
            ],
        );
        assert_eq!(value(o).shape(), &[] as &[usize]);
        // An empty batch gives per-sample losses of shape (0,), returned as is even for 'sum'.
        let o = call(
            "MeanSquaredError",
            vec![
                ("y_true", f32(&[0, 3], &[])),
                ("y_pred", f32(&[0, 3], &[])),
                ("reduction", Value::Str("sum".into())),
            ],
        );
        assert_eq!(value(o).shape(), &[0]);
        // mean over an empty last axis is NaN.
        let o = call(
            "MeanAbsoluteError",
            vec![("y_true", f32(&[0], &[])), ("y_pred", f32(&[0], &[]))],
        );
        assert!(scalar(o).is_nan());
    }

    #[test]
    fn probability_losses_clip_in_the_loss_dtype() {
        let bce = |dtype: &str| {
            scalar(call(
                "BinaryCrossentropy",
                vec![
                    ("y_true", f32(&[1, 1], &[0.0])),
                    ("y_pred", f32(&[1, 1], &[1.0])),
                    ("dtype", Value::Str(dtype.into())),
                ],
            ))
        };
        // -log(1 - clip(1)) is finite; its size depends on how 1 - 1e-7 rounds.
        let (single, double) = (bce("float32"), bce("float64"));
        assert!(single.is_finite() && double.is_finite());
        assert!((single - double).abs() > 0.1, "{single} vs {double}");
        // Probabilities are renormalised along the class axis.
        let cce = |p: &[f64]| {
            scalar(call(
                "CategoricalCrossentropy",
                vec![
                    ("y_true", f32(&[1, 3], &[0.0, 1.0, 0.0])),
                    ("y_pred", f32(&[1, 3], p)),
                ],
            ))
        };
        assert!(close(cce(&[0.2, 0.5, 0.3]), cce(&[2.0, 5.0, 3.0])));
    }

    #[test]
    fn from_logits_agrees_with_probabilities() {
        let logits = [0.3, -1.0, 2.0, 0.5, 0.5, -2.0];
        let probs: Vec<f64> = logits
            .chunks(3)
            .flat_map(|r| {
                let s: f64 = r.iter().map(|x| f64::exp(*x)).sum();
                r.iter().map(move |x| x.exp() / s).collect::<Vec<_>>()
            })
            .collect();
        let y = t(DType::Float64, &[2, 3], &[0.0, 0.0, 1.0, 0.2, 0.3, 0.5]);
        let run = |p: &[f64], from_logits: bool| {
            scalar(call(
                "CategoricalCrossentropy",
                vec![
                    ("y_true", y.clone()),
                    ("y_pred", t(DType::Float64, &[2, 3], p)),
                    ("from_logits", Value::Bool(from_logits)),
                    ("dtype", Value::Str("float64".into())),
                    ("label_smoothing", Value::Float(0.1)),
                ],
            ))
        };
        let (a, b) = (run(&logits, true), run(&probs, false));
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    #[test]
    fn sparse_ignore_class_and_label_errors() {
        let p = f32(&[2, 3], &[0.2, 0.5, 0.3, 0.1, 0.1, 0.8]);
        let run = |labels: Value, extra: Vec<(&'static str, Value)>| {
            let mut args = vec![("y_true", labels), ("y_pred", p.clone())];
            args.extend(extra);
            call("SparseCategoricalCrossentropy", args)
        };
        let all_ignored = run(
            t(DType::Int64, &[2], &[2.0, 2.0]),
            vec![("ignore_class", Value::Int(2))],
        );
        assert_eq!(scalar(all_ignored), 0.0);
        // One of two ignored: the mean is over the valid entry only.
        let one = scalar(run(
            t(DType::Int64, &[2], &[1.0, 2.0]),
            vec![("ignore_class", Value::Int(2))],
        ));
        let alone = value(run(
            t(DType::Int64, &[2], &[1.0, 2.0]),
            vec![("reduction", Value::Str("none".into()))],
        ));
        assert!(close(one, alone.to_f64_vec()[0]));
        let out_of_range = run(t(DType::Int64, &[2], &[1.0, 3.0]), vec![]);
        assert_eq!(kind(out_of_range), ErrorKind::Value);
        let negative = run(t(DType::Int32, &[2], &[-1.0, 0.0]), vec![]);
        assert_eq!(kind(negative), ErrorKind::Value);
        let axis = run(
            t(DType::Int64, &[2], &[1.0, 0.0]),
            vec![("axis", Value::Int(0))],
        );
        assert_eq!(kind(axis), ErrorKind::Argument);
        let shape = run(t(DType::Int64, &[3], &[1.0, 0.0, 0.0]), vec![]);
        assert_eq!(kind(shape), ErrorKind::Shape);
    }

    #[test]
    fn mismatched_shapes_are_shape_errors() {
        let o = call(
            "BinaryCrossentropy",
            vec![
                ("y_true", f32(&[2, 3], &[0.0; 6])),
                ("y_pred", f32(&[2, 2], &[0.5; 4])),
            ],
        );
        assert_eq!(kind(o), ErrorKind::Shape);
        let o = call(
            "MeanSquaredError",
            vec![
                ("y_true", f32(&[2, 3], &[0.0; 6])),
                ("y_pred", f32(&[2], &[0.5; 2])),
            ],
        );
        assert_eq!(kind(o), ErrorKind::Shape);
        let o = call(
            "MeanSquaredError",
            vec![
                ("y_true", f32(&[2, 3], &[0.0; 6])),
                ("y_pred", f32(&[2, 3], &[0.5; 6])),
                ("sample_weight", f32(&[3], &[1.0; 3])),
            ],
        );
        assert_eq!(kind(o), ErrorKind::Shape);
    }
}
