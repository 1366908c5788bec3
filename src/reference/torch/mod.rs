//! Reference kernels for `torch.nn.functional` losses, matching PyTorch on CPU.
//!
//! PyTorch evaluates a loss as a chain of tensor ops, each rounding its result to the op's
//! dtype and each applying PyTorch's type promotion and broadcasting. The kernels here follow
//! the same chain on [`Arr`] (an `f64` array tagged with the dtype its values are rounded to), so
//! results match PyTorch to within an ulp or two of the working dtype, and output dtypes, shapes
//! and errors come out as PyTorch's do, including where the Python wrapper and the ATen kernel
//! disagree (which check runs first, which dtypes are promoted and which rejected).

mod binary;
pub mod cosine_embedding;
mod cross_entropy;
pub mod ctc;
pub mod gaussian_nll;
pub mod kl_div;
pub mod linear_cross_entropy;
pub mod margin;
pub mod poisson_nll;
mod reduction;
mod regression;
#[cfg(test)]
mod tests;
pub mod triplet;

use super::Kernel;
use crate::backend::CallError;
use crate::reference::GradientKernel;
use crate::tensor::{DType, Tensor};
use ndarray::{ArrayD, IxDyn};

/// Every gradient table of this framework: one per kernel module.
pub const GRADIENT_TABLES: &[&[(&str, GradientKernel)]] = &[
    binary::GRADIENTS,
    cosine_embedding::GRADIENTS,
    cross_entropy::GRADIENTS,
    ctc::GRADIENTS,
    gaussian_nll::GRADIENTS,
    kl_div::GRADIENTS,
    linear_cross_entropy::GRADIENTS,
    margin::GRADIENTS,
    poisson_nll::GRADIENTS,
    regression::GRADIENTS,
    triplet::GRADIENTS,
];

/// Every forward kernel table of this module.
pub const TABLES: &[&[(&str, Kernel)]] = &[
    KERNELS,
    cosine_embedding::KERNELS,
    ctc::KERNELS,
    gaussian_nll::KERNELS,
    kl_div::KERNELS,
    linear_cross_entropy::KERNELS,
    margin::KERNELS,
    poisson_nll::KERNELS,
    triplet::KERNELS,
];

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[
    (
        "torch.nn.functional.binary_cross_entropy",
        binary::binary_cross_entropy,
    ),
    (
        "torch.nn.functional.binary_cross_entropy_with_logits",
        binary::binary_cross_entropy_with_logits,
    ),
    (
        "torch.nn.functional.cross_entropy",
        cross_entropy::cross_entropy,
    ),
    ("torch.nn.functional.huber_loss", regression::huber_loss),
    ("torch.nn.functional.l1_loss", regression::l1_loss),
    ("torch.nn.functional.mse_loss", regression::mse_loss),
    (
        "torch.nn.functional.multilabel_soft_margin_loss",
        binary::multilabel_soft_margin_loss,
    ),
    ("torch.nn.functional.nll_loss", cross_entropy::nll_loss),
    (
        "torch.nn.functional.smooth_l1_loss",
        regression::smooth_l1_loss,
    ),
];

/// PyTorch's type category: bool < integer < floating point.
fn category(d: DType) -> u8 {
    match d {
        DType::Bool => 0,
        DType::Uint8 | DType::Int32 | DType::Int64 => 1,
        _ => 2,
    }
}

/// `torch.promote_types` for the dtypes we model.
pub(crate) fn promote_types(a: DType, b: DType) -> DType {
    use DType::*;
    if a == b {
        return a;
    }
    match (a, b) {
        (Bool, x) | (x, Bool) => x,
        (Float16, Bfloat16) | (Bfloat16, Float16) => Float32,
        _ if category(a) != category(b) => {
            if category(a) > category(b) {
                a
            } else {
                b
            }
        }
        // Same category: the wider one (uint8 < int32 < int64, f16/bf16 < f32 < f64).
        _ => {
            let rank = |d: DType| match d {
                Uint8 => 0,
                Int32 => 1,
                Int64 => 2,
                Float16 | Bfloat16 => 0,
                Float32 => 1,
                _ => 2,
            };
            if rank(a) >= rank(b) {
                a
            } else {
                b
            }
        }
    }
}

/// `torch.result_type` of tensor operands given as `(dtype, is 0-d)`: tensors with dimensions
/// decide within a category; a 0-d tensor only matters when its category is higher
/// (`float32[3] * float64[]` is float32, `int64[3] * float64[]` is float64).
pub(crate) fn result_type(operands: &[(DType, bool)]) -> DType {
    let fold = |zero: bool| {
        operands
            .iter()
            .filter(|(_, z)| *z == zero)
            .map(|(d, _)| *d)
            .reduce(promote_types)
    };
    match (fold(false), fold(true)) {
        (Some(dim), Some(zero)) => {
            if category(dim) >= category(zero) && dim != DType::Bool {
                dim
            } else {
                promote_types(dim, zero)
            }
        }
        (Some(d), None) | (None, Some(d)) => d,
        (None, None) => DType::Float32,
    }
}

/// PyTorch's working dtype for a result of dtype `d`: half types are computed in float32 inside
/// reductions (sum, mean), everything else in its own dtype.
fn accumulate_dtype(d: DType) -> DType {
    match d {
        DType::Float16 | DType::Bfloat16 => DType::Float32,
        _ => d,
    }
}

/// `torch.broadcast_shapes`, with PyTorch's message on failure.
pub(crate) fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>, CallError> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i < n - a.len() {
            1
        } else {
            a[i - (n - a.len())]
        };
        let db = if i < n - b.len() {
            1
        } else {
            b[i - (n - b.len())]
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(CallError::shape(format!(
                "The size of tensor a ({da}) must match the size of tensor b ({db}) at non-singleton dimension {i}"
            )));
        };
    }
    Ok(out)
}

/// Values of one intermediate tensor: `f64` elements each exactly representable in `dt`.
#[derive(Clone, Debug)]
pub(crate) struct Arr {
    pub dt: DType,
    pub a: ArrayD<f64>,
}

impl Arr {
    pub fn of(t: &Tensor) -> Arr {
        Arr {
            dt: t.dtype(),
            a: t.to_array(),
        }
    }

    /// A 0-d value (a reduced loss).
    pub fn scalar(dt: DType, x: f64) -> Arr {
        Arr {
            dt,
            a: ArrayD::from_elem(IxDyn(&[]), round_to(dt, x)),
        }
    }

    pub fn shape(&self) -> &[usize] {
        self.a.shape()
    }

    pub fn is_0d(&self) -> bool {
        self.a.ndim() == 0
    }

    pub fn tensor(&self) -> Tensor {
        Tensor::from_array(self.dt, &self.a)
    }

    /// Elementwise `f`, result rounded to `dt`.
    pub fn map(&self, dt: DType, f: impl Fn(f64) -> f64) -> Arr {
        Arr {
            dt,
            a: self.a.mapv(|x| round_to(dt, f(x))),
        }
    }

    /// Values broadcast to `shape` (which must be a broadcast of this shape).
    pub fn expand(&self, shape: &[usize]) -> Result<Arr, CallError> {
        let a = self.a.broadcast(IxDyn(shape)).ok_or_else(|| {
            CallError::shape(format!(
                "the shape {:?} cannot be broadcast to {shape:?}",
                self.shape()
            ))
        })?;
        Ok(Arr {
            dt: self.dt,
            a: a.to_owned(),
        })
    }
}

/// Rounds to a dtype; integer dtypes wrap like a C cast of an in-range integer.
///
/// float16/bfloat16 results go through float32 first: PyTorch computes their ops in float32
/// and casts (and converts double to half via float), so a value just off a half-way point
/// rounds as the float32 value does.
pub(crate) fn round_to(dt: DType, x: f64) -> f64 {
    if matches!(dt, DType::Float16 | DType::Bfloat16) {
        return dt.round(DType::Float32.round(x));
    }
    if dt.is_float() || !x.is_finite() {
        return dt.round(x);
    }
    let i = x as i64;
    match dt {
        DType::Int32 => i as i32 as f64,
        DType::Uint8 => i as u8 as f64,
        DType::Bool => (i != 0) as i64 as f64,
        _ => i as f64,
    }
}

/// A binary op with PyTorch's broadcasting and type promotion: computed in the promoted dtype
/// (which `check` may reject), rounded to that dtype.
pub(crate) fn zip(
    x: &Arr,
    y: &Arr,
    check: impl Fn(DType) -> Result<(), CallError>,
    f: impl Fn(f64, f64) -> f64,
) -> Result<Arr, CallError> {
    let dt = result_type(&[(x.dt, x.is_0d()), (y.dt, y.is_0d())]);
    check(dt)?;
    zip_into(x, y, dt, dt, f)
}

/// A binary op computed in `compute` and written to a result of dtype `out` (an op with an
/// explicit output, or an in-place op).
pub(crate) fn zip_into(
    x: &Arr,
    y: &Arr,
    compute: DType,
    out: DType,
    f: impl Fn(f64, f64) -> f64,
) -> Result<Arr, CallError> {
    let shape = broadcast_shapes(x.shape(), y.shape())?;
    let xa = x.a.broadcast(IxDyn(&shape)).expect("broadcast shape");
    let ya = y.a.broadcast(IxDyn(&shape)).expect("broadcast shape");
    let mut a = ArrayD::zeros(IxDyn(&shape));
    ndarray::Zip::from(&mut a)
        .and(&xa)
        .and(&ya)
        .for_each(|o, &p, &q| {
            *o = round_to(
                out,
                round_to(compute, f(round_to(compute, p), round_to(compute, q))),
            )
        });
    Ok(Arr { dt: out, a })
}

/// An in-place binary op `x.op_(y)`: `y` must broadcast to `x`'s shape, the result keeps
/// `x`'s dtype, and the promoted dtype must be castable back to it.
pub(crate) fn zip_inplace(x: &Arr, y: &Arr, f: impl Fn(f64, f64) -> f64) -> Result<Arr, CallError> {
    let shape = broadcast_shapes(x.shape(), y.shape())?;
    if shape != x.shape() {
        return Err(CallError::shape(format!(
            "output with shape {:?} doesn't match the broadcast shape {shape:?}",
            x.shape()
        )));
    }
    let compute = result_type(&[(x.dt, x.is_0d()), (y.dt, y.is_0d())]);
    if category(compute) > category(x.dt) {
        return Err(CallError::dtype(format!(
            "result type {} can't be cast to the desired output type {}",
            compute, x.dt
        )));
    }
    zip_into(x, y, compute, x.dt, f)
}

/// A Python `float` parameter: PyTorch's argument parser also takes an int or a bool
/// (`beta=True` is 1.0).
pub(crate) fn float_arg(
    args: &super::Args,
    name: &'static str,
    default: f64,
) -> Result<f64, CallError> {
    match args.get(name) {
        Some(crate::backend::Value::Bool(b)) => Ok(*b as u8 as f64),
        _ => args.f64_or(name, default),
    }
}

/// A float tensor argument, or PyTorch's "not implemented for 'Long'" as a dtype error.
pub(crate) fn require_float(op: &str, dt: DType) -> Result<(), CallError> {
    if dt.is_float() {
        Ok(())
    } else {
        Err(CallError::dtype(format!(
            "\"{op}\" not implemented for '{}'",
            torch_dtype_name(dt)
        )))
    }
}

/// The name PyTorch's C++ messages use for a dtype.
pub(crate) fn torch_dtype_name(dt: DType) -> &'static str {
    match dt {
        DType::Float16 => "Half",
        DType::Bfloat16 => "BFloat16",
        DType::Float32 => "Float",
        DType::Float64 => "Double",
        DType::Int32 => "Int",
        DType::Int64 => "Long",
        DType::Uint8 => "Byte",
        DType::Bool => "Bool",
    }
}

/// Sum of all elements as PyTorch computes `tensor.sum()`: accumulated in the working dtype
/// (float32 for half types; integers sum to int64), rounded to the result dtype.
pub(crate) fn sum_all(x: &Arr) -> Arr {
    let s = super::numeric::sum(x.a.iter().copied());
    if x.dt.is_float() {
        Arr::scalar(x.dt, round_to(accumulate_dtype(x.dt), s))
    } else {
        Arr::scalar(DType::Int64, s)
    }
}

/// `tensor.mean()`: the sum rounded to the working dtype, divided by the element count in that
/// dtype, rounded to the tensor's dtype. Empty gives NaN (0/0). Integer tensors are rejected.
pub(crate) fn mean_all(x: &Arr) -> Result<Arr, CallError> {
    if !x.dt.is_float() {
        return Err(CallError::dtype(format!(
            "mean(): could not infer output dtype. Input dtype must be either a floating point or complex dtype. Got: {}",
            torch_dtype_name(x.dt)
        )));
    }
    let acc = accumulate_dtype(x.dt);
    let s = round_to(acc, super::numeric::sum(x.a.iter().copied()));
    let n = x.a.len() as f64;
    Ok(Arr::scalar(x.dt, round_to(acc, s / n)))
}

/// `tensor.sum(dim)`, for one axis: accumulated in the working dtype, rounded to the dtype.
pub(crate) fn sum_axis(x: &Arr, axis: usize) -> Arr {
    let acc = accumulate_dtype(x.dt);
    let a = x.a.map_axis(ndarray::Axis(axis), |lane| {
        round_to(
            x.dt,
            round_to(acc, super::numeric::sum(lane.iter().copied())),
        )
    });
    Arr { dt: x.dt, a }
}
