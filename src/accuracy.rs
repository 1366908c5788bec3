//! Accuracy cases (issue 7): large or ill-conditioned loss calls whose **exact** value
//! `tools/exact.py` computed with arbitrary precision, and the ULP distance of an answer to it.
//!
//! `accuracy/cases.yaml` holds the cases; a tensor argument is a [`Recipe`] that both this module
//! and `tools/recipes.py` materialise bit for bit (counter-based splitmix64 draws, correctly
//! rounded IEEE operations only). `accuracy/expected.yaml`, written by `tools/exact.py` only,
//! holds per case the exact value (a 60-digit decimal and a double-double), what PyTorch and
//! TensorFlow answered, their errors in ULPs, and a digest of every materialised input: a recipe
//! that drifts on either side fails its check rather than being measured against another
//! problem's exact value. Nothing here computes an expected value.
//!
//! ULPs are those of the output dtype at the exact value (docs/accuracy.md):
//! `|actual - exact| / ulp(exact)`, `ulp(x) = 2^(max(floor(log2 |x|), emin) - p + 1)`.

use crate::backend::{Backend, Call, Outcome, Value};
use crate::tensor::{format_float, DType, Tensor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the cases live, relative to the crate root.
pub const CASES_FILE: &str = "accuracy/cases.yaml";
/// Where `tools/exact.py` writes the exact values, relative to the crate root.
pub const EXPECTED_FILE: &str = "accuracy/expected.yaml";
pub const CASES_FORMAT: &str = "lossconf-accuracy-cases/1";
pub const EXPECTED_FORMAT: &str = "lossconf-accuracy-expected/1";
/// A backend passes an accuracy case when it is at most this many ULPs from the exact value.
pub const MAX_ULPS: f64 = 1.0;
const REGENERATE: &str = "run `tools/exact.py` to recompute accuracy/expected.yaml";

// ---------------------------------------------------------------------------------------------
// Recipes

/// How a tensor argument is made. Every draw is `splitmix64(seed * 2^32 + i)` for element `i`
/// (row-major); see docs/accuracy.md.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "recipe", rename_all = "snake_case", deny_unknown_fields)]
pub enum Recipe {
    /// `low + (high - low) * u` in float64, `u = (r >> 11) * 2^-53`, then rounded to `dtype`.
    Uniform {
        seed: u32,
        dtype: DType,
        shape: Vec<usize>,
        low: f64,
        high: f64,
    },
    /// `start + step * (r mod count)` in float64, then rounded to `dtype`.
    Grid {
        seed: u32,
        dtype: DType,
        shape: Vec<usize>,
        start: f64,
        step: f64,
        count: u64,
    },
    /// `values[r mod len]`; every value must be exact in `dtype`. Two arguments with the same
    /// seed, shape and number of values draw the same index at every position.
    Choice {
        seed: u32,
        dtype: DType,
        shape: Vec<usize>,
        values: Vec<f64>,
    },
    /// `low + (r mod (high - low))`, an integer dtype.
    Integers {
        seed: u32,
        dtype: DType,
        shape: Vec<usize>,
        low: i64,
        high: i64,
    },
    /// Every element `value`.
    Full {
        dtype: DType,
        shape: Vec<usize>,
        value: f64,
    },
    /// `of + plus` in float64, rounded to the dtype of the argument `of`; `plus` is a float64
    /// recipe of the same shape.
    Offset { of: String, plus: Box<Recipe> },
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 finaliser.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Draw `i` of a recipe with this seed: `splitmix64(seed * 2^32 + i)`.
pub fn draw(seed: u32, i: u64) -> u64 {
    mix(((seed as u64) << 32).wrapping_add(i).wrapping_add(GOLDEN))
}

fn numel(shape: &[usize]) -> Result<usize, String> {
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    if n as u64 >= 1 << 32 {
        return Err(format!("shape {shape:?}: at most 2^32 elements"));
    }
    Ok(n)
}

fn float_dtype(dtype: DType) -> Result<DType, String> {
    match dtype {
        DType::Float32 | DType::Float64 => Ok(dtype),
        _ => Err(format!(
            "dtype {dtype}: a float recipe makes float32 or float64"
        )),
    }
}

impl Recipe {
    /// The tensor this recipe makes; `done` holds the arguments already made (for `offset`).
    pub fn materialise(&self, done: &BTreeMap<String, Tensor>) -> Result<Tensor, String> {
        let bad = |e: crate::tensor::TensorError| e.0;
        match self {
            Recipe::Uniform {
                seed,
                dtype,
                shape,
                low,
                high,
            } => {
                let dtype = float_dtype(*dtype)?;
                let width = high - low;
                let data = (0..numel(shape)? as u64)
                    .map(|i| {
                        let u = (draw(*seed, i) >> 11) as f64 * 2f64.powi(-53);
                        dtype.round(low + width * u)
                    })
                    .collect();
                Tensor::from_f64(dtype, shape.clone(), data).map_err(bad)
            }
            Recipe::Grid {
                seed,
                dtype,
                shape,
                start,
                step,
                count,
            } => {
                let dtype = float_dtype(*dtype)?;
                if *count == 0 {
                    return Err("grid: count must be positive".into());
                }
                let data = (0..numel(shape)? as u64)
                    .map(|i| dtype.round(start + step * (draw(*seed, i) % count) as f64))
                    .collect();
                Tensor::from_f64(dtype, shape.clone(), data).map_err(bad)
            }
            Recipe::Choice {
                seed,
                dtype,
                shape,
                values,
            } => {
                let dtype = float_dtype(*dtype)?;
                if values.is_empty() {
                    return Err("choice: values must not be empty".into());
                }
                if let Some(v) = values.iter().find(|&&v| dtype.round(v) != v) {
                    return Err(format!("choice: value {v} is not exact in {dtype}"));
                }
                let len = values.len() as u64;
                let data = (0..numel(shape)? as u64)
                    .map(|i| values[(draw(*seed, i) % len) as usize])
                    .collect();
                Tensor::from_f64(dtype, shape.clone(), data).map_err(bad)
            }
            Recipe::Integers {
                seed,
                dtype,
                shape,
                low,
                high,
            } => {
                if dtype.is_float() || high <= low {
                    return Err("integers: an integer dtype and low < high".into());
                }
                let span = (high - low) as u64;
                let data = (0..numel(shape)? as u64)
                    .map(|i| low + (draw(*seed, i) % span) as i64)
                    .collect();
                Tensor::from_i64(*dtype, shape.clone(), data).map_err(bad)
            }
            Recipe::Full {
                dtype,
                shape,
                value,
            } => Tensor::from_f64(*dtype, shape.clone(), vec![*value; numel(shape)?]).map_err(bad),
            Recipe::Offset { of, plus } => {
                let base = done.get(of).ok_or_else(|| {
                    format!("offset: {of:?} is not a recipe argument of this case")
                })?;
                let delta = plus.materialise(done)?;
                if delta.dtype() != DType::Float64 || delta.shape() != base.shape() {
                    return Err(format!(
                        "offset: `plus` must be a float64 recipe of shape {:?}, got {}",
                        base.shape(),
                        delta.describe()
                    ));
                }
                let data = base
                    .to_f64_vec()
                    .into_iter()
                    .zip(delta.to_f64_vec())
                    .map(|(a, b)| a + b)
                    .collect();
                Tensor::from_f64(base.dtype(), base.shape().to_vec(), data).map_err(bad)
            }
        }
    }
}

/// Order-sensitive hash of a tensor's elements, 16 hex digits, as `tools/recipes.py` computes
/// it: `sum_i mix(bits_i + mix(i + golden))` mod 2^64, `bits_i` the float64 bits of a float
/// element or the two's complement of an integer one.
pub fn digest(t: &Tensor) -> String {
    let bits: Box<dyn Iterator<Item = u64>> = match t.data() {
        crate::tensor::Data::F32(v) => Box::new(v.iter().map(|&x| (x as f64).to_bits())),
        crate::tensor::Data::Float(v) => Box::new(v.iter().map(|x| x.to_bits())),
        crate::tensor::Data::Int(v) => Box::new(v.iter().map(|&x| x as u64)),
    };
    let total = bits.enumerate().fold(0u64, |acc, (i, b)| {
        acc.wrapping_add(mix(b.wrapping_add(mix((i as u64).wrapping_add(GOLDEN)))))
    });
    format!("{total:016x}")
}

// ---------------------------------------------------------------------------------------------
// Files

/// One argument of an accuracy case: a recipe or a plain option value.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    Recipe(Recipe),
    Value(Value),
}

/// One accuracy case of `accuracy/cases.yaml`.
#[derive(Clone, Debug)]
pub struct AccuracyCase {
    pub name: String,
    pub api: String,
    /// What the case separates (careful vs naive code).
    pub why: String,
    /// The TensorFlow expression with the same math, if any.
    pub tensorflow: Option<String>,
    pub args: BTreeMap<String, Arg>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCases {
    format: String,
    cases: Vec<RawCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    api: String,
    why: String,
    #[serde(default)]
    tensorflow: Option<String>,
    args: BTreeMap<String, serde_yaml::Value>,
}

/// A float in a file: a number, or `nan`, `inf`, `-inf`.
fn de_float<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum F {
        N(f64),
        S(String),
    }
    match Option::<F>::deserialize(d)? {
        None => Ok(None),
        Some(F::N(x)) => Ok(Some(x)),
        Some(F::S(s)) => crate::tensor::parse_special_float(&s)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a number"))),
    }
}

/// A framework's answer and its error, as `tools/exact.py` recorded them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameworkAnswer {
    /// The TensorFlow expression evaluated (absent for PyTorch: the case's own API).
    #[serde(default)]
    pub expr: Option<String>,
    #[serde(deserialize_with = "de_float")]
    pub value: Option<f64>,
    #[serde(default, deserialize_with = "de_float")]
    pub ulps: Option<f64>,
    /// The exact value of this framework's own math, when it differs from the API's.
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

/// The exact value of one case and the frameworks' answers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedEntry {
    pub api: String,
    /// The case's non-recipe arguments, copied: a changed option makes the entry stale.
    pub options: BTreeMap<String, Value>,
    /// Digest of every materialised tensor argument, by name.
    pub inputs: BTreeMap<String, String>,
    pub elements: u64,
    /// The output dtype; ULPs are this dtype's.
    pub dtype: DType,
    /// The exact value, 60 significant digits.
    pub exact: String,
    /// `exact_hi + exact_lo` is the exact value to about 106 bits.
    pub exact_hi: f64,
    pub exact_lo: f64,
    /// The exact value correctly rounded to `dtype`.
    pub exact_rounded: f64,
    /// How the exact value was computed.
    pub method: String,
    pub torch: FrameworkAnswer,
    pub tensorflow: Option<FrameworkAnswer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpected {
    format: String,
    versions: BTreeMap<String, Option<String>>,
    settings: BTreeMap<String, serde_yaml::Value>,
    cases: BTreeMap<String, ExpectedEntry>,
}

/// Both files, joined: every case with its exact value (or why it has none).
#[derive(Clone, Debug)]
pub struct Suite {
    pub checks: Vec<(AccuracyCase, Result<ExpectedEntry, String>)>,
    /// Framework and library versions `tools/exact.py` ran with.
    pub versions: BTreeMap<String, Option<String>>,
    /// Thread counts and precision `tools/exact.py` used.
    pub settings: BTreeMap<String, serde_yaml::Value>,
}

fn parse_yaml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
        .map_err(|e| format!("{}: field `{}`: {}", path.display(), e.path(), e.inner()))
}

fn parse_case(path: &Path, raw: RawCase) -> Result<AccuracyCase, String> {
    let mut args = BTreeMap::new();
    for (k, v) in raw.args {
        let field = format!("{}: case {}: field `args.{k}`", path.display(), raw.name);
        let is_recipe = matches!(&v, serde_yaml::Value::Mapping(m) if m.contains_key("recipe"));
        let arg = if is_recipe {
            Arg::Recipe(
                serde_path_to_error::deserialize(v)
                    .map_err(|e| format!("{field}.{}: {}", e.path(), e.inner()))?,
            )
        } else {
            Arg::Value(Value::deserialize(v).map_err(|e| format!("{field}: {e}"))?)
        };
        args.insert(k, arg);
    }
    Ok(AccuracyCase {
        name: raw.name,
        api: raw.api,
        why: raw.why,
        tensorflow: raw.tensorflow,
        args,
    })
}

/// Loads `accuracy/cases.yaml` and `accuracy/expected.yaml` under `root`.
pub fn load(root: &Path) -> Result<Suite, String> {
    let read = |rel: &str| -> Result<(PathBuf, String), String> {
        let p = root.join(rel);
        std::fs::read_to_string(&p)
            .map(|t| (p.clone(), t))
            .map_err(|e| format!("{}: cannot read: {e}", p.display()))
    };
    let (cases_path, text) = read(CASES_FILE)?;
    let raw: RawCases = parse_yaml(&cases_path, &text)?;
    if raw.format != CASES_FORMAT {
        return Err(format!(
            "{}: field `format`: expected {CASES_FORMAT}, found {}",
            cases_path.display(),
            raw.format
        ));
    }
    let mut cases = Vec::new();
    for c in raw.cases {
        if cases.iter().any(|x: &AccuracyCase| x.name == c.name) {
            return Err(format!(
                "{}: case {} appears twice",
                cases_path.display(),
                c.name
            ));
        }
        cases.push(parse_case(&cases_path, c)?);
    }
    let (exp_path, text) = read(EXPECTED_FILE).map_err(|e| format!("{e}; {REGENERATE}"))?;
    let expected: RawExpected = parse_yaml(&exp_path, &text)?;
    if expected.format != EXPECTED_FORMAT {
        return Err(format!(
            "{}: field `format`: expected {EXPECTED_FORMAT}, found {}",
            exp_path.display(),
            expected.format
        ));
    }
    let mut checks = Vec::new();
    for c in cases {
        let e = match expected.cases.get(&c.name) {
            None => Err(format!(
                "{EXPECTED_FILE} has no entry for this case: {REGENERATE}"
            )),
            Some(e) => consistent(&c, e).map(|()| e.clone()),
        };
        checks.push((c, e));
    }
    Ok(Suite {
        checks,
        versions: expected.versions,
        settings: expected.settings,
    })
}

/// The entry belongs to this case (same API and options) and is internally consistent.
fn consistent(case: &AccuracyCase, e: &ExpectedEntry) -> Result<(), String> {
    let stale = |what: String| Err(format!("{EXPECTED_FILE}: {what}: {REGENERATE}"));
    if e.api != case.api {
        return stale(format!("the entry is for api {}", e.api));
    }
    let options: BTreeMap<String, Value> = case
        .args
        .iter()
        .filter_map(|(k, a)| match a {
            Arg::Value(v) => Some((k.clone(), v.clone())),
            Arg::Recipe(_) => None,
        })
        .collect();
    if options != e.options {
        return stale(format!(
            "the entry was computed with options {:?}",
            e.options
        ));
    }
    let recipes: Vec<&String> = case
        .args
        .iter()
        .filter(|(_, a)| matches!(a, Arg::Recipe(_)))
        .map(|(k, _)| k)
        .collect();
    if recipes.len() != e.inputs.len() || recipes.iter().any(|k| !e.inputs.contains_key(*k)) {
        return stale(format!(
            "the entry has digests for {:?}",
            e.inputs.keys().collect::<Vec<_>>()
        ));
    }
    if !e.dtype.is_float() || !e.exact_hi.is_finite() {
        return Err(format!(
            "{EXPECTED_FILE}: dtype {} / exact value {}",
            e.dtype, e.exact_hi
        ));
    }
    let parsed: f64 = e.exact.parse().map_err(|_| {
        format!(
            "{EXPECTED_FILE}: field `exact`: {:?} is not a number",
            e.exact
        )
    })?;
    if (parsed - e.exact_hi).abs() > e.exact_hi.abs() * 4.0 * f64::EPSILON {
        return Err(format!(
            "{EXPECTED_FILE}: `exact` {} and `exact_hi` {} disagree",
            e.exact,
            format_float(e.exact_hi)
        ));
    }
    if ulps(e.exact_rounded, e.exact_hi, e.exact_lo, e.dtype) > 0.5 + 1e-9 {
        return Err(format!(
            "{EXPECTED_FILE}: `exact_rounded` {} is not the nearest {} to {}",
            format_float(e.exact_rounded),
            e.dtype,
            e.exact
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// ULPs

fn pow2(k: i32) -> f64 {
    if k >= -1022 {
        f64::from_bits(((k + 1023) as u64) << 52)
    } else {
        f64::from_bits(1u64 << (k + 1074))
    }
}

/// `floor(log2 |x|)` of a nonzero finite float64.
fn floor_log2(x: f64) -> i32 {
    let bits = x.abs().to_bits();
    let biased = (bits >> 52) as i32;
    if biased == 0 {
        // subnormal: 2^-1074 times the significand's bit length
        -1074 + 63 - bits.leading_zeros() as i32
    } else {
        biased - 1023
    }
}

/// The unit in the last place of `dtype` at the real number `hi + lo` (a double-double, `lo`
/// below half an ulp of `hi`): `2^(max(floor(log2 |x|), emin) - p + 1)`.
pub fn ulp(hi: f64, lo: f64, dtype: DType) -> f64 {
    let (p, emin) = match dtype {
        DType::Float64 => (53, -1022),
        DType::Float16 => (11, -14),
        DType::Bfloat16 => (8, -126),
        _ => (24, -126),
    };
    if hi == 0.0 {
        return pow2(emin - p + 1);
    }
    let mut e = floor_log2(hi);
    let power_of_two = hi.abs() == pow2(e);
    if power_of_two && lo != 0.0 && (lo < 0.0) != (hi < 0.0) {
        e -= 1; // the exact value is just below |hi| = 2^e
    }
    pow2(e.max(emin) - p + 1)
}

/// `|actual - exact| / ulp(exact)` in ULPs of `dtype`, the exact value given as `hi + lo`;
/// infinite for a non-finite answer.
pub fn ulps(actual: f64, hi: f64, lo: f64, dtype: DType) -> f64 {
    if !actual.is_finite() {
        return f64::INFINITY;
    }
    ((actual - hi) - lo).abs() / ulp(hi, lo, dtype)
}

// ---------------------------------------------------------------------------------------------
// Running

/// What one backend answered on one accuracy case, and how far that is from exact.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub name: String,
    pub api: String,
    pub elements: u64,
    pub dtype: DType,
    pub exact: String,
    /// The backend's value, or why it has none (an error, a skip, a panic).
    pub actual: Result<f64, String>,
    /// The backend's error in ULPs (`None` without a value).
    pub ulps: Option<f64>,
    pub torch_ulps: Option<f64>,
    pub torch_value: Option<f64>,
    /// `None` when no TensorFlow expression has the same math.
    pub tensorflow_ulps: Option<f64>,
    pub tensorflow_value: Option<f64>,
    pub tensorflow_expr: Option<String>,
    /// Whether the backend does not implement the API (a visible skip, not a failure).
    pub unsupported: bool,
    pub seconds: f64,
}

impl Measurement {
    /// Within [`MAX_ULPS`] of exact.
    pub fn passed(&self) -> bool {
        self.ulps.is_some_and(|u| u <= MAX_ULPS)
    }

    /// A report that stands on its own: case, api, exact, actual, ULPs, the frameworks' ULPs.
    pub fn report(&self, case: &AccuracyCase) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "case:       accuracy/{}", self.name);
        let _ = writeln!(
            s,
            "api:        {} ({} elements, {})",
            self.api, self.elements, self.dtype
        );
        let _ = writeln!(s, "why:        {}", case.why);
        let _ = writeln!(s, "exact:      {}", self.exact);
        match &self.actual {
            Ok(v) => {
                let _ = writeln!(s, "actual:     {}", format_float(*v));
            }
            Err(e) => {
                let _ = writeln!(s, "actual:     none: {e}");
            }
        }
        let _ = writeln!(
            s,
            "ulps:       {} (at most {MAX_ULPS} allowed)",
            fmt_ulps(self.ulps)
        );
        let _ = writeln!(
            s,
            "PyTorch:    {} ulps ({})",
            fmt_ulps(self.torch_ulps),
            self.torch_value.map(format_float).unwrap_or_default()
        );
        match &self.tensorflow_expr {
            Some(expr) => {
                let _ = writeln!(
                    s,
                    "TensorFlow: {} ulps ({}) from {expr}",
                    fmt_ulps(self.tensorflow_ulps),
                    self.tensorflow_value.map(format_float).unwrap_or_default()
                );
            }
            None => {
                let _ = writeln!(s, "TensorFlow: no expression with the same math");
            }
        }
        s.trim_end().to_string()
    }
}

/// ULPs for a table: `0.42`, `12.5`, `9.5e6`, `inf`, `-`.
pub fn fmt_ulps(u: Option<f64>) -> String {
    match u {
        None => "-".into(),
        Some(u) if !u.is_finite() => "inf".into(),
        Some(u) if u >= 1e4 => format!("{u:.1e}"),
        Some(u) if u >= 10.0 => format!("{u:.1}"),
        Some(u) => format!("{u:.2}"),
    }
}

/// Materialises every recipe argument of a case (plain options pass through) and checks each
/// tensor against the digest `tools/exact.py` recorded.
pub fn call(case: &AccuracyCase, expected: &ExpectedEntry) -> Result<Call, String> {
    let mut done = BTreeMap::new();
    // Plain recipes first, then offsets (which read them): the order in the file is irrelevant.
    for pass in [false, true] {
        for (k, a) in &case.args {
            if let Arg::Recipe(r) = a {
                if matches!(r, Recipe::Offset { .. }) == pass {
                    let t = r
                        .materialise(&done)
                        .map_err(|e| format!("{CASES_FILE}: case {}: args.{k}: {e}", case.name))?;
                    done.insert(k.clone(), t);
                }
            }
        }
    }
    for (k, t) in &done {
        let got = digest(t);
        let want = expected.inputs.get(k).map(String::as_str).unwrap_or("none");
        if got != want {
            return Err(format!(
                "args.{k} materialises to digest {got} here but {want} in {EXPECTED_FILE}: the recipe changed or Rust and tools/recipes.py drifted apart; {REGENERATE} (and check tools/recipes.py against src/accuracy.rs)"
            ));
        }
    }
    let mut args = BTreeMap::new();
    for (k, a) in &case.args {
        let v = match a {
            Arg::Value(v) => v.clone(),
            Arg::Recipe(_) => Value::Tensor(done.remove(k).expect("materialised above")),
        };
        args.insert(k.clone(), v);
    }
    Ok(Call {
        api: case.api.clone(),
        args,
    })
}

/// Runs one case on a backend. `Err` is a problem of the suite itself (stale or drifting files).
pub fn measure(
    backend: &dyn Backend,
    case: &AccuracyCase,
    expected: &ExpectedEntry,
) -> Result<Measurement, String> {
    let call = call(case, expected)?;
    let started = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| backend.forward(&call)));
    let seconds = started.elapsed().as_secs_f64();
    let mut unsupported = false;
    let actual = match outcome {
        Err(p) => Err(format!(
            "the backend panicked: {}",
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        )),
        Ok(Outcome::Unsupported(why)) => {
            unsupported = true;
            Err(format!("unsupported: {why}"))
        }
        Ok(Outcome::Error(e)) => Err(format!("an error: {e}")),
        Ok(Outcome::Value(t)) if t.dtype() != expected.dtype || !t.shape().is_empty() => {
            Err(format!(
                "a {} tensor where a 0-d {} was expected",
                t.describe(),
                expected.dtype
            ))
        }
        Ok(Outcome::Value(t)) => Ok(t.to_f64_vec()[0]),
    };
    let ulps = actual
        .as_ref()
        .ok()
        .map(|&v| ulps(v, expected.exact_hi, expected.exact_lo, expected.dtype));
    let tf = expected.tensorflow.as_ref();
    Ok(Measurement {
        name: case.name.clone(),
        api: case.api.clone(),
        elements: expected.elements,
        dtype: expected.dtype,
        exact: expected.exact.clone(),
        actual,
        ulps,
        torch_ulps: expected.torch.ulps,
        torch_value: expected.torch.value,
        tensorflow_ulps: tf.and_then(|t| t.ulps),
        tensorflow_value: tf.and_then(|t| t.value),
        tensorflow_expr: tf.and_then(|t| t.expr.clone()),
        unsupported,
        seconds,
    })
}

/// The table `lossconf accuracy` prints and docs/accuracy.md shows (Markdown).
pub fn table(rows: &[Measurement]) -> String {
    let mut s = String::from(
        "| case | elements | exact | reference ULPs | PyTorch ULPs | TensorFlow ULPs |\n|---|---:|---|---:|---:|---:|\n",
    );
    for m in rows {
        let sign = usize::from(m.exact.starts_with('-'));
        let exact: String = m.exact.chars().take(12 + sign).collect::<String>()
            + &m.exact[m.exact.find('e').unwrap_or(m.exact.len())..];
        let mark = |u: Option<f64>| {
            let t = fmt_ulps(u);
            if u.is_some_and(|u| u > MAX_ULPS) {
                format!("**{t}**")
            } else {
                t
            }
        };
        let _ = writeln!(
            s,
            "| `{}` | {} | {exact} | {} | {} | {} |",
            m.name,
            m.elements,
            mark(m.ulps),
            mark(m.torch_ulps),
            mark(m.tensorflow_ulps),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulp_follows_the_binade_of_the_exact_value() {
        assert_eq!(ulp(1.0, 0.0, DType::Float32), 2f64.powi(-23));
        assert_eq!(ulp(1.0, -1e-30, DType::Float32), 2f64.powi(-24));
        assert_eq!(ulp(-1.0, 1e-30, DType::Float32), 2f64.powi(-24));
        assert_eq!(ulp(1.5, 0.0, DType::Float64), f64::EPSILON);
        assert_eq!(ulp(1e-300, 0.0, DType::Float32), 2f64.powi(-149));
        assert_eq!(ulps(1.0 + 2f64.powi(-23), 1.0, 0.0, DType::Float32), 1.0);
        assert_eq!(ulps(f64::NAN, 1.0, 0.0, DType::Float32), f64::INFINITY);
    }

    #[test]
    fn draws_are_splitmix64() {
        // splitmix64 with state 0: its first output is the published 0xe220a8397b1dcdaf.
        assert_eq!(draw(0, 0), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn recipes_materialise_and_reject_bad_fields() {
        let r: Recipe = serde_yaml::from_str(
            "{recipe: choice, seed: 1, dtype: float32, shape: [4], values: [0.5, 1.0]}",
        )
        .unwrap();
        let t = r.materialise(&BTreeMap::new()).unwrap();
        assert!(t.to_f64_vec().iter().all(|&x| x == 0.5 || x == 1.0));
        assert!(serde_yaml::from_str::<Recipe>("{recipe: uniform, seed: 1, bogus: 2}").is_err());
        let bad: Recipe = serde_yaml::from_str(
            "{recipe: choice, seed: 1, dtype: float32, shape: [1], values: [0.1]}",
        )
        .unwrap();
        assert!(bad
            .materialise(&BTreeMap::new())
            .unwrap_err()
            .contains("not exact"));
    }
}

// ---------------------------------------------------------------------------------------------
// `lossconf accuracy`

/// Options of `lossconf accuracy`.
#[derive(clap::Args, Debug)]
pub struct CliOptions {
    /// Run only cases whose name contains one of these strings.
    pub filter: Vec<String>,
    /// Measure a program speaking lossconf/1 on stdin/stdout instead of the reference (run by `sh -c`).
    #[arg(long)]
    pub command: Option<String>,
    /// Seconds a process backend may take to answer one call.
    #[arg(long, default_value_t = 600.0)]
    pub timeout: f64,
}

/// `lossconf accuracy`: the table of every accuracy case (exact value, backend / PyTorch /
/// TensorFlow ULPs); fails when the backend is more than [`MAX_ULPS`] off on any case.
pub fn cli(root: &Path, opts: CliOptions) -> std::process::ExitCode {
    use std::process::ExitCode;
    let backend: Box<dyn Backend> = match &opts.command {
        None => Box::new(crate::reference::Reference),
        Some(cmd) => match crate::process::ProcessBackend::start(
            cmd,
            std::time::Duration::from_secs_f64(opts.timeout),
        ) {
            Ok(b) => Box::new(b),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let suite = match load(root) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut rows, mut failed, mut skipped, mut problems) = (Vec::new(), 0, 0, 0);
    let mut reports = String::new();
    for (case, expected) in &suite.checks {
        if !opts.filter.is_empty() && !opts.filter.iter().any(|f| case.name.contains(f.as_str())) {
            continue;
        }
        let m = match expected
            .as_ref()
            .map_err(String::clone)
            .and_then(|e| measure(backend.as_ref(), case, e))
        {
            Ok(m) => m,
            Err(e) => {
                problems += 1;
                let _ = writeln!(reports, "\naccuracy/{}: {e}", case.name);
                continue;
            }
        };
        if m.unsupported {
            skipped += 1;
        } else if !m.passed() {
            failed += 1;
            let _ = writeln!(reports, "\n{}", m.report(case));
        }
        eprintln!(
            "{:<48} {:>10} ulps  {:.2} s",
            m.name,
            fmt_ulps(m.ulps),
            m.seconds
        );
        rows.push(m);
    }
    let versions: Vec<String> = suite
        .versions
        .iter()
        .map(|(k, v)| format!("{k} {}", v.as_deref().unwrap_or("?")))
        .collect();
    println!(
        "Backend: {}. Exact values and framework answers: {EXPECTED_FILE} ({}).\n",
        backend.name(),
        versions.join(", ")
    );
    print!("{}", table(&rows));
    print!("{reports}");
    let passed = rows.len() - failed - skipped;
    println!(
        "\n{passed} passed, {} failed, {skipped} skipped",
        failed + problems
    );
    if failed + problems > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
