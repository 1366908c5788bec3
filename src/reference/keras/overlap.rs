//! Reference kernels for `tf.keras.losses.Dice` and `Tversky` (Keras 3.15.1, `dice` and
//! `tversky` in `keras/src/losses/losses.py`).
//!
//! Sums over `axis` (default `None`: every axis, so the whole batch is one set), a `1e-7` in the
//! denominator, `1 - ratio`. The products broadcast `y_true` against `y_pred`, while the plain
//! sums of Dice run over each tensor's own shape; nothing checks that the shapes agree.

use super::focal::{read_axes, reduce_axes};
use super::reduction::{collect, reduce_to, tf_sum};
use super::reduction::{only_known, py_float, Common};
use super::{Inputs, EPSILON};
use crate::backend::CallError;
use crate::backend::Gradients;
use crate::reference::tf_nn::nd::Fp;
use crate::reference::tf_nn::nd::Nd;
use crate::reference::{Args, Kernel};
use crate::reference::{Backward, GradientKernel};
use crate::tensor::Tensor;
use std::cell::{Cell, RefCell};

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[
    ("tf.keras.losses.Dice", dice),
    ("tf.keras.losses.Tversky", tversky),
];

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[
    ("tf.keras.losses.Dice", dice_backward),
    ("tf.keras.losses.Tversky", tversky_backward),
];

fn dice(a: &Args) -> Result<Tensor, CallError> {
    only_known(a, &["axis"])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let axes = read_axes(a, "axis", None)?;
    let axes = axes.as_deref();
    let inp = Inputs::read(a, c)?;
    let (t, y) = (&inp.y_true, &inp.y_pred);
    let sum = |x: &Nd| reduce_axes(x, axes, |f| p.sum(f));
    let intersection = sum(&t.zip(y, |t, y| p.r(t * y))?)?;
    let denominator = sum(t)?.zip(&sum(y)?, |a, b| p.r(p.r(a + b) + p.r(EPSILON)))?;
    let values = intersection.zip(&denominator, |i, d| p.r(1.0 - p.r(p.r(2.0 * i) / d)))?;
    inp.finish(values, None, c)
}

fn tversky(a: &Args) -> Result<Tensor, CallError> {
    only_known(a, &["alpha", "beta", "axis"])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let alpha = p.r(py_float(a, "alpha", 0.5)?);
    let beta = p.r(py_float(a, "beta", 0.5)?);
    let axes = read_axes(a, "axis", None)?;
    let axes = axes.as_deref();
    let inp = Inputs::read(a, c)?;
    let (t, y) = (&inp.y_true, &inp.y_pred);
    let sum = |x: &Nd| reduce_axes(x, axes, |f| p.sum(f));
    let intersection = sum(&t.zip(y, |t, y| p.r(t * y))?)?;
    // Keras' names: `fp` sums (1 - y_pred) * y_true, `fn` sums y_pred * (1 - y_true).
    let fp = sum(&y.zip(t, |y, t| p.r(p.r(1.0 - y) * t))?)?;
    let fn_ = sum(&y.zip(t, |y, t| p.r(y * p.r(1.0 - t)))?)?;
    let with_fp = intersection.zip(&fp, |i, f| p.r(i + p.r(f * alpha)))?;
    let denominator = with_fp.zip(&fn_, |d, f| p.r(p.r(d + p.r(f * beta)) + p.r(EPSILON)))?;
    let values = intersection.zip(&denominator, |i, d| p.r(1.0 - p.r(i / d)))?;
    inp.finish(values, None, c)
}

/// The backward of `reduce_axes(x, axes, sum)` for `x` of `shape` (TF's `_SumGrad`): each
/// element gets the gradient of the sum it went into.
fn sum_axes_backward(shape: &[usize], axes: Option<&[i64]>, g: &Nd) -> Result<Nd, CallError> {
    let n: usize = shape.iter().product();
    let index = Nd::new(shape.to_vec(), (0..n).map(|i| i as f64).collect());
    let out = RefCell::new(vec![0.0; n]);
    let next = Cell::new(0usize);
    reduce_axes(&index, axes, |fibre| {
        let o = next.get();
        for &i in fibre {
            out.borrow_mut()[i as usize] = g.data[o];
        }
        next.set(o + 1);
        0.0
    })?;
    Ok(Nd::new(shape.to_vec(), out.into_inner()))
}

/// `RealDiv`'s gradients `(g / d, g * ((-n / d) / d))`, each summed back to its operand's shape.
fn div_backward(p: Fp, num: &Nd, den: &Nd, g: &Nd) -> Result<(Nd, Nd), CallError> {
    let nb = num.zip(den, |n, _| n)?;
    let db = num.zip(den, |_, d| d)?;
    let g_num = g.zip(&db, |g, d| p.r(g / d))?;
    let g_den = Nd::new(
        g.shape.clone(),
        (0..g.len())
            .map(|i| p.r(g.data[i] * p.r(p.r(-nb.data[i] / db.data[i]) / db.data[i])))
            .collect(),
    );
    Ok((
        reduce_to(p, g_num, &num.shape)?,
        reduce_to(p, g_den, &den.shape)?,
    ))
}

/// `1 - 2 sum(t y) / (sum(t) + sum(y) + 1e-7)`: `Sub`, `RealDiv` ([`div_backward`]), `Mul` by
/// 2, `Sum` ([`sum_axes_backward`]) and the broadcast product; each input adds the gradient of
/// the product and of its own sum.
fn dice_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    only_known(a, &["axis"])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let axes = read_axes(a, "axis", None)?;
    let axes = axes.as_deref();
    let inp = Inputs::read(a, c)?;
    let (t, y) = (&inp.y_true, &inp.y_pred);
    let sum = |x: &Nd| reduce_axes(x, axes, |f| tf_sum(p, f));
    let prod = t.zip(y, |t, y| p.r(t * y))?;
    let intersection = sum(&prod)?;
    let (sum_t, sum_y) = (sum(t)?, sum(y)?);
    let both = sum_t.zip(&sum_y, |a, b| p.r(a + b))?;
    let denominator = both.map(|x| p.r(x + p.r(EPSILON)));
    let twice = intersection.map(|i| p.r(2.0 * i));
    let values = twice.zip(&denominator, |i, d| p.r(1.0 - p.r(i / d)))?;
    let red = inp.finish_backward(&values, None, c, b)?;
    let g_ratio = red.values.map(|g| -g);
    let (g_twice, g_den) = div_backward(p, &twice, &denominator, &g_ratio)?;
    let g_inter = g_twice.map(|g| p.r(g * 2.0));
    let g_prod = sum_axes_backward(&prod.shape, axes, &g_inter)?;
    let g_own = |x: &Nd, s: &Nd| -> Result<Nd, CallError> {
        let g = reduce_to(p, g_den.clone(), &s.shape)?;
        sum_axes_backward(&x.shape, axes, &g)
    };
    let (own_t, own_y) = (g_own(t, &sum_t)?, g_own(y, &sum_y)?);
    let yb = y.broadcast_to(&prod.shape);
    let tb = t.broadcast_to(&prod.shape);
    let dt = reduce_to(p, g_prod.zip(&yb, |g, y| p.r(g * y))?, &t.shape)?;
    let dy = reduce_to(p, g_prod.zip(&tb, |g, t| p.r(g * t))?, &y.shape)?;
    collect(
        a,
        b,
        [
            ("y_true", Some(dt.zip(&own_t, |a, b| p.r(a + b))?)),
            ("y_pred", Some(dy.zip(&own_y, |a, b| p.r(a + b))?)),
            ("sample_weight", red.sample_weight),
        ],
    )
}

/// `1 - I / (I + alpha FP + beta FN + 1e-7)` with `I = sum(t y)`, `FP = sum((1 - y) t)`,
/// `FN = sum(y (1 - t))`: `RealDiv` ([`div_backward`]), `I` adding its two paths, `Sum`
/// ([`sum_axes_backward`]) and the three products, added in the order they were built.
fn tversky_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    only_known(a, &["alpha", "beta", "axis"])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let alpha = p.r(py_float(a, "alpha", 0.5)?);
    let beta = p.r(py_float(a, "beta", 0.5)?);
    let axes = read_axes(a, "axis", None)?;
    let axes = axes.as_deref();
    let inp = Inputs::read(a, c)?;
    let (t, y) = (&inp.y_true, &inp.y_pred);
    let sum = |x: &Nd| reduce_axes(x, axes, |f| tf_sum(p, f));
    let intersection = sum(&t.zip(y, |t, y| p.r(t * y))?)?;
    let fp = sum(&y.zip(t, |y, t| p.r(p.r(1.0 - y) * t))?)?;
    let fn_ = sum(&y.zip(t, |y, t| p.r(y * p.r(1.0 - t)))?)?;
    let with_fp = intersection.zip(&fp, |i, f| p.r(i + p.r(f * alpha)))?;
    let denominator = with_fp.zip(&fn_, |d, f| p.r(p.r(d + p.r(f * beta)) + p.r(EPSILON)))?;
    let values = intersection.zip(&denominator, |i, d| p.r(1.0 - p.r(i / d)))?;
    let red = inp.finish_backward(&values, None, c, b)?;
    let g_ratio = red.values.map(|g| -g);
    let (g_i1, g_den) = div_backward(p, &intersection, &denominator, &g_ratio)?;
    let g_i = g_i1.zip(
        &reduce_to(p, g_den.clone(), &intersection.shape)?,
        |a, b| p.r(a + b),
    )?;
    let g_fp = reduce_to(p, g_den.map(|g| p.r(g * alpha)), &fp.shape)?;
    let g_fn = reduce_to(p, g_den.map(|g| p.r(g * beta)), &fn_.shape)?;
    let shape = t.zip(y, |_, _| 0.0)?.shape;
    let (tb, yb) = (t.broadcast_to(&shape), y.broadcast_to(&shape));
    let gi = sum_axes_backward(&shape, axes, &g_i)?;
    let gfp = sum_axes_backward(&shape, axes, &g_fp)?;
    let gfn = sum_axes_backward(&shape, axes, &g_fn)?;
    let (mut dt, mut dy) = (vec![0.0; tb.len()], vec![0.0; tb.len()]);
    for i in 0..tb.len() {
        let (t, y) = (tb.data[i], yb.data[i]);
        let (gi, gfp, gfn) = (gi.data[i], gfp.data[i], gfn.data[i]);
        dt[i] = p.r(p.r(p.r(gi * y) + p.r(gfp * p.r(1.0 - y))) - p.r(p.r(gfn * y)));
        dy[i] = p.r(p.r(p.r(gi * t) - p.r(gfp * t)) + p.r(gfn * p.r(1.0 - t)));
    }
    let dt = reduce_to(p, Nd::new(shape.clone(), dt), &t.shape)?;
    let dy = reduce_to(p, Nd::new(shape, dy), &y.shape)?;
    collect(
        a,
        b,
        [
            ("y_true", Some(dt)),
            ("y_pred", Some(dy)),
            ("sample_weight", red.sample_weight),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::super::focal::tests::{call, close, f32, kind, values};
    use crate::backend::{ErrorKind, Value};

    #[test]
    fn tversky_one_half_is_dice_and_empty_masks_cost_one() {
        let t = f32(&[2, 2], &[1.0, 0.5, 0.0, 1.0]);
        let p = f32(&[2, 2], &[0.3, 0.9, 0.2, 0.8]);
        let args = [
            ("y_true", t),
            ("y_pred", p),
            ("axis", Value::Int(1)),
            ("reduction", Value::Str("none".into())),
        ];
        close(
            &values(call("Dice", &args)),
            &values(call("Tversky", &args)),
        );
        for class in ["Dice", "Tversky"] {
            let zeros = f32(&[2, 3], &[0.0; 6]);
            let o = values(call(class, &[("y_true", zeros.clone()), ("y_pred", zeros)]));
            assert_eq!(o.shape(), &[] as &[usize]);
            assert_eq!(o.to_f64_vec(), vec![1.0], "{class}");
        }
    }

    #[test]
    fn shapes_broadcast_or_raise() {
        for class in ["Dice", "Tversky"] {
            let o = values(call(
                class,
                &[
                    ("y_true", f32(&[1, 3], &[1.0, 0.0, 1.0])),
                    ("y_pred", f32(&[2, 1], &[0.5, 0.5])),
                ],
            ));
            assert_eq!(o.shape(), &[] as &[usize]);
            let o = call(
                class,
                &[
                    ("y_true", f32(&[1, 2], &[1.0, 0.0])),
                    ("y_pred", f32(&[1, 3], &[0.5; 3])),
                ],
            );
            assert_eq!(kind(o), ErrorKind::Shape, "{class}");
            let o = call(
                class,
                &[
                    ("y_true", f32(&[1, 2], &[1.0, 0.0])),
                    ("y_pred", f32(&[1, 2], &[0.5; 2])),
                    ("axis", Value::Int(2)),
                ],
            );
            assert_eq!(kind(o), ErrorKind::Argument, "{class}");
        }
    }
}
