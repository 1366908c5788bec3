//! `tf.nn.ctc_loss` (TensorFlow 2.21, dense labels), and the CTC forward (alpha) recursion in
//! log space that the PyTorch kernel shares.
//!
//! TensorFlow's dense path (`ctc_ops.ctc_loss_dense`) is plain Python over tensor ops: it applies
//! `log_softmax` to the logits, builds a state graph over the *padded* label row (a start state,
//! `S` label states and `S + 1` blank states, `S` = the padded width), and runs the backward
//! recursion in float32, normalising the state vector at every frame and adding the log of each
//! normaliser to a running sum. The final-state vector it starts from is not `log(0) = -inf` off
//! the final states but `log_0 = float32(log(1e-307)) = -706.89362`: an impossible alignment
//! therefore has a likelihood of about `exp(-706.9)` times the probability of the best partial
//! path, and its loss is a large finite number (708.11 for two uniform frames and labels [1, 1])
//! instead of inf. The same floor gives a label_length above the padded width or below 0 a large
//! finite loss. Frames at or beyond `logit_length` reset the state vector to the final-state
//! vector, so a `logit_length` above `T` acts as `T`. Labels outside `[0, C)` select nothing
//! (`one_hot` gives a zero row), which makes their log-probability 0.
//!
//! The kernel here follows that computation op by op in float32.

use super::nd::Fp;
use super::read_name;
use crate::backend::Gradients;
use crate::backend::{CallError, Value};
use crate::reference::gradient::Backward;
use crate::reference::GradientKernel;
use crate::reference::{Args, Kernel};
use crate::tensor::{DType, Tensor};

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[("tf.nn.ctc_loss", ctc_loss_backward)];

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[("tf.nn.ctc_loss", ctc_loss)];

/// `log(exp(a) + exp(b) + exp(c))` in working precision `p` with PyTorch's CPU order of
/// operations: shift by the largest term (0 if all are `-inf`), add the three exponentials left
/// to right, take the log, add the shift back.
pub(crate) fn log_add_exp3(p: Fp, a: f64, b: f64, c: f64) -> f64 {
    // `if (x > max) max = x`: a NaN never becomes the maximum but poisons the sum below.
    let mut m = a;
    if b > m {
        m = b;
    }
    if c > m {
        m = c;
    }
    if m == f64::NEG_INFINITY {
        m = 0.0;
    }
    let e = |x: f64| p.exp(p.r(x - m));
    let s = p.r(p.r(e(a) + e(b)) + e(c));
    p.r(p.ln(s) + m)
}

/// The CTC forward (alpha) recursion in log space (Graves et al. 2006, eq. 6-7).
///
/// `ext` is the extended label sequence `l'` (blank, l1, blank, l2, ..., blank), `frames >= 1`
/// the number of frames used and `emit(t, s)` the log-probability of `ext[s]` at frame `t`.
/// `alpha_0 = [emit(0, 0), emit(0, 1), -inf, ...]`; then
/// `alpha_t(s) = lse(alpha_{t-1}(s), alpha_{t-1}(s-1), alpha_{t-1}(s-2)) + emit(t, s)`, the third
/// term only when `ext[s-2] != ext[s]` (a label may skip the blank before it unless it repeats
/// the previous label). Every operation is rounded to `p`. Returns `alpha` at the last frame.
pub(crate) fn ctc_alpha(
    p: Fp,
    frames: usize,
    ext: &[i64],
    emit: impl Fn(usize, usize) -> f64,
) -> Vec<f64> {
    let n = ext.len();
    let mut alpha = vec![f64::NEG_INFINITY; n];
    if n == 0 || frames == 0 {
        return alpha;
    }
    alpha[0] = emit(0, 0);
    if n > 1 {
        alpha[1] = emit(0, 1);
    }
    let mut next = alpha.clone();
    for t in 1..frames {
        for s in 0..n {
            let a1 = alpha[s];
            let a2 = if s > 0 {
                alpha[s - 1]
            } else {
                f64::NEG_INFINITY
            };
            let a3 = if s > 1 && ext[s - 2] != ext[s] {
                alpha[s - 2]
            } else {
                f64::NEG_INFINITY
            };
            next[s] = p.r(log_add_exp3(p, a1, a2, a3) + emit(t, s));
        }
        std::mem::swap(&mut alpha, &mut next);
    }
    alpha
}

/// The extended label sequence `l'`: a blank before, between and after the labels.
pub(crate) fn extended(labels: &[i64], blank: i64) -> Vec<i64> {
    let mut ext = Vec::with_capacity(2 * labels.len() + 1);
    ext.push(blank);
    for &l in labels {
        ext.push(l);
        ext.push(blank);
    }
    ext
}

/// `reduce_logsumexp` over a slice as TensorFlow writes it: the maximum (0 when not finite) is
/// subtracted, the exponentials summed, the log taken and the maximum added back.
fn tf_lse(p: Fp, v: &[f64]) -> f64 {
    let raw_max = if v.iter().any(|x| x.is_nan()) {
        f64::NAN
    } else {
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    };
    let m = if raw_max.is_finite() { raw_max } else { 0.0 };
    let e: Vec<f64> = v.iter().map(|&x| p.exp(p.r(x - m))).collect();
    p.r(p.ln(p.sum(&e)) + m)
}

/// `log_softmax` of one row in float32: `x - max - log(sum(exp(x - max)))`.
fn log_softmax(p: Fp, x: &[f64]) -> Vec<f64> {
    let m = if x.iter().any(|v| v.is_nan()) {
        f64::NAN
    } else {
        x.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    };
    let shifted: Vec<f64> = x.iter().map(|&v| p.r(v - m)).collect();
    let e: Vec<f64> = shifted.iter().map(|&s| p.exp(s)).collect();
    let lse = p.ln(p.sum(&e));
    shifted.iter().map(|&s| p.r(s - lse)).collect()
}

/// `float32(log(float64(0) + 1e-307))`: TensorFlow's stand-in for `log(0)` in the initial and
/// final state vectors.
pub(crate) fn log_0() -> f64 {
    DType::Float32.round(1e-307f64.ln())
}

/// The state model `ctc_loss_and_grad` builds for one sequence: the final-state vector, the
/// logged transition counts and the observed state log-probabilities of every frame.
struct StateModel {
    /// Number of label states (`S + 1`, state 0 being the start); `2 * nls` states in all.
    nls: usize,
    /// Final-state log-probabilities: 0 at label state L and blank state L, log_0 elsewhere
    /// (everywhere when L is outside [0, S]).
    fin: Vec<f64>,
    /// `trans[i][j]`: log of the number of transitions i -> j.
    trans: Vec<Vec<f64>>,
    /// `obs[t][j]`: -inf for the start state, `sum(lp * one_hot(label))` for label states (0 for
    /// a label outside [0, C), NaN if any lp is infinite), `lp[0]` for blank states.
    obs: Vec<Vec<f64>>,
}

impl StateModel {
    fn new(lp: &[Vec<f64>], labels: &[i64], label_length: i64) -> StateModel {
        let p = Fp(DType::Float32);
        let s_max = labels.len();
        let nls = s_max + 1;
        let ns = 2 * nls;
        let log0 = log_0();
        let fin: Vec<f64> = (0..ns)
            .map(|i| {
                let k = (i % nls) as i64;
                if k == label_length {
                    0.0
                } else {
                    log0
                }
            })
            .collect();
        // Transitions i -> j, counted as `scatter_nd` adds duplicate indices, then logged: self
        // loops, start -> label 1 (the blank state 0 when S = 0, which `label_to_blank` also
        // adds: a weight of 2), label k -> blank k, blank k -> label k + 1, label k -> label
        // k + 1 (k >= 1) unless the labels repeat.
        let mut count = vec![vec![0.0f64; ns]; ns];
        for (i, row) in count.iter_mut().enumerate() {
            row[i] += 1.0;
        }
        count[0][1] += 1.0;
        for k in 0..nls {
            count[k][nls + k] += 1.0;
            if k + 1 < nls {
                count[nls + k][k + 1] += 1.0;
            }
            if k >= 1 && k + 1 < nls && labels[k - 1] != labels[k] {
                count[k][k + 1] += 1.0;
            }
        }
        let trans = count
            .iter()
            .map(|row| row.iter().map(|&n| p.ln(n)).collect())
            .collect();
        let obs = lp
            .iter()
            .map(|row| {
                let c = row.len();
                (0..ns)
                    .map(|j| {
                        if j == 0 {
                            f64::NEG_INFINITY
                        } else if j < nls {
                            let l = labels[j - 1];
                            let terms: Vec<f64> = (0..c)
                                .map(|k| p.r(row[k] * if k as i64 == l { 1.0 } else { 0.0 }))
                                .collect();
                            p.sum(&terms)
                        } else {
                            row[0]
                        }
                    })
                    .collect()
            })
            .collect();
        StateModel {
            nls,
            fin,
            trans,
            obs,
        }
    }

    /// `_forward_backward_log`'s backward scan: `bwd[t]` for `t` in `0..=T` (`bwd[T]` is the
    /// final-state vector) and the running sum of the normalisers. Frames at or beyond
    /// `logit_length` reset the state to the final-state vector.
    fn backward(&self, logit_length: f64) -> (Vec<Vec<f64>>, f64) {
        let p = Fp(DType::Float32);
        let ns = self.fin.len();
        let frames = self.obs.len();
        let mut bwd = vec![self.fin.clone(); frames + 1];
        let mut cum = 0.0f64;
        for t in (0..frames).rev() {
            let state = &bwd[t + 1];
            let s: Vec<f64> = (0..ns).map(|j| p.r(state[j] + self.obs[t][j])).collect();
            let mut s2: Vec<f64> = (0..ns)
                .map(|i| {
                    let v: Vec<f64> = (0..ns).map(|j| p.r(s[j] + self.trans[i][j])).collect();
                    tf_lse(p, &v)
                })
                .collect();
            let norm = tf_lse(p, &s2);
            for x in s2.iter_mut() {
                *x = p.r(*x - norm);
            }
            let mask = if (t as f64) < logit_length { 1.0 } else { 0.0 };
            cum = p.r(cum + p.r(norm * mask));
            bwd[t] = s2
                .iter()
                .zip(&self.fin)
                .map(|(&x, &f)| p.r(p.r(x * mask) + p.r(f * (1.0 - mask))))
                .collect();
        }
        (bwd, cum)
    }

    /// `_forward_backward_log`'s forward scan from the initial state (0 at the start state,
    /// log_0 elsewhere), normalised at every frame and never masked: `fwd[t]` for `t` in
    /// `1..=T` (index 0 is the initial state).
    fn forward(&self) -> Vec<Vec<f64>> {
        let p = Fp(DType::Float32);
        let ns = self.fin.len();
        let mut init = vec![log_0(); ns];
        init[0] = 0.0;
        let mut fwd = vec![init];
        for obs in &self.obs {
            let state = fwd.last().expect("non-empty");
            let mut next: Vec<f64> = (0..ns)
                .map(|i| {
                    let v: Vec<f64> = (0..ns).map(|j| p.r(state[j] + self.trans[j][i])).collect();
                    p.r(tf_lse(p, &v) + obs[i])
                })
                .collect();
            let norm = tf_lse(p, &next);
            for x in next.iter_mut() {
                *x = p.r(*x - norm);
            }
            fwd.push(next);
        }
        fwd
    }
}

/// One sequence of `ctc_loss_and_grad`'s loss: `lp[t]` are the float32 log-softmax rows of the
/// frames (all `T` of them, classes already rotated so the blank is class 0), `labels` the padded
/// row (already shifted for the blank), `label_length` and `logit_length` as given.
pub(crate) fn tf_sequence_loss(
    lp: &[Vec<f64>],
    labels: &[i64],
    label_length: i64,
    logit_length: f64,
) -> f64 {
    let p = Fp(DType::Float32);
    let (bwd, cum) = StateModel::new(lp, labels, label_length).backward(logit_length);
    -p.r(bwd[0][0] + cum)
}

/// One sequence of `ctc_loss_and_grad`'s gradient w.r.t. the (rotated) logits, before the
/// multiplication by the incoming gradient: `exp(lp) - exp(olabel)` times the frame mask, where
/// `olabel` sums (log-sum-exp) the normalised state posteriors `fwd[t + 1] + bwd[t + 1]` of the
/// states that emit each class (`_state_to_olabel`: label states through a `one_hot` of
/// `labels - 1` with `log(0)` off, so a label outside `[1, C)` or a padding 0 emits nothing;
/// every blank state for class 0). All in float32, op by op.
///
/// This is TensorFlow's own formula, not the derivative of its loss: an infeasible sequence
/// (whose loss is the large finite `-log_0` floor) still gets the posterior of the log_0-floored
/// alignments, a finite gradient; masked frames (`t >= logit_length`) get 0, except that the mask
/// multiplies, so a NaN there stays NaN.
pub(crate) fn tf_sequence_grad(
    lp: &[Vec<f64>],
    labels: &[i64],
    label_length: i64,
    logit_length: f64,
) -> Vec<Vec<f64>> {
    let p = Fp(DType::Float32);
    let model = StateModel::new(lp, labels, label_length);
    let (bwd, _) = model.backward(logit_length);
    let fwd = model.forward();
    let nls = model.nls;
    let ns = 2 * nls;
    let c = lp.first().map_or(0, |r| r.len());
    (0..lp.len())
        .map(|t| {
            let mut fb: Vec<f64> = (0..ns)
                .map(|k| p.r(fwd[t + 1][k] + bwd[t + 1][k]))
                .collect();
            let total = tf_lse(p, &fb);
            let log_mask = if (t as f64) < logit_length {
                0.0
            } else {
                f64::NEG_INFINITY
            };
            for x in fb.iter_mut() {
                *x = p.r(p.r(*x - total) + log_mask);
            }
            let mask = if log_mask == 0.0 { 1.0 } else { 0.0 };
            (0..c)
                .map(|k| {
                    let olabel = if k == 0 {
                        tf_lse(p, &fb[nls..])
                    } else {
                        let v: Vec<f64> = labels
                            .iter()
                            .enumerate()
                            .map(|(s, &l)| {
                                let off = if l - 1 == k as i64 - 1 && (1..c as i64).contains(&l) {
                                    0.0
                                } else {
                                    f64::NEG_INFINITY
                                };
                                p.r(fb[1 + s] + off)
                            })
                            .collect();
                        tf_lse(p, &v)
                    };
                    p.r(p.r(p.exp(lp[t][k]) - p.exp(olabel)) * mask)
                })
                .collect()
        })
        .collect()
}

/// The `unique` argument: only its default can cross the wire.
fn read_unique(a: &Args) -> Result<(), CallError> {
    match a.get("unique") {
        None | Some(Value::Null) => Ok(()),
        Some(v) => Err(CallError::argument(format!(
            "tf.nn.ctc_loss: 'unique' must be the (unique_y, unique_idx) tuple of tf.nn.ctc_unique_labels, which the reference cannot take; got {}",
            v.describe()
        ))),
    }
}

/// A length argument: a tensor or a list of integers (`convert_to_tensor` makes it int32).
fn read_lengths(a: &Args, name: &'static str) -> Result<(Vec<usize>, DType, Vec<f64>), CallError> {
    match a.get(name) {
        Some(Value::Tensor(t)) => Ok((t.shape().to_vec(), t.dtype(), t.to_f64_vec())),
        Some(Value::IntList(v)) => Ok((
            vec![v.len()],
            DType::Int32,
            v.iter().map(|&x| x as f64).collect(),
        )),
        Some(Value::Int(i)) => Ok((vec![], DType::Int32, vec![*i as f64])),
        None | Some(Value::Null) => Err(CallError::argument(format!(
            "Attempt to convert a value (None) with an unsupported type (<class 'NoneType'>) to a Tensor. ({name})"
        ))),
        Some(v) => Err(CallError::argument(format!(
            "tf.nn.ctc_loss: '{name}' must be a tensor or a list of integers, got {}",
            v.describe()
        ))),
    }
}

/// Python's `range(len)[start:stop]` for optional bounds, as indices.
fn py_slice(len: usize, start: Option<i64>, stop: Option<i64>) -> std::ops::Range<usize> {
    let n = len as i64;
    let norm = |x: i64| {
        if x < 0 {
            (x + n).max(0)
        } else {
            x.min(n)
        }
    };
    let lo = start.map_or(0, norm);
    let hi = stop.map_or(n, norm);
    lo as usize..hi.max(lo) as usize
}

/// Checks integer index tensors as `one_hot` does (`TI`: uint8, int8, int32, int64).
fn one_hot_index_dtype(dt: DType) -> Result<(), CallError> {
    match dt {
        DType::Uint8 | DType::Int32 | DType::Int64 => Ok(()),
        other => Err(CallError::dtype(format!(
            "Value for attr 'TI' of {} is not in the list of allowed values: uint8, int8, int32, int64",
            if other == DType::Float32 {
                "float"
            } else {
                other.name()
            }
        ))),
    }
}

/// `ctc_loss_dense` on wire values; returns the per-sequence losses in float32 (as `f64`).
pub(crate) fn ctc_loss_dense(
    labels: &Tensor,
    logits: &Tensor,
    label_length: (Vec<usize>, DType, Vec<f64>),
    logit_length: (Vec<usize>, DType, Vec<f64>),
    logits_time_major: bool,
    blank_index: i64,
) -> Result<Vec<f64>, CallError> {
    let lengths = (label_length, logit_length);
    ctc_dense(
        labels,
        logits,
        lengths,
        logits_time_major,
        blank_index,
        None,
    )
    .map(|(l, _)| l)
}

/// The label and logit lengths as [`read_lengths`] gives them.
pub(crate) type Lengths = ((Vec<usize>, DType, Vec<f64>), (Vec<usize>, DType, Vec<f64>));

/// `ctc_loss_dense` and, given `grad_loss` (one float32 value per sequence), the gradient of
/// `sum(grad_loss * loss)` w.r.t. the logits in their own layout, in float32 (as `f64`): the
/// `custom_gradient` of `compute_ctc_loss`, `reshape(grad_loss, [1, -1, 1]) * grad` with
/// [`tf_sequence_grad`], taken back through the blank rotation (`concat` of slices) and the
/// transpose. Empty when `grad_loss` is `None`.
pub(crate) fn ctc_dense(
    labels: &Tensor,
    logits: &Tensor,
    (label_length, logit_length): Lengths,
    logits_time_major: bool,
    blank_index: i64,
    grad_loss: Option<&[f64]>,
) -> Result<(Vec<f64>, Vec<f64>), CallError> {
    let p = Fp(DType::Float32);
    let shape = logits.shape().to_vec();
    if !logits_time_major && shape.len() != 3 {
        return Err(CallError::shape(format!(
            "transpose expects a vector of size {} for logits of shape {shape:?}",
            shape.len()
        )));
    }
    // `_get_dim(logits, 2)` and `_get_dim(labels, 1)` read Python shape tuples.
    if shape.len() < 3 || labels.shape().len() < 2 {
        return Err(CallError::shape("tuple index out of range"));
    }
    if shape.len() > 3 || labels.shape().len() > 2 {
        return Err(CallError::shape(format!(
            "tf.nn.ctc_loss: logits must be 3-D and labels 2-D, got {shape:?} and {:?}",
            labels.shape()
        )));
    }
    let (t_len, n, c) = if logits_time_major {
        (shape[0], shape[1], shape[2])
    } else {
        (shape[1], shape[0], shape[2])
    };
    if !logits.dtype().is_float() {
        return Err(CallError::dtype(format!(
            "Value for attr 'T' of {} is not in the list of allowed values: half, bfloat16, float, double",
            logits.dtype()
        )));
    }
    one_hot_index_dtype(labels.dtype())?;
    if logits.dtype() == DType::Float64 {
        return Err(CallError::dtype(
            "cannot compute Mul as input #1(zero-based) was expected to be a double tensor but is a float tensor",
        ));
    }
    one_hot_index_dtype(label_length.1)?;
    // `sequence_mask` casts the lengths to int32 (float lengths truncate) and compares.
    if logit_length.1 == DType::Bool {
        return Err(CallError::dtype(
            "sequence_mask: logit_length of dtype bool is not supported",
        ));
    }
    let s_max = labels.shape()[1];
    let ns = 2 * (s_max + 1);
    // Per-sequence arguments broadcast against the batch of the logits.
    let batch_of = |what: &str, shape: &[usize], want_rank: usize| -> Result<usize, CallError> {
        if shape.len() != want_rank {
            return Err(CallError::shape(format!(
                "tf.nn.ctc_loss: {what} must have rank {want_rank}, got shape {shape:?}"
            )));
        }
        let b = shape[0];
        if b != n && b != 1 {
            return Err(CallError::shape(format!(
                "Incompatible shapes: [{b},1,{ns}] vs. [{n},{ns},{ns}] ({what})"
            )));
        }
        Ok(b)
    };
    let nb_labels = batch_of("labels", labels.shape(), 2)?;
    // The final-state vector has one row per label length; `_scan` writes it into a buffer
    // shaped by the batch of the logits, so a single length does not broadcast.
    if batch_of("label_length", &label_length.0, 1)? != n {
        return Err(CallError::shape(format!(
            "The inner 2 dimensions of output.shape=[{},1,{ns}] must match the inner 2 dimensions of updates.shape=[1,{n},{ns}]",
            t_len + 1
        )));
    }
    let nb_logit_len = batch_of("logit_length", &logit_length.0, 1)?;
    if n == 0 {
        return Err(CallError::shape(
            "Indices and updates specified for empty output shape [Op:TensorScatterAdd]",
        ));
    }
    // Python slicing of the class axis around the blank.
    let b = if blank_index < 0 {
        blank_index + c as i64
    } else {
        blank_index
    };
    let cols: Vec<usize> = if b == 0 {
        (0..c).collect()
    } else {
        py_slice(c, Some(b), Some(b + 1))
            .chain(py_slice(c, None, Some(b)))
            .chain(py_slice(c, Some(b + 1), None))
            .collect()
    };
    let x = logits.to_f64_vec();
    let index = |bi: usize, t: usize, k: usize| -> usize {
        if logits_time_major {
            (t * n + bi) * c + k
        } else {
            (bi * t_len + t) * c + k
        }
    };
    let at = |bi: usize, t: usize, k: usize| -> f64 { p.r(x[index(bi, t, k)]) };
    let mut grad = if grad_loss.is_some() {
        vec![0.0; x.len()]
    } else {
        Vec::new()
    };
    let raw_labels = labels.to_f64_vec();
    let mut out = Vec::with_capacity(n);
    for bi in 0..n {
        let lp: Vec<Vec<f64>> = (0..t_len)
            .map(|t| {
                let row: Vec<f64> = cols.iter().map(|&k| at(bi, t, k)).collect();
                log_softmax(p, &row)
            })
            .collect();
        let lb = if nb_labels == 1 { 0 } else { bi };
        let row: Vec<i64> = raw_labels[lb * s_max..(lb + 1) * s_max]
            .iter()
            .map(|&l| {
                let l = l as i64;
                if b != 0 && l < b {
                    l + 1
                } else {
                    l
                }
            })
            .collect();
        let ll = label_length.2[bi] as i64;
        let gl = logit_length.2[if nb_logit_len == 1 { 0 } else { bi }].trunc();
        out.push(tf_sequence_loss(&lp, &row, ll, gl));
        if let Some(g) = grad_loss {
            let rows = tf_sequence_grad(&lp, &row, ll, gl);
            for (t, r) in rows.iter().enumerate() {
                for (&k, &v) in cols.iter().zip(r) {
                    let idx = index(bi, t, k);
                    grad[idx] = p.r(grad[idx] + p.r(g[bi] * v));
                }
            }
        }
    }
    Ok((out, grad))
}

fn ctc_loss(a: &Args) -> Result<Tensor, CallError> {
    read_name(
        a,
        &[
            "labels",
            "logits",
            "label_length",
            "logit_length",
            "logits_time_major",
            "unique",
            "blank_index",
        ],
    )?;
    let labels = a.tensor("labels")?;
    let logits = a.tensor("logits")?;
    let label_length = read_lengths(a, "label_length")?;
    let logit_length = read_lengths(a, "logit_length")?;
    let time_major = a.bool_or("logits_time_major", true)?;
    read_unique(a)?;
    let blank = a.opt_i64("blank_index", None)?.unwrap_or(0);
    let loss = ctc_loss_dense(
        labels,
        logits,
        label_length,
        logit_length,
        time_major,
        blank,
    )?;
    let n = loss.len();
    Tensor::from_f64(logits.dtype(), vec![n], loss)
        .map_err(|e| CallError::shape(format!("tf.nn.ctc_loss: {e}")))
}

/// `tf.nn.ctc_loss`'s gradient w.r.t. the logits: [`ctc_dense`]'s, with the incoming gradient
/// cast to float32 (float16/bfloat16 logits are cast to float32 by the wrapper, so their
/// gradient is cast back; float64 logits fail in the forward). `labels` and the lengths are
/// integers and have no gradient.
fn ctc_loss_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    let labels = a.tensor("labels")?;
    let logits = a.tensor("logits")?;
    let lengths = (
        read_lengths(a, "label_length")?,
        read_lengths(a, "logit_length")?,
    );
    let time_major = a.bool_or("logits_time_major", true)?;
    let blank = a.opt_i64("blank_index", None)?.unwrap_or(0);
    let g: Vec<f64> = b
        .grad_output
        .to_f64_vec()
        .iter()
        .map(|&v| DType::Float32.round(v))
        .collect();
    let (_, grad) = ctc_dense(labels, logits, lengths, time_major, blank, Some(&g))?;
    let mut out = Gradients::new();
    out.insert(
        "logits".into(),
        Tensor::from_f64(DType::Float32, logits.shape().to_vec(), grad)
            .map_err(|e| CallError::shape(e.0))?,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, Call, ErrorKind, Outcome};
    use crate::reference::Reference;

    fn t(dt: DType, shape: &[usize], data: &[f64]) -> Value {
        Value::Tensor(Tensor::from_f64(dt, shape.to_vec(), data.to_vec()).unwrap())
    }

    fn call(args: Vec<(&str, Value)>) -> Outcome {
        let call = Call {
            api: "tf.nn.ctc_loss".into(),
            args: args.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        Reference.forward(&call)
    }

    fn value(o: Outcome) -> Vec<f64> {
        match o {
            Outcome::Value(t) => t.to_f64_vec(),
            other => panic!("expected a value, got {other:?}"),
        }
    }

    /// Deterministic pseudo-random logits in [-3, 3).
    fn logits(len: usize, seed: u64) -> Vec<f64> {
        let mut s = seed ^ 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (s >> 11) as f64 / (1u64 << 53) as f64;
                DType::Float32.round(6.0 * u - 3.0)
            })
            .collect()
    }

    fn args(
        x: &[f64],
        shape: &[usize],
        labels: &[f64],
        s: usize,
        label_length: &[i64],
        logit_length: &[i64],
    ) -> Vec<(&'static str, Value)> {
        let n = label_length.len();
        vec![
            ("labels", t(DType::Int32, &[n, s], labels)),
            ("logits", t(DType::Float32, shape, x)),
            ("label_length", Value::IntList(label_length.to_vec())),
            ("logit_length", Value::IntList(logit_length.to_vec())),
        ]
    }

    /// The textbook answer: the shared alpha recursion in f64 on log_softmax(logits).
    fn textbook(x: &[f64], c: usize, frames: usize, labels: &[i64]) -> f64 {
        let p = Fp(DType::Float64);
        let rows: Vec<Vec<f64>> = x.chunks(c).map(|r| log_softmax(p, r)).collect();
        let ext = extended(labels, 0);
        let alpha = ctc_alpha(p, frames, &ext, |t, s| rows[t][ext[s] as usize]);
        let n = ext.len();
        let tail = if n > 1 {
            alpha[n - 2]
        } else {
            f64::NEG_INFINITY
        };
        -log_add_exp3(p, alpha[n - 1], tail, f64::NEG_INFINITY)
    }

    #[test]
    fn feasible_losses_equal_the_alpha_recursion() {
        // T = 12 frames of one sequence, labels with a repeat, every label length and a short
        // logit length: TensorFlow's normalised backward pass agrees with the forward pass.
        let (tn, c) = (12, 5);
        let x = logits(tn * c, 7);
        let labels = [2.0, 2.0, 4.0, 1.0];
        for len in 0..=4 {
            for frames in [12, 9] {
                let got = value(call(args(&x, &[tn, 1, c], &labels, 4, &[len], &[frames])))[0];
                let l: Vec<i64> = labels[..len as usize].iter().map(|&v| v as i64).collect();
                let want = textbook(&x, c, frames as usize, &l);
                assert!(
                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "len {len} frames {frames}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn infeasible_alignments_hit_the_log_floor_instead_of_inf() {
        // [1, 1] needs 3 frames; with 2 the loss is at least -log_0 (every path's probability
        // is at most 1) and finite. Zero frames give exactly -log_0.
        let x = logits(3 * 3, 8);
        for (frames, exact) in [(2, false), (1, false), (0, true)] {
            let got = value(call(args(&x, &[3, 1, 3], &[1.0, 1.0], 2, &[2], &[frames])))[0];
            assert!(got.is_finite() && got >= -log_0(), "{frames}: {got}");
            if exact {
                assert_eq!(got, -log_0());
            }
        }
        // A label length past the padded width leaves no final state either.
        let got = value(call(args(&x, &[3, 1, 3], &[1.0, 2.0], 2, &[3], &[3])))[0];
        assert!(got.is_finite() && got >= -log_0());
    }

    #[test]
    fn blank_index_rotates_classes() {
        // Moving the blank from class 0 to class 2 (and relabelling) leaves the loss unchanged;
        // -1 means C - 1.
        let (tn, c) = (6, 3);
        let x = logits(tn * 2 * c, 9);
        let base = value(call(args(
            &x,
            &[tn, 2, c],
            &[1.0, 2.0, 2.0, 0.0],
            2,
            &[2, 1],
            &[6, 5],
        )));
        // Class k -> k - 1 for k >= 1, blank 0 -> 2.
        let perm = |row: &[f64]| vec![row[1], row[2], row[0]];
        let moved: Vec<f64> = x.chunks(c).flat_map(perm).collect();
        for blank in [2, -1] {
            let mut a = args(
                &moved,
                &[tn, 2, c],
                &[0.0, 1.0, 1.0, 0.0],
                2,
                &[2, 1],
                &[6, 5],
            );
            a.push(("blank_index", Value::Int(blank)));
            let got = value(call(a));
            for (g, b) in got.iter().zip(&base) {
                assert!((g - b).abs() <= 1e-5 * b.abs(), "{g} vs {b}");
            }
        }
    }

    #[test]
    fn dtypes_and_shapes() {
        let x = logits(3 * 2 * 3, 10);
        let mut a = args(&x, &[3, 2, 3], &[1.0, 2.0, 1.0, 0.0], 2, &[2, 1], &[3, 3]);
        a[1].1 = t(DType::Float64, &[3, 2, 3], &x);
        assert!(matches!(call(a.clone()), Outcome::Error(e) if e.kind == ErrorKind::Dtype));
        a[1].1 = t(DType::Float16, &[3, 2, 3], &x);
        match call(a.clone()) {
            Outcome::Value(v) => {
                assert_eq!((v.dtype(), v.shape()), (DType::Float16, &[2usize][..]))
            }
            other => panic!("{other:?}"),
        }
        a[2].1 = Value::IntList(vec![2, 1, 1]);
        assert!(matches!(call(a.clone()), Outcome::Error(e) if e.kind == ErrorKind::Shape));
        a[0].1 = t(DType::Int32, &[2], &[1.0, 2.0]);
        assert!(matches!(call(a), Outcome::Error(e) if e.kind == ErrorKind::Shape));
    }

    fn grad_of(args: Vec<(&str, Value)>, g: &[f64]) -> Vec<f64> {
        let call = Call {
            api: "tf.nn.ctc_loss".into(),
            args: args.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        let go = Tensor::from_f64(DType::Float32, vec![g.len()], g.to_vec()).unwrap();
        match Reference.backward(&call, &["logits".to_string()], Some(&go)) {
            Outcome::Value(mut m) => m.remove("logits").unwrap().to_f64_vec(),
            other => panic!("expected gradients, got {other:?}"),
        }
    }

    #[test]
    fn feasible_gradient_is_the_derivative_of_the_loss() {
        // TensorFlow's posterior formula against central differences of the forward, for a
        // batch-major pair with a repeat, a blank_index of -1 and a short logit length (whose
        // masked frames get exactly 0).
        let (n, tn, c) = (2, 5, 4);
        let x = logits(n * tn * c, 11);
        let labels = [1.0, 1.0, 2.0, 0.0];
        let make = |x: &[f64]| {
            let mut a = args(x, &[n, tn, c], &labels, 2, &[2, 1], &[5, 4]);
            a.push(("logits_time_major", Value::Bool(false)));
            a.push(("blank_index", Value::Int(-1)));
            a
        };
        let g = [0.5, -1.0];
        let grad = grad_of(make(&x), &g);
        let loss = |x: &[f64]| -> f64 {
            let v = value(call(make(x)));
            v.iter().zip(&g).map(|(l, g)| l * g).sum()
        };
        for (i, &want) in grad.iter().enumerate() {
            let (b, t) = (i / (tn * c), (i / c) % tn);
            if b == 1 && t >= 4 {
                assert_eq!(want, 0.0, "masked frame {i}");
                continue;
            }
            let h = 1.0 / 64.0;
            let (mut up, mut down) = (x.clone(), x.clone());
            up[i] += h;
            down[i] -= h;
            let fd = (loss(&up) - loss(&down)) / (2.0 * h);
            assert!((fd - want).abs() <= 2e-3, "element {i}: {want} vs {fd}");
        }
    }
}
