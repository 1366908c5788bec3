//! Reference kernels for `tf.keras.losses.Dice` and `Tversky` (Keras 3.15.1, `dice` and
//! `tversky` in `keras/src/losses/losses.py`).
//!
//! Sums over `axis` (default `None`: every axis, so the whole batch is one set), a `1e-7` in the
//! denominator, `1 - ratio`. The products broadcast `y_true` against `y_pred`, while the plain
//! sums of Dice run over each tensor's own shape; nothing checks that the shapes agree.

use super::focal::{read_axes, reduce_axes};
use super::reduction::{only_known, py_float, Common};
use super::{Inputs, EPSILON};
use crate::backend::CallError;
use crate::reference::tf_nn::nd::Nd;
use crate::reference::{Args, Kernel};
use crate::tensor::Tensor;
use crate::reference::GradientKernel;

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[
    ("tf.keras.losses.Dice", dice),
    ("tf.keras.losses.Tversky", tversky),
];

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[];

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
