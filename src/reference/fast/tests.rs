//! The fast kernels against PyTorch: `torch_grads.json` (written by `torch_grads.py` with
//! PyTorch's forward values and `torch.autograd.grad` gradients) on small calls with the edge
//! cases of each backward formula.

use crate::backend::Call;
use crate::tensor::{DType, Tensor};
use serde_json::Value as Json;

fn close(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    let (rtol, atol) = match want.dtype() {
        DType::Float32 => (2e-5, 2e-6),
        _ => (1e-10, 1e-12),
    };
    for (i, (a, b)) in got.to_f64_vec().iter().zip(want.to_f64_vec()).enumerate() {
        let ok = a == &b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= atol + rtol * b.abs();
        assert!(ok, "{what}: element {i}: fast {a:e}, torch {b:e}");
    }
}

#[test]
fn fast_forward_and_backward_equal_pytorch_autograd() {
    let cases: Vec<Json> = serde_json::from_str(include_str!("torch_grads.json")).unwrap();
    assert!(cases.len() > 50);
    for (n, c) in cases.iter().enumerate() {
        let call: Call =
            serde_json::from_value(serde_json::json!({"api": c["api"], "args": c["args"]}))
                .unwrap();
        let what = format!("case {n}: {}", call.describe());
        let want: Tensor = serde_json::from_value(c["output"].clone()).unwrap();
        let out = match super::forward(&call) {
            Some(Ok(t)) => t,
            other => panic!("{what}: the fast forward answered {other:?}"),
        };
        close(&format!("{what} forward"), &out, &want);
        let go: Tensor = if c["grad_output"].is_null() {
            Tensor::from_f64(out.dtype(), out.shape().to_vec(), vec![1.0; out.numel()]).unwrap()
        } else {
            serde_json::from_value(c["grad_output"].clone()).unwrap()
        };
        let wrt: Vec<String> = serde_json::from_value(c["wrt"].clone()).unwrap();
        let grads = match super::backward(&call, &wrt, &go) {
            Some(Ok(g)) => g,
            other => panic!("{what}: the fast backward answered {other:?}"),
        };
        for w in &wrt {
            let want: Tensor = serde_json::from_value(c["grads"][w].clone()).unwrap();
            close(&format!("{what} d/d{w}"), &grads[w], &want);
        }
    }
}

#[test]
fn unusual_calls_are_left_to_the_general_kernels() {
    let t = |dt: DType, v: &[f64]| {
        crate::backend::Value::Tensor(Tensor::from_f64(dt, vec![v.len()], v.to_vec()).unwrap())
    };
    let call = |args: Vec<(&str, crate::backend::Value)>| Call {
        api: "torch.nn.functional.mse_loss".into(),
        args: args.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    };
    let f32s = |v: &[f64]| t(DType::Float32, v);
    // Mixed dtypes, half types, legacy arguments, non-finite values, broadcasting.
    for args in [
        vec![
            ("input", f32s(&[1.0, 2.0])),
            ("target", t(DType::Float64, &[1.0, 2.0])),
        ],
        vec![
            ("input", t(DType::Float16, &[1.0])),
            ("target", t(DType::Float16, &[1.0])),
        ],
        vec![
            ("input", f32s(&[1.0])),
            ("target", f32s(&[1.0])),
            ("size_average", crate::backend::Value::Bool(false)),
        ],
        vec![("input", f32s(&[f64::INFINITY])), ("target", f32s(&[1.0]))],
        vec![("input", f32s(&[1.0, 2.0])), ("target", f32s(&[1.0]))],
        vec![("input", f32s(&[3e38])), ("target", f32s(&[-3e38]))],
    ] {
        let c = call(args);
        assert!(super::forward(&c).is_none(), "{}", c.describe());
    }
}
