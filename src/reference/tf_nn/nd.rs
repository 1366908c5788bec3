//! Small dense-array helpers shared by the TensorFlow and Keras kernels: a flat row-major array
//! with its shape, NumPy broadcasting, reductions along one axis, and per-operation rounding to a
//! working dtype.
//!
//! TensorFlow evaluates every elementwise op in the tensor's dtype, so a float32 loss such as
//! `relu(x) - x * z + log1p(exp(-|x|))` rounds after each op; with `x = 1e4` the float32 product
//! alone moves the answer by far more than the comparison tolerance. Kernels therefore round
//! after each op ([`Fp::r`]) rather than once at the end.

use crate::backend::CallError;
use crate::reference::numeric;
use crate::tensor::{DType, Tensor};

/// A dense row-major array of `f64` with its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Nd {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Nd {
    pub fn new(shape: Vec<usize>, data: Vec<f64>) -> Nd {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Nd { shape, data }
    }

    pub fn of(t: &Tensor) -> Nd {
        Nd::new(t.shape().to_vec(), t.to_f64_vec())
    }

    /// The tensor's values cast to `dt` (as `tf.cast` does: integers and booleans convert, wider
    /// floats round).
    pub fn cast(t: &Tensor, dt: DType) -> Nd {
        Nd::of(t).map(|x| dt.round(x))
    }

    pub fn scalar(x: f64) -> Nd {
        Nd::new(vec![], vec![x])
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn map(&self, f: impl Fn(f64) -> f64) -> Nd {
        Nd::new(
            self.shape.clone(),
            self.data.iter().map(|&x| f(x)).collect(),
        )
    }

    pub fn reshape(self, shape: Vec<usize>) -> Nd {
        Nd::new(shape, self.data)
    }

    /// Drops the last axis, which must have size 1.
    pub fn squeeze_last(self) -> Nd {
        let mut shape = self.shape;
        debug_assert_eq!(shape.last(), Some(&1));
        shape.pop();
        Nd::new(shape, self.data)
    }

    /// Inserts an axis of size 1 at `axis` (in `0..=rank`).
    pub fn expand(self, axis: usize) -> Nd {
        let mut shape = self.shape;
        shape.insert(axis, 1);
        Nd::new(shape, self.data)
    }

    /// The values broadcast to `shape` (which must be a broadcast of this array's shape).
    pub fn broadcast_to(&self, shape: &[usize]) -> Nd {
        if self.shape == shape {
            return self.clone();
        }
        let a = ndarray::ArrayViewD::from_shape(ndarray::IxDyn(&self.shape), &self.data)
            .expect("Nd invariant: data length is the product of the shape");
        let b = a
            .broadcast(ndarray::IxDyn(shape))
            .expect("broadcast_to: shapes were checked");
        Nd::new(shape.to_vec(), b.iter().copied().collect())
    }

    /// Elementwise `f(a, b)` with NumPy broadcasting; a `shape` error if the shapes do not
    /// broadcast (TensorFlow's "Incompatible shapes").
    pub fn zip(&self, other: &Nd, f: impl Fn(f64, f64) -> f64) -> Result<Nd, CallError> {
        let shape = broadcast_shapes(&self.shape, &other.shape).ok_or_else(|| {
            CallError::shape(format!(
                "Incompatible shapes: {:?} vs. {:?}",
                self.shape, other.shape
            ))
        })?;
        let a = self.broadcast_to(&shape);
        let b = other.broadcast_to(&shape);
        let data = a.data.iter().zip(&b.data).map(|(&x, &y)| f(x, y)).collect();
        Ok(Nd::new(shape, data))
    }

    /// Applies `f` to each 1-D fibre along `axis` (in `0..rank`), giving an array without that
    /// axis.
    pub fn reduce_axis(&self, axis: usize, f: impl Fn(&[f64]) -> f64) -> Nd {
        let (outer, n, inner) = split(&self.shape, axis);
        let mut out = Vec::with_capacity(outer * inner);
        let mut fibre = Vec::with_capacity(n);
        for o in 0..outer {
            for i in 0..inner {
                fibre.clear();
                fibre.extend((0..n).map(|j| self.data[(o * n + j) * inner + i]));
                out.push(f(&fibre));
            }
        }
        let mut shape = self.shape.clone();
        shape.remove(axis);
        Nd::new(shape, out)
    }

    /// Applies `f` to each 1-D fibre along `axis`, replacing it by `f`'s output of equal length.
    pub fn map_axis(&self, axis: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> Nd {
        let (outer, n, inner) = split(&self.shape, axis);
        let mut out = vec![0.0; self.data.len()];
        let mut fibre = Vec::with_capacity(n);
        for o in 0..outer {
            for i in 0..inner {
                fibre.clear();
                fibre.extend((0..n).map(|j| self.data[(o * n + j) * inner + i]));
                for (j, y) in f(&fibre).into_iter().enumerate() {
                    out[(o * n + j) * inner + i] = y;
                }
            }
        }
        Nd::new(self.shape.clone(), out)
    }

    /// Moves `axis` to the end (TensorFlow's transpose before a last-axis op).
    pub fn move_axis_to_end(&self, axis: usize) -> Nd {
        let r = self.rank();
        if axis + 1 == r {
            return self.clone();
        }
        let a = ndarray::ArrayViewD::from_shape(ndarray::IxDyn(&self.shape), &self.data)
            .expect("Nd invariant: data length is the product of the shape");
        let perm: Vec<usize> = (0..r).filter(|&i| i != axis).chain([axis]).collect();
        let t = a.permuted_axes(ndarray::IxDyn(&perm));
        Nd::new(t.shape().to_vec(), t.iter().copied().collect())
    }

    pub fn to_tensor(&self, dt: DType) -> Tensor {
        Tensor::from_f64(dt, self.shape.clone(), self.data.clone())
            .expect("Nd invariant: data length is the product of the shape")
    }
}

fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// NumPy broadcasting of two shapes; `None` when they do not broadcast.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// A Python-style axis (negative counts from the end) as an index in `0..rank`.
pub fn canonical_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// Arithmetic in a working dtype: every result is rounded to it, as TensorFlow's kernels do.
#[derive(Clone, Copy, Debug)]
pub struct Fp(pub DType);

impl Fp {
    /// Rounds to the working dtype.
    pub fn r(self, x: f64) -> f64 {
        self.0.round(x)
    }

    /// `reduce_sum` in the working dtype.
    ///
    /// float32/float64: computed exactly and rounded once (TensorFlow's tree sums land within
    /// an ulp or two of this for the non-negative terms losses produce). bfloat16: accumulated
    /// in float32, rounded once. float16: Eigen accumulates in the dtype itself, which moves the
    /// result by several of its coarse ulps, so we follow its inner-most reducer: 8-lane packets added lane-wise with rounding,
    /// the tail added one by one with rounding, the packet lanes summed in float32 and rounded
    /// once, then the two parts added. Measured to reproduce TensorFlow 2.21 bit for bit up to
    /// 33 terms; longer sums may differ by an ulp.
    pub fn sum(self, xs: &[f64]) -> f64 {
        match self.0 {
            // TF's reductions cast bfloat16 to float32, sum and round once (measured against TF
            // 2.21: 1,210 random vectors of 1 to 300 terms, all bit-identical); float16 sums
            // in 8-lane half packets as below.
            DType::Bfloat16 => self.r(Fp(DType::Float32).sum(xs)),
            DType::Float16 => {
                const LANES: usize = 8;
                let body = xs.len() / LANES * LANES;
                let mut lanes = [0.0f64; LANES];
                for chunk in xs[..body].chunks(LANES) {
                    for (l, &x) in lanes.iter_mut().zip(chunk) {
                        *l = self.r(*l + x);
                    }
                }
                let tail = xs[body..].iter().fold(0.0, |acc, &x| self.r(acc + x));
                let packet = self.r(DType::Float32.round(lanes.iter().sum::<f64>()));
                self.r(tail + packet)
            }
            _ => self.r(numeric::sum(xs.iter().copied())),
        }
    }

    /// `reduce_mean`; float16 and bfloat16 are averaged in float32 as Keras' `ops.mean` does.
    pub fn mean(self, xs: &[f64]) -> f64 {
        let wide = match self.0 {
            DType::Float16 | DType::Bfloat16 => DType::Float32,
            d => d,
        };
        let s = wide.round(numeric::sum(xs.iter().copied()));
        self.r(wide.round(s / xs.len() as f64))
    }

    pub fn ln(self, x: f64) -> f64 {
        self.r(x.ln())
    }

    pub fn exp(self, x: f64) -> f64 {
        self.r(x.exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shapes(&[2, 3], &[3]), Some(vec![2, 3]));
        assert_eq!(broadcast_shapes(&[2, 1], &[1, 4]), Some(vec![2, 4]));
        assert_eq!(broadcast_shapes(&[2], &[3]), None);
        assert_eq!(broadcast_shapes(&[], &[0]), Some(vec![0]));
    }

    #[test]
    fn axis_helpers_agree_with_a_transpose() {
        let a = Nd::new(vec![2, 3, 2], (0..12).map(f64::from).collect());
        let moved = a.move_axis_to_end(1);
        assert_eq!(moved.shape, vec![2, 2, 3]);
        let direct = a.reduce_axis(1, |f| f[0] + 2.0 * f[2]);
        let via_end = moved.reduce_axis(2, |f| f[0] + 2.0 * f[2]);
        assert_eq!(direct, via_end);
        assert_eq!(canonical_axis(-1, 3), Some(2));
        assert_eq!(canonical_axis(3, 3), None);
        assert_eq!(canonical_axis(-4, 3), None);
    }
}
