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
    // float32 BCE with logits uses the short series only for targets in [0, 1].
    let bce = |target: f64| Call {
        api: "torch.nn.functional.binary_cross_entropy_with_logits".into(),
        args: [
            ("input", f32s(&[0.5, -2.0])),
            ("target", f32s(&[0.25, target])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    };
    assert!(super::forward(&bce(1.0)).is_some());
    assert!(super::forward(&bce(1.5)).is_none());
    assert!(super::forward(&bce(-0.5)).is_none());
}

/// Bit-for-bit equality of two tensors (NaN equal to NaN).
fn same_bits(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    for (i, (a, b)) in got.to_f64_vec().iter().zip(want.to_f64_vec()).enumerate() {
        assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "{what}: element {i}: fused {a:e}, apart {b:e}"
        );
    }
}

/// Large calls (above the parallel threshold) of every fused kernel, from a fixed sequence.
fn large_calls() -> Vec<(Call, Vec<String>)> {
    use crate::backend::Value;
    let wave = |n: usize, f: f64, scale: f64| -> Vec<f64> {
        (0..n).map(|i| (i as f64 * f).sin() * scale).collect()
    };
    let tensor = |dt: DType, shape: Vec<usize>, v: Vec<f64>| {
        Value::Tensor(Tensor::from_f64(dt, shape, v).unwrap())
    };
    let mut calls = Vec::new();
    let n = 3 * super::PAR_MIN + 17;
    for dt in [DType::Float32, DType::Float64] {
        for (api, reds) in [
            ("mse_loss", &["mean", "sum"][..]),
            ("l1_loss", &["mean", "sum"]),
            ("smooth_l1_loss", &["mean", "sum"]),
            ("binary_cross_entropy_with_logits", &["mean", "sum"]),
            ("binary_cross_entropy", &["mean"]),
            ("kl_div", &["batchmean", "sum"]),
        ] {
            for red in reds {
                let (x, t) = match api {
                    "binary_cross_entropy" => (
                        wave(n, 0.37, 0.49).iter().map(|v| v + 0.5).collect(),
                        wave(n, 0.11, 0.5).iter().map(|v| v + 0.5).collect(),
                    ),
                    "kl_div" => (
                        wave(n, 0.37, 3.0).iter().map(|v| v - 4.0).collect(),
                        wave(n, 0.11, 0.5).iter().map(|v| v + 0.5).collect(),
                    ),
                    "binary_cross_entropy_with_logits" => (
                        wave(n, 0.37, 3.0),
                        wave(n, 0.11, 0.5).iter().map(|v| v + 0.5).collect(),
                    ),
                    _ => (wave(n, 0.37, 3.0), wave(n, 0.11, 2.0)),
                };
                let shape = vec![n / 7, 7];
                let size = shape.iter().product();
                let mut args = vec![
                    ("input", tensor(dt, shape.clone(), x[..size].to_vec())),
                    ("target", tensor(dt, shape, t[..size].to_vec())),
                    ("reduction", Value::Str(red.to_string())),
                ];
                if api == "smooth_l1_loss" {
                    args.push(("beta", Value::Float(0.5)));
                }
                let call = Call {
                    api: format!("torch.nn.functional.{api}"),
                    args: args.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                };
                let has_dt = !matches!(api, "binary_cross_entropy" | "kl_div");
                for wrt in ["input", "target"].iter().take(if has_dt { 2 } else { 1 }) {
                    calls.push((call.clone(), vec![wrt.to_string()]));
                }
            }
        }
        let (rows, c) = (64, 1024);
        for (red, ls) in [("mean", 0.0), ("sum", 0.1), ("none", 0.0)] {
            let target: Vec<i64> = (0..rows as i64).map(|i| (i * 37) % c as i64).collect();
            let call = Call {
                api: "torch.nn.functional.cross_entropy".into(),
                args: [
                    (
                        "input",
                        tensor(dt, vec![rows, c], wave(rows * c, 0.013, 8.0)),
                    ),
                    (
                        "target",
                        Value::Tensor(Tensor::from_i64(DType::Int64, vec![rows], target).unwrap()),
                    ),
                    ("reduction", Value::Str(red.into())),
                    ("label_smoothing", Value::Float(ls)),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            };
            calls.push((call, vec!["input".to_string()]));
        }
    }
    calls
}

/// `forward_backward` is a faster route to the same answer: wherever it answers, its loss is
/// `forward`'s and its gradient `backward`'s, bit for bit, for `grad_output` given or not; and it
/// answers for the large calls it exists for.
#[test]
fn fused_forward_backward_equals_forward_then_backward() {
    let cases: Vec<Json> = serde_json::from_str(include_str!("torch_grads.json")).unwrap();
    let mut calls: Vec<(Call, Vec<String>)> = cases
        .iter()
        .map(|c| {
            let call: Call =
                serde_json::from_value(serde_json::json!({"api": c["api"], "args": c["args"]}))
                    .unwrap();
            (call, serde_json::from_value(c["wrt"].clone()).unwrap())
        })
        .collect();
    let large = large_calls();
    let n_large = large.len();
    calls.extend(large);
    let mut fused_large = 0;
    for (i, (call, wrt)) in calls.iter().enumerate() {
        let what = format!("call {i}: {}", call.describe());
        let Some(Ok(out)) = super::forward(call) else {
            assert!(
                super::forward_backward(call, wrt, None).is_none(),
                "{what}: fused answered where the forward does not"
            );
            continue;
        };
        let scale = 0.75;
        let go =
            Tensor::from_f64(out.dtype(), out.shape().to_vec(), vec![scale; out.numel()]).unwrap();
        let ones =
            Tensor::from_f64(out.dtype(), out.shape().to_vec(), vec![1.0; out.numel()]).unwrap();
        for (given, g) in [(Some(&go), &go), (None, &ones)] {
            let Some((loss, grads)) = super::forward_backward(call, wrt, given) else {
                assert!(i < cases.len(), "{what}: a large call is not fused");
                continue;
            };
            if i >= cases.len() {
                fused_large += 1;
            }
            same_bits(&format!("{what} loss"), &loss, &out);
            let apart = match super::backward(call, wrt, g) {
                Some(Ok(g)) => g,
                other => panic!("{what}: fused answered, backward answered {other:?}"),
            };
            for w in wrt {
                same_bits(&format!("{what} d/d{w}"), &grads[w], &apart[w]);
            }
        }
    }
    assert!(
        fused_large == 2 * n_large,
        "{fused_large} fused answers for {n_large} large calls"
    );
}

/// The huge-page advice changes nothing visible: the buffer is `n` zeros, large or small.
#[test]
fn zeroed_buffers_are_zeros_of_the_asked_length() {
    for n in [0, 1, 1 << 10, (1 << 20) + 3] {
        let v = super::zeroed::<f64>(n);
        let w = super::zeroed::<f32>(n);
        assert_eq!(w.len(), n);
        assert!(w.iter().all(|&x| x.to_bits() == 0));
        assert_eq!(v.len(), n);
        assert!(v.iter().all(|&x| x.to_bits() == 0));
    }
}
