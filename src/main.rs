//! `lossconf`: generate cases from specs, run the suite, list what is covered, serve the
//! reference backend over `lossconf/1`.

use clap::{Parser, Subcommand};
use lossconf::harness;
use lossconf::process::ProcessBackend;
use lossconf::reference::Reference;
use lossconf::summary;
use lossconf::Backend;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

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

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Format {
    Pretty,
    Json,
    Junit,
    Markdown,
}

#[derive(clap::Args)]
struct RunOptions {
    /// Run only trials whose name contains one of these strings.
    filter: Vec<String>,
    /// Check a program speaking lossconf/1 on stdin/stdout instead of the reference (run by `sh -c`).
    #[arg(long)]
    command: Option<String>,
    /// Seconds a process backend may take to answer one call before that call fails and it is restarted.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// An expected-failures file (YAML list of {trial, reason, upstream?}).
    #[arg(long)]
    expected_failures: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Pretty)]
    format: Format,
    /// How many failure reports `pretty` prints in full.
    #[arg(long, default_value_t = 10)]
    show: usize,
}

#[derive(Subcommand)]
enum Command {
    /// Expand specs/ into cases/ (deterministic; cases/*.expected.yaml is left to tools/reference.py).
    Generate {
        /// Only these families (default: all).
        families: Vec<String>,
        /// Only report stale files; exit 1 if any.
        #[arg(long)]
        check: bool,
    },
    /// Run the suite (on the reference backend, or --command) and print a summary per family and API.
    Run(RunOptions),
    /// List families, APIs and case counts.
    List,
    /// Generate docs/ (a page per family with plots, the coverage matrix) and README's coverage table.
    Report {
        /// Only report stale files; exit 1 if any.
        #[arg(long)]
        check: bool,
    },
    /// Serve the reference backend over lossconf/1 on stdin/stdout.
    Serve,
    /// Check a backend's `backward` against central finite differences of its own `forward`
    /// (float64), on the suite's inputs: no recorded values needed.
    Gradcheck(GradcheckOptions),
    /// Time the reference on large fixed workloads, the whole suite and `serve` (docs/benchmarks.md).
    Bench(lossconf::bench::Options),
    /// Accuracy cases: each backend, PyTorch and TensorFlow in ULPs of the exact value (accuracy/).
    Accuracy(lossconf::accuracy::CliOptions),
}

#[derive(clap::Args)]
struct GradcheckOptions {
    /// Check only cases whose name contains one of these strings.
    filter: Vec<String>,
    /// Check a program speaking lossconf/1 instead of the reference (run by `sh -c`).
    #[arg(long)]
    command: Option<String>,
    /// Seconds a process backend may take per call.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Elements checked per differentiated argument.
    #[arg(long, default_value_t = 6)]
    max_elements: usize,
    /// Relative tolerance between the backward and the central difference.
    #[arg(long, default_value_t = 1e-4)]
    rtol: f64,
    /// Absolute tolerance between the backward and the central difference.
    #[arg(long, default_value_t = 1e-6)]
    atol: f64,
    /// Seed of the random grad_output.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How many disagreements to print.
    #[arg(long, default_value_t = 20)]
    show: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = cli.root.unwrap_or_else(harness::default_root);
    match cli.command {
        Command::Generate { families, check } => generate(&root, &families, check),
        Command::Run(opts) => run(&root, opts),
        Command::List => list(&root),
        Command::Report { check } => report(&root, check),
        Command::Gradcheck(opts) => gradcheck(&root, opts),
        Command::Bench(opts) => lossconf::bench::main(&root, opts),
        Command::Accuracy(opts) => lossconf::accuracy::cli(&root, opts),
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

fn generate(root: &Path, families: &[String], check: bool) -> ExitCode {
    let started = Instant::now();
    let (mut files, errors) = lossconf::generate::generate_dir(&root.join("specs"));
    if !families.is_empty() {
        files.retain(|f| families.contains(&f.family));
    }
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
    for e in &errors {
        eprintln!("error: {e}");
    }
    if stale > 0 {
        eprintln!("{stale} case files are stale: run `lossconf generate`, then tools/reference.py");
    }
    if stale > 0 || !errors.is_empty() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn run(root: &Path, opts: RunOptions) -> ExitCode {
    let backend: Box<dyn Backend> = match &opts.command {
        None => Box::new(Reference),
        Some(cmd) => match ProcessBackend::start(cmd, Duration::from_secs_f64(opts.timeout)) {
            Ok(b) => Box::new(b),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let mut plan = harness::load_plan(root);
    // The reference's own known differences are listed (with reasons) in one file.
    let default_xfail = root.join("expected-failures/reference.yaml");
    let xfail = match (&opts.expected_failures, &opts.command) {
        (Some(p), _) => Some(p.clone()),
        (None, None) if default_xfail.exists() => Some(default_xfail),
        _ => None,
    };
    if let Some(p) = &xfail {
        harness::apply_expected_failures(&mut plan, p);
    }
    let result = summary::run(backend.as_ref(), &plan, &opts.filter);
    let text = match opts.format {
        Format::Pretty => result.pretty(opts.show),
        Format::Json => result.json(),
        Format::Junit => result.junit(),
        Format::Markdown => result.markdown(),
    };
    print!("{text}");
    if !matches!(opts.format, Format::Pretty) {
        eprintln!("{}", result.closing_line());
    }
    if result.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn gradcheck(root: &Path, opts: GradcheckOptions) -> ExitCode {
    let backend: Box<dyn Backend> = match &opts.command {
        None => Box::new(Reference),
        Some(cmd) => match ProcessBackend::start(cmd, Duration::from_secs_f64(opts.timeout)) {
            Ok(b) => Box::new(b),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let started = Instant::now();
    let plan = harness::load_plan(root);
    let cases: Vec<_> = plan
        .checks
        .iter()
        .filter(|c| !c.backward && !c.case.wrt.is_empty())
        .filter(|c| {
            opts.filter.is_empty() || opts.filter.iter().any(|f| c.name.contains(f.as_str()))
        })
        .map(|c| c.case.as_ref())
        .collect();
    let settings = lossconf::gradcheck::Settings {
        max_elements: opts.max_elements,
        rtol: opts.rtol,
        atol: opts.atol,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = cases.len().div_ceil(threads).max(1);
    let backend = backend.as_ref();
    let reports: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .chunks(chunk)
            .map(|part| {
                let settings = &settings;
                s.spawn(move || {
                    part.iter()
                        .map(|c| lossconf::gradcheck::check_case(backend, c, settings, opts.seed))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("gradcheck worker"))
            .collect()
    });
    print!("{}", lossconf::gradcheck::render(&reports, opts.show));
    println!(
        "backend {} in {:.2} s",
        backend.name(),
        started.elapsed().as_secs_f64()
    );
    if reports.iter().any(|r| r.disagreements().next().is_some()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn report(root: &Path, check: bool) -> ExitCode {
    let files = match lossconf::report::build(root) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if check {
        let stale = lossconf::report::stale(root, &files);
        for p in &stale {
            eprintln!("stale: {}", p.display());
        }
        println!("{} generated files, {} stale", files.len(), stale.len());
        return if stale.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    match lossconf::report::write(root, &files) {
        Ok(touched) => {
            for p in &touched {
                println!("updated {}", p.display());
            }
            println!("{} generated files, {} updated", files.len(), touched.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn list(root: &Path) -> ExitCode {
    let plan = harness::load_plan(root);
    let mut by_api: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    for c in &plan.checks {
        let n = by_api
            .entry((c.family.clone(), c.case.api.clone()))
            .or_default();
        if c.backward {
            n.1 += 1;
        } else {
            n.0 += 1;
        }
    }
    println!(
        "{:<34} {:<52} {:>6} {:>9}",
        "family", "api", "cases", "backward"
    );
    for ((family, api), (f, b)) in &by_api {
        println!("{family:<34} {api:<52} {f:>6} {b:>9}");
    }
    let backward = plan.checks.iter().filter(|c| c.backward).count();
    println!(
        "{} cases, {backward} backward checks",
        plan.checks.len() - backward
    );
    for p in &plan.problems {
        eprintln!("problem: {}: {}", p.name, p.message);
    }
    ExitCode::SUCCESS
}
