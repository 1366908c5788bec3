//! Reference kernels for `tf.nn.weighted_cross_entropy_with_logits`.
//!
//! TensorFlow 2.21 evaluates the Python composite of `nn_impl.py`
//! (`weighted_cross_entropy_with_logits_v2`) op by op in the logits' dtype:
//!
//! ```text
//! log_weight = 1 + (pos_weight - 1) * labels
//! loss       = (1 - labels) * logits
//!              + log_weight * (log1p(exp(-abs(logits))) + relu(-logits))
//! ```
//!
//! Every op rounds to the dtype ([`Fp::r`]), so `pos_weight = inf` gives NaN wherever
//! `labels = 0` (`inf * 0`), and `logits = +inf` with `labels = 1` gives NaN (`0 * inf`).
//! TensorFlow flushes subnormal results to zero ([`flush`]): at logit 100 in float32,
//! `exp(-100)` becomes 0 and so does the log term, so an infinite `pos_weight` with a soft
//! label gives `inf * 0 = NaN` there too.
//! A Python `pos_weight` has `- 1` applied in Python (float64) and is then converted to the
//! labels' dtype; a tensor `pos_weight` must have the labels' dtype (`Mul` does not promote) and
//! broadcasts against them, so the output has the broadcast shape.

use super::add_n;
use super::nd::{Fp, Nd};
use super::poisson::flush;
use super::read_name;
use crate::backend::Gradients;
use crate::backend::{CallError, Value};
use crate::reference::gradient::{sum_to_shape, Backward};
use crate::reference::GradientKernel;
use crate::reference::{Args, Kernel};
use crate::tensor::{DType, Tensor};

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[(
    "tf.nn.weighted_cross_entropy_with_logits",
    weighted_cross_entropy_with_logits_backward,
)];

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[(
    "tf.nn.weighted_cross_entropy_with_logits",
    weighted_cross_entropy_with_logits,
)];

/// TensorFlow's spelling of a dtype in kernel messages (`float`, `double`, `half`).
pub(crate) fn tf_type_name(dt: DType) -> &'static str {
    match dt {
        DType::Float16 => "half",
        DType::Bfloat16 => "bfloat16",
        DType::Float32 => "float",
        DType::Float64 => "double",
        other => other.name(),
    }
}

/// The error of a binary op whose second input has another dtype than its first.
pub(crate) fn mul_dtype_error(first: DType, second: DType) -> CallError {
    CallError::dtype(format!(
        "cannot compute Mul as input #1(zero-based) was expected to be a {} tensor but is a {} tensor [Op:Mul]",
        tf_type_name(first),
        tf_type_name(second)
    ))
}

/// The error of an op with no kernel for an integer or boolean dtype (`Exp`, `Log1p`).
pub(crate) fn float_kernel_error(dt: DType) -> CallError {
    CallError::dtype(format!(
        "Value for attr 'T' of {dt} is not in the list of allowed values: bfloat16, half, float, double, complex64, complex128"
    ))
}

/// `pos_weight - 1`, before it meets the labels.
enum PosWeight {
    /// A Python number: the subtraction happens in Python, in float64.
    Number(f64),
    /// A tensor: the subtraction happens in its dtype.
    Tensor(Nd),
}

fn read_pos_weight(a: &Args, labels: DType) -> Result<PosWeight, CallError> {
    let api = a.api();
    match a.get("pos_weight") {
        None => Err(CallError::argument(format!(
            "{api}: missing required argument 'pos_weight'"
        ))),
        Some(Value::Tensor(t)) => {
            if t.dtype() != labels {
                return Err(mul_dtype_error(t.dtype(), labels));
            }
            let p = Fp(t.dtype());
            Ok(PosWeight::Tensor(Nd::of(t).map(|w| p.r(w - 1.0))))
        }
        Some(Value::Bool(b)) => Ok(PosWeight::Number(f64::from(u8::from(*b)) - 1.0)),
        Some(Value::Int(i)) => Ok(PosWeight::Number(*i as f64 - 1.0)),
        Some(v) => match v.as_f64() {
            Some(w) => {
                // A Python float cannot be converted into an integer labels tensor.
                if !labels.is_float() {
                    return Err(CallError::dtype(format!(
                        "Cannot convert {} to EagerTensor of dtype {labels}",
                        w - 1.0
                    )));
                }
                Ok(PosWeight::Number(w - 1.0))
            }
            None => Err(CallError::argument(format!(
                "{api}: 'pos_weight' must be a number or a tensor, got {}",
                v.describe()
            ))),
        },
    }
}

fn weighted_cross_entropy_with_logits(a: &Args) -> Result<Tensor, CallError> {
    read_name(a, &["labels", "logits", "pos_weight"])?;
    let labels = a.tensor("labels")?;
    let logits = a.tensor("logits")?;
    if labels.shape() != logits.shape() {
        return Err(CallError::shape(format!(
            "`logits` and `labels` must have the same shape, received ({:?} vs {:?}).",
            logits.shape(),
            labels.shape()
        )));
    }
    let pw = read_pos_weight(a, labels.dtype())?;
    let dt = labels.dtype();
    let p = Fp(dt);
    let z = Nd::of(labels);
    // (pos_weight - 1) * labels: a tensor pos_weight broadcasts against the labels.
    let scaled = match pw {
        PosWeight::Number(w) => {
            let w = p.r(w);
            z.map(|z| p.r(w * z))
        }
        PosWeight::Tensor(w) => w.zip(&z, |w, z| p.r(w * z))?,
    };
    let log_weight = scaled.map(|s| p.r(1.0 + s));
    // (1 - labels) * logits: Mul does not promote.
    if logits.dtype() != dt {
        return Err(mul_dtype_error(dt, logits.dtype()));
    }
    if !dt.is_float() {
        return Err(float_kernel_error(dt));
    }
    let x = Nd::of(logits);
    let linear = z.zip(&x, |z, x| p.r(p.r(1.0 - z) * x))?;
    let softplus = x.map(|x| {
        // exp(-100) is a float32 subnormal, flushed to 0: the log term is then exactly 0.
        let log_term = flush(dt, flush(dt, (-x.abs()).exp()).ln_1p());
        // relu(-x) = max(-x, 0); NaN stays NaN.
        let relu = if -x < 0.0 { 0.0 } else { -x };
        p.r(log_term + relu)
    });
    let weighted = log_weight.zip(&softplus, |w, s| p.r(w * s))?;
    let out = linear.zip(&weighted, |l, w| p.r(l + w))?;
    Ok(out.to_tensor(dt))
}

/// The gradient of the composite, op by op in the labels' dtype with TensorFlow's registered
/// gradients, summed in tape order (see [`add_n`]). With `w = pos_weight - 1`,
/// `lw = 1 + w z`, `sp = log1p(exp(-|x|)) + relu(-x)` and `e = exp(-|x|)`:
///
/// - `d logits = (1 - z) g + (-(relu'(-x) lw g)) + (-(lw g / (1 + e)) e) sign(x)`: `ReluGrad` multiplies
///   the gradient by `-x > 0` and `Abs` multiplies by `sign(x)`, so at `x = 0` the
///   softplus part contributes nothing and the gradient is `(1 - z) g` (the chain rule of
///   softplus would give `(1 - z) g - lw g / 2`);
/// - `d labels = -(g x) + w (g sp)`.
///
/// A tensor `pos_weight` that broadcasts the output beyond the labels' shape has its gradient
/// summed back (`BroadcastGradientArgs`) before the labels' sum.
fn weighted_cross_entropy_with_logits_backward(
    a: &Args,
    b: &Backward,
) -> Result<Gradients, CallError> {
    let labels = a.tensor("labels")?;
    let logits = a.tensor("logits")?;
    let dt = labels.dtype();
    let p = Fp(dt);
    let f = |x: f64| flush(dt, x);
    let w = match read_pos_weight(a, dt)? {
        PosWeight::Number(w) => Nd::scalar(p.r(w)),
        PosWeight::Tensor(w) => w,
    };
    let z = Nd::of(labels);
    let x = Nd::of(logits);
    let g = Nd::of(b.grad_output);
    let shape = g.shape.clone();
    let zs = z.shape.clone();
    // Gradients on the output's shape summed back to the labels' shape (`BroadcastGradientArgs`
    // then `Sum`); the identity when nothing broadcast.
    let reduce = |v: Vec<f64>| -> Result<Vec<f64>, CallError> {
        if zs == shape {
            return Ok(v);
        }
        let arr = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), v)
            .map_err(|e| CallError::shape(e.to_string()))?;
        Ok(sum_to_shape(arr, &zs)?.iter().map(|&s| p.r(s)).collect())
    };
    let softplus = |x: f64| {
        let e = f((-x.abs()).exp());
        let r = if -x > 0.0 { -x } else { 0.0 };
        (e, r, p.r(f(e.ln_1p()) + r))
    };
    let (zb, xb, wb) = (
        z.broadcast_to(&shape),
        x.broadcast_to(&shape),
        w.broadcast_to(&shape),
    );
    // Mul(lw, sp): g_sp = lw * g, g_lw = g * sp; Mul(w, z): d z = w * g_lw.
    let mut g_sp = Vec::with_capacity(g.len());
    let mut gz_weight = Vec::with_capacity(g.len());
    for i in 0..g.len() {
        let (z, x, w, g) = (zb.data[i], xb.data[i], wb.data[i], g.data[i]);
        let lw = p.r(1.0 + p.r(w * z));
        g_sp.push(f(p.r(lw * g)));
        gz_weight.push(f(p.r(w * f(p.r(g * softplus(x).2)))));
    }
    let g_sp = reduce(g_sp)?;
    let gz_weight = reduce(gz_weight)?;
    let g_lin = reduce(g.data.clone())?;
    let mut gx = Vec::with_capacity(z.len());
    let mut gz = Vec::with_capacity(z.len());
    for i in 0..z.len() {
        let (zv, xv, g, g_sp) = (z.data[i], x.data[i], g_lin[i], g_sp[i]);
        let (e, r, _) = softplus(xv);
        // `ReluGrad` multiplies by `features > 0`: an infinite gradient gives NaN, not 0.
        let g_nx = p.r(g_sp * if r > 0.0 { 1.0 } else { 0.0 });
        let g_e = f(p.r(g_sp * f(p.r(1.0 / p.r(1.0 + e)))));
        let g_na = f(p.r(g_e * e));
        let sign = if xv > 0.0 {
            1.0
        } else if xv < 0.0 {
            -1.0
        } else {
            xv
        };
        let om = p.r(1.0 - zv);
        gx.push(f(add_n(p, &[f(p.r(om * g)), -g_nx, f(p.r(-g_na * sign))])));
        gz.push(f(add_n(p, &[-f(p.r(g * xv)), gz_weight[i]])));
    }
    let mut out = Gradients::new();
    out.insert("logits".into(), Nd::new(zs.clone(), gx).to_tensor(dt));
    out.insert("labels".into(), Nd::new(zs, gz).to_tensor(dt));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::backend::{ErrorKind, Outcome, Value};
    use crate::reference::testing::{forward, kind, t, value};

    use crate::tensor::DType;

    fn call(args: Vec<(&str, Value)>) -> Outcome {
        forward("tf.nn.weighted_cross_entropy_with_logits", args)
    }

    #[test]
    fn matches_the_textbook_formula_and_stays_finite() {
        let xs = [1e4, -1e4, 0.5, -2.0];
        let zs = [0.0, 1.0, 1.0, 0.0];
        let out = value(call(vec![
            ("labels", t(DType::Float64, &[4], &zs)),
            ("logits", t(DType::Float64, &[4], &xs)),
            ("pos_weight", Value::Float(3.0)),
        ]))
        .to_f64_vec();
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        // The finite entries against -q z log(sigmoid) - (1 - z) log(1 - sigmoid).
        for i in 2..4 {
            let (x, z) = (xs[i], zs[i]);
            let want = -3.0 * z * sig(x).ln() - (1.0 - z) * (1.0 - sig(x)).ln();
            assert!((out[i] - want).abs() < 1e-12, "{} vs {want}", out[i]);
        }
        assert_eq!(&out[..2], &[1e4, 3e4]);
    }

    #[test]
    fn pos_weight_tensor_broadcasts_and_must_match_the_dtype() {
        let labels = t(DType::Float32, &[2, 2], &[1.0, 0.0, 1.0, 1.0]);
        let logits = t(DType::Float32, &[2, 2], &[1.0, 0.0, 2.0, 2.0]);
        let per_sample = value(call(vec![
            ("labels", labels.clone()),
            ("logits", logits.clone()),
            ("pos_weight", t(DType::Float32, &[2, 1], &[2.0, 3.0])),
        ]));
        assert_eq!(per_sample.shape(), &[2, 2]);
        let o = call(vec![
            ("labels", labels.clone()),
            ("logits", logits.clone()),
            ("pos_weight", t(DType::Float64, &[], &[2.0])),
        ]);
        assert_eq!(kind(o), ErrorKind::Dtype);
        let o = call(vec![
            ("labels", labels),
            ("logits", logits),
            ("pos_weight", t(DType::Float32, &[3], &[1.0, 2.0, 3.0])),
        ]);
        assert_eq!(kind(o), ErrorKind::Shape);
    }
}
