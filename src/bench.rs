//! `lossconf bench`: times the reference on fixed large workloads (forward, and forward plus
//! backward), the whole suite, and `lossconf serve`'s calls per second; with `--torch`, prints
//! the ratio to PyTorch's times measured by `tools/bench_torch.py` on the same workloads.
//!
//! Inputs are deterministic (ChaCha8, fixed seeds) and drawn from the distributions the torch
//! script uses (`randn` logits, `randint` classes, `rand` probabilities); building them is not
//! timed. What is timed is the real reference path: `Reference.forward(&call)` and
//! `Reference.backward(&call, wrt, None)` (which runs the forward too, as autograd does).
//! See `docs/benchmarks.md`.
#![allow(clippy::type_complexity)] // per-workload (forward, backward) timing maps

use crate::backend::{Backend, Call, Outcome, Value};
use crate::reference::Reference;
use crate::tensor::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Threads for the reference's kernels (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Only workloads (or `suite`, `serve`) whose name contains one of these strings.
    #[arg(long)]
    pub only: Vec<String>,
    /// Timed repetitions per measurement (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Divide every workload's size by this (for a quick smoke run).
    #[arg(long, default_value_t = 1)]
    pub shrink: usize,
    /// PyTorch's results (JSON from tools/bench_torch.py): adds the ratio columns.
    #[arg(long)]
    pub torch: Option<PathBuf>,
    /// Output format: `table` or `json`.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Requests sent to `lossconf serve` for the calls-per-second measurement.
    #[arg(long, default_value_t = 2000)]
    pub serve_calls: usize,
}

/// One workload: a name, a description of its inputs, the call and the argument to
/// differentiate.
pub struct Workload {
    pub name: &'static str,
    pub shape: String,
    pub call: Call,
    pub wrt: &'static str,
}

/// Min and median of some timings, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub min: f64,
    pub median: f64,
}

impl Timing {
    fn of(mut v: Vec<f64>) -> Timing {
        v.sort_by(|a, b| a.total_cmp(b));
        Timing {
            min: v[0],
            median: v[v.len() / 2],
        }
    }
    fn json(&self) -> Json {
        json!({"min": self.min, "median": self.median})
    }
}

/// `n` values drawn in parallel, chunk by chunk, each chunk from its own seeded generator.
fn draw(n: usize, seed: u64, f: impl Fn(&mut rand_chacha::ChaCha8Rng) -> f64 + Sync) -> Vec<f64> {
    const CHUNK: usize = 1 << 16;
    let mut out = vec![0.0; n];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, c)| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        for v in c {
            *v = f(&mut rng);
        }
    });
    out
}

fn randn(rng: &mut rand_chacha::ChaCha8Rng) -> f64 {
    // Box-Muller (only the cosine half).
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn f32_tensor(shape: Vec<usize>, data: Vec<f64>) -> Value {
    Value::Tensor(Tensor::from_f64(DType::Float32, shape, data).expect("bench tensor"))
}

fn i64_tensor(shape: Vec<usize>, data: Vec<i64>) -> Value {
    Value::Tensor(Tensor::from_i64(DType::Int64, shape, data).expect("bench tensor"))
}

fn call(api: &str, args: Vec<(&str, Value)>) -> Call {
    Call {
        api: format!("torch.nn.functional.{api}"),
        args: args
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn log_softmax_rows(x: &mut [f64], c: usize) {
    x.par_chunks_mut(c).for_each(|row| {
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
        let l = m + s.ln();
        for v in row {
            *v = (*v as f32 as f64) - l;
        }
    });
}

/// The workload names, in order (the torch script uses the same names).
pub const NAMES: [&str; 7] = [
    "cross_entropy",
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "binary_cross_entropy_with_logits",
    "kl_div",
    "ctc_loss",
];

/// Builds one workload; `shrink` divides its size.
pub fn workload(name: &str, shrink: usize) -> Option<Workload> {
    let s = shrink.max(1);
    let red = |r: &str| Value::Str(r.into());
    Some(match name {
        "cross_entropy" => {
            let (n, c) = (8192 / s, 32000);
            let x = draw(n * c, 1, randn);
            let t: Vec<i64> = draw(n, 2, |r| r.gen_range(0..c) as f64)
                .into_iter()
                .map(|v| v as i64)
                .collect();
            Workload {
                name: "cross_entropy",
                shape: format!("float32 ({n}, {c}), int64 targets, mean"),
                call: call(
                    "cross_entropy",
                    vec![
                        ("input", f32_tensor(vec![n, c], x)),
                        ("target", i64_tensor(vec![n], t)),
                    ],
                ),
                wrt: "input",
            }
        }
        "mse_loss" | "l1_loss" | "smooth_l1_loss" | "binary_cross_entropy_with_logits" => {
            let n = (1usize << 24) / s;
            let x = draw(n, 3, randn);
            let t = if name == "binary_cross_entropy_with_logits" {
                draw(n, 4, |r| r.gen::<f64>())
            } else {
                draw(n, 4, randn)
            };
            let api = NAMES.iter().find(|k| **k == name)?;
            Workload {
                name: api,
                shape: format!("float32 ({n},), mean"),
                call: call(
                    name,
                    vec![
                        ("input", f32_tensor(vec![n], x)),
                        ("target", f32_tensor(vec![n], t)),
                    ],
                ),
                wrt: "input",
            }
        }
        "kl_div" => {
            let (n, c) = (4096 / s, 4096);
            let mut x = draw(n * c, 5, randn);
            log_softmax_rows(&mut x, c);
            let t = draw(n * c, 6, |r| r.gen::<f64>());
            Workload {
                name: "kl_div",
                shape: format!("float32 ({n}, {c}), batchmean"),
                call: call(
                    "kl_div",
                    vec![
                        ("input", f32_tensor(vec![n, c], x)),
                        ("target", f32_tensor(vec![n, c], t)),
                        ("reduction", red("batchmean")),
                    ],
                ),
                wrt: "input",
            }
        }
        "ctc_loss" => {
            let (t_len, n, c, sl) = (200, 32 / s.min(32), 50, 40);
            let mut x = draw(t_len * n * c, 7, randn);
            log_softmax_rows(&mut x, c);
            let tg: Vec<i64> = draw(n * sl, 8, |r| r.gen_range(1..c) as f64)
                .into_iter()
                .map(|v| v as i64)
                .collect();
            Workload {
                name: "ctc_loss",
                shape: format!("float32 (T={t_len}, N={n}, C={c}), S={sl}, mean"),
                call: call(
                    "ctc_loss",
                    vec![
                        ("log_probs", f32_tensor(vec![t_len, n, c], x)),
                        ("targets", i64_tensor(vec![n, sl], tg)),
                        ("input_lengths", i64_tensor(vec![n], vec![t_len as i64; n])),
                        ("target_lengths", i64_tensor(vec![n], vec![sl as i64; n])),
                    ],
                ),
                wrt: "log_probs",
            }
        }
        _ => return None,
    })
}

fn time(repeat: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<Timing, String> {
    f()?; // warm-up
    let mut v = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        let t0 = Instant::now();
        f()?;
        v.push(t0.elapsed().as_secs_f64());
    }
    Ok(Timing::of(v))
}

fn run_backward(w: &Workload) -> Result<(), String> {
    let wrt = [w.wrt.to_string()];
    match Reference.backward(&w.call, &wrt, None) {
        Outcome::Value(_) => Ok(()),
        Outcome::Error(e) => Err(e.to_string()),
        Outcome::Unsupported(why) => Err(why),
    }
}

fn run_forward(w: &Workload) -> Result<(), String> {
    match Reference.forward(&w.call) {
        Outcome::Value(_) => Ok(()),
        Outcome::Error(e) => Err(e.to_string()),
        Outcome::Unsupported(why) => Err(why),
    }
}

fn selected(opts: &Options, name: &str) -> bool {
    opts.only.is_empty() || opts.only.iter().any(|o| name.contains(o.as_str()))
}

/// Whole-suite wall time: in process (load the plan, run every check as `lossconf run` does),
/// and as a child process `lossconf run`.
fn suite(root: &Path) -> Json {
    let t0 = Instant::now();
    let plan = crate::harness::load_plan(root);
    let load = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let result = crate::summary::run(&Reference, &plan, &[]);
    let run = t1.elapsed().as_secs_f64();
    let tally = result.total();
    let process = std::env::current_exe().ok().and_then(|exe| {
        let t = Instant::now();
        let status = Command::new(exe)
            .arg("--root")
            .arg(root)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        Some((t.elapsed().as_secs_f64(), status.success()))
    });
    json!({
        "load_seconds": load,
        "run_seconds": run,
        "total_seconds": load + run,
        "passed": tally.passed,
        "failed": tally.failed,
        "skipped": tally.skipped,
        "process_seconds": process.map(|p| p.0),
        "process_ok": process.map(|p| p.1),
    })
}

fn serve_request(id: usize) -> String {
    let data: Vec<f64> = (0..16)
        .map(|i| (i as f64 * 0.37 + id as f64 * 0.01).sin())
        .collect();
    let target: Vec<f64> = (0..16).map(|i| (i as f64 * 0.11).cos()).collect();
    json!({
        "id": id,
        "op": "forward",
        "api": "torch.nn.functional.mse_loss",
        "args": {
            "input": {"dtype": "float32", "shape": [16], "data": data.iter().map(|v| *v as f32 as f64).collect::<Vec<_>>()},
            "target": {"dtype": "float32", "shape": [16], "data": target.iter().map(|v| *v as f32 as f64).collect::<Vec<_>>()},
        }
    })
    .to_string()
}

/// `lossconf serve`'s calls per second: one request at a time (round trips), then all requests
/// written by one thread while another reads (pipelined).
fn serve(calls: usize) -> Result<Json, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let requests: Vec<String> = (0..calls).map(serve_request).collect();
    let spawn = || {
        Command::new(&exe)
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())
    };
    // Round trips.
    let mut child = spawn()?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    let mut one = |req: &str, stdin: &mut std::process::ChildStdin| -> Result<(), String> {
        stdin
            .write_all(req.as_bytes())
            .and_then(|_| stdin.write_all(b"\n"))
            .and_then(|_| stdin.flush())
            .map_err(|e| e.to_string())?;
        line.clear();
        stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        if !line.contains("\"ok\"") {
            return Err(format!("serve answered {line}"));
        }
        Ok(())
    };
    for r in requests.iter().take(50) {
        one(r, &mut stdin)?;
    }
    let t0 = Instant::now();
    for r in &requests {
        one(r, &mut stdin)?;
    }
    let rt = t0.elapsed().as_secs_f64();
    drop(stdin);
    let _ = child.wait();
    // Pipelined.
    let mut child = spawn()?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let payload: String = requests.iter().map(|r| format!("{r}\n")).collect();
    let t1 = Instant::now();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(payload.as_bytes());
    });
    let mut answered = 0;
    for l in stdout.lines() {
        let l = l.map_err(|e| e.to_string())?;
        if !l.contains("\"ok\"") {
            return Err(format!("serve answered {l}"));
        }
        answered += 1;
        if answered == calls {
            break;
        }
    }
    let pl = t1.elapsed().as_secs_f64();
    let _ = writer.join();
    let _ = child.wait();
    Ok(json!({
        "calls": calls,
        "request": "mse_loss, float32 (16,)",
        "round_trip_calls_per_second": calls as f64 / rt,
        "pipelined_calls_per_second": calls as f64 / pl,
    }))
}

/// PyTorch's timings per workload, and a line saying how they were measured (version,
/// threads, and `THP_MEM_ALLOC_ENABLE` when the script recorded it set).
fn torch_results(
    path: &Path,
) -> Result<(BTreeMap<String, (Option<Timing>, Option<Timing>)>, String), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let j: Json = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    let t = |v: Option<&Json>| -> Option<Timing> {
        let v = v?;
        Some(Timing {
            min: v.get("min")?.as_f64()?,
            median: v.get("median")?.as_f64()?,
        })
    };
    for w in j
        .get("workloads")
        .and_then(Json::as_array)
        .ok_or("no `workloads` array")?
    {
        let name = w
            .get("name")
            .and_then(Json::as_str)
            .ok_or("workload without name")?;
        out.insert(
            name.to_string(),
            (t(w.get("forward")), t(w.get("forward_backward"))),
        );
    }
    let mut label = format!(
        "PyTorch {}, {} threads",
        j.get("torch").and_then(Json::as_str).unwrap_or("?"),
        j.get("threads")
            .map(|t| t.to_string())
            .unwrap_or("?".into())
    );
    if let Some(thp) = j.get("thp_mem_alloc_enable").and_then(Json::as_str) {
        label.push_str(&format!(", THP_MEM_ALLOC_ENABLE={thp}"));
    }
    Ok((out, label))
}

fn fmt_s(t: Option<Timing>) -> String {
    match t {
        Some(t) => format!("{:.4}", t.min),
        None => "-".into(),
    }
}

fn ratio(a: Option<Timing>, b: Option<Timing>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.min > 0.0 => format!("{:.2}", a.min / b.min),
        _ => "-".into(),
    }
}

pub fn main(root: &Path, opts: Options) -> ExitCode {
    let threads = opts.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
    {
        eprintln!("warning: rayon pool: {e}");
    }
    let torch = match &opts.torch {
        Some(p) => match torch_results(p) {
            Ok((t, label)) => {
                if opts.format != "json" {
                    println!("torch columns: {label} ({})", p.display());
                }
                Some(t)
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let table = opts.format != "json";
    let mut rows = Vec::new();
    let mut failed = false;
    if table {
        println!(
            "lossconf bench: {threads} threads, best of {} (min s; median in JSON)",
            opts.repeat
        );
        if torch.is_some() {
            println!(
                "{:<34} {:>9} {:>9} {:>6}   {:>9} {:>9} {:>6}",
                "workload", "ref fwd", "torch", "ratio", "ref f+b", "torch", "ratio"
            );
        } else {
            println!(
                "{:<34} {:>9} {:>9}   shape",
                "workload", "ref fwd", "ref f+b"
            );
        }
    }
    for name in NAMES {
        if !selected(&opts, name) {
            continue;
        }
        let Some(w) = workload(name, opts.shrink) else {
            continue;
        };
        let fwd = time(opts.repeat, || run_forward(&w));
        let fb = time(opts.repeat, || run_backward(&w));
        let (fwd, fb) = match (fwd, fb) {
            (Ok(a), Ok(b)) => (Some(a), Some(b)),
            (a, b) => {
                if let Err(e) = &a {
                    eprintln!("{name}: forward failed: {e}");
                }
                if let Err(e) = &b {
                    eprintln!("{name}: backward failed: {e}");
                }
                failed = true;
                (a.ok(), b.ok())
            }
        };
        let tt = torch.as_ref().and_then(|t| t.get(name)).copied();
        if table {
            match &tt {
                Some((tf, tfb)) => println!(
                    "{:<34} {:>9} {:>9} {:>6}   {:>9} {:>9} {:>6}",
                    name,
                    fmt_s(fwd),
                    fmt_s(*tf),
                    ratio(fwd, *tf),
                    fmt_s(fb),
                    fmt_s(*tfb),
                    ratio(fb, *tfb)
                ),
                None => println!(
                    "{:<34} {:>9} {:>9}   {}",
                    name,
                    fmt_s(fwd),
                    fmt_s(fb),
                    w.shape
                ),
            }
        }
        rows.push(json!({
            "name": name,
            "shape": w.shape,
            "forward": fwd.map(|t| t.json()),
            "forward_backward": fb.map(|t| t.json()),
            "torch_forward": tt.and_then(|t| t.0).map(|t| t.json()),
            "torch_forward_backward": tt.and_then(|t| t.1).map(|t| t.json()),
            "ratio_forward": tt.and_then(|t| t.0).zip(fwd).map(|(t, r)| r.min / t.min),
            "ratio_forward_backward": tt.and_then(|t| t.1).zip(fb).map(|(t, r)| r.min / t.min),
        }));
        drop(w);
    }
    let suite = selected(&opts, "suite").then(|| suite(root));
    if let (true, Some(s)) = (table, &suite) {
        println!(
            "whole suite: {:.3} s in process (load {:.3} s + run {:.3} s; {} passed, {} failed), `lossconf run` as a process {}",
            s["total_seconds"].as_f64().unwrap_or(f64::NAN),
            s["load_seconds"].as_f64().unwrap_or(f64::NAN),
            s["run_seconds"].as_f64().unwrap_or(f64::NAN),
            s["passed"],
            s["failed"],
            match s["process_seconds"].as_f64() {
                Some(p) => format!("{p:.3} s"),
                None => "not run".into(),
            }
        );
    }
    let serve = if selected(&opts, "serve") {
        match serve(opts.serve_calls) {
            Ok(j) => Some(j),
            Err(e) => {
                eprintln!("serve: {e}");
                failed = true;
                None
            }
        }
    } else {
        None
    };
    if let (true, Some(s)) = (table, &serve) {
        println!(
            "lossconf serve: {:.0} calls/s one at a time, {:.0} calls/s pipelined ({})",
            s["round_trip_calls_per_second"]
                .as_f64()
                .unwrap_or(f64::NAN),
            s["pipelined_calls_per_second"].as_f64().unwrap_or(f64::NAN),
            s["request"].as_str().unwrap_or("")
        );
    }
    if !table {
        let j = json!({
            "threads": threads,
            "repeat": opts.repeat,
            "shrink": opts.shrink,
            "workloads": rows,
            "suite": suite,
            "serve": serve,
        });
        println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_workload_builds_and_runs_its_fast_path_when_shrunk() {
        for name in super::NAMES {
            let w = super::workload(name, 64).expect(name);
            assert!(
                crate::reference::fast::forward(&w.call).is_some(),
                "{name}: the fast path declined the bench call"
            );
            // The backward's fast path: one pass for loss and gradient, or (CTC, which has no
            // fused kernel) the fast gradient after the forward.
            let wrt = [w.wrt.to_string()];
            let fast_backward = if name == "ctc_loss" {
                let ones = crate::tensor::Tensor::scalar(crate::tensor::DType::Float32, 1.0);
                crate::reference::fast::backward(&w.call, &wrt, &ones).is_some()
            } else {
                crate::reference::fast::forward_backward(&w.call, &wrt, None).is_some()
            };
            assert!(
                fast_backward,
                "{name}: the fast backward declined the bench call"
            );
            super::run_forward(&w).unwrap();
            super::run_backward(&w).unwrap();
        }
    }
}
