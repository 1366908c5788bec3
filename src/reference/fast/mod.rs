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
//! to the output dtype once. So a float32 result is within one ulp of the exact value: the
//! remaining `f64` error is ~1e-13 relative, or below 1e-11 where a float32 loss made of
//! non-negative terms evaluates shorter `exp`/`log1p` series ([`math::exp_short`]). Float32 data
//! is read and written as `f32` ([`Elt`]), a block at a time through `f64` scratch buffers. Work
//! is split across threads with rayon in blocks, and the inner loops are branch-free so that
//! they vectorise ([`math::simd`] compiles them for AVX2+FMA as well and picks at run time).
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
use std::borrow::Cow;

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
        "cross_entropy" => cross_entropy::backward(call, wrt, &g),
        "ctc_loss" => ctc::backward(call, wrt, &g),
        _ => pointwise::backward(short, call, wrt, &g),
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

/// The elements of a float tensor as `f64` (converted from float32 storage): for the small or
/// auxiliary operands (`grad_output`, CTC's log-probabilities). The large inputs are read as
/// their storage type ([`Elt`]).
fn floats(t: &Tensor) -> Option<Cow<'_, [f64]>> {
    match t.data() {
        Data::Float(v) => Some(Cow::Borrowed(v)),
        Data::F32(v) => Some(Cow::Owned(v.iter().map(|&x| x as f64).collect())),
        Data::Int(_) => None,
    }
}

/// A float element type of tensor storage: float32 tensors store `f32`, float64 ones `f64`.
/// The kernels read blocks of it into `f64` ([`load`]), compute in `f64`, and write results
/// back rounded to it ([`Elt::put`]): float32 data is read and written at 4 bytes per element.
pub(crate) trait Elt: Copy + Send + Sync + Default + PartialEq + 'static {
    fn get(self) -> f64;
    /// `v` rounded to this type.
    fn put(v: f64) -> Self;
    /// The slice itself when the type is `f64` (no conversion needed).
    fn as_f64(s: &[Self]) -> Option<&[f64]>;
    fn as_f64_mut(s: &mut [Self]) -> Option<&mut [f64]>;
    /// The storage of a tensor of this type.
    fn of(t: &Tensor) -> Option<&[Self]>;
    fn tensor(shape: Vec<usize>, data: Vec<Self>) -> Option<Tensor>;
}

impl Elt for f32 {
    #[inline(always)]
    fn get(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn put(v: f64) -> f32 {
        v as f32
    }
    fn as_f64(_: &[f32]) -> Option<&[f64]> {
        None
    }
    fn as_f64_mut(_: &mut [f32]) -> Option<&mut [f64]> {
        None
    }
    fn of(t: &Tensor) -> Option<&[f32]> {
        match t.data() {
            Data::F32(v) => Some(v),
            _ => None,
        }
    }
    fn tensor(shape: Vec<usize>, data: Vec<f32>) -> Option<Tensor> {
        Tensor::from_f32(shape, data).ok()
    }
}

impl Elt for f64 {
    #[inline(always)]
    fn get(self) -> f64 {
        self
    }
    #[inline(always)]
    fn put(v: f64) -> f64 {
        v
    }
    fn as_f64(s: &[f64]) -> Option<&[f64]> {
        Some(s)
    }
    fn as_f64_mut(s: &mut [f64]) -> Option<&mut [f64]> {
        Some(s)
    }
    fn of(t: &Tensor) -> Option<&[f64]> {
        match t.data() {
            Data::Float(v) if t.dtype() == DType::Float64 => Some(v),
            _ => None,
        }
    }
    fn tensor(shape: Vec<usize>, data: Vec<f64>) -> Option<Tensor> {
        Tensor::from_f64(DType::Float64, shape, data).ok()
    }
}

/// Runs `$f::<X>(...)` with `X` the storage type ([`Elt`]) of a float32 or float64 dtype; `None`
/// for another dtype.
macro_rules! with_elt {
    ($dtype:expr, $f:ident($($arg:expr),*)) => {
        match $dtype {
            $crate::tensor::DType::Float32 => $f::<f32>($($arg),*),
            $crate::tensor::DType::Float64 => $f::<f64>($($arg),*),
            _ => None,
        }
    };
}
pub(crate) use with_elt;

/// `s` as `f64`: the slice itself for `f64`, else converted into `buf` (a block at a time, so
/// the copy stays in cache).
#[inline]
fn load<'b, X: Elt>(s: &'b [X], buf: &'b mut Vec<f64>) -> &'b [f64] {
    if let Some(v) = X::as_f64(s) {
        return v;
    }
    buf.clear();
    buf.extend(s.iter().map(|x| x.get()));
    buf
}

/// Runs `f` on an `f64` view of `out` and stores its values: `out` itself for `f64`, else a
/// scratch block in `buf` whose values are rounded into `out`.
#[inline]
fn store<X: Elt, R>(out: &mut [X], buf: &mut Vec<f64>, f: impl FnOnce(&mut [f64]) -> R) -> R {
    if let Some(v) = X::as_f64_mut(out) {
        return f(v);
    }
    buf.clear();
    buf.resize(out.len(), 0.0);
    let r = f(buf);
    for (o, &v) in out.iter_mut().zip(buf.iter()) {
        *o = X::put(v);
    }
    r
}

/// Scratch blocks for [`load`] and [`store`], one set per rayon task (`map_init`).
#[derive(Default)]
struct Scratch {
    a: Vec<f64>,
    b: Vec<f64>,
    out: Vec<f64>,
}

/// `n` zeros for a large result buffer, which Linux is asked to back with transparent huge
/// pages (`madvise(MADV_HUGEPAGE)`, the machine's THP mode being `madvise` by default).
///
/// Why: a 2^24-element gradient is 128 MiB, i.e. 32,768 page faults of 4 KiB, each zeroing its
/// page in the kernel, and as many pages to free afterwards. Measured with `lossconf bench` (2
/// threads): `mse_loss` forward+backward 0.113 s with 4 KiB pages, 0.061 s with 2 MiB ones;
/// `cross_entropy` (2 GiB of gradient) 1.82 s → 1.13 s. The advice is only a hint: where it is
/// refused (or off Linux) the buffer is an ordinary one, with the same contents.
pub(crate) fn zeroed<X: Elt>(n: usize) -> Vec<X> {
    let v = vec![X::default(); n];
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = n * std::mem::size_of::<X>();
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

/// A tensor of `dtype` holding `data` (rounded once, here).
fn tensor(dtype: DType, shape: Vec<usize>, data: Vec<f64>) -> Option<Tensor> {
    Tensor::from_f64(dtype, shape, data).ok()
}

/// Sizes below this run on the calling thread: spawning costs more than it saves.
const PAR_MIN: usize = 1 << 15;
