//! The reference implementation: every API in scope, in `f64` with ndarray, following each
//! framework's conventions exactly (clamps, epsilons, reductions, error kinds).
//!
//! Kernels compute in `f64` and round to the framework's working dtype ([`DType::round`]) where
//! the framework's answer depends on it, then round the result to the output dtype. Each
//! framework has its own module holding a table of `(api name, kernel)`.

pub mod args;
pub mod keras;
pub mod numeric;
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
    fn every_api_has_exactly_one_kernel() {
        let names: Vec<&str> = super::kernels().into_iter().map(|(n, _)| n).collect();
        let mut dedup = names.clone();
        dedup.dedup();
        assert_eq!(names, dedup, "an API is registered twice");
    }
}
