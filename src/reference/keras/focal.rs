//! Reference kernels for `tf.keras.losses.BinaryFocalCrossentropy` and
//! `CategoricalFocalCrossentropy` (Keras 3.15.1, `binary_focal_crossentropy` and
//! `categorical_focal_crossentropy` in `keras/src/losses/losses.py`).
//!
//! Both run op by op in the loss dtype. The binary loss takes its cross-entropy term from the TF
//! backend's `binary_crossentropy`, which recovers the logits from a Keras sigmoid output (so the
//! term is unclipped from logits) while the focal factor uses the sigmoid output itself. The
//! categorical loss clips the (softmax) probabilities in every case, and its `alpha` may be a
//! per-class list or tensor whose dtype takes part in Keras' type promotion.

use super::crossentropy_grad::{clip_pass, log_grad, sigmoid_xent_backward};
use super::reduction::{
    collect, mean_axes_backward, only_known, py_float, reduce_to, tf_mean, tf_sum, Common,
};
use super::{binary_target, clip, reduce_axis_index, Inputs};
use crate::backend::{CallError, Gradients, Value};
use crate::reference::tf_nn::nd::{canonical_axis, Fp, Nd};
use crate::reference::tf_nn::sigmoid_xent;
use crate::reference::Backward;
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
pub const GRADIENTS: &[(&str, GradientKernel)] = &[
    (
        "tf.keras.losses.BinaryFocalCrossentropy",
        binary_focal_crossentropy_backward,
    ),
    (
        "tf.keras.losses.CategoricalFocalCrossentropy",
        categorical_focal_crossentropy_backward,
    ),
];

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

/// Which axes of `x` a `tf.reduce_*(x, axes)` reduces (`None`: all), with TensorFlow's errors:
/// a rank-0 input or an out-of-range axis is "Invalid reduction dimension", a repeated axis
/// "Axes contains duplicate dimension".
fn reduced_axes(x: &Nd, axes: Option<&[i64]>) -> Result<Vec<bool>, CallError> {
    let mut reduced = vec![false; x.rank()];
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
    Ok(reduced)
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
    let reduced = reduced_axes(x, axes)?;
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
/// threads do. float64 is `e / (1 + e)`. float16/bfloat16 run Eigen's generic logistic,
/// `e / (1 + e)` with `e = exp(x)` and every op rounded to the half dtype (1 where `e` is
/// infinite; a float32-denormal `exp` flushed to 0): measured on TF 2.21 to match all of 6000
/// random float16 and bfloat16 inputs in [-100, 100], where rounding the float32 logistic misses
/// 1 in 10.
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
        DType::Float16 | DType::Bfloat16 => {
            let e = DType::Float32.round(x.exp());
            let e = p.r(if e.abs() < f32::MIN_POSITIVE as f64 {
                0.0
            } else {
                e
            });
            if e == f64::INFINITY {
                1.0
            } else {
                p.r(e / p.r(1.0 + e))
            }
        }
        _ => p.r(single(x)),
    }
}

/// The options of `BinaryFocalCrossentropy`, read the same way by the forward and the backward.
struct BinaryFocal {
    c: Common,
    balance: bool,
    alpha: f64,
    /// `gamma` as the `Pow` op sees it: a tensor of the loss dtype.
    gamma: f64,
    from_logits: bool,
    label_smoothing: f64,
    axes: Option<Vec<i64>>,
}

impl BinaryFocal {
    fn read(a: &Args) -> Result<BinaryFocal, CallError> {
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
        Ok(BinaryFocal {
            c,
            balance: a.bool_or("apply_class_balancing", false)?,
            alpha: py_float(a, "alpha", 0.25)?,
            gamma: c.fp().r(py_float(a, "gamma", 2.0)?),
            from_logits: a.bool_or("from_logits", false)?,
            label_smoothing: py_float(a, "label_smoothing", 0.0)?,
            axes: read_axes(a, "axis", Some(vec![-1]))?,
        })
    }

    /// `1 - label_smoothing`, the factor between the smoothed and the given labels.
    fn keep(&self) -> f64 {
        self.c.fp().r(1.0 - self.label_smoothing)
    }

    /// The inputs and the (smoothed) target, after the backend's rank and shape checks.
    fn inputs(&self, a: &Args) -> Result<(Inputs, Nd), CallError> {
        let inp = Inputs::read(a, self.c)?;
        let target = binary_target(self.c.fp(), &inp.y_true, &inp.y_pred, self.label_smoothing)?;
        Ok((inp, target))
    }

    /// `apply_class_balancing`'s constants `alpha` and `1 - alpha` in the loss dtype.
    fn class_weights(&self) -> (f64, f64) {
        let p = self.c.fp();
        (p.r(self.alpha), p.r(1.0 - self.alpha))
    }

    /// One element's forward intermediates: `(output, 1 - target, 1 - output, bce, 1 - p_t,
    /// focal factor)`, `output` being the sigmoid of `x` from logits.
    fn parts(&self, t: f64, x: f64) -> [f64; 6] {
        let p = self.c.fp();
        let (y, bce) = if self.from_logits {
            // The backend's binary_crossentropy finds the sigmoid's `_keras_logits` and takes
            // the cross-entropy from them.
            (tf_sigmoid(p, x), sigmoid_xent(p, t, x))
        } else {
            let o = clip(p, x);
            let pos = p.r(t * p.ln(o));
            let neg = p.r(p.r(1.0 - t) * p.ln(p.r(1.0 - o)));
            (x, -p.r(pos + neg))
        };
        let (nt, ny) = (p.r(1.0 - t), p.r(1.0 - y));
        let p_t = p.r(p.r(t * y) + p.r(nt * ny));
        let u = p.r(1.0 - p_t);
        [y, nt, ny, bce, u, tf_pow(p, u, self.gamma)]
    }

    /// One element of `focal_bce` (times the class weight when balancing).
    fn term(&self, t: f64, x: f64) -> f64 {
        let p = self.c.fp();
        let [_, nt, _, bce, _, factor] = self.parts(t, x);
        let focal = p.r(factor * bce);
        if self.balance {
            let (pos, neg) = self.class_weights();
            p.r(p.r(p.r(t * pos) + p.r(nt * neg)) * focal)
        } else {
            focal
        }
    }

    /// The gradients `(d target, d y_pred)` of one [`BinaryFocal::term`] whose gradient is `g`,
    /// op by op with TF's registered gradients (`Mul`: `g * other`; `Sub`: `g, -g`; `Pow`:
    /// `g * gamma * pow(x, gamma - 1)`; `Sigmoid`: `g * y * (1 - y)`; the clipped logs and
    /// `sigmoid_cross_entropy_with_logits` as for `BinaryCrossentropy`).
    ///
    /// A tensor used by several ops gets the sum of their gradients, which the eager tape adds
    /// with one `AddN` (left to right, rounding each time) in the order it ran their backward
    /// functions: first-in first-out from the loss, an op being queued once every consumer of its
    /// outputs has run. Measured on TF 2.21 (logging the tape's aggregation calls): the target's
    /// terms come as class weight (`t * alpha`, `1 - t`), cross-entropy (`t * log(o)`), `t * y`
    /// of `p_t`, cross-entropy `1 - t`, `p_t`'s `1 - t`; the probabilities' as `t * y`, `1 - y`,
    /// the clip; logits' as the cross-entropy's own three, then the sigmoid's.
    fn term_backward(&self, t: f64, x: f64, g: f64) -> (f64, f64) {
        let p = self.c.fp();
        let [y, nt, ny, bce, u, factor] = self.parts(t, x);
        let mut g_target = Vec::with_capacity(6);
        let g_focal = if self.balance {
            let (pos, neg) = self.class_weights();
            let weight = p.r(p.r(t * pos) + p.r(nt * neg));
            let g_weight = p.r(g * p.r(factor * bce));
            g_target.push(p.r(g_weight * pos));
            g_target.push(-p.r(g_weight * neg));
            p.r(g * weight)
        } else {
            g
        };
        let g_factor = p.r(g_focal * bce);
        let g_bce = p.r(g_focal * factor);
        let g_u = p.r(p.r(g_factor * self.gamma) * tf_pow(p, u, p.r(self.gamma - 1.0)));
        let g_pt = -g_u;
        // p_t = t * y + (1 - t) * (1 - y)
        let (t_from_ty, y_from_ty) = (p.r(g_pt * y), p.r(g_pt * t));
        let (t_from_nt, y_from_ny) = (-p.r(g_pt * ny), -p.r(g_pt * nt));
        let g_x = if self.from_logits {
            let (t_from_bce, x_from_bce) = sigmoid_xent_backward(p, t, x, g_bce);
            g_target.extend([t_from_bce, t_from_ty, t_from_nt]);
            let g_y = p.r(y_from_ty + y_from_ny);
            p.r(x_from_bce + p.r(p.r(g_y * y) * p.r(1.0 - y)))
        } else {
            // -(t * log(o) + (1 - t) * log(1 - o)), o = clip(y_pred)
            let gb = -g_bce;
            let o = clip(p, x);
            let one_minus_o = p.r(1.0 - o);
            let g_o = p.r(log_grad(p, o, p.r(gb * t)) - log_grad(p, one_minus_o, p.r(gb * nt)));
            g_target.extend([
                p.r(gb * p.ln(o)),
                t_from_ty,
                -p.r(gb * p.ln(one_minus_o)),
                t_from_nt,
            ]);
            add_n(p, &[y_from_ty, y_from_ny, clip_pass(p, x, g_o)])
        };
        (add_n(p, &g_target), g_x)
    }
}

/// TF's `AddN` of a tensor's gradients: added left to right, each sum rounded.
fn add_n(p: Fp, terms: &[f64]) -> f64 {
    terms[1..].iter().fold(terms[0], |acc, &x| p.r(acc + x))
}

fn binary_focal_crossentropy(a: &Args) -> Result<Tensor, CallError> {
    let bf = BinaryFocal::read(a)?;
    let p = bf.c.fp();
    let (inp, target) = bf.inputs(a)?;
    let focal = target.zip(&inp.y_pred, |t, x| bf.term(t, x))?;
    let values = reduce_axes(&focal, bf.axes.as_deref(), |f| p.mean(f))?;
    inp.finish(values, None, bf.c)
}

/// The backward of `BinaryFocalCrossentropy`: the reduction's gradient (see
/// [`Inputs::finish_backward`]), `ops.mean`'s over `axis`, then [`BinaryFocal::term_backward`]
/// per element; label smoothing scales the target's gradient by `1 - label_smoothing`.
fn binary_focal_crossentropy_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    let bf = BinaryFocal::read(a)?;
    let p = bf.c.fp();
    let (inp, target) = bf.inputs(a)?;
    let x = &inp.y_pred;
    let focal = target.zip(x, |t, x| bf.term(t, x))?;
    let axes = bf.axes.as_deref();
    let values = reduce_axes(&focal, axes, |f| tf_mean(p, f))?;
    let red = inp.finish_backward(&values, None, bf.c, b)?;
    let g_focal = mean_axes_backward(p, &focal.shape, &reduced_axes(&focal, axes)?, &red.values);
    let (mut g_true, mut g_pred) = (Vec::with_capacity(x.len()), Vec::with_capacity(x.len()));
    for i in 0..x.len() {
        let (gt, gx) = bf.term_backward(target.data[i], x.data[i], g_focal.data[i]);
        g_true.push(if bf.label_smoothing != 0.0 {
            p.r(gt * bf.keep())
        } else {
            gt
        });
        g_pred.push(gx);
    }
    collect(
        a,
        b,
        [
            ("y_true", Some(Nd::new(x.shape.clone(), g_true))),
            ("y_pred", Some(Nd::new(x.shape.clone(), g_pred))),
            ("sample_weight", red.sample_weight),
        ],
    )
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

/// The options of `CategoricalFocalCrossentropy`, read the same way by the forward and the
/// backward.
struct CategoricalFocal {
    c: Common,
    /// `alpha` in the dtype of the products it takes part in (`weight`).
    alpha: Nd,
    /// The dtype of `modulating_factor * alpha` and of everything after it up to the sum.
    weight: Fp,
    /// `gamma` as the `Pow` op sees it: a tensor of the loss dtype.
    gamma: f64,
    from_logits: bool,
    label_smoothing: f64,
    axis: i64,
}

/// The forward of `categorical_focal_crossentropy` up to the per-class products.
struct CategoricalForward {
    inp: Inputs,
    /// The smoothed target.
    target: Nd,
    /// The class axis of `target`/`y_pred`.
    k: usize,
    /// The probabilities (the softmax of the logits).
    y: Nd,
    /// `sum(y, axis)`, repeated along the axis.
    sums: Nd,
    /// `y / sums`, before and after the clip.
    ratio: Nd,
    output: Nd,
    /// `-target * log(output)`, in the loss dtype.
    cce: Nd,
    /// `modulating * alpha` and its product with `cce`, in the `weight` dtype (broadcast with
    /// `alpha`'s shape).
    weighting: Nd,
    focal: Nd,
}

impl CategoricalFocal {
    fn read(a: &Args) -> Result<CategoricalFocal, CallError> {
        only_known(
            a,
            &["alpha", "gamma", "from_logits", "label_smoothing", "axis"],
        )?;
        let c = Common::read(a)?;
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
        let weight = Fp(wdt);
        Ok(CategoricalFocal {
            c,
            alpha: alpha.map(|x| weight.r(x)),
            weight,
            gamma: c.fp().r(py_float(a, "gamma", 2.0)?),
            from_logits: a.bool_or("from_logits", false)?,
            label_smoothing: py_float(a, "label_smoothing", 0.0)?,
            axis,
        })
    }

    /// `1 - label_smoothing`, the factor between the smoothed and the given labels.
    fn keep(&self) -> f64 {
        self.c.fp().r(1.0 - self.label_smoothing)
    }

    fn forward(&self, a: &Args) -> Result<CategoricalForward, CallError> {
        let (p, w) = (self.c.fp(), self.weight);
        let inp = Inputs::read(a, self.c)?;
        let (mut target, mut y) = (inp.y_true.clone(), inp.y_pred.clone());
        if y.rank() == 0 {
            return Err(CallError::shape(
                "tuple index out of range (y_pred.shape[-1] of a scalar)",
            ));
        }
        let ls = self.label_smoothing;
        if ls != 0.0 {
            let Some(&n) = target.shape.last() else {
                return Err(CallError::shape(
                    "tuple index out of range (y_true.shape[-1] of a scalar)",
                ));
            };
            let (keep, add) = (self.keep(), p.r(p.r(ls) / n as f64));
            target = target.map(|t| p.r(p.r(t * keep) + add));
        }
        let axis = self.axis;
        let k = canonical_axis(axis, y.rank()).ok_or_else(|| {
            CallError::argument(format!(
                "Invalid reduction dimension ({axis} for input with {} dimension(s)",
                y.rank()
            ))
        })?;
        if self.from_logits {
            y = y.map_axis(k, |f| softmax(p, f));
        }
        let sums = fibre_sums(p, &y, k);
        let ratio = y.zip(&sums, |v, s| p.r(v / s))?;
        let output = ratio.map(|q| clip(p, q));
        let cce = target.zip(&output, |t, o| p.r(-t * p.ln(o)))?;
        let modulating = output.map(|o| tf_pow(p, p.r(1.0 - o), self.gamma));
        let weighting = modulating.zip(&self.alpha, |m, al| w.r(m * al))?;
        let focal = weighting.zip(&cce, |wf, ce| w.r(wf * ce))?;
        Ok(CategoricalForward {
            inp,
            target,
            k,
            y,
            sums,
            ratio,
            output,
            cce,
            weighting,
            focal,
        })
    }
}

/// Each element replaced by the `tf.reduce_sum` of its fibre along axis `k` (a keepdims sum
/// broadcast back, as `Sum`'s gradient and the broadcasting ops after a keepdims sum see it).
fn fibre_sums(p: Fp, x: &Nd, k: usize) -> Nd {
    x.map_axis(k, |f| vec![tf_sum(p, f); f.len()])
}

fn categorical_focal_crossentropy(a: &Args) -> Result<Tensor, CallError> {
    let cf = CategoricalFocal::read(a)?;
    let f = cf.forward(a)?;
    let kf = reduce_axis_index(&f.focal, cf.axis)?;
    let values = f
        .focal
        .reduce_axis(kf, |x| tf_sum(cf.weight, x))
        .map(|v| cf.c.dtype.round(v));
    f.inp.finish(values, None, cf.c)
}

/// The backward of `CategoricalFocalCrossentropy`, op by op with TF's registered gradients
/// (`Sum`: broadcast; `Mul`: `g * other` summed over broadcast axes; `Pow`:
/// `g * gamma * pow(x, gamma - 1)`; `Log`, the clip and `RealDiv` as for
/// `CategoricalCrossentropy`; `Softmax`: `(g - sum(g * s)) * s`). The products with `alpha` run
/// in its promoted dtype, whose `Cast` back rounds their gradients to the loss dtype. Every
/// tensor here has at most two consumers, so the order the tape adds their gradients in does
/// not matter (two-term sums are exact up to one rounding either way).
fn categorical_focal_crossentropy_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    let cf = CategoricalFocal::read(a)?;
    let (p, w) = (cf.c.fp(), cf.weight);
    let f = cf.forward(a)?;
    let kf = reduce_axis_index(&f.focal, cf.axis)?;
    let values = f.focal.reduce_axis(kf, |x| p.r(tf_sum(w, x)));
    let red = f.inp.finish_backward(&values, None, cf.c, b)?;
    // Sum over the class axis: the gradient repeated along it.
    let mut kept = f.focal.shape.clone();
    kept[kf] = 1;
    let g_focal = Nd::new(kept, red.values.data.clone()).broadcast_to(&f.focal.shape);
    let mul = |x: f64, y: f64| w.r(x * y);
    let shape = &f.y.shape;
    let g_cce = reduce_to(w, g_focal.zip(&f.weighting, mul)?, shape)?.map(|g| p.r(g));
    let g_weighting = g_focal.zip(&f.cce, mul)?;
    let g_modulating = reduce_to(w, g_weighting.zip(&cf.alpha, mul)?, shape)?.map(|g| p.r(g));
    // pow(1 - output, gamma)
    let exponent = p.r(cf.gamma - 1.0);
    let g_one_minus = g_modulating.zip(&f.output, |g, o| {
        p.r(p.r(g * cf.gamma) * tf_pow(p, p.r(1.0 - o), exponent))
    })?;
    // -target * log(output): Neg(target) times Log(output).
    let log_output = f.output.map(|o| p.ln(o));
    let g_neg_target = g_cce.zip(&log_output, |g, l| p.r(g * l))?;
    let g_log = g_cce.zip(&f.target, |g, t| p.r(g * -t))?;
    let g_output = g_log
        .zip(&f.output, |g, o| log_grad(p, o, g))?
        .zip(&g_one_minus, |a, b| p.r(a - b))?;
    let g_ratio = f.ratio.zip(&g_output, |q, g| clip_pass(p, q, g))?;
    // y / sum(y, axis, keepdims=True)
    let g_direct = g_ratio.zip(&f.sums, |g, s| p.r(g / s))?;
    let to_sum =
        f.y.zip(&f.sums, |y, s| p.r(p.r(-y / s) / s))?
            .zip(&g_ratio, |r, g| p.r(g * r))?;
    let g_y = g_direct.zip(&fibre_sums(p, &to_sum, f.k), |a, b| p.r(a + b))?;
    let g_pred = if cf.from_logits {
        let weighted = g_y.zip(&f.y, |g, s| p.r(g * s))?;
        g_y.zip(&fibre_sums(p, &weighted, f.k), |g, c| p.r(g - c))?
            .zip(&f.y, |d, s| p.r(d * s))?
    } else {
        g_y
    };
    let keep = cf.keep();
    let g_true = g_neg_target.map(|g| {
        if cf.label_smoothing != 0.0 {
            p.r(-g * keep)
        } else {
            -g
        }
    });
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

    /// The gradients of `class` for `args` (all ones as `grad_output`), keyed by argument.
    fn grads(class: &str, args: &[(&str, Value)], wrt: &[&str]) -> Vec<Vec<f64>> {
        crate::reference::testing::gradients(&format!("tf.keras.losses.{class}"), args, wrt)
    }

    fn all_close(a: &[f64], b: &[f64], rtol: f64) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= rtol * (1e-3 + y.abs()), "{x} vs {y}");
        }
    }

    /// With `gamma = 0` the focal factor is 1 and its gradient vanishes, so both focal losses
    /// must back-propagate what the plain cross-entropies do (up to rounding: the ops differ, the
    /// mathematics does not). Soft labels keep every path of `y_true` live.
    #[test]
    fn gamma_zero_gradient_is_cross_entropy_gradient() {
        // Rows of labels sum to 1: TF's fused softmax cross-entropy back-propagates
        // `softmax - labels`, the true gradient only for such labels.
        let t = f32(&[2, 3], &[0.0, 0.7, 0.3, 0.2, 0.0, 0.8]);
        let p = f32(&[2, 3], &[0.05, 0.9, 0.35, 0.1, 0.45, 0.55]);
        let wrt = ["y_true", "y_pred"];
        for from_logits in [false, true] {
            for ls in [0.0, 0.2] {
                let base = vec![
                    ("y_true", t.clone()),
                    ("y_pred", p.clone()),
                    ("from_logits", Value::Bool(from_logits)),
                    ("label_smoothing", Value::Float(ls)),
                ];
                let mut focal = base.clone();
                focal.extend([("gamma", Value::Float(0.0)), ("alpha", Value::Float(1.0))]);
                let plain = grads("BinaryCrossentropy", &base, &wrt);
                let ours = grads("BinaryFocalCrossentropy", &focal, &wrt);
                for (a, b) in ours.iter().zip(&plain) {
                    all_close(a, b, 1e-5);
                }
                let plain = grads("CategoricalCrossentropy", &base, &wrt);
                let ours = grads("CategoricalFocalCrossentropy", &focal, &wrt);
                for (a, b) in ours.iter().zip(&plain) {
                    all_close(a, b, 1e-5);
                }
            }
        }
    }

    /// In float64 the op-by-op backward must agree with central differences of the forward for
    /// every option that changes the graph: class balancing, label smoothing, several mean axes,
    /// per-class alpha, a class axis other than the last, logits, sample weights.
    #[test]
    fn gradients_match_central_differences() {
        let f64t = |shape: &[usize], data: &[f64]| {
            Value::Tensor(Tensor::from_f64(DType::Float64, shape.to_vec(), data.to_vec()).unwrap())
        };
        let t = [0.0, 1.0, 0.3, 0.2, 0.0, 1.0];
        let y = [0.15, 0.7, 0.35, 0.4, 0.45, 0.25];
        let configs: Vec<(&str, Vec<(&str, Value)>)> = vec![
            (
                "BinaryFocalCrossentropy",
                vec![
                    ("apply_class_balancing", Value::Bool(true)),
                    ("label_smoothing", Value::Float(0.1)),
                    ("axis", Value::IntList(vec![0, 1])),
                ],
            ),
            (
                "BinaryFocalCrossentropy",
                vec![
                    ("from_logits", Value::Bool(true)),
                    ("gamma", Value::Float(1.5)),
                    ("sample_weight", f64t(&[2], &[0.5, 2.0])),
                ],
            ),
            (
                "CategoricalFocalCrossentropy",
                vec![
                    ("alpha", f64t(&[3], &[0.2, 0.3, 0.5])),
                    ("label_smoothing", Value::Float(0.2)),
                ],
            ),
            (
                "CategoricalFocalCrossentropy",
                vec![
                    ("from_logits", Value::Bool(true)),
                    ("axis", Value::Int(0)),
                    ("reduction", Value::Str("sum".into())),
                ],
            ),
        ];
        for (class, extra) in configs {
            let args = |t: &[f64], y: &[f64]| {
                let mut v = vec![
                    ("y_true", f64t(&[2, 3], t)),
                    ("y_pred", f64t(&[2, 3], y)),
                    ("dtype", Value::Str("float64".into())),
                ];
                v.extend(extra.iter().cloned());
                v
            };
            let total = |t: &[f64], y: &[f64]| -> f64 {
                values(call(class, &args(t, y))).to_f64_vec().iter().sum()
            };
            let g = grads(class, &args(&t, &y), &["y_true", "y_pred"]);
            let h = 1e-6;
            for i in 0..6 {
                for (which, ga) in g.iter().enumerate() {
                    let (mut tp, mut tm, mut yp, mut ym) = (t, t, y, y);
                    if which == 0 {
                        tp[i] += h;
                        tm[i] -= h;
                    } else {
                        yp[i] += h;
                        ym[i] -= h;
                    }
                    let numeric = (total(&tp, &yp) - total(&tm, &ym)) / (2.0 * h);
                    assert!(
                        (ga[i] - numeric).abs() <= 1e-6 * (1.0 + numeric.abs()),
                        "{class} {extra:?} arg {which} [{i}]: {} vs {numeric}",
                        ga[i]
                    );
                }
            }
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
