//! lossconf backend for `burn::nn::loss` (burn 0.22) on the pure-Rust Flex CPU device.
//!
//! Every loss module of burn 0.22 that has a PyTorch counterpart in the suite is mapped to it
//! (see `backends/README.md` for the table). The adapter converts values and names only:
//! tensors to burn tensors of the same dtype, PyTorch option names to burn config fields,
//! `reduction` strings to `burn::nn::loss::Reduction` (an omitted `reduction` becomes
//! `Reduction::Auto`, burn's default, so a user's "default" call is what is tested). Where a
//! PyTorch option has no burn counterpart the call answers `Outcome::Unsupported("burn 0.22: …")`.
//!
//! burn reports invalid arguments by panicking (config assertions, shape assertions); the
//! adapter contains those panics and answers an error of the matching kind, which is what a
//! caller sees as "the framework rejected the call".

use burn::nn::loss::{
    BinaryCrossEntropyLossConfig, CTCLossConfig, CosineEmbeddingLossConfig, CrossEntropyLossConfig,
    GaussianNLLLossConfig, HingeEmbeddingLossConfig, HuberLossConfig, KLDivLossConfig,
    LpLossConfig, MarginRankingLossConfig, MseLoss, MultiMarginLossConfig, PoissonNllLossConfig,
    Reduction, SmoothL1LossConfig, SoftMarginLoss, TripletMarginLossConfig,
};
use burn::tensor::{
    DType as BDType, Device, Int, Tensor as BTensor, TensorCreationOptions, TensorData,
};
use lossconf::{Backend, Call, CallError, DType, ErrorKind, Outcome, Tensor, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// burn 0.22 `nn::loss` on `Device::flex()`.
pub struct Burn;

const F: &str = "torch.nn.functional.";

/// The PyTorch APIs mapped, with the burn module behind each.
pub const APIS: &[(&str, &str)] = &[
    (
        "binary_cross_entropy",
        "BinaryCrossEntropyLoss (logits: false)",
    ),
    (
        "binary_cross_entropy_with_logits",
        "BinaryCrossEntropyLoss (logits: true)",
    ),
    ("cosine_embedding_loss", "CosineEmbeddingLoss"),
    ("cross_entropy", "CrossEntropyLoss (logits: true)"),
    ("ctc_loss", "CTCLoss"),
    ("gaussian_nll_loss", "GaussianNLLLoss"),
    ("hinge_embedding_loss", "HingeEmbeddingLoss"),
    ("huber_loss", "HuberLoss"),
    ("kl_div", "KLDivLoss"),
    ("l1_loss", "LpLoss (p = 1)"),
    ("margin_ranking_loss", "MarginRankingLoss"),
    ("mse_loss", "MseLoss"),
    ("multi_margin_loss", "MultiMarginLoss"),
    ("poisson_nll_loss", "PoissonNllLoss"),
    ("smooth_l1_loss", "SmoothL1Loss"),
    ("soft_margin_loss", "SoftMarginLoss"),
    ("triplet_margin_loss", "TripletMarginLoss"),
];

enum Stop {
    Unsupported(String),
    Error(CallError),
}

type R<T> = Result<T, Stop>;

fn unsupported<T>(what: impl std::fmt::Display) -> R<T> {
    Err(Stop::Unsupported(format!("burn 0.22: {what}")))
}

fn backend_error(msg: impl Into<String>) -> Stop {
    Stop::Error(CallError::new(ErrorKind::Backend, msg))
}

impl Backend for Burn {
    fn name(&self) -> &str {
        "burn 0.22 (flex)"
    }

    fn apis(&self) -> Option<Vec<String>> {
        Some(APIS.iter().map(|(a, _)| format!("{F}{a}")).collect())
    }

    fn forward(&self, call: &Call) -> Outcome {
        let Some(name) = call.api.strip_prefix(F) else {
            return Outcome::Unsupported(format!("burn 0.22: no loss matching {}", call.api));
        };
        let device = Device::flex();
        let result = match name {
            "binary_cross_entropy" => bce(call, &device, false),
            "binary_cross_entropy_with_logits" => bce(call, &device, true),
            "cosine_embedding_loss" => cosine_embedding(call, &device),
            "cross_entropy" => cross_entropy(call, &device),
            "ctc_loss" => ctc(call, &device),
            "gaussian_nll_loss" => gaussian_nll(call, &device),
            "hinge_embedding_loss" => hinge_embedding(call, &device),
            "huber_loss" => huber(call, &device),
            "kl_div" => kl_div(call, &device),
            "l1_loss" => l1(call, &device),
            "margin_ranking_loss" => margin_ranking(call, &device),
            "mse_loss" => mse(call, &device),
            "multi_margin_loss" => multi_margin(call, &device),
            "poisson_nll_loss" => poisson_nll(call, &device),
            "smooth_l1_loss" => smooth_l1(call, &device),
            "soft_margin_loss" => soft_margin(call, &device),
            "triplet_margin_loss" => triplet_margin(call, &device),
            _ => unsupported(format!("no loss matching {}", call.api)),
        };
        match result {
            Ok(t) => Outcome::Value(t),
            Err(Stop::Unsupported(why)) => Outcome::Unsupported(why),
            Err(Stop::Error(e)) => Outcome::Error(e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments

/// The effective reduction of a PyTorch call, in burn's terms.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Red {
    /// `reduction='none'`: the module's `forward_no_reduction`.
    None,
    /// Passed to the module as `Reduction::…`.
    Burn(RedKind),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum RedKind {
    Mean,
    Sum,
    BatchMean,
    Auto,
}

impl RedKind {
    fn burn(self) -> Reduction {
        match self {
            RedKind::Mean => Reduction::Mean,
            RedKind::Sum => Reduction::Sum,
            RedKind::BatchMean => Reduction::BatchMean,
            RedKind::Auto => Reduction::Auto,
        }
    }
}

struct Args<'a> {
    call: &'a Call,
}

impl<'a> Args<'a> {
    fn new(call: &'a Call, known: &[&str]) -> R<Args<'a>> {
        if let Some(k) = call.args.keys().find(|k| !known.contains(&k.as_str())) {
            return unsupported(format!("no argument `{k}`"));
        }
        Ok(Args { call })
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        match self.call.args.get(name) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn tensor(&self, name: &str) -> R<&'a Tensor> {
        match self.get(name) {
            Some(Value::Tensor(t)) => Ok(t),
            Some(other) => unsupported(format!("`{name}` given as {}", other.describe())),
            None => unsupported(format!("`{name}` missing")),
        }
    }

    fn float(&self, name: &str, default: f64) -> R<f64> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.as_f64() {
                Some(x) => Ok(x),
                None => unsupported(format!("{name}={}", v.describe())),
            },
        }
    }

    fn boolean(&self, name: &str, default: bool) -> R<bool> {
        match self.get(name) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => unsupported(format!("{name}={}", v.describe())),
        }
    }

    fn absent(&self, name: &str, what: &str) -> R<()> {
        match self.get(name) {
            None => Ok(()),
            Some(v) => unsupported(format!("{what} ({name}={})", v.describe())),
        }
    }

    /// The PyTorch reduction (legacy `size_average`/`reduce` resolved as `torch.nn._reduction`
    /// does) as a burn `Reduction`. An omitted `reduction` is burn's `Reduction::Auto`.
    fn reduction(&self) -> R<Red> {
        let legacy = |name: &str| match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => unsupported(format!("{name}={}", v.describe())),
        };
        let (size_average, reduce) = (legacy("size_average")?, legacy("reduce")?);
        if size_average.is_some() || reduce.is_some() {
            return Ok(
                match (size_average.unwrap_or(true), reduce.unwrap_or(true)) {
                    (_, false) => Red::None,
                    (true, true) => Red::Burn(RedKind::Mean),
                    (false, true) => Red::Burn(RedKind::Sum),
                },
            );
        }
        match self.get("reduction") {
            None => Ok(Red::Burn(RedKind::Auto)),
            Some(Value::Str(s)) => match s.as_str() {
                "none" => Ok(Red::None),
                "mean" => Ok(Red::Burn(RedKind::Mean)),
                "sum" => Ok(Red::Burn(RedKind::Sum)),
                "batchmean" => Ok(Red::Burn(RedKind::BatchMean)),
                other => unsupported(format!("reduction '{other}' has no burn Reduction variant")),
            },
            Some(v) => unsupported(format!("reduction={}", v.describe())),
        }
    }

    /// For modules that always take the mean (cross entropy, BCE).
    fn mean_only(&self, module: &str) -> R<()> {
        match self.reduction()? {
            Red::Burn(RedKind::Mean | RedKind::Auto) => Ok(()),
            other => unsupported(format!(
                "{module} always takes the mean (reduction {other:?})"
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tensors

fn burn_dtype(d: DType) -> R<BDType> {
    Ok(match d {
        DType::Float16 => BDType::F16,
        DType::Bfloat16 => BDType::BF16,
        DType::Float32 => BDType::F32,
        DType::Float64 => BDType::F64,
        other => return unsupported(format!("{other} where a float tensor is expected")),
    })
}

fn lossconf_dtype(d: BDType) -> R<DType> {
    Ok(match d {
        BDType::F16 => DType::Float16,
        BDType::BF16 => DType::Bfloat16,
        BDType::F32 => DType::Float32,
        BDType::F64 => DType::Float64,
        other => return Err(backend_error(format!("unexpected result dtype {other:?}"))),
    })
}

/// A float tensor of rank `D` (a 0-d value is given shape `[1]`).
fn float<const D: usize>(t: &Tensor, device: &Device) -> R<BTensor<D>> {
    let dtype = burn_dtype(t.dtype())?;
    let shape = burn_shape(t.shape());
    if shape.len() != D {
        return Err(backend_error(format!(
            "adapter: rank {} for a rank-{D} tensor",
            shape.len()
        )));
    }
    let data = TensorData::new(t.to_f64_vec(), shape);
    guard(ErrorKind::Backend, || {
        BTensor::<D>::from_data(
            data,
            TensorCreationOptions::new(device.clone()).with_dtype(dtype),
        )
    })
}

/// A float tensor holding `x` everywhere, shaped and typed like `like`.
fn full_like<const D: usize>(like: &Tensor, x: f64, device: &Device) -> R<BTensor<D>> {
    let mut t = Tensor::from_f64(like.dtype(), like.shape().to_vec(), vec![x; like.numel()])
        .map_err(|e| backend_error(e.0))?;
    if like.shape().is_empty() {
        t = Tensor::from_f64(like.dtype(), vec![], vec![x]).map_err(|e| backend_error(e.0))?;
    }
    float::<D>(&t, device)
}

/// An integer tensor of rank `D` from integer values, or from floats that are all integral
/// (PyTorch takes float targets where burn takes `Int` tensors).
fn int<const D: usize>(t: &Tensor, device: &Device, what: &str) -> R<BTensor<D, Int>> {
    let values: Vec<i64> = match t.as_i64() {
        Some(v) => v.to_vec(),
        None => {
            let v = t.to_f64_vec();
            if v.iter().any(|x| x.fract() != 0.0 || !x.is_finite()) {
                return unsupported(format!(
                    "{what} is an Int tensor; non-integral values ({}) cannot be passed",
                    t.describe()
                ));
            }
            v.into_iter().map(|x| x as i64).collect()
        }
    };
    let shape = burn_shape(t.shape());
    if shape.len() != D {
        return Err(backend_error(format!(
            "adapter: rank {} for a rank-{D} tensor",
            shape.len()
        )));
    }
    guard(ErrorKind::Backend, || {
        BTensor::<D, Int>::from_data(
            TensorData::new(values, shape),
            TensorCreationOptions::new(device.clone()).with_dtype(BDType::I64),
        )
    })
}

fn burn_shape(shape: &[usize]) -> Vec<usize> {
    if shape.is_empty() {
        vec![1]
    } else {
        shape.to_vec()
    }
}

/// Reads a burn tensor back with the given shape (`[]` for a reduced loss, which burn returns
/// as `[1]`; burn has no 0-d tensors).
fn read<const D: usize>(t: BTensor<D>, shape: impl Into<Option<Vec<usize>>>) -> R<Tensor> {
    let shape = shape.into().unwrap_or_else(|| t.dims().to_vec());
    let dtype = lossconf_dtype(t.dtype())?;
    let data = guard(ErrorKind::Backend, || t.into_data())?;
    let values = data
        .try_into_vec_as::<f64>()
        .map_err(|e| backend_error(format!("reading the result: {e:?}")))?;
    Tensor::from_f64(dtype, shape, values).map_err(|e| backend_error(e.0))
}

fn reduced(t: BTensor<1>) -> R<Tensor> {
    let dims = t.dims();
    if dims != [1] {
        return Err(backend_error(format!("a reduced loss of shape {dims:?}")));
    }
    read(t, vec![])
}

/// Runs burn code; a panic is burn rejecting the call. `kind` is the kind of error the
/// assertions at this call site raise; a message naming a shape or dims is a shape error.
fn guard<T>(kind: ErrorKind, f: impl FnOnce() -> T) -> R<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into());
        let kind = panic_kind(&msg, kind);
        Stop::Error(CallError::new(kind, format!("burn panicked: {msg}")))
    })
}

/// The kind of a burn assertion panic: each burn assertion message is mapped to the kind
/// PyTorch's error for the same condition has; `default` is the call site's usual kind.
fn panic_kind(msg: &str, default: ErrorKind) -> ErrorKind {
    let m = msg.to_lowercase();
    const TABLE: &[(&str, ErrorKind)] = &[
        ("reduction is not supported", ErrorKind::Argument),
        ("out of bounds", ErrorKind::Value),
        ("blank index", ErrorKind::Argument),
        ("exceeds the log_probs time dimension", ErrorKind::Value),
        ("exceeds the targets tensor width", ErrorKind::Shape),
        ("must be >= target_lengths", ErrorKind::Value),
        ("must be non-negative", ErrorKind::Value),
    ];
    if let Some((_, k)) = TABLE.iter().find(|(needle, _)| m.contains(needle)) {
        return *k;
    }
    if m.contains("shape") || m.contains("dims") || m.contains("dimension") {
        return ErrorKind::Shape;
    }
    default
}

fn rank_of(ts: &[&Tensor]) -> R<usize> {
    let raw = ts[0].shape().len();
    let r = burn_shape(ts[0].shape()).len();
    for t in ts {
        if t.shape().len() != raw {
            return unsupported(format!(
                "tensors of different ranks ({}); burn's loss modules take one rank D for all",
                ts.iter()
                    .map(|t| t.describe())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if r > 6 {
        return unsupported(format!("rank {r} (adapter dispatches ranks 1 to 6)"));
    }
    Ok(r)
}

/// Calls `$body` with `$D` bound to the runtime rank `$rank` as a const generic.
macro_rules! by_rank {
    ($rank:expr, $D:ident => $body:expr) => {
        match $rank {
            1 => {
                const $D: usize = 1;
                $body
            }
            2 => {
                const $D: usize = 2;
                $body
            }
            3 => {
                const $D: usize = 3;
                $body
            }
            4 => {
                const $D: usize = 4;
                $body
            }
            5 => {
                const $D: usize = 5;
                $body
            }
            6 => {
                const $D: usize = 6;
                $body
            }
            r => unsupported(format!("rank {r}")),
        }
    };
}

/// Output of an unreduced loss: burn's output shape (`[]` when the inputs were 0-d).
fn unreduced<const D: usize>(t: BTensor<D>, like: &Tensor) -> R<Tensor> {
    let shape = if like.shape().is_empty() {
        vec![]
    } else {
        t.dims().to_vec()
    };
    read(t, shape)
}

// ---------------------------------------------------------------------------------------------
// Element-wise losses of two tensors: (input, target) -> same-shape loss, reduced.

macro_rules! elementwise {
    // $module: expression building the loss module; $fwd_none / $fwd_red: method names.
    ($input:expr, $target:expr, $red:expr, $device:expr, $kind:expr, $module:expr, $none:ident, $reduce:ident) => {{
        let (input, target, red, device, kind) = ($input, $target, $red, $device, $kind);
        let rank = rank_of(&[input, target])?;
        by_rank!(rank, D => {
            let x = float::<D>(input, device)?;
            let y = float::<D>(target, device)?;
            match red {
                Red::None => {
                    let out = guard(kind, || { let m = $module; m.$none(x, y) })?;
                    unreduced(out, input)
                }
                Red::Burn(k) => {
                    let out = guard(kind, || { let m = $module; m.$reduce(x, y, k.burn()) })?;
                    reduced(out)
                }
            }
        })
    }};
}

const REDUCTION_ARGS: [&str; 3] = ["size_average", "reduce", "reduction"];

fn with_reduction<'a>(names: &[&'a str]) -> Vec<&'a str> {
    names.iter().copied().chain(REDUCTION_ARGS).collect()
}

fn float_inputs(ts: &[&Tensor]) -> R<()> {
    for t in ts {
        if !t.dtype().is_float() {
            return unsupported(format!(
                "{} tensor (burn loss modules take float tensors)",
                t.dtype()
            ));
        }
    }
    Ok(())
}

fn mse(call: &Call, device: &Device) -> R<Tensor> {
    let a = Args::new(call, &with_reduction(&["input", "target", "weight"]))?;
    let (input, target) = (a.tensor("input")?, a.tensor("target")?);
    a.absent("weight", "MseLoss has no element weights")?;
    let red = a.reduction()?;
    float_inputs(&[input, target])?;
    elementwise!(
        input,
        target,
        red,
        device,
        ErrorKind::Shape,
        MseLoss::new(),
        forward_no_reduction,
        forward
    )
}

fn l1(call: &Call, device: &Device) -> R<Tensor> {
    let a = Args::new(call, &with_reduction(&["input", "target", "weight"]))?;
    let (input, target) = (a.tensor("input")?, a.tensor("target")?);
    a.absent("weight", "LpLoss has no element weights")?;
    let red = a.reduction()?;
    float_inputs(&[input, target])?;
    elementwise!(
        input,
        target,
        red,
        device,
        ErrorKind::Shape,
        LpLossConfig::l1(),
        forward_no_reduction,
        forward
    )
}

fn huber(call: &Call, device: &Device) -> R<Tensor> {
    let a = Args::new(call, &["input", "target", "reduction", "delta", "weight"])?;
    let (input, target) = (a.tensor("input")?, a.tensor("target")?);
    a.absent("weight", "HuberLoss has no element weights")?;
    let red = a.reduction()?;
    let delta = a.float("delta", 1.0)?;
    float_inputs(&[input, target])?;
    let module = guard(ErrorKind::Argument, || {
        HuberLossConfig::new(delta as f32).init()
    })?;
    elementwise!(
        input,
        target,
        red,
        device,
        ErrorKind::Shape,
        module.clone(),
        forward_no_reduction,
        forward
    )
}

fn smooth_l1(call: &Call, device: &Device) -> R<Tensor> {
    let a = Args::new(call, &with_reduction(&["input", "target", "beta"]))?;
    let (input, target) = (a.tensor("input")?, a.tensor("target")?);
    let red = a.reduction()?;
    let beta = a.float("beta", 1.0)?;
    float_inputs(&[input, target])?;
    let module = guard(ErrorKind::Argument, || {
        SmoothL1LossConfig::new().with_beta(beta as f32).init()
    })?;
    elementwise!(
        input,
        target,
        red,
        device,
        ErrorKind::Shape,
        module.clone(),
        forward,
        forward_with_reduction
    )
}

fn kl_div(call: &Call, device: &Device) -> R<Tensor> {
    let a = Args::new(call, &with_reduction(&["input", "target", "log_target"]))?;
    let (input, target) = (a.tensor("input")?, a.tensor("target")?);
    let red = a.reduction()?;
    let log_target = a.boolean("log_target", false)?;
    float_inputs(&[input, target])?;
    let module = KLDivLossConfig::new().with_log_target(log_target).init();
    elementwise!(
        input,
        target,
        red,
        device,
        ErrorKind::Shape,
        module.clone(),
        forward_no_reduction,
        forward
    )
}

fn soft_margin(call: &Call, device: &Device) -> R<Tensor> {
    let a = Args::new(call, &with_reduction(&["input", "target"]))?;
    let (input, target) = (a.tensor("input")?, a.tensor("target")?);
    let red = a.reduction()?;
    float_inputs(&[input, target])?;
    elementwise!(
        input,
        target,
        red,
        device,
        ErrorKind::Shape,
        SoftMarginLoss::new(),
        forward_no_reduction,
        forward
    )
}

fn hinge_embedding(call: &Call, device: &Device) -> R<Tensor> {
    let a = Args::new(call, &with_reduction(&["input", "target", "margin"]))?;
    let (input, target) = (a.tensor("input")?, a.tensor("target")?);
    let red = a.reduction()?;
    let margin = a.float("margin", 1.0)?;
    float_inputs(&[input])?;
    // PyTorch takes any numeric target; burn's target is a float tensor like the input.
    let target = &cast_float(target, input.dtype())?;
    let module = HingeEmbeddingLossConfig::new().with_margin(margin).init();
    elementwise!(
        input,
        target,
        red,
        device,
        ErrorKind::Shape,
        module.clone(),
        forward_no_reduction,
        forward
    )
}

fn poisson_nll(call: &Call, device: &Device) -> R<Tensor> {
    let a = Args::new(
        call,
        &with_reduction(&["input", "target", "log_input", "full", "eps"]),
    )?;
    let (input, target) = (a.tensor("input")?, a.tensor("target")?);
    let red = a.reduction()?;
    let log_input = a.boolean("log_input", true)?;
    let full = a.boolean("full", false)?;
    let eps = a.float("eps", 1e-8)?;
    float_inputs(&[input, target])?;
    let module = guard(ErrorKind::Argument, || {
        PoissonNllLossConfig::new()
            .with_log_input(log_input)
            .with_full(full)
            .with_eps(eps)
            .init()
    })?;
    // forward asserts non-negative targets (and inputs when log_input is false): value errors.
    elementwise!(
        input,
        target,
        red,
        device,
        ErrorKind::Value,
        module.clone(),
        forward_no_reduction,
        forward
    )
}

/// A float copy of an integer tensor (values unchanged), for targets PyTorch accepts as ints.
fn cast_float(t: &Tensor, dtype: DType) -> R<Tensor> {
    if t.dtype().is_float() {
        return Ok(t.clone());
    }
    Tensor::from_f64(dtype, t.shape().to_vec(), t.to_f64_vec()).map_err(|e| backend_error(e.0))
}

// ---------------------------------------------------------------------------------------------
// Losses with their own signatures.

fn margin_ranking(call: &Call, device: &Device) -> R<Tensor> {
    let a = Args::new(
        call,
        &with_reduction(&["input1", "input2", "target", "margin"]),
    )?;
    let (x1, x2, target) = (
        a.tensor("input1")?,
        a.tensor("input2")?,
        a.tensor("target")?,
    );
    let red = a.reduction()?;
    let margin = a.float("margin", 0.0)?;
    float_inputs(&[x1, x2])?;
    let target = &cast_float(target, x1.dtype())?;
    let module = guard(ErrorKind::Argument, || {
        MarginRankingLossConfig::new().with_margin(margin).init()
    })?;
    let rank = rank_of(&[x1, x2, target])?;
    by_rank!(rank, D => {
        let (a1, a2, y) = (float::<D>(x1, device)?, float::<D>(x2, device)?, float::<D>(target, device)?);
        match red {
            Red::None => unreduced(guard(ErrorKind::Shape, || module.forward_no_reduction(a1, a2, y))?, x1),
            Red::Burn(k) => reduced(guard(ErrorKind::Shape, || module.forward(a1, a2, y, k.burn()))?),
        }
    })
}

fn gaussian_nll(call: &Call, device: &Device) -> R<Tensor> {
    let a = Args::new(
        call,
        &["input", "target", "var", "full", "eps", "reduction"],
    )?;
    let (input, target) = (a.tensor("input")?, a.tensor("target")?);
    let red = a.reduction()?;
    let full = a.boolean("full", false)?;
    let eps = a.float("eps", 1e-6)?;
    float_inputs(&[input, target])?;
    let module = GaussianNLLLossConfig::new()
        .with_full(full)
        .with_eps(eps)
        .init();
    let rank = rank_of(&[input, target])?;
    let var_arg = a.get("var");
    by_rank!(rank, D => {
        let var = match var_arg {
            Some(Value::Tensor(v)) => {
                float_inputs(&[v])?;
                rank_of(&[input, v])?;
                float::<D>(v, device)?
            }
            // A Python float `var` is that value everywhere: a full tensor is the same argument.
            Some(Value::Float(x)) => full_like::<D>(input, *x, device)?,
            Some(v @ Value::Str(_)) => match v.as_f64() {
                Some(x) => full_like::<D>(input, x, device)?,
                None => return unsupported(format!("var={}", v.describe())),
            },
            Some(v) => return unsupported(format!("var={} (only a tensor or a Python float)", v.describe())),
            None => return unsupported("`var` missing"),
        };
        let (x, y) = (float::<D>(input, device)?, float::<D>(target, device)?);
        match red {
            Red::None => unreduced(guard(ErrorKind::Shape, || module.forward_no_reduction(x, y, var))?, input),
            Red::Burn(k) => reduced(guard(ErrorKind::Argument, || module.forward(x, y, var, k.burn()))?),
        }
    })
}

fn bce(call: &Call, device: &Device, logits: bool) -> R<Tensor> {
    let mut known = with_reduction(&["input", "target", "weight"]);
    if logits {
        known.push("pos_weight");
    }
    let a = Args::new(call, &known)?;
    let (input, target) = (a.tensor("input")?, a.tensor("target")?);
    a.mean_only("BinaryCrossEntropyLoss")?;
    a.absent("pos_weight", "BinaryCrossEntropyLoss has no pos_weight")?;
    float_inputs(&[input])?;
    let rank = rank_of(&[input, target])?;
    // burn's weights are per class (last dim) of a rank >= 2 input; PyTorch's are any
    // broadcastable tensor. Only a weight varying along the last dim alone maps.
    let weights = match a.get("weight") {
        None => None,
        Some(Value::Tensor(w)) => {
            let c = *input.shape().last().unwrap_or(&1);
            let w_shape = w.shape();
            let per_class = rank >= 2
                && w_shape.last() == Some(&c)
                && w_shape[..w_shape.len() - 1].iter().all(|&d| d == 1);
            if !per_class {
                return unsupported(format!(
                    "weight {} (burn's weights are per class, along the last dim of a rank >= 2 input)",
                    w.describe()
                ));
            }
            Some(
                w.to_f64_vec()
                    .into_iter()
                    .map(|x| x as f32)
                    .collect::<Vec<f32>>(),
            )
        }
        Some(v) => return unsupported(format!("weight={}", v.describe())),
    };
    let module = guard(ErrorKind::Argument, || {
        BinaryCrossEntropyLossConfig::new()
            .with_logits(logits)
            .with_weights(weights)
            .init(device)
    })?;
    by_rank!(rank, D => {
        let x = float::<D>(input, device)?;
        let y = int::<D>(target, device, "BinaryCrossEntropyLoss's target")?;
        reduced(guard(ErrorKind::Shape, || module.forward(x, y))?)
    })
}

fn cross_entropy(call: &Call, device: &Device) -> R<Tensor> {
    let a = Args::new(
        call,
        &with_reduction(&[
            "input",
            "target",
            "weight",
            "ignore_index",
            "label_smoothing",
        ]),
    )?;
    let (input, target) = (a.tensor("input")?, a.tensor("target")?);
    a.mean_only("CrossEntropyLoss")?;
    float_inputs(&[input])?;
    if input.shape().len() != 2 || target.shape().len() != 1 {
        return unsupported(format!(
            "input {} / target {} (CrossEntropyLoss takes [N, C] logits and [N] class indices)",
            input.describe(),
            target.describe()
        ));
    }
    if target.dtype().is_float() {
        return unsupported("class probabilities as target (CrossEntropyLoss takes class indices)");
    }
    let weights = match a.get("weight") {
        None => None,
        Some(Value::Tensor(w)) => Some(
            w.to_f64_vec()
                .into_iter()
                .map(|x| x as f32)
                .collect::<Vec<f32>>(),
        ),
        Some(v) => return unsupported(format!("weight={}", v.describe())),
    };
    let ignore_index = match a.get("ignore_index") {
        None => -100,
        Some(Value::Int(i)) => *i,
        Some(v) => return unsupported(format!("ignore_index={}", v.describe())),
    };
    let pad_tokens = if ignore_index >= 0 {
        Some(vec![ignore_index as usize])
    } else if target.as_i64().is_some_and(|t| t.contains(&ignore_index)) {
        return unsupported(format!(
            "ignore_index={ignore_index}: pad_tokens are usize, a negative class cannot be padded"
        ));
    } else {
        None
    };
    let smoothing = match a.get("label_smoothing") {
        None => None,
        Some(v) => match v.as_f64() {
            Some(x) => Some(x as f32),
            None => return unsupported(format!("label_smoothing={}", v.describe())),
        },
    };
    let module = guard(ErrorKind::Argument, || {
        CrossEntropyLossConfig::new()
            .with_pad_tokens(pad_tokens)
            .with_weights(weights)
            .with_smoothing(smoothing)
            .with_logits(true)
            .init(device)
    })?;
    let x = float::<2>(input, device)?;
    let y = int::<1>(target, device, "CrossEntropyLoss's target")?;
    reduced(guard(ErrorKind::Value, || module.forward(x, y))?)
}

fn cosine_embedding(call: &Call, device: &Device) -> R<Tensor> {
    let a = Args::new(
        call,
        &with_reduction(&["input1", "input2", "target", "margin"]),
    )?;
    let (x1, x2, target) = (
        a.tensor("input1")?,
        a.tensor("input2")?,
        a.tensor("target")?,
    );
    let red = a.reduction()?;
    let margin = a.float("margin", 0.0)?;
    float_inputs(&[x1, x2])?;
    if x1.shape().len() != 2 || x2.shape().len() != 2 || target.shape().len() != 1 {
        return unsupported(format!(
            "{} / {} / target {} (CosineEmbeddingLoss takes [N, D] inputs and an [N] target)",
            x1.describe(),
            x2.describe(),
            target.describe()
        ));
    }
    let reduction = match red {
        Red::None => Reduction::Mean, // unused: forward_no_reduction
        Red::Burn(k) => k.burn(),
    };
    let module = CosineEmbeddingLossConfig::new()
        .with_margin(margin as f32)
        .with_reduction(reduction)
        .init();
    let (a1, a2) = (float::<2>(x1, device)?, float::<2>(x2, device)?);
    let y = int::<1>(target, device, "CosineEmbeddingLoss's target")?;
    match red {
        Red::None => read(
            guard(ErrorKind::Shape, || module.forward_no_reduction(a1, a2, y))?,
            vec![x1.shape()[0]],
        ),
        Red::Burn(_) => reduced(guard(ErrorKind::Argument, || module.forward(a1, a2, y))?),
    }
}

fn multi_margin(call: &Call, device: &Device) -> R<Tensor> {
    let a = Args::new(
        call,
        &with_reduction(&["input", "target", "p", "margin", "weight"]),
    )?;
    let (input, target) = (a.tensor("input")?, a.tensor("target")?);
    a.absent("weight", "MultiMarginLoss has no class weights")?;
    let red = a.reduction()?;
    let margin = a.float("margin", 1.0)?;
    let p = a.float("p", 1.0)?;
    float_inputs(&[input])?;
    if input.shape().len() != 2 || target.shape().len() != 1 {
        return unsupported(format!(
            "input {} / target {} (MultiMarginLoss takes [N, C] and [N])",
            input.describe(),
            target.describe()
        ));
    }
    if target.dtype().is_float() {
        return unsupported("float target (MultiMarginLoss takes class indices)");
    }
    let p = if p.fract() == 0.0 && p.abs() < 1e9 {
        p as i32
    } else {
        return unsupported(format!("p={p} (MultiMarginLoss's p is an i32)"));
    };
    let module = guard(ErrorKind::Argument, || {
        MultiMarginLossConfig::new()
            .with_margin(margin)
            .with_p(p)
            .init()
    })?;
    let x = float::<2>(input, device)?;
    let y = int::<1>(target, device, "MultiMarginLoss's target")?;
    match red {
        Red::None => read(
            guard(ErrorKind::Value, || module.forward_no_reduction(x, y))?,
            vec![input.shape()[0]],
        ),
        Red::Burn(k) => reduced(guard(ErrorKind::Argument, || {
            module.forward(x, y, k.burn())
        })?),
    }
}

fn triplet_margin(call: &Call, device: &Device) -> R<Tensor> {
    let a = Args::new(
        call,
        &with_reduction(&[
            "anchor", "positive", "negative", "margin", "p", "eps", "swap",
        ]),
    )?;
    let (an, po, ne) = (
        a.tensor("anchor")?,
        a.tensor("positive")?,
        a.tensor("negative")?,
    );
    let red = a.reduction()?;
    let margin = a.float("margin", 1.0)?;
    let p = a.float("p", 2.0)?;
    a.absent("eps", "TripletMarginLoss has no eps")?;
    if a.boolean("swap", false)? {
        return unsupported("TripletMarginLoss has no swap");
    }
    float_inputs(&[an, po, ne])?;
    if [an, po, ne].iter().any(|t| t.shape().len() != 2) {
        return unsupported(format!(
            "{} / {} / {} (TripletMarginLoss takes [N, D] inputs)",
            an.describe(),
            po.describe(),
            ne.describe()
        ));
    }
    let module = TripletMarginLossConfig::new()
        .with_margin(margin)
        .with_p(p)
        .init();
    let (x, y, z) = (
        float::<2>(an, device)?,
        float::<2>(po, device)?,
        float::<2>(ne, device)?,
    );
    match red {
        Red::None => read(
            guard(ErrorKind::Shape, || module.forward_no_reduction(x, y, z))?,
            vec![an.shape()[0]],
        ),
        Red::Burn(k) => reduced(guard(ErrorKind::Argument, || {
            module.forward(x, y, z, k.burn())
        })?),
    }
}

fn lengths(a: &Args, name: &str, device: &Device) -> R<(Vec<i64>, BTensor<1, Int>)> {
    let v: Vec<i64> = match a.get(name) {
        Some(Value::IntList(v)) => v.clone(),
        Some(Value::Tensor(t)) if !t.dtype().is_float() => t.as_i64().unwrap_or_default().to_vec(),
        Some(v) => return unsupported(format!("{name}={}", v.describe())),
        None => return unsupported(format!("`{name}` missing")),
    };
    let t =
        Tensor::from_i64(DType::Int64, vec![v.len()], v.clone()).map_err(|e| backend_error(e.0))?;
    Ok((v, int::<1>(&t, device, name)?))
}

fn ctc(call: &Call, device: &Device) -> R<Tensor> {
    let a = Args::new(
        call,
        &[
            "log_probs",
            "targets",
            "input_lengths",
            "target_lengths",
            "blank",
            "reduction",
            "zero_infinity",
        ],
    )?;
    let (log_probs, targets) = (a.tensor("log_probs")?, a.tensor("targets")?);
    let red = a.reduction()?;
    let blank = match a.get("blank") {
        None => 0,
        Some(Value::Int(b)) if *b >= 0 => *b as usize,
        Some(v) => return unsupported(format!("blank={} (burn's blank is a usize)", v.describe())),
    };
    let zero_infinity = a.boolean("zero_infinity", false)?;
    float_inputs(&[log_probs])?;
    if log_probs.shape().len() != 3 {
        return unsupported(format!(
            "log_probs {} (CTCLoss takes batched [T, N, C])",
            log_probs.describe()
        ));
    }
    if targets.dtype().is_float() {
        return unsupported("float targets (CTCLoss takes Int targets)");
    }
    let is_list = |n: &str| matches!(a.get(n), Some(Value::IntList(_)));
    if is_list("input_lengths") != is_list("target_lengths") {
        return unsupported(
            "lengths given one as a list and one as a tensor (no burn counterpart)",
        );
    }
    let (_, il) = lengths(&a, "input_lengths", device)?;
    let (tl_values, tl) = lengths(&a, "target_lengths", device)?;
    // burn takes padded [N, S] targets; PyTorch also takes them concatenated, [sum(target_lengths)].
    let targets = match targets.shape().len() {
        2 => targets.clone(),
        1 => {
            let flat = targets.as_i64().unwrap_or_default();
            let n = tl_values.len();
            let s = tl_values.iter().copied().max().unwrap_or(0).max(0) as usize;
            if tl_values.iter().any(|&l| l < 0)
                || tl_values.iter().sum::<i64>() as usize != flat.len()
            {
                return unsupported("concatenated targets whose length is not sum(target_lengths)");
            }
            let mut padded = vec![blank as i64; n * s];
            let mut at = 0;
            for (i, &l) in tl_values.iter().enumerate() {
                for j in 0..l as usize {
                    padded[i * s + j] = flat[at];
                    at += 1;
                }
            }
            Tensor::from_i64(DType::Int64, vec![n, s], padded).map_err(|e| backend_error(e.0))?
        }
        _ => return unsupported(format!("targets {}", targets.describe())),
    };
    let module = CTCLossConfig::new()
        .with_blank(blank)
        .with_zero_infinity(zero_infinity)
        .init();
    let x = float::<3>(log_probs, device)?;
    let y = int::<2>(&targets, device, "CTCLoss's targets")?;
    match red {
        Red::None => read(
            guard(ErrorKind::Value, || module.forward(x, y, il, tl))?,
            vec![log_probs.shape()[1]],
        ),
        Red::Burn(k) => reduced(guard(ErrorKind::Value, || {
            module.forward_with_reduction(x, y, il, tl, k.burn())
        })?),
    }
}
