//! The `reduction` argument, PyTorch's deprecated `size_average`/`reduce` pair, and the
//! reductions themselves.

use super::{mean_all, sum_all, Arr};
use crate::backend::{CallError, Value};
use crate::reference::Args;

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
