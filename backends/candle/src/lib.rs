//! lossconf backend for the losses in `candle_nn::loss` (candle-nn 0.11, CPU).
//!
//! Each candle function is mapped to the PyTorch API it claims to match:
//!
//! | candle-nn 0.11                           | PyTorch                                               |
//! |------------------------------------------|-------------------------------------------------------|
//! | `loss::nll(inp, target)`                 | `torch.nn.functional.nll_loss`                        |
//! | `loss::cross_entropy(inp, target)`       | `torch.nn.functional.cross_entropy`                   |
//! | `loss::mse(inp, target)`                 | `torch.nn.functional.mse_loss`                        |
//! | `loss::huber(inp, target, delta)`        | `torch.nn.functional.huber_loss`                      |
//! | `loss::binary_cross_entropy_with_logit`  | `torch.nn.functional.binary_cross_entropy_with_logits`|
//!
//! candle implements a subset of each PyTorch signature: mean reduction only, no class or
//! element weights, no label smoothing, and (for `nll`/`cross_entropy`) a 2-D input with class
//! indices. A call outside that subset answers `Outcome::Unsupported("candle-nn 0.11: …")`, a
//! visible skip: the adapter never computes anything candle does not. The one extension:
//! `reduction='none'` is answered by calling candle once per element (per sample for
//! `nll`/`cross_entropy`), since the mean of one value is that value exactly; `'sum'` is
//! unsupported.

use candle_core::{DType as CDType, Device, Error as CError, Tensor as CTensor};
use lossconf::{Backend, Call, CallError, DType, ErrorKind, Outcome, Tensor, Value};

/// The candle-nn 0.11 loss functions on the CPU device.
pub struct Candle;

const NLL: &str = "torch.nn.functional.nll_loss";
const CROSS_ENTROPY: &str = "torch.nn.functional.cross_entropy";
const MSE: &str = "torch.nn.functional.mse_loss";
const HUBER: &str = "torch.nn.functional.huber_loss";
const BCE_LOGITS: &str = "torch.nn.functional.binary_cross_entropy_with_logits";

/// Why a call cannot be answered: outside candle's subset, or rejected by candle.
enum Stop {
    Unsupported(String),
    Error(CallError),
}

type R<T> = Result<T, Stop>;

/// The reductions the adapter can answer with candle alone.
#[derive(Clone, Copy, PartialEq)]
enum Red {
    Mean,
    /// One candle call per element (or per sample).
    None,
}

fn unsupported<T>(what: impl std::fmt::Display) -> R<T> {
    Err(Stop::Unsupported(format!("candle-nn 0.11: {what}")))
}

impl Backend for Candle {
    fn name(&self) -> &str {
        "candle-nn 0.11 (cpu)"
    }

    fn apis(&self) -> Option<Vec<String>> {
        Some(
            [NLL, CROSS_ENTROPY, MSE, HUBER, BCE_LOGITS]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        )
    }

    fn forward(&self, call: &Call) -> Outcome {
        let result = match call.api.as_str() {
            NLL => nll(call, false),
            CROSS_ENTROPY => nll(call, true),
            MSE => mse(call),
            HUBER => huber(call),
            BCE_LOGITS => bce_with_logits(call),
            other => unsupported(format!("no loss matching {other}")),
        };
        match result {
            Ok(t) => Outcome::Value(t),
            Err(Stop::Unsupported(why)) => Outcome::Unsupported(why),
            Err(Stop::Error(e)) => Outcome::Error(e),
        }
    }
}

/// The arguments of one call, checked against the names the PyTorch API accepts.
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

    /// Options candle has no parameter for: only their "absent" values can be honoured.
    fn absent(&self, name: &str, what: &str) -> R<()> {
        match self.get(name) {
            None => Ok(()),
            Some(v) => unsupported(format!("{what} ({name}={})", v.describe())),
        }
    }

    /// The effective PyTorch reduction (legacy `size_average`/`reduce` resolved the way
    /// `torch.nn._reduction` does). candle always takes the mean; `'none'` is answered with one
    /// candle call per element (per sample for `nll`/`cross_entropy`): the mean of one value is
    /// that value, exactly. `'sum'` would need arithmetic candle does not do: unsupported.
    fn reduction(&self) -> R<Red> {
        let legacy = |name: &str| match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => unsupported(format!("{name}={}", v.describe())),
        };
        let (size_average, reduce) = (legacy("size_average")?, legacy("reduce")?);
        let reduction = if size_average.is_some() || reduce.is_some() {
            match (size_average.unwrap_or(true), reduce.unwrap_or(true)) {
                (_, false) => "none".to_string(),
                (true, true) => "mean".to_string(),
                (false, true) => "sum".to_string(),
            }
        } else {
            match self.get("reduction") {
                None => "mean".to_string(),
                Some(Value::Str(s)) => s.clone(),
                Some(v) => v.describe(),
            }
        };
        match reduction.as_str() {
            "mean" => Ok(Red::Mean),
            "none" => Ok(Red::None),
            _ => unsupported(format!(
                "reduction '{reduction}' (candle always takes the mean)"
            )),
        }
    }
}

fn candle_dtype(d: DType) -> R<CDType> {
    Ok(match d {
        DType::Float16 => CDType::F16,
        DType::Bfloat16 => CDType::BF16,
        DType::Float32 => CDType::F32,
        DType::Float64 => CDType::F64,
        DType::Int32 => CDType::I32,
        DType::Int64 => CDType::I64,
        DType::Uint8 => CDType::U8,
        DType::Bool => return unsupported("bool tensors"),
    })
}

fn lossconf_dtype(d: CDType) -> R<DType> {
    Ok(match d {
        CDType::F16 => DType::Float16,
        CDType::BF16 => DType::Bfloat16,
        CDType::F32 => DType::Float32,
        CDType::F64 => DType::Float64,
        CDType::I32 => DType::Int32,
        CDType::I64 => DType::Int64,
        CDType::U8 => DType::Uint8,
        other => return unsupported(format!("result dtype {other:?}")),
    })
}

/// Builds a candle tensor of the same dtype, shape and values.
fn to_candle(t: &Tensor) -> R<CTensor> {
    let dtype = candle_dtype(t.dtype())?;
    let shape = t.shape().to_vec();
    let built = if t.dtype().is_float() {
        // Every value is exactly representable in its dtype, so the f64 -> dtype cast is exact.
        CTensor::from_vec(t.to_f64_vec(), shape, &Device::Cpu).and_then(|x| x.to_dtype(dtype))
    } else {
        let ints = t.as_i64().map(|v| v.to_vec()).unwrap_or_default();
        CTensor::from_vec(ints, shape, &Device::Cpu).and_then(|x| x.to_dtype(dtype))
    };
    built.map_err(|e| Stop::Error(CallError::new(ErrorKind::Backend, e.to_string())))
}

fn from_candle(t: &CTensor) -> R<Tensor> {
    let dtype = lossconf_dtype(t.dtype())?;
    let backend = |e: CError| Stop::Error(CallError::new(ErrorKind::Backend, e.to_string()));
    let data = t
        .to_dtype(CDType::F64)
        .and_then(|x| x.flatten_all())
        .and_then(|x| x.to_vec1::<f64>())
        .map_err(backend)?;
    Tensor::from_f64(dtype, t.dims().to_vec(), data)
        .map_err(|e| Stop::Error(CallError::new(ErrorKind::Backend, e.0)))
}

/// A candle error's message without the backtrace candle attaches.
fn message(e: &CError) -> String {
    match e {
        CError::WithBacktrace { inner, .. } => message(inner),
        other => other.to_string(),
    }
}

/// Sorts a candle error into the kinds PyTorch's errors are sorted into.
fn kind_of(e: &CError) -> ErrorKind {
    match e {
        CError::WithBacktrace { inner, .. } | CError::Context { inner, .. } => kind_of(inner),
        CError::UnexpectedDType { .. }
        | CError::DTypeMismatchBinaryOp { .. }
        | CError::UnsupportedDTypeForOp(..) => ErrorKind::Dtype,
        CError::InvalidIndex { .. } => ErrorKind::Value,
        // `bail!` in candle_nn::loss is only used for rank and batch-size checks.
        _ => ErrorKind::Shape,
    }
}

/// Runs a candle computation; its errors are the framework's answer to an invalid call.
fn run(f: impl FnOnce() -> candle_core::Result<CTensor>) -> R<Tensor> {
    match f() {
        Ok(t) => from_candle(&t),
        Err(e) => Err(Stop::Error(CallError::new(kind_of(&e), message(&e)))),
    }
}

/// `reduction='none'`: calls `f` on each element (same-shape input and target) or, with
/// `rows`, on each `[1, C]` row and its `[1]` target, and stacks candle's answers.
fn per_item(
    input: &Tensor,
    target: &Tensor,
    rows: bool,
    f: impl Fn(&CTensor, &CTensor) -> candle_core::Result<CTensor>,
) -> R<Tensor> {
    let (x, y) = (to_candle(input)?, to_candle(target)?);
    if !rows && input.shape() != target.shape() {
        // Let candle judge the shapes on the whole tensors (it does not broadcast).
        return match run(|| f(&x, &y)) {
            Err(e) => Err(e),
            Ok(_) => unsupported("reduction 'none' with input and target of different shapes"),
        };
    }
    if rows && input.shape().first().copied().unwrap_or(0) > 0 {
        // candle judges shapes and class indices on the whole batch first.
        run(|| f(&x, &y))?;
    }
    let (x, y) = if rows {
        (x, y)
    } else {
        let n = input.numel();
        let reshape = |t: CTensor| {
            t.reshape(n)
                .map_err(|e| Stop::Error(CallError::new(ErrorKind::Backend, message(&e))))
        };
        (reshape(x)?, reshape(y)?)
    };
    let n = if rows {
        input.shape()[0]
    } else {
        input.numel()
    };
    let mut values = Vec::with_capacity(n);
    let mut dtype = input.dtype();
    for i in 0..n {
        let xi = x.narrow(0, i, 1);
        let yi = y.narrow(0, i, 1);
        let v = run(|| f(&xi?, &yi?))?;
        dtype = v.dtype();
        values.extend(v.to_f64_vec());
    }
    let shape = if rows {
        vec![n]
    } else {
        input.shape().to_vec()
    };
    Tensor::from_f64(dtype, shape, values)
        .map_err(|e| Stop::Error(CallError::new(ErrorKind::Backend, e.0)))
}

/// Evaluates a loss under the reduction: one candle call, or one per item for `'none'`.
fn reduce(
    red: Red,
    input: &Tensor,
    target: &Tensor,
    rows: bool,
    f: impl Fn(&CTensor, &CTensor) -> candle_core::Result<CTensor>,
) -> R<Tensor> {
    match red {
        Red::Mean => {
            let (x, y) = (to_candle(input)?, to_candle(target)?);
            run(|| f(&x, &y))
        }
        Red::None => per_item(input, target, rows, f),
    }
}

fn float_inputs(ts: &[&Tensor]) -> R<()> {
    for t in ts {
        if !t.dtype().is_float() {
            return unsupported(format!("{} input (float inputs only)", t.dtype()));
        }
    }
    Ok(())
}

/// `nll_loss` / `cross_entropy`: `(N, C)` input, `(N,)` class indices, mean reduction.
fn nll(call: &Call, logits: bool) -> R<Tensor> {
    let mut known = vec![
        "input",
        "target",
        "weight",
        "size_average",
        "ignore_index",
        "reduce",
        "reduction",
    ];
    if logits {
        known.push("label_smoothing");
    }
    let a = Args::new(call, &known)?;
    let input = a.tensor("input")?;
    let target = a.tensor("target")?;
    a.absent("weight", "no class weights")?;
    let red = a.reduction()?;
    if logits {
        match a.get("label_smoothing").and_then(Value::as_f64) {
            None => {}
            Some(x) if x == 0.0 => {}
            Some(x) => return unsupported(format!("no label smoothing (label_smoothing={x})")),
        }
    }
    if input.shape().len() != 2 {
        return unsupported(format!(
            "{}-D input (only (N, C) with class indices)",
            input.shape().len()
        ));
    }
    float_inputs(&[input])?;
    if target.dtype().is_float() {
        return unsupported("class probabilities as target (only class indices)");
    }
    let ignore_index = match a.get("ignore_index") {
        None => -100,
        Some(Value::Int(i)) => *i,
        Some(v) => return unsupported(format!("ignore_index={}", v.describe())),
    };
    if target.as_i64().is_some_and(|t| t.contains(&ignore_index)) {
        return unsupported(format!("no ignore_index (a target equals {ignore_index})"));
    }
    reduce(red, input, target, true, |x, y| {
        if logits {
            candle_nn::loss::cross_entropy(x, y)
        } else {
            candle_nn::loss::nll(x, y)
        }
    })
}

/// `mse_loss`: any shape, mean reduction, no weight.
fn mse(call: &Call) -> R<Tensor> {
    let a = Args::new(
        call,
        &[
            "input",
            "target",
            "size_average",
            "reduce",
            "reduction",
            "weight",
        ],
    )?;
    let (input, target) = (a.tensor("input")?, a.tensor("target")?);
    a.absent("weight", "no element weights")?;
    let red = a.reduction()?;
    float_inputs(&[input, target])?;
    reduce(red, input, target, false, candle_nn::loss::mse)
}

/// `huber_loss`: any shape, `delta`, mean reduction, no weight.
fn huber(call: &Call) -> R<Tensor> {
    let a = Args::new(call, &["input", "target", "reduction", "delta", "weight"])?;
    let (input, target) = (a.tensor("input")?, a.tensor("target")?);
    a.absent("weight", "no element weights")?;
    let red = a.reduction()?;
    let delta = match a.get("delta") {
        None => 1.0,
        Some(v) => match v.as_f64() {
            Some(d) => d,
            None => return unsupported(format!("delta={}", v.describe())),
        },
    };
    float_inputs(&[input, target])?;
    reduce(red, input, target, false, |x, y| {
        candle_nn::loss::huber(x, y, delta)
    })
}

/// `binary_cross_entropy_with_logits`: any shape, mean reduction, no weight or pos_weight.
fn bce_with_logits(call: &Call) -> R<Tensor> {
    let a = Args::new(
        call,
        &[
            "input",
            "target",
            "weight",
            "size_average",
            "reduce",
            "reduction",
            "pos_weight",
        ],
    )?;
    let (input, target) = (a.tensor("input")?, a.tensor("target")?);
    a.absent("weight", "no element weights")?;
    a.absent("pos_weight", "no pos_weight")?;
    let red = a.reduction()?;
    float_inputs(&[input, target])?;
    reduce(
        red,
        input,
        target,
        false,
        candle_nn::loss::binary_cross_entropy_with_logit,
    )
}
