//! The reference implementation: every API in scope, in `f64` with ndarray, following each
//! framework's conventions exactly (clamps, epsilons, reductions, error kinds).
//!
//! Kernels compute in `f64` and round to the framework's working dtype ([`DType::round`]) where
//! the framework's answer depends on it, then round the result to the output dtype. Each
//! framework has its own module holding a table of `(api name, kernel)`.

pub mod args;
pub mod keras;
pub mod numeric;
pub mod signatures;
#[cfg(test)]
pub(crate) mod testing;
pub mod tf_nn;
pub mod torch;

use crate::backend::{Backend, Call, CallError, Outcome};
use crate::tensor::Tensor;
pub use args::Args;

/// A reference kernel: reads its arguments, returns the loss or the framework's error.
pub type Kernel = fn(&Args) -> Result<Tensor, CallError>;

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
        let args = Args::new(&call.api, &call.args);
        kernel(&args).and_then(|t| args.finish().map(|()| t)).into()
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
