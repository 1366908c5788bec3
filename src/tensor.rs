//! Our tensor value: a dtype, a shape and row-major data.
//!
//! Every float element is kept as the `f64` that is *exactly* its value in its own dtype (float16,
//! bfloat16 and float32 values are all exactly representable in float64). Files and the wire
//! protocol write that `f64` in its shortest round-trip form, so any reader in any language that
//! parses JSON/YAML numbers as float64 and then casts to the dtype gets the very same bits back:
//! there is no double rounding anywhere. Integers and booleans are kept as `i64`.

use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Element type of a tensor, spelled as in PyTorch/NumPy (`float32`, `int64`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Float16,
    Bfloat16,
    Float32,
    Float64,
    Int32,
    Int64,
    Uint8,
    Bool,
}

impl DType {
    pub const ALL: [DType; 8] = [
        DType::Float16,
        DType::Bfloat16,
        DType::Float32,
        DType::Float64,
        DType::Int32,
        DType::Int64,
        DType::Uint8,
        DType::Bool,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DType::Float16 => "float16",
            DType::Bfloat16 => "bfloat16",
            DType::Float32 => "float32",
            DType::Float64 => "float64",
            DType::Int32 => "int32",
            DType::Int64 => "int64",
            DType::Uint8 => "uint8",
            DType::Bool => "bool",
        }
    }

    pub fn parse(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }

    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::Float16 | DType::Bfloat16 | DType::Float32 | DType::Float64
        )
    }

    /// Rounds `x` to the nearest value of this dtype (round half to even), returned as `f64`.
    ///
    /// Reference kernels compute in `f64` and call this where a framework's result depends on
    /// its working precision (clipping bounds such as `1 - 1e-7` in float32, final outputs).
    /// Integer dtypes truncate toward zero as a cast does.
    pub fn round(self, x: f64) -> f64 {
        match self {
            DType::Float64 => x,
            DType::Float32 => x as f32 as f64,
            DType::Float16 => round_binary(x, 10, -14, 15),
            DType::Bfloat16 => round_binary(x, 7, -126, 127),
            DType::Int32 => (x as i32) as f64,
            DType::Int64 => (x as i64) as f64,
            DType::Uint8 => (x as u8) as f64,
            DType::Bool => {
                if x != 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }

    /// Machine epsilon of a float dtype (distance from 1 to the next value).
    pub fn epsilon(self) -> f64 {
        match self {
            DType::Float16 => 2f64.powi(-10),
            DType::Bfloat16 => 2f64.powi(-7),
            DType::Float32 => f32::EPSILON as f64,
            _ => f64::EPSILON,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Elements of a tensor: `f32` for float32, exact `f64` values for the other float dtypes
/// (float64, and float16/bfloat16 values, which `f64` holds exactly), `i64` for integers and
/// booleans.
///
/// Why float32 has its own storage: the large calls the fast kernels serve are float32, and
/// reading 4 bytes per element instead of 8 halves their memory traffic (docs/benchmarks.md).
/// Every accessor that hands out `f64` converts, exactly.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    Float(Vec<f64>),
    Int(Vec<i64>),
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::Float(v) => v.len(),
            Data::Int(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A dense tensor value. Invariants (checked by the constructors): `data.len()` is the product
/// of `shape`, the `Data` variant matches the dtype, and float data is exactly representable in
/// the dtype.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: Data,
}

/// Why a tensor could not be built from the given parts.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorError(pub String);

impl fmt::Display for TensorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TensorError {}

fn check_len(shape: &[usize], len: usize) -> Result<(), TensorError> {
    let numel = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| TensorError(format!("shape {shape:?} is too large")))?;
    if numel != len {
        return Err(TensorError(format!(
            "shape {shape:?} holds {numel} elements but {len} were given"
        )));
    }
    Ok(())
}

impl Tensor {
    /// A float tensor; each value is rounded to `dtype` (so callers may pass wider values).
    /// Integer dtypes are accepted too: the values must then be integral.
    pub fn from_f64(
        dtype: DType,
        shape: Vec<usize>,
        data: Vec<f64>,
    ) -> Result<Tensor, TensorError> {
        check_len(&shape, data.len())?;
        if dtype.is_float() {
            // The dtype is matched once, not per element: float64 needs no pass, float32 is a
            // vectorised conversion.
            let data = match dtype {
                DType::Float64 => Data::Float(data),
                DType::Float32 => Data::F32(data.into_iter().map(|x| x as f32).collect()),
                _ => Data::Float(data.into_iter().map(|x| dtype.round(x)).collect()),
            };
            return Ok(Tensor { dtype, shape, data });
        }
        let mut ints = Vec::with_capacity(data.len());
        for x in data {
            if x.fract() != 0.0 || !x.is_finite() || x.abs() > 9.007_199_254_740_992e15 {
                return Err(TensorError(format!(
                    "{x} is not an integer value for {dtype}"
                )));
            }
            ints.push(x as i64);
        }
        Tensor::from_i64(dtype, shape, ints)
    }

    /// An integer or boolean tensor; values are range-checked against the dtype.
    pub fn from_i64(
        dtype: DType,
        shape: Vec<usize>,
        data: Vec<i64>,
    ) -> Result<Tensor, TensorError> {
        check_len(&shape, data.len())?;
        if dtype.is_float() {
            return Tensor::from_f64(dtype, shape, data.into_iter().map(|x| x as f64).collect());
        }
        let (lo, hi) = match dtype {
            DType::Int32 => (i32::MIN as i64, i32::MAX as i64),
            DType::Uint8 => (0, 255),
            DType::Bool => (0, 1),
            _ => (i64::MIN, i64::MAX),
        };
        if let Some(bad) = data.iter().find(|&&x| x < lo || x > hi) {
            return Err(TensorError(format!("{bad} is out of range for {dtype}")));
        }
        Ok(Tensor {
            dtype,
            shape,
            data: Data::Int(data),
        })
    }

    /// A 0-d tensor holding one value.
    pub fn scalar(dtype: DType, x: f64) -> Tensor {
        Tensor::from_f64(dtype, vec![], vec![x]).expect("a 0-d tensor holds one element")
    }

    /// Builds a float tensor of `dtype` from an ndarray, rounding each element.
    /// A float32 tensor.
    pub fn from_f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor, TensorError> {
        check_len(&shape, data.len())?;
        Ok(Tensor {
            dtype: DType::Float32,
            shape,
            data: Data::F32(data),
        })
    }

    pub fn from_array(dtype: DType, a: &ndarray::ArrayD<f64>) -> Tensor {
        let shape = a.shape().to_vec();
        let data = a.iter().copied().collect();
        Tensor::from_f64(dtype, shape, data).expect("ndarray shape matches its element count")
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &Data {
        &self.data
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Elements as `f64` (integers converted), row-major.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::Float(v) => v.clone(),
            Data::Int(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    /// Elements as an ndarray of `f64`.
    pub fn to_array(&self) -> ndarray::ArrayD<f64> {
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&self.shape), self.to_f64_vec())
            .expect("tensor invariant: data length is the product of the shape")
    }

    /// Integer elements; `None` for a float tensor.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            Data::Int(v) => Some(v),
            Data::F32(_) | Data::Float(_) => None,
        }
    }

    /// Short description for messages: `float32[2, 3]`.
    pub fn describe(&self) -> String {
        format!("{}{:?}", self.dtype, self.shape)
    }
}

/// Formats one float element the way files and the wire protocol write it: the shortest decimal
/// that round-trips the `f64`, or `nan`, `inf`, `-inf`.
pub fn format_float(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{x:?}")
    }
}

/// Parses the string form of a non-finite float element.
pub fn parse_special_float(s: &str) -> Option<f64> {
    match s {
        "nan" | "NaN" => Some(f64::NAN),
        "inf" | "+inf" | "Infinity" => Some(f64::INFINITY),
        "-inf" | "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

struct FloatElem(f64);

impl Serialize for FloatElem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_finite() {
            s.serialize_f64(self.0)
        } else {
            s.serialize_str(&format_float(self.0))
        }
    }
}

impl Serialize for Tensor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("dtype", &self.dtype)?;
        m.serialize_entry("shape", &self.shape)?;
        match &self.data {
            Data::F32(v) => {
                let elems: Vec<FloatElem> = v.iter().map(|&x| FloatElem(x as f64)).collect();
                m.serialize_entry("data", &elems)?;
            }
            Data::Float(v) => {
                let elems: Vec<FloatElem> = v.iter().map(|&x| FloatElem(x)).collect();
                m.serialize_entry("data", &elems)?;
            }
            Data::Int(v) => m.serialize_entry("data", v)?,
        }
        m.end()
    }
}

/// One element as read from a file or the wire, before the dtype is applied.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawElem {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensor {
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<RawElem>,
}

impl Tensor {
    fn from_raw(raw: RawTensor) -> Result<Tensor, TensorError> {
        let RawTensor { dtype, shape, data } = raw;
        if dtype.is_float() {
            let mut out = Vec::with_capacity(data.len());
            for (i, e) in data.into_iter().enumerate() {
                out.push(match e {
                    RawElem::Int(x) => x as f64,
                    RawElem::Float(x) => x,
                    RawElem::Str(s) => parse_special_float(&s).ok_or_else(|| {
                        TensorError(format!(
                            "element {i}: {s:?} is not a number (use \"nan\", \"inf\" or \"-inf\")"
                        ))
                    })?,
                    RawElem::Bool(b) => {
                        return Err(TensorError(format!(
                            "element {i}: boolean {b} in a {dtype} tensor"
                        )))
                    }
                });
            }
            Tensor::from_f64(dtype, shape, out)
        } else {
            let mut out = Vec::with_capacity(data.len());
            for (i, e) in data.into_iter().enumerate() {
                out.push(match e {
                    RawElem::Int(x) => x,
                    RawElem::Bool(b) => b as i64,
                    RawElem::Float(x) if x.fract() == 0.0 && x.abs() < 9.2e18 => x as i64,
                    RawElem::Float(x) => {
                        return Err(TensorError(format!("element {i}: {x} in a {dtype} tensor")))
                    }
                    RawElem::Str(s) => {
                        return Err(TensorError(format!(
                            "element {i}: {s:?} in a {dtype} tensor"
                        )))
                    }
                });
            }
            Tensor::from_i64(dtype, shape, out)
        }
    }
}

impl<'de> Deserialize<'de> for Tensor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tensor, D::Error> {
        let raw = RawTensor::deserialize(d)?;
        Tensor::from_raw(raw).map_err(de::Error::custom)
    }
}

/// `x` rounded to nearest-even in a binary format with `mant` stored mantissa bits and normal
/// exponents `emin..=emax` (subnormals included, overflow to infinity). `half`'s `from_f64`
/// drops the low 32 bits of the f64 before rounding, so a value just above a midpoint by less
/// than that (e.g. float32 0.2861329 for bfloat16: TF's cast gives 0.287109375, half gave
/// 0.28515625) was rounded as a tie.
fn round_binary(x: f64, mant: i32, emin: i32, emax: i32) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let a = x.abs();
    let exp = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    let ulp = 2f64.powi(exp.max(emin) - mant);
    let y = (a / ulp).round_ties_even() * ulp;
    let y = if y >= 2f64.powi(emax + 1) {
        f64::INFINITY
    } else {
        y
    };
    y.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rounding keeps the sticky bits below the f64's top 32: float32 0.2861329 lies 8.7e-8
    /// above the bfloat16 midpoint 0.2861328125, and TF's cast gives 0.287109375.
    #[test]
    fn half_rounding_is_correct_just_above_a_midpoint() {
        let x = 0.286_132_9_f32 as f64;
        assert_eq!(DType::Bfloat16.round(x), 0.287_109_375);
        assert_eq!(DType::Bfloat16.round(-x), -0.287_109_375);
        assert_eq!(DType::Bfloat16.round(0.286_132_812_5), 0.285_156_25);
        assert_eq!(DType::Float16.round(65520.0), f64::INFINITY);
        assert_eq!(DType::Float16.round(65519.0), 65504.0);
        assert_eq!(DType::Float16.round(2f64.powi(-25)), 0.0);
        assert_eq!(DType::Float16.round(3.0 * 2f64.powi(-26)), 2f64.powi(-24));
        assert_eq!(DType::Bfloat16.round(3.4e38), f64::INFINITY);
        assert!(DType::Bfloat16.round(f64::NAN).is_nan());
    }

    #[test]
    fn float32_values_round_trip_exactly_through_json_and_yaml() {
        let vals = vec![
            0.1f32 as f64,
            f32::MIN_POSITIVE as f64,
            -3.4e38f32 as f64,
            f64::NAN,
            -0.0,
            f64::INFINITY,
        ];
        let t = Tensor::from_f64(DType::Float32, vec![2, 3], vals).unwrap();
        let json = serde_json::to_string(&t).unwrap();
        let back: Tensor = serde_json::from_str(&json).unwrap();
        let yaml = serde_yaml::to_string(&t).unwrap();
        let back_yaml: Tensor = serde_yaml::from_str(&yaml).unwrap();
        for b in [back, back_yaml] {
            let (x, y) = (t.to_f64_vec(), b.to_f64_vec());
            for (a, b) in x.iter().zip(&y) {
                assert_eq!(a.to_bits(), b.to_bits(), "{a} vs {b}");
            }
        }
        assert!(json.contains("\"nan\""), "{json}");
    }

    #[test]
    fn every_float64_bit_pattern_survives_json() {
        // serde_json parses floats exactly only with its `float_roundtrip` feature; this
        // catches the 1-ULP drift without it.
        use rand::{RngCore, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let vals: Vec<f64> = (0..20_000)
            .map(|_| f64::from_bits(rng.next_u64()))
            .filter(|x| x.is_finite())
            .collect();
        let t = Tensor::from_f64(DType::Float64, vec![vals.len()], vals.clone()).unwrap();
        let back: Tensor = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        for (a, b) in vals.iter().zip(back.to_f64_vec()) {
            assert_eq!(a.to_bits(), b.to_bits(), "{a:?} came back as {b:?}");
        }
    }

    #[test]
    fn constructors_reject_inconsistent_parts() {
        assert!(Tensor::from_f64(DType::Float32, vec![2, 2], vec![1.0; 3]).is_err());
        assert!(Tensor::from_i64(DType::Uint8, vec![1], vec![256]).is_err());
        assert!(Tensor::from_f64(DType::Int64, vec![1], vec![0.5]).is_err());
        let t = Tensor::from_f64(DType::Float16, vec![1], vec![0.1]).unwrap();
        assert_eq!(t.to_f64_vec()[0], half::f16::from_f64(0.1).to_f64());
    }
}
