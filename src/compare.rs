//! The comparison policy: `torch.testing.assert_close` tolerances per dtype, NaN and infinity
//! rules, error kinds, and mismatch reports that stand on their own.

use crate::backend::{Gradients, Outcome};
use crate::case::{Expected, ExpectedError, ExpectedGradients};
use crate::spec::Tolerance;
use crate::tensor::{format_float, DType, Tensor};
use std::fmt::Write as _;

/// `(rtol, atol)` of `torch.testing.assert_close` for a dtype; integers compare exactly.
pub fn default_tolerance(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::Float16 => (1e-3, 1e-5),
        DType::Bfloat16 => (1.6e-2, 1e-5),
        DType::Float32 => (1.3e-6, 1e-5),
        DType::Float64 => (1e-7, 1e-7),
        _ => (0.0, 0.0),
    }
}

/// How a backend's answer relates to the expectation.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Pass,
    /// The backend does not support the call.
    Skip(String),
    /// What is wrong, in lines meant for a person.
    Fail(String),
}

/// How many mismatching elements a report lists before "and N more".
const SHOWN: usize = 5;

fn multi_index(mut flat: usize, shape: &[usize]) -> String {
    let mut idx = vec![0; shape.len()];
    for (slot, &d) in idx.iter_mut().zip(shape).rev() {
        if d > 0 {
            *slot = flat % d;
            flat /= d;
        }
    }
    format!("{idx:?}")
}

/// Whether `actual` is close enough to `expected`: NaN matches NaN, an infinity only the same
/// infinity, everything else within `atol + rtol * |expected|`.
pub fn close(expected: f64, actual: f64, rtol: f64, atol: f64) -> bool {
    if expected.is_nan() || actual.is_nan() {
        return expected.is_nan() && actual.is_nan();
    }
    if expected.is_infinite() || actual.is_infinite() {
        return expected == actual;
    }
    (actual - expected).abs() <= atol + rtol * expected.abs()
}

/// Compares two tensors; `Err` holds the report lines.
pub fn compare_tensors(
    expected: &Tensor,
    actual: &Tensor,
    tolerance: Option<&Tolerance>,
) -> Result<(), String> {
    if expected.dtype() != actual.dtype() || expected.shape() != actual.shape() {
        return Err(format!(
            "expected a {} tensor, got {}",
            expected.describe(),
            actual.describe()
        ));
    }
    let (rtol, atol) = match tolerance {
        Some(t) => (t.rtol, t.atol),
        None => default_tolerance(expected.dtype()),
    };
    let (e, a) = (expected.to_f64_vec(), actual.to_f64_vec());
    let bad: Vec<usize> = (0..e.len())
        .filter(|&i| !close(e[i], a[i], rtol, atol))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    let mut s = format!(
        "{} of {} elements differ beyond rtol={} atol={}{}\n",
        bad.len(),
        e.len(),
        format_float(rtol),
        format_float(atol),
        tolerance
            .map(|t| format!(" (widened: {})", t.reason))
            .unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "  {:<14} {:>24} {:>24} {:>11} {:>11}",
        "index", "expected", "actual", "|diff|", "allowed"
    );
    for &i in bad.iter().take(SHOWN) {
        let diff = (a[i] - e[i]).abs();
        let allowed = atol + rtol * e[i].abs();
        let _ = writeln!(
            s,
            "  {:<14} {:>24} {:>24} {:>11.3e} {:>11.3e}",
            multi_index(i, expected.shape()),
            format_float(e[i]),
            format_float(a[i]),
            diff,
            allowed
        );
    }
    if bad.len() > SHOWN {
        let _ = writeln!(s, "  ... and {} more", bad.len() - SHOWN);
    }
    Err(s.trim_end().to_string())
}

/// Judges a backend's outcome against what the framework answered.
pub fn judge(expected: &Expected, actual: &Outcome, tolerance: Option<&Tolerance>) -> Verdict {
    match (expected, actual) {
        (_, Outcome::Unsupported(why)) => Verdict::Skip(why.clone()),
        (Expected { value: Some(e), .. }, Outcome::Value(a)) => {
            match compare_tensors(e, a, tolerance) {
                Ok(()) => Verdict::Pass,
                Err(report) => Verdict::Fail(report),
            }
        }
        (Expected { value: Some(e), .. }, Outcome::Error(err)) => Verdict::Fail(format!(
            "expected a {} value, got an error: {err}",
            e.describe()
        )),
        (Expected { error: Some(e), .. }, Outcome::Error(err)) if e.kind == err.kind => {
            Verdict::Pass
        }
        (Expected { error: Some(e), .. }, Outcome::Error(err)) => Verdict::Fail(format!(
            "expected a {} error ({}: {}), got: {err}",
            e.kind, e.exception, e.message
        )),
        (Expected { error: Some(e), .. }, Outcome::Value(a)) => Verdict::Fail(format!(
            "expected a {} error ({}: {}), got a value {}",
            e.kind,
            e.exception,
            e.message,
            a.describe()
        )),
        (
            Expected {
                value: None,
                error: None,
                ..
            },
            _,
        ) => Verdict::Fail("the expected entry holds neither `value` nor `error`".into()),
    }
}

/// The tolerance of a gradient whose loss was computed in a coarser dtype than the argument:
/// that of the loss (its output) dtype. Keras computes float64 inputs in float32 and casts the
/// gradient back to float64, so the gradient carries float32 rounding (TF's vectorised float32
/// `reciprocal`, `log` and `exp` are not correctly rounded: a few float32 ulps apart from a
/// correctly rounded implementation), which float64's tolerance would call a failure. `None`
/// where the argument's own dtype is as coarse as the loss's.
pub fn gradient_tolerance(argument: DType, loss: DType) -> Option<Tolerance> {
    if !argument.is_float() || !loss.is_float() {
        return None;
    }
    let (rtol, atol) = default_tolerance(loss);
    (rtol > default_tolerance(argument).0).then(|| Tolerance {
        rtol,
        atol,
        reason: format!(
            "the loss was computed in {loss} (its output dtype), so this {argument} gradient carries {loss} rounding"
        ),
    })
}

/// Judges a backend's gradients against what the framework's autograd answered: each expected
/// gradient is compared like a loss value, and the report names the argument.
pub fn judge_gradients(
    expected: &ExpectedGradients,
    actual: &Outcome<Gradients>,
    tolerance: Option<&Tolerance>,
) -> Verdict {
    match (&expected.value, &expected.error, actual) {
        (_, _, Outcome::Unsupported(why)) => Verdict::Skip(why.clone()),
        (Some(e), _, Outcome::Value(a)) => {
            let mut report = String::new();
            for (name, want) in e {
                match a.get(name) {
                    None => {
                        let _ = writeln!(
                            report,
                            "gradient of '{name}': missing from the answer (expected {})",
                            want.describe()
                        );
                    }
                    Some(got) => {
                        let computed_in = match tolerance {
                            Some(_) => None,
                            None => gradient_tolerance(want.dtype(), expected.grad_output.dtype()),
                        };
                        let tolerance = tolerance.or(computed_in.as_ref());
                        if let Err(r) = compare_tensors(want, got, tolerance) {
                            let _ = writeln!(report, "gradient of '{name}': {r}");
                        }
                    }
                }
            }
            for name in a.keys().filter(|n| !e.contains_key(*n)) {
                let _ = writeln!(report, "gradient of '{name}': not asked for, but answered");
            }
            if report.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Fail(report.trim_end().to_string())
            }
        }
        (Some(e), _, Outcome::Error(err)) => Verdict::Fail(format!(
            "expected gradients for {}, got an error: {err}",
            e.keys().cloned().collect::<Vec<_>>().join(", ")
        )),
        (None, Some(e), Outcome::Error(err)) if e.kind == err.kind => Verdict::Pass,
        (None, Some(e), Outcome::Error(err)) => Verdict::Fail(format!(
            "expected a {} error ({}: {}), got: {err}",
            e.kind, e.exception, e.message
        )),
        (
            None,
            Some(ExpectedError {
                kind,
                exception,
                message,
            }),
            Outcome::Value(_),
        ) => Verdict::Fail(format!(
            "expected a {kind} error ({exception}: {message}), got gradients"
        )),
        (None, None, _) => {
            Verdict::Fail("the gradients entry holds neither `value` nor `error`".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f64]) -> Tensor {
        Tensor::from_f64(DType::Float32, vec![v.len()], v.to_vec()).unwrap()
    }

    #[test]
    fn nan_and_infinity_rules() {
        assert!(close(f64::NAN, f64::NAN, 0.0, 0.0));
        assert!(!close(f64::NAN, 1.0, 1.0, 1.0));
        assert!(!close(1.0, f64::NAN, 1.0, 1.0));
        assert!(close(f64::INFINITY, f64::INFINITY, 0.0, 0.0));
        assert!(!close(f64::INFINITY, f64::NEG_INFINITY, 1.0, 1.0));
        assert!(!close(f64::INFINITY, 1e300, 1.0, 1.0));
    }

    #[test]
    fn report_names_index_values_and_tolerance() {
        let r = compare_tensors(&t(&[1.0, 2.0, 3.0]), &t(&[1.0, 2.5, 3.0]), None).unwrap_err();
        assert!(r.starts_with("1 of 3 elements differ"), "{r}");
        assert!(r.contains("[1]") && r.contains("2.5"), "{r}");
        assert!(compare_tensors(&t(&[1.0]), &t(&[1.0 + 1e-6]), None).is_ok());
    }

    #[test]
    fn dtype_and_shape_must_match() {
        let a = Tensor::from_f64(DType::Float64, vec![1], vec![1.0]).unwrap();
        assert!(compare_tensors(&t(&[1.0]), &a, None)
            .unwrap_err()
            .contains("float32[1]"));
    }

    #[test]
    fn gradient_reports_name_the_argument() {
        let want: Gradients = [("input".to_string(), t(&[1.0, 2.0]))].into();
        let expected = ExpectedGradients {
            digest: "d".into(),
            framework: "torch".into(),
            grad_output: t(&[1.0]),
            value: Some(want.clone()),
            error: None,
        };
        assert_eq!(
            judge_gradients(&expected, &Outcome::Value(want), None),
            Verdict::Pass
        );
        let wrong: Gradients = [("input".to_string(), t(&[1.0, 2.5]))].into();
        let Verdict::Fail(r) = judge_gradients(&expected, &Outcome::Value(wrong), None) else {
            panic!("a wrong gradient passed")
        };
        assert!(r.starts_with("gradient of 'input': 1 of 2 elements"), "{r}");
        assert!(r.contains("[1]"), "{r}");
        let missing: Gradients = [("target".to_string(), t(&[1.0, 2.0]))].into();
        let Verdict::Fail(r) = judge_gradients(&expected, &Outcome::Value(missing), None) else {
            panic!("a missing gradient passed")
        };
        assert!(
            r.contains("'input': missing") && r.contains("'target': not asked"),
            "{r}"
        );
    }

    #[test]
    fn a_gradient_is_judged_at_the_precision_its_loss_was_computed_in() {
        let f64_grad = Tensor::from_f64(DType::Float64, vec![1], vec![1.0]).unwrap();
        let off =
            Tensor::from_f64(DType::Float64, vec![1], vec![1.0 + 8.0 * 2f64.powi(-23)]).unwrap();
        let expected = |loss: DType| ExpectedGradients {
            digest: "d".into(),
            framework: "tensorflow".into(),
            grad_output: Tensor::from_f64(loss, vec![], vec![1.0]).unwrap(),
            value: Some([("y_pred".to_string(), f64_grad.clone())].into()),
            error: None,
        };
        let answer = Outcome::Value([("y_pred".to_string(), off)].into());
        // 8 float32 ulps: within float32's tolerance, far outside float64's.
        assert_eq!(
            judge_gradients(&expected(DType::Float32), &answer, None),
            Verdict::Pass
        );
        let Verdict::Fail(r) = judge_gradients(&expected(DType::Float64), &answer, None) else {
            panic!("a float64 loss's gradient was judged at float32's tolerance")
        };
        assert!(r.contains("rtol=1e-7"), "{r}");
        assert!(gradient_tolerance(DType::Float32, DType::Float64).is_none());
        assert!(gradient_tolerance(DType::Int64, DType::Float16).is_none());
        let t = gradient_tolerance(DType::Float32, DType::Bfloat16).unwrap();
        assert!(
            t.rtol == 1.6e-2 && t.reason.contains("bfloat16"),
            "{}",
            t.reason
        );
    }
}
