//! A finished run and its renderings: `pretty` (the terminal table), `json`, `junit`, `markdown`.

use crate::backend::Backend;
use crate::harness::{run_check, Check, Plan, Problem, Status};
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

/// One check's result.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    pub family: String,
    pub api: String,
    /// A backward (gradient) trial rather than a forward one.
    pub backward: bool,
    pub status: Status,
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub backend: String,
    pub entries: Vec<Entry>,
    pub problems: Vec<Problem>,
    pub seconds: f64,
}

/// Counts of one group of entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub xfail: usize,
}

impl Tally {
    fn add(&mut self, s: &Status) {
        match s {
            Status::Passed => self.passed += 1,
            Status::Failed(_) => self.failed += 1,
            Status::Skipped(_) => self.skipped += 1,
            Status::ExpectedFailure(_) => self.xfail += 1,
        }
    }
}

/// Whether a suite problem (`lossconf/stale/<family>`, ...) concerns a filtered run: its name
/// matches a filter, or a filter names its family.
fn concerns(problem: &str, filter: &[String]) -> bool {
    let family = problem.rsplit('/').next().unwrap_or(problem);
    filter
        .iter()
        .any(|f| problem.contains(f.as_str()) || f.split('/').next() == Some(family))
}

/// Runs the selected checks on all cores; results keep plan order.
pub fn run(backend: &dyn Backend, plan: &Plan, filter: &[String]) -> RunResult {
    let started = Instant::now();
    let selected: Vec<&Check> = plan
        .checks
        .iter()
        .filter(|c| filter.is_empty() || filter.iter().any(|f| c.name.contains(f.as_str())))
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = selected.len().div_ceil(threads).max(1);
    let statuses: Vec<Status> = std::thread::scope(|s| {
        let handles: Vec<_> = selected
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|c| run_check(backend, c))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("run_check contains backend panics"))
            .collect()
    });
    let entries = selected
        .iter()
        .zip(statuses)
        .map(|(c, status)| Entry {
            name: c.name.clone(),
            backward: c.backward,
            family: c.family.clone(),
            api: c.case.api.clone(),
            status,
        })
        .collect();
    RunResult {
        backend: backend.name().to_string(),
        entries,
        problems: plan
            .problems
            .iter()
            .filter(|p| filter.is_empty() || concerns(&p.name, filter))
            .cloned()
            .collect(),
        seconds: started.elapsed().as_secs_f64(),
    }
}

impl RunResult {
    pub fn total(&self) -> Tally {
        let mut t = Tally::default();
        self.entries.iter().for_each(|e| t.add(&e.status));
        t.failed += self.problems.len();
        t
    }

    /// `(family, api)` -> `[forward, backward]` tallies.
    pub fn by_api(&self) -> BTreeMap<(String, String), [Tally; 2]> {
        let mut m: BTreeMap<(String, String), [Tally; 2]> = BTreeMap::new();
        for e in &self.entries {
            m.entry((e.family.clone(), e.api.clone())).or_default()[e.backward as usize]
                .add(&e.status);
        }
        m
    }

    pub fn failed(&self) -> bool {
        self.total().failed > 0 || self.entries.is_empty()
    }

    /// Failed trials first (what a filtered run is about), then problems of the suite itself.
    fn failures(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for e in &self.entries {
            if let Status::Failed(msg) = &e.status {
                out.push((e.name.clone(), msg.clone()));
            }
        }
        out.extend(
            self.problems
                .iter()
                .map(|p| (p.name.clone(), p.message.clone())),
        );
        out
    }

    /// The closing line; its `N passed, N failed` shape is what CI log readers look for.
    pub fn closing_line(&self) -> String {
        let t = self.total();
        format!(
            "{}: {} passed, {} failed, {} skipped, {} expected failures in {:.2} s",
            self.backend, t.passed, t.failed, t.skipped, t.xfail, self.seconds
        )
    }

    /// The terminal table, `show` failures in full, then the closing line.
    pub fn pretty(&self, show: usize) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<34} {:<50} {:>23}   {:>23}",
            "", "", "forward", "backward (/grad)"
        );
        let _ = writeln!(
            s,
            "{:<34} {:<50} {:>6} {:>5} {:>5} {:>5}   {:>6} {:>5} {:>5} {:>5}",
            "family", "api", "passed", "fail", "skip", "xfail", "passed", "fail", "skip", "xfail"
        );
        for ((family, api), [f, b]) in self.by_api() {
            let _ = writeln!(
                s,
                "{family:<34} {api:<50} {:>6} {:>5} {:>5} {:>5}   {:>6} {:>5} {:>5} {:>5}",
                f.passed, f.failed, f.skipped, f.xfail, b.passed, b.failed, b.skipped, b.xfail
            );
        }
        let failures = self.failures();
        for (name, msg) in failures.iter().take(show) {
            let _ = writeln!(s, "\n--- FAILED {name}\n{msg}");
        }
        if failures.len() > show {
            let _ = writeln!(
                s,
                "\n... {} more failures (--show N prints more):",
                failures.len() - show
            );
            for (name, _) in failures.iter().skip(show).take(50) {
                let _ = writeln!(s, "  {name}");
            }
        }
        if self.entries.is_empty() {
            let _ = writeln!(s, "\nno case matches the filter");
        }
        let _ = writeln!(s, "\n{}", self.closing_line());
        s
    }

    pub fn json(&self) -> String {
        let entries: Vec<_> = self
            .entries
            .iter()
            .map(|e| {
                let (status, detail) = match &e.status {
                    Status::Passed => ("passed", None),
                    Status::Failed(m) => ("failed", Some(m.as_str())),
                    Status::Skipped(m) => ("skipped", Some(m.as_str())),
                    Status::ExpectedFailure(m) => ("expected_failure", Some(m.as_str())),
                };
                json!({"name": e.name, "family": e.family, "api": e.api, "op": if e.backward { "backward" } else { "forward" }, "status": status, "detail": detail})
            })
            .collect();
        let problems: Vec<_> = self
            .problems
            .iter()
            .map(|p| json!({"name": p.name, "message": p.message}))
            .collect();
        let t = self.total();
        serde_json::to_string_pretty(&json!({
            "backend": self.backend,
            "seconds": self.seconds,
            "totals": {"passed": t.passed, "failed": t.failed, "skipped": t.skipped, "expected_failures": t.xfail},
            "problems": problems,
            "trials": entries,
        }))
        .expect("json values serialize")
    }

    pub fn junit(&self) -> String {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let t = self.total();
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            s,
            "<testsuites name=\"lossconf\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
            self.entries.len() + self.problems.len(),
            t.failed,
            t.skipped,
            self.seconds
        );
        let mut families: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
        for e in &self.entries {
            families.entry(&e.family).or_default().push(e);
        }
        if !self.problems.is_empty() {
            let _ = writeln!(
                s,
                "  <testsuite name=\"lossconf\" tests=\"{}\">",
                self.problems.len()
            );
            for p in &self.problems {
                let _ = writeln!(
                    s,
                    "    <testcase name=\"{}\"><failure message=\"suite problem\">{}</failure></testcase>",
                    esc(&p.name),
                    esc(&p.message)
                );
            }
            s.push_str("  </testsuite>\n");
        }
        for (family, entries) in families {
            let _ = writeln!(
                s,
                "  <testsuite name=\"{}\" tests=\"{}\">",
                esc(family),
                entries.len()
            );
            for e in entries {
                let open = format!(
                    "    <testcase classname=\"{}\" name=\"{}\"",
                    esc(&e.api),
                    esc(&e.name)
                );
                match &e.status {
                    Status::Passed | Status::ExpectedFailure(_) => {
                        let _ = writeln!(s, "{open}/>");
                    }
                    Status::Skipped(why) => {
                        let _ =
                            writeln!(s, "{open}><skipped message=\"{}\"/></testcase>", esc(why));
                    }
                    Status::Failed(msg) => {
                        let _ = writeln!(
                            s,
                            "{open}><failure message=\"mismatch\">{}</failure></testcase>",
                            esc(msg)
                        );
                    }
                }
            }
            s.push_str("  </testsuite>\n");
        }
        s.push_str("</testsuites>\n");
        s
    }

    pub fn markdown(&self) -> String {
        let mut s = format!("# lossconf: {}\n\n| family | api | passed | failed | skipped | expected failures | backward passed | backward failed | backward skipped | backward expected failures |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n", self.backend);
        for ((family, api), [f, b]) in self.by_api() {
            let _ = writeln!(
                s,
                "| {family} | `{api}` | {} | {} | {} | {} | {} | {} | {} | {} |",
                f.passed, f.failed, f.skipped, f.xfail, b.passed, b.failed, b.skipped, b.xfail
            );
        }
        let failures = self.failures();
        if !failures.is_empty() {
            s.push_str("\n## Failures\n");
            for (name, msg) in failures {
                let _ = writeln!(s, "\n### `{name}`\n\n```text\n{msg}\n```");
            }
        }
        let _ = writeln!(s, "\n{}", self.closing_line());
        s
    }
}
