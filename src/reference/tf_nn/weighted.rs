//! Reference kernels for `tf.nn.weighted_cross_entropy_with_logits`.

use crate::reference::Kernel;

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[];
