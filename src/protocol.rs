//! The `lossconf/1` wire protocol (JSON Lines), server side: any backend served on a pair of
//! streams. See `docs/protocol.md`.
//!
//! One request per line, exactly one response line per request, in order. A line that is not a
//! valid request is answered with a `protocol` error and the server keeps going; a panicking
//! backend is answered with a `backend` error. Nothing a client sends can stop the server
//! before the end of its input.

use crate::backend::{Backend, Call, CallError, ErrorKind, Outcome, Value};
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};

pub const PROTOCOL: &str = "lossconf/1";

fn error(id: &Json, kind: ErrorKind, message: impl Into<String>) -> Json {
    json!({"id": id, "error": {"kind": kind.name(), "message": message.into()}})
}

fn outcome_json(id: &Json, outcome: Outcome) -> Json {
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
            "ops": ["describe", "forward"],
            "apis": backend.apis().unwrap_or_default(),
        }}),
        Some("forward") => {
            let Some(api) = obj.get("api").and_then(Json::as_str) else {
                return error(&id, ErrorKind::Protocol, "forward needs `api` (a string)");
            };
            let args: BTreeMap<String, Value> = match obj.get("args") {
                None => BTreeMap::new(),
                Some(a) => match serde_json::from_value(a.clone()) {
                    Ok(m) => m,
                    Err(e) => return error(&id, ErrorKind::Protocol, format!("bad `args`: {e}")),
                },
            };
            let call = Call {
                api: api.to_string(),
                args,
            };
            match catch_unwind(AssertUnwindSafe(|| backend.forward(&call))) {
                Ok(outcome) => outcome_json(&id, outcome),
                Err(_) => error(
                    &id,
                    ErrorKind::Backend,
                    format!("the backend panicked on {}", call.describe()),
                ),
            }
        }
        Some(other) => error(
            &id,
            ErrorKind::Protocol,
            format!("unknown op '{other}' (describe, forward)"),
        ),
        None => error(&id, ErrorKind::Protocol, "a request needs `op` (a string)"),
    }
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
    fn unknown_api_is_unsupported() {
        let r = respond(
            &Reference,
            r#"{"id":1,"op":"forward","api":"torch.nn.functional.nope","args":{}}"#,
        );
        assert!(r["unsupported"].is_string(), "{r}");
    }
}
