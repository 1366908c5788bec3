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

#[cfg(test)]
mod tests {
    //! Gradient conventions pinned against values recorded from PyTorch (the gradients files),
    //! one focused check per convention; the trials compare every element of every case.
    use crate::backend::{Backend, Gradients, Outcome};
    use crate::case::ExpectedGradients;
    use crate::reference::Reference;

    /// The recorded gradients of case `name` in `family` and the reference's, for the same
    /// grad_output; asserts they agree within the gradient dtype's default tolerance.
    fn recorded(family: &str, name: &str) -> (Gradients, Gradients) {
        let root = crate::harness::default_root();
        let fam = crate::case::load_family(&root.join("cases"), family).unwrap();
        let case = fam.cases.cases.iter().find(|c| c.name == name).unwrap();
        let entry: &ExpectedGradients = &fam.gradients.as_ref().unwrap().expected[name];
        let call = crate::backend::Call {
            api: case.api.clone(),
            args: case.args.clone(),
        };
        let Outcome::Value(ours) = Reference.backward(&call, &case.wrt, Some(&entry.grad_output))
        else {
            panic!("{name}: no gradient")
        };
        let theirs = entry.value.clone().unwrap();
        for (arg, want) in &theirs {
            let (rtol, atol) = match want.dtype() {
                crate::tensor::DType::Float16 => (1e-3, 1e-5),
                crate::tensor::DType::Bfloat16 => (1.6e-2, 1e-5),
                crate::tensor::DType::Float32 => (1.3e-6, 1e-5),
                _ => (1e-7, 1e-7),
            };
            let got = ours[arg].to_f64_vec();
            for (i, (&w, &g)) in want.to_f64_vec().iter().zip(&got).enumerate() {
                assert!(
                    crate::compare::close(w, g, rtol, atol),
                    "{name}: d/d{arg}[{i}] recorded {w}, reference {g}"
                );
            }
        }
        (theirs, ours)
    }

    fn grad(g: &Gradients, arg: &str) -> Vec<f64> {
        g[arg].to_f64_vec()
    }

    #[test]
    fn abs_kink_has_zero_gradient() {
        let (torch, _) = recorded("l1_loss", "l1_loss/torch/grad_kink/float32");
        // d = 0 at elements 0, 1, 3, 4, 6: sgn(0) = 0.
        for i in [0, 1, 3, 4, 6] {
            assert_eq!(grad(&torch, "input")[i], 0.0);
        }
    }

    #[test]
    fn smooth_l1_and_huber_kinks_take_the_linear_side() {
        for name in [
            "huber/smooth_l1/grad_kinks/float32",
            "huber/huber/grad_kinks/float32",
        ] {
            let (torch, _) = recorded("huber", name);
            let g = grad(&torch, "input");
            // |e| = 1 = beta = delta: the full slope (0.5 = grad_output), not e / beta halfway.
            assert_eq!((g[0], g[1], g[2]), (0.5, -0.5, 0.0));
        }
    }

    #[test]
    fn bce_epsilon_is_zero_in_float16_only() {
        let (f16, _) = recorded(
            "binary_cross_entropy",
            "binary_cross_entropy/torch/grad_clamp_edges_half/float16",
        );
        let (bf16, _) = recorded(
            "binary_cross_entropy",
            "binary_cross_entropy/torch/grad_clamp_edges_half/bfloat16",
        );
        // p = t = 0: 0 / max(0, EPSILON) with EPSILON = 1e-12 cast to the dtype.
        assert!(grad(&f16, "input")[0].is_nan());
        assert_eq!(grad(&bf16, "input")[0], 0.0);
        // The target gradient -logit(p) is not clamped: +-inf at p = 0 and 1.
        assert_eq!(grad(&f16, "target")[0], f64::INFINITY);
    }

    #[test]
    fn bce_with_logits_is_finite_in_the_input_at_infinite_logits() {
        let (torch, _) = recorded(
            "binary_cross_entropy_with_logits",
            "binary_cross_entropy_with_logits/bce_logits/grad_infinite_logits/float32",
        );
        assert!(grad(&torch, "input").iter().all(|v| v.is_finite()));
        assert!(grad(&torch, "target")[..5].iter().all(|v| v.is_infinite()));
    }

    #[test]
    fn gaussian_var_gradient_passes_through_the_clamp() {
        let (torch, _) = recorded(
            "gaussian_nll_loss",
            "gaussian_nll_loss/torch/grad_var_clamp/eps=0.01/float32",
        );
        // var 0, 1e-7, 1e-6 and 1e-5 all clamp to 0.01 and get the gradient at 0.01 (not 0).
        let g = grad(&torch, "var");
        assert!(g[..4].iter().all(|&v| v == g[0] && v != 0.0));
    }

    #[test]
    fn kl_target_zero_gives_nan_target_gradient() {
        let (torch, _) = recorded("kl_div", "kl_div/torch/grad_target_zero/float32");
        let g = grad(&torch, "target");
        assert!(g[0].is_nan() && g[3].is_nan() && g[1].is_finite());
    }

    #[test]
    fn poisson_full_accumulates_in_autograd_order() {
        // float16 Stirling-term gradients: a different accumulation order is off by an ulp.
        recorded(
            "poisson_nll_loss",
            "poisson_nll_loss/torch/half_precision_rate/full=true/none/float16",
        );
    }
}
