//! Reference kernel for `torch.nn.functional.cosine_embedding_loss`.
//!
//! ATen's composite: `prod_sum = (x1 * x2).sum(d)`, `mag_i = (x_i * x_i).sum(d) + EPSILON`
//! (a C++ `float` 1e-12, so 9.99999996e-13 even for float64), `cos = prod_sum /
//! (mag1 * mag2).sqrt_()`, then `where(y == 1, 1 - cos, 0) + where(y == -1, (cos -
//! margin).clamp_min_(0), 0)`. Every op rounds to its own dtype: the product of the squared
//! norms overflows float32 once `||x1|| ||x2||` passes ~1.8e19 and underflows float16 for
//! vectors of length ~1e-3 (cos = x / 0 = inf, loss -inf). `d` is the target's rank: a 1-D
//! target takes 2-D inputs, a 0-d target 1-D inputs.

use super::margin::{add, add_scalar, clamp_min0, mul, rsub_scalar, where_, zeros_like};
use super::reduction;
use super::{sum_axis, zip, Arr};
use crate::backend::CallError;
use crate::reference::{Args, Kernel};
use crate::tensor::{DType, Tensor};
use crate::reference::GradientKernel;

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[];

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[(
    "torch.nn.functional.cosine_embedding_loss",
    cosine_embedding_loss,
)];

/// ATen's `constexpr float EPSILON = 1e-12`.
const EPSILON: f64 = 1e-12f32 as f64;

/// `x.sum(axis)`: float dtypes keep theirs (half types accumulate in float32), integers and
/// bool sum to int64.
fn sum_dim(x: &Arr, axis: usize) -> Arr {
    if x.dt.is_float() {
        return sum_axis(x, axis);
    }
    let a = x.a.map_axis(ndarray::Axis(axis), |lane| {
        lane.iter().map(|&v| v as i64).fold(0i64, i64::wrapping_add) as f64
    });
    Arr {
        dt: DType::Int64,
        a,
    }
}

pub fn cosine_embedding_loss(args: &Args) -> Result<Tensor, CallError> {
    let input1 = Arr::of(args.tensor("input1")?);
    let input2 = Arr::of(args.tensor("input2")?);
    let target = Arr::of(args.tensor("target")?);
    let margin = super::float_arg(args, "margin", 0.0)?;
    let red = reduction::read(args, true)?.get_enum()?;
    let targ_dim = target.a.ndim();
    if targ_dim > 1 {
        return Err(CallError::shape(
            "0D or 1D target tensor expected, multi-target not supported",
        ));
    }
    let want = targ_dim + 1;
    if input1.a.ndim() != want || input2.a.ndim() != want {
        return Err(CallError::shape(format!(
            "{targ_dim}D target tensor expects {want}D input tensors, but found inputs with sizes {:?} and {:?}.",
            input1.shape(),
            input2.shape()
        )));
    }
    let prod_sum = sum_dim(&mul(&input1, &input2)?, targ_dim);
    let mag1 = add_scalar(&sum_dim(&mul(&input1, &input1)?, targ_dim), EPSILON);
    let mag2 = add_scalar(&sum_dim(&mul(&input2, &input2)?, targ_dim), EPSILON);
    let prod = mul(&mag1, &mag2)?;
    let denom = prod.map(prod.dt, f64::sqrt);
    let cos = zip(&prod_sum, &denom, |_| Ok(()), |a, b| a / b)?;
    let zeros = zeros_like(&cos);
    let pos = rsub_scalar(1.0, &cos)?;
    let neg = clamp_min0(&add_scalar(&cos, -margin));
    let output_pos = where_(&target, |y| y == 1.0, &pos, &zeros)?;
    let output_neg = where_(&target, |y| y == -1.0, &neg, &zeros)?;
    let output = add(&output_pos, &output_neg)?;
    Ok(reduction::apply(output, red)?.tensor())
}

#[cfg(test)]
mod tests {
    use super::super::margin::tests::{close, error_kind, f64s, long, s, t, value};
    use crate::backend::{ErrorKind, Value};
    use crate::tensor::DType;

    #[test]
    fn labels_margin_and_shapes() {
        let x1 = f64s(&[3, 2], &[1.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        let x2 = f64s(&[3, 2], &[1.0, 0.0, -1.0, -1.0, 3.0, 4.0]);
        let run = |y: &[f64], margin: f64| {
            value(
                "cosine_embedding_loss",
                &[
                    ("input1", x1.clone()),
                    ("input2", x2.clone()),
                    ("target", f64s(&[3], y)),
                    ("margin", Value::Float(margin)),
                    ("reduction", s("none")),
                ],
            )
            .to_f64_vec()
        };
        let pos = run(&[1.0; 3], 0.0);
        let neg = run(&[-1.0; 3], 0.0);
        // 1 - cos and max(0, cos): identical vectors 0 / ~1, opposite ~2 / 0, a zero vector 1 / 0.
        assert!(pos[0].abs() < 1e-9 && (neg[0] - 1.0).abs() < 1e-9);
        assert!((pos[1] - 2.0).abs() < 1e-9 && neg[1] == 0.0);
        close(&[pos[2], neg[2]], &[1.0, 0.0]);
        // Other labels give 0 but count in the mean.
        assert_eq!(run(&[0.0, 2.0, 0.5], 0.0), vec![0.0; 3]);
        let mean = value(
            "cosine_embedding_loss",
            &[
                ("input1", x1.clone()),
                ("input2", x2.clone()),
                ("target", f64s(&[3], &[1.0, 0.0, 0.0])),
            ],
        );
        close(&mean.to_f64_vec(), &[pos[0] / 3.0]);
        // A negative margin lifts the zero-vector row of y = -1 to -margin.
        assert!((run(&[-1.0; 3], -0.5)[2] - 0.5).abs() < 1e-12);
        // 1-D inputs with a 0-d target give a 0-d loss.
        let one = value(
            "cosine_embedding_loss",
            &[
                ("input1", f64s(&[3], &[1.0, 2.0, 3.0])),
                ("input2", f64s(&[3], &[2.0, -1.0, 0.5])),
                ("target", long(&[], &[1])),
                ("reduction", s("none")),
            ],
        );
        assert_eq!(one.shape(), &[] as &[usize]);
    }

    #[test]
    fn dtypes_follow_promotion_of_the_inputs_only() {
        let a = t(DType::Float32, &[2, 3], &[1.0, 2.0, 3.0, 1.0, 0.0, 0.0]);
        let b = t(DType::Float64, &[2, 3], &[3.0, 2.0, 1.0, 1.0, 1.0, 0.0]);
        let y16 = t(DType::Float16, &[2], &[1.0, -1.0]);
        let out = value(
            "cosine_embedding_loss",
            &[
                ("input1", a.clone()),
                ("input2", b),
                ("target", y16.clone()),
            ],
        );
        assert_eq!(out.dtype(), DType::Float64);
        let out = value(
            "cosine_embedding_loss",
            &[
                ("input1", a.clone()),
                ("input2", a.clone()),
                ("target", long(&[2], &[1, -1])),
            ],
        );
        assert_eq!(out.dtype(), DType::Float32);
        // float32 overflow of the squared-norm product: cos = dot / inf = 0, so y = 1 gives 1.
        let big = t(DType::Float32, &[1, 3], &[5e9, 0.0, 0.0]);
        let o = value(
            "cosine_embedding_loss",
            &[
                ("input1", big.clone()),
                ("input2", big),
                ("target", long(&[1], &[1])),
            ],
        );
        assert_eq!(o.to_f64_vec(), vec![1.0]);
    }

    #[test]
    fn error_kinds() {
        let x = f64s(&[2, 3], &[1.0; 6]);
        let y = f64s(&[2], &[1.0, -1.0]);
        let err = |a: Value, b: Value, y: Value| {
            error_kind(
                "cosine_embedding_loss",
                &[("input1", a), ("input2", b), ("target", y)],
            )
        };
        assert_eq!(
            err(x.clone(), x.clone(), f64s(&[2, 1], &[1.0, 1.0])),
            ErrorKind::Shape
        );
        assert_eq!(
            err(x.clone(), x.clone(), f64s(&[], &[1.0])),
            ErrorKind::Shape
        );
        assert_eq!(
            err(x.clone(), f64s(&[1, 2, 3], &[1.0; 6]), y.clone()),
            ErrorKind::Shape
        );
        assert_eq!(
            err(x.clone(), f64s(&[2, 2], &[1.0; 4]), y.clone()),
            ErrorKind::Shape
        );
        assert_eq!(
            err(x.clone(), x.clone(), f64s(&[3], &[1.0; 3])),
            ErrorKind::Shape
        );
        assert_eq!(
            error_kind(
                "cosine_embedding_loss",
                &[
                    ("input1", x.clone()),
                    ("input2", x),
                    ("target", y),
                    ("reduction", s("avg"))
                ]
            ),
            ErrorKind::Argument
        );
    }
}
