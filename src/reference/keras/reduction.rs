//! What every Keras loss shares: constructor options (`reduction`, `name`, `dtype`), the loss
//! dtype, rank alignment (`squeeze_or_expand_to_same_rank`) and `reduce_weighted_values` with
//! sample weights and masks (Keras 3.15.1, `keras/src/losses/loss.py`).

use crate::backend::{CallError, Gradients, Value};
use crate::reference::gradient::{sum_to_shape, zeros_like, Backward};
use crate::reference::tf_nn::nd::{Fp, Nd};
use crate::reference::Args;
use crate::tensor::DType;

/// A Keras loss reduction. `None` and `"none"` both mean no reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    None,
    Sum,
    SumOverBatchSize,
    Mean,
    MeanWithSampleWeight,
}

impl Reduction {
    pub fn parse(s: Option<&str>) -> Result<Reduction, CallError> {
        Ok(match s {
            None | Some("none") => Reduction::None,
            Some("sum") => Reduction::Sum,
            Some("sum_over_batch_size") => Reduction::SumOverBatchSize,
            Some("mean") => Reduction::Mean,
            Some("mean_with_sample_weight") => Reduction::MeanWithSampleWeight,
            Some(other) => {
                return Err(CallError::argument(format!(
                    "Invalid value for argument `reduction`. Expected one of 'sum_over_batch_size', 'sum', 'mean', 'mean_with_sample_weight', 'none', None. Received: reduction={other}"
                )))
            }
        })
    }
}

/// The options every Keras loss constructor takes.
#[derive(Clone, Copy, Debug)]
pub struct Common {
    /// The loss dtype: inputs are cast to it, the whole computation and the output use it.
    pub dtype: DType,
    pub reduction: Reduction,
}

/// Python raises `TypeError` for an unexpected keyword before running anything, so an unknown
/// argument wins over every other error: mark the API's parameters read and check up front.
pub fn only_known(a: &Args, own: &[&'static str]) -> Result<(), CallError> {
    for name in [
        "reduction",
        "name",
        "dtype",
        "y_true",
        "y_pred",
        "sample_weight",
    ]
    .iter()
    .chain(own)
    {
        a.get(name);
    }
    a.finish()
}

/// A float option as Python reads it: `True`/`False` are 1 and 0.
pub fn py_float(a: &Args, name: &'static str, default: f64) -> Result<f64, CallError> {
    match a.get(name) {
        Some(Value::Bool(b)) => Ok(f64::from(u8::from(*b))),
        _ => a.f64_or(name, default),
    }
}

impl Common {
    /// Reads `reduction`, `name` and `dtype` (a float dtype name or a mixed-precision policy,
    /// whose compute dtype is used; default float32, Keras' `floatx`).
    pub fn read(a: &Args) -> Result<Common, CallError> {
        let reduction = Reduction::parse(a.opt_str("reduction", Some("sum_over_batch_size"))?)?;
        match a.get("name") {
            None | Some(Value::Null) | Some(Value::Str(_)) => {}
            Some(v) => {
                return Err(CallError::argument(format!(
                    "{}: 'name' must be a string or None, got {}",
                    a.api(),
                    v.describe()
                )))
            }
        }
        let dtype = match a.opt_str("dtype", None)? {
            None => DType::Float32,
            Some("mixed_float16") => DType::Float16,
            Some("mixed_bfloat16") => DType::Bfloat16,
            Some(s) => match DType::parse(s) {
                Some(d) if d.is_float() => d,
                // Keras also accepts integer dtypes (and computes garbage in them); the
                // reference covers float losses only.
                _ => {
                    return Err(CallError::argument(format!(
                        "{}: dtype {s:?} is not a float dtype or a mixed precision policy",
                        a.api()
                    )))
                }
            },
        };
        Ok(Common { dtype, reduction })
    }

    pub fn fp(&self) -> Fp {
        Fp(self.dtype)
    }
}

/// Keras' `squeeze_or_expand_to_same_rank`: when the ranks differ by exactly one and the longer
/// ends in a size-1 axis, squeeze it, or expand a rank-1 partner instead (`expand_rank_1`).
pub fn squeeze_or_expand(x1: Nd, x2: Nd, expand_rank_1: bool) -> (Nd, Nd) {
    let (r1, r2) = (x1.rank(), x2.rank());
    let (mut x1, mut x2) = (x1, x2);
    if r1 == r2 + 1 && x1.shape.last() == Some(&1) {
        if r2 == 1 && expand_rank_1 {
            x2 = x2.expand(1);
        } else {
            x1 = x1.squeeze_last();
        }
    }
    if r2 == r1 + 1 && x2.shape.last() == Some(&1) {
        if r1 == 1 && expand_rank_1 {
            x1 = x1.expand(1);
        } else {
            x2 = x2.squeeze_last();
        }
    }
    (x1, x2)
}

/// TensorFlow's `divide_no_nan`: 0 wherever the divisor is 0, whatever the dividend.
fn divide_no_nan(p: Fp, x: f64, y: f64) -> f64 {
    if y == 0.0 {
        0.0
    } else {
        p.r(x / y)
    }
}

/// Keras' `reduce_weighted_values`: merges the mask into the sample weight, weights the values
/// and reduces them. Values of shape `()` or `(0,)` come back unreduced whatever the reduction.
pub fn reduce_weighted(
    values: Nd,
    sample_weight: Option<Nd>,
    mask: Option<&Nd>,
    c: Common,
) -> Result<Nd, CallError> {
    let p = c.fp();
    let mut sw = sample_weight;
    if let Some(mask) = mask {
        let float_mask = match c.reduction {
            Reduction::Mean | Reduction::SumOverBatchSize => {
                // Valid entries weigh total/valid, so the mean is over valid entries only.
                let total = p.r(mask.len() as f64);
                let valid = p.sum(&mask.data);
                let w = divide_no_nan(p, total, valid);
                mask.map(|m| if m != 0.0 { w } else { 0.0 })
            }
            _ => mask.clone(),
        };
        sw = Some(match sw {
            Some(w) => {
                let (fm, w) = squeeze_or_expand(float_mask, w, true);
                w.zip(&fm, |a, b| p.r(a * b))?
            }
            None => float_mask,
        });
    }
    let mut values = values;
    if let Some(w) = sw.take() {
        let (v, w) = squeeze_or_expand(values, w, true);
        values = v.zip(&w, |a, b| p.r(a * b))?;
        sw = Some(w);
    }
    if c.reduction == Reduction::None || values.shape.is_empty() || values.shape == [0] {
        return Ok(values);
    }
    let loss = p.sum(&values.data);
    let out = match c.reduction {
        Reduction::Sum | Reduction::None => loss,
        Reduction::MeanWithSampleWeight if sw.is_some() => {
            let w = sw.as_ref().expect("checked");
            divide_no_nan(p, loss, p.sum(&w.data))
        }
        _ => divide_no_nan(p, loss, p.r(values.len() as f64)),
    };
    Ok(Nd::scalar(out))
}

// ---------------------------------------------------------------------------------------------
// Backward

/// `tf.reduce_sum` of float32 values in Eigen's order: 8-lane packets added lane-wise, the tail
/// added one by one, the lanes summed as a tree, then tail + lanes (measured against TF 2.21 on
/// random float32 vectors: bit-exact up to 33 terms; fewer than 8 terms are a sequential sum).
/// Gradients that cancel (a weight's gradient under `mean_with_sample_weight` is mathematically
/// 0) keep the last bits of these sums, which float64 arguments' tolerance can see. Other
/// dtypes: bfloat16 in this float32 order, rounded once (TF's reductions accumulate bfloat16
/// in float32); float16 and float64 [`Fp::sum`].
pub fn tf_sum(p: Fp, xs: &[f64]) -> f64 {
    match p.0 {
        DType::Float32 => {}
        DType::Bfloat16 => return p.r(tf_sum(Fp(DType::Float32), xs)),
        _ => return p.sum(xs),
    }
    const LANES: usize = 8;
    let body = xs.len() / LANES * LANES;
    let mut lanes = [0.0f64; LANES];
    for chunk in xs[..body].chunks(LANES) {
        for (l, &x) in lanes.iter_mut().zip(chunk) {
            *l = p.r(*l + x);
        }
    }
    let tail = xs[body..].iter().fold(0.0, |acc, &x| p.r(acc + x));
    if body == 0 {
        return tail;
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            lanes[i] = p.r(lanes[i] + lanes[i + width]);
        }
    }
    p.r(tail + lanes[0])
}

/// `ops.mean` of one fibre with [`tf_sum`]'s order (float16/bfloat16 averaged in float32).
pub fn tf_mean(p: Fp, xs: &[f64]) -> f64 {
    let wide = match p.0 {
        DType::Float16 | DType::Bfloat16 => Fp(DType::Float32),
        _ => p,
    };
    let s = tf_sum(wide, xs);
    p.r(wide.r(s / xs.len() as f64))
}

/// `sum_to_shape` in the working dtype: the broadcast gradient summed back to `shape` (TF's
/// `_ReduceGradientArgs`: a `reduce_sum` in the op's dtype, terms in row-major order, see
/// [`tf_sum`]).
pub fn reduce_to(p: Fp, g: Nd, shape: &[usize]) -> Result<Nd, CallError> {
    if g.shape == shape {
        return Ok(g);
    }
    let a = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&g.shape), g.data.clone())
        .expect("Nd invariant: data length is the product of the shape");
    // Checks the shapes (and gives the error) as the generic helper does.
    sum_to_shape(a, shape)?;
    let lead = g.rank() - shape.len();
    let mut buckets: Vec<Vec<f64>> = vec![Vec::new(); shape.iter().product()];
    let mut index = vec![0usize; g.rank()];
    for &x in &g.data {
        let mut target = 0;
        for (axis, &n) in shape.iter().enumerate() {
            let i = if n == 1 { 0 } else { index[lead + axis] };
            target = target * n + i;
        }
        buckets[target].push(x);
        for axis in (0..g.rank()).rev() {
            index[axis] += 1;
            if index[axis] < g.shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    let data = buckets.iter().map(|b| tf_sum(p, b)).collect();
    Ok(Nd::new(shape.to_vec(), data))
}

/// The gradients of [`reduce_weighted`] with respect to its values and its sample weight.
pub struct ReducedGrad {
    /// `d loss / d values`, the shape of the values.
    pub values: Nd,
    /// `d loss / d sample_weight`, the shape of the sample weight (after its cast).
    pub sample_weight: Option<Nd>,
}

/// The backward of [`reduce_weighted`] (Keras' `reduce_weighted_values`), op by op with TF's
/// gradients: `Sum` broadcasts, `DivNoNan` gives `div_no_nan(g, d)` to the sum and
/// `g * div_no_nan(div_no_nan(-s, d), d)` to a divisor that depends on the weights
/// (`mean_with_sample_weight`), `Mul` gives `g * other` summed back over broadcast axes, and a
/// weight that reaches the loss twice (the product and the divisor) adds both. The mask is a
/// constant. Every result is rounded to the loss dtype.
pub fn reduce_weighted_backward(
    values: &Nd,
    sample_weight: Option<&Nd>,
    mask: Option<&Nd>,
    c: Common,
    grad: &Nd,
) -> Result<ReducedGrad, CallError> {
    let p = c.fp();
    let mul = |a: f64, b: f64| p.r(a * b);
    // Forward, keeping what the backward needs.
    // `masked`: (float mask aligned, weight aligned) when a weight meets a mask.
    let mut masked = None;
    let mut sw = sample_weight.cloned();
    if let Some(mask) = mask {
        let float_mask = match c.reduction {
            Reduction::Mean | Reduction::SumOverBatchSize => {
                let total = p.r(mask.len() as f64);
                let valid = p.sum(&mask.data);
                let w = divide_no_nan(p, total, valid);
                mask.map(|m| if m != 0.0 { w } else { 0.0 })
            }
            _ => mask.clone(),
        };
        sw = Some(match sw {
            Some(w) => {
                let (fm, w) = squeeze_or_expand(float_mask, w, true);
                let product = w.zip(&fm, mul)?;
                masked = Some((fm, w));
                product
            }
            None => float_mask,
        });
    }
    let weighted = match &sw {
        Some(w) => {
            let (v, w) = squeeze_or_expand(values.clone(), w.clone(), true);
            let product = v.zip(&w, mul)?;
            Some((v, w, product))
        }
        None => None,
    };
    let reduced = match &weighted {
        Some((_, _, product)) => product,
        None => values,
    };
    // Backward.
    let unreduced =
        c.reduction == Reduction::None || reduced.shape.is_empty() || reduced.shape == [0];
    let mut grad_divisor = None;
    let g_reduced = if unreduced {
        Nd::new(reduced.shape.clone(), grad.data.clone())
    } else {
        let g = grad.data[0];
        let g_sum = match c.reduction {
            Reduction::Sum | Reduction::None => g,
            Reduction::MeanWithSampleWeight if weighted.is_some() => {
                let (_, w, _) = weighted.as_ref().expect("checked");
                let (s, d) = (tf_sum(p, &reduced.data), tf_sum(p, &w.data));
                grad_divisor = Some(p.r(g * divide_no_nan(p, divide_no_nan(p, -s, d), d)));
                divide_no_nan(p, g, d)
            }
            _ => divide_no_nan(p, g, p.r(reduced.len() as f64)),
        };
        Nd::new(reduced.shape.clone(), vec![g_sum; reduced.len()])
    };
    let Some((v, w, _)) = weighted else {
        return Ok(ReducedGrad {
            values: g_reduced,
            sample_weight: None,
        });
    };
    let g_values = reduce_to(p, g_reduced.zip(&w, mul)?, &v.shape)?;
    let mut g_w = reduce_to(p, g_reduced.zip(&v, mul)?, &w.shape)?;
    if let Some(gd) = grad_divisor {
        g_w = g_w.map(|x| p.r(x + gd));
    }
    let g_w = Nd::new(sw.expect("weighted").shape, g_w.data);
    let g_sample_weight = match (sample_weight, masked) {
        (None, _) => None,
        (Some(w0), Some((fm, w1))) => {
            let g = reduce_to(p, g_w.zip(&fm, mul)?, &w1.shape)?;
            Some(Nd::new(w0.shape.clone(), g.data))
        }
        (Some(w0), None) => Some(Nd::new(w0.shape.clone(), g_w.data)),
    };
    Ok(ReducedGrad {
        values: Nd::new(values.shape.clone(), g_values.data),
        sample_weight: g_sample_weight,
    })
}

/// The backward of `ops.mean(x, axis=k)` (TF's `_MeanGrad`): the gradient broadcast along `k`
/// and divided by its length, in float32 for float16/bfloat16 losses (Keras' `ops.mean` averages
/// them in float32 and casts back, and the casts' gradients cast too).
pub fn mean_axis_backward(p: Fp, shape: &[usize], k: usize, grad: &Nd) -> Nd {
    let reduced: Vec<bool> = (0..shape.len()).map(|i| i == k).collect();
    mean_axes_backward(p, shape, &reduced, grad)
}

/// The backward of `ops.mean(x, axis=axes)` over several axes at once (`reduced[i]`: axis `i` is
/// reduced; `grad` has the kept axes' shape): as [`mean_axis_backward`], the divisor being the
/// number of elements each output averaged (`_MeanGrad`'s `input_size // output_size`).
pub fn mean_axes_backward(p: Fp, shape: &[usize], reduced: &[bool], grad: &Nd) -> Nd {
    let wide = match p.0 {
        DType::Float16 | DType::Bfloat16 => DType::Float32,
        d => d,
    };
    let n: usize = shape
        .iter()
        .zip(reduced)
        .filter_map(|(&d, &r)| r.then_some(d))
        .product();
    let kept: Vec<usize> = shape
        .iter()
        .zip(reduced)
        .map(|(&d, &r)| if r { 1 } else { d })
        .collect();
    let n = n as f64;
    Nd::new(kept, grad.data.clone())
        .broadcast_to(shape)
        .map(|x| p.r(wide.round(wide.round(x) / n)))
}

/// The gradient of the full mean (`ops.mean(x)` with no axis), as [`mean_axis_backward`].
pub fn mean_all_backward(p: Fp, shape: &[usize], grad: f64) -> Nd {
    let n: usize = shape.iter().product();
    mean_axis_backward(p, &[n], 0, &Nd::new(vec![1], vec![grad])).reshape(shape.to_vec())
}

/// Puts the gradients of a Keras loss in the answer: each one reshaped to its argument's shape
/// (undoing `squeeze_or_expand_to_same_rank`) and cast back to its dtype (the gradient of the
/// loss-dtype cast); an argument the loss does not differentiate gets zeros.
pub fn collect(
    a: &Args,
    b: &Backward,
    grads: [(&'static str, Option<Nd>); 3],
) -> Result<Gradients, CallError> {
    let mut out = Gradients::new();
    for (name, g) in grads {
        if !b.wants(name) {
            continue;
        }
        let t = a.tensor(name)?;
        match g {
            Some(g) => {
                debug_assert_eq!(g.len(), t.numel(), "{name}");
                let g = Nd::new(t.shape().to_vec(), g.data);
                out.insert(name.to_string(), g.to_tensor(t.dtype()));
            }
            None => {
                out.insert(name.to_string(), zeros_like(t));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `reduce_to` groups exactly the elements `sum_to_shape` adds (integers sum exactly in any
    /// order), for leading axes, size-1 axes and both at once.
    #[test]
    fn reduce_to_groups_as_sum_to_shape() {
        let p = Fp(DType::Float32);
        let g = Nd::new(
            vec![2, 3, 4],
            (0..24).map(|i| f64::from(i * i % 7)).collect(),
        );
        for shape in [vec![3, 4], vec![2, 1, 4], vec![1, 3, 1], vec![4], vec![]] {
            let a =
                ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&g.shape), g.data.clone()).unwrap();
            let want: Vec<f64> = sum_to_shape(a, &shape).unwrap().iter().copied().collect();
            assert_eq!(
                reduce_to(p, g.clone(), &shape).unwrap().data,
                want,
                "{shape:?}"
            );
        }
        assert!(reduce_to(p, g, &[5]).is_err());
    }

    /// A scalar weight under `mean_with_sample_weight` cancels: its gradient is the rounding
    /// residue of float32 sums, which `tf_sum`'s order must reproduce (recorded by TensorFlow in
    /// cases/mse_loss.gradients.yaml, `sample_weights/mean_with_sample_weight/sw_scalar`); the
    /// trial checks the value, this checks the shape bookkeeping of a weight that broadcasts.
    #[test]
    fn weight_gradients_keep_the_weight_shape() {
        let c = Common {
            dtype: DType::Float32,
            reduction: Reduction::MeanWithSampleWeight,
        };
        let values = Nd::new(vec![3], vec![1.0, 2.0, 3.0]);
        for w in [
            Nd::scalar(2.0),
            Nd::new(vec![3], vec![1.0, 2.0, 0.5]),
            Nd::new(vec![3, 1], vec![1.0, 2.0, 0.5]),
        ] {
            let r = reduce_weighted_backward(&values, Some(&w), None, c, &Nd::scalar(1.0)).unwrap();
            assert_eq!(r.values.shape, values.shape);
            assert_eq!(r.sample_weight.unwrap().shape, w.shape);
        }
    }
}
