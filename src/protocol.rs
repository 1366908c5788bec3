//! The `lossconf/1` wire protocol (JSON Lines), server side: any backend served on a pair of
//! streams. See `docs/protocol.md`.
//!
//! One request per line, exactly one response line per request, in order. A line that is not a
//! valid request is answered with a `protocol` error and the server keeps going; a panicking
//! backend is answered with a `backend` error. Nothing a client sends can stop the server
//! before the end of its input.

use crate::backend::{Backend, Call, CallError, ErrorKind, Gradients, Outcome, Value};
use crate::tensor::Tensor;
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};

pub const PROTOCOL: &str = "lossconf/1";

fn error(id: &Json, kind: ErrorKind, message: impl Into<String>) -> Json {
    json!({"id": id, "error": {"kind": kind.name(), "message": message.into()}})
}

fn outcome_json<T: serde::Serialize>(id: &Json, outcome: Outcome<T>) -> Json {
    match outcome {
        Outcome::Value(t) => json!({"id": id, "ok": t}),
        Outcome::Error(CallError { kind, message }) => error(id, kind, message),
        Outcome::Unsupported(why) => json!({"id": id, "unsupported": why}),
    }
}

/// Answers one request line.
pub fn respond(backend: &dyn Backend, line: &str) -> Json {
    let req: Json = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return error(
                &Json::Null,
                ErrorKind::Protocol,
                format!("not a JSON object: {e}"),
            )
        }
    };
    let Json::Object(obj) = &req else {
        return error(
            &Json::Null,
            ErrorKind::Protocol,
            "a request is a JSON object",
        );
    };
    let id = obj.get("id").cloned().unwrap_or(Json::Null);
    if !(id.is_number() || id.is_string()) {
        return error(
            &Json::Null,
            ErrorKind::Protocol,
            "a request needs an `id` (number or string)",
        );
    }
    match obj.get("op").and_then(Json::as_str) {
        Some("describe") => json!({"id": id, "ok": {
            "backend": backend.name(),
            "protocol": PROTOCOL,
            "version": env!("CARGO_PKG_VERSION"),
            "ops": ["describe", "forward", "backward"],
            "apis": backend.apis().unwrap_or_default(),
        }}),
        Some(op @ ("forward" | "backward")) => {
            let call = match read_call(obj, op) {
                Ok(c) => c,
                Err(message) => return error(&id, ErrorKind::Protocol, message),
            };
            let answer = if op == "forward" {
                catch_unwind(AssertUnwindSafe(|| backend.forward(&call)))
                    .map(|outcome| outcome_json(&id, outcome))
            } else {
                let (wrt, grad_output) = match read_backward(obj) {
                    Ok(b) => b,
                    Err(message) => return error(&id, ErrorKind::Protocol, message),
                };
                catch_unwind(AssertUnwindSafe(|| {
                    backend.backward(&call, &wrt, grad_output.as_ref())
                }))
                .map(|outcome: Outcome<Gradients>| outcome_json(&id, outcome))
            };
            answer.unwrap_or_else(|_| {
                error(
                    &id,
                    ErrorKind::Backend,
                    format!("the backend panicked in {op} on {}", call.describe()),
                )
            })
        }
        Some(other) => error(
            &id,
            ErrorKind::Protocol,
            format!("unknown op '{other}' (describe, forward, backward)"),
        ),
        None => error(&id, ErrorKind::Protocol, "a request needs `op` (a string)"),
    }
}

/// The `api` and `args` of a forward or backward request.
fn read_call(obj: &serde_json::Map<String, Json>, op: &str) -> Result<Call, String> {
    let Some(api) = obj.get("api").and_then(Json::as_str) else {
        return Err(format!("{op} needs `api` (a string)"));
    };
    let args: BTreeMap<String, Value> = match obj.get("args") {
        None => BTreeMap::new(),
        Some(a) => serde_json::from_value(a.clone()).map_err(|e| format!("bad `args`: {e}"))?,
    };
    Ok(Call {
        api: api.to_string(),
        args,
    })
}

/// The `wrt` (a non-empty list of distinct argument names) and optional `grad_output` of a
/// backward request.
fn read_backward(
    obj: &serde_json::Map<String, Json>,
) -> Result<(Vec<String>, Option<Tensor>), String> {
    let wrt: Vec<String> = match obj.get("wrt") {
        Some(w) => serde_json::from_value(w.clone())
            .map_err(|e| format!("bad `wrt` (a list of argument names): {e}"))?,
        None => return Err("backward needs `wrt` (a list of argument names)".into()),
    };
    if wrt.is_empty() {
        return Err("`wrt` names no argument".into());
    }
    if let Some(dup) = wrt.iter().enumerate().find(|(i, w)| wrt[..*i].contains(w)) {
        return Err(format!("`wrt` names '{}' twice", dup.1));
    }
    let grad_output = match obj.get("grad_output") {
        None | Some(Json::Null) => None,
        Some(g) => {
            Some(serde_json::from_value(g.clone()).map_err(|e| format!("bad `grad_output`: {e}"))?)
        }
    };
    Ok((wrt, grad_output))
}

/// Serves `backend` until the end of `input`. Blank lines are ignored.
pub fn serve(
    backend: &dyn Backend,
    input: impl BufRead,
    mut output: impl Write,
) -> std::io::Result<()> {
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let response = respond(backend, &line);
        serde_json::to_writer(&mut output, &response)?;
        output.write_all(b"\n")?;
        output.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::Reference;

    #[test]
    fn malformed_lines_get_protocol_errors_with_null_or_known_id() {
        let r = respond(&Reference, "{not json");
        assert_eq!(r["id"], Json::Null);
        assert_eq!(r["error"]["kind"], "protocol");
        let r = respond(&Reference, r#"{"id":7,"op":"fly"}"#);
        assert_eq!(r["id"], 7);
        assert_eq!(r["error"]["kind"], "protocol");
        let r = respond(
            &Reference,
            r#"{"id":8,"op":"forward","api":"x","args":{"input":{"dtype":"float32","shape":[2],"data":[1]}}}"#,
        );
        assert_eq!(r["error"]["kind"], "protocol", "{r}");
    }

    #[test]
    fn backward_requests_are_checked_and_answered() {
        let x = r#"{"dtype":"float64","shape":[2],"data":[1.0,3.0]}"#;
        let y = r#"{"dtype":"float64","shape":[2],"data":[0.0,0.0]}"#;
        let call =
            format!(r#""api":"torch.nn.functional.mse_loss","args":{{"input":{x},"target":{y}}}"#);
        let r = respond(&Reference, &format!(r#"{{"id":1,"op":"backward",{call}}}"#));
        assert_eq!(r["error"]["kind"], "protocol", "{r}");
        let r = respond(
            &Reference,
            &format!(r#"{{"id":2,"op":"backward",{call},"wrt":["input","input"]}}"#),
        );
        assert_eq!(r["error"]["kind"], "protocol", "{r}");
        let r = respond(
            &Reference,
            &format!(r#"{{"id":3,"op":"backward",{call},"wrt":["input"]}}"#),
        );
        assert!(
            r.get("ok").is_some() || r.get("unsupported").is_some(),
            "{r}"
        );
        let r = respond(&Reference, r#"{"id":4,"op":"describe"}"#);
        assert!(
            r["ok"]["ops"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o == "backward"),
            "{r}"
        );
    }

    #[test]
    fn unknown_api_is_unsupported() {
        let r = respond(
            &Reference,
            r#"{"id":1,"op":"forward","api":"torch.nn.functional.nope","args":{}}"#,
        );
        assert!(r["unsupported"].is_string(), "{r}");
    }
}
