//! Reference kernels for `tf.keras.losses.CosineSimilarity`.
//!
//! Keras 3.15.1 (`keras/src/losses/losses.py`, `keras/src/ops/nn.py`), every op in the loss
//! dtype:
//!
//! ```text
//! y_pred = normalize(y_pred, axis); y_true = normalize(y_true, axis)
//! loss   = -sum(y_true * y_pred, axis)
//! normalize(x): x = expand_dims(x, 0) if x is 0-d
//!               x * minimum(rsqrt(sum(square(x), axis, keepdims=True)), 1 / 1e-7)
//! ```
//!
//! The inverse norm is capped at `1 / epsilon` (rounded to the loss dtype: `inf` in float16),
//! so a zero vector gives `-0` (NaN in float16, `0 * inf`) and vectors shorter than 1e-7 are
//! scaled too little. A squared norm that overflows gives `rsqrt(inf) = 0`. In float16 and
//! bfloat16, `rsqrt` of a short tensor is not correctly rounded ([`rsqrt`]). `axis` is an
//! integer, a list of integers, or None (every axis: one loss for the whole batch).

use super::reduction::{collect, reduce_to, tf_sum};
use super::reduction::{only_known, Common};
use super::{Inputs, EPSILON};
use crate::backend::Gradients;
use crate::backend::{CallError, Value};
use crate::reference::tf_nn::l2::reduce_sum;
use crate::reference::tf_nn::nd::{canonical_axis, Fp, Nd};
use crate::reference::{Args, Kernel};
use crate::reference::{Backward, GradientKernel};
use crate::tensor::{DType, Tensor};

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[(
    "tf.keras.losses.CosineSimilarity",
    cosine_similarity_backward,
)];

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[("tf.keras.losses.CosineSimilarity", cosine_similarity)];

/// The `axis` option: `None` reduces every axis.
fn read_axis(a: &Args) -> Result<Option<Vec<i64>>, CallError> {
    match a.get("axis") {
        None => Ok(Some(vec![-1])),
        Some(Value::Null) => Ok(None),
        Some(Value::Int(i)) => Ok(Some(vec![*i])),
        Some(Value::IntList(l)) => Ok(Some(l.clone())),
        Some(v) => Err(CallError::argument(format!(
            "{}: 'axis' must be an integer, a list of integers or None, got {}",
            a.api(),
            v.describe()
        ))),
    }
}

/// For a `tf.reduce_sum` over `axes` of an array of `shape`: the output shape (with
/// `keepdims`, the reduced axes have size 1) and, for each element, the index of its output.
/// Errors as TensorFlow's "Invalid reduction dimension".
fn reduction_groups(
    shape: &[usize],
    axes: Option<&[i64]>,
) -> Result<(Vec<usize>, Vec<usize>), CallError> {
    let rank = shape.len();
    let mut reduced = vec![axes.is_none(); rank];
    for &axis in axes.unwrap_or(&[]) {
        let bad = |kind: fn(String) -> CallError| {
            kind(format!(
                "Invalid reduction dimension ({axis} for input with {rank} dimension(s)"
            ))
        };
        if rank == 0 {
            return Err(bad(CallError::shape));
        }
        let k = canonical_axis(axis, rank).ok_or_else(|| bad(CallError::argument))?;
        reduced[k] = true;
    }
    let kept: Vec<usize> = shape
        .iter()
        .zip(&reduced)
        .map(|(&d, &r)| if r { 1 } else { d })
        .collect();
    let n: usize = shape.iter().product();
    let mut group = Vec::with_capacity(n);
    let mut index = vec![0usize; rank];
    for _ in 0..n {
        let g = index
            .iter()
            .zip(&kept)
            .zip(&reduced)
            .fold(0, |acc, ((&i, &d), &r)| acc * d + if r { 0 } else { i });
        group.push(g);
        for ax in (0..rank).rev() {
            index[ax] += 1;
            if index[ax] < shape[ax] {
                break;
            }
            index[ax] = 0;
        }
    }
    Ok((kept, group))
}

/// The shape of a `keepdims=False` reduction of `shape` over `axes` (`None`: all, a 0-d
/// result); the axes were validated by [`reduction_groups`].
fn reduced_shape(shape: &[usize], axes: Option<&[i64]>) -> Vec<usize> {
    let Some(axes) = axes else { return vec![] };
    let reduced: Vec<usize> = axes
        .iter()
        .filter_map(|&axis| canonical_axis(axis, shape.len()))
        .collect();
    (0..shape.len())
        .filter(|k| !reduced.contains(k))
        .map(|k| shape[k])
        .collect()
}

/// `tf.reduce_sum(x, axes, keepdims=True)`, each output summing its terms in memory order.
fn sum_keepdims(p: Fp, x: &Nd, axes: Option<&[i64]>) -> Result<Nd, CallError> {
    let (kept, group) = reduction_groups(&x.shape, axes)?;
    let mut terms: Vec<Vec<f64>> = vec![Vec::new(); kept.iter().product()];
    for (&g, &v) in group.iter().zip(&x.data) {
        terms[g].push(v);
    }
    let data = terms.iter().map(|t| reduce_sum(p, t)).collect();
    Ok(Nd::new(kept, data))
}

/// Keras' `normalize(x, axis)` (order 2): `x * minimum(rsqrt(sum(x^2)), 1 / epsilon)`.
fn normalize(p: Fp, x: Nd, axes: Option<&[i64]>) -> Result<Nd, CallError> {
    let x = if x.rank() == 0 { x.expand(0) } else { x };
    let squares = x.map(|v| p.r(v * v));
    let cap = p.r(1.0 / EPSILON);
    let sums = sum_keepdims(p, &squares, axes)?;
    let vectorized = sums.len() / PACKET * PACKET;
    let inv: Vec<f64> = sums
        .data
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let r = rsqrt(p, s, i < vectorized);
            if r.is_nan() {
                r
            } else {
                r.min(cap)
            }
        })
        .collect();
    x.zip(&Nd::new(sums.shape.clone(), inv), |v, i| p.r(v * i))
}

/// Sums `x` by the groups of [`reduction_groups`] (TF's order: [`tf_sum`]).
fn group_sums(p: Fp, x: &[f64], group: &[usize], n: usize) -> Vec<f64> {
    let mut terms: Vec<Vec<f64>> = vec![Vec::new(); n];
    for (&g, &v) in group.iter().zip(x) {
        terms[g].push(v);
    }
    terms.iter().map(|t| tf_sum(p, t)).collect()
}

/// The backward of [`normalize`]: `Mul` (`g * m` to `x`, the group sum of `g * x` to `m`),
/// `Minimum` (the gradient reaches `rsqrt` where it is `<= 1 / epsilon`, ties included, not
/// where the cap applies or for NaN), TF's `RsqrtGrad` kernel `-0.5 * (g * y) * (y * y)`
/// (which is 0 for a zero gradient even where `y` is infinite), `Sum` and `Square` (`g * 2x`);
/// `x` adds both paths. A 0-d `x` comes back as `(1,)`.
fn normalize_backward(p: Fp, x: Nd, axes: Option<&[i64]>, g: &Nd) -> Result<Nd, CallError> {
    let x = if x.rank() == 0 { x.expand(0) } else { x };
    let squares = x.map(|v| p.r(v * v));
    let cap = p.r(1.0 / EPSILON);
    let sums = sum_keepdims(p, &squares, axes)?;
    let (_, group) = reduction_groups(&x.shape, axes)?;
    let vectorized = sums.len() / PACKET * PACKET;
    let inv: Vec<f64> = (0..sums.len())
        .map(|i| rsqrt(p, sums.data[i], i < vectorized))
        .collect();
    let m: Vec<f64> = inv
        .iter()
        .map(|&r| if r.is_nan() { r } else { r.min(cap) })
        .collect();
    let to_m: Vec<f64> = (0..x.len()).map(|i| p.r(g.data[i] * x.data[i])).collect();
    let g_m = group_sums(p, &to_m, &group, sums.len());
    let g_s: Vec<f64> = (0..sums.len())
        .map(|k| {
            let (r, gm) = (inv[k], g_m[k]);
            let g_r = if r <= cap { gm } else { 0.0 };
            // Eigen's rsqrt gradient returns 0 for a zero incoming gradient (no `0 * inf`).
            if g_r == 0.0 {
                0.0
            } else {
                p.r(p.r(-0.5 * p.r(g_r * r)) * p.r(r * r))
            }
        })
        .collect();
    let data = (0..x.len())
        .map(|i| {
            let k = group[i];
            let direct = p.r(g.data[i] * m[k]);
            p.r(direct + p.r(g_s[k] * p.r(2.0 * x.data[i])))
        })
        .collect();
    Ok(Nd::new(x.shape.clone(), data))
}

/// `-sum(normalize(y_true) * normalize(y_pred), axis)`: `Neg`, `Sum` (broadcast back), the
/// broadcast product, then [`normalize_backward`] for each input.
fn cosine_similarity_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    only_known(a, &["axis"])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let axes = read_axis(a)?;
    let axes = axes.as_deref();
    let inp = Inputs::read(a, c)?;
    let y_pred = normalize(p, inp.y_pred.clone(), axes)?;
    let y_true = normalize(p, inp.y_true.clone(), axes)?;
    let prod = y_true.zip(&y_pred, |t, y| p.r(t * y))?;
    let summed = sum_keepdims(p, &prod, axes)?;
    let (_, group) = reduction_groups(&prod.shape, axes)?;
    let values = summed.map(|s| -s).reshape(reduced_shape(&prod.shape, axes));
    let red = inp.finish_backward(&values, None, c, b)?;
    let g_prod: Vec<f64> = group.iter().map(|&k| -red.values.data[k]).collect();
    let g_prod = Nd::new(prod.shape.clone(), g_prod);
    let tb = y_true.broadcast_to(&prod.shape);
    let yb = y_pred.broadcast_to(&prod.shape);
    let g_nt = reduce_to(p, g_prod.zip(&yb, |g, y| p.r(g * y))?, &y_true.shape)?;
    let g_np = reduce_to(p, g_prod.zip(&tb, |g, t| p.r(g * t))?, &y_pred.shape)?;
    let g_true = normalize_backward(p, inp.y_true.clone(), axes, &g_nt)?;
    let g_pred = normalize_backward(p, inp.y_pred.clone(), axes, &g_np)?;
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

/// Lanes of Eigen's float16 / bfloat16 packets: elementwise ops evaluate the first
/// `len / PACKET * PACKET` elements with packet code, the rest one by one.
const PACKET: usize = 8;

/// `tf.math.rsqrt` of one element. The packet path computes in float32 and rounds once; Eigen's
/// scalar float16 / bfloat16 path (the tail of a tensor, every element of one shorter than a
/// packet) takes the square root in the dtype, rounds, then the reciprocal, rounds again: for
/// `5.359375` in float16, `0.43212890625` instead of the correctly rounded `0.431884765625`.
fn rsqrt(p: Fp, s: f64, packet: bool) -> f64 {
    match p.0 {
        DType::Float16 | DType::Bfloat16 if !packet => p.r(1.0 / p.r(s.sqrt())),
        _ => p.r(1.0 / s.sqrt()),
    }
}

fn cosine_similarity(a: &Args) -> Result<Tensor, CallError> {
    only_known(a, &["axis"])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let axes = read_axis(a)?;
    let axes = axes.as_deref();
    let inp = Inputs::read(a, c)?;
    let y_pred = normalize(p, inp.y_pred.clone(), axes)?;
    let y_true = normalize(p, inp.y_true.clone(), axes)?;
    let prod = y_true.zip(&y_pred, |t, y| p.r(t * y))?;
    let summed = sum_keepdims(p, &prod, axes)?;
    let values = summed.map(|s| -s).reshape(reduced_shape(&prod.shape, axes));
    inp.finish(values, None, c)
}

#[cfg(test)]
mod tests {
    use crate::backend::{Backend, Call, ErrorKind, Outcome, Value};
    use crate::reference::Reference;
    use crate::tensor::{DType, Tensor};

    fn t(dt: DType, shape: &[usize], data: &[f64]) -> Value {
        Value::Tensor(Tensor::from_f64(dt, shape.to_vec(), data.to_vec()).unwrap())
    }

    fn call(args: Vec<(&str, Value)>) -> Outcome {
        let call = Call {
            api: "tf.keras.losses.CosineSimilarity".into(),
            args: args.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        Reference.forward(&call)
    }

    fn value(o: Outcome) -> Tensor {
        match o {
            Outcome::Value(t) => t,
            other => panic!("expected a value, got {other:?}"),
        }
    }

    #[test]
    fn negative_cosine_per_sample() {
        let y_true = t(DType::Float64, &[3, 2], &[0.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
        let y_pred = t(DType::Float64, &[3, 2], &[1.0, 0.0, 1.0, 1.0, -1.0, -1.0]);
        let out = value(call(vec![
            ("y_true", y_true),
            ("y_pred", y_pred),
            ("reduction", Value::Str("none".into())),
            ("dtype", Value::Str("float64".into())),
        ]));
        let v = out.to_f64_vec();
        assert_eq!(out.shape(), &[3]);
        assert!(v[0] == 0.0 && (v[1] + 1.0).abs() < 1e-15 && (v[2] - 1.0).abs() < 1e-15);
    }

    #[test]
    fn axis_choices_and_zero_vectors() {
        let x = t(DType::Float32, &[2, 3], &[1.0, 2.0, 3.0, 1.0, 0.0, 0.0]);
        let y = t(DType::Float32, &[2, 3], &[1.0, 2.0, 3.0, 0.0, 1.0, 0.5]);
        let run = |axis: Value| {
            call(vec![
                ("y_true", x.clone()),
                ("y_pred", y.clone()),
                ("reduction", Value::Str("none".into())),
                ("axis", axis),
            ])
        };
        assert_eq!(value(run(Value::Int(0))).shape(), &[3]);
        assert_eq!(value(run(Value::Int(-2))), value(run(Value::Int(0))));
        assert_eq!(value(run(Value::Null)).shape(), &[] as &[usize]);
        let err = run(Value::Int(2));
        assert!(matches!(err, Outcome::Error(e) if e.kind == ErrorKind::Argument));
        let zero = value(call(vec![
            ("y_true", t(DType::Float32, &[1, 3], &[0.0; 3])),
            ("y_pred", t(DType::Float32, &[1, 3], &[1.0, 2.0, 3.0])),
            ("reduction", Value::Str("none".into())),
        ]));
        assert_eq!(zero.to_f64_vec(), vec![0.0]);
    }
}
