//! The `Backend` trait and the plain values that cross it.
//!
//! A backend sees one loss call at a time (`Call`: a fully qualified API name and its arguments
//! under the API's own names) and answers with an `Outcome`. Judging the answer is the harness's
//! job, never the backend's.

use crate::tensor::{parse_special_float, Tensor};
use serde::de::Deserializer;
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// One argument value: a tensor, a scalar option, a string option, a list of integers or null.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    IntList(Vec<i64>),
    Tensor(Tensor),
}

impl Value {
    /// The value as a float, accepting integers and the strings `nan`, `inf`, `-inf`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(x) => Some(*x),
            Value::Str(s) => parse_special_float(s),
            _ => None,
        }
    }

    /// A few words for messages: `float32[2, 3]`, `'mean'`, `0.1`.
    pub fn describe(&self) -> String {
        match self {
            Value::Null => "None".into(),
            Value::Bool(b) => if *b { "True" } else { "False" }.into(),
            Value::Int(i) => i.to_string(),
            Value::Float(x) => crate::tensor::format_float(*x),
            Value::Str(s) => format!("'{s}'"),
            Value::IntList(v) => format!("{v:?}"),
            Value::Tensor(t) => t.describe(),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_none(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(x) if x.is_finite() => s.serialize_f64(*x),
            Value::Float(x) => s.serialize_str(&crate::tensor::format_float(*x)),
            Value::Str(v) => s.serialize_str(v),
            Value::IntList(v) => v.serialize(s),
            Value::Tensor(t) => t.serialize(s),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    IntList(Vec<i64>),
    Tensor(Tensor),
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        // Untagged enums hide the inner error; a map that is not a valid tensor is the common
        // mistake, so say what an argument may be.
        let content = serde_yaml::Value::deserialize(d)?;
        let raw = match &content {
            serde_yaml::Value::Mapping(_) => {
                RawValue::Tensor(Tensor::deserialize(content).map_err(serde::de::Error::custom)?)
            }
            _ => RawValue::deserialize(content).map_err(|_| {
                serde::de::Error::custom(
                    "an argument is null, a boolean, a number, a string, a list of integers or a tensor {dtype, shape, data}",
                )
            })?,
        };
        Ok(match raw {
            RawValue::Null => Value::Null,
            RawValue::Bool(b) => Value::Bool(b),
            RawValue::Int(i) => Value::Int(i),
            RawValue::Float(x) => Value::Float(x),
            RawValue::Str(s) => Value::Str(s),
            RawValue::IntList(v) => Value::IntList(v),
            RawValue::Tensor(t) => Value::Tensor(t),
        })
    }
}

/// One loss call: `api` is the framework's fully qualified public name
/// (`torch.nn.functional.mse_loss`, `tf.nn.softmax_cross_entropy_with_logits`,
/// `tf.keras.losses.Huber`); `args` uses that API's own argument names. For a Keras class,
/// constructor and call arguments share the map. A missing argument takes the API's default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    pub api: String,
    #[serde(default)]
    pub args: BTreeMap<String, Value>,
}

impl Call {
    /// `api(input=float32[2, 3], reduction='mean')`, for messages.
    pub fn describe(&self) -> String {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|(k, v)| format!("{k}={}", v.describe()))
            .collect();
        format!("{}({})", self.api, args.join(", "))
    }
}

/// The kind of an error a framework raises for an invalid call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// Shapes that do not fit together.
    Shape,
    /// A dtype the API does not accept.
    Dtype,
    /// An argument value outside its domain: a probability outside [0, 1], a class index out of
    /// range, a negative variance.
    Value,
    /// An option the API rejects: an unknown reduction, an unknown argument, a forbidden margin.
    Argument,
    /// A malformed request or response on the wire. Never an expected outcome.
    Protocol,
    /// The backend itself failed (crashed, timed out, answered garbage). Never an expected outcome.
    Backend,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Shape => "shape",
            ErrorKind::Dtype => "dtype",
            ErrorKind::Value => "value",
            ErrorKind::Argument => "argument",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Backend => "backend",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error answer to a call: its kind and a human message. Extra fields a backend adds (an
/// exception type, say) are ignored, so the protocol can grow without breaking old clients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallError {
    pub kind: ErrorKind,
    pub message: String,
}

impl CallError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> CallError {
        CallError {
            kind,
            message: message.into(),
        }
    }
    pub fn shape(message: impl Into<String>) -> CallError {
        CallError::new(ErrorKind::Shape, message)
    }
    pub fn dtype(message: impl Into<String>) -> CallError {
        CallError::new(ErrorKind::Dtype, message)
    }
    pub fn value(message: impl Into<String>) -> CallError {
        CallError::new(ErrorKind::Value, message)
    }
    pub fn argument(message: impl Into<String>) -> CallError {
        CallError::new(ErrorKind::Argument, message)
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.kind, self.message)
    }
}

/// Gradients by argument name: what `backward` answers.
pub type Gradients = BTreeMap<String, Tensor>;

/// What a backend answers to one call: `Outcome` (a loss value) for `forward`,
/// `Outcome<Gradients>` for `backward`.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome<T = Tensor> {
    /// The loss value (or, for `backward`, the gradients).
    Value(T),
    /// The call is invalid (or the backend failed: kinds `protocol` and `backend`).
    Error(CallError),
    /// The backend does not implement this call; the harness shows a skip with this reason.
    Unsupported(String),
}

impl<T> From<Result<T, CallError>> for Outcome<T> {
    fn from(r: Result<T, CallError>) -> Outcome<T> {
        match r {
            Ok(t) => Outcome::Value(t),
            Err(e) => Outcome::Error(e),
        }
    }
}

/// An implementation of loss functions under test.
///
/// Implement `forward` for the APIs you support and answer [`Outcome::Unsupported`] for the
/// rest: they become visible skips, never passes. A panic inside `forward` fails that one trial.
pub trait Backend: Send + Sync {
    /// A short name, used in messages and expected-failure files.
    fn name(&self) -> &str;
    /// Evaluates one loss call.
    fn forward(&self, call: &Call) -> Outcome;
    /// The APIs this backend implements, when it knows them up front. Cases of other APIs are
    /// shown as skips without calling `forward`. `None` means "ask `forward`".
    fn apis(&self) -> Option<Vec<String>> {
        None
    }
    /// The gradient of `sum(grad_output * forward(call))` with respect to each argument named in
    /// `wrt`, each with that argument's shape and dtype. `grad_output` has the forward output's
    /// shape and dtype; `None` means all ones. The default answers `Unsupported`: backward trials
    /// of a backend without gradients are visible skips.
    fn backward(
        &self,
        call: &Call,
        wrt: &[String],
        grad_output: Option<&Tensor>,
    ) -> Outcome<Gradients> {
        let _ = (wrt, grad_output);
        Outcome::Unsupported(format!("{} has no backward for {}", self.name(), call.api))
    }
}
