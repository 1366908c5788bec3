//! Reference kernels for the margin losses of `torch.nn.functional`: `margin_ranking_loss`,
//! `hinge_embedding_loss`, `soft_margin_loss`, `multilabel_margin_loss`, `multi_margin_loss`.
//!
//! The first three are chains of ATen tensor ops, modelled op by op on [`Arr`]: C++'s
//! `scalar - tensor` is `empty_like(tensor).fill_(scalar).sub_(tensor)`, so the scalar is first
//! cast to the tensor's dtype (a margin of 1.5 is 1 for an int64 input), while `tensor + scalar`
//! is a wrapped-number add (an int64 tensor plus a float margin is float32). The last two are
//! dedicated CPU kernels: float32/float64 only, a term is added only when it is `> 0` (so NaN
//! contributes nothing), per-sample sums in the input dtype and batch sums in double.

use super::reduction::{self, Reduction};
use super::{broadcast_shapes, result_type, round_to, torch_dtype_name, zip, zip_inplace, Arr};
use crate::backend::Gradients;
use crate::backend::{CallError, Value};
use crate::reference::gradient::{self, Backward};
use crate::reference::GradientKernel;
use crate::reference::{Args, Kernel};
use crate::tensor::{DType, Tensor};
use ndarray::{ArrayD, IxDyn};

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[
    (
        "torch.nn.functional.hinge_embedding_loss",
        hinge_embedding_loss,
    ),
    (
        "torch.nn.functional.margin_ranking_loss",
        margin_ranking_loss,
    ),
    ("torch.nn.functional.multi_margin_loss", multi_margin_loss),
    (
        "torch.nn.functional.multilabel_margin_loss",
        multilabel_margin_loss,
    ),
    ("torch.nn.functional.soft_margin_loss", soft_margin_loss),
];

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[
    (
        "torch.nn.functional.hinge_embedding_loss",
        hinge_embedding_loss_backward,
    ),
    (
        "torch.nn.functional.margin_ranking_loss",
        margin_ranking_loss_backward,
    ),
    (
        "torch.nn.functional.multi_margin_loss",
        multi_margin_loss_backward,
    ),
    (
        "torch.nn.functional.multilabel_margin_loss",
        multilabel_margin_loss_backward,
    ),
    (
        "torch.nn.functional.soft_margin_loss",
        soft_margin_loss_backward,
    ),
];

// ---------------------------------------------------------------------------------------------
// Tensor ops shared with the cosine and triplet kernels.

/// `-x`: bool is rejected, integers wrap.
pub(crate) fn neg(x: &Arr) -> Result<Arr, CallError> {
    if x.dt == DType::Bool {
        return Err(CallError::dtype(
            "Negation, the `-` operator, on a bool tensor is not supported.",
        ));
    }
    Ok(x.map(x.dt, |v| -v))
}

/// Wraps an exact integer result into an integer dtype.
fn wrap_int(dt: DType, v: i64) -> f64 {
    match dt {
        DType::Int32 => v as i32 as f64,
        DType::Uint8 => v as u8 as f64,
        DType::Bool => (v != 0) as i64 as f64,
        _ => v as f64,
    }
}

/// `a - b` with broadcasting and promotion; bool operands are rejected, integers wrap.
pub(crate) fn sub(a: &Arr, b: &Arr) -> Result<Arr, CallError> {
    if a.dt == DType::Bool || b.dt == DType::Bool {
        return Err(CallError::dtype(
            "Subtraction, the `-` operator, with two bool tensors is not supported.",
        ));
    }
    let dt = result_type(&[(a.dt, a.is_0d()), (b.dt, b.is_0d())]);
    if dt.is_float() {
        zip(a, b, |_| Ok(()), |x, y| x - y)
    } else {
        zip(
            a,
            b,
            |_| Ok(()),
            move |x, y| wrap_int(dt, (x as i64).wrapping_sub(y as i64)),
        )
    }
}

/// `a * b` with broadcasting and promotion; integers wrap.
pub(crate) fn mul(a: &Arr, b: &Arr) -> Result<Arr, CallError> {
    let dt = result_type(&[(a.dt, a.is_0d()), (b.dt, b.is_0d())]);
    if dt.is_float() {
        zip(a, b, |_| Ok(()), |x, y| x * y)
    } else {
        zip(
            a,
            b,
            |_| Ok(()),
            move |x, y| wrap_int(dt, (x as i64).wrapping_mul(y as i64)),
        )
    }
}

/// `a + b` with broadcasting and promotion; integers wrap.
pub(crate) fn add(a: &Arr, b: &Arr) -> Result<Arr, CallError> {
    let dt = result_type(&[(a.dt, a.is_0d()), (b.dt, b.is_0d())]);
    if dt.is_float() {
        zip(a, b, |_| Ok(()), |x, y| x + y)
    } else if dt == DType::Bool {
        zip(
            a,
            b,
            |_| Ok(()),
            |x, y| ((x != 0.0) || (y != 0.0)) as u8 as f64,
        )
    } else {
        zip(
            a,
            b,
            |_| Ok(()),
            move |x, y| wrap_int(dt, (x as i64).wrapping_add(y as i64)),
        )
    }
}

/// `tensor + s` for a Python float `s` (a wrapped number): a float tensor keeps its dtype (the
/// addend is first rounded to it, measured for float16/bfloat16), an integer or bool tensor
/// gives the default dtype float32.
pub(crate) fn add_scalar(x: &Arr, s: f64) -> Arr {
    let dt = if x.dt.is_float() {
        x.dt
    } else {
        DType::Float32
    };
    let s = round_to(dt, s);
    Arr {
        dt,
        a: x.a.mapv(|v| round_to(dt, round_to(dt, v) + s)),
    }
}

/// C++'s `s - tensor`: `empty_like(tensor).fill_(s).sub_(tensor)`, so `s` is cast to the
/// tensor's dtype (truncated for integers) and the result keeps that dtype.
pub(crate) fn rsub_scalar(s: f64, x: &Arr) -> Result<Arr, CallError> {
    if x.dt == DType::Bool {
        return Err(CallError::dtype(
            "Subtraction, the `-` operator, with two bool tensors is not supported.",
        ));
    }
    // fill_ checks the conversion: a finite value beyond the dtype's range (or a non-finite
    // one for an integer dtype) raises; uint8 accepts negatives down to -255 (two's complement).
    let (lo, hi) = match x.dt {
        DType::Float16 => (-65504.0, 65504.0),
        DType::Bfloat16 => (-half::bf16::MAX.to_f64(), half::bf16::MAX.to_f64()),
        DType::Float32 => (-(f32::MAX as f64), f32::MAX as f64),
        DType::Float64 => (f64::MIN, f64::MAX),
        DType::Int32 => (i32::MIN as f64, i32::MAX as f64),
        DType::Int64 => (i64::MIN as f64, i64::MAX as f64),
        DType::Uint8 => (-255.0, 255.0),
        DType::Bool => (f64::NEG_INFINITY, f64::INFINITY),
    };
    // A one-element half tensor is filled by a path that casts without the check (measured).
    let unchecked = x.a.len() == 1 && matches!(x.dt, DType::Float16 | DType::Bfloat16);
    let fits = if unchecked {
        true
    } else if x.dt.is_float() {
        !s.is_finite() || (lo..=hi).contains(&s)
    } else {
        (lo..=hi).contains(&s)
    };
    if !fits {
        return Err(CallError::argument(format!(
            "value cannot be converted to type {} without overflow",
            torch_dtype_name(x.dt)
        )));
    }
    let filled = Arr {
        dt: x.dt,
        a: ArrayD::from_elem(IxDyn(x.shape()), round_to(x.dt, s)),
    };
    sub(&filled, x)
}

/// `x.clamp_min(0)`: NaN propagates, the dtype is kept.
pub(crate) fn clamp_min0(x: &Arr) -> Arr {
    x.map(x.dt, |v| if v.is_nan() { v } else { v.max(0.0) })
}

/// `torch.where(pred(cond), a, b)` with three-way broadcasting; the result has the promoted
/// dtype of `a` and `b`.
pub(crate) fn where_(
    cond: &Arr,
    pred: impl Fn(f64) -> bool,
    a: &Arr,
    b: &Arr,
) -> Result<Arr, CallError> {
    let shape = broadcast_shapes(cond.shape(), a.shape())?;
    let shape = broadcast_shapes(&shape, b.shape())?;
    let dt = result_type(&[(a.dt, a.is_0d()), (b.dt, b.is_0d())]);
    let c = cond.expand(&shape)?;
    let a = a.expand(&shape)?;
    let b = b.expand(&shape)?;
    let mut out = ArrayD::zeros(IxDyn(&shape));
    ndarray::Zip::from(&mut out)
        .and(&c.a)
        .and(&a.a)
        .and(&b.a)
        .for_each(|o, &c, &x, &y| *o = round_to(dt, if pred(c) { x } else { y }));
    Ok(Arr { dt, a: out })
}

/// `zeros_like(x)`.
pub(crate) fn zeros_like(x: &Arr) -> Arr {
    Arr {
        dt: x.dt,
        a: ArrayD::zeros(IxDyn(x.shape())),
    }
}

/// The `reduction` of an API with the legacy `size_average` / `reduce` pair.
fn legacy_reduction(args: &Args) -> Result<Reduction, CallError> {
    reduction::read(args, true)?.get_enum()
}

// ---------------------------------------------------------------------------------------------
// Elementwise margin losses.

pub fn margin_ranking_loss(args: &Args) -> Result<Tensor, CallError> {
    let input1 = Arr::of(args.tensor("input1")?);
    let input2 = Arr::of(args.tensor("input2")?);
    let target = Arr::of(args.tensor("target")?);
    let margin = super::float_arg(args, "margin", 0.0)?;
    let red = legacy_reduction(args)?;
    let (d1, d2, dt) = (input1.a.ndim(), input2.a.ndim(), target.a.ndim());
    if d1 != d2 || d1 != dt {
        return Err(CallError::shape(format!(
            "margin_ranking_loss : All input tensors should have same dimension but got sizes: input1: {:?}, input2: {:?}, target: {:?}",
            input1.shape(),
            input2.shape(),
            target.shape()
        )));
    }
    // (-target * (input1 - input2) + margin).clamp_min_(0)
    let neg_target = neg(&target)?;
    let diff = sub(&input1, &input2)?;
    let prod = mul(&neg_target, &diff)?;
    let loss = clamp_min0(&add_scalar(&prod, margin));
    Ok(reduction::apply(loss, red)?.tensor())
}

pub fn hinge_embedding_loss(args: &Args) -> Result<Tensor, CallError> {
    let input = Arr::of(args.tensor("input")?);
    let target = Arr::of(args.tensor("target")?);
    let margin = super::float_arg(args, "margin", 1.0)?;
    let red = legacy_reduction(args)?;
    // where(target != 1, (margin - self).clamp_min_(0), 0) + where(target != -1, self, 0)
    let zeros = zeros_like(&input);
    let margin_clamp = clamp_min0(&rsub_scalar(margin, &input)?);
    let output_margin = where_(&target, |t| t != 1.0, &margin_clamp, &zeros)?;
    let output_self = where_(&target, |t| t != -1.0, &input, &zeros)?;
    let loss = add(&output_margin, &output_self)?;
    Ok(reduction::apply(loss, red)?.tensor())
}

pub fn soft_margin_loss(args: &Args) -> Result<Tensor, CallError> {
    let input = Arr::of(args.tensor("input")?);
    let target = Arr::of(args.tensor("target")?);
    let red = legacy_reduction(args)?;
    // at::neg_out(output, input).mul_(target).exp_().log1p_(): in place, in the input's dtype.
    let out = neg(&input)?;
    let out = zip_inplace(&out, &target, |a, b| a * b)?;
    if !out.dt.is_float() {
        return Err(CallError::dtype(format!(
            "result type Float can't be cast to the desired output type {}",
            torch_dtype_name(out.dt)
        )));
    }
    let out = out.map(out.dt, f64::exp);
    let out = out.map(out.dt, f64::ln_1p);
    Ok(reduction::apply(out, red)?.tensor())
}

// ---------------------------------------------------------------------------------------------
// The class-index kernels.

/// `(nframe, dim)` of a `multi*_margin_loss` input: `()`, `(C)` or `(N, C)` with `C > 0`.
fn frames(input: &Arr) -> Result<(usize, usize), CallError> {
    let s = input.shape();
    match s.len() {
        0 => Ok((1, 1)),
        1 if s[0] != 0 => Ok((1, s[0])),
        2 if s[1] != 0 => Ok((s[0], s[1])),
        _ => Err(CallError::shape(format!(
            "Expected non-empty vector or matrix with optional 0-dim batch size, but got: {s:?}"
        ))),
    }
}

/// The CPU kernels dispatch on float32 and float64 only.
fn kernel_float(op: &str, dt: DType) -> Result<(), CallError> {
    if matches!(dt, DType::Float32 | DType::Float64) {
        Ok(())
    } else {
        Err(CallError::dtype(format!(
            "\"{op}\" not implemented for '{}'",
            torch_dtype_name(dt)
        )))
    }
}

fn expect_dtype(t: DType, want: DType) -> Result<(), CallError> {
    if t == want {
        Ok(())
    } else {
        Err(CallError::dtype(format!(
            "expected scalar type {} but found {}",
            torch_dtype_name(want),
            torch_dtype_name(t)
        )))
    }
}

/// The loss tensor of a kernel whose batch is empty: `(0,)` for reduction none. Mean and sum
/// return uninitialised memory in PyTorch; NaN and 0 stand in for it.
fn empty_result(dt: DType, shape: Vec<usize>, red: Reduction) -> Tensor {
    let data = match red {
        Reduction::None => vec![0.0; shape.iter().product()],
        Reduction::Mean => vec![f64::NAN],
        Reduction::Sum => vec![0.0],
    };
    Tensor::from_f64(dt, shape, data).expect("loss shape")
}

pub fn multilabel_margin_loss(args: &Args) -> Result<Tensor, CallError> {
    let input = Arr::of(args.tensor("input")?);
    let target_t = args.tensor("target")?;
    let target = Arr::of(target_t);
    let red = legacy_reduction(args)?;
    let (nframe, dim) = frames(&input)?;
    let tshape = target.shape();
    let target_ok = if input.a.ndim() <= 1 {
        tshape.len() <= 1 && target.a.len() == dim
    } else {
        tshape == [nframe, dim]
    };
    if !target_ok {
        return Err(CallError::shape(format!(
            "inconsistent target size: {tshape:?} for input of size: {:?}",
            input.shape()
        )));
    }
    let out_shape = if red != Reduction::None || tshape.len() <= 1 {
        vec![]
    } else {
        vec![nframe]
    };
    if input.a.is_empty() {
        return Ok(empty_result(input.dt, out_shape, red));
    }
    // target.min() >= -1 and target.max() < dim, read as int64 whatever the dtype.
    let labels: Vec<f64> = target.a.iter().map(|&v| v.trunc()).collect();
    let lo = labels.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = labels.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let in_range = lo >= -1.0 && hi < dim as f64;
    if !in_range {
        return Err(CallError::value("argument #2 'target' is out of range"));
    }
    kernel_float("multilabel_margin_loss_forward_out_frame", input.dt)?;
    expect_dtype(target_t.dtype(), DType::Int64)?;
    let dt = input.dt;
    let r = |v: f64| round_to(dt, v);
    let x: Vec<f64> = input.a.iter().copied().collect();
    let per_frame: Vec<f64> = (0..nframe)
        .map(|n| {
            let row = &x[n * dim..(n + 1) * dim];
            let ys = &labels[n * dim..(n + 1) * dim];
            let listed: Vec<usize> = ys
                .iter()
                .take_while(|&&y| y >= 0.0)
                .map(|&y| y as usize)
                .collect();
            let mut is_target = vec![false; dim];
            for &j in &listed {
                is_target[j] = true;
            }
            // Accumulated in double (acc_type), returned in the input's dtype.
            let mut sum = 0.0f64;
            for &j in &listed {
                let one_minus = r(1.0 - row[j]);
                for (i, &xi) in row.iter().enumerate() {
                    if !is_target[i] {
                        let z = r(one_minus + xi);
                        if z > 0.0 {
                            sum += z;
                        }
                    }
                }
            }
            r(sum)
        })
        .collect();
    let out = if out_shape.is_empty() {
        let mut sum: f64 = per_frame.iter().sum();
        sum /= dim as f64;
        if red == Reduction::Mean {
            sum /= nframe as f64;
        }
        Arr::scalar(dt, sum)
    } else {
        let a = per_frame.iter().map(|&s| r(s / dim as f64)).collect();
        Arr {
            dt,
            a: ArrayD::from_shape_vec(IxDyn(&out_shape), a).expect("loss shape"),
        }
    };
    Ok(out.tensor())
}

/// `p` of `multi_margin_loss`: Python tests `p != 1 and p != 2`, so 1.0, 2.0 and True pass.
fn multi_margin_p(args: &Args) -> Result<u8, CallError> {
    let p = match args.get("p") {
        None => Some(1.0),
        Some(Value::Bool(b)) => Some(*b as u8 as f64),
        Some(Value::Int(i)) => Some(*i as f64),
        Some(Value::Float(x)) => Some(*x),
        Some(_) => None,
    };
    match p {
        Some(1.0) => Ok(1),
        Some(2.0) => Ok(2),
        _ => Err(CallError::argument("only p == 1 and p == 2 supported")),
    }
}

pub fn multi_margin_loss(args: &Args) -> Result<Tensor, CallError> {
    let input = Arr::of(args.tensor("input")?);
    let target_t = args.tensor("target")?;
    let target = Arr::of(target_t);
    let margin = super::float_arg(args, "margin", 1.0)?;
    let weight = args.opt_tensor("weight")?.map(Arr::of);
    let red = legacy_reduction(args)?;
    let p = multi_margin_p(args)?;
    if let Some(w) = &weight {
        if w.a.ndim() != 1 {
            return Err(CallError::shape("weight must be one-dimensional"));
        }
    }
    let (nframe, dim) = frames(&input)?;
    if target.a.ndim() > 1 || target.a.len() != nframe {
        return Err(CallError::shape(format!(
            "multi_margin_loss: target tensor should be 1-D with size equal to the number of input samples (batch size). Expected target size [{nframe}], but got {:?}. Input has shape {:?}.",
            target.shape(),
            input.shape()
        )));
    }
    if let Some(w) = &weight {
        if w.a.len() != dim {
            return Err(CallError::shape(format!(
                "inconsistent weight size, expected {dim} but got {:?}",
                w.shape()
            )));
        }
    }
    let out_shape = if red == Reduction::None && target.a.ndim() > 0 {
        vec![nframe]
    } else {
        vec![]
    };
    if input.a.is_empty() {
        return Ok(empty_result(input.dt, out_shape, red));
    }
    kernel_float("multi_margin_loss_cpu_kernel", input.dt)?;
    expect_dtype(target_t.dtype(), DType::Int64)?;
    if let Some(w) = &weight {
        expect_dtype(w.dt, input.dt)?;
    }
    let dt = input.dt;
    let r = |v: f64| round_to(dt, v);
    let margin = r(margin);
    let x: Vec<f64> = input.a.iter().copied().collect();
    let w: Option<Vec<f64>> = weight.map(|w| w.a.iter().copied().collect());
    let labels: Vec<f64> = target.a.iter().copied().collect();
    let mut per_frame = Vec::with_capacity(nframe);
    for (n, &y) in labels.iter().enumerate() {
        if !(y >= 0.0 && y < dim as f64) {
            return Err(CallError::value("target out of range"));
        }
        let idx = y as usize;
        let row = &x[n * dim..(n + 1) * dim];
        let margin_minus = r(margin - row[idx]);
        let mut sum = 0.0;
        for (d, &xd) in row.iter().enumerate() {
            if d == idx {
                continue;
            }
            let z = r(margin_minus + xd);
            if z > 0.0 {
                let mut h = if p == 1 { z } else { r(z * z) };
                if let Some(w) = &w {
                    h = r(h * w[idx]);
                }
                sum = r(sum + h);
            }
        }
        per_frame.push(r(sum / dim as f64));
    }
    let out = if out_shape.is_empty() {
        // Accumulated in double, divided by N in double, stored in the input's dtype.
        let mut sum: f64 = per_frame.iter().sum();
        if red == Reduction::Mean {
            sum /= nframe as f64;
        }
        Arr::scalar(dt, sum)
    } else {
        Arr {
            dt,
            a: ArrayD::from_shape_vec(IxDyn(&out_shape), per_frame).expect("loss shape"),
        }
    };
    Ok(out.tensor())
}

// ---------------------------------------------------------------------------------------------
// Backward. PyTorch differentiates the three composite losses op by op (derivatives.yaml of the
// component ops, each op rounding to its dtype, autograd reducing a broadcast gradient with
// `sum_to` and casting it to the input's dtype) and the other two with their dedicated ATen
// backward kernels. Each `*_backward` below recomputes the forward intermediates it needs.

/// The backward of `apply_loss_reduction` for a loss of `shape`: `grad` itself for none,
/// `grad.expand(shape)` for sum and `grad.expand(shape) / numel` (one rounding) for mean.
pub(crate) fn reduction_backward(
    grad: &Arr,
    shape: &[usize],
    red: Reduction,
) -> Result<Arr, CallError> {
    match red {
        Reduction::None => Ok(grad.clone()),
        Reduction::Sum => grad.expand(shape),
        Reduction::Mean => {
            let n = shape.iter().product::<usize>() as f64;
            Ok(grad.expand(shape)?.map(grad.dt, |g| g / n))
        }
    }
}

/// What autograd does with a gradient on its way to an input: `sum_to` the input's `shape`
/// (accumulated in the working dtype) and a cast to the input's dtype `dt`.
pub(crate) fn grad_to(g: &Arr, shape: &[usize], dt: DType) -> Result<Arr, CallError> {
    let a = if g.shape() == shape {
        g.a.clone()
    } else {
        let acc = super::accumulate_dtype(g.dt);
        crate::reference::gradient::sum_to_shape(g.a.clone(), shape)?
            .mapv(|v| round_to(g.dt, round_to(acc, v)))
    };
    Ok(Arr {
        dt,
        a: a.mapv(|v| round_to(dt, v)),
    })
}

/// `where(pred(cond), grad, 0)`: the backward of `where` and of `clamp_min` (whose formula is
/// `where(self > min, grad, 0)`: no gradient exactly at the bound, nor through NaN).
pub(crate) fn pass_where(
    cond: &Arr,
    pred: impl Fn(f64) -> bool,
    g: &Arr,
) -> Result<Arr, CallError> {
    where_(cond, pred, g, &zeros_like(g))
}

/// Stores the gradient of `name` when it is asked for.
pub(crate) fn put(out: &mut Gradients, bw: &Backward, name: &str, g: &Arr) {
    if bw.wants(name) {
        gradient::insert(out, name, g.dt, &g.a);
    }
}

/// `margin_ranking_loss` backward: the chain rule of the composite
/// `(-target * (input1 - input2) + margin).clamp_min_(0)` with derivatives.yaml's formulas:
/// clamp_min passes the gradient where the term is `> 0` (at the margin it stops it), mul
/// backward is `grad * other`, sub gives `grad` and `-grad`.
pub fn margin_ranking_loss_backward(args: &Args, bw: &Backward) -> Result<Gradients, CallError> {
    let input1 = Arr::of(args.tensor("input1")?);
    let input2 = Arr::of(args.tensor("input2")?);
    let target = Arr::of(args.tensor("target")?);
    let margin = super::float_arg(args, "margin", 0.0)?;
    let red = legacy_reduction(args)?;
    let neg_target = neg(&target)?;
    let diff = sub(&input1, &input2)?;
    let pre = add_scalar(&mul(&neg_target, &diff)?, margin);
    let g = reduction_backward(&Arr::of(bw.grad_output), pre.shape(), red)?;
    let g = pass_where(&pre, |v| v > 0.0, &g)?;
    let g_diff = grad_to(&mul(&g, &neg_target)?, diff.shape(), diff.dt)?;
    let g_neg_target = grad_to(&mul(&g, &diff)?, neg_target.shape(), neg_target.dt)?;
    let mut out = Gradients::new();
    put(
        &mut out,
        bw,
        "input1",
        &grad_to(&g_diff, input1.shape(), input1.dt)?,
    );
    put(
        &mut out,
        bw,
        "input2",
        &grad_to(&neg(&g_diff)?, input2.shape(), input2.dt)?,
    );
    put(
        &mut out,
        bw,
        "target",
        &grad_to(&neg(&g_neg_target)?, target.shape(), target.dt)?,
    );
    Ok(out)
}

/// `hinge_embedding_loss` backward: the composite
/// `where(target != 1, (margin - input).clamp_min_(0), 0) + where(target != -1, input, 0)`
/// differentiated op by op: `-grad` where the target is not 1 and `margin - input > 0`
/// (none exactly at the margin), plus `grad` where the target is not -1, summed as autograd
/// accumulates the two paths.
pub fn hinge_embedding_loss_backward(args: &Args, bw: &Backward) -> Result<Gradients, CallError> {
    let input = Arr::of(args.tensor("input")?);
    let target = Arr::of(args.tensor("target")?);
    let margin = super::float_arg(args, "margin", 1.0)?;
    let red = legacy_reduction(args)?;
    let zeros = zeros_like(&input);
    let pre = rsub_scalar(margin, &input)?;
    let output_margin = where_(&target, |t| t != 1.0, &clamp_min0(&pre), &zeros)?;
    let output_self = where_(&target, |t| t != -1.0, &input, &zeros)?;
    let loss = add(&output_margin, &output_self)?;
    let g = reduction_backward(&Arr::of(bw.grad_output), loss.shape(), red)?;
    let g_margin = grad_to(&pass_where(&target, |t| t != 1.0, &g)?, pre.shape(), pre.dt)?;
    let g_margin = neg(&pass_where(&pre, |v| v > 0.0, &g_margin)?)?;
    let g_self = grad_to(
        &pass_where(&target, |t| t != -1.0, &g)?,
        input.shape(),
        input.dt,
    )?;
    let mut out = Gradients::new();
    put(&mut out, bw, "input", &add(&g_margin, &g_self)?);
    Ok(out)
}

/// `soft_margin_loss` backward: ATen's `soft_margin_loss_backward`, whose op order is
/// `target * (-norm) * z / (z + 1) * grad_output` with `z = exp(-target * input)` and
/// `norm` = 1 / numel for mean (measured on float16, where each op rounds: multiplying by
/// `-norm` first matches, the other orders do not), written into the input's dtype.
pub fn soft_margin_loss_backward(args: &Args, bw: &Backward) -> Result<Gradients, CallError> {
    let input = Arr::of(args.tensor("input")?);
    let target = Arr::of(args.tensor("target")?);
    let red = legacy_reduction(args)?;
    let norm = if red == Reduction::Mean {
        1.0 / input.a.len() as f64
    } else {
        1.0
    };
    let e = mul(&neg(&target)?, &input)?;
    let z = e.map(e.dt, f64::exp);
    // `target * (-norm)`: a Python-scalar multiply, the scalar in op math (float32 for float
    // and the half types); an integer target gives the default dtype float32.
    let tdt = if target.dt.is_float() {
        target.dt
    } else {
        DType::Float32
    };
    let s = round_to(super::accumulate_dtype(tdt), -norm);
    let scaled = target.map(tdt, |v| v * s);
    let gi = mul(&scaled, &z)?;
    let gi = gi.map(input.dt, |v| v);
    let z1 = add_scalar(&z, 1.0);
    let gi = zip_inplace(&gi, &z1, |a, b| a / b)?;
    let gi = zip_inplace(&gi, &Arr::of(bw.grad_output), |a, b| a * b)?;
    let mut out = Gradients::new();
    put(&mut out, bw, "input", &gi);
    Ok(out)
}

/// The per-frame multiplier of the class-index backward kernels: the 0-d grad_output (a
/// reduced loss or an unbatched one), or `grad_output[t]`.
fn frame_grad(grad: &Tensor, nframe: usize) -> Vec<f64> {
    let g = grad.to_f64_vec();
    if grad.shape().is_empty() {
        vec![g[0]; nframe]
    } else {
        g
    }
}

/// `multilabel_margin_loss` backward: ATen's `multilabel_margin_loss_backward_out_frame`. For
/// each listed label j and each non-target class i with `1 - x[j] + x[i] > 0` (in the input's
/// dtype), `g = 1 / dim` (1 / (N dim) for mean, rounded to the dtype) is subtracted from x[j]
/// and added to x[i], one rounding per step; then every element is scaled by its frame's
/// grad_output.
pub fn multilabel_margin_loss_backward(args: &Args, bw: &Backward) -> Result<Gradients, CallError> {
    let input = Arr::of(args.tensor("input")?);
    let target = Arr::of(args.tensor("target")?);
    let red = legacy_reduction(args)?;
    let (nframe, dim) = frames(&input)?;
    let dt = input.dt;
    let r = |v: f64| round_to(dt, v);
    let g = r(if red == Reduction::Mean {
        1.0 / (nframe * dim) as f64
    } else {
        1.0 / dim as f64
    });
    let x: Vec<f64> = input.a.iter().copied().collect();
    let labels: Vec<f64> = target.a.iter().copied().collect();
    let mut grad = vec![0.0; x.len()];
    let go = frame_grad(bw.grad_output, nframe);
    for n in 0..nframe {
        let row = &x[n * dim..(n + 1) * dim];
        let gr = &mut grad[n * dim..(n + 1) * dim];
        let listed: Vec<usize> = labels[n * dim..(n + 1) * dim]
            .iter()
            .take_while(|&&y| y >= 0.0)
            .map(|&y| y as usize)
            .collect();
        let mut is_target = vec![false; dim];
        for &j in &listed {
            is_target[j] = true;
        }
        for &j in &listed {
            let one_minus = r(1.0 - row[j]);
            for i in 0..dim {
                if !is_target[i] && r(one_minus + row[i]) > 0.0 {
                    gr[j] = r(gr[j] - g);
                    gr[i] = r(gr[i] + g);
                }
            }
        }
        for v in gr.iter_mut() {
            *v = r(*v * go[n]);
        }
    }
    let a = ArrayD::from_shape_vec(IxDyn(input.shape()), grad).expect("input shape");
    let mut out = Gradients::new();
    put(&mut out, bw, "input", &Arr { dt, a });
    Ok(out)
}

/// `multi_margin_loss` backward: ATen's `multi_margin_loss_backward_cpu_kernel`. With
/// `g = 1 / dim` (1 / (N dim) for mean) in the input's dtype, a class d with
/// `z = margin - x[y] + x[d] > 0` gets `h = g` (p = 1) or `2 g z` (p = 2), times `weight[y]`;
/// `x[y]` gets minus their running sum; every element is then scaled by its frame's
/// grad_output. NaN scores fail `z > 0` and get 0.
pub fn multi_margin_loss_backward(args: &Args, bw: &Backward) -> Result<Gradients, CallError> {
    let input = Arr::of(args.tensor("input")?);
    let target = Arr::of(args.tensor("target")?);
    let margin = super::float_arg(args, "margin", 1.0)?;
    let weight = args.opt_tensor("weight")?.map(Arr::of);
    let red = legacy_reduction(args)?;
    let p = multi_margin_p(args)?;
    let (nframe, dim) = frames(&input)?;
    let dt = input.dt;
    let r = |v: f64| round_to(dt, v);
    let margin = r(margin);
    let g = r(if red == Reduction::Mean {
        1.0 / (nframe * dim) as f64
    } else {
        1.0 / dim as f64
    });
    let x: Vec<f64> = input.a.iter().copied().collect();
    let w: Option<Vec<f64>> = weight.map(|w| w.a.iter().copied().collect());
    let labels: Vec<f64> = target.a.iter().copied().collect();
    let go = frame_grad(bw.grad_output, nframe);
    let mut grad = vec![0.0; x.len()];
    for (n, &y) in labels.iter().enumerate().take(nframe) {
        let idx = y as usize;
        let row = &x[n * dim..(n + 1) * dim];
        let gr = &mut grad[n * dim..(n + 1) * dim];
        let margin_minus = r(margin - row[idx]);
        let mut target_grad = 0.0;
        for d in 0..dim {
            if d == idx {
                continue;
            }
            let z = r(margin_minus + row[d]);
            gr[d] = if z > 0.0 {
                let mut h = if p == 1 { g } else { r(2.0 * g * z) };
                if let Some(w) = &w {
                    h = r(h * w[idx]);
                }
                target_grad = r(target_grad - h);
                h
            } else {
                0.0
            };
        }
        gr[idx] = target_grad;
        for v in gr.iter_mut() {
            *v = r(*v * go[n]);
        }
    }
    let a = ArrayD::from_shape_vec(IxDyn(input.shape()), grad).expect("input shape");
    let mut out = Gradients::new();
    put(&mut out, bw, "input", &Arr { dt, a });
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    //! Properties that hold whatever PyTorch's exact values: identities of the formulas, output
    //! shapes and dtypes, reductions and error kinds. Values are checked by the cases.

    use crate::backend::{Backend, Call, ErrorKind, Outcome, Value};
    use crate::reference::Reference;
    use crate::tensor::{DType, Tensor};

    pub(crate) fn t(dtype: DType, shape: &[usize], data: &[f64]) -> Value {
        Value::Tensor(Tensor::from_f64(dtype, shape.to_vec(), data.to_vec()).unwrap())
    }

    pub(crate) fn f64s(shape: &[usize], data: &[f64]) -> Value {
        t(DType::Float64, shape, data)
    }

    pub(crate) fn long(shape: &[usize], data: &[i64]) -> Value {
        Value::Tensor(Tensor::from_i64(DType::Int64, shape.to_vec(), data.to_vec()).unwrap())
    }

    pub(crate) fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    pub(crate) fn call(f: &str, args: &[(&str, Value)]) -> Outcome {
        let args = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Reference.forward(&Call {
            api: format!("torch.nn.functional.{f}"),
            args,
        })
    }

    pub(crate) fn value(f: &str, args: &[(&str, Value)]) -> Tensor {
        match call(f, args) {
            Outcome::Value(t) => t,
            other => panic!("{f}: expected a value, got {other:?}"),
        }
    }

    /// The reference's gradients of `f` for `wrt` (grad_output all ones).
    pub(crate) fn grads(
        f: &str,
        args: &[(&str, Value)],
        wrt: &[&str],
    ) -> crate::backend::Gradients {
        crate::reference::testing::backward(&format!("torch.nn.functional.{f}"), args, wrt)
    }

    pub(crate) fn error_kind(f: &str, args: &[(&str, Value)]) -> ErrorKind {
        match call(f, args) {
            Outcome::Error(e) => e.kind,
            other => panic!("{f}: expected an error, got {other:?}"),
        }
    }

    pub(crate) fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-12 * (1.0 + y.abs()) || (x.is_nan() && y.is_nan()),
                "{a:?} vs {b:?}"
            );
        }
    }

    const X: [f64; 6] = [0.3, 1.5, -0.5, 2.0, -1.25, 0.75];

    #[test]
    fn labels_outside_pm1_follow_the_formulas() {
        let x = f64s(&[6], &X);
        let zeros = f64s(&[6], &[0.0; 6]);
        // hinge: y = 0 takes both terms, x + max(0, margin - x) = max(x, margin).
        let h = value(
            "hinge_embedding_loss",
            &[
                ("input", x.clone()),
                ("target", zeros.clone()),
                ("margin", Value::Float(0.5)),
                ("reduction", s("none")),
            ],
        );
        close(&h.to_f64_vec(), &X.map(|v| v.max(0.5)));
        // margin ranking: y = 0 gives max(0, margin) whatever the scores.
        let m = value(
            "margin_ranking_loss",
            &[
                ("input1", x.clone()),
                ("input2", f64s(&[6], &[9.0; 6])),
                ("target", zeros.clone()),
                ("margin", Value::Float(0.25)),
                ("reduction", s("none")),
            ],
        );
        close(&m.to_f64_vec(), &[0.25; 6]);
        // soft margin: y = 0 gives log 2.
        let sm = value(
            "soft_margin_loss",
            &[("input", x), ("target", zeros), ("reduction", s("none"))],
        );
        close(&sm.to_f64_vec(), &[std::f64::consts::LN_2; 6]);
    }

    #[test]
    fn mean_is_sum_over_count_and_legacy_flags_map_to_reductions() {
        let x = f64s(&[2, 3], &X);
        let y = f64s(&[2, 3], &[1.0, -1.0, -1.0, 1.0, 1.0, -1.0]);
        for f in ["hinge_embedding_loss", "soft_margin_loss"] {
            let with = |extra: &[(&str, Value)]| {
                let mut a = vec![("input", x.clone()), ("target", y.clone())];
                a.extend(extra.iter().cloned());
                value(f, &a)
            };
            let sum = with(&[("reduction", s("sum"))]).to_f64_vec()[0];
            let mean = with(&[]).to_f64_vec()[0];
            close(&[mean], &[sum / 6.0]);
            let none = with(&[("reduction", s("none"))]);
            assert_eq!(none.shape(), &[2, 3]);
            assert_eq!(
                with(&[("size_average", Value::Bool(false))]).to_f64_vec(),
                vec![sum]
            );
            // The legacy pair wins over an invalid reduction.
            assert_eq!(
                with(&[("reduce", Value::Bool(false)), ("reduction", s("avg"))]),
                none
            );
            assert_eq!(
                error_kind(
                    f,
                    &[
                        ("input", x.clone()),
                        ("target", y.clone()),
                        ("reduction", s("avg"))
                    ]
                ),
                ErrorKind::Argument
            );
        }
    }

    #[test]
    fn integer_dtypes_follow_the_op_chain() {
        let xi = long(&[3], &[1, 2, 0]);
        let yi = long(&[3], &[1, -1, -1]);
        // hinge keeps int64 (margin - x fills the margin into an int64 tensor); mean rejects it.
        let h = value(
            "hinge_embedding_loss",
            &[
                ("input", xi.clone()),
                ("target", yi.clone()),
                ("reduction", s("sum")),
            ],
        );
        assert_eq!(h.dtype(), DType::Int64);
        assert_eq!(
            error_kind(
                "hinge_embedding_loss",
                &[("input", xi.clone()), ("target", yi.clone())]
            ),
            ErrorKind::Dtype
        );
        // margin ranking adds a float margin: float32.
        let m = value(
            "margin_ranking_loss",
            &[
                ("input1", xi.clone()),
                ("input2", xi.clone()),
                ("target", yi.clone()),
            ],
        );
        assert_eq!(m.dtype(), DType::Float32);
        // soft margin writes exp() into the int64 input: rejected.
        assert_eq!(
            error_kind("soft_margin_loss", &[("input", xi), ("target", yi)]),
            ErrorKind::Dtype
        );
    }

    #[test]
    fn margin_ranking_needs_equal_ranks_but_broadcasts_sizes() {
        let x = f64s(&[3], &[1.0, 2.0, 3.0]);
        assert_eq!(
            error_kind(
                "margin_ranking_loss",
                &[
                    ("input1", x.clone()),
                    ("input2", x.clone()),
                    ("target", f64s(&[], &[1.0]))
                ]
            ),
            ErrorKind::Shape
        );
        let out = value(
            "margin_ranking_loss",
            &[
                ("input1", x.clone()),
                ("input2", f64s(&[1], &[0.0])),
                ("target", f64s(&[1], &[-1.0])),
                ("reduction", s("none")),
            ],
        );
        assert_eq!(out.shape(), &[3]);
        assert_eq!(
            error_kind(
                "margin_ranking_loss",
                &[
                    ("input1", x.clone()),
                    ("input2", f64s(&[2], &[0.0, 1.0])),
                    ("target", x)
                ]
            ),
            ErrorKind::Shape
        );
    }

    #[test]
    fn multilabel_margin_shapes_layout_and_errors() {
        let x = f64s(&[2, 4], &[0.1, 0.2, 0.4, 0.8, 0.5, 0.1, 0.3, 0.2]);
        let y = long(&[2, 4], &[3, 0, -1, 1, -1, 2, 2, 2]);
        let none = value(
            "multilabel_margin_loss",
            &[
                ("input", x.clone()),
                ("target", y.clone()),
                ("reduction", s("none")),
            ],
        );
        assert_eq!(none.shape(), &[2]);
        // A row whose first entry is -1 lists no labels: 0.
        assert_eq!(none.to_f64_vec()[1], 0.0);
        let mean = value(
            "multilabel_margin_loss",
            &[("input", x.clone()), ("target", y.clone())],
        );
        close(
            &mean.to_f64_vec(),
            &[none.to_f64_vec().iter().sum::<f64>() / 2.0],
        );
        // A duplicated label counts twice.
        let once = value(
            "multilabel_margin_loss",
            &[
                ("input", f64s(&[4], &[0.1, 0.2, 0.4, 0.8])),
                ("target", long(&[4], &[3, -1, 0, 0])),
            ],
        );
        let twice = value(
            "multilabel_margin_loss",
            &[
                ("input", f64s(&[4], &[0.1, 0.2, 0.4, 0.8])),
                ("target", long(&[4], &[3, 3, -1, 0])),
            ],
        );
        assert_eq!(once.shape(), &[] as &[usize]);
        close(&twice.to_f64_vec(), &[2.0 * once.to_f64_vec()[0]]);
        // Entries after the first -1 are still range-checked.
        assert_eq!(
            error_kind(
                "multilabel_margin_loss",
                &[
                    ("input", x.clone()),
                    ("target", long(&[2, 4], &[0, -1, 7, 0, -1, 0, 0, 0]))
                ]
            ),
            ErrorKind::Value
        );
        assert_eq!(
            error_kind(
                "multilabel_margin_loss",
                &[("input", x.clone()), ("target", long(&[1, 4], &[0; 4]))]
            ),
            ErrorKind::Shape
        );
        let half = t(DType::Float16, &[1, 2], &[0.5, 0.25]);
        assert_eq!(
            error_kind(
                "multilabel_margin_loss",
                &[("input", half), ("target", long(&[1, 2], &[0, -1]))]
            ),
            ErrorKind::Dtype
        );
        let y32 = Value::Tensor(Tensor::from_i64(DType::Int32, vec![2, 4], vec![0; 8]).unwrap());
        assert_eq!(
            error_kind("multilabel_margin_loss", &[("input", x), ("target", y32)]),
            ErrorKind::Dtype
        );
    }

    #[test]
    fn multilabel_and_multi_margin_swallow_nan_scores() {
        let x = f64s(&[1, 4], &[0.5, f64::NAN, 0.0, 0.0]);
        let ml = value(
            "multilabel_margin_loss",
            &[
                ("input", x.clone()),
                ("target", long(&[1, 4], &[0, -1, 0, 0])),
            ],
        );
        assert!(ml.to_f64_vec()[0].is_finite());
        let mm = value(
            "multi_margin_loss",
            &[("input", x), ("target", long(&[1], &[0]))],
        );
        assert!(mm.to_f64_vec()[0].is_finite());
        let nan_margin = value(
            "multi_margin_loss",
            &[
                ("input", f64s(&[1, 3], &[0.1, 0.2, 0.3])),
                ("target", long(&[1], &[0])),
                ("margin", Value::Str("nan".into())),
            ],
        );
        assert_eq!(nan_margin.to_f64_vec(), vec![0.0]);
    }

    #[test]
    fn multi_margin_p_weight_shapes_and_errors() {
        let x = f64s(&[2, 4], &[0.1, 0.2, 0.4, 0.8, 0.9, -0.3, 0.2, 0.0]);
        let y = long(&[2], &[3, 2]);
        let base = |extra: &[(&'static str, Value)]| -> Vec<(&'static str, Value)> {
            let mut a = vec![
                ("input", x.clone()),
                ("target", y.clone()),
                ("reduction", s("none")),
            ];
            a.extend(extra.iter().cloned());
            a
        };
        let p1 = value("multi_margin_loss", &base(&[]));
        assert_eq!(p1.shape(), &[2]);
        assert_eq!(
            value("multi_margin_loss", &base(&[("p", Value::Float(1.0))])),
            p1
        );
        assert_eq!(
            value("multi_margin_loss", &base(&[("p", Value::Bool(true))])),
            p1
        );
        let p2 = value("multi_margin_loss", &base(&[("p", Value::Int(2))]));
        assert_eq!(
            value("multi_margin_loss", &base(&[("p", Value::Float(2.0))])),
            p2
        );
        for p in [Value::Int(3), Value::Int(0), Value::Float(2.5)] {
            assert_eq!(
                error_kind("multi_margin_loss", &base(&[("p", p)])),
                ErrorKind::Argument
            );
        }
        // A uniform weight w scales every sample by w.
        let w = value(
            "multi_margin_loss",
            &base(&[("weight", f64s(&[4], &[2.0; 4]))]),
        );
        close(
            &w.to_f64_vec(),
            &p1.to_f64_vec().iter().map(|v| 2.0 * v).collect::<Vec<_>>(),
        );
        assert_eq!(
            error_kind(
                "multi_margin_loss",
                &base(&[("weight", f64s(&[1, 4], &[1.0; 4]))])
            ),
            ErrorKind::Shape
        );
        assert_eq!(
            error_kind(
                "multi_margin_loss",
                &base(&[("weight", f64s(&[3], &[1.0; 3]))])
            ),
            ErrorKind::Shape
        );
        assert_eq!(
            error_kind(
                "multi_margin_loss",
                &base(&[("weight", t(DType::Float32, &[4], &[1.0; 4]))])
            ),
            ErrorKind::Dtype
        );
        assert_eq!(
            error_kind(
                "multi_margin_loss",
                &[("input", x.clone()), ("target", long(&[2], &[3, 4]))]
            ),
            ErrorKind::Value
        );
        assert_eq!(
            error_kind(
                "multi_margin_loss",
                &[("input", x.clone()), ("target", long(&[2, 1], &[3, 2]))]
            ),
            ErrorKind::Shape
        );
        let half = t(DType::Bfloat16, &[1, 2], &[0.5, 0.25]);
        assert_eq!(
            error_kind(
                "multi_margin_loss",
                &[("input", half), ("target", long(&[1], &[0]))]
            ),
            ErrorKind::Dtype
        );
        // An unbatched input: 0-d with a 0-d target, (1) with a (1) target under none.
        let row = f64s(&[4], &[0.1, 0.2, 0.4, 0.8]);
        let d0 = value(
            "multi_margin_loss",
            &[
                ("input", row.clone()),
                ("target", long(&[], &[3])),
                ("reduction", s("none")),
            ],
        );
        assert_eq!(d0.shape(), &[] as &[usize]);
        let d1 = value(
            "multi_margin_loss",
            &[
                ("input", row),
                ("target", long(&[1], &[3])),
                ("reduction", s("none")),
            ],
        );
        assert_eq!(d1.shape(), &[1]);
        assert_eq!(d0.to_f64_vec(), d1.to_f64_vec());
        // An empty batch with none is (0,).
        let empty = value(
            "multi_margin_loss",
            &[
                ("input", f64s(&[0, 4], &[])),
                ("target", long(&[0], &[])),
                ("reduction", s("none")),
            ],
        );
        assert_eq!(empty.shape(), &[0]);
    }

    #[test]
    fn a_partial_wrt_gets_the_same_gradient_as_the_full_request() {
        let args = [
            ("input1", f64s(&[2, 3], &X)),
            ("input2", f64s(&[1, 3], &[0.5, -0.5, 1.0])),
            ("target", f64s(&[2, 1], &[1.0, -1.0])),
            ("margin", Value::Float(0.25)),
        ];
        let all = grads(
            "margin_ranking_loss",
            &args,
            &["input1", "input2", "target"],
        );
        let one = grads("margin_ranking_loss", &args, &["input2"]);
        assert_eq!(one.keys().collect::<Vec<_>>(), vec!["input2"]);
        assert_eq!(one["input2"], all["input2"]);
        // Broadcast arguments get gradients of their own shape.
        assert_eq!(all["input2"].shape(), &[1, 3]);
        assert_eq!(all["target"].shape(), &[2, 1]);
    }

    #[test]
    fn mean_gradient_is_the_sum_gradient_over_the_count() {
        let x = t(DType::Float32, &[2, 3], &X);
        let y = t(DType::Float32, &[2, 3], &[1.0, -1.0, -1.0, 1.0, 1.0, -1.0]);
        for f in [
            "hinge_embedding_loss",
            "soft_margin_loss",
            "multi_margin_loss",
        ] {
            let target = if f == "multi_margin_loss" {
                long(&[2], &[2, 0])
            } else {
                y.clone()
            };
            let with = |red: &str| {
                let args = [
                    ("input", x.clone()),
                    ("target", target.clone()),
                    ("reduction", s(red)),
                ];
                grads(f, &args, &["input"])["input"].to_f64_vec()
            };
            let n = if f == "multi_margin_loss" { 2.0 } else { 6.0 };
            let (sum, mean) = (with("sum"), with("mean"));
            for (a, b) in sum.iter().zip(&mean) {
                assert!(
                    (a / n - b).abs() <= 1e-7 * a.abs().max(1e-30),
                    "{f}: {sum:?} {mean:?}"
                );
            }
        }
    }
}
