//! Reference kernels for `keras` APIs.

use super::Kernel;

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[];
