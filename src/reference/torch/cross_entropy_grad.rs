//! Backward of `cross_entropy` and `nll_loss`, following PyTorch's autograd graph of the forward
//! (`aten/src/ATen/native/LossNLL.cpp`) op by op, each op rounding to its dtype:
//!
//! - `nll_loss_backward_out_frame` / `nll_loss2d`: the target class of each non-ignored element
//!   gets `-w[t] * grad_output[i]` (unreduced) or `w[t] * -(grad_output / total_weight)` (mean;
//!   `-grad_output` for sum), every other element 0. `total_weight` is the forward's (so an
//!   all-ignored mean batch has no gradient at all rather than NaN), and each operation is done in
//!   the input's dtype (`c10::Half` arithmetic rounds every result).
//! - `log_softmax` backward (`_log_softmax_backward_data`): `g - exp(out) * sum(g)` per lane, the
//!   sum accumulated in float32 for half types and each term computed in the op math type.
//! - label smoothing and probability targets: the chain of tensor ops the forward builds
//!   (`mul` by a Python scalar, `sum`, `div`, `masked_fill`), differentiated as autograd does.

use super::*;
use crate::backend::Gradients;
use crate::reference::gradient::insert;
use crate::reference::Backward;

/// The op math type of `dt`: float32 for half types.
fn math(dt: DType) -> DType {
    match dt {
        DType::Float16 | DType::Bfloat16 => DType::Float32,
        d => d,
    }
}

/// `_log_softmax_backward_data(grad, output, axis)`: `grad - exp(output) * grad.sum(axis)`, the
/// sum accumulated in the op math type, each element computed there (fused for half types) and
/// rounded to the dtype.
pub(super) fn log_softmax_backward(grad: &Arr, out: &Arr, axis: usize) -> Arr {
    let dt = out.dt;
    let m = math(dt);
    let mut res = out.a.clone();
    for ((mut r, g), o) in res
        .lanes_mut(Axis(axis))
        .into_iter()
        .zip(grad.a.lanes(Axis(axis)))
        .zip(out.a.lanes(Axis(axis)))
    {
        let g: Vec<f64> = g.iter().map(|&v| round_to(dt, v)).collect();
        let s = round_to(m, crate::reference::numeric::sum(g.iter().copied()));
        for ((ri, &gi), &oi) in r.iter_mut().zip(&g).zip(o.iter()) {
            let e = round_to(m, oi.exp());
            *ri = if m == dt {
                round_to(dt, gi - round_to(dt, e * s))
            } else {
                // Half types: a fused multiply-add in float32 (measured: the unfused order
                // rounds the other way where `g - e * s` cancels).
                round_to(dt, round_to(m, (-e).mul_add(s, gi)))
            };
        }
    }
    Arr { dt, a: res }
}

/// `(n, c, s)`: batch, classes and spatial size of an `nll_loss` input.
fn layout(shape: &[usize]) -> (usize, usize, usize) {
    match shape {
        [c] => (1, *c, 1),
        [n, c, rest @ ..] => (*n, *c, rest.iter().product()),
        [] => (0, 0, 0),
    }
}

/// `nll_loss_backward` for `input` (whose forward terms are `nll`), `g` the gradient of the
/// loss (shape of the reduced or unreduced output).
fn nll_backward(
    input: &Arr,
    target: &Tensor,
    weight: Option<&Arr>,
    ignore_index: i64,
    red: Reduction,
    nll: &Nll,
    g: &Arr,
) -> Arr {
    let dt = input.dt;
    let (n, c, s) = layout(input.shape());
    let t = target.as_i64().expect("integer target");
    let w: Option<Vec<f64>> = weight.map(|w| w.a.iter().copied().collect());
    let gv: Vec<f64> = g.a.iter().copied().collect();
    let per_element = red == Reduction::None && input.shape().len() >= 2;
    let scalar = if per_element {
        0.0
    } else {
        let go = gv.first().copied().unwrap_or(0.0);
        match red {
            Reduction::Mean => -round_to(dt, go / nll.cascade().1),
            _ => -go,
        }
    };
    let mut out = vec![0.0; input.a.len()];
    for i in 0..n {
        for j in 0..s {
            let k = t[i * s + j];
            if k == ignore_index {
                continue;
            }
            let wk = w.as_ref().map(|w| w[k as usize]);
            let v = if per_element {
                -wk.unwrap_or(1.0) * gv[i * s + j]
            } else {
                wk.map_or(scalar, |wk| wk * scalar)
            };
            out[(i * c + k as usize) * s + j] = round_to(dt, v);
        }
    }
    Arr {
        dt,
        a: ArrayD::from_shape_vec(IxDyn(input.shape()), out).expect("input shape"),
    }
}

/// `g` (of a reduced shape) broadcast back over the class dimension `axis` of `shape`.
fn expand_classes(g: &Arr, shape: &[usize], axis: usize) -> Arr {
    let a = if g.a.ndim() + 1 == shape.len() {
        g.a.clone().insert_axis(Axis(axis))
    } else {
        g.a.clone()
    };
    Arr {
        dt: g.dt,
        a: a.broadcast(IxDyn(shape)).expect("broadcast").to_owned(),
    }
}

/// The gradients of `cross_entropy` (or `nll_loss` when `nll_only`) with respect to `input` and,
/// for probability targets, `target`; `g` is the gradient of the output.
pub(crate) fn cross_entropy_grads(
    args: &Args,
    g: &Arr,
    nll_only: bool,
) -> Result<(Arr, Option<Arr>), CallError> {
    let input = Arr::of(args.tensor("input")?);
    let target = args.tensor("target")?;
    let weight = args.opt_tensor("weight")?.map(Arr::of);
    let ignore_index = args.i64_or("ignore_index", -100)?;
    let red = reduction::read(args, true)?.get_enum()?;
    if nll_only {
        let nll = nll_terms(&input, target, weight.as_ref(), ignore_index)?;
        let gi = nll_backward(&input, target, weight.as_ref(), ignore_index, red, &nll, g);
        return Ok((gi, None));
    }
    let ls = float_arg(args, "label_smoothing", 0.0)?;
    let nd = input.a.ndim();
    let class_dim = if nd == 1 { 0 } else { 1 };
    if input.shape() == target.shape() {
        return probability_grads(&input, target, weight.as_ref(), ls, red, g);
    }
    let logp = checked_log_softmax(&input)?;
    let nll = nll_terms(&logp, target, weight.as_ref(), ignore_index)?;
    if ls <= 0.0 {
        let gl = nll_backward(&logp, target, weight.as_ref(), ignore_index, red, &nll, g);
        return Ok((log_softmax_backward(&gl, &logp, class_dim), None));
    }
    // (1 - ls) * nll + ret * (ls / C)
    let c = logp.shape()[class_dim];
    let g_nll = with_scalar(g, 1.0 - ls, ScalarOp::Mul);
    let g_ret = with_scalar(g, ls / c as f64, ScalarOp::Mul);
    let mut gl = nll_backward(
        &logp,
        target,
        weight.as_ref(),
        ignore_index,
        red,
        &nll,
        &g_nll,
    );
    let dt = logp.dt;
    // The gradient of `smooth_loss` (one per sample) before masked_fill.
    let per_sample: Vec<f64> = match red {
        Reduction::None => g_ret.a.iter().copied().collect(),
        Reduction::Sum => vec![g_ret.a.iter().copied().next().unwrap_or(0.0); nll.ignored.len()],
        Reduction::Mean => {
            let go = g_ret.a.iter().copied().next().unwrap_or(0.0);
            let denom = match &weight {
                Some(_) => {
                    let w = Arr {
                        dt,
                        a: ArrayD::from_shape_vec(IxDyn(&[nll.weights.len()]), nll.weights.clone())
                            .expect("length"),
                    };
                    sum_all(&w).a.iter().copied().next().unwrap_or(0.0)
                }
                None => round_to(dt, nll.ignored.iter().filter(|&&i| !i).count() as f64),
            };
            vec![round_to(dt, go / denom); nll.ignored.len()]
        }
    };
    let masked: Vec<f64> = per_sample
        .iter()
        .zip(&nll.ignored)
        .map(|(&v, &ign)| if ign { 0.0 } else { -v })
        .collect();
    let gs = Arr {
        dt,
        a: ArrayD::from_shape_vec(IxDyn(&nll.shape), masked).expect("smooth shape"),
    };
    let mut gs = expand_classes(&gs, logp.shape(), class_dim);
    if let Some(w) = &weight {
        gs = zip(&gs, &class_weight_view(w, nd)?, |_| Ok(()), |a, b| a * b)?;
    }
    gl = zip(&gl, &gs, |_| Ok(()), |a, b| a + b)?;
    Ok((log_softmax_backward(&gl, &logp, class_dim), None))
}

/// Probability targets: `-(logp * target' * weight)` summed, divided by `numel / C` for mean.
fn probability_grads(
    input: &Arr,
    target: &Tensor,
    weight: Option<&Arr>,
    ls: f64,
    red: Reduction,
    g: &Arr,
) -> Result<(Arr, Option<Arr>), CallError> {
    let nd = input.a.ndim();
    let class_dim = if nd == 1 { 0 } else { 1 };
    let c = input.shape()[class_dim];
    let logp = checked_log_softmax(input)?;
    let mut t = Arr::of(target);
    if ls > 0.0 {
        t = with_scalar(&t, 1.0 - ls, ScalarOp::Mul);
        t = with_scalar(&t, ls / c as f64, ScalarOp::Add);
    }
    let neg = |x: Arr| x.map(x.dt, |v| -v);
    let g2 = match red {
        Reduction::None => neg(expand_classes(g, input.shape(), class_dim)),
        Reduction::Sum => neg(g.expand(input.shape())?),
        Reduction::Mean => {
            let k = (input.a.len() / c.max(1)) as f64;
            neg(with_scalar(g, k, ScalarOp::Div).expand(input.shape())?)
        }
    };
    let g1 = match weight {
        Some(w) => zip(&g2, &class_weight_view(w, nd)?, |_| Ok(()), |a, b| a * b)?,
        None => g2,
    };
    let to = |x: Arr, dt: DType| x.map(dt, |v| v);
    let g_logp = to(zip(&g1, &t, |_| Ok(()), |a, b| a * b)?, logp.dt);
    let mut g_t = to(zip(&g1, &logp, |_| Ok(()), |a, b| a * b)?, t.dt);
    if ls > 0.0 {
        g_t = with_scalar(&g_t, 1.0 - ls, ScalarOp::Mul);
    }
    Ok((log_softmax_backward(&g_logp, &logp, class_dim), Some(g_t)))
}

fn grad_of(b: &Backward) -> Arr {
    Arr::of(b.grad_output)
}

pub fn cross_entropy_backward(args: &Args, b: &Backward) -> Result<Gradients, CallError> {
    let (gi, gt) = cross_entropy_grads(args, &grad_of(b), false)?;
    let mut out = Gradients::new();
    insert(&mut out, "input", gi.dt, &gi.a);
    if let Some(gt) = gt {
        insert(&mut out, "target", gt.dt, &gt.a);
    }
    Ok(out)
}

pub fn nll_loss_backward(args: &Args, b: &Backward) -> Result<Gradients, CallError> {
    let (gi, _) = cross_entropy_grads(args, &grad_of(b), true)?;
    let mut out = Gradients::new();
    insert(&mut out, "input", gi.dt, &gi.a);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::backend::{Backend, Call, Outcome, Value};
    use crate::reference::testing::t;
    use crate::reference::Reference;
    use crate::tensor::DType;

    /// The gradient of `wrt` for `api` on the reference, flattened.
    fn grad(api: &str, args: Vec<(&str, Value)>, wrt: &str) -> Vec<f64> {
        let call = Call {
            api: format!("torch.nn.functional.{api}"),
            args: args.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        match Reference.backward(&call, &[wrt.to_string()], None) {
            Outcome::Value(mut g) => g.remove(wrt).expect("gradient").to_f64_vec(),
            other => panic!("{other:?}"),
        }
    }

    const X: [f64; 6] = [1.0, -2.0, 0.5, 3.0, 0.25, -1.0];

    #[test]
    fn one_hot_probabilities_and_indices_give_one_gradient() {
        // Two routes through different formulas (nll_loss backward vs mul/sum backward) must
        // agree where the losses agree: one-hot targets, sum reduction, with smoothing too.
        for ls in [0.0, 0.3] {
            let common = |target: Value| {
                vec![
                    ("input", t(DType::Float64, &[2, 3], &X)),
                    ("target", target),
                    ("reduction", Value::Str("sum".into())),
                    ("label_smoothing", Value::Float(ls)),
                ]
            };
            let idx = grad(
                "cross_entropy",
                common(t(DType::Int64, &[2], &[2.0, 0.0])),
                "input",
            );
            let onehot = t(DType::Float64, &[2, 3], &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
            let prob = grad("cross_entropy", common(onehot), "input");
            for (a, b) in idx.iter().zip(&prob) {
                assert!((a - b).abs() < 1e-12, "{ls}: {idx:?} vs {prob:?}");
            }
        }
    }

    #[test]
    fn ignored_samples_get_no_gradient_and_rows_sum_to_zero() {
        let g = grad(
            "cross_entropy",
            vec![
                ("input", t(DType::Float64, &[2, 3], &X)),
                ("target", t(DType::Int64, &[2], &[1.0, -100.0])),
                ("label_smoothing", Value::Float(0.2)),
                ("weight", t(DType::Float64, &[3], &[0.5, 2.0, 1.0])),
            ],
            "input",
        );
        assert_eq!(&g[3..], &[0.0, 0.0, 0.0]);
        // A log_softmax backward: each kept row sums to 0.
        assert!(g[..3].iter().sum::<f64>().abs() < 1e-12);
        // nll_loss alone: only the target class of a kept sample gets a (negative) gradient.
        let g = grad(
            "nll_loss",
            vec![
                ("input", t(DType::Float64, &[2, 3], &X)),
                ("target", t(DType::Int64, &[2], &[1.0, -100.0])),
                ("weight", t(DType::Float64, &[3], &[0.5, 2.0, 1.0])),
            ],
            "input",
        );
        assert!(g[1] < 0.0);
        assert!(
            g.iter().enumerate().all(|(i, &v)| i == 1 || v == 0.0),
            "{g:?}"
        );
    }
}
