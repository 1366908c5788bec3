//! `torch.nn.functional.gaussian_nll_loss`.
//!
//! Pure Python over tensor ops, in this order: a Python `float` var becomes
//! `var * ones_like(input)` (any other non-tensor fails in `torch.any(var < 0)` with a
//! TypeError); a negative entry raises; a var whose shape is not the input's is unsqueezed to a
//! trailing 1 when it equals `input.shape[:-1]`, accepted when it has the input's rank and the
//! sizes of the dims where it differs add up to exactly 1, and rejected otherwise; then the
//! reduction is checked; then `var.clone().clamp_(min=eps)` (eps cast to var's dtype, an
//! integer or bool var cannot hold the float result); then
//! `0.5 * (log(var) + (input - target) ** 2 / var)`, `+= 0.5 * log(2 pi)` if full, and the
//! reduction. Every op rounds to its own result dtype, so `(input - target) ** 2` of integer
//! tensors is an integer.

use super::poisson_nll::{add_scalar, div, float_result, mul_any, mul_scalar, sub, unary};
use super::reduction::{self, Reduction};
use super::{mean_all, round_to, sum_all, torch_dtype_name, zip, Arr};
use crate::backend::Gradients;
use crate::backend::{CallError, Value};
use crate::reference::{Args, Backward, GradientKernel, Kernel};
use crate::tensor::DType;
use crate::tensor::Tensor;
use ndarray::{ArrayD, IxDyn};

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[(
    "torch.nn.functional.gaussian_nll_loss",
    gaussian_nll_loss_backward,
)];

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] =
    &[("torch.nn.functional.gaussian_nll_loss", gaussian_nll_loss)];

fn negative() -> CallError {
    CallError::value("var has negative entry/entries")
}

/// `var` as a tensor, after the Python-level negativity check.
fn read_var(args: &Args, input: &Arr) -> Result<Arr, CallError> {
    let python_float = |x: f64| -> Result<Arr, CallError> {
        if x < 0.0 {
            return Err(negative());
        }
        // var * torch.ones_like(input): the input's float dtype, float32 for integers.
        let dt = float_result(input.dt);
        Ok(Arr {
            dt,
            a: ArrayD::from_elem(IxDyn(input.shape()), round_to(dt, x)),
        })
    };
    match args.get("var") {
        Some(Value::Tensor(t)) => {
            let v = Arr::of(t);
            if v.a.iter().any(|&x| x < 0.0) {
                return Err(negative());
            }
            Ok(v)
        }
        Some(Value::Float(x)) => python_float(*x),
        Some(v @ Value::Str(s)) => match crate::tensor::parse_special_float(s) {
            Some(x) => python_float(x),
            None => Err(type_error(v)),
        },
        Some(v) => Err(type_error(v)),
        None => Err(CallError::argument(
            "gaussian_nll_loss() missing 1 required positional argument: 'var'",
        )),
    }
}

fn type_error(v: &Value) -> CallError {
    CallError::argument(format!(
        "gaussian_nll_loss: var must be a tensor or a Python float, got {} (torch.any(var < 0) raises TypeError)",
        v.describe()
    ))
}

/// The homoscedastic shape rules; returns var with the trailing 1 added where needed.
fn fit_var(var: Arr, input: &[usize]) -> Result<Arr, CallError> {
    if var.shape() == input {
        return Ok(var);
    }
    let prefix = &input[..input.len().saturating_sub(1)];
    if var.shape() == prefix {
        let mut shape = var.shape().to_vec();
        shape.push(1);
        let a = var
            .a
            .into_shape_with_order(IxDyn(&shape))
            .map_err(|e| CallError::shape(format!("cannot unsqueeze var: {e}")))?;
        return Ok(Arr { dt: var.dt, a });
    }
    if var.shape().len() == input.len() {
        let differing: usize = input
            .iter()
            .zip(var.shape())
            .filter(|(x, y)| x != y)
            .map(|(_, &y)| y)
            .sum();
        if differing == 1 {
            return Ok(var);
        }
    }
    Err(CallError::shape(format!(
        "var is of incorrect size: var {:?}, input {input:?}",
        var.shape()
    )))
}

/// `var.clamp_(min=eps)`: in var's dtype; NaN (in var or eps) propagates.
fn clamp_min(var: &Arr, eps: f64) -> Result<Arr, CallError> {
    if !var.dt.is_float() {
        return Err(CallError::dtype(format!(
            "result type Float can't be cast to the desired output type {}",
            torch_dtype_name(var.dt)
        )));
    }
    let e = round_to(var.dt, eps);
    Ok(var.map(var.dt, |v| {
        if v.is_nan() || e.is_nan() {
            f64::NAN
        } else if v < e {
            e
        } else {
            v
        }
    }))
}

pub fn gaussian_nll_loss(args: &Args) -> Result<Tensor, CallError> {
    let input = Arr::of(args.tensor("input")?);
    let target = Arr::of(args.tensor("target")?);
    let full = args.bool_or("full", false)?;
    let eps = super::float_arg(args, "eps", 1e-6)?;
    let var = read_var(args, &input)?;
    let var = fit_var(var, input.shape())?;
    let red = reduction::read(args, false)?.strict(|shown| format!("{shown} is not valid"))?;
    let var = clamp_min(&var, eps)?;

    let log_var = unary(&var, f64::ln);
    let d = sub(&input, &target)?;
    let sq = mul_any(&d, &d)?;
    let q = div(&sq, &var)?;
    let s = zip(&log_var, &q, |_| Ok(()), |a, b| a + b)?;
    let mut loss = mul_scalar(&s, 0.5);
    if full {
        loss = add_scalar(&loss, 0.5 * (2.0 * std::f64::consts::PI).ln());
    }
    let out = match red {
        Reduction::None => loss,
        Reduction::Mean => mean_all(&loss)?,
        Reduction::Sum => sum_all(&loss),
    };
    debug_assert!(out.dt != DType::Bool);
    Ok(out.tensor())
}

/// The gradient of `gaussian_nll_loss`, autograd op by op through
/// `0.5 * (log(var) + (x - t) ** 2 / var)`. The clamp `var.clamp_(min=eps)` runs under
/// `no_grad` on a clone, so the clamped *value* is used in every derivative but the gradient
/// passes to `var` unchanged (no zeroing below eps): `d/dvar = 0.5 * (1 / var_c - d^2 / var_c^2)`.
/// `(x - t) ** 2` differentiates as `grad * (2 * d)`; the two contributions to `var` add in
/// var's dtype after the broadcast one is summed back.
pub fn gaussian_nll_loss_backward(args: &Args, b: &Backward) -> Result<Gradients, CallError> {
    use super::poisson_nll::{add_to, div_backward_self, mul_backward};
    let input = Arr::of(args.tensor("input")?);
    let target = Arr::of(args.tensor("target")?);
    let eps = super::float_arg(args, "eps", 1e-6)?;
    let var_arg = read_var(args, &input)?;
    let var_shape = var_arg.shape().to_vec();
    let var = fit_var(var_arg, input.shape())?;
    let red = reduction::read(args, false)?.strict(|shown| format!("{shown} is not valid"))?;
    let var_c = clamp_min(&var, eps)?;
    let log_var = unary(&var_c, f64::ln);
    let d = sub(&input, &target)?;
    let sq = mul_any(&d, &d)?;
    let q = div(&sq, &var_c)?;
    let s = zip(&log_var, &q, |_| Ok(()), |a, b| a + b)?;
    let loss = mul_scalar(&s, 0.5);
    let g = Arr::of(b.grad_output);
    let gl = reduction::backward(&g, loss.shape(), red)?;
    let g_s = reduction::cast(&mul_scalar(&gl, 0.5), s.dt);
    let g_log = reduction::reduce_to(&g_s, log_var.shape(), log_var.dt)?;
    let g_q = reduction::reduce_to(&g_s, q.shape(), q.dt)?;
    // q = sq / var: grad / var to sq, -grad * ((sq / var) / var) to var.
    let g_sq = div_backward_self(&g_q, &var_c, &sq)?;
    let qq = div(&div(&sq, &var_c)?, &var_c)?;
    let neg = g_q.map(g_q.dt, |v| -v);
    let g_var_q = mul_backward(&neg, &qq, &var_c)?;
    let g_var_log = div_backward_self(&g_log, &var_c, &var_c)?;
    let g_var = add_to(Some(g_var_log), g_var_q)?.expect("two contributions");
    let two_d = d.map(d.dt, |x| 2.0 * x);
    let g_d = mul_backward(&g_sq, &two_d, &d)?;
    let mut out = Gradients::new();
    reduction::put(&mut out, b, "input", &input, &g_d)?;
    reduction::put(&mut out, b, "target", &target, &g_d.map(g_d.dt, |v| -v))?;
    if b.wants("var") {
        // Undo the unsqueeze of a var one dimension short of the input.
        let a = g_var
            .a
            .into_shape_with_order(IxDyn(&var_shape))
            .map_err(|e| CallError::shape(format!("cannot squeeze var's gradient: {e}")))?;
        crate::reference::gradient::insert(&mut out, "var", var.dt, &a);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::backend::{ErrorKind, Outcome, Value};
    use crate::reference::testing::kind;

    use crate::tensor::{DType, Tensor};

    fn f32s(shape: &[usize], data: &[f64]) -> Value {
        Value::Tensor(Tensor::from_f64(DType::Float32, shape.to_vec(), data.to_vec()).unwrap())
    }

    fn call(args: &[(&str, Value)]) -> Outcome {
        crate::reference::testing::forward("torch.nn.functional.gaussian_nll_loss", args.to_vec())
    }

    fn base(var: Value, reduction: &str) -> Vec<(&'static str, Value)> {
        vec![
            (
                "input",
                f32s(&[3, 3], &[1., 2., 3., 1., 2., 3., 1., 2., 3.]),
            ),
            ("target", f32s(&[3, 3], &[0.0; 9])),
            ("var", var),
            ("reduction", Value::Str(reduction.into())),
        ]
    }

    #[test]
    fn one_dim_fewer_var_is_per_row_and_float_var_equals_a_full_tensor() {
        let Outcome::Value(rows) = call(&base(f32s(&[3], &[1.0, 2.0, 4.0]), "none")) else {
            panic!()
        };
        let Outcome::Value(cols) = call(&base(f32s(&[1, 3], &[1.0, 2.0, 4.0]), "none")) else {
            panic!()
        };
        assert_eq!(rows.shape(), &[3, 3]);
        let (r, c) = (rows.to_f64_vec(), cols.to_f64_vec());
        // Row i has variance v_i in `rows`, column j has v_j in `cols`: the diagonals agree,
        // the rest does not.
        for i in 0..3 {
            assert_eq!(r[4 * i], c[4 * i]);
        }
        assert_ne!(r[1], c[1]);
        let Outcome::Value(f) = call(&base(Value::Float(2.0), "none")) else {
            panic!()
        };
        let Outcome::Value(t) = call(&base(f32s(&[3, 3], &[2.0; 9]), "none")) else {
            panic!()
        };
        assert_eq!(f, t);
    }

    #[test]
    fn errors_come_in_python_order() {
        // negative var before the reduction check
        assert_eq!(
            kind(call(&base(f32s(&[3, 3], &[-1.0; 9]), "avg"))),
            ErrorKind::Value
        );
        assert_eq!(
            kind(call(&base(Value::Float(-1e-30), "mean"))),
            ErrorKind::Value
        );
        // size before reduction
        assert_eq!(
            kind(call(&base(f32s(&[1, 1], &[1.0]), "avg"))),
            ErrorKind::Shape
        );
        assert_eq!(
            kind(call(&base(f32s(&[3, 3], &[1.0; 9]), "avg"))),
            ErrorKind::Argument
        );
        assert_eq!(
            kind(call(&base(Value::Int(2), "mean"))),
            ErrorKind::Argument
        );
        let int_var = Value::Tensor(Tensor::from_i64(DType::Int64, vec![3], vec![1; 3]).unwrap());
        assert_eq!(kind(call(&base(int_var, "mean"))), ErrorKind::Dtype);
    }

    #[test]
    fn full_adds_a_constant_and_mean_is_sum_over_numel() {
        let get = |args: &[(&str, Value)]| match call(args) {
            Outcome::Value(t) => t.to_f64_vec()[0],
            o => panic!("{o:?}"),
        };
        let mut a = base(Value::Float(1.5), "sum");
        let sum = get(&a);
        a[3].1 = Value::Str("mean".into());
        let mean = get(&a);
        assert!((mean - sum / 9.0).abs() < 1e-5);
        a.push(("full", Value::Bool(true)));
        let full = get(&a);
        let c = 0.5 * (2.0 * std::f64::consts::PI).ln();
        assert!((full - mean - c).abs() < 1e-5);
    }
}
