//! Properties of the torch kernels that hold whatever the exact values: identities between
//! losses, reductions, defaults, dtypes, shapes and error kinds. Values themselves are checked
//! against PyTorch by the conformance cases, never here.

use crate::backend::{Backend, Call, ErrorKind, Outcome, Value};
use crate::reference::Reference;
use crate::tensor::{DType, Tensor};
use std::collections::BTreeMap;

fn t(dtype: DType, shape: &[usize], data: &[f64]) -> Value {
    Value::Tensor(Tensor::from_f64(dtype, shape.to_vec(), data.to_vec()).unwrap())
}

fn f64s(shape: &[usize], data: &[f64]) -> Value {
    t(DType::Float64, shape, data)
}

fn long(shape: &[usize], data: &[i64]) -> Value {
    Value::Tensor(Tensor::from_i64(DType::Int64, shape.to_vec(), data.to_vec()).unwrap())
}

fn call(f: &str, args: &[(&str, Value)]) -> Outcome {
    let args: BTreeMap<String, Value> = args
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Reference.forward(&Call {
        api: format!("torch.nn.functional.{f}"),
        args,
    })
}

fn value(f: &str, args: &[(&str, Value)]) -> Tensor {
    match call(f, args) {
        Outcome::Value(t) => t,
        other => panic!("{f}: expected a value, got {other:?}"),
    }
}

fn error_kind(f: &str, args: &[(&str, Value)]) -> ErrorKind {
    match call(f, args) {
        Outcome::Error(e) => e.kind,
        other => panic!("{f}: expected an error, got {other:?}"),
    }
}

fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!(
            (x - y).abs() <= 1e-12 * (1.0 + y.abs()) || (x.is_nan() && y.is_nan()),
            "{a:?} vs {b:?}"
        );
    }
}

fn s(x: &str) -> Value {
    Value::Str(x.into())
}

const X: [f64; 6] = [0.3, -1.7, 2.5, 0.0, 4.0, -0.05];
const Y: [f64; 6] = [0.1, 0.2, -0.4, 0.0, 1.0, 3.0];

#[test]
fn huber_is_delta_times_smooth_l1_with_beta_delta() {
    for delta in [0.25, 1.0, 2.0] {
        let args = |name: &'static str| {
            vec![
                ("input", f64s(&[2, 3], &X)),
                ("target", f64s(&[2, 3], &Y)),
                ("reduction", s("none")),
                (name, Value::Float(delta)),
            ]
        };
        let h = value("huber_loss", &args("delta")).to_f64_vec();
        let sl: Vec<f64> = value("smooth_l1_loss", &args("beta"))
            .to_f64_vec()
            .iter()
            .map(|v| v * delta)
            .collect();
        close(&h, &sl);
    }
}

#[test]
fn smooth_l1_with_beta_zero_is_l1_and_negative_beta_is_a_value_error() {
    let base = || vec![("input", f64s(&[6], &X)), ("target", f64s(&[6], &Y))];
    let mut a = base();
    a.push(("beta", Value::Float(0.0)));
    close(
        &value("smooth_l1_loss", &a).to_f64_vec(),
        &value("l1_loss", &base()).to_f64_vec(),
    );
    let mut a = base();
    a.push(("beta", Value::Float(-0.5)));
    assert_eq!(error_kind("smooth_l1_loss", &a), ErrorKind::Argument);
    let mut a = base();
    a.push(("delta", Value::Float(0.0)));
    assert_eq!(error_kind("huber_loss", &a), ErrorKind::Argument);
}

#[test]
fn mean_is_sum_over_count_and_none_keeps_the_broadcast_shape() {
    for f in ["l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss"] {
        let args = |r: &str| {
            vec![
                ("input", f64s(&[2, 1, 3], &X)),
                ("target", f64s(&[2, 1], &Y[..2])),
                ("reduction", s(r)),
            ]
        };
        let none = value(f, &args("none"));
        assert_eq!(none.shape(), &[2, 2, 3], "{f}");
        let sum = value(f, &args("sum")).to_f64_vec()[0];
        let mean = value(f, &args("mean")).to_f64_vec()[0];
        close(&[mean], &[sum / 12.0]);
        close(&[sum], &[none.to_f64_vec().iter().sum::<f64>()]);
    }
}

#[test]
fn legacy_size_average_and_reduce_override_reduction() {
    let base = || vec![("input", f64s(&[6], &X)), ("target", f64s(&[6], &Y))];
    let with = |extra: Vec<(&'static str, Value)>| {
        let mut a = base();
        a.extend(extra);
        value("mse_loss", &a)
    };
    let sum = with(vec![("reduction", s("sum"))]);
    assert_eq!(
        with(vec![
            ("size_average", Value::Bool(false)),
            ("reduction", s("none"))
        ]),
        sum
    );
    let none = with(vec![("reduction", s("none"))]);
    assert_eq!(with(vec![("reduce", Value::Bool(false))]), none);
    // Given legacy flags, even an invalid reduction is never looked at.
    assert_eq!(
        with(vec![
            ("reduce", Value::Bool(true)),
            ("reduction", s("bogus"))
        ]),
        with(vec![])
    );
    // huber_loss has no legacy arguments.
    let mut a = base();
    a.push(("size_average", Value::Bool(true)));
    assert_eq!(error_kind("huber_loss", &a), ErrorKind::Argument);
}

#[test]
fn invalid_reductions_and_unknown_arguments_are_argument_errors() {
    for f in [
        "l1_loss",
        "mse_loss",
        "smooth_l1_loss",
        "huber_loss",
        "binary_cross_entropy_with_logits",
        "multilabel_soft_margin_loss",
    ] {
        let a = [
            ("input", f64s(&[2, 3], &X)),
            ("target", f64s(&[2, 3], &[0.5; 6])),
            ("reduction", s("avg")),
        ];
        assert_eq!(error_kind(f, &a), ErrorKind::Argument, "{f}");
        let a = [
            ("input", f64s(&[2, 3], &X)),
            ("target", f64s(&[2, 3], &[0.5; 6])),
            ("margin", Value::Float(1.0)),
        ];
        assert_eq!(error_kind(f, &a), ErrorKind::Argument, "{f}");
    }
    // 'elementwise_mean' is a deprecated alias of 'mean' except where Python checks the
    // string itself (the weighted branch of l1/mse/huber, multilabel_soft_margin_loss).
    let a = |w: bool| {
        let mut v = vec![
            ("input", f64s(&[6], &X)),
            ("target", f64s(&[6], &Y)),
            ("reduction", s("elementwise_mean")),
        ];
        if w {
            v.push(("weight", f64s(&[6], &[1.0; 6])));
        }
        v
    };
    assert!(matches!(call("l1_loss", &a(false)), Outcome::Value(_)));
    assert_eq!(error_kind("l1_loss", &a(true)), ErrorKind::Argument);
}

#[test]
fn explicit_defaults_equal_omitted_arguments() {
    let none = Value::Null;
    let logits = || f64s(&[2, 3], &X);
    let probs = || f64s(&[2, 3], &[0.1, 0.9, 0.5, 0.0, 1.0, 0.3]);
    type Args = Vec<(&'static str, Value)>;
    let cases: Vec<(&str, Args, Args)> = vec![
        (
            "l1_loss",
            vec![("input", logits()), ("target", probs())],
            vec![
                ("size_average", none.clone()),
                ("reduce", none.clone()),
                ("reduction", s("mean")),
                ("weight", none.clone()),
            ],
        ),
        (
            "mse_loss",
            vec![("input", logits()), ("target", probs())],
            vec![
                ("size_average", none.clone()),
                ("reduce", none.clone()),
                ("reduction", s("mean")),
                ("weight", none.clone()),
            ],
        ),
        (
            "smooth_l1_loss",
            vec![("input", logits()), ("target", probs())],
            vec![
                ("size_average", none.clone()),
                ("reduce", none.clone()),
                ("reduction", s("mean")),
                ("beta", Value::Float(1.0)),
            ],
        ),
        (
            "huber_loss",
            vec![("input", logits()), ("target", probs())],
            vec![
                ("reduction", s("mean")),
                ("delta", Value::Float(1.0)),
                ("weight", none.clone()),
            ],
        ),
        (
            "cross_entropy",
            vec![("input", logits()), ("target", long(&[2], &[2, 0]))],
            vec![
                ("weight", none.clone()),
                ("size_average", none.clone()),
                ("ignore_index", Value::Int(-100)),
                ("reduce", none.clone()),
                ("reduction", s("mean")),
                ("label_smoothing", Value::Float(0.0)),
            ],
        ),
        (
            "nll_loss",
            vec![("input", logits()), ("target", long(&[2], &[2, 0]))],
            vec![
                ("weight", none.clone()),
                ("size_average", none.clone()),
                ("ignore_index", Value::Int(-100)),
                ("reduce", none.clone()),
                ("reduction", s("mean")),
            ],
        ),
        (
            "binary_cross_entropy",
            vec![("input", probs()), ("target", probs())],
            vec![
                ("weight", none.clone()),
                ("size_average", none.clone()),
                ("reduce", none.clone()),
                ("reduction", s("mean")),
            ],
        ),
        (
            "binary_cross_entropy_with_logits",
            vec![("input", logits()), ("target", probs())],
            vec![
                ("weight", none.clone()),
                ("size_average", none.clone()),
                ("reduce", none.clone()),
                ("reduction", s("mean")),
                ("pos_weight", none.clone()),
            ],
        ),
        (
            "multilabel_soft_margin_loss",
            vec![("input", logits()), ("target", probs())],
            vec![
                ("weight", none.clone()),
                ("size_average", none.clone()),
                ("reduce", none.clone()),
                ("reduction", s("mean")),
            ],
        ),
    ];
    for (f, required, defaults) in cases {
        let plain = value(f, &required);
        let mut all = required.clone();
        all.extend(defaults);
        assert_eq!(value(f, &all), plain, "{f}");
    }
}

#[test]
fn cross_entropy_with_one_hot_probabilities_equals_class_indices() {
    let x = f64s(
        &[3, 4],
        &[0.1, 2.0, -1.0, 0.5, 3.0, 0.0, 0.0, -2.0, 1.0, 1.0, 1.0, 1.0],
    );
    let idx = [1i64, 0, 3];
    let mut onehot = vec![0.0; 12];
    for (i, &k) in idx.iter().enumerate() {
        onehot[i * 4 + k as usize] = 1.0;
    }
    for r in ["none", "sum", "mean"] {
        let a = value(
            "cross_entropy",
            &[
                ("input", x.clone()),
                ("target", long(&[3], &idx)),
                ("reduction", s(r)),
            ],
        );
        let b = value(
            "cross_entropy",
            &[
                ("input", x.clone()),
                ("target", f64s(&[3, 4], &onehot)),
                ("reduction", s(r)),
            ],
        );
        assert_eq!(a.shape(), b.shape());
        close(&a.to_f64_vec(), &b.to_f64_vec());
    }
}

#[test]
fn weighted_nll_mean_divides_by_the_weights_of_kept_targets() {
    let logp = f64s(&[3, 2], &[-0.1, -2.0, -0.7, -0.9, -3.0, -0.01]);
    let w = f64s(&[2], &[2.0, 0.5]);
    let target = long(&[3], &[0, 1, -100]);
    let args = |r: &str| {
        vec![
            ("input", logp.clone()),
            ("target", target.clone()),
            ("weight", w.clone()),
            ("reduction", s(r)),
        ]
    };
    let sum = value("nll_loss", &args("sum")).to_f64_vec()[0];
    let mean = value("nll_loss", &args("mean")).to_f64_vec()[0];
    close(&[mean], &[sum / 2.5]);
    let none = value("nll_loss", &args("none")).to_f64_vec();
    assert_eq!(none[2], 0.0, "an ignored target contributes 0");
}

#[test]
fn all_ignored_or_empty_means_are_nan_and_sums_are_zero() {
    for f in ["cross_entropy", "nll_loss"] {
        let a = |r: &str| {
            vec![
                ("input", f64s(&[2, 3], &X)),
                ("target", long(&[2], &[-100, -100])),
                ("reduction", s(r)),
            ]
        };
        assert!(value(f, &a("mean")).to_f64_vec()[0].is_nan(), "{f}");
        assert_eq!(value(f, &a("sum")).to_f64_vec()[0], 0.0, "{f}");
        let empty = [("input", f64s(&[0, 3], &[])), ("target", long(&[0], &[]))];
        assert!(value(f, &empty).to_f64_vec()[0].is_nan(), "{f}");
    }
    let empty = [("input", f64s(&[0], &[])), ("target", f64s(&[0], &[]))];
    for f in [
        "l1_loss",
        "mse_loss",
        "binary_cross_entropy",
        "binary_cross_entropy_with_logits",
    ] {
        assert!(value(f, &empty).to_f64_vec()[0].is_nan(), "{f}");
    }
}

#[test]
fn class_index_errors_have_the_right_kinds() {
    let x = || f64s(&[2, 3], &X);
    let ce = |target: Value| error_kind("cross_entropy", &[("input", x()), ("target", target)]);
    assert_eq!(ce(long(&[2], &[0, 3])), ErrorKind::Value, "out of range");
    assert_eq!(ce(long(&[2], &[0, -1])), ErrorKind::Value, "negative");
    assert_eq!(ce(long(&[3], &[0, 1, 2])), ErrorKind::Shape, "batch");
    assert_eq!(
        ce(f64s(&[2], &[0.0, 1.0])),
        ErrorKind::Dtype,
        "float indices"
    );
    let int32 = Value::Tensor(Tensor::from_i64(DType::Int32, vec![2], vec![0, 1]).unwrap());
    assert_eq!(ce(int32), ErrorKind::Dtype, "int32 indices");
    let a = [
        ("input", x()),
        ("target", long(&[2], &[0, 1])),
        ("label_smoothing", Value::Float(1.5)),
    ];
    assert_eq!(error_kind("cross_entropy", &a), ErrorKind::Argument);
    let a = [
        ("input", x()),
        ("target", long(&[2], &[0, 1])),
        ("weight", t(DType::Float32, &[3], &[1.0; 3])),
    ];
    assert_eq!(error_kind("nll_loss", &a), ErrorKind::Dtype, "weight dtype");
}

#[test]
fn binary_losses_check_ranges_and_shapes_and_stay_finite_for_large_logits() {
    let bce = |x: f64, y: f64| {
        call(
            "binary_cross_entropy",
            &[("input", f64s(&[1], &[x])), ("target", f64s(&[1], &[y]))],
        )
    };
    for (x, y) in [(1.5, 0.0), (-0.1, 0.0), (0.5, 1.5), (f64::NAN, 0.0)] {
        assert!(
            matches!(bce(x, y), Outcome::Error(ref e) if e.kind == ErrorKind::Value),
            "{x} {y}"
        );
    }
    // log is clamped at -100, so a confident wrong prediction costs exactly 100.
    assert!(matches!(bce(0.0, 1.0), Outcome::Value(ref t) if t.to_f64_vec() == [100.0]));
    let a = [
        ("input", f64s(&[4], &[1e4, -1e4, 1e4, -1e4])),
        ("target", f64s(&[4], &[1.0, 0.0, 0.0, 1.0])),
        ("reduction", s("none")),
    ];
    let out = value("binary_cross_entropy_with_logits", &a).to_f64_vec();
    assert!(out.iter().all(|v| v.is_finite()), "{out:?}");
    let a = [
        ("input", f64s(&[2, 3], &X)),
        ("target", f64s(&[3], &[0.5; 3])),
    ];
    assert_eq!(
        error_kind("binary_cross_entropy_with_logits", &a),
        ErrorKind::Shape
    );
}

#[test]
fn output_dtypes_follow_each_apis_promotion_rule() {
    let f32s = t(DType::Float32, &[3], &[0.1, 0.2, 0.3]);
    let f64v = f64s(&[3], &[0.3, 0.2, 0.1]);
    let dtype = |f: &str, input: &Value, target: &Value| {
        value(f, &[("input", input.clone()), ("target", target.clone())]).dtype()
    };
    assert_eq!(dtype("mse_loss", &f32s, &f64v), DType::Float64);
    assert_eq!(
        dtype("huber_loss", &f32s, &f64v),
        DType::Float32,
        "input's dtype"
    );
    assert_eq!(
        dtype("binary_cross_entropy_with_logits", &f64v, &f32s),
        DType::Float32,
        "target's dtype"
    );
    assert_eq!(
        error_kind(
            "binary_cross_entropy",
            &[("input", f32s.clone()), ("target", f64v.clone())]
        ),
        ErrorKind::Dtype
    );
}
