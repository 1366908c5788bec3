//! Reference kernels for `tf.keras.losses.LogCosh`, `MeanAbsolutePercentageError` and `MeanSquaredLogarithmicError`.

use crate::reference::Kernel;

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[];
