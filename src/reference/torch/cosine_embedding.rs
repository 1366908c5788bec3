//! Reference kernel for `torch.nn.functional.cosine_embedding_loss`.
//!
//! ATen's composite: `prod_sum = (x1 * x2).sum(d)`, `mag_i = (x_i * x_i).sum(d) + EPSILON`
//! (a C++ `float` 1e-12, so 9.99999996e-13 even for float64), `cos = prod_sum /
//! (mag1 * mag2).sqrt_()`, then `where(y == 1, 1 - cos, 0) + where(y == -1, (cos -
//! margin).clamp_min_(0), 0)`. Every op rounds to its own dtype: the product of the squared
//! norms overflows float32 once `||x1|| ||x2||` passes ~1.8e19 and underflows float16 for
//! vectors of length ~1e-3 (cos = x / 0 = inf, loss -inf). `d` is the target's rank: a 1-D
//! target takes 2-D inputs, a 0-d target 1-D inputs.

use super::margin::{add, add_scalar, clamp_min0, mul, rsub_scalar, where_, zeros_like};
use super::reduction;
use super::{sum_axis, zip, Arr};
use crate::backend::CallError;
use crate::reference::{Args, Kernel};
use crate::tensor::{DType, Tensor};

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[(
    "torch.nn.functional.cosine_embedding_loss",
    cosine_embedding_loss,
)];

/// ATen's `constexpr float EPSILON = 1e-12`.
const EPSILON: f64 = 1e-12f32 as f64;

/// `x.sum(axis)`: float dtypes keep theirs (half types accumulate in float32), integers and
/// bool sum to int64.
fn sum_dim(x: &Arr, axis: usize) -> Arr {
    if x.dt.is_float() {
        return sum_axis(x, axis);
    }
    let a = x.a.map_axis(ndarray::Axis(axis), |lane| {
        lane.iter().map(|&v| v as i64).fold(0i64, i64::wrapping_add) as f64
    });
    Arr {
        dt: DType::Int64,
        a,
    }
}

pub fn cosine_embedding_loss(args: &Args) -> Result<Tensor, CallError> {
    let input1 = Arr::of(args.tensor("input1")?);
    let input2 = Arr::of(args.tensor("input2")?);
    let target = Arr::of(args.tensor("target")?);
    let margin = super::float_arg(args, "margin", 0.0)?;
    let red = reduction::read(args, true)?.get_enum()?;
    let targ_dim = target.a.ndim();
    if targ_dim > 1 {
        return Err(CallError::shape(
            "0D or 1D target tensor expected, multi-target not supported",
        ));
    }
    let want = targ_dim + 1;
    if input1.a.ndim() != want || input2.a.ndim() != want {
        return Err(CallError::shape(format!(
            "{targ_dim}D target tensor expects {want}D input tensors, but found inputs with sizes {:?} and {:?}.",
            input1.shape(),
            input2.shape()
        )));
    }
    let prod_sum = sum_dim(&mul(&input1, &input2)?, targ_dim);
    let mag1 = add_scalar(&sum_dim(&mul(&input1, &input1)?, targ_dim), EPSILON);
    let mag2 = add_scalar(&sum_dim(&mul(&input2, &input2)?, targ_dim), EPSILON);
    let prod = mul(&mag1, &mag2)?;
    let denom = prod.map(prod.dt, f64::sqrt);
    let cos = zip(&prod_sum, &denom, |_| Ok(()), |a, b| a / b)?;
    let zeros = zeros_like(&cos);
    let pos = rsub_scalar(1.0, &cos)?;
    let neg = clamp_min0(&add_scalar(&cos, -margin));
    let output_pos = where_(&target, |y| y == 1.0, &pos, &zeros)?;
    let output_neg = where_(&target, |y| y == -1.0, &neg, &zeros)?;
    let output = add(&output_pos, &output_neg)?;
    Ok(reduction::apply(output, red)?.tensor())
}
