"""Evaluate one `lossconf/1` call on the real frameworks (PyTorch, TensorFlow, Keras 3).

This is the only place where expected values are born, so it stays literal: tensors are built
exactly from their float64 elements, the API is called the way a user calls it (keyword
arguments, the API's own names), and the result is read back exactly. Errors are sorted into the
four kinds of the protocol by an ordered rule table (`RULES`); an error no rule knows stops the
run with `UnclassifiedError`, so a person decides its kind once and adds a rule.

Frameworks are imported lazily, so a torch-only run never pays for TensorFlow.
"""

import importlib
import math
import os
import re
import time
import warnings
from dataclasses import dataclass

# Expected values must not depend on the machine: oneDNN rewrites change float results and
# thread counts change reduction order. These must be set before TensorFlow is imported.
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
os.environ["KERAS_BACKEND"] = "tensorflow"
warnings.simplefilter("ignore")  # warnings (deprecations, broadcasting) are not outcomes

import numpy as np  # noqa: E402

TORCH_THREADS = 1
SETTINGS = {"TF_ENABLE_ONEDNN_OPTS": "0", "torch_threads": TORCH_THREADS, "device": "cpu"}

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
INT_DTYPES = ("int32", "int64", "uint8", "bool")
NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

# PyYAML reads YAML 1.1, where `1e-05` and `1.5e20` (as Rust's serde_yaml writes them) are
# strings, not floats; a string argument of this form is a float that lost its type.
EXPONENT_FLOAT = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+")


class UnclassifiedError(Exception):
    """A framework raised an error that no rule in `RULES` classifies: add a rule."""


class UnknownApi(Exception):
    """The case names an API this tool cannot reach: a spec bug, never an expected error."""


# ---------------------------------------------------------------------------------------------
# Lazy framework imports


_torch = None
_tf = None
import_seconds = 0.0  # time spent importing frameworks, so callers can report it apart


def _timed_import(load):
    global import_seconds
    start = time.perf_counter()
    module = load()
    import_seconds += time.perf_counter() - start
    return module


def torch():
    """The torch module, imported once, single-threaded."""
    global _torch
    if _torch is None:
        t = _timed_import(lambda: importlib.import_module("torch"))
        t.set_num_threads(TORCH_THREADS)
        t.set_num_interop_threads(TORCH_THREADS)
        _torch = t
    return _torch


def tf():
    """The tensorflow module, imported once, single-threaded, with Keras at its defaults."""
    global _tf
    if _tf is None:
        t = _timed_import(lambda: importlib.import_module("tensorflow"))
        _timed_import(lambda: t.keras.losses)  # Keras 3 loads lazily on first touch
        t.get_logger().setLevel("ERROR")
        t.config.threading.set_intra_op_parallelism_threads(1)
        t.config.threading.set_inter_op_parallelism_threads(1)
        # A user's ~/.keras/keras.json could change these; expected values use the defaults.
        t.keras.config.set_floatx("float32")
        t.keras.config.set_epsilon(1e-7)
        _tf = t
    return _tf


# ---------------------------------------------------------------------------------------------
# Tensors in and out


def is_tensor(value):
    """A `lossconf/1` tensor is a mapping with exactly dtype, shape and data."""
    return isinstance(value, dict) and set(value) == {"dtype", "shape", "data"}


def parse_float(x):
    """One float element or scalar from a file: a number, or nan/inf/-inf (or a YAML 1.1 miss)."""
    if isinstance(x, str):
        if x in NONFINITE:
            return NONFINITE[x]
        return float(x)  # raises on anything else: a malformed case is not a framework error
    return float(x)


def to_numpy(t):
    """The tensor as a numpy array of its dtype (bfloat16 stays float64: numpy has none)."""
    dtype, shape, data = t["dtype"], t["shape"], t["data"]
    if dtype in FLOAT_DTYPES:
        arr = np.array([parse_float(x) for x in data], dtype=np.float64)
        if dtype != "bfloat16":
            arr = arr.astype(dtype)  # exact: every element is representable in its dtype
    elif dtype in INT_DTYPES:
        arr = np.array([int(x) for x in data], dtype=np.int64).astype(dtype)
    else:
        raise ValueError(f"unknown dtype {dtype!r}")
    return arr.reshape(shape)


def to_torch(t):
    arr = to_numpy(t)
    out = torch().from_numpy(arr)
    return out.to(torch().bfloat16) if t["dtype"] == "bfloat16" else out


def to_tf(t):
    arr = to_numpy(t)
    out = tf().constant(arr)
    return tf().cast(out, tf().bfloat16) if t["dtype"] == "bfloat16" else out


def element(x, is_float):
    """One result element: exact float64 (shortest repr) or nan/inf/-inf strings; ints as int."""
    if not is_float:
        return int(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def from_result(dtype, arr):
    """A `lossconf/1` tensor from a framework result's dtype name and a numpy array."""
    if dtype not in FLOAT_DTYPES + INT_DTYPES:
        raise TypeError(f"result dtype {dtype} is not a lossconf/1 dtype")
    is_float = dtype in FLOAT_DTYPES
    flat = arr.astype(np.float64 if is_float else np.int64).reshape(-1).tolist()
    return {"dtype": dtype, "shape": list(arr.shape), "data": [element(x, is_float) for x in flat]}


def from_torch(result):
    t = torch()
    if not isinstance(result, t.Tensor):
        raise TypeError(f"expected a tensor result, got {type(result).__name__}")
    dtype = str(result.dtype).removeprefix("torch.")
    result = result.detach()
    if result.dtype == t.bfloat16:
        result = result.to(t.float32)  # exact widening; numpy has no bfloat16
    return from_result(dtype, result.numpy())


def from_tf(result):
    if not hasattr(result, "numpy") or not hasattr(result, "dtype"):
        raise TypeError(f"expected a tensor result, got {type(result).__name__}")
    return from_result(result.dtype.name, np.asarray(result.numpy()))


# ---------------------------------------------------------------------------------------------
# Calling the APIs


def convert_arg(value, tensor_fn):
    """An argument value as the framework takes it: tensors built, float strings parsed."""
    if is_tensor(value):
        return tensor_fn(value)
    if isinstance(value, str) and (value in NONFINITE or EXPONENT_FLOAT.fullmatch(value)):
        return parse_float(value)
    if isinstance(value, list):
        return list(value)
    return value


@dataclass(frozen=True)
class Api:
    """How to reach and call one family of public APIs."""

    prefix: str  # e.g. "torch.nn.functional."
    framework: str  # torch | tensorflow: which versions the expected value depends on
    module: str  # module path under the framework root, e.g. "nn.functional"


APIS = (
    Api("torch.nn.functional.", "torch", "nn.functional"),
    Api("tf.nn.", "tensorflow", "nn"),
    Api("tf.keras.losses.", "tensorflow", "keras.losses"),
)


def resolve(api):
    """The `Api` family of a fully qualified name and the name inside it."""
    for family in APIS:
        if api.startswith(family.prefix) and "." not in api[len(family.prefix):]:
            return family, api[len(family.prefix):]
    raise UnknownApi(f"unsupported api {api!r}: expected torch.nn.functional.*, tf.nn.* or tf.keras.losses.*")


def framework_of(api):
    """`torch` or `tensorflow`: the framework whose version an expected value records."""
    return resolve(api)[0].framework


def lookup(family, name):
    root = torch() if family.framework == "torch" else tf()
    obj = root
    for part in family.module.split("."):
        obj = getattr(obj, part)
    fn = getattr(obj, name, None)
    if fn is None:
        raise UnknownApi(f"{family.prefix}{name} does not exist in this framework version")
    return fn


KERAS_CALL_ARGS = ("y_true", "y_pred", "sample_weight")


def prepare(api, args):
    """The framework call as a thunk, with every tensor already built.

    Building inputs and reading results is our code: its failures must raise, never be mistaken
    for the framework rejecting the call. Only running the thunk is the framework's business.
    """
    return thunk(*build(api, args))


def build(api, args):
    """`(family, fn, kwargs)`: the API reached and every argument converted for its framework."""
    family, name = resolve(api)
    fn = lookup(family, name)
    tensor_fn = to_torch if family.framework == "torch" else to_tf
    return family, fn, {k: convert_arg(v, tensor_fn) for k, v in args.items()}


def thunk(family, fn, kwargs):
    """`(run, read)`: the call as a user writes it (a Keras class is constructed, then called)."""
    if family.framework == "torch":
        return lambda: fn(**kwargs), from_torch
    if family.prefix == "tf.keras.losses.":
        ctor = {k: v for k, v in kwargs.items() if k not in KERAS_CALL_ARGS}
        call_kwargs = {k: kwargs[k] for k in ("sample_weight",) if k in kwargs}
        return lambda: fn(**ctor)(kwargs.get("y_true"), kwargs.get("y_pred"), **call_kwargs), from_tf
    return lambda: fn(**kwargs), from_tf


def call(api, args):
    """Runs the call; framework exceptions propagate. Returns the result as a lossconf tensor."""
    run, read = prepare(api, args)
    return read(run())


def evaluate(api, args):
    """`("value", tensor)` or `("error", {kind, type, message})` for one call on the real framework.

    Only exceptions raised by the framework call become errors; an unknown API raises
    `UnknownApi`, an error no rule classifies raises `UnclassifiedError`, and a malformed tensor
    raises whatever its conversion raised.
    """
    run, read = prepare(api, args)
    try:
        result = run()
    except Exception as exc:  # noqa: BLE001 - every framework error is classified below
        return framework_error(api, args, exc)
    return "value", read(result)


def framework_error(api, args, exc, what=""):
    """`("error", {kind, type, message})` for an exception the framework raised, or
    `UnclassifiedError` naming the call when no rule in `RULES` knows it."""
    message = clean_message(str(exc))
    kind = classify(exc)
    if kind is None:
        raise UnclassifiedError(
            f"{what}{describe_call(api, args)} raised {type(exc).__name__}: {message}\n"
            f"add a rule to RULES in tools/frameworks.py"
        ) from exc
    return "error", {"kind": kind, "type": type(exc).__name__, "message": message}


# ---------------------------------------------------------------------------------------------
# Gradients

# The default grad_output of recorded gradients: element i (row-major) is PATTERN[i % 7]. Every
# value is exact in float16, bfloat16, float32 and float64, the signs differ and no two
# neighbours are equal, so a backend that ignores grad_output, or reads it transposed or
# reversed, fails; a 0-d loss gets 0.5.
PATTERN = (0.5, -1.0, 2.0, -0.25, 1.5, 0.75, -2.0)


class InvalidRequest(Exception):
    """A backward request that does not fit its call (wrt or grad_output): never an outcome."""


class GradientMismatch(Exception):
    """A framework gradient without its argument's dtype and shape: a tool bug, fail loudly."""


def pattern_tensor(dtype, shape):
    """The recorded grad_output for an output of this dtype and shape."""
    return {"dtype": dtype, "shape": list(shape), "data": [PATTERN[i % 7] for i in range(math.prod(shape))]}


def ones_tensor(dtype, shape):
    """The protocol's default grad_output: all ones."""
    return {"dtype": dtype, "shape": list(shape), "data": [1.0] * math.prod(shape)}


def check_wrt(args, wrt):
    """`wrt` as a list, checked: distinct names of floating-point tensor arguments of the call."""
    if isinstance(wrt, str) or not isinstance(wrt, (list, tuple)) or not all(isinstance(n, str) for n in wrt):
        raise InvalidRequest(f"wrt must be a list of argument names, got {wrt!r}")
    if len(set(wrt)) != len(wrt):
        raise InvalidRequest(f"wrt names an argument twice: {wrt}")
    for name in wrt:
        value = args.get(name)
        if not is_tensor(value) or value["dtype"] not in FLOAT_DTYPES:
            raise InvalidRequest(f"wrt names {name!r}, which is not a floating-point tensor argument of the call")
    return list(wrt)


def backward(api, args, wrt, grad_output=None):
    """Gradients of `sum(grad_output * loss)` with respect to the arguments named in `wrt`.

    `("value", {name: tensor})`, each gradient with its argument's dtype and shape, or
    `("error", {kind, type, message})` when the framework raises in the forward call or while
    differentiating (same classification as `evaluate`). `grad_output` (a tensor of the loss's
    dtype and shape) defaults to ones. PyTorch: leaf tensors with requires_grad and
    `torch.autograd.grad`; TensorFlow and Keras: watched tensors and `tf.GradientTape`. A loss
    that does not depend on an argument has zero gradient with respect to it.
    Raises `InvalidRequest` when wrt or grad_output do not fit the call, `GradientMismatch` when a
    framework gradient lacks its argument's dtype or shape, and what `evaluate` raises.
    """
    wrt = check_wrt(args, wrt)
    family, fn, kwargs = build(api, args)
    what = f"backward (wrt {wrt}) of "
    is_torch = family.framework == "torch"
    if is_torch:
        t = torch()
        for name in wrt:
            kwargs[name] = kwargs[name].detach().requires_grad_(True)
    else:
        t = tf()
    leaves = [kwargs[name] for name in wrt]
    run, read = thunk(family, fn, kwargs)
    try:
        if is_torch:
            with t.enable_grad():
                out = run()
        else:
            with t.GradientTape() as tape:
                for leaf in leaves:
                    tape.watch(leaf)
                out = run()
    except Exception as exc:  # noqa: BLE001 - the forward call failed: classified like evaluate
        return framework_error(api, args, exc, what)
    result = read(out)
    go = ones_tensor(result["dtype"], result["shape"]) if grad_output is None else grad_output
    if not is_tensor(go) or (go["dtype"], list(go["shape"])) != (result["dtype"], result["shape"]):
        got = f"{go['dtype']}{go['shape']}" if is_tensor(go) else repr(go)
        raise InvalidRequest(f"grad_output must be a {result['dtype']}{result['shape']} tensor like the loss, got {got}")
    try:
        if is_torch:
            go_t = to_torch(go)
            if out.requires_grad:
                grads = t.autograd.grad(out, leaves, grad_outputs=go_t, allow_unused=True, materialize_grads=True)
            else:  # nothing in the loss depends on the leaves (or autograd was bypassed)
                grads = [t.zeros_like(leaf) for leaf in leaves]
        else:
            grads = tape.gradient(out, leaves, output_gradients=to_tf(go),
                                  unconnected_gradients=t.UnconnectedGradients.ZERO)
            grads = [t.convert_to_tensor(g) if isinstance(g, t.IndexedSlices) else g for g in grads]
    except Exception as exc:  # noqa: BLE001 - the framework failed to differentiate
        return framework_error(api, args, exc, what)
    out_grads = {}
    for name, g in zip(wrt, grads):
        g = (from_torch if is_torch else from_tf)(g)
        want = (args[name]["dtype"], list(args[name]["shape"]))
        if (g["dtype"], g["shape"]) != want:
            raise GradientMismatch(f"{what}{describe_call(api, args)}: gradient for {name!r} is "
                                   f"{g['dtype']}{g['shape']}, the argument is {want[0]}{want[1]}")
        out_grads[name] = g
    return "value", out_grads


def describe_call(api, args):
    """`api(input=float32[2, 3], reduction='mean')`, as the Rust side writes calls."""

    def short(v):
        if is_tensor(v):
            return f"{v['dtype']}{v['shape']}"
        return repr(v)

    return f"{api}({', '.join(f'{k}={short(v)}' for k, v in args.items())})"


# ---------------------------------------------------------------------------------------------
# Error classification


@dataclass(frozen=True)
class Rule:
    """Errors of these exception types whose message matches `pattern` are of `kind`.

    `types` are class names checked along the exception's MRO (empty: any type). Each rule has
    an id; tools/test_tools.py provokes every rule with a real call, so a framework upgrade
    that changes a message shows up as a failing test instead of a silently wrong kind.
    """

    id: str
    kind: str
    pattern: str
    types: tuple = ()

    def matches(self, exc, message):
        names = {c.__name__ for c in type(exc).__mro__}
        return (not self.types or names & set(self.types)) and re.search(self.pattern, message)


# Order matters: the first matching rule wins, so specific rules come before broad ones.
# Principle: `value` is for tensor elements outside their domain (probabilities, class indices,
# variances); `argument` is for an option the API rejects (reduction, unknown keyword, a delta,
# beta, label_smoothing or axis out of range); `dtype` and `shape` are about the tensors' types
# (an axis that no axis value could make valid, such as any axis of a 0-d tensor, is `shape`).
RULES = (
    # argument: options the API rejects
    Rule("torch_reduction", "argument", r"is not a valid value for reduction"),
    Rule("torch_reduction_mode", "argument", r"Invalid reduction mode: "),
    Rule("torch_reduction_not_valid", "argument", r" is not valid$", ("ValueError",)),
    Rule("keras_reduction", "argument", r"Invalid value for argument `reduction`"),
    Rule("unexpected_keyword", "argument", r"unexpected keyword argument", ("TypeError",)),
    Rule("torch_label_smoothing", "argument", r"label_smoothing must be between"),
    Rule("torch_nonpositive_option", "argument", r"does not support (non-positive|negative) values for"),
    Rule("tf_reduce_scalar", "shape", r"Invalid reduction dimension \(-?\d+ for input with 0 dimension"),
    Rule("keras_axis_range", "argument", r"Invalid reduction dimension"),
    Rule("tf_axis_range", "argument", r"Requires start <= limit when delta > 0.*\[Op:Range\]"),
    Rule("torch_arg_type", "argument", r"argument '\w+' \(position \d+\) must be", ("TypeError",)),
    Rule("not_a_tensor", "argument", r"object has no attribute", ("AttributeError",)),
    Rule("torch_overload_types", "argument", r"received an invalid combination of arguments", ("TypeError",)),
    Rule("tf_convert_none", "argument", r"Attempt to convert a value \(None\) with an unsupported type", ("ValueError",)),
    Rule("torch_p_supported", "argument", r"only p == 1 and p == 2 supported"),
    Rule("torch_margin_positive", "argument", r"margin must be greater than 0"),
    Rule("torch_ctc_blank", "argument", r"blank must be in label range"),
    Rule("torch_ignore_index_probs", "argument", r"ignore_index cannot be specified when target contains probabilities"),
    # backward: a gradient asked for an argument the framework cannot differentiate (raised by
    # the forward call once that tensor requires grad); the request, not the tensors, is at fault
    Rule("torch_not_differentiable", "argument", r"is not differentiable with respect to argument '\w+'"),
    # value: tensor elements outside their domain
    Rule("torch_target_index", "value", r"Target -?\d+ is out of bounds", ("IndexError",)),
    Rule("tf_label_value", "value", r"Received a label value of"),
    Rule("torch_bce_range", "value", r"all elements of (input|target) should be between 0 and 1"),
    Rule("torch_negative_var", "value", r"has negative entry"),
    Rule("torch_target_arg_range", "value", r"argument #\d+ 'target' is out of range"),
    Rule("torch_target_range", "value", r"^target out of range$"),
    Rule("torch_ctc_length_value", "value", r"Expected (input|target)_lengths to have value at (most|least) -?\d+"),
    # dtype
    Rule("torch_scalar_type", "dtype", r"expected scalar type \w+ but found"),
    Rule("torch_not_implemented", "dtype", r"not implemented for '\w+'"),
    Rule("torch_target_dtype", "dtype", r"expected target dtype to be"),
    Rule("torch_found_dtype", "dtype", r"Found dtype \w+ but expected"),
    Rule("torch_result_cast", "dtype", r"result type \w+ can't be cast to the desired output type"),
    Rule("torch_infer_dtype", "dtype", r"could not infer output dtype"),
    Rule("torch_bool_sub", "dtype", r"with two bool tensors is not supported"),
    Rule("torch_probs_float", "dtype", r"Expected floating point type for target with class probabilities"),
    Rule("tf_attr_dtype", "dtype", r"Value for attr '\w+' of \w+ is not in the list of allowed values"),
    Rule("tf_input_dtype", "dtype", r"was expected to be a \w+ tensor but is a \w+ tensor"),
    Rule("torch_kl_div_integral", "dtype", r"kl_div: Integral inputs not supported"),
    Rule("torch_lengths_integral", "dtype", r"(input|target)_lengths must be integral"),
    Rule("torch_matmul_dtype", "dtype", r"expected m1 and m2 to have the same dtype"),
    Rule("torch_mat_dtype", "dtype", r"mat1 and mat2 must have the same dtype"),
    # shape
    Rule("torch_broadcast", "shape", r"The size of tensor a \(\d+\) must match the size of tensor b"),
    Rule("torch_broadcast_weight", "shape", r"Attempting to broadcast a dimension of length"),
    Rule("torch_output_broadcast", "shape", r"output with shape \[[\d, ]*\] doesn't match the broadcast shape"),
    Rule("torch_batch_size", "shape", r"Expected input batch_size \(\d+\) to match target batch_size"),
    Rule("torch_target_size", "shape", r"[Tt]arget size \(torch\.Size.*(must be the same as|different to the) input size"),
    Rule("torch_multi_target", "shape", r"multi-target not supported"),
    Rule("torch_target_size_nd", "shape", r"Expected target size \[[\d, ]*\], got \[[\d, ]*\]"),
    Rule("torch_spatial_target", "shape", r"only batches of spatial targets supported"),
    Rule("torch_min_dims", "shape", r"Expected \d+ or more dimensions \(got \d+\)"),
    Rule("torch_weight_size", "shape", r"Weights and input must have the same size"),
    Rule("torch_class_weight", "shape", r"weight tensor should be defined either for all \d+ classes"),
    Rule("tf_incompatible", "shape", r"Incompatible shapes"),
    Rule("same_shape", "shape", r"must have the same shape"),
    Rule("tf_broadcastable", "shape", r"must be broadcastable"),
    Rule("tf_sparse_labels_shape", "shape", r"`labels\.shape(\.rank)?` must equal `logits\.shape"),
    Rule("tf_scalar_logits", "shape", r"`logits` cannot be a scalar"),
    Rule("tf_reshape_size", "shape", r"Input to reshape is a tensor with \d+ values, but the requested shape has"),
    Rule("keras_rank", "shape", r"must have rank \(ndim\)"),
    Rule("keras_same_rank", "shape", r"must have the same rank \(ndim\)"),
    Rule("tf_at_least_one_class", "shape", r"Must have at least one class"),
    Rule("keras_axis_type", "argument", r"`axis` must be of type `int`"),
    Rule("keras_dtype_policy", "argument", r"Cannot convert .* to a mixed precision DTypePolicy"),
    Rule("torch_ignore_index_prob", "argument", r"ignore_index is not supported for floating point target"),
    Rule("keras_axis_unsupported", "argument", r"Only axis=-1 is currently supported"),
    Rule("tf_slice_scalar", "shape", r"Expected begin\[0\] == 0 .*\[Op:Slice\]"),
    Rule("torch_nonempty_matrix", "shape", r"Expected non-empty vector or matrix"),
    Rule("torch_1d_target_size", "shape", r"For 1D input, 1D target must have size 1"),
    Rule("torch_inconsistent_target_size", "shape", r"inconsistent target size"),
    Rule("torch_inconsistent_weight_size", "shape", r"inconsistent weight size"),
    Rule("torch_weight_1d", "shape", r"weight must be one-dimensional"),
    Rule("torch_multi_margin_target", "shape", r"target tensor should be 1-D with size equal to the number of input samples"),
    Rule("torch_var_size", "shape", r"var is of incorrect size"),
    Rule("torch_same_dimension", "shape", r"All input tensors should have same dimension"),
    Rule("torch_triplet_dims", "shape", r"anchor, positive, and negative tensors are expected to have the same number of dimensions"),
    Rule("torch_cosine_dims", "shape", r"\d+D target tensor expects \d+D input tensors"),
    Rule("torch_ctc_lengths_size", "shape", r"(input|target)_lengths must be of size batch_size"),
    Rule("torch_ctc_empty", "shape", r"log_probs tensor must not be empty"),
    Rule("torch_checked_size", "shape", r"Expected tensor to have size (at least )?\d+ at dimension \d+, but got size \d+"),
    Rule("torch_checked_dim", "shape", r"Expected \d+-dimensional tensor, but got \d+-dimensional tensor"),
    Rule("torch_lce_input_dim", "shape", r"expected input with dimensionality 1 or 2"),
    Rule("torch_lce_weight_dim", "shape", r"expected linear_weight with dimensionality at least 2"),
    Rule("torch_lce_in_features", "shape", r"expected equal input and linear_weight last dimensions"),
    Rule("torch_lce_bias_shape", "shape", r"expected linear_bias shape"),
    Rule("torch_lce_kdim_batched", "shape", r"K-dimensional loss defined by linear_weight shape .* requires batched input"),
    Rule("tf_empty_max", "shape", r"Cannot compute the max of an empty tensor"),
    Rule("tf_empty_scatter", "shape", r"Indices and updates specified for empty output shape"),
    Rule("keras_ctc_rank", "shape", r"(Targets `y_true`|Logits `y_pred`) are expected to be a tensor of shape"),
    # TF's Python reads `shape[1]` of a tensor of too low a rank (tf.nn.ctc_loss with 1-D labels
    # or 2-D logits); a bare IndexError with exactly this text means a rank that does not fit.
    Rule("tf_shape_index", "shape", r"^tuple index out of range$", ("IndexError",)),
)


def classify(exc):
    """The kind of the first rule matching the exception, or None."""
    message = str(exc)
    for rule in RULES:
        if rule.matches(exc, message):
            return rule.kind
    return None


def matching_rule(exc):
    """The id of the first rule matching the exception, or None (for tests and diagnostics)."""
    message = str(exc)
    return next((rule.id for rule in RULES if rule.matches(exc, message)), None)


_FUNCTION_NODE = re.compile(r"\{\{function_node [^}]*\}\}\s*")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")


def clean_message(message):
    """The message a reader needs, stable across runs: TF's node decorations and addresses cut."""
    message = _FUNCTION_NODE.sub("", message)
    message = message.split("\n\t; NodeDef:")[0]
    message = _ADDRESS.sub("0x…", message)
    message = re.sub(r"\s+name:\s*$", "", message.strip())
    message = " ".join(message.split())
    return message if len(message) <= 400 else message[:399] + "…"
