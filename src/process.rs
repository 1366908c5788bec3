//! The client side of `lossconf/1`: any program that speaks the protocol on stdin/stdout is a
//! [`Backend`].
//!
//! Nothing the program does can take the runner down: a call that gets no answer within the
//! timeout, a crash, or a line that is not a valid response fails that one call (kind
//! `backend`, with the tail of the program's stderr), and the program is restarted for the next.

use crate::backend::{Backend, Call, CallError, ErrorKind, Gradients, Outcome};
use crate::tensor::Tensor;
use serde_json::{json, Value as Json};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many stderr lines a failure message quotes.
const STDERR_TAIL: usize = 20;

struct Running {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    next_id: u64,
}

/// A backend behind a child process.
pub struct ProcessBackend {
    command: String,
    timeout: Duration,
    name: String,
    apis: Option<Vec<String>>,
    /// Whether `describe` listed `backward` among its `ops` (a server that lists no ops is asked).
    backward: bool,
    state: Mutex<Option<Running>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl ProcessBackend {
    /// Starts `command` (run by `sh -c`) and asks it to `describe` itself.
    pub fn start(command: &str, timeout: Duration) -> Result<ProcessBackend, String> {
        let mut b = ProcessBackend {
            command: command.to_string(),
            timeout,
            name: command.to_string(),
            apis: None,
            backward: true,
            state: Mutex::new(None),
            stderr: Arc::new(Mutex::new(VecDeque::new())),
        };
        let described = b
            .request("describe", json!({}))
            .map_err(|e| format!("`{command}` did not answer describe: {e}"))?;
        let ok = described
            .get("ok")
            .ok_or_else(|| format!("`{command}` answered describe without `ok`: {described}"))?;
        if let Some(name) = ok.get("backend").and_then(Json::as_str) {
            b.name = name.to_string();
        }
        if let Some(ops) = ok.get("ops").and_then(Json::as_array) {
            b.backward = ops.iter().any(|o| o == "backward");
        }
        b.apis = ok.get("apis").and_then(Json::as_array).map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        });
        Ok(b)
    }

    fn spawn(&self) -> Result<Running, String> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start `{}`: {e}", self.command))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let tail = Arc::clone(&self.stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                if t.len() == STDERR_TAIL {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        Ok(Running {
            child,
            stdin,
            lines,
            next_id: 1,
        })
    }

    fn stderr_tail(&self) -> String {
        let t = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        if t.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = t.iter().map(String::as_str).collect();
        format!(
            "\nbackend stderr (last {} lines):\n  {}",
            lines.len(),
            lines.join("\n  ")
        )
    }

    /// Sends one request and waits for its response; on any failure the process is killed so
    /// the next call starts a fresh one.
    fn request(&self, op: &str, body: Json) -> Result<Json, String> {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(self.spawn()?);
        }
        let run = guard.as_mut().expect("just started");
        let id = run.next_id;
        run.next_id += 1;
        let mut req = body;
        req["id"] = json!(id);
        req["op"] = json!(op);
        let result = (|| {
            writeln!(run.stdin, "{req}")
                .and_then(|()| run.stdin.flush())
                .map_err(|e| format!("cannot write to the backend (did it exit?): {e}"))?;
            let line = match run.lines.recv_timeout(self.timeout) {
                Ok(l) => l,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "no answer within {:.1} s",
                        self.timeout.as_secs_f64()
                    ))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = run.child.try_wait().ok().flatten();
                    return Err(format!(
                        "the backend exited{}",
                        status.map(|s| format!(" ({s})")).unwrap_or_default()
                    ));
                }
            };
            let resp: Json = serde_json::from_str(&line)
                .map_err(|e| format!("garbled response line ({e}): {}", truncate(&line)))?;
            if resp.get("id") != Some(&json!(id)) {
                return Err(format!(
                    "response id {} does not match request id {id}: {}",
                    resp["id"],
                    truncate(&line)
                ));
            }
            Ok(resp)
        })();
        if result.is_err() {
            if let Some(mut dead) = guard.take() {
                let _ = dead.child.kill();
                let _ = dead.child.wait();
            }
            // Let the stderr reader catch up with what the process printed before it died.
            std::thread::sleep(Duration::from_millis(20));
        }
        result.map_err(|e| format!("{e}{}", self.stderr_tail()))
    }
}

fn truncate(s: &str) -> String {
    if s.len() > 200 {
        let cut = (0..=200)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}…", &s[..cut])
    } else {
        s.to_string()
    }
}

fn failed<T>(message: String) -> Outcome<T> {
    Outcome::Error(CallError::new(ErrorKind::Backend, message))
}

/// Reads a response's `ok` (as `T`), `error` or `unsupported`.
fn answer<T: serde::de::DeserializeOwned>(resp: &Json, what: &str) -> Outcome<T> {
    if let Some(t) = resp.get("ok") {
        return match serde_json::from_value(t.clone()) {
            Ok(t) => Outcome::Value(t),
            Err(e) => failed(format!("`ok` is not {what}: {e}")),
        };
    }
    if let Some(e) = resp.get("error") {
        return match serde_json::from_value::<CallError>(e.clone()) {
            Ok(e) => Outcome::Error(e),
            Err(err) => failed(format!("`error` is not {{kind, message}}: {err}")),
        };
    }
    match resp.get("unsupported").and_then(Json::as_str) {
        Some(why) => Outcome::Unsupported(why.to_string()),
        None => failed(format!(
            "response has none of ok/error/unsupported: {}",
            truncate(&resp.to_string())
        )),
    }
}

impl Backend for ProcessBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn apis(&self) -> Option<Vec<String>> {
        self.apis.clone()
    }

    fn forward(&self, call: &Call) -> Outcome {
        match self.request("forward", json!({"api": call.api, "args": call.args})) {
            Ok(resp) => answer(&resp, "a tensor"),
            Err(e) => failed(e),
        }
    }

    fn backward(
        &self,
        call: &Call,
        wrt: &[String],
        grad_output: Option<&Tensor>,
    ) -> Outcome<Gradients> {
        if !self.backward {
            return Outcome::Unsupported(format!(
                "{} does not list `backward` among its ops",
                self.name
            ));
        }
        let mut body = json!({"api": call.api, "args": call.args, "wrt": wrt});
        if let Some(g) = grad_output {
            body["grad_output"] = json!(g);
        }
        match self.request("backward", body) {
            Ok(resp) => answer(&resp, "a map of argument name to tensor"),
            Err(e) => failed(e),
        }
    }
}

impl Drop for ProcessBackend {
    fn drop(&mut self) {
        if let Some(mut run) = self.state.get_mut().ok().and_then(Option::take) {
            drop(run.stdin);
            // Give a well-behaved server the chance to exit at end of input, then make sure.
            for _ in 0..50 {
                if matches!(run.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = run.child.kill();
            let _ = run.child.wait();
        }
    }
}
