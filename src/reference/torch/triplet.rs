//! Reference kernels for `torch.nn.functional.triplet_margin_loss` and
//! `triplet_margin_with_distance_loss`.
//!
//! Both are `clamp_min(margin + d(a, p) - d_neg, 0)` with `d = pairwise_distance`, i.e.
//! `linalg.vector_norm(x1 - x2 + eps, p, dim=-1)`: eps is added to the difference vector, and
//! the norm accumulates `|x|^p` in the op-math type (float32 for float32 and the half types), so
//! a difference of 1e20 overflows float32. `p` is not validated: 0 counts non-zero entries,
//! +-inf take the max / min, anything else follows `(sum |x|^p)^(1/p)`. A norm with no identity
//! (p < 0 or inf) over an empty last dimension raises.

use super::margin::{
    add, add_scalar, clamp_min0, grad_to, neg, pass_where, put, reduction_backward, sub,
};
use super::reduction::{self, Reduction};
use super::{round_to, zip, Arr};
use crate::backend::Gradients;
use crate::backend::{CallError, Value};
use crate::reference::{Args, Kernel};
use crate::reference::{Backward, GradientKernel};
use crate::tensor::{DType, Tensor};
use ndarray::Axis;

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[
    (
        "torch.nn.functional.triplet_margin_loss",
        triplet_margin_loss,
    ),
    (
        "torch.nn.functional.triplet_margin_with_distance_loss",
        triplet_margin_with_distance_loss,
    ),
];

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[
    (
        "torch.nn.functional.triplet_margin_loss",
        triplet_margin_loss_backward,
    ),
    (
        "torch.nn.functional.triplet_margin_with_distance_loss",
        triplet_margin_with_distance_loss_backward,
    ),
];

/// Defaults of `torch.pairwise_distance`, the default distance of the `_with_distance` API.
const DEFAULT_P: f64 = 2.0;
const DEFAULT_EPS: f64 = 1e-6;

/// `|x|^p` summed and rooted as `linalg.vector_norm` does for one lane, in `acc`.
fn lane_norm(lane: &[f64], p: f64, acc: DType) -> f64 {
    let r = |v: f64| round_to(acc, v);
    let p_acc = r(p);
    let max_nan = |pick: fn(f64, f64) -> f64, init: f64| {
        lane.iter().fold(init, |m, &v| {
            if m.is_nan() || v.is_nan() {
                f64::NAN
            } else {
                pick(m, v.abs())
            }
        })
    };
    if p == 0.0 {
        lane.iter().filter(|&&v| v != 0.0).count() as f64
    } else if p == f64::INFINITY {
        max_nan(f64::max, 0.0)
    } else if p == f64::NEG_INFINITY {
        max_nan(f64::min, f64::INFINITY)
    } else if p == 1.0 {
        lane.iter().fold(0.0, |acc, v| r(acc + v.abs()))
    } else if p == 2.0 {
        r(norm_two_sum(lane, acc).sqrt())
    } else {
        // The general kernel accumulates one element at a time in op math (measured: float32
        // results equal a sequential float32 sum, not a pairwise one).
        let s = lane
            .iter()
            .fold(0.0, |acc, &v| r(acc + r(v.abs().powf(p_acc))));
        r(s.powf(r(1.0 / p_acc)))
    }
}

/// The sum of squares of the CPU `p = 2` last-dimension kernel, in its order (measured on
/// AVX2 to the bit for float32): whole vectors of 8 floats (4 doubles) accumulate lane by lane,
/// the lanes are summed in order, then the tail: blocks of 4 (2) with separately rounded squares
/// (the compiler's in-order vectorisation), the last few elements with a fused multiply-add.
fn norm_two_sum(lane: &[f64], acc: DType) -> f64 {
    let r = |v: f64| round_to(acc, v);
    let (width, block) = if acc == DType::Float64 {
        (4, 2)
    } else {
        (8, 4)
    };
    let mut lanes = vec![0.0; width];
    let mut chunks = lane.chunks_exact(width);
    for chunk in &mut chunks {
        for (a, &v) in lanes.iter_mut().zip(chunk) {
            *a = r(*a + r(v * v));
        }
    }
    let mut sum = lanes[1..].iter().fold(lanes[0], |s, &a| r(s + a));
    let tail = chunks.remainder();
    let mut blocks = tail.chunks_exact(block);
    for b in &mut blocks {
        for &v in b {
            sum = r(sum + r(v * v));
        }
    }
    for &v in blocks.remainder() {
        // v * v is exact in f64 for float32 values; for float64 use a real fma.
        sum = if acc == DType::Float64 {
            v.mul_add(v, sum)
        } else {
            r(sum + v * v)
        };
    }
    sum
}

/// `torch.pairwise_distance(x1, x2, p, eps)`: the norm of `x1 - x2 + eps` over the last axis
/// (a 0-d difference is its own one-element lane).
pub(crate) fn pairwise_distance(x1: &Arr, x2: &Arr, p: f64, eps: f64) -> Result<Arr, CallError> {
    let diff = add_scalar(&sub(x1, x2)?, eps);
    let dt = diff.dt;
    let acc = match dt {
        DType::Float64 => DType::Float64,
        _ => DType::Float32,
    };
    if diff.a.ndim() == 0 {
        let v = diff.a.iter().copied().collect::<Vec<_>>();
        return Ok(Arr::scalar(dt, lane_norm(&v, p, acc)));
    }
    let last = diff.a.ndim() - 1;
    if diff.shape()[last] == 0 && (p < 0.0 || p == f64::INFINITY) {
        return Err(CallError::shape(format!(
            "linalg.vector_norm cannot compute the {p} norm on the dimension {last}because this dimension is empty and the operation does not have an identity"
        )));
    }
    let a = diff.a.map_axis(Axis(last), |lane| {
        let v: Vec<f64> = lane.iter().copied().collect();
        match v.as_slice() {
            // An empty lane is the identity 0, whatever p (even NaN).
            [] => 0.0,
            // A last dimension of size 1 takes a shortcut: |x| for every p but 0, with no
            // overflow of |x|^p (measured; a 0-d input goes the general way).
            [x] if p != 0.0 => x.abs(),
            _ => round_to(dt, lane_norm(&v, p, acc)),
        }
    });
    Ok(Arr { dt, a })
}

fn same_rank(a: &Arr, p: &Arr, n: &Arr) -> Result<(), CallError> {
    let (da, dp, dn) = (a.a.ndim(), p.a.ndim(), n.a.ndim());
    if da == dp && dp == dn {
        return Ok(());
    }
    Err(CallError::shape(format!(
        "The anchor, positive, and negative tensors are expected to have the same number of dimensions, but got: anchor {da}D, positive {dp}D, and negative {dn}D inputs"
    )))
}

fn check_margin(margin: f64) -> Result<(), CallError> {
    // Python's `if margin <= 0`: NaN passes.
    if margin <= 0.0 {
        return Err(CallError::argument(format!(
            "margin must be greater than 0, got {margin}"
        )));
    }
    Ok(())
}

/// `clamp_min(margin + d(a, p) - d_neg, 0)`, `d_neg = min(d(a, n), d(p, n))` with swap.
fn triplet(
    anchor: &Arr,
    positive: &Arr,
    negative: &Arr,
    margin: f64,
    p: f64,
    eps: f64,
    swap: bool,
) -> Result<Arr, CallError> {
    let dist_pos = pairwise_distance(anchor, positive, p, eps)?;
    let mut dist_neg = pairwise_distance(anchor, negative, p, eps)?;
    if swap {
        let dist_swap = pairwise_distance(positive, negative, p, eps)?;
        dist_neg = zip(
            &dist_neg,
            &dist_swap,
            |_| Ok(()),
            |x, y| {
                if x.is_nan() || y.is_nan() {
                    f64::NAN
                } else {
                    x.min(y)
                }
            },
        )?;
    }
    let loss = sub(&add_scalar(&dist_pos, margin), &dist_neg)?;
    Ok(clamp_min0(&loss))
}

fn tensors(args: &Args) -> Result<(Arr, Arr, Arr), CallError> {
    Ok((
        Arr::of(args.tensor("anchor")?),
        Arr::of(args.tensor("positive")?),
        Arr::of(args.tensor("negative")?),
    ))
}

pub fn triplet_margin_loss(args: &Args) -> Result<Tensor, CallError> {
    let (anchor, positive, negative) = tensors(args)?;
    let margin = super::float_arg(args, "margin", 1.0)?;
    let p = super::float_arg(args, "p", DEFAULT_P)?;
    let eps = super::float_arg(args, "eps", DEFAULT_EPS)?;
    let swap = args.bool_or("swap", false)?;
    let red = reduction::read(args, true)?.get_enum()?;
    check_margin(margin)?;
    same_rank(&anchor, &positive, &negative)?;
    let loss = triplet(&anchor, &positive, &negative, margin, p, eps, swap)?;
    Ok(reduction::apply(loss, red)?.tensor())
}

/// Python truthiness of `swap` (`if swap:`).
fn truthy(args: &Args, name: &'static str) -> Result<bool, CallError> {
    Ok(match args.get(name) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Int(i)) => *i != 0,
        Some(Value::Float(x)) => *x != 0.0,
        Some(Value::Str(s)) => !s.is_empty(),
        Some(Value::IntList(v)) => !v.is_empty(),
        Some(Value::Tensor(t)) => {
            if t.numel() != 1 {
                return Err(CallError::argument(format!(
                    "Boolean value of Tensor with more than one value is ambiguous ('{name}')"
                )));
            }
            t.to_f64_vec()[0] != 0.0
        }
    })
}

pub fn triplet_margin_with_distance_loss(args: &Args) -> Result<Tensor, CallError> {
    let (anchor, positive, negative) = tensors(args)?;
    let distance_function = args.get("distance_function");
    let margin = super::float_arg(args, "margin", 1.0)?;
    let swap = truthy(args, "swap")?;
    let red = reduction::read(args, false)?
        .strict(|shown| format!("{shown} is not a valid value for reduction"))?;
    check_margin(margin)?;
    same_rank(&anchor, &positive, &negative)?;
    // A callable cannot cross the wire; anything else fails when Python calls it.
    if let Some(v) = distance_function.filter(|v| **v != Value::Null) {
        return Err(CallError::argument(format!(
            "'{}' object is not callable",
            v.describe()
        )));
    }
    let loss = triplet(
        &anchor,
        &positive,
        &negative,
        margin,
        DEFAULT_P,
        DEFAULT_EPS,
        swap,
    )?;
    Ok(match red {
        Reduction::None => loss,
        _ => reduction::apply(loss, red)?,
    }
    .tensor())
}

// ---------------------------------------------------------------------------------------------
// Backward: PyTorch differentiates the composite op by op (derivatives.yaml).

/// `norm_backward(grad, self, p, result, dim=-1)` of `at::norm`, the formula autograd uses for
/// `pairwise_distance`'s norm, op by op in the difference's dtype: p = 2 is
/// `grad * (self / norm)` with 0 where the norm is 0; p = 1 `sgn(self) * grad`; p = 0 no
/// gradient; +-inf splits `grad` evenly among the entries whose `|x|` equals the norm; other p
/// scale `sgn(self) |self|^(p-1)` by `grad / norm^(p-1)` (0 where the norm is 0; for p < 1 the
/// entries that are 0 get 0 and the factor is `grad * norm^(1-p)`).
fn norm_backward(diff: &Arr, norm: &Arr, grad: &Arr, p: f64) -> Result<Arr, CallError> {
    let dt = diff.dt;
    let r = |v: f64| round_to(dt, v);
    // keepdim=False: grad and norm get the reduced axis back (a 0-d difference is its own lane).
    let lanes = |x: &Arr| -> Result<Arr, CallError> {
        if diff.a.ndim() == 0 {
            return Ok(x.clone());
        }
        let last = diff.a.ndim() - 1;
        Arr {
            dt: x.dt,
            a: x.a.clone().insert_axis(Axis(last)),
        }
        .expand(diff.shape())
    };
    let g = lanes(grad)?;
    let n = lanes(norm)?;
    // `sgn` of a real tensor is `sign`: (0 < x) - (x < 0), so NaN gives 0.
    let sgn = |x: f64| {
        if x.is_nan() || x == 0.0 {
            0.0
        } else {
            x.signum()
        }
    };
    let mut out = diff.a.clone();
    if p.is_infinite() {
        // nb_max: how many entries of each lane attain the norm (or are NaN with a NaN norm).
        let is_max = |x: f64, n: f64| x.abs() == n || (x.is_nan() && n.is_nan());
        let mut count = diff.a.clone();
        if diff.a.ndim() == 0 {
            count.fill(is_max(
                diff.a.iter().copied().next().unwrap_or(0.0),
                n.a.iter().copied().next().unwrap_or(0.0),
            ) as u8 as f64);
        } else {
            let last = diff.a.ndim() - 1;
            let mut flags = diff.a.clone();
            ndarray::Zip::from(&mut flags)
                .and(&diff.a)
                .and(&n.a)
                .for_each(|f, &x, &nv| *f = is_max(x, nv) as u8 as f64);
            let sums = flags.sum_axis(Axis(last)).insert_axis(Axis(last));
            count = sums
                .broadcast(diff.a.raw_dim())
                .expect("lane counts")
                .to_owned();
        }
        ndarray::Zip::from(&mut out)
            .and(&diff.a)
            .and(&n.a)
            .and(&g.a)
            .and(&count)
            .for_each(|o, &x, &nv, &gv, &c| {
                let scaled = r(sgn(x) * is_max(x, nv) as u8 as f64);
                *o = r(scaled * r(gv / c));
            });
    } else {
        ndarray::Zip::from(&mut out)
            .and(&diff.a)
            .and(&n.a)
            .and(&g.a)
            .for_each(|o, &x, &nv, &gv| {
                *o = if p == 0.0 {
                    0.0
                } else if p == 1.0 {
                    r(sgn(x) * gv)
                } else if p == 2.0 {
                    if nv == 0.0 {
                        0.0
                    } else {
                        r(gv * r(x / nv))
                    }
                } else if p < 1.0 {
                    let scaled = if x == 0.0 {
                        0.0
                    } else {
                        r(sgn(x) * r(x.abs().powf(p - 1.0)))
                    };
                    r(r(scaled * gv) * r(nv.powf(1.0 - p)))
                } else {
                    let scaled = if p < 2.0 {
                        r(sgn(x) * r(x.abs().powf(p - 1.0)))
                    } else {
                        r(x * r(x.abs().powf(p - 2.0)))
                    };
                    let scale = if nv == 0.0 {
                        0.0
                    } else {
                        r(gv / r(nv.powf(p - 1.0)))
                    };
                    r(scaled * scale)
                };
            });
    }
    Ok(Arr { dt, a: out })
}

/// The gradients of `pairwise_distance(x1, x2, p, eps)` for the distance gradient `grad`:
/// `norm_backward` of `x1 - x2 + eps` (eps passes the gradient unchanged), then `grad` and
/// `-grad`, each reduced to its input's shape and dtype.
fn pairwise_distance_backward(
    x1: &Arr,
    x2: &Arr,
    p: f64,
    eps: f64,
    grad: &Arr,
) -> Result<(Arr, Arr), CallError> {
    let diff = add_scalar(&sub(x1, x2)?, eps);
    let norm = pairwise_distance(x1, x2, p, eps)?;
    let grad = grad_to(grad, norm.shape(), norm.dt)?;
    let g = norm_backward(&diff, &norm, &grad, p)?;
    Ok((
        grad_to(&g, x1.shape(), x1.dt)?,
        grad_to(&neg(&g)?, x2.shape(), x2.dt)?,
    ))
}

/// The backward of `torch.min(self, other)` / `torch.minimum`: ties split the gradient in
/// half, otherwise it goes to the smaller one (and to both where a NaN makes them unordered).
fn minimum_backward(a: &Arr, b: &Arr, g: &Arr) -> Result<(Arr, Arr), CallError> {
    let split = |drop: fn(f64, f64) -> bool| -> Result<Arr, CallError> {
        let shape = super::broadcast_shapes(a.shape(), b.shape())?;
        let (a, b, g) = (a.expand(&shape)?, b.expand(&shape)?, g.expand(&shape)?);
        let mut out = g.a.clone();
        ndarray::Zip::from(&mut out)
            .and(&a.a)
            .and(&b.a)
            .and(&g.a)
            .for_each(|o, &x, &y, &gv| {
                let v = if x == y { round_to(g.dt, gv / 2.0) } else { gv };
                *o = if drop(x, y) { 0.0 } else { v };
            });
        Ok(Arr { dt: g.dt, a: out })
    };
    Ok((
        grad_to(&split(|x, y| x > y)?, a.shape(), a.dt)?,
        grad_to(&split(|x, y| x < y)?, b.shape(), b.dt)?,
    ))
}

/// The backward of [`triplet`] (both APIs): clamp_min passes the gradient where
/// `margin + d(a, p) - d_neg > 0` (none at exactly 0), `d(a, p)` gets it and `d_neg` its
/// negation (through `minimum` with swap), then each distance's `pairwise_distance_backward`;
/// an input used by two distances accumulates both, as autograd does.
#[allow(clippy::too_many_arguments)]
fn triplet_backward(
    args: &Args,
    bw: &Backward,
    margin: f64,
    p: f64,
    eps: f64,
    swap: bool,
    red: Reduction,
) -> Result<Gradients, CallError> {
    let (anchor, positive, negative) = tensors(args)?;
    let dist_pos = pairwise_distance(&anchor, &positive, p, eps)?;
    let dist_an = pairwise_distance(&anchor, &negative, p, eps)?;
    let dist_swap = if swap {
        Some(pairwise_distance(&positive, &negative, p, eps)?)
    } else {
        None
    };
    let loss = triplet(&anchor, &positive, &negative, margin, p, eps, swap)?;
    let pre = {
        let mut dist_neg = dist_an.clone();
        if let Some(s) = &dist_swap {
            dist_neg = zip(
                &dist_an,
                s,
                |_| Ok(()),
                |x, y| {
                    if x.is_nan() || y.is_nan() {
                        f64::NAN
                    } else {
                        x.min(y)
                    }
                },
            )?;
        }
        sub(&add_scalar(&dist_pos, margin), &dist_neg)?
    };
    let g = reduction_backward(&Arr::of(bw.grad_output), loss.shape(), red)?;
    let g = pass_where(&pre, |v| v > 0.0, &g)?;
    let g_pos = grad_to(&g, dist_pos.shape(), dist_pos.dt)?;
    let g_neg = neg(&g)?;
    let (g_an, g_swap) = match &dist_swap {
        Some(s) => {
            let (x, y) = minimum_backward(&dist_an, s, &g_neg)?;
            (x, Some(y))
        }
        None => (grad_to(&g_neg, dist_an.shape(), dist_an.dt)?, None),
    };
    let (ga1, gp1) = pairwise_distance_backward(&anchor, &positive, p, eps, &g_pos)?;
    let (ga2, gn1) = pairwise_distance_backward(&anchor, &negative, p, eps, &g_an)?;
    let mut g_anchor = add(&ga1, &ga2)?;
    let mut g_positive = gp1;
    let mut g_negative = gn1;
    if let Some(gs) = &g_swap {
        let (gp2, gn2) = pairwise_distance_backward(&positive, &negative, p, eps, gs)?;
        g_positive = add(&g_positive, &gp2)?;
        g_negative = add(&g_negative, &gn2)?;
    }
    g_anchor = grad_to(&g_anchor, anchor.shape(), anchor.dt)?;
    let mut out = Gradients::new();
    put(&mut out, bw, "anchor", &g_anchor);
    put(&mut out, bw, "positive", &g_positive);
    put(&mut out, bw, "negative", &g_negative);
    Ok(out)
}

pub fn triplet_margin_loss_backward(args: &Args, bw: &Backward) -> Result<Gradients, CallError> {
    let margin = super::float_arg(args, "margin", 1.0)?;
    let p = super::float_arg(args, "p", DEFAULT_P)?;
    let eps = super::float_arg(args, "eps", DEFAULT_EPS)?;
    let swap = args.bool_or("swap", false)?;
    let red = reduction::read(args, true)?.get_enum()?;
    triplet_backward(args, bw, margin, p, eps, swap, red)
}

pub fn triplet_margin_with_distance_loss_backward(
    args: &Args,
    bw: &Backward,
) -> Result<Gradients, CallError> {
    let margin = super::float_arg(args, "margin", 1.0)?;
    let swap = truthy(args, "swap")?;
    let red = reduction::read(args, false)?
        .strict(|shown| format!("{shown} is not a valid value for reduction"))?;
    triplet_backward(args, bw, margin, DEFAULT_P, DEFAULT_EPS, swap, red)
}

#[cfg(test)]
mod tests {
    use super::super::margin::tests::{call, error_kind, f64s, grads, s, t, value};
    use crate::backend::{ErrorKind, Outcome, Value};
    use crate::tensor::DType;

    fn triple(dt: DType, shape: &[usize]) -> [(&'static str, Value); 3] {
        let n: usize = shape.iter().product();
        let gen = |k: f64| -> Vec<f64> {
            (0..n)
                .map(|i| ((i as f64 + k) * 0.37).sin() * 2.0)
                .collect()
        };
        [
            ("anchor", t(dt, shape, &gen(0.0))),
            ("positive", t(dt, shape, &gen(1.3))),
            ("negative", t(dt, shape, &gen(2.9))),
        ]
    }

    #[test]
    fn default_distance_equals_triplet_margin_loss() {
        for dt in [
            DType::Float16,
            DType::Bfloat16,
            DType::Float32,
            DType::Float64,
        ] {
            for swap in [false, true] {
                for red in ["none", "mean", "sum"] {
                    let mut args = triple(dt, &[5, 3]).to_vec();
                    args.push(("swap", Value::Bool(swap)));
                    args.push(("reduction", s(red)));
                    args.push(("margin", Value::Float(0.7)));
                    let a = value("triplet_margin_loss", &args);
                    let b = value("triplet_margin_with_distance_loss", &args);
                    assert_eq!(a, b, "{dt} swap={swap} {red}");
                    assert_eq!(a.dtype(), dt);
                }
            }
        }
    }

    #[test]
    fn shapes_swap_and_eps() {
        let args = triple(DType::Float64, &[2, 3, 4]);
        let mut none = args.to_vec();
        none.push(("reduction", s("none")));
        let out = value("triplet_margin_loss", &none);
        assert_eq!(out.shape(), &[2, 3]);
        // swap can only lower the negative distance, so only raise the loss.
        let mut swapped = none.clone();
        swapped.push(("swap", Value::Bool(true)));
        let sw = value("triplet_margin_loss", &swapped);
        for (a, b) in out.to_f64_vec().iter().zip(sw.to_f64_vec()) {
            assert!(b >= *a);
        }
        // Identical inputs: both distances are equal, so the loss is the margin.
        let x = f64s(&[2, 3], &[1.0, 2.0, 3.0, 0.0, 0.0, 0.0]);
        let same = value(
            "triplet_margin_loss",
            &[
                ("anchor", x.clone()),
                ("positive", x.clone()),
                ("negative", x.clone()),
                ("margin", Value::Float(0.5)),
                ("reduction", s("none")),
            ],
        );
        assert_eq!(same.to_f64_vec(), vec![0.5, 0.5]);
        // 0-d inputs give a 0-d loss.
        let scalar = value(
            "triplet_margin_loss",
            &[
                ("anchor", f64s(&[], &[0.0])),
                ("positive", f64s(&[], &[1.0])),
                ("negative", f64s(&[], &[0.5])),
                ("reduction", s("none")),
            ],
        );
        assert_eq!(scalar.shape(), &[] as &[usize]);
    }

    #[test]
    fn error_kinds() {
        let args = triple(DType::Float32, &[2, 3]);
        for api in ["triplet_margin_loss", "triplet_margin_with_distance_loss"] {
            for m in [0.0, -1.0] {
                let mut a = args.to_vec();
                a.push(("margin", Value::Float(m)));
                assert_eq!(error_kind(api, &a), ErrorKind::Argument);
            }
            let mut nan = args.to_vec();
            nan.push(("margin", Value::Str("nan".into())));
            assert!(matches!(call(api, &nan), Outcome::Value(_)));
            let mut bad = args.to_vec();
            bad.push(("reduction", s("avg")));
            assert_eq!(error_kind(api, &bad), ErrorKind::Argument);
            let mut rank = args.to_vec();
            rank[0] = ("anchor", t(DType::Float32, &[3], &[0.0; 3]));
            assert_eq!(error_kind(api, &rank), ErrorKind::Shape);
            let mut sizes = args.to_vec();
            sizes[2] = ("negative", t(DType::Float32, &[2, 2], &[0.0; 4]));
            assert_eq!(error_kind(api, &sizes), ErrorKind::Shape);
        }
        let mut p = args.to_vec();
        p.push(("p", Value::Int(1)));
        assert_eq!(
            error_kind("triplet_margin_with_distance_loss", &p),
            ErrorKind::Argument
        );
        let mut callable = args.to_vec();
        callable.push(("distance_function", s("cosine")));
        assert_eq!(
            error_kind("triplet_margin_with_distance_loss", &callable),
            ErrorKind::Argument
        );
        // A norm without identity over an empty last dimension raises.
        let empty = [
            ("anchor", f64s(&[2, 0], &[])),
            ("positive", f64s(&[2, 0], &[])),
            ("negative", f64s(&[2, 0], &[])),
        ];
        let mut neg_p = empty.to_vec();
        neg_p.push(("p", Value::Float(-1.0)));
        assert_eq!(error_kind("triplet_margin_loss", &neg_p), ErrorKind::Shape);
        let zero = value("triplet_margin_loss", &empty);
        assert_eq!(zero.to_f64_vec(), vec![1.0]);
    }

    #[test]
    fn swap_tie_splits_the_negative_gradient_in_half() {
        // a = p: d(a, n) = d(p, n) exactly, so with swap the gradient of d_neg goes half to
        // each distance: the positive gains what the anchor loses, relative to no swap.
        let a = [0.5, -1.0, 2.0];
        let n = [1.5, 0.0, -1.0];
        let run = |swap: bool| {
            grads(
                "triplet_margin_loss",
                &[
                    ("anchor", f64s(&[3], &a)),
                    ("positive", f64s(&[3], &a)),
                    ("negative", f64s(&[3], &n)),
                    ("margin", Value::Float(5.0)),
                    ("swap", Value::Bool(swap)),
                ],
                &["anchor", "positive", "negative"],
            )
        };
        let (plain, swapped) = (run(false), run(true));
        let v = |g: &crate::backend::Gradients, k: &str| g[k].to_f64_vec();
        for i in 0..3 {
            let lost = v(&plain, "anchor")[i] - v(&swapped, "anchor")[i];
            let gained = v(&swapped, "positive")[i] - v(&plain, "positive")[i];
            assert!(
                lost != 0.0 && (lost - gained).abs() < 1e-15,
                "{lost} {gained}"
            );
            // The negative gets the whole gradient either way.
            assert_eq!(v(&plain, "negative")[i], v(&swapped, "negative")[i]);
        }
    }
}
