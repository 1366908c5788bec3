//! Backward kernels of `tf.keras.losses.BinaryCrossentropy`, `CategoricalCrossentropy` and
//! `SparseCategoricalCrossentropy` (Keras 3.15.1 on TensorFlow 2.21), op by op with TF's
//! registered gradients (`math_grad.py`, `nn_grad.py`), each result rounded to the loss dtype:
//!
//! - `clip_by_value(x, 1e-7, 1 - 1e-7)` is `maximum(minimum(x, hi), lo)`: the gradient passes
//!   where `lo <= x <= hi` (ties go to `x`), is 0 outside and 0 for NaN;
//! - `Log`: `g * reciprocal(x)`; `Log1p`: `g * reciprocal(1 + x)`; `Exp`: `g * exp(x)`;
//! - `RealDiv`: `g / y` and `g * ((-x / y) / y)`, the latter summed over broadcast axes;
//! - the fused softmax cross-entropy kernels: logits get `g * (softmax - labels)` from the
//!   kernel's second output, dense labels `g * -log_softmax(logits)`, sparse labels nothing.

use super::reduction::{collect, mean_all_backward, mean_axis_backward, tf_mean, tf_sum, Common};
use super::{cast_to_int64, clip, crossentropy_args, only_known, reduce_axis_index, Inputs};
use crate::backend::{CallError, Gradients};
use crate::reference::tf_nn::nd::{canonical_axis, Fp, Nd};
use crate::reference::{Args, Backward};
use crate::tensor::DType;

/// The gradient `clip_by_value` passes on: `g` where `lo <= x <= hi`, else 0 (NaN included).
pub(super) fn clip_pass(p: Fp, x: f64, g: f64) -> f64 {
    let (lo, hi) = (p.r(super::EPSILON), p.r(1.0 - super::EPSILON));
    if x >= lo && x <= hi {
        g
    } else {
        0.0
    }
}

/// `g * reciprocal(x)`, TF's `Log` gradient.
pub(super) fn log_grad(p: Fp, x: f64, g: f64) -> f64 {
    p.r(g * p.r(1.0 / x))
}

/// `ops.mean(x, axis)` in TF's summation order, and the axis it reduced (`None`: all).
fn mean_of(p: Fp, x: &Nd, axis: Option<i64>) -> Result<(Nd, Option<usize>), CallError> {
    match axis {
        None => Ok((Nd::scalar(tf_mean(p, &x.data)), None)),
        Some(axis) => {
            let k = reduce_axis_index(x, axis)?;
            Ok((x.reduce_axis(k, |f| tf_mean(p, f)), Some(k)))
        }
    }
}

/// The backward of [`mean_of`].
fn mean_of_backward(p: Fp, shape: &[usize], k: Option<usize>, g: &Nd) -> Nd {
    match k {
        Some(k) => mean_axis_backward(p, shape, k, g),
        None => mean_all_backward(p, shape, g.data[0]),
    }
}

/// `sigmoid_cross_entropy_with_logits` as TF composes it, `relu(x) - x * z + log1p(exp(-|x|))`
/// with `relu` and `-|x|` as `where(x >= 0, ...)`: the gradients `(d z, d x)` of one term.
/// TF adds the three contributions to `x` in the order of its consumers' gradients: the
/// `where`, the product and the `log1p` path.
pub(crate) fn sigmoid_xent_backward(p: Fp, z: f64, x: f64, g: f64) -> (f64, f64) {
    let ge = x >= 0.0;
    let neg_abs = if ge { -x } else { x };
    let e = p.exp(neg_abs);
    // log1p(e): g * reciprocal(1 + e); exp: * e; where: sign.
    let g_log1p = p.r(g * p.r(1.0 / p.r(1.0 + e)));
    let g_neg_abs = p.r(g_log1p * e);
    let from_abs = if ge { -g_neg_abs } else { g_neg_abs };
    let from_relu = if ge { g } else { 0.0 };
    let g_prod = -g;
    let from_prod = p.r(g_prod * z);
    let dz = p.r(g_prod * x);
    let dx = p.r(p.r(from_relu + from_prod) + from_abs);
    (dz, dx)
}

pub(super) fn binary_crossentropy_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    let (c, p, from_logits, ls, axis, inp) = crossentropy_args(a)?;
    let keep = p.r(1.0 - ls);
    let target = super::binary_target(p, &inp.y_true, &inp.y_pred, ls)?;
    let output = &inp.y_pred;
    let (lo, hi) = (p.r(super::EPSILON), p.r(1.0 - super::EPSILON));
    let clipped = |o: f64| if o.is_nan() { o } else { o.max(lo).min(hi) };
    let terms = if from_logits {
        target.zip(output, |z, x| {
            crate::reference::tf_nn::sigmoid_xent(p, z, x)
        })?
    } else {
        target.zip(output, |t, o| {
            let o = clipped(o);
            let pos = p.r(t * p.ln(o));
            let neg = p.r(p.r(1.0 - t) * p.ln(p.r(1.0 - o)));
            -p.r(pos + neg)
        })?
    };
    let (values, k) = mean_of(p, &terms, axis)?;
    let red = inp.finish_backward(&values, None, c, b)?;
    let g_terms = mean_of_backward(p, &terms.shape, k, &red.values);
    let mut g_true = Vec::with_capacity(terms.len());
    let mut g_pred = Vec::with_capacity(terms.len());
    for i in 0..terms.len() {
        let (t, o, g) = (target.data[i], output.data[i], g_terms.data[i]);
        let (gt, go) = if from_logits {
            sigmoid_xent_backward(p, t, o, g)
        } else {
            // -(t * log(oc) + (1 - t) * log(1 - oc))
            let gb = -g;
            let oc = clipped(o);
            let (l1, one_minus_o) = (p.ln(oc), p.r(1.0 - oc));
            let l2 = p.ln(one_minus_o);
            let gt = p.r(p.r(gb * l1) - p.r(gb * l2));
            let g_oc_pos = log_grad(p, oc, p.r(gb * t));
            let g_oc_neg = log_grad(p, one_minus_o, p.r(gb * p.r(1.0 - t)));
            (gt, clip_pass(p, o, p.r(g_oc_pos - g_oc_neg)))
        };
        g_true.push(if ls != 0.0 { p.r(gt * keep) } else { gt });
        g_pred.push(go);
    }
    collect(
        a,
        b,
        [
            ("y_true", Some(Nd::new(terms.shape.clone(), g_true))),
            ("y_pred", Some(Nd::new(terms.shape.clone(), g_pred))),
            ("sample_weight", red.sample_weight),
        ],
    )
}

/// The working dtype of TF's softmax cross-entropy kernels for a loss dtype.
fn xent_work(dt: DType) -> Fp {
    match dt {
        DType::Float16 | DType::Bfloat16 => Fp(DType::Float32),
        d => Fp(d),
    }
}

/// One fibre of the fused softmax cross-entropy: `(softmax - labels, -log_softmax)` in `w`.
fn xent_fibre(w: Fp, z: &[f64], x: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let m = if x.iter().any(|v| v.is_nan()) {
        f64::NAN
    } else {
        x.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    };
    let shifted: Vec<f64> = x.iter().map(|&v| w.r(v - m)).collect();
    let e: Vec<f64> = shifted.iter().map(|&s| w.exp(s)).collect();
    let sum = tf_sum(w, &e);
    let lse = w.ln(sum);
    let backprop = e
        .iter()
        .zip(z)
        .map(|(&e, &z)| w.r(w.r(e / sum) - z))
        .collect();
    let neg_log_softmax = shifted.iter().map(|&s| -w.r(s - lse)).collect();
    (backprop, neg_log_softmax)
}

pub(super) fn categorical_crossentropy_backward(
    a: &Args,
    b: &Backward,
) -> Result<Gradients, CallError> {
    let (c, p, from_logits, ls, axis, inp) = crossentropy_args(a)?;
    let keep = p.r(1.0 - ls);
    let mut target = inp.y_true.clone();
    if ls != 0.0 {
        let n = *target.shape.last().expect("the forward checked the rank");
        let add = p.r(p.r(ls) / p.r(n as f64));
        target = target.map(|t| p.r(p.r(t * keep) + add));
    }
    let output = &inp.y_pred;
    // Each fibre along the class axis (`None`: the whole tensor as one fibre).
    let k = match axis {
        Some(axis) => Some(reduce_axis_index(output, axis)?),
        None => None,
    };
    let fibres = |x: &Nd| match k {
        Some(k) => x.move_axis_to_end(k),
        None => Nd::new(vec![x.len()], x.data.clone()),
    };
    let (z, x) = (fibres(&target), fibres(output));
    let n = *x.shape.last().expect("rank >= 1");
    let rows = x.len().checked_div(n).unwrap_or(0);
    // Per-row loss, then the reduction's gradient for it.
    let mut values = Vec::with_capacity(rows);
    let w = xent_work(c.dtype);
    for r in 0..rows {
        let (zr, xr) = (&z.data[r * n..(r + 1) * n], &x.data[r * n..(r + 1) * n]);
        values.push(if from_logits {
            let (_, nls) = xent_fibre(w, zr, xr);
            let terms: Vec<f64> = zr.iter().zip(&nls).map(|(&z, &l)| w.r(z * l)).collect();
            p.r(tf_sum(w, &terms))
        } else {
            let s = tf_sum(p, xr);
            let terms: Vec<f64> = zr
                .iter()
                .zip(xr)
                .map(|(&z, &o)| p.r(z * p.ln(clip(p, p.r(o / s)))))
                .collect();
            -tf_sum(p, &terms)
        });
    }
    let values = Nd::new(x.shape[..x.rank() - 1].to_vec(), values);
    let values = if k.is_none() {
        Nd::scalar(values.data.first().copied().unwrap_or(0.0))
    } else {
        values
    };
    let red = inp.finish_backward(&values, None, c, b)?;
    let mut gz = vec![0.0; x.len()];
    let mut gx = vec![0.0; x.len()];
    for r in 0..rows {
        let g = red.values.data[r];
        let (zr, xr) = (&z.data[r * n..(r + 1) * n], &x.data[r * n..(r + 1) * n]);
        if from_logits {
            let (backprop, nls) = xent_fibre(w, zr, xr);
            for j in 0..n {
                gx[r * n + j] = p.r(w.r(g * backprop[j]));
                gz[r * n + j] = p.r(w.r(g * nls[j]));
            }
        } else {
            // -reduce_sum(t * log(clip(o / s)))
            let gb = -g;
            let s = tf_sum(p, xr);
            let mut g_q = vec![0.0; n];
            for j in 0..n {
                let q = p.r(xr[j] / s);
                let qc = clip(p, q);
                gz[r * n + j] = p.r(gb * p.ln(qc));
                g_q[j] = clip_pass(p, q, log_grad(p, qc, p.r(gb * zr[j])));
            }
            // RealDiv: g / s to o, sum(g * ((-o / s) / s)) to s, which Sum broadcasts to o.
            let to_s: Vec<f64> = (0..n)
                .map(|j| p.r(g_q[j] * p.r(p.r(-xr[j] / s) / s)))
                .collect();
            let g_s = tf_sum(p, &to_s);
            for j in 0..n {
                gx[r * n + j] = p.r(p.r(g_q[j] / s) + g_s);
            }
        }
        if ls != 0.0 {
            for j in 0..n {
                gz[r * n + j] = p.r(gz[r * n + j] * keep);
            }
        }
    }
    let unfibre = |g: Vec<f64>| match k {
        Some(k) => move_end_to_axis(&Nd::new(x.shape.clone(), g), k),
        None => Nd::new(output.shape.clone(), g),
    };
    collect(
        a,
        b,
        [
            ("y_true", Some(unfibre(gz))),
            ("y_pred", Some(unfibre(gx))),
            ("sample_weight", red.sample_weight),
        ],
    )
}

/// The inverse of `Nd::move_axis_to_end(k)`.
fn move_end_to_axis(x: &Nd, k: usize) -> Nd {
    let r = x.rank();
    if k + 1 == r {
        return x.clone();
    }
    let a =
        ndarray::ArrayViewD::from_shape(ndarray::IxDyn(&x.shape), &x.data).expect("Nd invariant");
    // Axis j of the result is axis perm[j] of x.
    let perm: Vec<usize> = (0..r)
        .map(|j| match j.cmp(&k) {
            std::cmp::Ordering::Less => j,
            std::cmp::Ordering::Equal => r - 1,
            std::cmp::Ordering::Greater => j - 1,
        })
        .collect();
    let t = a.permuted_axes(ndarray::IxDyn(&perm));
    Nd::new(t.shape().to_vec(), t.iter().copied().collect())
}

pub(super) fn sparse_categorical_crossentropy_backward(
    a: &Args,
    b: &Backward,
) -> Result<Gradients, CallError> {
    only_known(a, &["from_logits", "ignore_class", "axis"])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let from_logits = a.bool_or("from_logits", false)?;
    let ignore_class = a.opt_f64("ignore_class", None)?;
    let inp = Inputs::read(a, c)?;
    let (mut y_true, y_pred) = (inp.y_true.clone(), inp.y_pred.clone());
    if y_true.rank() == y_pred.rank() {
        let k = canonical_axis(-1, y_true.rank()).expect("the forward checked the axis");
        if y_true.shape[k] == 1 {
            y_true.shape.remove(k);
        }
    }
    // Rows whose label is `ignore_class` see y_pred = 0 and a zero loss (no gradient).
    let valid: Vec<bool> = match ignore_class {
        Some(ignore) => y_true.data.iter().map(|&t| t != p.r(ignore)).collect(),
        None => vec![true; y_true.len()],
    };
    let n = *y_pred.shape.last().expect("the forward checked the rank");
    let w = if c.dtype == DType::Float16 {
        Fp(DType::Float32)
    } else {
        p
    };
    let (lo, hi) = (p.r(super::EPSILON), p.r(1.0 - super::EPSILON));
    let mut values = Vec::with_capacity(valid.len());
    let mut backprops = Vec::with_capacity(valid.len());
    for (r, &ok) in valid.iter().enumerate() {
        let label = if ok {
            cast_to_int64(y_true.data[r])
        } else {
            0.0
        };
        let row: Vec<f64> = y_pred.data[r * n..(r + 1) * n]
            .iter()
            .map(|&o| {
                let o = if ok { o } else { 0.0 };
                if from_logits {
                    o
                } else {
                    p.ln(if o.is_nan() { o } else { o.max(lo).min(hi) })
                }
            })
            .collect();
        let onehot: Vec<f64> = (0..n)
            .map(|j| f64::from(u8::from(j as f64 == label)))
            .collect();
        let (backprop, nls) = xent_fibre(w, &onehot, &row);
        let loss = nls[label as usize];
        values.push(if ok { p.r(loss) } else { 0.0 });
        backprops.push(backprop);
    }
    let values = Nd::new(y_true.shape.clone(), values);
    let mask = ignore_class.map(|_| {
        Nd::new(
            y_true.shape.clone(),
            valid.iter().map(|&v| f64::from(u8::from(v))).collect(),
        )
    });
    let red = inp.finish_backward(&values, mask.as_ref(), c, b)?;
    let mut g_pred = vec![0.0; y_pred.len()];
    for (r, &ok) in valid.iter().enumerate() {
        if !ok {
            continue;
        }
        let g = red.values.data[r];
        for j in 0..n {
            let g_logit = p.r(w.r(g * backprops[r][j]));
            g_pred[r * n + j] = if from_logits {
                g_logit
            } else {
                let o = y_pred.data[r * n + j];
                let oc = if o.is_nan() { o } else { o.max(lo).min(hi) };
                clip_pass(p, o, log_grad(p, oc, g_logit))
            };
        }
    }
    collect(
        a,
        b,
        [
            ("y_true", None),
            ("y_pred", Some(Nd::new(y_pred.shape.clone(), g_pred))),
            ("sample_weight", red.sample_weight),
        ],
    )
}
