//! Cases x backend -> checks: loading `cases/` (with the staleness guard against `specs/`),
//! running one check with panics contained, expected failures, and libtest-mimic trials.
//!
//! ```no_run
//! // tests/conformance.rs of a third-party crate, with `[[test]] name = "conformance"
//! // harness = false` in its Cargo.toml and `lossconf` as a dev-dependency:
//! use lossconf::{Backend, Call, Outcome};
//!
//! struct Mine;
//! impl Backend for Mine {
//!     fn name(&self) -> &str { "mine" }
//!     fn forward(&self, call: &Call) -> Outcome {
//!         Outcome::Unsupported(format!("{} is not implemented yet", call.api))
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     lossconf::Harness::new(Mine).expected_failures("tests/lossconf-xfail.yaml").run()
//! }
//! ```

use crate::backend::{Backend, Gradients, Outcome};
use crate::case::{self, Case, Expected, ExpectedGradients};
use crate::compare::{judge, judge_gradients, Verdict};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// The directory holding this crate's `specs/` and `cases/`.
pub fn default_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What a check compares against: the loss value (or error) the framework answered, or the
/// gradients its autograd answered for the case's `wrt` arguments.
#[derive(Clone, Debug)]
pub enum Expectation {
    Forward(Arc<Expected>),
    Backward(Arc<ExpectedGradients>),
}

/// The suffix of a backward trial's name: `<case name>/grad`.
pub const BACKWARD_SUFFIX: &str = "/grad";

/// One case ready to run, forward or backward, with its expectation (or why there is none).
#[derive(Clone, Debug)]
pub struct Check {
    /// The trial name: the case name, plus `/grad` for a backward check.
    pub name: String,
    pub backward: bool,
    pub family: String,
    pub case: Arc<Case>,
    pub expected: Result<Expectation, String>,
    /// `PyTorch 2.15.0 (cases/mse_loss.expected.yaml)`.
    pub provenance: String,
    /// Why this check is listed as an expected failure, if it is.
    pub xfail: Option<String>,
}

/// Something wrong with the suite itself (a spec that does not load, stale cases, a dangling
/// expected-failure entry). Each becomes a failing trial: never a quietly smaller suite.
#[derive(Clone, Debug)]
pub struct Problem {
    pub name: String,
    pub message: String,
}

/// Everything a run needs.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub checks: Vec<Check>,
    pub problems: Vec<Problem>,
}

/// One entry of an expected-failures file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XfailEntry {
    /// An exact trial name, or a prefix ending in `*`.
    pub trial: String,
    pub reason: String,
    #[serde(default)]
    pub upstream: Option<String>,
}

impl XfailEntry {
    fn matches(&self, name: &str) -> bool {
        match self.trial.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == self.trial,
        }
    }
}

fn problem(name: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        name: name.into(),
        message: message.into(),
    }
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// Loads `root/cases`, checks it against `root/specs`, joins expectations.
pub fn load_plan(root: &Path) -> Plan {
    load_plan_only(root, None)
}

/// As [`load_plan`], restricted to one family when `only` names it: a `cargo nextest` trial
/// process (`--exact <name>`) then loads and checks one family, not all of them.
pub fn load_plan_only(root: &Path, only: Option<&str>) -> Plan {
    let mut plan = Plan::default();
    let cases_dir = root.join("cases");
    let specs_dir = root.join("specs");
    // Staleness: what the specs generate now must be exactly what is committed.
    let regenerate =
        "run `cargo run -- generate`, then `tools/reference.py` for new expected values";
    let mut generated = BTreeMap::new();
    let (files, errors) = crate::generate::generate_dir_only(&specs_dir, only);
    for f in files {
        generated.insert(f.family.clone(), f);
    }
    for e in errors {
        let stem = e
            .file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("?")
            .to_string();
        plan.problems.push(problem(
            format!("lossconf/spec/{stem}"),
            format!("{}: {}", rel(root, &e.file), e.message),
        ));
    }
    let families = match case::families(&cases_dir) {
        Ok(mut f) => {
            if let Some(family) = only {
                f.retain(|x| x == family);
            }
            f
        }
        Err(e) => {
            plan.problems.push(problem("lossconf/cases", e));
            return plan;
        }
    };
    for family in &families {
        let loaded = match case::load_family(&cases_dir, family) {
            Ok(l) => l,
            Err(e) => {
                plan.problems
                    .push(problem(format!("lossconf/cases/{family}"), e));
                continue;
            }
        };
        let spec_failed = plan
            .problems
            .iter()
            .any(|p| p.name == format!("lossconf/spec/{family}"));
        match generated.get(family) {
            Some(g) if g.to_text() != loaded.cases.to_text() => plan.problems.push(problem(
                format!("lossconf/stale/{family}"),
                format!(
                    "{} is stale: specs/{family}.yaml now generates different cases; {regenerate}",
                    rel(root, &loaded.cases_path)
                ),
            )),
            None if !spec_failed => plan.problems.push(problem(
                format!("lossconf/stale/{family}"),
                format!(
                    "{} has no spec specs/{family}.yaml; delete it or restore the spec",
                    rel(root, &loaded.cases_path)
                ),
            )),
            _ => {}
        }
        let expected_rel = rel(root, &loaded.expected_path);
        let gradients_rel = rel(root, &loaded.gradients_path);
        for c in loaded.cases.cases {
            let case = Arc::new(c);
            let forward = joined(
                loaded.expected.as_ref(),
                &case,
                &expected_rel,
                "record what the frameworks answer",
            );
            // A backward check exists for every case with `wrt` whose forward answer is a value.
            let wants_backward =
                !case.wrt.is_empty() && matches!(&forward, Ok((e, _)) if e.value.is_some());
            plan.checks.push(Check {
                name: case.name.clone(),
                backward: false,
                family: family.clone(),
                case: Arc::clone(&case),
                provenance: forward.as_ref().map(|(_, p)| p.clone()).unwrap_or_default(),
                expected: forward.map(|(e, _)| Expectation::Forward(e)),
                xfail: None,
            });
            if wants_backward {
                let backward = joined(
                    loaded.gradients.as_ref(),
                    &case,
                    &gradients_rel,
                    "record what the frameworks' autograd answers",
                );
                plan.checks.push(Check {
                    name: format!("{}{BACKWARD_SUFFIX}", case.name),
                    backward: true,
                    family: family.clone(),
                    case,
                    provenance: backward
                        .as_ref()
                        .map(|(_, p)| p.clone())
                        .unwrap_or_default(),
                    expected: backward.map(|(e, _)| Expectation::Backward(e)),
                    xfail: None,
                });
            }
        }
    }
    for family in generated.keys() {
        if !families.contains(family) {
            plan.problems.push(problem(
                format!("lossconf/stale/{family}"),
                format!("specs/{family}.yaml has no cases/{family}.yaml; {regenerate}"),
            ));
        }
    }
    if plan.checks.is_empty() {
        plan.problems.push(problem(
            "lossconf/cases",
            format!(
                "no cases found under {}: an empty suite proves nothing",
                cases_dir.display()
            ),
        ));
    }
    plan
}

/// Joins a case with its entry in an expected or gradients file, checking the digest; the
/// `Err` says how to fix a missing or stale entry.
fn joined<E: Clone + HasDigest>(
    file: Option<&case::ExpectedFile<E>>,
    case: &Case,
    file_rel: &str,
    what: &str,
) -> Result<(Arc<E>, String), String> {
    let Some(file) = file else {
        return Err(format!(
            "{file_rel} does not exist: run `tools/reference.py` to {what}"
        ));
    };
    match file.expected.get(&case.name) {
        None => Err(format!(
            "{file_rel} has no entry for this case: run `tools/reference.py`"
        )),
        Some(e) if e.digest() != case.digest => Err(format!(
            "{file_rel} holds an entry for other inputs (digest {} vs case {}): run `tools/reference.py`",
            e.digest(),
            case.digest
        )),
        Some(e) => Ok((
            Arc::new(e.clone()),
            format!("{} ({file_rel})", file.provenance(e.framework())),
        )),
    }
}

/// The fields `joined` needs from an expected-file entry.
trait HasDigest {
    fn digest(&self) -> &str;
    fn framework(&self) -> &str;
}

impl HasDigest for Expected {
    fn digest(&self) -> &str {
        &self.digest
    }
    fn framework(&self) -> &str {
        &self.framework
    }
}

impl HasDigest for ExpectedGradients {
    fn digest(&self) -> &str {
        &self.digest
    }
    fn framework(&self) -> &str {
        &self.framework
    }
}

/// Marks the checks listed in an expected-failures file; entries that match nothing are problems.
pub fn apply_expected_failures(plan: &mut Plan, path: &Path) {
    let name = format!(
        "lossconf/expected-failures/{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("?")
    );
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            plan.problems.push(problem(
                name,
                format!("{}: cannot read: {e}", path.display()),
            ));
            return;
        }
    };
    let entries: Vec<XfailEntry> =
        match serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(&text)) {
            Ok(v) => v,
            Err(e) => {
                let field = e.path().to_string();
                plan.problems.push(problem(
                    name,
                    format!("{}: field `{field}`: {}", path.display(), e.into_inner()),
                ));
                return;
            }
        };
    for entry in &entries {
        let mut hit = false;
        for c in plan.checks.iter_mut().filter(|c| entry.matches(&c.name)) {
            hit = true;
            let upstream = entry
                .upstream
                .as_deref()
                .map(|u| format!(" ({u})"))
                .unwrap_or_default();
            c.xfail = Some(format!("{}{upstream}", entry.reason));
        }
        if !hit {
            plan.problems.push(problem(
                name.clone(),
                format!(
                    "{}: entry '{}' matches no trial; remove it",
                    path.display(),
                    entry.trial
                ),
            ));
        }
    }
}

/// Calls the backend with panics contained: a panic is that trial's failure, nothing more.
pub fn call_backend(backend: &dyn Backend, case: &Case) -> Result<Outcome, String> {
    let call = case.call();
    catch_unwind(AssertUnwindSafe(|| backend.forward(&call))).map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into());
        format!("the backend panicked: {msg}")
    })
}

/// Calls the backend's `backward` with panics contained.
pub fn call_backend_backward(
    backend: &dyn Backend,
    case: &Case,
    grad_output: &crate::tensor::Tensor,
) -> Result<Outcome<Gradients>, String> {
    let call = case.call();
    catch_unwind(AssertUnwindSafe(|| {
        backend.backward(&call, &case.wrt, Some(grad_output))
    }))
    .map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into());
        format!("the backend panicked in backward: {msg}")
    })
}

/// The header of every failure message: which case, which call, where the expectation is from.
fn context(backend: &dyn Backend, check: &Check) -> String {
    let c = &check.case;
    let mut s = format!(
        "case:     {}\ncall:     {}\n",
        check.name,
        c.call().describe()
    );
    if let Ok(Expectation::Backward(e)) = &check.expected {
        s.push_str(&format!(
            "backward: d/d[{}] of sum(grad_output * loss), grad_output = {}\n",
            c.wrt.join(", "),
            e.grad_output.describe()
        ));
    }
    if !check.provenance.is_empty() {
        s.push_str(&format!("expected: from {}\n", check.provenance));
    }
    if let Some(src) = &c.source {
        s.push_str(&format!("source:   {src}\n"));
    }
    s.push_str(&format!("backend:  {}\n", backend.name()));
    s
}

/// The result of running one check.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    Passed,
    Failed(String),
    Skipped(String),
    /// Failed as the expected-failures file says it does.
    ExpectedFailure(String),
}

/// Runs one check against a backend and applies the expected-failure inversion.
pub fn run_check(backend: &dyn Backend, check: &Check) -> Status {
    let expected = match &check.expected {
        Ok(e) => e,
        Err(why) => return Status::Failed(format!("{}{why}", context(backend, check))),
    };
    if let Some(apis) = backend.apis() {
        if !apis.iter().any(|a| *a == check.case.api) {
            return Status::Skipped(format!(
                "{} does not implement {}",
                backend.name(),
                check.case.api
            ));
        }
    }
    let tolerance = check.case.tolerance.as_ref();
    let verdict = match expected {
        Expectation::Forward(e) => match call_backend(backend, &check.case) {
            Ok(outcome) => judge(e, &outcome, tolerance),
            Err(panic) => Verdict::Fail(panic),
        },
        Expectation::Backward(e) => {
            match call_backend_backward(backend, &check.case, &e.grad_output) {
                Ok(outcome) => judge_gradients(e, &outcome, tolerance),
                Err(panic) => Verdict::Fail(panic),
            }
        }
    };
    match (verdict, &check.xfail) {
        (Verdict::Pass, None) => Status::Passed,
        (Verdict::Skip(why), _) => Status::Skipped(why),
        (Verdict::Fail(report), None) => Status::Failed(format!("{}{report}", context(backend, check))),
        (Verdict::Fail(_), Some(reason)) => Status::ExpectedFailure(reason.clone()),
        (Verdict::Pass, Some(reason)) => Status::Failed(format!(
            "{}listed as an expected failure ({reason}) but it passes now: remove it from the expected-failures file",
            context(backend, check)
        )),
    }
}

/// Builds libtest-mimic trials for a backend: `cargo test -- <filter>` selects by name.
pub struct Harness {
    backend: Arc<dyn Backend>,
    root: PathBuf,
    xfail: Option<PathBuf>,
}

impl Harness {
    /// A harness over this crate's own `specs/` and `cases/`.
    pub fn new(backend: impl Backend + 'static) -> Harness {
        Harness {
            backend: Arc::new(backend),
            root: default_root(),
            xfail: None,
        }
    }

    /// Uses the `specs/` and `cases/` under another directory.
    pub fn root(mut self, root: impl Into<PathBuf>) -> Harness {
        self.root = root.into();
        self
    }

    /// A YAML list of `{trial, reason, upstream?}`: these trials must fail, and fail loudly
    /// once they pass. A relative path is taken from the calling crate's directory.
    pub fn expected_failures(mut self, path: impl Into<PathBuf>) -> Harness {
        self.xfail = Some(path.into());
        self
    }

    /// The plan this harness runs.
    pub fn plan(&self) -> Plan {
        self.plan_only(None)
    }

    fn plan_only(&self, only: Option<&str>) -> Plan {
        let mut plan = load_plan_only(&self.root, only);
        if let Some(p) = &self.xfail {
            apply_expected_failures(&mut plan, p);
        }
        plan
    }

    /// One trial per check plus one failing trial per problem, sorted by name.
    pub fn trials(&self) -> Vec<libtest_mimic::Trial> {
        self.trials_only(None)
    }

    fn trials_only(&self, only: Option<&str>) -> Vec<libtest_mimic::Trial> {
        use libtest_mimic::{Completion, Trial};
        let plan = self.plan_only(only);
        let mut trials: Vec<Trial> = plan
            .problems
            .into_iter()
            .map(|p| Trial::test(p.name, move || Err(p.message.into())))
            .collect();
        for check in plan.checks {
            let backend = Arc::clone(&self.backend);
            let name = check.name.clone();
            let kind = check.family.clone();
            trials.push(
                Trial::ignorable_test(name, move || match run_check(backend.as_ref(), &check) {
                    Status::Passed | Status::ExpectedFailure(_) => Ok(Completion::Completed),
                    Status::Skipped(why) => Ok(Completion::ignored_with(why)),
                    Status::Failed(msg) => Err(msg.into()),
                })
                .with_kind(kind),
            );
        }
        trials.sort_by(|a, b| a.name().cmp(b.name()));
        trials
    }

    /// Parses libtest arguments from the command line and runs the trials.
    pub fn run(self) -> ExitCode {
        let args = libtest_mimic::Arguments::from_args();
        // `--exact family/...` (how nextest runs each trial) needs only that family loaded.
        let only = match (&args.filter, args.exact) {
            (Some(name), true) if !name.starts_with("lossconf/") => {
                name.split('/').next().map(str::to_string)
            }
            _ => None,
        };
        let trials = self.trials_only(only.as_deref());
        libtest_mimic::run(&args, trials).exit_code()
    }
}
