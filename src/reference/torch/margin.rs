//! Reference kernels for the margin losses of `torch.nn.functional`: `margin_ranking_loss`, `hinge_embedding_loss`, `soft_margin_loss`, `multilabel_margin_loss`, `multi_margin_loss`.

use crate::reference::Kernel;

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[];
