//! Fast paths of the reference for large float32/float64 calls (issue 7): dedicated kernels
//! that are both faster and more accurate than the general per-op kernels. A fast path answers
//! `None` when a call is outside what it handles, and the general kernel runs instead.
//!
//! What a fast path handles: well-formed calls of `torch.nn.functional.{mse_loss, l1_loss,
//! smooth_l1_loss, binary_cross_entropy, binary_cross_entropy_with_logits, kl_div,
//! cross_entropy, ctc_loss}` on float32/float64 tensors with the default or simple options (no
//! weights, no legacy `size_average`/`reduce`, same shapes and dtypes), and only finite inputs:
//! anything else (including every error) is left to the general kernels, which model PyTorch op
//! by op.
//!
//! How: every value is computed in `f64` from the exact inputs with stable formulas (log-sum-exp
//! with the maximum taken out, `softplus = max(x, 0) + log1p(e^-|x|)`), sums use independent
//! lanes within blocks and a compensated (Neumaier) sum across blocks, and the result is rounded
//! to the output dtype once, by the `Tensor` constructor. So a float32 result is within one ulp
//! of the exact value (the remaining `f64` error is ~1e-13 relative). Work is split across
//! threads with rayon in blocks, and the inner loops are branch-free so that they vectorise
//! ([`math::simd`] compiles them for AVX2+FMA as well and picks at run time).
// `v - v` is a branch-free finiteness test (NaN for ±inf/NaN), `!(a > b)` is deliberate NaN
// handling, and polynomial coefficients keep all their digits: these lints would undo them.
#![allow(
    clippy::eq_op,
    clippy::neg_cmp_op_on_partial_ord,
    clippy::excessive_precision
)]

pub mod cross_entropy;
pub mod ctc;
pub(crate) mod math;
pub mod pointwise;
#[cfg(test)]
mod tests;

use crate::backend::{Call, CallError, Gradients, Value};
use crate::tensor::{DType, Data, Tensor};

/// The loss of `call`, when a fast kernel handles it.
pub fn forward(call: &Call) -> Option<Result<Tensor, CallError>> {
    let short = call.api.strip_prefix("torch.nn.functional.")?;
    match short {
        "cross_entropy" => cross_entropy::forward(call),
        "ctc_loss" => ctc::forward(call),
        _ => pointwise::forward(short, call),
    }
    .map(Ok)
}

/// The gradients of `call`, when a fast kernel handles it. `grad_output` has the output's shape.
pub fn backward(
    call: &Call,
    wrt: &[String],
    grad_output: &Tensor,
) -> Option<Result<Gradients, CallError>> {
    let short = call.api.strip_prefix("torch.nn.functional.")?;
    if wrt.is_empty() || !matches!(grad_output.dtype(), DType::Float32 | DType::Float64) {
        return None;
    }
    let g = floats(grad_output)?;
    match short {
        "cross_entropy" => cross_entropy::backward(call, wrt, g),
        "ctc_loss" => ctc::backward(call, wrt, g),
        _ => pointwise::backward(short, call, wrt, g),
    }
    .map(Ok)
}

/// The loss and the gradients of `call` together, when a fast kernel computes both in one pass
/// over the inputs (what [`forward`] then [`backward`] answer, bit for bit, without reading a
/// large input twice or keeping it in memory twice). `grad_output` is `None` for ones; `None`
/// is also the answer when the call is outside what a fused kernel handles (more than one
/// gradient, an unreduced element-wise loss, CTC, a `grad_output` of another shape): the
/// caller then runs the forward and the backward apart.
pub fn forward_backward(
    call: &Call,
    wrt: &[String],
    grad_output: Option<&Tensor>,
) -> Option<(Tensor, Gradients)> {
    let short = call.api.strip_prefix("torch.nn.functional.")?;
    let [name] = wrt else {
        return None;
    };
    let g = match grad_output {
        None => None,
        Some(g) if matches!(g.dtype(), DType::Float32 | DType::Float64) => Some(g),
        Some(_) => return None,
    };
    match short {
        "cross_entropy" => cross_entropy::forward_backward(call, name, g),
        "ctc_loss" => None,
        _ => pointwise::forward_backward(short, call, name, g),
    }
}

/// A reduction the fast paths handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Red {
    None,
    Mean,
    Sum,
    /// `kl_div`'s `batchmean`: the sum divided by `input.size(0)`.
    BatchMean,
}

/// Whether an argument is absent or null.
fn nullish(call: &Call, name: &str) -> bool {
    matches!(call.args.get(name), None | Some(Value::Null))
}

/// Whether every argument of the call is one of `names`.
fn only(call: &Call, names: &[&str]) -> bool {
    call.args.keys().all(|k| names.contains(&k.as_str()))
}

/// The `reduction` argument when it is plain (no legacy `size_average`/`reduce`): `none`, `mean`
/// or `sum` (and `batchmean` when `batchmean` is true); `None` for anything else.
fn reduction(call: &Call, batchmean: bool) -> Option<Red> {
    if !nullish(call, "size_average") || !nullish(call, "reduce") {
        return None;
    }
    match call.args.get("reduction") {
        None => Some(Red::Mean),
        Some(Value::Str(s)) => match s.as_str() {
            "none" => Some(Red::None),
            "mean" => Some(Red::Mean),
            "sum" => Some(Red::Sum),
            "batchmean" if batchmean => Some(Red::BatchMean),
            _ => None,
        },
        _ => None,
    }
}

/// A float32/float64 tensor argument.
fn float_tensor<'a>(call: &'a Call, name: &str) -> Option<&'a Tensor> {
    match call.args.get(name) {
        Some(Value::Tensor(t)) if matches!(t.dtype(), DType::Float32 | DType::Float64) => Some(t),
        _ => None,
    }
}

/// The elements of a float tensor.
fn floats(t: &Tensor) -> Option<&[f64]> {
    match t.data() {
        Data::Float(v) => Some(v),
        Data::Int(_) => None,
    }
}

/// Rounds `v` to `dtype` in place (float32 or float64); the kernels call it on each block of a
/// gradient while the block is still in cache.
fn round_in_place(dtype: DType, v: &mut [f64]) {
    if dtype == DType::Float32 {
        for x in v {
            *x = *x as f32 as f64;
        }
    }
}

/// `n` zeros for a large result buffer, which Linux is asked to back with transparent huge
/// pages (`madvise(MADV_HUGEPAGE)`, the machine's THP mode being `madvise` by default).
///
/// Why: a 2^24-element gradient is 128 MiB, i.e. 32,768 page faults of 4 KiB, each zeroing its
/// page in the kernel, and as many pages to free afterwards. Measured with `lossconf bench` (2
/// threads): `mse_loss` forward+backward 0.113 s with 4 KiB pages, 0.061 s with 2 MiB ones;
/// `cross_entropy` (2 GiB of gradient) 1.82 s → 1.13 s. The advice is only a hint: where it is
/// refused (or off Linux) the buffer is an ordinary one, with the same contents.
pub(crate) fn zeroed(n: usize) -> Vec<f64> {
    let v = vec![0.0f64; n];
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = n * std::mem::size_of::<f64>();
        if bytes >= 2 * HUGE {
            // The whole 2 MiB pages inside the allocation: calloc's large blocks are fresh,
            // untouched mappings, so the pages are not faulted in yet.
            let first = (v.as_ptr() as usize).next_multiple_of(HUGE);
            let end = (v.as_ptr() as usize + bytes) / HUGE * HUGE;
            if end > first {
                // SAFETY: [first, end) lies inside `v`'s allocation, and MADV_HUGEPAGE changes
                // neither its contents nor its validity; a failure is ignored (it is advice).
                unsafe {
                    libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
                }
            }
        }
    }
    v
}

/// A tensor of `dtype` holding `data`, which [`round_in_place`] has rounded.
fn rounded_tensor(dtype: DType, shape: Vec<usize>, data: Vec<f64>) -> Option<Tensor> {
    Tensor::from_rounded_f64(dtype, shape, data).ok()
}

/// A tensor of `dtype` holding `data` (rounded once, here).
fn tensor(dtype: DType, shape: Vec<usize>, data: Vec<f64>) -> Option<Tensor> {
    Tensor::from_f64(dtype, shape, data).ok()
}

/// Sizes below this run on the calling thread: spawning costs more than it saves.
const PAR_MIN: usize = 1 << 15;
