//! Reference kernel for `torch.nn.functional.cosine_embedding_loss`.
//!
//! ATen's composite: `prod_sum = (x1 * x2).sum(d)`, `mag_i = (x_i * x_i).sum(d) + EPSILON`
//! (a C++ `float` 1e-12, so 9.99999996e-13 even for float64), `cos = prod_sum /
//! (mag1 * mag2).sqrt_()`, then `where(y == 1, 1 - cos, 0) + where(y == -1, (cos -
//! margin).clamp_min_(0), 0)`. Every op rounds to its own dtype: the product of the squared
//! norms overflows float32 once `||x1|| ||x2||` passes ~1.8e19 and underflows float16 for
//! vectors of length ~1e-3 (cos = x / 0 = inf, loss -inf). `d` is the target's rank: a 1-D
//! target takes 2-D inputs, a 0-d target 1-D inputs.

use super::margin::{
    add, add_scalar, clamp_min0, grad_to, mul, neg, pass_where, put, reduction_backward,
    rsub_scalar, where_, zeros_like,
};
use super::reduction;
use super::{sum_axis, zip, Arr};
use crate::backend::CallError;
use crate::backend::Gradients;
use crate::reference::{Args, Kernel};
use crate::reference::{Backward, GradientKernel};
use crate::tensor::{DType, Tensor};

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[(
    "torch.nn.functional.cosine_embedding_loss",
    cosine_embedding_loss_backward,
)];

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

/// The forward intermediates the backward reuses.
struct Parts {
    input1: Arr,
    input2: Arr,
    target: Arr,
    margin: f64,
    red: reduction::Reduction,
    targ_dim: usize,
    prod_sum: Arr,
    mag1: Arr,
    mag2: Arr,
    denom: Arr,
    cos: Arr,
    output: Arr,
}

fn forward(args: &Args) -> Result<Parts, CallError> {
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
    Ok(Parts {
        input1,
        input2,
        target,
        margin,
        red,
        targ_dim,
        prod_sum,
        mag1,
        mag2,
        denom,
        cos,
        output,
    })
}

pub fn cosine_embedding_loss(args: &Args) -> Result<Tensor, CallError> {
    let parts = forward(args)?;
    Ok(reduction::apply(parts.output, parts.red)?.tensor())
}

/// The backward of `x.sum(axis)`: the gradient with `axis` put back, expanded to `shape`.
fn unsum(g: &Arr, axis: usize, shape: &[usize]) -> Result<Arr, CallError> {
    Arr {
        dt: g.dt,
        a: g.a.clone().insert_axis(ndarray::Axis(axis)),
    }
    .expand(shape)
}

/// `cosine_embedding_loss` backward: the composite differentiated op by op with
/// derivatives.yaml's formulas, each rounded to its op's dtype: `where` and `clamp_min` (`> 0`:
/// none at exactly `cos = margin`) route the gradient to `cos`, div gives `grad / denom` to the
/// dot product and `-grad * (dot / denom) / denom` to the denominator, sqrt `grad / (2 sqrt)`,
/// the products of the squared norms `grad * other`; each input accumulates its squared-norm
/// gradient (the two equal halves of `x * x` first) and its dot-product gradient, in the
/// order autograd runs the nodes.
pub fn cosine_embedding_loss_backward(args: &Args, bw: &Backward) -> Result<Gradients, CallError> {
    let p = forward(args)?;
    let g = reduction_backward(&Arr::of(bw.grad_output), p.output.shape(), p.red)?;
    let g_pos = grad_to(
        &pass_where(&p.target, |y| y == 1.0, &g)?,
        p.cos.shape(),
        p.cos.dt,
    )?;
    let g_neg = grad_to(
        &pass_where(&p.target, |y| y == -1.0, &g)?,
        p.cos.shape(),
        p.cos.dt,
    )?;
    let pre = add_scalar(&p.cos, -p.margin);
    let g_cos = add(&neg(&g_pos)?, &pass_where(&pre, |v| v > 0.0, &g_neg)?)?;
    // div: self gets grad / other, other -grad * ((self / other) / other).
    let g_ps = grad_to(
        &zip(&g_cos, &p.denom, |_| Ok(()), |a, b| a / b)?,
        p.prod_sum.shape(),
        p.prod_sum.dt,
    )?;
    let ratio = zip(&p.prod_sum, &p.denom, |_| Ok(()), |a, b| a / b)?;
    let ratio = zip(&ratio, &p.denom, |_| Ok(()), |a, b| a / b)?;
    let g_denom = grad_to(&mul(&neg(&g_cos)?, &ratio)?, p.denom.shape(), p.denom.dt)?;
    // sqrt: grad / (2 * result).
    let two_denom = p.denom.map(p.denom.dt, |v| 2.0 * v);
    let g_prod = zip(&g_denom, &two_denom, |_| Ok(()), |a, b| a / b)?;
    let g_mag1 = grad_to(&mul(&g_prod, &p.mag2)?, p.mag1.shape(), p.mag1.dt)?;
    let g_mag2 = grad_to(&mul(&g_prod, &p.mag1)?, p.mag2.shape(), p.mag2.dt)?;
    let d = p.targ_dim;
    let grad_of = |x: &Arr, other: &Arr, g_mag: &Arr| -> Result<Arr, CallError> {
        let sq = grad_to(&mul(&unsum(g_mag, d, x.shape())?, x)?, x.shape(), x.dt)?;
        let dot_shape = super::broadcast_shapes(x.shape(), other.shape())?;
        let dot = grad_to(&mul(&unsum(&g_ps, d, &dot_shape)?, other)?, x.shape(), x.dt)?;
        add(&add(&sq, &sq)?, &dot)
    };
    let mut out = Gradients::new();
    put(
        &mut out,
        bw,
        "input1",
        &grad_of(&p.input1, &p.input2, &g_mag1)?,
    );
    put(
        &mut out,
        bw,
        "input2",
        &grad_of(&p.input2, &p.input1, &g_mag2)?,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::margin::tests::{close, error_kind, f64s, grads, long, s, t, value};
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

    #[test]
    fn gradient_is_orthogonal_to_its_input() {
        // cos is scale invariant, so d cos / d x1 is orthogonal to x1 (and likewise for x2).
        let x1 = [1.0, 2.0, -0.5, 0.25, 3.0, 1.5];
        let x2 = [0.5, -1.0, 2.0, 1.0, 1.0, -2.0];
        let g = grads(
            "cosine_embedding_loss",
            &[
                ("input1", f64s(&[2, 3], &x1)),
                ("input2", f64s(&[2, 3], &x2)),
                ("target", f64s(&[2], &[1.0, -1.0])),
                ("margin", Value::Float(-0.9)),
            ],
            &["input1", "input2"],
        );
        for (name, x) in [("input1", x1), ("input2", x2)] {
            let gv = g[name].to_f64_vec();
            for row in 0..2 {
                let dot: f64 = (0..3).map(|i| gv[row * 3 + i] * x[row * 3 + i]).sum();
                assert!(dot.abs() < 1e-12, "{name} row {row}: {dot}");
                assert!(gv[row * 3..row * 3 + 3].iter().any(|v| *v != 0.0));
            }
        }
    }
}
