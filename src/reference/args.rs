//! Typed, checked access to a call's arguments for the reference kernels.
//!
//! Every accessor marks its argument as read; [`Args::finish`] then rejects any argument the
//! kernel never asked for, which is what the frameworks do with an unexpected keyword
//! (`TypeError` in Python, an `argument` error here).

use crate::backend::{CallError, Value};
use crate::tensor::{DType, Tensor};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

pub struct Args<'a> {
    api: &'a str,
    map: &'a BTreeMap<String, Value>,
    read: RefCell<BTreeSet<&'a str>>,
}

impl<'a> Args<'a> {
    pub fn new(api: &'a str, map: &'a BTreeMap<String, Value>) -> Args<'a> {
        Args {
            api,
            map,
            read: RefCell::new(BTreeSet::new()),
        }
    }

    pub fn api(&self) -> &str {
        self.api
    }

    /// The raw value, `None` when absent. Null counts as present.
    pub fn get(&self, name: &'a str) -> Option<&'a Value> {
        self.read.borrow_mut().insert(name);
        self.map.get(name)
    }

    fn wrong(&self, name: &str, want: &str, got: &Value) -> CallError {
        CallError::argument(format!(
            "{}: argument '{name}' must be {want}, got {}",
            self.api,
            got.describe()
        ))
    }

    /// A required tensor.
    pub fn tensor(&self, name: &'a str) -> Result<&'a Tensor, CallError> {
        match self.get(name) {
            Some(Value::Tensor(t)) => Ok(t),
            Some(v) => Err(self.wrong(name, "a tensor", v)),
            None => Err(CallError::argument(format!(
                "{}: missing required argument '{name}'",
                self.api
            ))),
        }
    }

    /// An optional tensor: absent or null gives `None`.
    pub fn opt_tensor(&self, name: &'a str) -> Result<Option<&'a Tensor>, CallError> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Tensor(t)) => Ok(Some(t)),
            Some(v) => Err(self.wrong(name, "a tensor or None", v)),
        }
    }

    /// A string option with a default.
    pub fn str_or(&self, name: &'a str, default: &'a str) -> Result<&'a str, CallError> {
        match self.get(name) {
            None => Ok(default),
            Some(Value::Str(s)) => Ok(s),
            Some(v) => Err(self.wrong(name, "a string", v)),
        }
    }

    /// An optional string: absent gives the default, null gives `None`.
    pub fn opt_str(
        &self,
        name: &'a str,
        default: Option<&'a str>,
    ) -> Result<Option<&'a str>, CallError> {
        match self.get(name) {
            None => Ok(default),
            Some(Value::Null) => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong(name, "a string or None", v)),
        }
    }

    /// A float option with a default; integers and `"nan"`/`"inf"`/`"-inf"` are accepted.
    pub fn f64_or(&self, name: &'a str, default: f64) -> Result<f64, CallError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| self.wrong(name, "a number", v)),
        }
    }

    /// An optional float: absent gives the default, null gives `None`.
    pub fn opt_f64(&self, name: &'a str, default: Option<f64>) -> Result<Option<f64>, CallError> {
        match self.get(name) {
            None => Ok(default),
            Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong(name, "a number or None", v)),
        }
    }

    /// An integer option with a default.
    pub fn i64_or(&self, name: &'a str, default: i64) -> Result<i64, CallError> {
        match self.get(name) {
            None => Ok(default),
            Some(Value::Int(i)) => Ok(*i),
            Some(v) => Err(self.wrong(name, "an integer", v)),
        }
    }

    /// An optional integer: absent gives the default, null gives `None`.
    pub fn opt_i64(&self, name: &'a str, default: Option<i64>) -> Result<Option<i64>, CallError> {
        match self.get(name) {
            None => Ok(default),
            Some(Value::Null) => Ok(None),
            Some(Value::Int(i)) => Ok(Some(*i)),
            Some(v) => Err(self.wrong(name, "an integer or None", v)),
        }
    }

    /// A boolean option with a default.
    pub fn bool_or(&self, name: &'a str, default: bool) -> Result<bool, CallError> {
        match self.get(name) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.wrong(name, "a boolean", v)),
        }
    }

    /// Rejects arguments the kernel never read: the API has no such parameter.
    pub fn finish(&self) -> Result<(), CallError> {
        let read = self.read.borrow();
        if let Some(extra) = self.map.keys().find(|k| !read.contains(k.as_str())) {
            return Err(CallError::argument(format!(
                "{}() got an unexpected keyword argument '{extra}'",
                self.api
            )));
        }
        Ok(())
    }
}

/// The float dtype of a tensor argument, or a `dtype` error naming it.
pub fn float_dtype(api: &str, name: &str, t: &Tensor) -> Result<DType, CallError> {
    if t.dtype().is_float() {
        Ok(t.dtype())
    } else {
        Err(CallError::dtype(format!(
            "{api}: '{name}' must be a floating point tensor, got {}",
            t.dtype()
        )))
    }
}
