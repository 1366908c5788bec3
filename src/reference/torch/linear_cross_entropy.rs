//! `torch.nn.functional.linear_cross_entropy` on its reference path (`options=None`).
//!
//! The Python wrapper validates shapes itself (input rank 1 or 2, linear_weight rank >= 2,
//! equal in_features, linear_bias exactly `(C, d1..dK)`, a K-dimensional weight only with a
//! batched input, no explicit `ignore_index` with probability targets), then computes
//! `linear(input, W.reshape(-1, in), b.reshape(-1))`, reshapes the logits to
//! `(N, C, d1..dK)` and calls `cross_entropy` on them, which this module delegates to the
//! `cross_entropy` kernel unchanged.
//!
//! The linear layer runs in the input's dtype: mismatched weight or bias dtypes raise, and the
//! logits are rounded once to that dtype. For float16/bfloat16 the CPU gemm accumulates in
//! float32 and adds the bias before rounding, so one rounding of the exact value matches it
//! (measured, for 1-D and 2-D inputs with and without bias); for float32/float64 see
//! [`gemm_dot`] (a sequential order for short dot products, measured).

use super::{torch_dtype_name, Arr};
use crate::backend::Gradients;
use crate::backend::{CallError, Value};
use crate::reference::gradient::insert;
use crate::reference::{Args, Kernel};
use crate::reference::{Backward, GradientKernel};
use crate::tensor::{DType, Tensor};
use std::collections::BTreeMap;

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[(
    "torch.nn.functional.linear_cross_entropy",
    linear_cross_entropy_backward,
)];

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[(
    "torch.nn.functional.linear_cross_entropy",
    linear_cross_entropy,
)];

/// `linear(input, weight, bias)` with weight `(M, in)` and bias `(M,)`: `(.., M)` logits in
/// the input's dtype, after the matmul/addmm dtype checks.
fn linear(input: &Arr, weight: &Arr, bias: Option<&Arr>) -> Result<Arr, CallError> {
    if weight.dt != input.dt {
        return Err(CallError::dtype(format!(
            "expected m1 and m2 to have the same dtype, but got: {} != {}",
            torch_dtype_name(input.dt),
            torch_dtype_name(weight.dt)
        )));
    }
    if let Some(b) = bias {
        if b.dt != input.dt {
            return Err(CallError::dtype(format!(
                "self and mat2 must have the same dtype, but got {} and {}",
                torch_dtype_name(b.dt),
                torch_dtype_name(input.dt)
            )));
        }
    }
    if input.dt == DType::Bool {
        return Err(CallError::dtype(
            "\"addmm_impl_cpu_\" not implemented for 'Bool'",
        ));
    }
    let dt = input.dt;
    let in_features = *input.shape().last().expect("input rank checked");
    let m = weight.shape()[0];
    let rows: usize = input.shape()[..input.shape().len() - 1].iter().product();
    let x: Vec<f64> = input.a.iter().copied().collect();
    let w: Vec<f64> = weight.a.iter().copied().collect();
    let b: Option<Vec<f64>> = bias.map(|b| b.a.iter().copied().collect());
    let mut out = Vec::with_capacity(rows * m);
    for r in 0..rows {
        for c in 0..m {
            let xr = &x[r * in_features..(r + 1) * in_features];
            let wc = &w[c * in_features..(c + 1) * in_features];
            let bias_c = b.as_ref().map_or(0.0, |b| b[c]);
            let v = if dt.is_float() {
                gemm_dot(dt, xr.iter().zip(wc).map(|(p, q)| (*p, *q)), bias_c)
            } else {
                // Integer addmm wraps; its values never matter (log_softmax rejects integer
                // logits), only that the call gets that far.
                let dot = xr.iter().zip(wc).fold(bias_c as i64, |acc, (p, q)| {
                    acc.wrapping_add((*p as i64).wrapping_mul(*q as i64))
                });
                super::round_to(dt, dot as f64)
            };
            out.push(v);
        }
    }
    let mut shape = input.shape()[..input.shape().len() - 1].to_vec();
    shape.push(m);
    Ok(Arr {
        dt,
        a: ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), out)
            .expect("logits shape holds rows * M elements"),
    })
}

/// One element of a CPU `addmm`/`mm` in dtype `dt`: `sum_i p_i q_i + bias`.
///
/// float16/bfloat16: accumulated in float32 and rounded once with the bias added (measured).
/// float32/float64 with at most 3 terms: PyTorch's gemm multiplies and adds one term at a time
/// from 0 (each product and sum rounded, no fused multiply-add), then adds the bias; measured
/// bit for bit with 1 to 3 features (longer dot products use blocked BLAS orders, for which one
/// rounding of the exact value is within an ulp or two).
fn gemm_dot(dt: DType, terms: impl Iterator<Item = (f64, f64)> + Clone, bias: f64) -> f64 {
    let r = |x: f64| super::round_to(dt, x);
    if matches!(dt, DType::Float32 | DType::Float64) && terms.clone().count() <= 3 {
        let acc = terms.fold(0.0, |acc, (p, q)| r(acc + r(p * q)));
        return r(acc + bias);
    }
    r(crate::reference::numeric::sum(
        terms.map(|(p, q)| p * q).chain([bias]),
    ))
}

fn shape_tuple(s: &[usize]) -> String {
    match s {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A checked call: the flattened linear layer, its logits and the `cross_entropy` arguments.
struct Prepared {
    input: Arr,
    /// `linear_weight` as `(M, in_features)`.
    flat_w: Arr,
    /// `linear_bias` as `(M,)`.
    flat_b: Option<Arr>,
    /// The arguments `cross_entropy` receives (`input` = the logits, `(.., C, d1..dK)`).
    ce: BTreeMap<String, Value>,
}

pub fn linear_cross_entropy(args: &Args) -> Result<Tensor, CallError> {
    let ce = prepare(args)?.ce;
    let ce_args = Args::new("torch.nn.functional.cross_entropy", &ce);
    let out = super::cross_entropy::cross_entropy(&ce_args)?;
    ce_args.finish()?;
    Ok(out)
}

/// The gradients of `linear_cross_entropy`: `cross_entropy`'s gradient for the logits, then
/// the linear layer's (`addmm` / `matmul`) backward: `grad_input = g @ W`,
/// `grad_weight = g^T @ input`, `grad_bias = g.sum(0)`, each element as [`gemm_dot`] computes
/// one (the same CPU gemm).
pub fn linear_cross_entropy_backward(args: &Args, b: &Backward) -> Result<Gradients, CallError> {
    let p = prepare(args)?;
    let ce_args = Args::new("torch.nn.functional.cross_entropy", &p.ce);
    let (gl, _) =
        super::cross_entropy::cross_entropy_grads(&ce_args, &Arr::of(b.grad_output), false)?;
    let dt = p.input.dt;
    let in_features = *p.input.shape().last().expect("input rank checked");
    let m = p.flat_w.shape()[0];
    let rows = p.input.a.len() / in_features.max(1);
    let g: Vec<f64> = gl.a.iter().copied().collect();
    let x: Vec<f64> = p.input.a.iter().copied().collect();
    let w: Vec<f64> = p.flat_w.a.iter().copied().collect();
    let dot = |it: &mut dyn Iterator<Item = (f64, f64)>| {
        let terms: Vec<(f64, f64)> = it.collect();
        gemm_dot(dt, terms.into_iter(), 0.0)
    };
    let mut out = Gradients::new();
    if b.wants("input") {
        let gi: Vec<f64> = (0..rows * in_features)
            .map(|idx| {
                let (r, i) = (idx / in_features, idx % in_features);
                dot(&mut (0..m).map(|c| (g[r * m + c], w[c * in_features + i])))
            })
            .collect();
        let a = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(p.input.shape()), gi)
            .map_err(|e| CallError::shape(e.to_string()))?;
        insert(&mut out, "input", dt, &a);
    }
    if b.wants("linear_weight") {
        let gw: Vec<f64> = (0..m * in_features)
            .map(|idx| {
                let (c, i) = (idx / in_features, idx % in_features);
                dot(&mut (0..rows).map(|r| (g[r * m + c], x[r * in_features + i])))
            })
            .collect();
        let shape = args.tensor("linear_weight")?.shape().to_vec();
        let a = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), gw)
            .map_err(|e| CallError::shape(e.to_string()))?;
        insert(&mut out, "linear_weight", dt, &a);
    }
    if b.wants("linear_bias") && p.flat_b.is_some() {
        let gb: Vec<f64> = (0..m)
            .map(|c| dot(&mut (0..rows).map(|r| (g[r * m + c], 1.0))))
            .collect();
        let shape = args.tensor("linear_bias")?.shape().to_vec();
        let a = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), gb)
            .map_err(|e| CallError::shape(e.to_string()))?;
        insert(&mut out, "linear_bias", dt, &a);
    }
    Ok(out)
}

fn prepare(args: &Args) -> Result<Prepared, CallError> {
    let input = Arr::of(args.tensor("input")?);
    let weight_t = args.tensor("linear_weight")?;
    let lw = Arr::of(weight_t);
    let target = args.tensor("target")?;
    let bias = args.opt_tensor("linear_bias")?.map(Arr::of);
    let class_weight = args.get("weight");
    let reduction = args.get("reduction");
    let ignore_index = args.get("ignore_index");
    let label_smoothing = args.get("label_smoothing");
    let options = args.get("options");

    let nd = input.shape().len();
    if !(1..=2).contains(&nd) {
        return Err(CallError::shape(format!(
            "expected input with dimensionality 1 or 2, got {nd}"
        )));
    }
    if lw.shape().len() < 2 {
        return Err(CallError::shape(format!(
            "expected linear_weight with dimensionality at least 2, got {}",
            lw.shape().len()
        )));
    }
    let in_features = input.shape()[nd - 1];
    let wshape = lw.shape().to_vec();
    if in_features != wshape[wshape.len() - 1] {
        return Err(CallError::shape(format!(
            "expected equal input and linear_weight last dimensions (in_features), got {in_features} and {}, respectively",
            wshape[wshape.len() - 1]
        )));
    }
    let out_features = &wshape[1..wshape.len() - 1];
    let class_shape = &wshape[..wshape.len() - 1];
    if let Some(b) = &bias {
        if b.shape() != class_shape {
            return Err(CallError::shape(format!(
                "expected linear_bias shape {}, got {}",
                shape_tuple(class_shape),
                shape_tuple(b.shape())
            )));
        }
    }
    if !out_features.is_empty() && nd == 1 {
        return Err(CallError::shape(format!(
            "K-dimensional loss defined by linear_weight shape {} requires batched input, (N, {in_features}), got unbatched input with shape {}",
            shape_tuple(&wshape),
            shape_tuple(input.shape())
        )));
    }
    let mut logits_shape = input.shape()[..nd - 1].to_vec();
    logits_shape.extend_from_slice(class_shape);
    let probabilities = target.shape() == logits_shape.as_slice();
    let explicit_ignore = !matches!(ignore_index, None | Some(Value::Null));
    if probabilities && explicit_ignore {
        return Err(CallError::argument(
            "ignore_index cannot be specified when target contains probabilities",
        ));
    }
    if !matches!(options, None | Some(Value::Null))
        && chunked_applies(&input, target, reduction, label_smoothing, out_features)
    {
        return Err(CallError::argument(format!(
            "'{}' object has no attribute '_adjust' (options must be a LinearCrossEntropyOptions)",
            options.map_or(String::new(), Value::describe)
        )));
    }

    let m: usize = class_shape.iter().product();
    let flat_w = Arr {
        dt: lw.dt,
        a: lw
            .a
            .clone()
            .into_shape_with_order(ndarray::IxDyn(&[m, in_features]))
            .map_err(|e| CallError::shape(e.to_string()))?,
    };
    let flat_b = bias
        .map(|b| {
            b.a.clone()
                .into_shape_with_order(ndarray::IxDyn(&[m]))
                .map(|a| Arr { dt: b.dt, a })
        })
        .transpose()
        .map_err(|e| CallError::shape(e.to_string()))?;
    let logits = linear(&input, &flat_w, flat_b.as_ref())?;
    let logits = Arr {
        dt: logits.dt,
        a: logits
            .a
            .into_shape_with_order(ndarray::IxDyn(&logits_shape))
            .map_err(|e| CallError::shape(e.to_string()))?,
    };

    let mut ce: BTreeMap<String, Value> = BTreeMap::new();
    ce.insert("input".into(), Value::Tensor(logits.tensor()));
    ce.insert("target".into(), Value::Tensor(target.clone()));
    if let Some(w) = class_weight {
        ce.insert("weight".into(), w.clone());
    }
    if let Some(r) = reduction {
        ce.insert("reduction".into(), r.clone());
    }
    let ignore = match ignore_index {
        None | Some(Value::Null) => Value::Int(-100),
        Some(v) => v.clone(),
    };
    ce.insert("ignore_index".into(), ignore);
    if let Some(ls) = label_smoothing {
        ce.insert("label_smoothing".into(), ls.clone());
    }
    Ok(Prepared {
        input,
        flat_w,
        flat_b,
        ce,
    })
}

/// `_linear_cross_entropy_chunked_applies`: whether a non-null `options` would be used (and,
/// not being a `LinearCrossEntropyOptions` over the wire, fail) rather than ignored with a
/// warning.
fn chunked_applies(
    input: &Arr,
    target: &Tensor,
    reduction: Option<&Value>,
    label_smoothing: Option<&Value>,
    out_features: &[usize],
) -> bool {
    let reduction_ok = match reduction {
        None => true,
        Some(Value::Str(s)) => matches!(s.as_str(), "mean" | "sum" | "none"),
        Some(_) => false,
    };
    let smoothing_zero = match label_smoothing {
        None => true,
        Some(Value::Bool(b)) => !b,
        Some(v) => v.as_f64() == Some(0.0),
    };
    let prob_ok = target.dtype() == input.dt;
    reduction_ok
        && smoothing_zero
        && (target.dtype() == DType::Int64 || prob_ok)
        && out_features.is_empty()
}

#[cfg(test)]
mod tests {
    use crate::backend::{Backend, Call, ErrorKind, Outcome, Value};
    use crate::reference::testing::kind;
    use crate::reference::Reference;
    use crate::tensor::{DType, Tensor};

    fn t(dtype: DType, shape: &[usize], data: &[f64]) -> Value {
        Value::Tensor(Tensor::from_f64(dtype, shape.to_vec(), data.to_vec()).unwrap())
    }

    /// Equal up to a few float64 ulps (sums in different orders).
    fn nearly(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-14 * x.abs().max(y.abs()).max(1e-300))
    }

    fn call(api: &str, args: &[(&str, Value)]) -> Outcome {
        Reference.forward(&Call {
            api: format!("torch.nn.functional.{api}"),
            args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        })
    }

    fn base() -> Vec<(&'static str, Value)> {
        vec![
            (
                "input",
                t(DType::Float64, &[3, 2], &[1.0, 2.0, 0.0, 1.0, -1.0, 0.5]),
            ),
            (
                "linear_weight",
                t(DType::Float64, &[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]),
            ),
            ("target", t(DType::Int64, &[3], &[0.0, 2.0, 1.0])),
        ]
    }

    #[test]
    fn equals_cross_entropy_of_the_logits() {
        // logits = x W^T + b, computed by hand in float64 (exact here).
        let b = [0.5, -0.25, 0.0];
        let x = [[1.0, 2.0], [0.0, 1.0], [-1.0, 0.5]];
        let w = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]];
        let logits: Vec<f64> = x
            .iter()
            .flat_map(|r| (0..3).map(move |c| r[0] * w[c][0] + r[1] * w[c][1] + b[c]))
            .collect();
        for red in ["none", "mean", "sum"] {
            let mut a = base();
            a.push(("linear_bias", t(DType::Float64, &[3], &b)));
            a.push(("reduction", Value::Str(red.into())));
            a.push(("label_smoothing", Value::Float(0.1)));
            let lce = call("linear_cross_entropy", &a);
            let ce = call(
                "cross_entropy",
                &[
                    ("input", t(DType::Float64, &[3, 3], &logits)),
                    ("target", t(DType::Int64, &[3], &[0.0, 2.0, 1.0])),
                    ("reduction", Value::Str(red.into())),
                    ("label_smoothing", Value::Float(0.1)),
                ],
            );
            // The cross_entropy fast path sums in another order: equal to a few float64 ulps.
            let (Outcome::Value(lce), Outcome::Value(ce)) = (lce, ce) else {
                panic!("{red}: both calls succeed")
            };
            assert_eq!(lce.shape(), ce.shape(), "{red}");
            assert!(nearly(&lce.to_f64_vec(), &ce.to_f64_vec()), "{red}");
        }
    }

    #[test]
    fn python_checks_and_dtype_errors() {
        let mut a = base();
        a.push(("ignore_index", Value::Int(-100)));
        a[2].1 = t(DType::Float64, &[3, 3], &[1.0 / 3.0; 9]);
        assert_eq!(kind(call("linear_cross_entropy", &a)), ErrorKind::Argument);
        let mut b = base();
        b[1].1 = t(DType::Float32, &[3, 2], &[0.0; 6]);
        assert_eq!(kind(call("linear_cross_entropy", &b)), ErrorKind::Dtype);
        let mut c = base();
        c.push(("linear_bias", t(DType::Float64, &[1, 3], &[0.0; 3])));
        assert_eq!(kind(call("linear_cross_entropy", &c)), ErrorKind::Shape);
        let mut d = base();
        d[0].1 = t(DType::Float64, &[1, 3, 2], &[0.0; 6]);
        assert_eq!(kind(call("linear_cross_entropy", &d)), ErrorKind::Shape);
        let mut e = base();
        e.push(("reduction", Value::Str("avg".into())));
        assert_eq!(kind(call("linear_cross_entropy", &e)), ErrorKind::Argument);
    }

    #[test]
    fn k_dimensional_weight_gives_k_dimensional_loss() {
        let out = call(
            "linear_cross_entropy",
            &[
                ("input", t(DType::Float32, &[2, 2], &[1.0, 2.0, 3.0, 4.0])),
                ("linear_weight", t(DType::Float32, &[3, 4, 2], &[0.5; 24])),
                ("target", t(DType::Int64, &[2, 4], &[0.0; 8])),
                ("reduction", Value::Str("none".into())),
            ],
        );
        let Outcome::Value(v) = out else {
            panic!("{out:?}")
        };
        assert_eq!(v.shape(), &[2, 4]);
        // Equal logits: every loss is log 3.
        for x in v.to_f64_vec() {
            assert!((x - 3f64.ln()).abs() < 1e-6);
        }
    }

    fn grads(api: &str, args: &[(&str, Value)], wrt: &[&str]) -> Vec<Vec<f64>> {
        crate::reference::testing::gradients(&format!("torch.nn.functional.{api}"), args, wrt)
    }

    #[test]
    fn gradients_are_cross_entropy_through_the_linear_layer() {
        // Identity weight and zero bias: the logits are the input, so the input and bias
        // gradients are cross_entropy's, and the weight gradient is g^T x.
        let x = [1.0, 2.0, 0.0, 1.0, -1.0, 0.5];
        let mut a = vec![
            ("input", t(DType::Float64, &[3, 2], &x)),
            (
                "linear_weight",
                t(DType::Float64, &[2, 2], &[1.0, 0.0, 0.0, 1.0]),
            ),
            ("linear_bias", t(DType::Float64, &[2], &[0.0, 0.0])),
            ("target", t(DType::Int64, &[3], &[0.0, 1.0, -100.0])),
        ];
        for red in ["none", "mean", "sum"] {
            a.push(("reduction", Value::Str(red.into())));
            a.push(("label_smoothing", Value::Float(0.1)));
            let l = grads(
                "linear_cross_entropy",
                &a,
                &["input", "linear_weight", "linear_bias"],
            );
            let ce_args = [
                ("input", t(DType::Float64, &[3, 2], &x)),
                ("target", t(DType::Int64, &[3], &[0.0, 1.0, -100.0])),
                ("reduction", Value::Str(red.into())),
                ("label_smoothing", Value::Float(0.1)),
            ];
            let ce = grads("cross_entropy", &ce_args, &["input"]).remove(0);
            assert!(nearly(&l[0], &ce), "{red}");
            let col = |c: usize| (0..3).map(|r| ce[r * 2 + c]).sum::<f64>();
            assert!(nearly(&l[2], &[col(0), col(1)]), "{red}");
            let gw = |c: usize, i: usize| (0..3).map(|r| ce[r * 2 + c] * x[r * 2 + i]).sum::<f64>();
            for (k, v) in l[1].iter().enumerate() {
                assert!((v - gw(k / 2, k % 2)).abs() < 1e-15, "{red}");
            }
            a.truncate(4);
        }
    }
}
