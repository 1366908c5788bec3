//! The reference implementation: every API in scope, in `f64` with ndarray, following each
//! framework's conventions exactly (clamps, epsilons, reductions, error kinds).
//!
//! Kernels compute in `f64` and round to the framework's working dtype ([`DType::round`]) where
//! the framework's answer depends on it, then round the result to the output dtype. Each
//! framework has its own module holding a table of `(api name, kernel)`.

pub mod args;
pub mod fast;
pub mod gradient;
pub mod keras;
pub mod numeric;
pub mod signatures;
#[cfg(test)]
pub(crate) mod testing;
pub mod tf_nn;
pub mod torch;

use crate::backend::{Backend, Call, CallError, Gradients, Outcome, Value};
use crate::tensor::{DType, Tensor};
pub use args::Args;
pub use gradient::Backward;

/// A reference kernel: reads its arguments, returns the loss or the framework's error.
pub type Kernel = fn(&Args) -> Result<Tensor, CallError>;

/// A reference gradient kernel: the gradients of `sum(grad_output * loss)` for the names in
/// `Backward::wrt` (extra entries are dropped; each is rounded to its argument's dtype).
pub type GradientKernel = fn(&Args, &Backward) -> Result<Gradients, CallError>;

/// Every API with an analytic gradient, sorted by name.
pub fn gradient_kernels() -> Vec<(&'static str, GradientKernel)> {
    let mut all: Vec<(&'static str, GradientKernel)> = torch::GRADIENT_TABLES
        .iter()
        .flat_map(|t| t.iter())
        .chain(tf_nn::GRADIENT_TABLES.iter().flat_map(|t| t.iter()))
        .chain(keras::GRADIENT_TABLES.iter().flat_map(|t| t.iter()))
        .copied()
        .collect();
    all.sort_by_key(|(name, _)| *name);
    all
}

/// Every API the reference implements, with its kernel, sorted by name.
pub fn kernels() -> Vec<(&'static str, Kernel)> {
    let mut all: Vec<(&'static str, Kernel)> = torch::TABLES
        .iter()
        .flat_map(|t| t.iter())
        .chain(tf_nn::TABLES.iter().flat_map(|t| t.iter()))
        .chain(keras::TABLES.iter().flat_map(|t| t.iter()))
        .copied()
        .collect();
    all.sort_by_key(|(name, _)| *name);
    all
}

/// Python's argument binding: an unknown keyword or a missing required argument fails before
/// the loss runs, whatever else is wrong with the call.
fn check_signature(call: &Call) -> Result<(), CallError> {
    let Some((_, sig)) = signatures::SIGNATURES
        .iter()
        .find(|(api, _)| *api == call.api)
    else {
        return Ok(());
    };
    let short = call.api.rsplit('.').next().unwrap_or(&call.api);
    if let Some(extra) = call.args.keys().find(|k| !sig.iter().any(|(n, _)| n == k)) {
        return Err(CallError::argument(format!(
            "{short}() got an unexpected keyword argument '{extra}'"
        )));
    }
    if let Some((missing, _)) = sig
        .iter()
        .find(|(n, has_default)| !has_default && !call.args.contains_key(*n))
    {
        return Err(CallError::argument(format!(
            "{short}() missing 1 required argument: '{missing}'"
        )));
    }
    Ok(())
}

/// The arguments a backward request names, each a floating-point tensor of the call.
fn targets<'a>(
    call: &'a Call,
    wrt: &'a [String],
) -> Result<Vec<(&'a String, &'a Tensor)>, CallError> {
    let mut targets = Vec::new();
    for name in wrt {
        match call.args.get(name) {
            Some(Value::Tensor(t)) if t.dtype().is_float() => targets.push((name, t)),
            Some(v) => {
                return Err(CallError::argument(format!(
                    "cannot differentiate with respect to '{name}': it is {}, not a floating-point tensor",
                    v.describe()
                )))
            }
            None => {
                return Err(CallError::argument(format!(
                    "cannot differentiate with respect to '{name}': no such argument in the call"
                )))
            }
        }
    }
    Ok(targets)
}

/// Checks a backward request, runs the gradient kernel (or a fast path) and shapes its answer.
fn backward_with(
    kernel: GradientKernel,
    call: &Call,
    wrt: &[String],
    grad_output: Option<&Tensor>,
    output: &Tensor,
) -> Result<Gradients, CallError> {
    let targets = targets(call, wrt)?;
    let ones;
    let grad_output = match grad_output {
        Some(g) => {
            if g.shape() != output.shape() {
                return Err(CallError::shape(format!(
                    "grad_output has shape {:?} but the loss has shape {:?}",
                    g.shape(),
                    output.shape()
                )));
            }
            g
        }
        None => {
            let n = output.numel();
            ones = Tensor::from_f64(output.dtype(), output.shape().to_vec(), vec![1.0; n])
                .map_err(|e| CallError::argument(e.0))?;
            &ones
        }
    };
    let grads = match fast::backward(call, wrt, grad_output) {
        Some(r) => r?,
        None => {
            let args = Args::new(&call.api, &call.args);
            let request = Backward {
                wrt,
                grad_output,
                output,
            };
            kernel(&args, &request)?
        }
    };
    answer(call, targets, grads)
}

/// The kernel's gradients as the answer: one per `wrt` name, with that argument's shape and
/// dtype.
fn answer(
    call: &Call,
    targets: Vec<(&String, &Tensor)>,
    mut grads: Gradients,
) -> Result<Gradients, CallError> {
    let mut answer = Gradients::new();
    for (name, arg) in targets {
        let Some(g) = grads.remove(name.as_str()) else {
            return Err(CallError::new(
                crate::backend::ErrorKind::Backend,
                format!(
                    "the reference gradient of {} has no entry for '{name}'",
                    call.api
                ),
            ));
        };
        if g.shape() != arg.shape() {
            return Err(CallError::new(
                crate::backend::ErrorKind::Backend,
                format!(
                    "the reference gradient of {} for '{name}' has shape {:?}, the argument {:?}",
                    call.api,
                    g.shape(),
                    arg.shape()
                ),
            ));
        }
        answer.insert(name.clone(), round_to(g, arg.dtype()));
    }
    Ok(answer)
}

/// `t` with each element rounded to `dtype` (a gradient has its argument's dtype).
fn round_to(t: Tensor, dtype: DType) -> Tensor {
    if t.dtype() == dtype {
        return t;
    }
    Tensor::from_array(dtype, &t.to_array())
}

/// The reference backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reference;

impl Backend for Reference {
    fn name(&self) -> &str {
        "reference"
    }

    fn forward(&self, call: &Call) -> Outcome {
        let Some((_, kernel)) = kernels().into_iter().find(|(name, _)| *name == call.api) else {
            return Outcome::Unsupported(format!("the reference does not implement {}", call.api));
        };
        if let Err(e) = check_signature(call) {
            return Outcome::Error(e);
        }
        if let Some(result) = fast::forward(call) {
            return result.into();
        }
        let args = Args::new(&call.api, &call.args);
        kernel(&args).and_then(|t| args.finish().map(|()| t)).into()
    }

    fn backward(
        &self,
        call: &Call,
        wrt: &[String],
        grad_output: Option<&Tensor>,
    ) -> Outcome<Gradients> {
        let gradient = gradient_kernels()
            .into_iter()
            .find(|(name, _)| *name == call.api)
            .map(|(_, kernel)| kernel);
        // A call the fast kernels handle: the loss and the gradient in one pass (the loss is
        // computed, as autograd's forward is, and checked like `forward` checks it).
        if gradient.is_some() && check_signature(call).is_ok() {
            if let Ok(targets) = targets(call, wrt) {
                if let Some((_loss, grads)) = fast::forward_backward(call, wrt, grad_output) {
                    return answer(call, targets, grads).into();
                }
            }
        }
        let output = match self.forward(call) {
            Outcome::Value(t) => t,
            Outcome::Error(e) => return Outcome::Error(e),
            Outcome::Unsupported(why) => return Outcome::Unsupported(why),
        };
        let Some(kernel) = gradient else {
            return Outcome::Unsupported(format!("the reference has no gradient for {}", call.api));
        };
        backward_with(kernel, call, wrt, grad_output, &output).into()
    }

    fn apis(&self) -> Option<Vec<String>> {
        Some(
            kernels()
                .into_iter()
                .map(|(name, _)| name.to_string())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signatures_equal_the_specs_and_cover_every_kernel() {
        let root = crate::harness::default_root();
        let mut from_specs = std::collections::BTreeMap::new();
        for f in crate::spec::files(&root.join("specs")).unwrap() {
            let (spec, _) = crate::spec::load(&f).unwrap();
            for (_, api) in spec.apis.iter() {
                let args: Vec<(String, bool)> = api
                    .args
                    .iter()
                    .map(|(n, a)| (n.to_string(), a.default.is_some()))
                    .collect();
                from_specs.insert(api.api.clone(), args);
            }
        }
        let table: std::collections::BTreeMap<String, Vec<(String, bool)>> =
            super::signatures::SIGNATURES
                .iter()
                .map(|(api, sig)| {
                    (
                        api.to_string(),
                        sig.iter().map(|(n, d)| (n.to_string(), *d)).collect(),
                    )
                })
                .collect();
        assert_eq!(
            table, from_specs,
            "src/reference/signatures.rs differs from the specs' apis.*.args"
        );
        for (api, _) in super::kernels() {
            assert!(
                table.contains_key(api),
                "{api} has a kernel but no signature"
            );
        }
    }

    #[test]
    fn every_api_has_exactly_one_kernel() {
        let names: Vec<&str> = super::kernels().into_iter().map(|(n, _)| n).collect();
        let mut dedup = names.clone();
        dedup.dedup();
        assert_eq!(names, dedup, "an API is registered twice");
    }
}
