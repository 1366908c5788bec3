//! Reference kernels for `tf.nn.l2_loss`.
//!
//! The `L2Loss` kernel (`tensorflow/core/kernels/l2loss_op.h`) is
//! `(input.square() * T(0.5)).sum()` in the input dtype: each element is squared and halved
//! with rounding, then the halves are summed ([`Fp::sum`], which follows Eigen's float16
//! accumulation). So a square that overflows gives inf even when the answer would fit, while two
//! halves that fit are summed without overflow. Only half, bfloat16, float and double have a
//! kernel: integer and boolean tensors are rejected, not promoted.
//!
//! float16 and bfloat16 sums follow Eigen's inner-most reducer ([`eigen_sum`]), which keeps
//! four packet accumulators once there are 32 terms: 1000 halves of `0.1^2` sum to 5.0 in
//! TensorFlow, where a single accumulator would drift to 4.93.

use super::nd::Fp;
use super::poisson::flush;
use super::read_name;
use crate::backend::CallError;
use crate::backend::Gradients;
use crate::reference::gradient::Backward;
use crate::reference::numeric;
use crate::reference::GradientKernel;
use crate::reference::{Args, Kernel};
use crate::tensor::{DType, Tensor};

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[("tf.nn.l2_loss", l2_loss_backward)];

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[("tf.nn.l2_loss", l2_loss)];

fn l2_loss(a: &Args) -> Result<Tensor, CallError> {
    read_name(a, &["t"])?;
    let t = a.tensor("t")?;
    let dt = t.dtype();
    if !dt.is_float() {
        return Err(CallError::dtype(format!(
            "Value for attr 'T' of {dt} is not in the list of allowed values: half, bfloat16, float, double"
        )));
    }
    let p = Fp(dt);
    let halves: Vec<f64> = t
        .to_f64_vec()
        .into_iter()
        .map(|x| flush(dt, p.r(flush(dt, x * x) * 0.5)))
        .collect();
    Ok(Tensor::scalar(dt, eigen_sum(p, &halves)))
}

/// `nn_grad._L2LossGrad`: `t * grad`, one multiplication in the input dtype (so the gradient of
/// a float16 `t = 300`, whose loss overflowed to inf, is the finite `300 g`).
fn l2_loss_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    let t = a.tensor("t")?;
    let dt = t.dtype();
    let p = Fp(dt);
    let g = b.grad_output.to_f64_vec()[0];
    let grad: Vec<f64> = t
        .to_f64_vec()
        .into_iter()
        .map(|x| flush(dt, p.r(x * g)))
        .collect();
    let mut out = Gradients::new();
    out.insert(
        "t".into(),
        Tensor::from_f64(dt, t.shape().to_vec(), grad).map_err(|e| CallError::shape(e.0))?,
    );
    Ok(out)
}

/// Eigen's own `.sum()` of one run of terms in working precision `p`, on one CPU thread (the
/// `L2Loss` kernel).
///
/// float32 and float64 go to [`Fp::sum`] (correctly rounded; Eigen lands within an ulp or two).
/// float16 and bfloat16 are added in their own precision, 8-lane packets at a time, each packet
/// addition rounded: with at least 32 terms, four packet accumulators take 32 terms per step and
/// are combined as `((a0 + a1) + a2) + a3`; the remaining whole packets go into that sum; the
/// packet's lanes are then summed in float32 and rounded once, and added to the rounded scalar
/// sum of the tail. Measured against TensorFlow 2.21 on random runs: bit for bit for every
/// length up to 1025 (longer sums are split across threads and may differ by an ulp).
pub(crate) fn eigen_sum(p: Fp, xs: &[f64]) -> f64 {
    const LANES: usize = 8;
    if !matches!(p.0, DType::Float16 | DType::Bfloat16) {
        return p.sum(xs);
    }
    let add = |acc: &mut [f64; LANES], chunk: &[f64]| {
        for (l, &x) in acc.iter_mut().zip(chunk) {
            *l = p.r(*l + x);
        }
    };
    let mut packet = [0.0f64; LANES];
    let mut start = 0;
    if xs.len() >= 4 * LANES {
        let unrolled = xs.len() / (4 * LANES) * (4 * LANES);
        let mut accs = [[0.0f64; LANES]; 4];
        for step in xs[..unrolled].chunks(4 * LANES) {
            for (acc, chunk) in accs.iter_mut().zip(step.chunks(LANES)) {
                add(acc, chunk);
            }
        }
        packet = accs[0];
        for acc in &accs[1..] {
            add(&mut packet, acc);
        }
        start = unrolled;
    }
    let whole = xs.len() / LANES * LANES;
    for chunk in xs[start.min(whole)..whole].chunks(LANES) {
        add(&mut packet, chunk);
    }
    let tail = xs[whole.max(start)..]
        .iter()
        .fold(0.0, |acc, &x| p.r(acc + x));
    let lanes = p.r(DType::Float32.round(packet.iter().sum::<f64>()));
    p.r(tail + lanes)
}

/// `tf.reduce_sum` of one run of terms (what Keras' `ops.sum` runs): like [`eigen_sum`], except
/// that TensorFlow's reduction op accumulates bfloat16 in float32 and rounds once.
pub(crate) fn reduce_sum(p: Fp, xs: &[f64]) -> f64 {
    match p.0 {
        DType::Bfloat16 => p.r(DType::Float32.round(numeric::sum(xs.iter().copied()))),
        _ => eigen_sum(p, xs),
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::{Backend, Call, ErrorKind, Outcome, Value};
    use crate::reference::Reference;
    use crate::tensor::{DType, Tensor};

    fn call(dt: DType, shape: &[usize], data: &[f64]) -> Outcome {
        let t = Tensor::from_f64(dt, shape.to_vec(), data.to_vec()).unwrap();
        let call = Call {
            api: "tf.nn.l2_loss".into(),
            args: [("t".to_string(), Value::Tensor(t))].into_iter().collect(),
        };
        Reference.forward(&call)
    }

    fn scalar(o: Outcome) -> f64 {
        match o {
            Outcome::Value(t) => {
                assert_eq!(t.shape(), &[] as &[usize]);
                t.to_f64_vec()[0]
            }
            other => panic!("expected a value, got {other:?}"),
        }
    }

    #[test]
    fn half_the_sum_of_squares_of_any_shape() {
        assert_eq!(
            scalar(call(DType::Float32, &[2, 2], &[1.0, 2.0, 3.0, 4.0])),
            15.0
        );
        assert_eq!(scalar(call(DType::Float64, &[], &[3.0])), 4.5);
        assert_eq!(scalar(call(DType::Float64, &[2, 0, 3], &[])), 0.0);
    }

    #[test]
    fn squares_overflow_before_halving() {
        let f32max = f32::MAX as f64;
        assert_eq!(
            scalar(call(DType::Float32, &[2], &[2e19, 1.0])),
            f64::INFINITY
        );
        let fits = scalar(call(DType::Float32, &[2], &[1.8e19, 1.8e19]));
        assert!(fits.is_finite() && fits > 3.2e38 && fits <= f32max);
        assert_eq!(
            scalar(call(DType::Float16, &[2], &[300.0, 1.0])),
            f64::INFINITY
        );
        // 4097 halves of 1 in float16: 2048.5 rounds to 2048.
        assert_eq!(scalar(call(DType::Float16, &[4097], &[1.0; 4097])), 2048.0);
    }

    #[test]
    fn integers_are_rejected() {
        let t = Tensor::from_i64(DType::Int32, vec![2], vec![1, 2]).unwrap();
        let call = Call {
            api: "tf.nn.l2_loss".into(),
            args: [("t".to_string(), Value::Tensor(t))].into_iter().collect(),
        };
        assert!(
            matches!(Reference.forward(&call), Outcome::Error(e) if e.kind == ErrorKind::Dtype)
        );
    }
}
