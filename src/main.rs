//! `lossconf`: generate cases from specs, run the suite, list what is covered, serve the
//! reference backend over `lossconf/1`.

use clap::{Parser, Subcommand};
use lossconf::harness::{self, Check, Plan, Status};
use lossconf::reference::Reference;
use lossconf::Backend;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "lossconf",
    version,
    about = "Conformance suite for loss functions (PyTorch, TensorFlow/Keras)"
)]
struct Cli {
    /// Directory holding specs/ and cases/ (default: this crate's own).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Expand specs/ into cases/ (deterministic; cases/*.expected.yaml is left to tools/reference.py).
    Generate {
        /// Only report stale files; exit 1 if any.
        #[arg(long)]
        check: bool,
    },
    /// Run the suite on the reference backend and print a summary per family and API.
    Run {
        /// Run only trials whose name contains one of these strings.
        filter: Vec<String>,
        /// An expected-failures file (YAML list of {trial, reason}).
        #[arg(long)]
        expected_failures: Option<PathBuf>,
        /// How many failure reports to print in full.
        #[arg(long, default_value_t = 10)]
        show: usize,
    },
    /// List families, APIs and case counts.
    List,
    /// Serve the reference backend over lossconf/1 on stdin/stdout.
    Serve,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = cli.root.unwrap_or_else(harness::default_root);
    match cli.command {
        Command::Generate { check } => generate(&root, check),
        Command::Run {
            filter,
            expected_failures,
            show,
        } => run(&root, &filter, expected_failures.as_deref(), show),
        Command::List => list(&root),
        Command::Serve => {
            let stdin = std::io::stdin();
            match lossconf::protocol::serve(&Reference, stdin.lock(), std::io::stdout().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lossconf serve: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn generate(root: &Path, check: bool) -> ExitCode {
    let started = Instant::now();
    let files = match lossconf::generate::generate_dir(&root.join("specs")) {
        Ok(f) => f,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let cases_dir = root.join("cases");
    let mut stale = 0;
    let mut total = 0;
    for f in &files {
        let (path, _) = lossconf::case::paths(&cases_dir, &f.family);
        let text = f.to_text();
        total += f.cases.len();
        let current = std::fs::read_to_string(&path).ok();
        let state = if current.as_deref() == Some(text.as_str()) {
            "up to date"
        } else if check {
            stale += 1;
            "STALE"
        } else {
            if let Err(e) =
                std::fs::create_dir_all(&cases_dir).and_then(|()| std::fs::write(&path, &text))
            {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            "written"
        };
        println!("{:<40} {:>6} cases  {state}", f.family, f.cases.len());
    }
    println!(
        "{} families, {total} cases in {:.2} s",
        files.len(),
        started.elapsed().as_secs_f64()
    );
    if stale > 0 {
        eprintln!("{stale} case files are stale: run `lossconf generate`, then tools/reference.py");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Runs checks on all cores; results come back in plan order.
fn run_all(backend: &dyn Backend, checks: &[&Check]) -> Vec<Status> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = checks.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = checks
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|c| harness::run_check(backend, c))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("run_check contains backend panics"))
            .collect()
    })
}

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
    skipped: usize,
    xfail: usize,
}

fn run(root: &Path, filter: &[String], xfail: Option<&Path>, show: usize) -> ExitCode {
    let started = Instant::now();
    let mut plan: Plan = harness::load_plan(root);
    if let Some(p) = xfail {
        harness::apply_expected_failures(&mut plan, p);
    }
    let selected: Vec<&Check> = plan
        .checks
        .iter()
        .filter(|c| filter.is_empty() || filter.iter().any(|f| c.case.name.contains(f.as_str())))
        .collect();
    let statuses = run_all(&Reference, &selected);
    let mut by_api: BTreeMap<(String, String), Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut total = Tally::default();
    for (check, status) in selected.iter().zip(statuses) {
        let t = by_api
            .entry((check.family.clone(), check.case.api.clone()))
            .or_default();
        match status {
            Status::Passed => (t.passed += 1, total.passed += 1),
            Status::Skipped(_) => (t.skipped += 1, total.skipped += 1),
            Status::ExpectedFailure(_) => (t.xfail += 1, total.xfail += 1),
            Status::Failed(msg) => {
                failures.push(msg);
                (t.failed += 1, total.failed += 1)
            }
        };
    }
    println!(
        "{:<34} {:<52} {:>7} {:>7} {:>7} {:>6}",
        "family", "api", "passed", "failed", "skipped", "xfail"
    );
    for ((family, api), t) in &by_api {
        println!(
            "{family:<34} {api:<52} {:>7} {:>7} {:>7} {:>6}",
            t.passed, t.failed, t.skipped, t.xfail
        );
    }
    for p in &plan.problems {
        failures.push(format!("{}: {}", p.name, p.message));
        total.failed += 1;
    }
    for f in failures.iter().take(show) {
        println!("\n--- FAILED\n{f}");
    }
    if failures.len() > show {
        println!(
            "\n... {} more failures (use --show N)",
            failures.len() - show
        );
    }
    if selected.is_empty() {
        println!("\nno case matches the filter");
        total.failed += 1;
    }
    println!(
        "\nreference: {} passed, {} failed, {} skipped, {} expected failures in {:.2} s",
        total.passed,
        total.failed,
        total.skipped,
        total.xfail,
        started.elapsed().as_secs_f64()
    );
    if total.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn list(root: &Path) -> ExitCode {
    let plan = harness::load_plan(root);
    let mut by_api: BTreeMap<(String, String), usize> = BTreeMap::new();
    for c in &plan.checks {
        *by_api
            .entry((c.family.clone(), c.case.api.clone()))
            .or_default() += 1;
    }
    println!("{:<34} {:<52} {:>6}", "family", "api", "cases");
    for ((family, api), n) in &by_api {
        println!("{family:<34} {api:<52} {n:>6}");
    }
    println!("{} cases", plan.checks.len());
    for p in &plan.problems {
        eprintln!("problem: {}: {}", p.name, p.message);
    }
    ExitCode::SUCCESS
}
