//! Helpers shared by the kernels' unit tests: build a call, run it on the reference, take the
//! value or the error kind apart.

use crate::backend::{Backend, Call, ErrorKind, Gradients, Outcome, Value};
use crate::reference::Reference;
use crate::tensor::{DType, Tensor};

/// A tensor argument.
pub fn t(dt: DType, shape: &[usize], data: &[f64]) -> Value {
    Value::Tensor(Tensor::from_f64(dt, shape.to_vec(), data.to_vec()).unwrap())
}

/// Runs `api` on the reference backend.
pub fn forward(api: &str, args: Vec<(&str, Value)>) -> Outcome {
    let call = Call {
        api: api.into(),
        args: args.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    };
    Reference.forward(&call)
}

/// The value of an outcome; panics with the outcome otherwise.
pub fn value(o: Outcome) -> Tensor {
    match o {
        Outcome::Value(t) => t,
        other => panic!("expected a value, got {other:?}"),
    }
}

/// The error kind of an outcome; panics with the outcome otherwise.
pub fn kind(o: Outcome) -> ErrorKind {
    match o {
        Outcome::Error(e) => e.kind,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// The elements of an outcome's value; panics with the outcome otherwise.
pub fn values(o: Outcome) -> Vec<f64> {
    value(o).to_f64_vec()
}

/// The reference's gradients of `api` (all ones as `grad_output`) with respect to `wrt`;
/// panics with the outcome when it is not a value.
pub fn backward(api: &str, args: &[(&str, Value)], wrt: &[&str]) -> Gradients {
    let call = Call {
        api: api.into(),
        args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    };
    let wrt: Vec<String> = wrt.iter().map(|w| w.to_string()).collect();
    match Reference.backward(&call, &wrt, None) {
        Outcome::Value(g) => g,
        other => panic!("{api}: expected gradients, got {other:?}"),
    }
}

/// The elements of [`backward`]'s gradients, in the order of `wrt`.
pub fn gradients(api: &str, args: &[(&str, Value)], wrt: &[&str]) -> Vec<Vec<f64>> {
    let mut g = backward(api, args, wrt);
    wrt.iter()
        .map(|w| g.remove(*w).expect("every asked gradient").to_f64_vec())
        .collect()
}
