//! `binary_cross_entropy`, `binary_cross_entropy_with_logits`, `multilabel_soft_margin_loss`.
//!
//! `binary_cross_entropy` is one ATen kernel: same-dtype input and target, both checked to lie
//! in [0, 1] (NaN fails the check), logs clamped at -100, then `loss.mul_(weight)` in place.
//! `binary_cross_entropy_with_logits` is a chain of in-place tensor ops starting from
//! `1 - target`, so its result has the *target's* dtype. `multilabel_soft_margin_loss` is plain
//! Python: it broadcasts, sums over the input's last dimension index and divides by its size.

use super::reduction::{self, Reduction};
use super::{
    broadcast_shapes, mean_all, require_float, round_to, sum_all, sum_axis, torch_dtype_name, zip,
    zip_inplace, Arr,
};
use crate::backend::CallError;
use crate::backend::Gradients;
use crate::reference::{Args, Backward, GradientKernel};
use crate::tensor::{DType, Tensor};

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[
    (
        "torch.nn.functional.binary_cross_entropy",
        binary_cross_entropy_backward,
    ),
    (
        "torch.nn.functional.binary_cross_entropy_with_logits",
        binary_cross_entropy_with_logits_backward,
    ),
    (
        "torch.nn.functional.multilabel_soft_margin_loss",
        multilabel_soft_margin_loss_backward,
    ),
];

fn read(args: &Args) -> Result<(Arr, Arr, Option<Arr>), CallError> {
    Ok((
        Arr::of(args.tensor("input")?),
        Arr::of(args.tensor("target")?),
        args.opt_tensor("weight")?.map(Arr::of),
    ))
}

/// `log_sigmoid(x)`: float16/bfloat16 are computed in float32 and rounded once.
fn log_sigmoid(x: &Arr) -> Result<Arr, CallError> {
    require_float("log_sigmoid_cpu", x.dt)?;
    Ok(x.map(x.dt, super::super::numeric::log_sigmoid))
}

/// `scalar - x` or `x + scalar` with an integral Python scalar: the result keeps `x`'s dtype
/// (bool cannot be subtracted).
fn rsub_one(x: &Arr) -> Result<Arr, CallError> {
    if x.dt == DType::Bool {
        return Err(CallError::dtype(
            "Subtraction, the `-` operator, with a bool tensor is not supported",
        ));
    }
    Ok(x.map(x.dt, |v| 1.0 - v))
}

pub fn binary_cross_entropy(args: &Args) -> Result<Tensor, CallError> {
    let (input, target, weight) = read(args)?;
    let red = reduction::read(args, true)?.get_enum()?;
    if target.shape() != input.shape() {
        return Err(CallError::shape(format!(
            "Using a target size ({:?}) that is different to the input size ({:?}) is deprecated. Please ensure they have the same size.",
            target.shape(),
            input.shape()
        )));
    }
    // Python expands the weight to broadcast_shapes(target, weight); a weight that broadcasts
    // to something larger than the loss only fails later, at `loss.mul_(weight)`.
    let weight = match weight {
        Some(w) => {
            let shape = broadcast_shapes(target.shape(), w.shape())?;
            Some(w.expand(&shape)?)
        }
        None => None,
    };
    if target.dt != input.dt {
        return Err(CallError::dtype(format!(
            "Found dtype {} but expected {}",
            torch_dtype_name(target.dt),
            torch_dtype_name(input.dt)
        )));
    }
    require_float("binary_cross_entropy", input.dt)?;
    for (&x, &t) in input.a.iter().zip(target.a.iter()) {
        if !(0.0..=1.0).contains(&x) {
            return Err(CallError::value(
                "all elements of input should be between 0 and 1",
            ));
        }
        if !(0.0..=1.0).contains(&t) {
            return Err(CallError::value(
                "all elements of target should be between 0 and 1",
            ));
        }
    }
    let dt = input.dt;
    let r = |v: f64| round_to(dt, v);
    let mut loss = zip(
        &input,
        &target,
        |_| Ok(()),
        |x, t| {
            let log_1mx = r(r((-x).ln_1p()).max(-100.0));
            let log_x = r(r(x.ln()).max(-100.0));
            r(r(t - 1.0) * log_1mx) - r(t * log_x)
        },
    )?;
    if let Some(w) = &weight {
        loss = zip_inplace(&loss, w, |l, w| l * w)?;
    }
    Ok(reduction::apply(loss, red)?.tensor())
}

pub fn binary_cross_entropy_with_logits(args: &Args) -> Result<Tensor, CallError> {
    let (input, target, weight) = read(args)?;
    let pos_weight = args.opt_tensor("pos_weight")?.map(Arr::of);
    let red = reduction::read(args, true)?.get_enum()?;
    if target.shape() != input.shape() {
        return Err(CallError::shape(format!(
            "Target size ({:?}) must be the same as input size ({:?})",
            target.shape(),
            input.shape()
        )));
    }
    // ATen: log_sigmoid_input = log_sigmoid(input);
    //       log_sigmoid_input.mul_((pos_weight - 1).mul(target).add_(1));
    //       loss = (1 - target).mul_(input).sub_(log_sigmoid_input); loss.mul_(weight)
    let mut lsi = log_sigmoid(&input)?;
    if let Some(pw) = &pos_weight {
        if pw.dt == DType::Bool {
            return Err(CallError::dtype(
                "Subtraction, the `-` operator, with a bool tensor is not supported",
            ));
        }
        let pw1 = pw.map(pw.dt, |v| v - 1.0);
        let lw = zip(&pw1, &target, |_| Ok(()), |a, b| a * b)?;
        let lw = lw.map(lw.dt, |v| v + 1.0);
        lsi = zip_inplace(&lsi, &lw, |a, b| a * b)?;
    }
    let mut loss = rsub_one(&target)?;
    loss = zip_inplace(&loss, &input, |a, b| a * b)?;
    loss = zip_inplace(&loss, &lsi, |a, b| a - b)?;
    if let Some(w) = &weight {
        loss = zip_inplace(&loss, w, |a, b| a * b)?;
    }
    Ok(reduction::apply(loss, red)?.tensor())
}

pub fn multilabel_soft_margin_loss(args: &Args) -> Result<Tensor, CallError> {
    let (input, target, weight) = read(args)?;
    let req = reduction::read(args, true)?;
    // loss = -(target * logsigmoid(input) + (1 - target) * logsigmoid(-input))
    let a = zip(&target, &log_sigmoid(&input)?, |_| Ok(()), |t, l| t * l)?;
    let one_minus = rsub_one(&target)?;
    let neg_input = input.map(input.dt, |v| -v);
    let b = zip(
        &one_minus,
        &log_sigmoid(&neg_input)?,
        |_| Ok(()),
        |t, l| t * l,
    )?;
    let s = zip(&a, &b, |_| Ok(()), |x, y| x + y)?;
    let mut loss = s.map(s.dt, |v| -v);
    if let Some(w) = &weight {
        loss = zip(&loss, w, |_| Ok(()), |l, w| l * w)?;
    }
    // class_dim = input.dim() - 1 indexes the (possibly broadcast, higher-rank) loss from the
    // front; C = input.size(-1).
    let Some(&c) = input.shape().last() else {
        return Err(CallError::shape(
            "Dimension specified as -1 but tensor has no dimensions",
        ));
    };
    let summed = sum_axis(&loss, input.shape().len() - 1);
    let per_sample = summed.map(summed.dt, |v| round_to(summed.dt, v / c as f64));
    let out = match req.strict(|shown| format!("{shown} is not valid"))? {
        Reduction::None => per_sample,
        Reduction::Mean => mean_all(&per_sample)?,
        Reduction::Sum => sum_all(&per_sample),
    };
    Ok(out.tensor())
}

// ---- Backward ----

/// The tail shared by the fused BCE backward formulas: `grad.mul_(weight)` in place when
/// weighted, then `div_(numel)` for `mean`.
fn weight_and_mean(g: Arr, weight: Option<&Arr>, red: Reduction) -> Result<Arr, CallError> {
    let g = match weight {
        Some(w) => zip_inplace(&g, w, |a, b| a * b)?,
        None => g,
    };
    if red == Reduction::Mean {
        let n = g.a.len() as f64;
        return Ok(g.map(g.dt, |v| v / n));
    }
    Ok(g)
}

/// The gradient of `binary_cross_entropy` (ATen `binary_cross_entropy_backward` and
/// `binary_cross_entropy_target_backward`). Input: `grad * (x - t) / max((1 - x) * x, EPSILON)`
/// with `EPSILON = 1e-12` cast to the dtype (0 in float16, so `x = t = 0` gives NaN there), each
/// op rounded; the forward's clamp of the logs at -100 does not appear. Target: `-logit(x) *
/// grad` (logit as `log(x / (1 - x))` rounded op by op, also in float16 (measured); ±inf at x = 0
/// and 1). Then weight and `/ numel`.
pub fn binary_cross_entropy_backward(args: &Args, b: &Backward) -> Result<Gradients, CallError> {
    let (input, target, weight) = read(args)?;
    let red = reduction::read(args, true)?.get_enum()?;
    let weight = match weight {
        Some(w) => {
            let shape = broadcast_shapes(target.shape(), w.shape())?;
            Some(w.expand(&shape)?)
        }
        None => None,
    };
    let dt = input.dt;
    let r = |v: f64| round_to(dt, v);
    let eps = r(1e-12);
    let g = reduction::expanded(&Arr::of(b.grad_output), input.shape())?;
    let mut out = Gradients::new();
    if b.wants("input") {
        let gi = reduction::map3(&input, &target, &g, dt, |x, t, g| {
            let num = r(g * r(x - t));
            let den = r(r(1.0 - x) * x);
            // std::max(den, eps) returns den when den is NaN.
            let den = if den < eps { eps } else { den };
            num / den
        });
        let gi = weight_and_mean(gi, weight.as_ref(), red)?;
        reduction::put(&mut out, b, "input", &input, &gi)?;
    }
    if b.wants("target") {
        let gt = reduction::map3(&input, &target, &g, dt, |x, _, g| {
            let logit = if x == 1.0 {
                f64::INFINITY
            } else {
                r(r(x / r(1.0 - x)).ln())
            };
            -logit * g
        });
        let gt = weight_and_mean(gt, weight.as_ref(), red)?;
        reduction::put(&mut out, b, "target", &target, &gt)?;
    }
    Ok(out)
}

/// `sigmoid(x)` rounded to `dt` (float16/bfloat16 computed in float32 and rounded once).
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The gradient of `binary_cross_entropy_with_logits` (ATen
/// `binary_cross_entropy_with_logits_backward` and `..._target_backward`, in-place chains in
/// the input's resp. target's dtype). Input: `(sigmoid(x) - t) * grad`, or with `pos_weight`
/// `((pw * t + 1 - t) * sigmoid(x) - pw * t) * grad`. Target: `-x * grad`, or with `pos_weight`
/// `(log_sigmoid(-x) - log_sigmoid(x) * pw) * grad`. Then weight and `/ numel`. At x = ±inf the
/// input gradient is `sigmoid(±inf) - t` (finite); the target gradient is ∓inf * grad.
pub fn binary_cross_entropy_with_logits_backward(
    args: &Args,
    b: &Backward,
) -> Result<Gradients, CallError> {
    let (input, target, weight) = read(args)?;
    let pos_weight = args.opt_tensor("pos_weight")?.map(Arr::of);
    let red = reduction::read(args, true)?.get_enum()?;
    let g = Arr::of(b.grad_output);
    let mut out = Gradients::new();
    let sig = input.map(input.dt, sigmoid);
    if b.wants("input") {
        let gi = match &pos_weight {
            None => zip_inplace(&sig, &target, |s, t| s - t)?,
            Some(pw) => {
                let t = zip(pw, &target, |_| Ok(()), |a, b| a * b)?;
                let a = t.map(t.dt, |v| v + 1.0);
                let a = zip_inplace(&a, &target, |x, y| x - y)?;
                let a = zip_inplace(&a, &sig, |x, y| x * y)?;
                zip_inplace(&a, &t, |x, y| x - y)?
            }
        };
        let gi = zip_inplace(&gi, &g, |a, b| a * b)?;
        let gi = weight_and_mean(gi, weight.as_ref(), red)?;
        reduction::put(&mut out, b, "input", &input, &gi)?;
    }
    if b.wants("target") {
        let gt = match &pos_weight {
            None => {
                let neg = input.map(input.dt, |v| -v);
                zip(&neg, &g, |_| Ok(()), |a, b| a * b)?
            }
            Some(pw) => {
                let neg = input.map(input.dt, |v| -v);
                let lsn = log_sigmoid(&neg)?;
                let lsp = zip_inplace(&log_sigmoid(&input)?, pw, |a, b| a * b)?;
                let d = zip_inplace(&lsn, &lsp, |a, b| a - b)?;
                zip_inplace(&d, &g, |a, b| a * b)?
            }
        };
        let gt = weight_and_mean(gt, weight.as_ref(), red)?;
        reduction::put(&mut out, b, "target", &target, &gt)?;
    }
    Ok(out)
}

/// ATen's `log_sigmoid_backward` CPU kernel for `log_sigmoid(x)` with incoming `grad`:
/// `(max_deriv - sign * (z / (1 + z))) * grad` where `z = exp(-|x|)` is the forward's buffer
/// (stored in x's dtype), `max_deriv = 1, sign = 1` for x < 0 and `0, -1` otherwise. float16
/// and bfloat16 compute in float32 and round once; float32/64 round each op.
fn log_sigmoid_backward(x: &Arr, grad: &Arr) -> Result<Arr, CallError> {
    let dt = x.dt;
    let half = matches!(dt, DType::Float16 | DType::Bfloat16);
    let w = if half { DType::Float32 } else { dt };
    let r = |v: f64| round_to(w, v);
    let gx = grad.expand(x.shape())?;
    let a = ndarray::Zip::from(&x.a).and(&gx.a).map_collect(|&x, &g| {
        let z = round_to(dt, (-x.abs()).exp());
        let (max_deriv, sign) = if x < 0.0 { (1.0, 1.0) } else { (0.0, -1.0) };
        round_to(dt, r(r(max_deriv - r(sign * r(z / r(1.0 + z)))) * g))
    });
    Ok(Arr { dt, a })
}

/// The gradient of `multilabel_soft_margin_loss`: autograd through the Python composite
/// `-(t * logsigmoid(x) + (1 - t) * logsigmoid(-x))`, `* weight`, `.sum(-1) / C` and the
/// reduction, op by op.
pub fn multilabel_soft_margin_loss_backward(
    args: &Args,
    b: &Backward,
) -> Result<Gradients, CallError> {
    let (input, target, weight) = read(args)?;
    let req = reduction::read(args, true)?;
    let red = req.strict(|shown| format!("{shown} is not valid"))?;
    let lsi = log_sigmoid(&input)?;
    let a = zip(&target, &lsi, |_| Ok(()), |t, l| t * l)?;
    let one_minus = rsub_one(&target)?;
    let neg_input = input.map(input.dt, |v| -v);
    let lsn = log_sigmoid(&neg_input)?;
    let bb = zip(&one_minus, &lsn, |_| Ok(()), |t, l| t * l)?;
    let s = zip(&a, &bb, |_| Ok(()), |x, y| x + y)?;
    let loss0 = s.map(s.dt, |v| -v);
    let loss = match &weight {
        Some(w) => zip(&loss0, w, |_| Ok(()), |l, w| l * w)?,
        None => loss0.clone(),
    };
    let c = *input.shape().last().expect("forward checked the rank") as f64;
    let axis = input.shape().len() - 1;
    let per_sample_shape: Vec<usize> = loss
        .shape()
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != axis)
        .map(|(_, &n)| n)
        .collect();
    let g = Arr::of(b.grad_output);
    let g1 = reduction::backward(&g, &per_sample_shape, red)?;
    // `/ C`, then the sum's backward: expand along the summed axis.
    let g1 = g1.map(g1.dt, |v| v / c);
    let g2 = Arr {
        dt: g1.dt,
        a: g1.a.insert_axis(ndarray::Axis(axis)),
    }
    .expand(loss.shape())?;
    let mut out = Gradients::new();
    let g_loss0 = match &weight {
        Some(w) => {
            let gw = zip(&g2, &loss0, |_| Ok(()), |x, y| x * y)?;
            reduction::put(&mut out, b, "weight", w, &gw)?;
            let gl = zip(&g2, w, |_| Ok(()), |x, y| x * y)?;
            reduction::cast(&gl, loss0.dt)
        }
        None => reduction::cast(&g2, loss0.dt),
    };
    let g_s = g_loss0.map(g_loss0.dt, |v| -v);
    // a = t * lsi and bb = (1 - t) * lsn both receive g_s (summed to their shapes).
    let g_a = reduction::reduce_to(&g_s, a.shape(), a.dt)?;
    let g_b = reduction::reduce_to(&g_s, bb.shape(), bb.dt)?;
    // Target: from `t * lsi` and, negated, from `1 - t`.
    let gt_a = reduction::reduce_to(
        &zip(&g_a, &lsi, |_| Ok(()), |x, y| x * y)?,
        target.shape(),
        target.dt,
    )?;
    let g_om = reduction::reduce_to(
        &zip(&g_b, &lsn, |_| Ok(()), |x, y| x * y)?,
        one_minus.shape(),
        one_minus.dt,
    )?;
    if b.wants("target") && target.dt.is_float() {
        let gt_b = reduction::reduce_to(&g_om.map(g_om.dt, |v| -v), target.shape(), target.dt)?;
        let gt = reduction::accumulate(&gt_a, &gt_b)?;
        reduction::put(&mut out, b, "target", &target, &gt)?;
    }
    if b.wants("input") {
        let g_lsi = reduction::reduce_to(
            &zip(&g_a, &target, |_| Ok(()), |x, y| x * y)?,
            lsi.shape(),
            lsi.dt,
        )?;
        let g_lsn = reduction::reduce_to(
            &zip(&g_b, &one_minus, |_| Ok(()), |x, y| x * y)?,
            lsn.shape(),
            lsn.dt,
        )?;
        let gi_a = log_sigmoid_backward(&input, &g_lsi)?;
        let gi_b = log_sigmoid_backward(&neg_input, &g_lsn)?;
        let gi_b = gi_b.map(gi_b.dt, |v| -v);
        let gi = reduction::accumulate(&gi_a, &gi_b)?;
        reduction::put(&mut out, b, "input", &input, &gi)?;
    }
    Ok(out)
}
