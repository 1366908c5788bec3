//! `lossconf serve` checked from outside: a child process fed JSON lines, as any client would.
//! Values are judged against the committed framework expectations, never against typed numbers.

use lossconf::backend::{CallError, Gradients, Outcome};
use lossconf::compare::{judge, judge_gradients, Verdict};
use lossconf::harness::Expectation;
use serde_json::{json, Value as Json};
use std::io::Write;
use std::process::{Command, Stdio};

/// Sends all lines at once, closes stdin, returns one parsed response per line.
fn serve(lines: &[String]) -> Vec<Json> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lossconf"))
        .arg("serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start lossconf serve");
    let mut stdin = child.stdin.take().unwrap();
    let input = lines.join("\n") + "\n";
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "serve exited with {}", out.status);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every response line is JSON"))
        .collect()
}

fn outcome<T: serde::de::DeserializeOwned>(resp: &Json) -> Outcome<T> {
    if let Some(t) = resp.get("ok") {
        return Outcome::Value(serde_json::from_value(t.clone()).expect("ok holds the answer"));
    }
    if let Some(e) = resp.get("error") {
        let e: CallError = serde_json::from_value(e.clone()).expect("error holds {kind, message}");
        return Outcome::Error(e);
    }
    Outcome::Unsupported(resp["unsupported"].as_str().unwrap_or("?").to_string())
}

#[test]
fn answers_every_recorded_case_like_the_frameworks() {
    let root = lossconf::harness::default_root();
    let mut plan = lossconf::harness::load_plan(&root);
    lossconf::harness::apply_expected_failures(
        &mut plan,
        &root.join("expected-failures/reference.yaml"),
    );
    let checks: Vec<_> = plan.checks.iter().filter(|c| c.expected.is_ok()).collect();
    assert!(!checks.is_empty(), "no cases with expectations");
    let lines: Vec<String> = checks
        .iter()
        .enumerate()
        .map(|(i, c)| match c.expected.as_ref().unwrap() {
            Expectation::Forward(_) => {
                json!({"id": i, "op": "forward", "api": c.case.api, "args": c.case.args})
                    .to_string()
            }
            Expectation::Backward(e) => json!({"id": i, "op": "backward", "api": c.case.api,
                "args": c.case.args, "wrt": c.case.wrt, "grad_output": e.grad_output})
            .to_string(),
        })
        .collect();
    let responses = serve(&lines);
    assert_eq!(responses.len(), checks.len(), "one response per request");
    let mut failures = Vec::new();
    for (i, (check, resp)) in checks.iter().zip(&responses).enumerate() {
        assert_eq!(
            resp["id"],
            json!(i),
            "responses come in order with their id"
        );
        let tolerance = check.case.tolerance.as_ref();
        let verdict = match check.expected.as_ref().unwrap() {
            Expectation::Forward(e) => judge(e, &outcome(resp), tolerance),
            Expectation::Backward(e) => judge_gradients(e, &outcome::<Gradients>(resp), tolerance),
        };
        if let Verdict::Fail(why) = verdict {
            if check.xfail.is_none() {
                failures.push(format!("{}: {why}", check.name));
            }
        }
    }
    // The conformance suite reports each failure in detail; here only the wire path is judged.
    assert!(
        failures.is_empty(),
        "{} cases differ over the wire, first: {}",
        failures.len(),
        failures[0]
    );
}

#[test]
fn malformed_lines_are_answered_and_the_server_keeps_going() {
    let lines: Vec<String> = [
        "{oops",
        "[1,2]",
        r#"{"op":"describe"}"#,
        r#"{"id":3,"op":"teleport"}"#,
        r#"{"id":4,"op":"forward","api":"torch.nn.functional.l1_loss","args":{"input":{"dtype":"float32","shape":[2],"data":[1]}}}"#,
        r#"{"id":5,"op":"forward","api":"torch.nn.functional.l1_loss","args":{"input":{"dtype":"complex","shape":[],"data":[1]}}}"#,
        r#"{"id":6,"op":"describe"}"#,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let r = serve(&lines);
    assert_eq!(r.len(), 7);
    for (i, resp) in r.iter().take(6).enumerate() {
        assert_eq!(resp["error"]["kind"], "protocol", "line {i}: {resp}");
    }
    assert_eq!(r[0]["id"], Json::Null);
    assert_eq!(r[3]["id"], 3);
    assert_eq!(r[6]["id"], 6);
    assert_eq!(r[6]["ok"]["protocol"], "lossconf/1");
    let apis = r[6]["ok"]["apis"].as_array().unwrap();
    assert!(apis.iter().all(|a| a.is_string()));
}

#[test]
fn unknown_api_is_unsupported_and_unknown_argument_is_an_argument_error() {
    let t = json!({"dtype": "float32", "shape": [2], "data": [1.0, "nan"]});
    let lines = vec![
        json!({"id": 1, "op": "forward", "api": "torch.nn.functional.no_such_loss", "args": {}})
            .to_string(),
        json!({"id": 2, "op": "forward", "api": "torch.nn.functional.l1_loss",
               "args": {"input": t, "target": t, "bogus": 1}})
        .to_string(),
    ];
    let r = serve(&lines);
    assert!(r[0]["unsupported"].is_string(), "{}", r[0]);
    assert_eq!(r[1]["error"]["kind"], "argument", "{}", r[1]);
}
