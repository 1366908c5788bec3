//! Reference kernels for `torch.nn.functional.gaussian_nll_loss`.

use crate::reference::Kernel;

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[];
