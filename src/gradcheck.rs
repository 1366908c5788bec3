//! A backend-agnostic gradient check that needs no recorded values: central finite differences
//! of the backend's own `forward` in float64, against its `backward`.
//!
//! For each case with `wrt` arguments, every floating-point tensor argument is cast to float64
//! (exact) and an API with a `dtype` option (Keras) is asked to compute in float64. With a seeded
//! random `grad_output` `g`, the scalar `f(x) = sum(g * forward(x))` is differentiated
//! numerically at a few elements of each `wrt` argument and compared with `backward`:
//!
//! - the central difference `(f(x+h) - f(x-h)) / 2h` is tried at `h = s·1e-6, s·1e-4, s·1e-3`
//!   (`s = max(1, |x|)`): a smooth loss agrees at one of them whatever its curvature or the
//!   working precision of the backend; a wrong gradient agrees at none;
//! - a point where the one-sided differences disagree is a kink (L1 at 0, a hinge at its
//!   margin, a clamp bound): the derivative there is a convention, which only recorded framework
//!   values can judge, so it is counted as skipped, never as agreement;
//! - a perturbation that leaves the domain (an error, a non-finite value) is skipped too.

use crate::backend::{Backend, Call, Outcome, Value};
use crate::case::Case;
use crate::tensor::{DType, Tensor};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Settings of a check.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Elements checked per argument (spread over the tensor).
    pub max_elements: usize,
    pub rtol: f64,
    pub atol: f64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            max_elements: 6,
            rtol: 1e-4,
            atol: 1e-6,
        }
    }
}

/// What happened at one element.
#[derive(Clone, Debug, PartialEq)]
pub enum Point {
    Agrees,
    /// The analytic and numeric derivatives differ at every step size.
    Disagrees {
        analytic: f64,
        numeric: f64,
    },
    /// Not checkable here, and why (a kink, the domain, a non-finite value).
    Skipped(&'static str),
}

/// The result of checking one case.
#[derive(Clone, Debug, Default)]
pub struct CaseReport {
    pub case: String,
    pub api: String,
    /// Why the whole case was not checked (forward or backward error, unsupported).
    pub not_checked: Option<String>,
    /// `(argument, flat index, outcome)`.
    pub points: Vec<(String, usize, Point)>,
}

impl CaseReport {
    pub fn disagreements(&self) -> impl Iterator<Item = &(String, usize, Point)> {
        self.points
            .iter()
            .filter(|(_, _, p)| matches!(p, Point::Disagrees { .. }))
    }
}

/// `call` with every float tensor in float64 and, when the API has a `dtype` option, float64
/// computation asked for.
pub fn float64_call(case: &Case) -> Call {
    let mut call = case.call();
    for v in call.args.values_mut() {
        if let Value::Tensor(t) = v {
            if t.dtype().is_float() && t.dtype() != DType::Float64 {
                *t = Tensor::from_f64(DType::Float64, t.shape().to_vec(), t.to_f64_vec())
                    .expect("float values are exact in float64");
            }
        }
    }
    let has_dtype_option = crate::reference::signatures::SIGNATURES
        .iter()
        .any(|(api, sig)| *api == call.api && sig.iter().any(|(n, _)| *n == "dtype"));
    if has_dtype_option {
        call.args
            .insert("dtype".to_string(), Value::Str("float64".to_string()));
    }
    call
}

/// The forward output's elements, or `None` when the forward is not a finite value of `shape`.
fn outputs(backend: &dyn Backend, call: &Call, shape: &[usize]) -> Option<Vec<f64>> {
    let Outcome::Value(out) = backend.forward(call) else {
        return None;
    };
    let v = out.to_f64_vec();
    (out.shape() == shape && v.iter().all(|y| y.is_finite())).then_some(v)
}

/// `sum(g * (a - b))`, elementwise first so a large unrelated element cannot cancel the change,
/// and the rounding noise that sum can carry.
fn weighted_difference(g: &[f64], a: &[f64], b: &[f64]) -> (f64, f64) {
    let diff = g
        .iter()
        .zip(a.iter().zip(b))
        .map(|(w, (x, y))| w * (x - y))
        .sum();
    let noise = 64.0
        * f64::EPSILON
        * g.iter()
            .zip(a.iter().zip(b))
            .map(|(w, (x, y))| w.abs() * x.abs().max(y.abs()))
            .sum::<f64>();
    (diff, noise)
}

fn with_element(call: &Call, arg: &str, index: usize, value: f64) -> Call {
    let mut c = call.clone();
    if let Some(Value::Tensor(t)) = c.args.get_mut(arg) {
        let mut data = t.to_f64_vec();
        data[index] = value;
        *t = Tensor::from_f64(DType::Float64, t.shape().to_vec(), data)
            .expect("same shape, float64");
    }
    c
}

/// Up to `n` flat indices spread over `0..len`.
fn spread(len: usize, n: usize) -> Vec<usize> {
    if len <= n {
        return (0..len).collect();
    }
    let mut v: Vec<usize> = (0..n).map(|i| i * (len - 1) / (n - 1).max(1)).collect();
    v.dedup();
    v
}

fn near(a: f64, b: f64, s: &Settings) -> bool {
    (a - b).abs() <= s.atol + s.rtol * a.abs().max(b.abs())
}

/// Checks one case against `backend`. `seed` fixes `grad_output`.
pub fn check_case(
    backend: &dyn Backend,
    case: &Case,
    settings: &Settings,
    seed: u64,
) -> CaseReport {
    let mut report = CaseReport {
        case: case.name.clone(),
        api: case.api.clone(),
        ..CaseReport::default()
    };
    let call = float64_call(case);
    let out = match backend.forward(&call) {
        Outcome::Value(t) => t,
        Outcome::Error(e) => {
            report.not_checked = Some(format!("forward: {e}"));
            return report;
        }
        Outcome::Unsupported(why) => {
            report.not_checked = Some(format!("unsupported: {why}"));
            return report;
        }
    };
    if !out.dtype().is_float() {
        report.not_checked = Some(format!(
            "the loss is {}, not floating point",
            out.describe()
        ));
        return report;
    }
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ crate::case::fnv1a64(case.name.as_bytes()));
    let g: Vec<f64> = (0..out.numel())
        .map(|_| (rng.gen_range(-8i32..=8) as f64) / 4.0)
        .map(|x| if x == 0.0 { 0.5 } else { x })
        .collect();
    let g_tensor = Tensor::from_f64(out.dtype(), out.shape().to_vec(), g.clone())
        .expect("multiples of 1/4 are exact");
    let grads = match backend.backward(&call, &case.wrt, Some(&g_tensor)) {
        Outcome::Value(gr) => gr,
        Outcome::Error(e) => {
            report.not_checked = Some(format!("backward: {e}"));
            return report;
        }
        Outcome::Unsupported(why) => {
            report.not_checked = Some(format!("unsupported: {why}"));
            return report;
        }
    };
    let shape = out.shape().to_vec();
    let Some(f0) = outputs(backend, &call, &shape) else {
        report.not_checked = Some("the loss is not finite at the case's inputs".into());
        return report;
    };
    for arg in &case.wrt {
        let Some(Value::Tensor(x)) = call.args.get(arg) else {
            continue;
        };
        let Some(grad) = grads.get(arg) else {
            report.not_checked = Some(format!("backward answered no gradient for '{arg}'"));
            return report;
        };
        let xs = x.to_f64_vec();
        let gs = grad.to_f64_vec();
        if gs.len() != xs.len() {
            report.not_checked = Some(format!(
                "the gradient of '{arg}' is {}, the argument {}",
                grad.describe(),
                x.describe()
            ));
            return report;
        }
        for i in spread(xs.len(), settings.max_elements) {
            let point = check_point(
                backend, &call, arg, i, xs[i], gs[i], &f0, &g, &shape, settings,
            );
            report.points.push((arg.clone(), i, point));
        }
    }
    report
}

#[allow(clippy::too_many_arguments)]
fn check_point(
    backend: &dyn Backend,
    call: &Call,
    arg: &str,
    i: usize,
    x: f64,
    analytic: f64,
    f0: &[f64],
    g: &[f64],
    shape: &[usize],
    settings: &Settings,
) -> Point {
    if !x.is_finite() {
        return Point::Skipped("the element is not finite");
    }
    if !analytic.is_finite() {
        return Point::Skipped("the analytic derivative is not finite");
    }
    let scale = x.abs().max(1.0);
    let loose = Settings {
        rtol: 1e-2,
        atol: 1e-4,
        ..settings.clone()
    };
    let mut numerics: Vec<f64> = Vec::new();
    for step in [1e-6, 1e-4, 1e-3] {
        let h = step * scale;
        let plus = outputs(backend, &with_element(call, arg, i, x + h), shape);
        let minus = outputs(backend, &with_element(call, arg, i, x - h), shape);
        let (Some(fp), Some(fm)) = (plus, minus) else {
            return Point::Skipped("a perturbation leaves the domain");
        };
        let (central, noise) = weighted_difference(g, &fp, &fm);
        let (right, _) = weighted_difference(g, &fp, f0);
        let (left, _) = weighted_difference(g, f0, &fm);
        if right.abs().max(left.abs()).max(2.0 * h * analytic.abs()) <= noise {
            // The change is lost in the loss's own rounding at this step: try a larger one.
            continue;
        }
        if !near(right / h, left / h, &loose) {
            return Point::Skipped("a kink: the one-sided derivatives differ");
        }
        let n = central / (2.0 * h);
        if near(analytic, n, settings) {
            return Point::Agrees;
        }
        numerics.push(n);
    }
    match numerics.as_slice() {
        [] => Point::Skipped("the change is below the loss's float64 resolution"),
        [a, b, ..] if !near(*a, *b, &loose) => {
            Point::Skipped("not smooth at the step sizes: the central differences disagree")
        }
        [n, ..] => Point::Disagrees {
            analytic,
            numeric: *n,
        },
    }
}

/// Counts over many case reports, for a summary.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    pub cases: usize,
    pub not_checked: usize,
    pub agree: usize,
    pub disagree: usize,
    pub skipped: BTreeMap<&'static str, usize>,
}

impl Totals {
    pub fn add(&mut self, r: &CaseReport) {
        self.cases += 1;
        if r.not_checked.is_some() {
            self.not_checked += 1;
        }
        for (_, _, p) in &r.points {
            match p {
                Point::Agrees => self.agree += 1,
                Point::Disagrees { .. } => self.disagree += 1,
                Point::Skipped(why) => *self.skipped.entry(why).or_default() += 1,
            }
        }
    }
}

/// A readable report: per-API totals, then each disagreement.
pub fn render(reports: &[CaseReport], show: usize) -> String {
    let mut by_api: BTreeMap<&str, Totals> = BTreeMap::new();
    let mut all = Totals::default();
    for r in reports {
        by_api.entry(r.api.as_str()).or_default().add(r);
        all.add(r);
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<52} {:>6} {:>7} {:>7} {:>8} {:>8}",
        "api", "cases", "agree", "differ", "skipped", "unchecked"
    );
    for (api, t) in &by_api {
        let _ = writeln!(
            s,
            "{api:<52} {:>6} {:>7} {:>7} {:>8} {:>8}",
            t.cases,
            t.agree,
            t.disagree,
            t.skipped.values().sum::<usize>(),
            t.not_checked
        );
    }
    let mut shown = 0;
    for r in reports {
        for (arg, i, p) in r.disagreements() {
            if shown == show {
                break;
            }
            shown += 1;
            if let Point::Disagrees { analytic, numeric } = p {
                let _ = writeln!(
                    s,
                    "\nDIFFERS {}\n  d/d{arg}[flat {i}]: backward {} vs central difference {}",
                    r.case,
                    crate::tensor::format_float(*analytic),
                    crate::tensor::format_float(*numeric)
                );
            }
        }
    }
    let skipped: Vec<String> = all
        .skipped
        .iter()
        .map(|(why, n)| format!("{n} ({why})"))
        .collect();
    let _ = writeln!(
        s,
        "\n{} cases: {} elements agree, {} differ, skipped {}; {} cases not checked (errors or unsupported)",
        all.cases,
        all.agree,
        all.disagree,
        if skipped.is_empty() { "none".to_string() } else { skipped.join(", ") },
        all.not_checked
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{CallError, Gradients};

    /// `mean((input - target)^2)` with a correct or a deliberately wrong gradient.
    struct Mse {
        wrong: bool,
    }

    impl Backend for Mse {
        fn name(&self) -> &str {
            "mse-test"
        }
        fn forward(&self, call: &Call) -> Outcome {
            let (Some(Value::Tensor(x)), Some(Value::Tensor(y))) =
                (call.args.get("input"), call.args.get("target"))
            else {
                return Outcome::Error(CallError::argument("input and target"));
            };
            let (x, y) = (x.to_f64_vec(), y.to_f64_vec());
            let m = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs().powi(2))
                .sum::<f64>()
                / x.len() as f64;
            Outcome::Value(Tensor::scalar(DType::Float64, m))
        }
        fn backward(&self, call: &Call, _: &[String], g: Option<&Tensor>) -> Outcome<Gradients> {
            let (Some(Value::Tensor(x)), Some(Value::Tensor(y))) =
                (call.args.get("input"), call.args.get("target"))
            else {
                return Outcome::Error(CallError::argument("input and target"));
            };
            let g = g.map_or(1.0, |t| t.to_f64_vec()[0]);
            let n = x.numel() as f64;
            let factor = if self.wrong { 1.0 } else { 2.0 };
            let d: Vec<f64> = x
                .to_f64_vec()
                .iter()
                .zip(y.to_f64_vec())
                .map(|(a, b)| factor * (a - b) * g / n)
                .collect();
            let t = Tensor::from_f64(DType::Float64, x.shape().to_vec(), d).unwrap();
            Outcome::Value([("input".to_string(), t)].into())
        }
    }

    fn case(x: Vec<f64>) -> Case {
        let n = x.len();
        let mut args = BTreeMap::new();
        args.insert(
            "input".to_string(),
            Value::Tensor(Tensor::from_f64(DType::Float32, vec![n], x).unwrap()),
        );
        args.insert(
            "target".to_string(),
            Value::Tensor(Tensor::from_f64(DType::Float32, vec![n], vec![0.5; n]).unwrap()),
        );
        Case {
            name: "demo".into(),
            api: "demo.mse".into(),
            digest: String::new(),
            source: None,
            compare: None,
            tolerance: None,
            wrt: vec!["input".into()],
            args,
        }
    }

    #[test]
    fn a_correct_gradient_agrees_and_a_wrong_one_is_caught() {
        let c = case(vec![1.0, -2.0, 3.5, 0.25]);
        let ok = check_case(&Mse { wrong: false }, &c, &Settings::default(), 1);
        assert!(ok.not_checked.is_none(), "{ok:?}");
        assert_eq!(ok.points.len(), 4);
        assert!(
            ok.points.iter().all(|(_, _, p)| *p == Point::Agrees),
            "{ok:?}"
        );
        let bad = check_case(&Mse { wrong: true }, &c, &Settings::default(), 1);
        assert_eq!(bad.disagreements().count(), 4, "{bad:?}");
        let text = render(&[ok, bad], 10);
        assert!(text.contains("DIFFERS demo"), "{text}");
        assert!(text.contains("4 elements agree, 4 differ"), "{text}");
    }

    #[test]
    fn the_case_is_cast_to_float64() {
        let c = float64_call(&case(vec![0.1]));
        let Some(Value::Tensor(t)) = c.args.get("input") else {
            panic!()
        };
        assert_eq!(t.dtype(), DType::Float64);
        assert_eq!(t.to_f64_vec()[0], 0.1f32 as f64);
    }
}
