//! What a reference gradient kernel receives, and the helpers they share.
//!
//! A gradient kernel follows its framework's *backward* formulas (not the chain rule of our
//! forward kernel): the subgradient chosen at a kink, whether a clamp passes or stops the
//! gradient, and which intermediate results are rounded to the working dtype are each a
//! framework decision, documented next to the kernel.

use crate::backend::{CallError, Gradients};
use crate::tensor::{DType, Tensor};
use ndarray::{ArrayD, Axis, IxDyn};

/// One backward request, as the reference's kernels see it.
pub struct Backward<'a> {
    /// The argument names to differentiate with respect to (checked to be float tensors).
    pub wrt: &'a [String],
    /// `d loss / d output`, the forward output's shape and dtype (all ones when not given).
    pub grad_output: &'a Tensor,
    /// The forward result, already computed (kernels may reuse it).
    pub output: &'a Tensor,
}

impl Backward<'_> {
    /// Whether the gradient of `name` is asked for.
    pub fn wants(&self, name: &str) -> bool {
        self.wrt.iter().any(|w| w == name)
    }

    /// `grad_output` as an f64 array.
    pub fn grad(&self) -> ArrayD<f64> {
        self.grad_output.to_array()
    }
}

/// Reduces a gradient computed on a broadcast shape back to an argument's `shape`: sums over
/// the leading axes broadcasting added and over the axes where `shape` has extent 1.
pub fn sum_to_shape(grad: ArrayD<f64>, shape: &[usize]) -> Result<ArrayD<f64>, CallError> {
    let mut g = grad;
    while g.ndim() > shape.len() {
        g = g.sum_axis(Axis(0));
    }
    for (axis, &n) in shape.iter().enumerate() {
        if n == 1 && g.shape()[axis] != 1 {
            g = g.sum_axis(Axis(axis)).insert_axis(Axis(axis));
        }
    }
    if g.shape() != shape {
        return Err(CallError::shape(format!(
            "gradient of shape {:?} does not reduce to the argument's shape {shape:?}",
            g.shape()
        )));
    }
    Ok(g)
}

/// Puts `grad` under `name` as a tensor of `dtype`, rounding each element once.
pub fn insert(out: &mut Gradients, name: &str, dtype: DType, grad: &ArrayD<f64>) {
    out.insert(name.to_string(), Tensor::from_array(dtype, grad));
}

/// An all-zero gradient for an argument the loss does not depend on (or not differentiably).
pub fn zeros_like(t: &Tensor) -> Tensor {
    Tensor::from_array(t.dtype(), &ArrayD::zeros(IxDyn(t.shape())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ArrayD;

    #[test]
    fn sum_to_shape_undoes_broadcasting() {
        let g = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1., 2., 3., 4., 5., 6.]).unwrap();
        let r = sum_to_shape(g.clone(), &[3]).unwrap();
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![5., 7., 9.]);
        let r = sum_to_shape(g.clone(), &[2, 1]).unwrap();
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![6., 15.]);
        let r = sum_to_shape(g.clone(), &[]).unwrap();
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![21.]);
        assert!(sum_to_shape(g, &[4]).is_err());
    }
}
