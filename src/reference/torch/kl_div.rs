//! `torch.nn.functional.kl_div`.
//!
//! The Python wrapper picks the reduction (the legacy `size_average`/`reduce` pair wins over
//! `reduction`; `batchmean` runs the ATen kernel with `sum`), then `torch.kl_div` rejects
//! integral tensors and computes `xlogy(target, target) - target * input` (or
//! `exp(target) * (target - input)` with `log_target`) as two or three separate tensor ops,
//! each rounded to its own dtype. Finally, whenever `reduction == 'batchmean'` and the input is
//! not 0-d, the wrapper divides by `input.size(0)`: even when a legacy argument chose another
//! reduction (so `reduce=False` with `batchmean` divides every element).

use super::poisson_nll::mul;
use super::reduction::{self, Reduction};
use super::{round_to, torch_dtype_name, zip, Arr};
use crate::backend::Gradients;
use crate::backend::{CallError, Value};
use crate::reference::{Args, Backward, GradientKernel, Kernel};
use crate::tensor::{DType, Tensor};

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[("torch.nn.functional.kl_div", kl_div_backward)];

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[("torch.nn.functional.kl_div", kl_div)];

/// `tensor / python_int` for a float tensor: computed in the op math type (float32 for half
/// types), rounded to the tensor's dtype.
fn div_scalar(x: &Arr, n: f64) -> Arr {
    let math = match x.dt {
        DType::Float16 | DType::Bfloat16 => DType::Float32,
        d => d,
    };
    let n = round_to(math, n);
    x.map(x.dt, |v| round_to(math, v / n))
}

/// The reduction the ATen kernel runs (legacy `size_average`/`reduce` win; `batchmean` runs
/// `sum`), and whether the wrapper then divides by `input.size(0)` (`reduction == 'batchmean'`).
fn read_reduction(args: &Args) -> Result<(Reduction, bool), CallError> {
    let requested = reduction::read(args, true)?;
    let legacy = !matches!(args.get("size_average"), None | Some(Value::Null))
        || !matches!(args.get("reduce"), None | Some(Value::Null));
    let batchmean = matches!(args.get("reduction"), Some(Value::Str(s)) if s == "batchmean");
    let red = if !legacy && batchmean {
        Reduction::Sum
    } else {
        requested.get_enum()?
    };
    Ok((red, batchmean))
}

pub fn kl_div(args: &Args) -> Result<Tensor, CallError> {
    let input = Arr::of(args.tensor("input")?);
    let target = Arr::of(args.tensor("target")?);
    let log_target = args.bool_or("log_target", false)?;
    let (red, batchmean) = read_reduction(args)?;
    for (dt, name) in [(input.dt, "input"), (target.dt, "target")] {
        if !dt.is_float() {
            return Err(CallError::dtype(format!(
                "kl_div: Integral inputs not supported ({name} is {})",
                torch_dtype_name(dt)
            )));
        }
    }
    let loss = if log_target {
        let e = target.map(target.dt, f64::exp);
        let d = zip(&target, &input, |_| Ok(()), |t, x| t - x)?;
        mul(&e, &d)?
    } else {
        // ATen's scalar xlogy kernel: `x * std::log(y)`, where `std::log` of a half type
        // returns that half type, so the log is rounded before the product (measured).
        let dt = target.dt;
        let xlogy = target.map(dt, |t| {
            if t.is_nan() {
                f64::NAN
            } else if t == 0.0 {
                0.0
            } else {
                t * round_to(dt, t.ln())
            }
        });
        let prod = mul(&target, &input)?;
        zip(&xlogy, &prod, |_| Ok(()), |a, b| a - b)?
    };
    let mut out = reduction::apply(loss, red)?;
    if batchmean && !input.is_0d() {
        out = div_scalar(&out, input.shape()[0] as f64);
    }
    Ok(out.tensor())
}

/// The gradient of `kl_div` (a composite: autograd through its ops). `batchmean` first divides
/// the gradient by `input.size(0)`. With `log_target`: `exp(t) * (t - x)` gives `-exp(t) * grad`
/// to the input and `exp(t) * (t - x) * grad + exp(t) * grad` to the target. Otherwise
/// `xlogy(t, t) - t * x` gives `-t * grad` to the input and, to the target, `xlogy(grad, t)`
/// (masked to 0 where t == 0) + `grad * t / t` (NaN at t == 0: 0 / 0) - `x * grad`.
pub fn kl_div_backward(args: &Args, b: &Backward) -> Result<Gradients, CallError> {
    use super::poisson_nll::{add_to, div_backward_self, mul_backward};
    let input = Arr::of(args.tensor("input")?);
    let target = Arr::of(args.tensor("target")?);
    let log_target = args.bool_or("log_target", false)?;
    let (red, batchmean) = read_reduction(args)?;
    let mut g = Arr::of(b.grad_output);
    if batchmean && !input.is_0d() {
        g = div_scalar(&g, input.shape()[0] as f64);
    }
    let loss_shape = super::broadcast_shapes(input.shape(), target.shape())?;
    let gl = reduction::backward(&g, &loss_shape, red)?;
    let mut gi: Option<Arr> = None;
    let mut gt: Option<Arr> = None;
    if log_target {
        let e = target.map(target.dt, f64::exp);
        let d = zip(&target, &input, |_| Ok(()), |t, x| t - x)?;
        let g_e = mul_backward(&gl, &d, &e)?;
        let g_d = mul_backward(&gl, &e, &d)?;
        gt = add_to(gt, mul_backward(&g_e, &e, &target)?)?;
        gt = add_to(gt, reduction::reduce_to(&g_d, target.shape(), target.dt)?)?;
        let neg = g_d.map(g_d.dt, |v| -v);
        gi = add_to(gi, reduction::reduce_to(&neg, input.shape(), input.dt)?)?;
    } else {
        let dt = target.dt;
        let xlogy = target.map(dt, |t| t); // its dtype: the target's
        let prod = mul(&target, &input)?;
        let g_x = reduction::reduce_to(&gl, xlogy.shape(), xlogy.dt)?;
        let g_p = reduction::reduce_to(&gl.map(gl.dt, |v| -v), prod.shape(), prod.dt)?;
        // xlogy(self=t, other=t): self gets xlogy(grad, t) masked where t == 0 (and t <= 0),
        // other gets grad * t / t.
        let a = ndarray::Zip::from(&g_x.a)
            .and(&target.a)
            .map_collect(|&g, &t| {
                // xlogy(0, y) = 0 unless y is NaN; the mask zeroes t == 0.
                if t == 0.0 || (g == 0.0 && !t.is_nan()) {
                    0.0
                } else {
                    g * round_to(dt, t.ln())
                }
            });
        let a = Arr { dt, a }.map(dt, |v| v);
        let gt_b = div_backward_self(&mul(&g_x, &target)?, &target, &target)?;
        gt = add_to(gt, a)?;
        gt = add_to(gt, gt_b)?;
        gt = add_to(gt, mul_backward(&g_p, &input, &target)?)?;
        gi = add_to(gi, mul_backward(&g_p, &target, &input)?)?;
    }
    let mut out = Gradients::new();
    if let Some(gi) = gi {
        reduction::put(&mut out, b, "input", &input, &gi)?;
    }
    if let Some(gt) = gt {
        reduction::put(&mut out, b, "target", &target, &gt)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::backend::{ErrorKind, Outcome, Value};

    use crate::tensor::{DType, Tensor};

    fn f32s(shape: &[usize], data: &[f64]) -> Value {
        Value::Tensor(Tensor::from_f64(DType::Float32, shape.to_vec(), data.to_vec()).unwrap())
    }

    fn call(args: &[(&str, Value)]) -> Outcome {
        crate::reference::testing::forward("torch.nn.functional.kl_div", args.to_vec())
    }

    fn scalar(args: &[(&str, Value)]) -> f64 {
        match call(args) {
            Outcome::Value(t) => {
                assert_eq!(t.shape(), &[] as &[usize]);
                t.to_f64_vec()[0]
            }
            other => panic!("expected a value, got {other:?}"),
        }
    }

    fn pq() -> Vec<(&'static str, Value)> {
        vec![
            (
                "input",
                f32s(&[2, 3], &[-1.0, -2.0, -0.5, -1.5, -0.1, -3.0]),
            ),
            ("target", f32s(&[2, 3], &[0.2, 0.3, 0.5, 0.0, 0.6, 0.4])),
        ]
    }

    fn with(
        mut a: Vec<(&'static str, Value)>,
        k: &'static str,
        v: Value,
    ) -> Vec<(&'static str, Value)> {
        a.push((k, v));
        a
    }

    #[test]
    fn batchmean_is_sum_over_batch_and_mean_is_sum_over_numel() {
        let sum = scalar(&with(pq(), "reduction", Value::Str("sum".into())));
        let bm = scalar(&with(pq(), "reduction", Value::Str("batchmean".into())));
        let mean = scalar(&with(pq(), "reduction", Value::Str("mean".into())));
        assert!((bm - sum / 2.0).abs() <= 1e-6 * sum.abs());
        assert!((mean - sum / 6.0).abs() <= 1e-6 * sum.abs());
        // Legacy size_average=True with batchmean: the legacy mean, divided by N again.
        let legacy = scalar(&with(
            with(pq(), "reduction", Value::Str("batchmean".into())),
            "size_average",
            Value::Bool(true),
        ));
        assert!((legacy - mean / 2.0).abs() <= 1e-6 * mean.abs());
    }

    #[test]
    fn zero_target_contributes_nothing_unless_log_target() {
        let out = call(&[
            ("input", f32s(&[2], &[-1.0, -2.0])),
            ("target", f32s(&[2], &[0.0, f64::NEG_INFINITY])),
            ("reduction", Value::Str("none".into())),
            ("log_target", Value::Bool(true)),
        ]);
        let Outcome::Value(t) = out else {
            panic!("{out:?}")
        };
        assert!(t.to_f64_vec().iter().all(|v| v.is_nan() || *v != 0.0));
        assert!(t.to_f64_vec()[1].is_nan());
        let zero = scalar(&[
            ("input", f32s(&[1], &[-3.0])),
            ("target", f32s(&[1], &[0.0])),
            ("reduction", Value::Str("sum".into())),
        ]);
        assert_eq!(zero, 0.0);
    }

    #[test]
    fn errors_have_the_right_kinds() {
        let int_target =
            Value::Tensor(Tensor::from_i64(DType::Int64, vec![2, 3], vec![0; 6]).unwrap());
        let kind = |o: Outcome| match o {
            Outcome::Error(e) => e.kind,
            other => panic!("expected an error, got {other:?}"),
        };
        let mut a = pq();
        a[1].1 = int_target;
        assert_eq!(kind(call(&a)), ErrorKind::Dtype);
        assert_eq!(
            kind(call(&with(pq(), "reduction", Value::Str("avg".into())))),
            ErrorKind::Argument
        );
        let mut b = pq();
        b[1].1 = f32s(&[3, 2], &[0.1; 6]);
        assert_eq!(kind(call(&b)), ErrorKind::Shape);
    }
}
