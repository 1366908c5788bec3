//! Reference kernels for `torch.nn.functional.triplet_margin_loss` and `triplet_margin_with_distance_loss`.

use crate::reference::Kernel;

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[];
