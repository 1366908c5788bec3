//! Reference kernels for `tf.keras.losses.Circle` (Keras 3.15.1, `circle` in
//! `keras/src/losses/losses.py`, `build_pos_neg_masks` in `keras/src/utils/numerical_utils.py`).
//!
//! Cosine distances of the batch against itself, positive/negative pair masks from the labels
//! (cast to the loss dtype, then truncated to int32), two masked `reduce_logsumexp`s and a
//! softplus per anchor. The loss sets a Keras mask `loss > 0`, which the reduction merges into
//! the sample weights: anchors without a positive or a negative pair drop out of the mean.
//! Nothing normalises `y_pred` (Keras expects unit-norm embeddings but does not check them).
//!
//! The backward ([`circle_backward`]) follows TF's registered gradients op by op, each result
//! rounded to the loss dtype:
//!
//! - the reduction (mask and sample weight): [`Inputs::finish_backward`];
//! - `Softplus`: TF's `SoftplusGrad` kernel `g / (exp(-x) + 1)`; `Add`: `g` to both;
//! - `reduce_logsumexp` (`log(sum(exp(x - stop_gradient(max)))) + max`): `Log` gives
//!   `g * reciprocal(s)`, `Sum` broadcasts, `Exp` multiplies by its output; the `-inf` entries
//!   of the masked row have `exp = 0`, and `SelectV2` sends them an explicit 0 (so a row with
//!   no pair, whose `1 / s` is `inf`, leaks no NaN);
//! - `Mul`: `g * other` (the constant `-gamma`/`gamma` factor first, as Python evaluates
//!   `-1 * gamma * w * dists` left to right); `Maximum(x, 0)`: the gradient goes to `x` where
//!   `x >= 0` (ties included), to the constant elsewhere, NaN included; `Sub`: `-g`;
//! - the four consumers of the clipped distances add up (at most two are non-zero for any pair,
//!   so the order of TF's `AddN` cannot matter);
//! - `MatMul(y_pred, transpose(y_pred))`: `G @ y_pred` and `transpose(y_pred^T @ G)`, added.
//!   The matmuls accumulate as [`matmul_acc`] describes.
//!
//! Labels reach the loss only through a cast to int32: their gradient is zero (TF's recorded
//! gradient for float labels is 0, not None).

use super::reduction::{collect, only_known, py_float, reduce_to, Common};
use super::regression_extra::{flush_denormal, tf_softplus};
use super::Inputs;
use crate::backend::{CallError, Gradients};
use crate::reference::tf_nn::nd::{Fp, Nd};
use crate::reference::{Args, Kernel};
use crate::reference::{Backward, GradientKernel};
use crate::tensor::{DType, Tensor};

/// `(fully qualified API name, gradient kernel)` for the APIs of this module with a backward.
pub const GRADIENTS: &[(&str, GradientKernel)] = &[("tf.keras.losses.Circle", circle_backward)];

/// `(fully qualified API name, kernel)` for every API of this module.
pub const KERNELS: &[(&str, Kernel)] = &[("tf.keras.losses.Circle", circle)];

/// `tf.cast(float, int32)` on x86: NaN and out-of-range values become `i32::MIN`.
fn cast_to_int32(x: f64) -> i64 {
    if x.is_finite() && x > i32::MIN as f64 - 1.0 && x < i32::MAX as f64 + 1.0 {
        x.trunc() as i64
    } else {
        i32::MIN as i64
    }
}

/// TF's CPU `MatMul` of an `(n, k)` matrix `a` by a `(k, m)` matrix `b` (given as element
/// accessors, so transposed operands need no copy), row-major `(n, m)` result.
///
/// float16/bfloat16: the contraction accumulates in float32 and converts once to the dtype
/// (measured: 300 of 300 random float16 products up to 9x9x9 match an exact sum rounded to
/// float32 and then to float16); bfloat16 results are *truncated* from float32, not rounded
/// (300 of 300 random bfloat16 products up to 11x11x11). float64: a sequential sum (any order is far inside the float64
/// tolerance).
///
/// float32 goes through TF's custom Eigen contraction kernel (oneDNN's `sgemm`), whose order
/// was measured against TF 2.21 on random products (bit for bit on every one of 900 with
/// `n, m <= 8`, `k <= 11`, plain, `transpose_a` and `transpose_b`):
/// - one row or one column (`n == 1` or `m == 1`, a gemv): a sequential sum, each product
///   rounded. (Not reproduced: `transpose_b` with `k >= 8` and plain `m == 1` with `k >= 13`,
///   where the gemv kernel vectorises the dot product; they get the sequential sum.)
/// - otherwise: even and odd terms of the first `2 * floor(k / 2)` go to two accumulators,
///   which are added, then the last term when `k` is odd. Products are fused into the
///   accumulation (FMA), except in the last, partial block of 6 rows when `n mod 6` is 1 or 2,
///   where each product is rounded first.
///
/// The order matters beyond the float32 ulp: `gamma` (80 by default) multiplies every distance
/// before `exp`, so one ulp of a distance moves the gradient by ~1e-5 relative.
fn tf_matmul(
    p: Fp,
    (n, k, m): (usize, usize, usize),
    a: impl Fn(usize, usize) -> f64,
    b: impl Fn(usize, usize) -> f64,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(n * m);
    for i in 0..n {
        for j in 0..m {
            let term = |t: usize| (a(i, t), b(t, j));
            out.push(match p.0 {
                DType::Float32 => {
                    let fused = !(n == 1 || m == 1 || (i >= n / 6 * 6 && matches!(n % 6, 1 | 2)));
                    let madd = |acc: f32, (x, y): (f64, f64)| {
                        let (x, y) = (x as f32, y as f32);
                        if fused {
                            x.mul_add(y, acc)
                        } else {
                            acc + x * y
                        }
                    };
                    let s = if n == 1 || m == 1 {
                        (0..k).fold(0.0f32, |acc, t| madd(acc, term(t)))
                    } else {
                        let (mut even, mut odd) = (0.0f32, 0.0f32);
                        for t in (0..k / 2 * 2).step_by(2) {
                            even = madd(even, term(t));
                            odd = madd(odd, term(t + 1));
                        }
                        let s = even + odd;
                        if k % 2 == 1 {
                            madd(s, term(k - 1))
                        } else {
                            s
                        }
                    };
                    f64::from(s)
                }
                DType::Float16 | DType::Bfloat16 => {
                    let exact = crate::reference::numeric::sum((0..k).map(|t| {
                        let (x, y) = term(t);
                        x * y
                    }));
                    let wide = DType::Float32.round(exact);
                    if p.0 == DType::Bfloat16 {
                        truncate_to_bfloat16(wide)
                    } else {
                        p.r(wide)
                    }
                }
                _ => (0..k).fold(0.0, |acc, t| {
                    let (x, y) = term(t);
                    p.r(acc + p.r(x * y))
                }),
            });
        }
    }
    out
}

/// A float32 value truncated (rounded toward zero) to bfloat16, as TF's CPU bfloat16 `MatMul`
/// converts its float32 accumulator.
fn truncate_to_bfloat16(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    f64::from(f32::from_bits((x as f32).to_bits() & 0xFFFF_0000))
}

/// `matmul(e, transpose(e))` for embeddings of rank 1 (`tensordot`: a `(1, N) @ (N, 1)`
/// product, reshaped to a 0-d result) or rank 2 (`(N, N)`).
fn gram(p: Fp, e: &Nd) -> Result<Nd, CallError> {
    match e.rank() {
        1 => {
            let x = |_: usize, t: usize| e.data[t];
            let dot = tf_matmul(p, (1, e.len(), 1), x, |t, _| e.data[t]);
            Ok(Nd::scalar(dot[0]))
        }
        2 => {
            let (n, d) = (e.shape[0], e.shape[1]);
            let x = |i: usize, t: usize| e.data[i * d + t];
            let out = tf_matmul(p, (n, d, n), x, |t, j| e.data[j * d + t]);
            Ok(Nd::new(vec![n, n], out))
        }
        r => Err(CallError::shape(format!(
            "circle: y_pred must hold embeddings of rank 1 or 2, got rank {r}"
        ))),
    }
}

/// The backward of [`gram`] for `G = d loss / d gram`: `MatMul`'s gradients
/// `matmul(G, e^T, transpose_b=True)` for the left operand and
/// `transpose(matmul(e, G, transpose_a=True))` for the right one (through `Transpose`), added.
/// For rank-1 embeddings both halves are `g * e`.
fn gram_backward(p: Fp, e: &Nd, g: &Nd) -> Nd {
    if e.rank() == 1 {
        let g = g.data[0];
        return e.map(|x| {
            let h = p.r(g * x);
            p.r(h + h)
        });
    }
    let (n, d) = (e.shape[0], e.shape[1]);
    let gg = |i: usize, j: usize| g.data[i * n + j];
    let ee = |i: usize, k: usize| e.data[i * d + k];
    // (N, N) @ (N, D) and (D, N) @ (N, N).
    let left = tf_matmul(p, (n, n, d), gg, ee);
    let right = tf_matmul(p, (d, n, n), |k, t| ee(t, k), gg);
    let out = (0..n * d)
        .map(|idx| {
            let (i, k) = (idx / d, idx % d);
            p.r(left[idx] + right[k * n + i])
        })
        .collect();
    Nd::new(e.shape.clone(), out)
}

/// `tf.maximum(x, 0)`: NaN propagates.
fn relu(x: f64) -> f64 {
    if x.is_nan() {
        x
    } else {
        x.max(0.0)
    }
}

/// TF's `Maximum(x, 0)` gradient for `x`: `g` where `x >= 0` (ties included), else 0 (NaN too).
fn relu_pass(x: f64, g: f64) -> f64 {
    if x >= 0.0 {
        g
    } else {
        0.0
    }
}

/// One side (positive or negative pairs) of the loss:
/// `scores = scale * maximum((optim ± d) * mask, 0) * (delta - d)`, masked to `-inf` off the
/// mask and reduced with `reduce_logsumexp` along each row.
struct Side {
    mask: Nd,
    /// `(optim ± d) * mask`, before `maximum`.
    weight_pre: Nd,
    /// `scale * maximum(weight_pre, 0)`.
    scaled: Nd,
    /// `delta - d`.
    dists: Nd,
    /// `exp(score - max)` per entry (0 off the mask) and the row sums.
    exps: Nd,
    sums: Vec<f64>,
    /// `reduce_logsumexp` per row.
    lse: Vec<f64>,
}

impl Side {
    /// `sign` is +1 for `optim + d` (positive pairs) and -1 for `optim - d` (negative pairs).
    fn new(
        p: Fp,
        dist: &Nd,
        mask: Nd,
        optim: f64,
        sign: f64,
        scale: f64,
        delta: f64,
    ) -> Result<Side, CallError> {
        let weight_pre = dist.zip(&mask, |d, mk| p.r(p.r(optim + sign * d) * mk))?;
        let scaled = weight_pre.map(|w| p.r(scale * relu(w)));
        let dists = dist.map(|d| p.r(delta - d)).broadcast_to(&scaled.shape);
        let scores = scaled.zip(&dists, |a, b| p.r(a * b))?;
        let masked = scores.zip(&mask, |s, mk| if mk != 0.0 { s } else { f64::NEG_INFINITY })?;
        let n = masked.shape.last().copied().unwrap_or(1).max(1);
        let mut exps = Vec::with_capacity(masked.len());
        let (mut sums, mut lse) = (Vec::new(), Vec::new());
        for row in masked.data.chunks(n) {
            let raw_max = row.iter().copied().fold(f64::NEG_INFINITY, |a, b| {
                if a.is_nan() || b.is_nan() {
                    f64::NAN
                } else {
                    a.max(b)
                }
            });
            let m = if raw_max.is_finite() { raw_max } else { 0.0 };
            let e: Vec<f64> = row
                .iter()
                .map(|&x| flush_denormal(p, p.exp(p.r(x - m))))
                .collect();
            let s = p.sum(&e);
            sums.push(s);
            lse.push(p.r(p.ln(s) + m));
            exps.extend(e);
        }
        Ok(Side {
            exps: Nd::new(masked.shape.clone(), exps),
            mask,
            weight_pre,
            scaled,
            dists,
            sums,
            lse,
        })
    }

    /// Given `d loss / d lse` per row, the gradients of `optim ± d` and of `delta - d`, per
    /// pair (the shape of the masks).
    fn backward(&self, p: Fp, scale: f64, g_lse: &[f64]) -> (Nd, Nd) {
        let n = self.mask.shape.last().copied().unwrap_or(1).max(1);
        let (mut g_weight, mut g_dists) = (Vec::new(), Vec::new());
        for k in 0..self.mask.len() {
            if self.mask.data[k] == 0.0 {
                // SelectV2 sends an explicit 0 to the entries of the `-inf` branch (for a row
                // without pairs `1 / s` is inf and the product NaN); `Mul` by the mask then
                // gives the weight 0 too.
                g_weight.push(0.0);
                g_dists.push(0.0);
                continue;
            }
            let i = k / n;
            let g_log = p.r(g_lse[i] * p.r(1.0 / self.sums[i]));
            let g_score = p.r(g_log * self.exps.data[k]);
            let g_scaled = p.r(g_score * self.dists.data[k]);
            g_dists.push(p.r(g_score * self.scaled.data[k]));
            let g_w = relu_pass(self.weight_pre.data[k], p.r(g_scaled * scale));
            g_weight.push(p.r(g_w * self.mask.data[k]));
        }
        let shape = self.mask.shape.clone();
        (Nd::new(shape.clone(), g_weight), Nd::new(shape, g_dists))
    }
}

/// The forward pass, keeping what the backward needs.
struct Forward {
    /// `1 - matmul(e, transpose(e))`, before `maximum(., 0)`.
    dist_pre: Nd,
    pos: Side,
    neg: Side,
    /// `p_loss + n_loss`, the softplus argument, and the per-anchor losses.
    x: Vec<f64>,
    values: Nd,
    /// The Keras mask `loss > 0`.
    mask: Nd,
    /// `-gamma` and `gamma` in the loss dtype.
    scales: (f64, f64),
}

impl Forward {
    fn run(a: &Args, p: Fp, inp: &Inputs) -> Result<Forward, CallError> {
        let gamma = py_float(a, "gamma", 80.0)?;
        let margin = py_float(a, "margin", 0.4)?;
        let remove_diagonal = a.bool_or("remove_diagonal", true)?;
        let labels: Vec<i64> = inp.y_true.data.iter().map(|&x| cast_to_int32(x)).collect();
        let m = labels.len();
        let dist_pre = gram(p, &inp.y_pred)?.map(|x| p.r(1.0 - x));
        // Masks are (M, M) for M labels; the distances must broadcast against them.
        let pair_mask = |f: &dyn Fn(usize, usize) -> bool| {
            let data = (0..m * m).map(|k| f64::from(u8::from(f(k / m, k % m))));
            Nd::new(vec![m, m], data.collect())
        };
        let pos_mask = pair_mask(&|i, j| labels[i] == labels[j] && !(remove_diagonal && i == j));
        let neg_mask = pair_mask(&|i, j| labels[i] != labels[j]);
        let dist = dist_pre.map(relu);
        let (optim_pos, optim_neg) = (p.r(margin), p.r(1.0 + margin));
        let (delta_pos, delta_neg) = (p.r(margin), p.r(1.0 - margin));
        let scales = (p.r(-gamma), p.r(gamma));
        let pos = Side::new(p, &dist, pos_mask, optim_pos, 1.0, scales.0, delta_pos)?;
        let neg = Side::new(p, &dist, neg_mask, optim_neg, -1.0, scales.1, delta_neg)?;
        let x: Vec<f64> = pos
            .lse
            .iter()
            .zip(&neg.lse)
            .map(|(a, b)| p.r(a + b))
            .collect();
        let values = Nd::new(vec![m], x.iter().map(|&x| tf_softplus(p, x)).collect());
        let mask = values.map(|l| f64::from(u8::from(l > 0.0)));
        Ok(Forward {
            dist_pre,
            pos,
            neg,
            x,
            values,
            mask,
            scales,
        })
    }
}

fn circle(a: &Args) -> Result<Tensor, CallError> {
    only_known(a, &["gamma", "margin", "remove_diagonal"])?;
    let c = Common::read(a)?;
    let inp = Inputs::read(a, c)?;
    let f = Forward::run(a, c.fp(), &inp)?;
    inp.finish(f.values, Some(&f.mask), c)
}

fn circle_backward(a: &Args, b: &Backward) -> Result<Gradients, CallError> {
    only_known(a, &["gamma", "margin", "remove_diagonal"])?;
    let c = Common::read(a)?;
    let p = c.fp();
    let inp = Inputs::read(a, c)?;
    let f = Forward::run(a, p, &inp)?;
    let red = inp.finish_backward(&f.values, Some(&f.mask), c, b)?;
    // SoftplusGrad, then `Add` hands the same gradient to both logsumexps.
    let g_x: Vec<f64> =
        f.x.iter()
            .zip(&red.values.data)
            .map(|(&x, &g)| p.r(g / p.r(p.exp(-x) + 1.0)))
            .collect();
    let (pos_weight, pos_dists) = f.pos.backward(p, f.scales.0, &g_x);
    let (neg_weight, neg_dists) = f.neg.backward(p, f.scales.1, &g_x);
    // The four consumers of the clipped distances, each gradient summed back to the
    // distances' shape (a no-op unless they broadcast, as rank-1 embeddings' single distance
    // does): `optim_pos + d`, `optim_neg - d`, `delta_pos - d`, `delta_neg - d`.
    let shape = &f.dist_pre.shape;
    let parts = [
        reduce_to(p, pos_weight, shape)?,
        reduce_to(p, neg_weight, shape)?.map(|g| -g),
        reduce_to(p, pos_dists, shape)?.map(|g| -g),
        reduce_to(p, neg_dists, shape)?.map(|g| -g),
    ];
    // `maximum(1 - gram, 0)`, then `Sub`'s `-g` to the gram matrix.
    let g_gram: Vec<f64> = (0..f.dist_pre.len())
        .map(|k| {
            let g = parts.iter().fold(0.0, |acc, part| p.r(acc + part.data[k]));
            -relu_pass(f.dist_pre.data[k], g)
        })
        .collect();
    let g_gram = Nd::new(f.dist_pre.shape.clone(), g_gram);
    let g_pred = gram_backward(p, &inp.y_pred, &g_gram);
    collect(
        a,
        b,
        [
            ("y_true", None),
            ("y_pred", Some(g_pred)),
            ("sample_weight", red.sample_weight),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::super::focal::tests::{call, f32, kind, values};
    use super::{tf_matmul, truncate_to_bfloat16};
    use crate::backend::{ErrorKind, Value};
    use crate::reference::tf_nn::nd::Fp;
    use crate::tensor::{DType, Tensor};

    fn labels(data: &[f64]) -> Value {
        Value::Tensor(Tensor::from_f64(DType::Int64, vec![data.len()], data.to_vec()).unwrap())
    }

    fn embeddings() -> Value {
        f32(&[4, 2], &[0.6, 0.8, 0.0, 1.0, 1.0, 0.0, 0.8, -0.6])
    }

    #[test]
    fn no_positive_or_no_negative_pairs_give_zero() {
        for l in [[0.0, 1.0, 2.0, 3.0], [5.0; 4]] {
            let none = values(call(
                "Circle",
                &[
                    ("y_true", labels(&l)),
                    ("y_pred", embeddings()),
                    ("reduction", Value::Str("none".into())),
                ],
            ));
            assert_eq!(none.to_f64_vec(), vec![0.0; 4]);
            let mean = values(call(
                "Circle",
                &[("y_true", labels(&l)), ("y_pred", embeddings())],
            ));
            assert_eq!(mean.to_f64_vec(), vec![0.0]);
        }
    }

    #[test]
    fn the_mean_skips_anchors_with_zero_loss() {
        let l = labels(&[0.0, 1.0, 0.0, 2.0]);
        let none = values(call(
            "Circle",
            &[
                ("y_true", l.clone()),
                ("y_pred", embeddings()),
                ("reduction", Value::Str("none".into())),
            ],
        ))
        .to_f64_vec();
        let positive: Vec<f64> = none.iter().copied().filter(|&x| x > 0.0).collect();
        assert_eq!(positive.len(), 2);
        let mean =
            values(call("Circle", &[("y_true", l), ("y_pred", embeddings())])).to_f64_vec()[0];
        let want = positive.iter().sum::<f64>() / 2.0;
        assert!((mean - want).abs() <= 1e-5 * want, "{mean} vs {want}");
    }

    /// The gradients of `sum(loss)` (grad_output all ones) with respect to `wrt`.
    fn grads(args: &[(&str, Value)], wrt: &[&str]) -> Vec<Vec<f64>> {
        crate::reference::testing::gradients("tf.keras.losses.Circle", args, wrt)
    }

    /// Rows without a positive (or negative) pair have a `-inf` logsumexp whose backward is
    /// `0 * inf`; `SelectV2` must keep that NaN out, and labels (cast to int32) get zeros.
    #[test]
    fn anchors_without_pairs_get_zero_gradients() {
        for l in [[0.0, 1.0, 2.0, 3.0], [5.0; 4]] {
            for reduction in ["none", "sum_over_batch_size", "sum"] {
                let g = grads(
                    &[
                        ("y_true", f32(&[4], &l)),
                        ("y_pred", embeddings()),
                        ("reduction", Value::Str(reduction.into())),
                    ],
                    &["y_true", "y_pred"],
                );
                assert_eq!(g[0], vec![0.0; 4], "{l:?} {reduction}");
                assert!(
                    g[1].iter().all(|&x| x == 0.0),
                    "{l:?} {reduction}: {:?}",
                    g[1]
                );
            }
        }
        // With one positive pair (anchors 0 and 2) the embeddings do get a gradient.
        let g = grads(
            &[
                ("y_true", labels(&[0.0, 1.0, 0.0, 2.0])),
                ("y_pred", embeddings()),
            ],
            &["y_pred"],
        );
        assert!(g[0].iter().all(|x| x.is_finite()) && g[0].iter().any(|&x| x != 0.0));
    }

    /// float32 `MatMul` order, on sums where the orders disagree (worked out by hand): with
    /// terms `1e8, 1, -1e8, 1` a sequential float32 sum gives 1 (`1e8 + 1` rounds to `1e8`)
    /// while even/odd accumulators give `0 + 2 = 2`; with `1e8, 1, 1, -1e8` they give
    /// `1e8 + (1 - 1e8) = 0` where the exact sum is 2.
    #[test]
    fn float32_matmul_adds_even_and_odd_terms_apart() {
        let p = Fp(DType::Float32);
        let cases = [
            ([1e8, 1.0, -1e8, 1.0], 2.0, 1.0),
            ([1e8, 1.0, 1.0, -1e8], 0.0, 0.0),
        ];
        for (row, want, sequential) in cases {
            let out = tf_matmul(p, (2, 4, 2), |_, t| row[t], |_, _| 1.0);
            assert_eq!(out, vec![want; 4], "{row:?}");
            // One column is a gemv: sequential.
            let seq = tf_matmul(p, (2, 4, 1), |_, t| row[t], |_, _| 1.0);
            assert_eq!(seq, vec![sequential; 2], "{row:?}");
        }
    }

    /// `(1 + 2^-12)^2 = 1 + 2^-11 + 2^-24`: fused into an accumulator of -1 it leaves
    /// `2^-11 + 2^-24`; rounded first (a tie, to even) it leaves `2^-11`. Rows in a last
    /// partial block of 1 or 2 rows (of 6) round the product first.
    #[test]
    fn float32_matmul_fuses_products_by_row_block() {
        let p = Fp(DType::Float32);
        let h = 1.0 + 2f64.powi(-12);
        let (a, b) = ([1.0, 0.0, h], [-1.0, 0.0, h]);
        let (fused, rounded) = (2f64.powi(-11) + 2f64.powi(-24), 2f64.powi(-11));
        for (n, want) in [(2, vec![rounded; 2]), (3, vec![fused; 3])] {
            let out = tf_matmul(p, (n, 3, 2), |_, t| a[t], |t, _| b[t]);
            let per_row: Vec<f64> = out.chunks(2).map(|r| r[0]).collect();
            assert_eq!(per_row, want, "n = {n}");
        }
        let seven = tf_matmul(p, (7, 3, 2), |_, t| a[t], |t, _| b[t]);
        assert_eq!(seven[10], fused);
        assert_eq!(seven[12], rounded, "row 6 is alone in its block");
    }

    /// bfloat16 has 7 fraction bits: `1 + 0.75 * 2^-7` rounds to `1 + 2^-7` but truncates to 1.
    #[test]
    fn bfloat16_matmul_truncates() {
        let x = 1.0 + 0.75 * 2f64.powi(-7);
        assert_eq!(truncate_to_bfloat16(x), 1.0);
        assert_eq!(truncate_to_bfloat16(-x), -1.0);
        assert_eq!(DType::Bfloat16.round(x), 1.0 + 2f64.powi(-7));
        assert!(truncate_to_bfloat16(f64::NAN).is_nan());
    }

    #[test]
    fn label_count_must_match_the_batch() {
        let o = call(
            "Circle",
            &[
                ("y_true", labels(&[0.0, 1.0, 0.0])),
                ("y_pred", embeddings()),
            ],
        );
        assert_eq!(kind(o), ErrorKind::Shape);
    }
}
