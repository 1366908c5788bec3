//! `binary_cross_entropy`, `binary_cross_entropy_with_logits`, `multilabel_soft_margin_loss`.

use crate::backend::CallError;
use crate::reference::Args;
use crate::tensor::Tensor;

pub fn binary_cross_entropy(_args: &Args) -> Result<Tensor, CallError> {
    Err(CallError::argument("not yet"))
}

pub fn binary_cross_entropy_with_logits(_args: &Args) -> Result<Tensor, CallError> {
    Err(CallError::argument("not yet"))
}

pub fn multilabel_soft_margin_loss(_args: &Args) -> Result<Tensor, CallError> {
    Err(CallError::argument("not yet"))
}
