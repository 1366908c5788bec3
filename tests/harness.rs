//! The harness's own guarantees: stale cases, broken specs and empty suites fail loudly; a
//! panicking or wrong backend fails only its trial, with a message that stands alone; expected
//! failures are inverted. Fixtures reuse committed framework expectations, never typed values.

use lossconf::backend::{Backend, Call, Outcome};
use lossconf::harness::{self, apply_expected_failures, load_plan, run_check, Check, Status};
use lossconf::tensor::Tensor;
use std::path::{Path, PathBuf};

/// A scratch copy of one spec (and its generated cases) under a fresh directory.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lossconf-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("specs")).unwrap();
    std::fs::create_dir_all(dir.join("cases")).unwrap();
    let root = harness::default_root();
    let spec = std::fs::read_dir(root.join("specs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(&spec, dir.join("specs").join(spec.file_name().unwrap())).unwrap();
    let (files, errors) = lossconf::generate::generate_dir(&dir.join("specs"));
    assert!(errors.is_empty(), "{errors:?}");
    for f in files {
        std::fs::write(
            dir.join("cases").join(format!("{}.yaml", f.family)),
            f.to_text(),
        )
        .unwrap();
    }
    dir
}

fn spec_path(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir.join("specs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

#[test]
fn a_spec_change_without_regeneration_is_a_failing_trial() {
    let dir = scratch("stale");
    assert!(load_plan(&dir)
        .problems
        .iter()
        .all(|p| !p.name.starts_with("lossconf/stale")));
    let spec = spec_path(&dir);
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text.replacen("- name: ", "- name: changed_", 1)).unwrap();
    let plan = load_plan(&dir);
    let stale = plan
        .problems
        .iter()
        .find(|p| p.name.starts_with("lossconf/stale/"));
    assert!(
        stale.is_some_and(|p| p.message.contains("generate")),
        "{:?}",
        plan.problems
    );
}

#[test]
fn a_broken_spec_names_file_and_field() {
    let dir = scratch("broken");
    let spec = spec_path(&dir);
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text.replacen("title:", "titel:", 1)).unwrap();
    let plan = load_plan(&dir);
    let p = plan
        .problems
        .iter()
        .find(|p| p.name.starts_with("lossconf/spec/"))
        .expect("a spec problem");
    assert!(
        p.message
            .contains(spec.file_name().unwrap().to_str().unwrap()),
        "{}",
        p.message
    );
    assert!(p.message.contains("titel"), "{}", p.message);
}

#[test]
fn missing_expectations_fail_each_case_and_name_the_tool() {
    let dir = scratch("noexp");
    let plan = load_plan(&dir);
    assert!(!plan.checks.is_empty());
    let status = run_check(&lossconf::reference::Reference, &plan.checks[0]);
    let Status::Failed(msg) = status else {
        panic!("{status:?}")
    };
    assert!(msg.contains("tools/reference.py"), "{msg}");
}

#[test]
fn an_empty_suite_is_an_error() {
    let dir = std::env::temp_dir().join(format!("lossconf-test-empty-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("specs")).unwrap();
    std::fs::create_dir_all(dir.join("cases")).unwrap();
    let plan = load_plan(&dir);
    assert!(plan.checks.is_empty());
    assert!(plan.problems.iter().any(|p| p.message.contains("no cases")));
}

/// Answers every call with the recorded expectation, optionally perturbed, or panics.
struct Scripted {
    expected: Tensor,
    mode: &'static str,
}

impl Backend for Scripted {
    fn name(&self) -> &str {
        self.mode
    }
    fn forward(&self, _: &Call) -> Outcome {
        match self.mode {
            "panic" => panic!("deliberate failure inside the backend"),
            "wrong" => {
                let bumped: Vec<f64> = self.expected.to_f64_vec().iter().map(|x| x + 1.0).collect();
                Outcome::Value(
                    Tensor::from_f64(
                        self.expected.dtype(),
                        self.expected.shape().to_vec(),
                        bumped,
                    )
                    .unwrap(),
                )
            }
            _ => Outcome::Value(self.expected.clone()),
        }
    }
}

fn finite_value_check() -> (Check, Tensor) {
    let plan = load_plan(&harness::default_root());
    plan.checks
        .into_iter()
        .find_map(|c| {
            let Ok(lossconf::harness::Expectation::Forward(e)) = c.expected.as_ref() else {
                return None;
            };
            let t = e.value.clone()?;
            (t.numel() > 1 && t.to_f64_vec().iter().all(|x| x.is_finite())).then_some((c, t))
        })
        .expect("a recorded case with a finite tensor value")
}

#[test]
fn a_wrong_backend_gets_a_report_that_stands_alone() {
    let (check, expected) = finite_value_check();
    assert_eq!(
        run_check(
            &Scripted {
                expected: expected.clone(),
                mode: "echo"
            },
            &check
        ),
        Status::Passed
    );
    let Status::Failed(msg) = run_check(
        &Scripted {
            expected,
            mode: "wrong",
        },
        &check,
    ) else {
        panic!()
    };
    for needle in [
        check.case.name.as_str(),
        check.case.api.as_str(),
        "expected: from",
        "[0",
        "|diff|",
        "allowed",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
    }
}

#[test]
fn a_panicking_backend_fails_only_that_trial() {
    let (check, expected) = finite_value_check();
    let Status::Failed(msg) = run_check(
        &Scripted {
            expected,
            mode: "panic",
        },
        &check,
    ) else {
        panic!()
    };
    assert!(msg.contains("deliberate failure"), "{msg}");
}

#[test]
fn expected_failures_are_inverted_and_dangling_entries_reported() {
    let (check, expected) = finite_value_check();
    let dir = std::env::temp_dir().join(format!("lossconf-test-xfail-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("xfail.yaml");
    std::fs::write(
        &file,
        format!("- {{trial: '{}', reason: known deviation}}\n- {{trial: 'no/such/trial', reason: stale}}\n", check.case.name),
    )
    .unwrap();
    let mut plan = load_plan(&harness::default_root());
    apply_expected_failures(&mut plan, &file);
    assert!(plan
        .problems
        .iter()
        .any(|p| p.message.contains("no/such/trial")));
    let marked = plan
        .checks
        .iter()
        .find(|c| c.case.name == check.case.name)
        .unwrap();
    let wrong = Scripted {
        expected: expected.clone(),
        mode: "wrong",
    };
    assert!(matches!(
        run_check(&wrong, marked),
        Status::ExpectedFailure(_)
    ));
    let Status::Failed(msg) = run_check(
        &Scripted {
            expected,
            mode: "echo",
        },
        marked,
    ) else {
        panic!()
    };
    assert!(msg.contains("passes now"), "{msg}");
}
