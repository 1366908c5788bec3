//! Reference kernels for `tf.keras.losses.BinaryFocalCrossentropy` and
//! `CategoricalFocalCrossentropy` (Keras 3.15.1, `binary_focal_crossentropy` and
//! `categorical_focal_crossentropy` in `keras/src/losses/losses.py`).
//!
//! Both run op by op in the loss dtype. The binary loss takes its cross-entropy term from the TF
//! backend's `binary_crossentropy`, which recovers the logits from a Keras sigmoid output (so the
//! term is unclipped from logits) while the focal factor uses the sigmoid output itself. The
//! categorical loss clips the (softmax) probabilities in every case, and its `alpha` may be a
//! per-class list or tensor whose dtype takes part in Keras' type promotion.

use super::reduction::{only_known, py_float, Common};
use super::{clip, reduce_axis_index, Inputs};
use crate::backend::{CallError, Value};
use crate::reference::tf_nn::nd::{canonical_axis, Fp, Nd};
use crate::reference::tf_nn::sigmoid_xent;
use crate::reference::GradientKernel;
use crate::reference::{Args, Kernel};
use crate::tensor::{DType, Tensor};

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[
    (
        "tf.keras.losses.BinaryFocalCrossentropy",
        binary_focal_crossentropy,
    ),
    (
        "tf.keras.losses.CategoricalFocalCrossentropy",
        categorical_focal_crossentropy,
    ),
];

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[];

/// Reads an `axis` argument that may be an int, a list of ints or None (`None` here: all axes).
pub(super) fn read_axes(
    a: &Args,
    name: &'static str,
    default: Option<Vec<i64>>,
) -> Result<Option<Vec<i64>>, CallError> {
    match a.get(name) {
        None => Ok(default),
        Some(Value::Null) => Ok(None),
        Some(Value::Int(i)) => Ok(Some(vec![*i])),
        Some(Value::Bool(b)) => Ok(Some(vec![i64::from(*b)])),
        Some(Value::IntList(v)) => Ok(Some(v.clone())),
        Some(v) => Err(CallError::argument(format!(
            "{}: argument '{name}' must be an int, a list of ints or None, got {}",
            a.api(),
            v.describe()
        ))),
    }
}

/// `tf.reduce_*(x, axis)` for a list of axes (`None`: every axis): `f` gets the reduced elements
/// in row-major order. Errors as TensorFlow's: a rank-0 input or an out-of-range axis is
/// "Invalid reduction dimension", a repeated axis "Axes contains duplicate dimension".
pub(super) fn reduce_axes(
    x: &Nd,
    axes: Option<&[i64]>,
    f: impl Fn(&[f64]) -> f64,
) -> Result<Nd, CallError> {
    let r = x.rank();
    let mut reduced = vec![false; r];
    match axes {
        None => reduced.iter_mut().for_each(|b| *b = true),
        Some(axes) => {
            for &axis in axes {
                let k = reduce_axis_index(x, axis)?;
                if reduced[k] {
                    return Err(CallError::argument(
                        "Invalid reduction arguments: Axes contains duplicate dimension",
                    ));
                }
                reduced[k] = true;
            }
        }
    }
    let kept: Vec<usize> = (0..r).filter(|&i| !reduced[i]).collect();
    let gone: Vec<usize> = (0..r).filter(|&i| reduced[i]).collect();
    let out_shape: Vec<usize> = kept.iter().map(|&i| x.shape[i]).collect();
    let strides: Vec<usize> = (0..r).map(|i| x.shape[i + 1..].iter().product()).collect();
    let n_out: usize = out_shape.iter().product();
    let n_in: usize = gone.iter().map(|&i| x.shape[i]).product();
    let mut out = Vec::with_capacity(n_out);
    let mut fibre = Vec::with_capacity(n_in);
    for o in 0..n_out {
        let mut base = 0;
        let mut rem = o;
        for (j, &i) in kept.iter().enumerate().rev() {
            base += (rem % out_shape[j]) * strides[i];
            rem /= out_shape[j];
        }
        fibre.clear();
        for g in 0..n_in {
            let mut off = base;
            let mut rem = g;
            for &i in gone.iter().rev() {
                off += (rem % x.shape[i]) * strides[i];
                rem /= x.shape[i];
            }
            fibre.push(x.data[off]);
        }
        out.push(f(&fibre));
    }
    Ok(Nd::new(out_shape, out))
}

/// `tf.pow` in working precision `p` (half precision goes through float32, as Eigen does).
pub(super) fn tf_pow(p: Fp, base: f64, exponent: f64) -> f64 {
    p.r(base.powf(exponent))
}

/// Eigen's float32 logistic: exactly 1 from about 16.6355 up (where its rational approximation
/// reaches 1), `exp(x)` below -9, with denormal results flushed to zero as TensorFlow's CPU
/// threads do. float64 is `e / (1 + e)`; half precision rounds the float32 result.
pub(super) fn tf_sigmoid(p: Fp, x: f64) -> f64 {
    let single = |x: f64| {
        let f = DType::Float32;
        if x.is_nan() {
            x
        } else if x >= 16.635_532 {
            1.0
        } else if x < -9.0 {
            let e = f.round(x.exp());
            if e < f32::MIN_POSITIVE as f64 {
                0.0
            } else {
                e
            }
        } else {
            f.round(1.0 / (1.0 + (-x).exp()))
        }
    };
    match p.0 {
        DType::Float64 => {
            let e = x.exp();
            if e == f64::INFINITY {
                1.0
            } else {
                e / (1.0 + e)
            }
        }
        _ => p.r(single(x)),
    }
}

fn binary_focal_crossentropy(a: &Args) -> Result<Tensor, CallError> {
    only_known(
        a,
        &[
            "apply_class_balancing",
            "alpha",
            "gamma",
            "from_logits",
            "label_smoothing",
            "axis",
        ],
    )?;
    let c = Common::read(a)?;
    let p = c.fp();
    let balance = a.bool_or("apply_class_balancing", false)?;
    let alpha = py_float(a, "alpha", 0.25)?;
    let gamma = p.r(py_float(a, "gamma", 2.0)?);
    let from_logits = a.bool_or("from_logits", false)?;
    let ls = py_float(a, "label_smoothing", 0.0)?;
    let axes = read_axes(a, "axis", Some(vec![-1]))?;
    let inp = Inputs::read(a, c)?;
    let mut target = inp.y_true.clone();
    if ls != 0.0 {
        let (keep, add) = (p.r(1.0 - ls), p.r(0.5 * ls));
        target = target.map(|t| p.r(p.r(t * keep) + add));
    }
    let x = &inp.y_pred;
    let output = if from_logits {
        x.map(|v| tf_sigmoid(p, v))
    } else {
        x.clone()
    };
    if target.rank() != output.rank() {
        return Err(CallError::shape(format!(
            "Arguments `target` and `output` must have the same rank (ndim). Received: target.shape={:?}, output.shape={:?}",
            target.shape, output.shape
        )));
    }
    if target.shape != output.shape {
        return Err(CallError::shape(format!(
            "Arguments `target` and `output` must have the same shape. Received: target.shape={:?}, output.shape={:?}",
            target.shape, output.shape
        )));
    }
    let bce = if from_logits {
        target.zip(x, |z, x| sigmoid_xent(p, z, x))?
    } else {
        target.zip(&output, |t, o| {
            let o = clip(p, o);
            let pos = p.r(t * p.ln(o));
            let neg = p.r(p.r(1.0 - t) * p.ln(p.r(1.0 - o)));
            -p.r(pos + neg)
        })?
    };
    let p_t = target.zip(&output, |t, y| {
        p.r(p.r(t * y) + p.r(p.r(1.0 - t) * p.r(1.0 - y)))
    })?;
    let mut focal = p_t.zip(&bce, |pt, b| p.r(tf_pow(p, p.r(1.0 - pt), gamma) * b))?;
    if balance {
        let (pos, neg) = (p.r(alpha), p.r(1.0 - alpha));
        let weight = target.map(|t| p.r(p.r(t * pos) + p.r(p.r(1.0 - t) * neg)));
        focal = weight.zip(&focal, |w, f| p.r(w * f))?;
    }
    let values = reduce_axes(&focal, axes.as_deref(), |f| p.mean(f))?;
    inp.finish(values, None, c)
}

/// Keras' `result_type` for the two float/int dtypes this loss can meet: the wider float, with
/// float16 and bfloat16 meeting at float32; an integer or boolean defers to the float.
fn result_type(a: DType, b: DType) -> DType {
    use DType::*;
    match (a.is_float(), b.is_float()) {
        (true, false) => a,
        (false, true) => b,
        (false, false) => a,
        (true, true) => match (a, b) {
            (x, y) if x == y => x,
            (Float64, _) | (_, Float64) => Float64,
            _ => Float32,
        },
    }
}

/// The `alpha` of the categorical loss: a Python number, or an array (a list becomes an int32
/// or float32 tensor) with the dtype it brings into the multiplication.
fn read_alpha(a: &Args, loss: DType) -> Result<(Nd, DType), CallError> {
    Ok(match a.get("alpha") {
        None => (Nd::scalar(0.25), loss),
        Some(Value::Tensor(t)) => (Nd::of(t), result_type(loss, t.dtype())),
        Some(Value::IntList(v)) => (
            Nd::new(vec![v.len()], v.iter().map(|&i| i as f64).collect()),
            loss,
        ),
        Some(_) => (Nd::scalar(py_float(a, "alpha", 0.25)?), loss),
    })
}

fn categorical_focal_crossentropy(a: &Args) -> Result<Tensor, CallError> {
    only_known(
        a,
        &["alpha", "gamma", "from_logits", "label_smoothing", "axis"],
    )?;
    let c = Common::read(a)?;
    let p = c.fp();
    let gamma = p.r(py_float(a, "gamma", 2.0)?);
    let from_logits = a.bool_or("from_logits", false)?;
    let ls = py_float(a, "label_smoothing", 0.0)?;
    let axis = match a.get("axis") {
        None => -1,
        Some(Value::Int(i)) => *i,
        Some(v) => {
            return Err(CallError::argument(format!(
                "`axis` must be of type `int`. Received: axis={}",
                v.describe()
            )))
        }
    };
    let (alpha, wdt) = read_alpha(a, c.dtype)?;
    let w = Fp(wdt);
    let alpha = alpha.map(|x| w.r(x));
    let inp = Inputs::read(a, c)?;
    let (mut target, mut y) = (inp.y_true.clone(), inp.y_pred.clone());
    if y.rank() == 0 {
        return Err(CallError::shape(
            "tuple index out of range (y_pred.shape[-1] of a scalar)",
        ));
    }
    if ls != 0.0 {
        let Some(&n) = target.shape.last() else {
            return Err(CallError::shape(
                "tuple index out of range (y_true.shape[-1] of a scalar)",
            ));
        };
        let (keep, add) = (p.r(1.0 - ls), p.r(p.r(ls) / n as f64));
        target = target.map(|t| p.r(p.r(t * keep) + add));
    }
    let k = canonical_axis(axis, y.rank()).ok_or_else(|| {
        CallError::argument(format!(
            "Invalid reduction dimension ({axis} for input with {} dimension(s)",
            y.rank()
        ))
    })?;
    if from_logits {
        y = y.map_axis(k, |f| softmax(p, f));
    }
    let output = y.map_axis(k, |f| {
        let s = p.sum(f);
        f.iter().map(|&v| clip(p, p.r(v / s))).collect()
    });
    let cce = target.zip(&output, |t, o| p.r(-t * p.ln(o)))?;
    let modulating = output.map(|o| tf_pow(p, p.r(1.0 - o), gamma));
    let weighting = modulating.zip(&alpha, |m, al| w.r(m * al))?;
    let focal = weighting.zip(&cce, |wf, ce| w.r(wf * ce))?;
    let kf = reduce_axis_index(&focal, axis)?;
    let values = focal
        .reduce_axis(kf, |f| w.sum(f))
        .map(|v| c.dtype.round(v));
    inp.finish(values, None, c)
}

/// TensorFlow's softmax kernel on one fibre: `exp(x - max) * (1 / sum)`.
fn softmax(p: Fp, x: &[f64]) -> Vec<f64> {
    let m = x.iter().copied().fold(f64::NEG_INFINITY, |a, b| {
        if a.is_nan() || b.is_nan() {
            f64::NAN
        } else {
            a.max(b)
        }
    });
    let e: Vec<f64> = x.iter().map(|&v| p.exp(p.r(v - m))).collect();
    let inv = p.r(1.0 / p.sum(&e));
    e.iter().map(|&v| p.r(v * inv)).collect()
}

#[cfg(test)]
pub(super) mod tests {
    use crate::backend::{Backend, Call, ErrorKind, Outcome, Value};
    use crate::reference::Reference;
    use crate::tensor::{DType, Tensor};

    pub(in crate::reference::keras) fn f32(shape: &[usize], data: &[f64]) -> Value {
        Value::Tensor(Tensor::from_f64(DType::Float32, shape.to_vec(), data.to_vec()).unwrap())
    }

    pub(in crate::reference::keras) fn call(class: &str, args: &[(&str, Value)]) -> Outcome {
        Reference.forward(&Call {
            api: format!("tf.keras.losses.{class}"),
            args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        })
    }

    pub(in crate::reference::keras) fn values(o: Outcome) -> Tensor {
        match o {
            Outcome::Value(t) => t,
            other => panic!("expected a value, got {other:?}"),
        }
    }

    pub(in crate::reference::keras) fn kind(o: Outcome) -> ErrorKind {
        match o {
            Outcome::Error(e) => e.kind,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    pub(in crate::reference::keras) fn close(a: &Tensor, b: &Tensor) {
        assert_eq!(a.shape(), b.shape());
        for (x, y) in a.to_f64_vec().iter().zip(b.to_f64_vec()) {
            assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    #[test]
    fn gamma_zero_is_cross_entropy() {
        let t = f32(&[2, 3], &[0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
        let p = f32(&[2, 3], &[0.05, 0.9, 0.05, 0.1, 0.85, 0.05]);
        let none = ("reduction", Value::Str("none".into()));
        let base = [("y_true", t), ("y_pred", p), none];
        let gamma0 = ("gamma", Value::Float(0.0));
        for from_logits in [false, true] {
            let fl = ("from_logits", Value::Bool(from_logits));
            let mut focal = base.to_vec();
            focal.extend([gamma0.clone(), fl.clone()]);
            let mut plain = base.to_vec();
            plain.push(fl.clone());
            let bfce = values(call("BinaryFocalCrossentropy", &focal));
            close(&bfce, &values(call("BinaryCrossentropy", &plain)));
            if !from_logits {
                focal.push(("alpha", Value::Float(1.0)));
                let cfce = values(call("CategoricalFocalCrossentropy", &focal));
                close(&cfce, &values(call("CategoricalCrossentropy", &plain)));
            }
        }
    }

    #[test]
    fn focusing_only_lowers_the_loss_of_probabilities() {
        let t = f32(&[1, 4], &[0.0, 1.0, 1.0, 0.0]);
        let p = f32(&[1, 4], &[0.2, 0.7, 0.4, 0.9]);
        let run = |gamma: f64| {
            values(call(
                "BinaryFocalCrossentropy",
                &[
                    ("y_true", t.clone()),
                    ("y_pred", p.clone()),
                    ("gamma", Value::Float(gamma)),
                ],
            ))
            .to_f64_vec()[0]
        };
        assert!(run(2.0) < run(1.0) && run(1.0) < run(0.0));
    }

    #[test]
    fn axes_shapes_and_errors() {
        let t = f32(&[2, 3], &[0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);
        let p = f32(&[2, 3], &[0.2, 0.5, 0.3, 0.1, 0.1, 0.8]);
        let with = |class: &str, extra: Vec<(&str, Value)>| {
            let mut args = vec![
                ("y_true", t.clone()),
                ("y_pred", p.clone()),
                ("reduction", Value::Str("none".into())),
            ];
            args.extend(extra);
            call(class, &args)
        };
        let axis0 = values(with(
            "BinaryFocalCrossentropy",
            vec![("axis", Value::Int(0))],
        ));
        assert_eq!(axis0.shape(), &[3]);
        let all = values(with("BinaryFocalCrossentropy", vec![("axis", Value::Null)]));
        assert_eq!(all.shape(), &[] as &[usize]);
        let list = values(with(
            "BinaryFocalCrossentropy",
            vec![("axis", Value::IntList(vec![0, 1]))],
        ));
        close(&all, &list);
        for class in ["BinaryFocalCrossentropy", "CategoricalFocalCrossentropy"] {
            let out = with(class, vec![("axis", Value::Int(2))]);
            assert_eq!(kind(out), ErrorKind::Argument, "{class}");
        }
        let bool_axis = with(
            "CategoricalFocalCrossentropy",
            vec![("axis", Value::Bool(true))],
        );
        assert_eq!(kind(bool_axis), ErrorKind::Argument);
        let alpha = with(
            "CategoricalFocalCrossentropy",
            vec![("alpha", Value::IntList(vec![1, 2]))],
        );
        assert_eq!(kind(alpha), ErrorKind::Shape);
        let short = call(
            "BinaryFocalCrossentropy",
            &[("y_true", t.clone()), ("y_pred", f32(&[2, 2], &[0.5; 4]))],
        );
        assert_eq!(kind(short), ErrorKind::Shape);
    }
}
