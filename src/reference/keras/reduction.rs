//! What every Keras loss shares: constructor options (`reduction`, `name`, `dtype`), the loss
//! dtype, rank alignment (`squeeze_or_expand_to_same_rank`) and `reduce_weighted_values` with
//! sample weights and masks (Keras 3.15.1, `keras/src/losses/loss.py`).

use crate::backend::{CallError, Value};
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
