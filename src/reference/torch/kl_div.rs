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
use crate::backend::{CallError, Value};
use crate::reference::{Args, Kernel};
use crate::tensor::{DType, Tensor};
use crate::reference::GradientKernel;

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[];

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

pub fn kl_div(args: &Args) -> Result<Tensor, CallError> {
    let input = Arr::of(args.tensor("input")?);
    let target = Arr::of(args.tensor("target")?);
    let log_target = args.bool_or("log_target", false)?;
    let requested = reduction::read(args, true)?;
    let legacy = !matches!(args.get("size_average"), None | Some(Value::Null))
        || !matches!(args.get("reduce"), None | Some(Value::Null));
    let batchmean = matches!(args.get("reduction"), Some(Value::Str(s)) if s == "batchmean");
    let red = if !legacy && batchmean {
        Reduction::Sum
    } else {
        requested.get_enum()?
    };
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
