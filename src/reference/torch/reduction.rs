//! The `reduction` argument, PyTorch's deprecated `size_average`/`reduce` pair, and the
//! reductions themselves.

use super::{mean_all, sum_all, Arr};
use crate::backend::{CallError, Gradients, Value};
use crate::reference::{Args, Backward};
use crate::tensor::DType;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reduction {
    None,
    Mean,
    Sum,
}

/// The reduction a call asked for, before it is validated: PyTorch validates it at different
/// points (and with different rules) depending on the API and the code path.
#[derive(Clone, Debug)]
pub(crate) struct Requested {
    /// The string, or `None` when the value is not a string.
    name: Option<String>,
    /// How Python would print the value in a message.
    shown: String,
}

/// Python truthiness of an argument, for `size_average`/`reduce` (`bool | None`, used with
/// `if size_average and reduce`). `None` when absent or null.
fn truthy(args: &Args, name: &'static str) -> Result<Option<bool>, CallError> {
    Ok(match args.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::Int(i)) => Some(*i != 0),
        Some(Value::Float(x)) => Some(*x != 0.0),
        Some(Value::Str(s)) => Some(!s.is_empty()),
        Some(Value::IntList(v)) => Some(!v.is_empty()),
        Some(v @ Value::Tensor(_)) => {
            return Err(CallError::argument(format!(
                "{}: argument '{name}' must be a bool or None, got {}",
                args.api(),
                v.describe()
            )))
        }
    })
}

/// Reads `reduction`, and when the API has them, `size_average` and `reduce`: if either of those
/// is given (not None) it overrides `reduction` as `torch.nn._reduction.legacy_get_string` does
/// (`mean` unless one is false; `sum` if only `size_average` is false; `none` if `reduce` is).
pub(crate) fn read(args: &Args, legacy: bool) -> Result<Requested, CallError> {
    let given = args.get("reduction");
    let (size_average, reduce) = if legacy {
        (truthy(args, "size_average")?, truthy(args, "reduce")?)
    } else {
        (None, None)
    };
    if size_average.is_some() || reduce.is_some() {
        let name = match (size_average.unwrap_or(true), reduce.unwrap_or(true)) {
            (true, true) => "mean",
            (false, true) => "sum",
            (_, false) => "none",
        };
        return Ok(Requested {
            name: Some(name.into()),
            shown: name.into(),
        });
    }
    Ok(match given {
        None => Requested {
            name: Some("mean".into()),
            shown: "mean".into(),
        },
        Some(Value::Str(s)) => Requested {
            name: Some(s.clone()),
            shown: s.clone(),
        },
        Some(v) => Requested {
            name: None,
            shown: v.describe(),
        },
    })
}

impl Requested {
    /// `torch.nn._reduction.get_enum`: `none`, `mean`, `sum`, and the deprecated alias
    /// `elementwise_mean` for `mean`.
    pub fn get_enum(&self) -> Result<Reduction, CallError> {
        match self.name.as_deref() {
            Some("none") => Ok(Reduction::None),
            Some("mean") | Some("elementwise_mean") => Ok(Reduction::Mean),
            Some("sum") => Ok(Reduction::Sum),
            _ => Err(CallError::argument(format!(
                "{} is not a valid value for reduction",
                self.shown
            ))),
        }
    }

    /// The Python-level `if reduction == "none" / "sum" / "mean"` branches of some losses: only
    /// the three names, no deprecated alias; `message` formats the rejection.
    pub fn strict(&self, message: impl Fn(&str) -> String) -> Result<Reduction, CallError> {
        match self.name.as_deref() {
            Some("none") => Ok(Reduction::None),
            Some("mean") => Ok(Reduction::Mean),
            Some("sum") => Ok(Reduction::Sum),
            _ => Err(CallError::argument(message(&self.shown))),
        }
    }
}

/// `apply_loss_reduction`: the loss itself, `loss.mean()` or `loss.sum()`.
pub(crate) fn apply(loss: Arr, reduction: Reduction) -> Result<Arr, CallError> {
    match reduction {
        Reduction::None => Ok(loss),
        Reduction::Sum => Ok(sum_all(&loss)),
        Reduction::Mean => mean_all(&loss),
    }
}

// ---- Backward helpers, shared by the gradient kernels of this framework. ----

/// The gradient of each element of an unreduced loss of shape `shape`, given the gradient of
/// the (possibly reduced) loss: `none` passes it on, `sum` expands it, `mean` (autograd's
/// `mean_backward`: `grad.expand(shape) / numel`) divides each element by the element count in
/// the op math type and rounds to the gradient's dtype.
pub(crate) fn backward(grad: &Arr, shape: &[usize], red: Reduction) -> Result<Arr, CallError> {
    let g = grad.expand(shape)?;
    if red != Reduction::Mean {
        return Ok(g);
    }
    let n = shape.iter().product::<usize>() as f64;
    Ok(g.map(g.dt, |v| v / n))
}

/// `g` cast to `dt` (autograd casts each gradient to its input's dtype).
pub(crate) fn cast(g: &Arr, dt: DType) -> Arr {
    g.map(dt, |v| v)
}

/// What autograd's engine does with a gradient before it reaches an input: cast to the
/// input's dtype, then (for an input that was broadcast) `sum_to_size` its shape, accumulated
/// in the op math type and rounded to `dt`.
pub(crate) fn reduce_to(g: &Arr, shape: &[usize], dt: DType) -> Result<Arr, CallError> {
    let g = cast(g, dt);
    if g.shape() == shape {
        return Ok(g);
    }
    let a = crate::reference::gradient::sum_to_shape(g.a, shape)?;
    Ok(Arr { dt, a }.map(dt, |v| v))
}

/// Autograd's accumulation of two gradient contributions to one input (both already of its
/// dtype and shape): one addition, rounded to the dtype.
pub(crate) fn accumulate(a: &Arr, b: &Arr) -> Result<Arr, CallError> {
    super::zip_into(a, b, a.dt, a.dt, |x, y| x + y)
}

/// Puts the gradient `g` of argument `name` (tensor `arg`) into `out` when it is asked for,
/// reduced to the argument's shape and dtype.
pub(crate) fn put(
    out: &mut Gradients,
    b: &Backward,
    name: &str,
    arg: &Arr,
    g: &Arr,
) -> Result<(), CallError> {
    if b.wants(name) {
        let g = reduce_to(g, arg.shape(), arg.dt)?;
        crate::reference::gradient::insert(out, name, arg.dt, &g.a);
    }
    Ok(())
}

/// The backward of a fused ATen loss kernel with a `reduction` argument: it receives the
/// loss's gradient expanded to the elements' shape (0-d for `mean`/`sum`, which the kernel
/// itself divides by the element count).
pub(crate) fn expanded(grad: &Arr, shape: &[usize]) -> Result<Arr, CallError> {
    grad.expand(shape)
}

/// Elementwise `f(a, b, c)` of three arrays of one shape.
pub(crate) fn map3(a: &Arr, b: &Arr, c: &Arr, dt: DType, f: impl Fn(f64, f64, f64) -> f64) -> Arr {
    let a = ndarray::Zip::from(&a.a)
        .and(&b.a)
        .and(&c.a)
        .map_collect(|&x, &y, &z| super::round_to(dt, f(x, y, z)));
    Arr { dt, a }
}
