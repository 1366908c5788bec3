//! Reference kernels for `torch.nn.functional.linear_cross_entropy`.

use crate::reference::Kernel;

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[];
