"""Differential check: random loss calls sent to a `lossconf/1` server, compared with the frameworks.

    python tools/check_serve.py [--command CMD] [--api PATTERN] [--n N] [--seed S]

The case files hold hand-picked and seeded cases; this tool goes wider, drawing calls from a small
generator per API (shapes, options, float32/float64, edge values, invalid calls) to find where
a backend and the real frameworks disagree. Each mismatch is printed with the call and both
outcomes; a summary per API follows. Exit status 1 when anything mismatched.

`--backward` checks gradients instead: for each drawn call, wrt = the API's `differentiable`
arguments (specs/*.yaml) that are float tensors in the call, grad_output = random values of the
loss's dtype and shape; each gradient is compared with torch autograd / tf.GradientTape under the
same tolerances as forward values.

`--serve` turns this script into a `lossconf/1` server backed by the frameworks themselves, so
the checker can be tried end to end without any other backend:
`check_serve.py --command "python tools/check_serve.py --serve"` must report no mismatch (with or
without `--backward`).
"""

import argparse
import fnmatch
import json
import math
import os
import queue
import random
import shlex
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import frameworks  # noqa: E402

DEFAULT_COMMAND = "cargo run -q --release -- serve"
SPECS_DIR = Path(__file__).resolve().parent.parent / "specs"

# torch.testing.assert_close defaults, as in DESIGN.md's comparison policy.
TOLERANCES = {"float16": (1e-3, 1e-5), "bfloat16": (1.6e-2, 1e-5), "float32": (1.3e-6, 1e-5), "float64": (1e-7, 1e-7)}

# ---------------------------------------------------------------------------------------------
# Drawing values


EDGE_VALUES = (0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0, 1e30, "inf", "-inf", "nan")


class Draw:
    """Random argument values, always exactly representable in their dtype."""

    def __init__(self, seed):
        self.rng = random.Random(seed)

    def chance(self, p):
        return self.rng.random() < p

    def pick(self, options):
        return self.rng.choice(options)

    def dims(self, rank, low=1, high=4):
        return [self.rng.randint(low, high) for _ in range(rank)]

    def tensor(self, dtype, shape, values):
        """A lossconf tensor; float values are rounded to the dtype (so they are exact there)."""
        if dtype in ("int32", "int64", "uint8", "bool"):
            return {"dtype": dtype, "shape": list(shape), "data": [int(v) for v in values]}
        rounded = np.array([frameworks.parse_float(v) for v in values], dtype=np.float64).reshape(shape)
        if dtype == "bfloat16":
            t = frameworks.torch()
            rounded = t.from_numpy(rounded).to(t.bfloat16).to(t.float64).numpy()
        elif dtype != "float64":
            rounded = rounded.astype(dtype).astype(np.float64)
        return frameworks.from_result(dtype, rounded)

    def floats(self, dtype, shape, low=-3.0, high=3.0, edges=0.05):
        n = math.prod(shape)
        vals = [self.pick(EDGE_VALUES) if self.chance(edges) else self.rng.uniform(low, high) for _ in range(n)]
        return self.tensor(dtype, shape, vals)

    def probs(self, dtype, shape, edges=0.1):
        """Values in [0, 1], with exact 0 and 1 now and then (log(0) paths)."""
        n = math.prod(shape)
        vals = [self.pick((0.0, 1.0)) if self.chance(edges) else self.rng.uniform(0.0, 1.0) for _ in range(n)]
        return self.tensor(dtype, shape, vals)

    def binary(self, dtype, shape):
        return self.tensor(dtype, shape, [float(self.chance(0.5)) for _ in range(math.prod(shape))])

    def distribution(self, dtype, shape, axis=-1, onehot=False):
        """Non-negative values summing to 1 along `axis` (one-hot when asked)."""
        raw = np.array([self.rng.random() for _ in range(math.prod(shape))]).reshape(shape)
        if onehot:
            raw = (raw == raw.max(axis=axis, keepdims=True)).astype(np.float64)
        raw = raw / raw.sum(axis=axis, keepdims=True)
        return self.tensor(dtype, shape, raw.reshape(-1).tolist())

    def labels(self, shape, classes, dtype="int64", bad=0.05, extra=()):
        """Class indices in [0, classes), now and then out of range or one of `extra`."""
        vals = []
        for _ in range(math.prod(shape)):
            if self.chance(bad):
                vals.append(self.pick((-1, classes) + tuple(extra)))
            else:
                vals.append(self.rng.randrange(classes))
        return self.tensor(dtype, shape, vals)

    def float_dtype(self, half=0.2):
        """float32 or float64, or with probability `half` float16 or bfloat16."""
        return self.pick(("float16", "bfloat16")) if self.chance(half) else self.pick(("float32", "float64"))

    def signs(self, dtype, shape, other=0.05):
        """Labels 1 and -1, now and then 0, 2 or 0.5 (used as they are by the APIs)."""
        n = math.prod(shape)
        vals = [self.pick((0.0, 2.0, 0.5)) if self.chance(other) else self.pick((1.0, -1.0)) for _ in range(n)]
        return self.tensor(dtype, shape, vals)

    def counts(self, dtype, shape, high=6, edges=0.05):
        """Non-negative counts (whole numbers mostly, fractional now and then), rarely negative."""
        n = math.prod(shape)
        vals = []
        for _ in range(n):
            if self.chance(edges):
                vals.append(self.pick((-1.0, 0.5, 1.0, 1e-30, 100.0)))
            else:
                vals.append(float(self.rng.randint(0, high)) if self.chance(0.8) else self.rng.uniform(0, high))
        return self.tensor(dtype, shape, vals)

    def maybe(self, args, key, value, p=0.5):
        """Sets an optional argument with probability p (otherwise the API default applies)."""
        if self.chance(p):
            args[key] = value() if callable(value) else value


# ---------------------------------------------------------------------------------------------
# Generators: one per API, every option of its signature


TORCH_REDUCTIONS = ("none", "mean", "sum")
KERAS_REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "none", None, "mean_with_sample_weight")


def torch_legacy(d, args):
    """The deprecated size_average/reduce pair, still part of many torch signatures."""
    if d.chance(0.1):
        args["size_average"] = d.pick((None, True, False))
        args["reduce"] = d.pick((None, True, False))


def torch_pointwise(options, weight=False, legacy=False):
    """l1/mse/smooth_l1/huber: same-shape (sometimes broadcast) input and target."""

    def gen(d):
        dt, shape = d.float_dtype(), d.dims(d.rng.randint(0, 3))
        target_shape = shape[:-1] + [1] if shape and d.chance(0.1) else shape
        args = {"input": d.floats(dt, shape), "target": d.floats(dt, target_shape)}
        d.maybe(args, "reduction", lambda: d.pick(TORCH_REDUCTIONS), 0.8)
        for key, choices in options.items():
            d.maybe(args, key, lambda c=choices: d.pick(c))
        if weight:
            d.maybe(args, "weight", lambda: d.probs(dt, shape), 0.2)
        if legacy:
            torch_legacy(d, args)
        return args

    return gen


def torch_class_input(d, dt, log=False):
    """Input of shape (C,), (N, C) or (N, C, d1); returns (tensor, shape, C)."""
    c = d.rng.randint(2, 5)
    shape = d.pick(([c], [d.rng.randint(1, 4), c], [d.rng.randint(1, 3), c, d.rng.randint(1, 3)]))
    x = d.floats(dt, shape, -4.0, 1.0 if log else 4.0)
    return x, shape, c


def gen_cross_entropy(d):
    dt = d.float_dtype()
    x, shape, c = torch_class_input(d, dt)
    target_shape = shape[:1] + shape[2:] if len(shape) > 1 else []
    args = {"input": x}
    if d.chance(0.3):  # class probabilities
        args["target"] = d.distribution(dt, shape, axis=0 if len(shape) == 1 else 1)
    else:
        args["target"] = d.labels(target_shape, c, extra=(-100, 1))
        d.maybe(args, "ignore_index", lambda: d.pick((-100, 0, 1, -1)), 0.3)
    d.maybe(args, "weight", lambda: d.probs(dt, [c], edges=0.0), 0.3)
    d.maybe(args, "reduction", lambda: d.pick(TORCH_REDUCTIONS), 0.8)
    d.maybe(args, "label_smoothing", lambda: d.pick((0.0, 0.1, 0.5, 1.0, 1.5)), 0.3)
    torch_legacy(d, args)
    return args


def gen_nll_loss(d):
    dt = d.float_dtype()
    x, shape, c = torch_class_input(d, dt, log=True)
    target_shape = shape[:1] + shape[2:] if len(shape) > 1 else []
    args = {"input": x, "target": d.labels(target_shape, c, extra=(-100,))}
    d.maybe(args, "weight", lambda: d.probs(dt, [c], edges=0.0), 0.3)
    d.maybe(args, "ignore_index", lambda: d.pick((-100, 0, 1)), 0.3)
    d.maybe(args, "reduction", lambda: d.pick(TORCH_REDUCTIONS), 0.8)
    torch_legacy(d, args)
    return args


def gen_binary_cross_entropy(d):
    dt, shape = d.float_dtype(), d.dims(d.rng.randint(0, 3))
    args = {"input": d.probs(dt, shape), "target": d.pick((d.binary, d.probs))(dt, shape)}
    d.maybe(args, "weight", lambda: d.probs(dt, shape, edges=0.0), 0.2)
    d.maybe(args, "reduction", lambda: d.pick(TORCH_REDUCTIONS), 0.8)
    torch_legacy(d, args)
    return args


def gen_bce_with_logits(d):
    dt, shape = d.float_dtype(), d.dims(d.rng.randint(1, 3))
    args = {"input": d.floats(dt, shape, -10.0, 10.0), "target": d.probs(dt, shape)}
    d.maybe(args, "weight", lambda: d.probs(dt, shape, edges=0.0), 0.2)
    d.maybe(args, "pos_weight", lambda: d.floats(dt, shape[-1:], 0.0, 3.0, edges=0.0), 0.3)
    d.maybe(args, "reduction", lambda: d.pick(TORCH_REDUCTIONS), 0.8)
    torch_legacy(d, args)
    return args


def gen_multilabel_soft_margin(d):
    dt, n, c = d.float_dtype(), d.rng.randint(1, 4), d.rng.randint(1, 5)
    args = {"input": d.floats(dt, [n, c], -5.0, 5.0), "target": d.binary(dt, [n, c])}
    d.maybe(args, "weight", lambda: d.probs(dt, [c], edges=0.0), 0.3)
    d.maybe(args, "reduction", lambda: d.pick(TORCH_REDUCTIONS), 0.8)
    torch_legacy(d, args)
    return args


def gen_tf_sigmoid(d):
    dt, shape = d.float_dtype(), d.dims(d.rng.randint(0, 3))
    args = {"labels": d.probs(dt, shape), "logits": d.floats(dt, shape, -10.0, 10.0)}
    d.maybe(args, "name", "loss", 0.1)
    return args


def gen_tf_softmax(d):
    dt, shape = d.float_dtype(), d.dims(d.rng.randint(1, 3), 1, 5)
    axis = d.pick((-1, -1, 0, len(shape) - 1))
    args = {"labels": d.distribution(dt, shape, axis=axis, onehot=d.chance(0.5)),
            "logits": d.floats(dt, shape, -10.0, 10.0)}
    if axis != -1 or d.chance(0.3):
        args["axis"] = axis
    d.maybe(args, "name", "loss", 0.1)
    return args


def gen_tf_sparse_softmax(d):
    dt, n, c = d.float_dtype(), d.rng.randint(1, 4), d.rng.randint(1, 5)
    args = {"labels": d.labels([n], c, d.pick(("int32", "int64"))), "logits": d.floats(dt, [n, c], -10.0, 10.0)}
    d.maybe(args, "name", "loss", 0.1)
    return args


def keras_common(d, args, dt, batch):
    """Options every Keras loss shares: reduction, name, dtype, and the call's sample_weight."""
    d.maybe(args, "reduction", lambda: d.pick(KERAS_REDUCTIONS), 0.7)
    d.maybe(args, "name", "loss", 0.1)
    d.maybe(args, "dtype", lambda: d.pick((None, "float32", "float64")), 0.2)
    if batch is not None:
        d.maybe(args, "sample_weight", lambda: d.probs(dt, [batch], edges=0.1), 0.3)
    return args


def keras_pointwise(extra):
    def gen(d):
        dt, shape = d.float_dtype(), d.dims(d.rng.randint(1, 3))
        args = {"y_true": d.floats(dt, shape), "y_pred": d.floats(dt, shape)}
        for key, options in extra.items():
            d.maybe(args, key, lambda o=options: d.pick(o))
        return keras_common(d, args, dt, shape[0])

    return gen


def keras_binary_args(d):
    """(dtype, shape, args) of a binary Keras crossentropy (plain or focal): logits or
    probabilities, binary or soft labels, `from_logits` when it matters or sometimes."""
    dt, shape = d.float_dtype(), d.dims(d.rng.randint(1, 3))
    from_logits = d.chance(0.5)
    y_pred = d.floats(dt, shape, -10.0, 10.0) if from_logits else d.probs(dt, shape)
    args = {"y_true": d.pick((d.binary, d.probs))(dt, shape), "y_pred": y_pred}
    if from_logits or d.chance(0.3):
        args["from_logits"] = from_logits
    return dt, shape, args


def keras_categorical_args(d):
    """(dtype, shape, args) of a categorical Keras crossentropy (plain or focal): logits or
    distributions, one-hot or soft labels over at most 5 classes."""
    dt, shape = d.float_dtype(), d.dims(d.rng.randint(1, 3), 1, 5)
    from_logits = d.chance(0.5)
    y_pred = d.floats(dt, shape, -10.0, 10.0) if from_logits else d.distribution(dt, shape)
    args = {"y_true": d.distribution(dt, shape, onehot=d.chance(0.6)), "y_pred": y_pred}
    if from_logits or d.chance(0.3):
        args["from_logits"] = from_logits
    return dt, shape, args


def gen_keras_bce(d):
    dt, shape, args = keras_binary_args(d)
    d.maybe(args, "label_smoothing", lambda: d.pick((0.0, 0.1, 0.5)), 0.3)
    d.maybe(args, "axis", lambda: d.pick((-1, 0)), 0.2)
    return keras_common(d, args, dt, shape[0])


def gen_keras_cce(d):
    dt, shape, args = keras_categorical_args(d)
    d.maybe(args, "label_smoothing", lambda: d.pick((0.0, 0.1, 0.5)), 0.3)
    d.maybe(args, "axis", lambda: d.pick((-1, 0)), 0.2)
    return keras_common(d, args, dt, shape[0])


def gen_keras_scce(d):
    dt, n, c = d.float_dtype(), d.rng.randint(1, 4), d.rng.randint(1, 5)
    from_logits = d.chance(0.5)
    y_pred = d.floats(dt, [n, c], -10.0, 10.0) if from_logits else d.distribution(dt, [n, c])
    labels_shape = d.pick(([n], [n, 1]))
    args = {"y_true": d.labels(labels_shape, c, d.pick(("int64", "int32", dt))), "y_pred": y_pred}
    if from_logits or d.chance(0.3):
        args["from_logits"] = from_logits
    d.maybe(args, "ignore_class", lambda: d.pick((None, 0, 1, -1)), 0.3)
    d.maybe(args, "axis", -1, 0.1)
    return keras_common(d, args, dt, n)


def gen_poisson_nll(d):
    dt, shape = d.float_dtype(), d.dims(d.rng.randint(0, 3))
    log_input = d.chance(0.5)
    x = d.floats(dt, shape, -3.0, 3.0) if log_input else d.floats(dt, shape, 0.0, 5.0, edges=0.03)
    target_shape = shape[:-1] + [1] if shape and d.chance(0.1) else shape
    args = {"input": x, "target": d.counts(dt, target_shape)}
    if not log_input or d.chance(0.3):
        args["log_input"] = log_input
    d.maybe(args, "full", lambda: d.chance(0.5), 0.4)
    d.maybe(args, "eps", lambda: d.pick((1e-8, 0.0, 1e-3, 0.5, -1e-3)), 0.3)
    d.maybe(args, "reduction", lambda: d.pick(TORCH_REDUCTIONS), 0.8)
    torch_legacy(d, args)
    return args


def gen_gaussian_nll(d):
    dt, shape = d.float_dtype(), d.dims(d.rng.randint(1, 3))
    args = {"input": d.floats(dt, shape), "target": d.floats(dt, shape)}
    form = d.pick(("full", "full", "drop_last", "ones", "float"))
    if form == "float":
        args["var"] = d.pick((1.0, 0.5, 2.0, 0.0, 1e-8))
    else:
        var_shape = {"full": shape, "drop_last": shape[:-1], "ones": shape[:-1] + [1]}[form]
        vals = [d.pick((0.0, 1e-8, 1e-30, -1.0, "inf")) if d.chance(0.05) else d.rng.uniform(0.05, 3.0)
                for _ in range(math.prod(var_shape))]
        args["var"] = d.tensor(dt, var_shape, vals)
    d.maybe(args, "full", lambda: d.chance(0.5), 0.4)
    d.maybe(args, "eps", lambda: d.pick((1e-6, 0.0, 1e-3, 0.5)), 0.3)
    d.maybe(args, "reduction", lambda: d.pick(TORCH_REDUCTIONS), 0.8)
    return args


def gen_kl_div(d):
    dt, shape = d.float_dtype(), d.dims(d.rng.randint(0, 3))
    log_target = d.chance(0.4)
    args = {"input": d.floats(dt, shape, -5.0, 0.0, edges=0.03)}
    args["target"] = d.floats(dt, shape, -5.0, 0.0, edges=0.03) if log_target else d.probs(dt, shape)
    if log_target or d.chance(0.3):
        args["log_target"] = log_target
    d.maybe(args, "reduction", lambda: d.pick(TORCH_REDUCTIONS + ("batchmean",)), 0.8)
    torch_legacy(d, args)
    return args


def gen_linear_cross_entropy(d):
    dt, c, k = d.float_dtype(), d.rng.randint(2, 5), d.rng.randint(1, 4)
    batched = d.chance(0.8)
    n = d.rng.randint(1, 4)
    extra = [d.rng.randint(1, 3)] if batched and d.chance(0.15) else []
    args = {"input": d.floats(dt, [n, k] if batched else [k], -2.0, 2.0, edges=0.02),
            "linear_weight": d.floats(dt, [c] + extra + [k], -2.0, 2.0, edges=0.02)}
    logits_shape = ([n, c] if batched else [c]) + extra
    if d.chance(0.3):  # class probabilities
        args["target"] = d.distribution(dt, logits_shape, axis=1 if batched else 0)
    else:
        args["target"] = d.labels(([n] if batched else []) + extra, c, extra=(-100,))
        d.maybe(args, "ignore_index", lambda: d.pick((None, -100, 0, 1)), 0.3)
    d.maybe(args, "linear_bias", lambda: d.floats(dt, [c] + extra, -1.0, 1.0, edges=0.0), 0.4)
    d.maybe(args, "weight", lambda: d.probs(dt, [c], edges=0.0), 0.3)
    d.maybe(args, "reduction", lambda: d.pick(TORCH_REDUCTIONS), 0.8)
    d.maybe(args, "label_smoothing", lambda: d.pick((0.0, 0.1, 0.5, 1.0)), 0.3)
    return args


def ctc_labels(d, n, s, classes, blank):
    """(n, s) labels in [0, classes) other than `blank` (row-major, as a flat list)."""
    allowed = [i for i in range(classes) if i != blank]
    return [d.pick(allowed) for _ in range(n * s)]


def gen_torch_ctc(d):
    dt = d.float_dtype(half=0.05)
    t, n, c, s = d.rng.randint(1, 6), d.rng.randint(1, 3), d.rng.randint(2, 5), d.rng.randint(1, 3)
    blank = d.pick((0, 0, 0, c - 1))
    unbatched = d.chance(0.15)
    log_probs = d.floats(dt, [t, c] if unbatched else [t, n, c], -4.0, 0.0, edges=0.02)
    in_len = [t if d.chance(0.7) else d.rng.randint(0, t) for _ in range(n)]
    tgt_len = [d.rng.randint(0, s) for _ in range(n)]
    idx = d.pick(("int64", "int64", "int32"))
    if unbatched:
        n, in_len, tgt_len = 1, in_len[:1], tgt_len[:1]
        targets = d.tensor(idx, [s], ctc_labels(d, 1, s, c, blank))
    elif d.chance(0.3):  # concatenated
        targets = d.tensor(idx, [sum(tgt_len)], ctc_labels(d, 1, sum(tgt_len), c, blank))
    else:
        targets = d.tensor(idx, [n, s], ctc_labels(d, n, s, c, blank))
    args = {"log_probs": log_probs, "targets": targets}
    if d.chance(0.3):
        args["input_lengths"], args["target_lengths"] = in_len, tgt_len
    else:
        lshape = [] if unbatched and d.chance(0.5) else [n]
        args["input_lengths"] = d.tensor(idx, lshape, in_len)
        args["target_lengths"] = d.tensor(idx, lshape, tgt_len)
    if blank != 0 or d.chance(0.2):
        args["blank"] = blank
    d.maybe(args, "reduction", lambda: d.pick(TORCH_REDUCTIONS), 0.8)
    d.maybe(args, "zero_infinity", lambda: d.chance(0.5), 0.4)
    return args


def gen_margin_ranking(d):
    dt, shape = d.float_dtype(), d.dims(d.rng.randint(0, 2))
    other = [1] if shape and d.chance(0.1) else shape
    args = {"input1": d.floats(dt, shape), "input2": d.floats(dt, other), "target": d.signs(dt, shape)}
    d.maybe(args, "margin", lambda: d.pick((0.0, 0.5, 1.0, -0.5)), 0.5)
    d.maybe(args, "reduction", lambda: d.pick(TORCH_REDUCTIONS), 0.8)
    torch_legacy(d, args)
    return args


def torch_signed(options):
    """hinge_embedding / soft_margin: scores and +-1 targets of the same (sometimes broadcast) shape."""

    def gen(d):
        dt, shape = d.float_dtype(), d.dims(d.rng.randint(0, 3))
        target_shape = shape[:-1] + [1] if shape and d.chance(0.1) else shape
        args = {"input": d.floats(dt, shape), "target": d.signs(dt, target_shape)}
        for key, choices in options.items():
            d.maybe(args, key, lambda c=choices: d.pick(c))
        d.maybe(args, "reduction", lambda: d.pick(TORCH_REDUCTIONS), 0.8)
        torch_legacy(d, args)
        return args

    return gen


def gen_cosine_embedding(d):
    dt, dim = d.float_dtype(), d.rng.randint(1, 4)
    n = d.rng.randint(1, 4)
    batched = d.chance(0.8)
    shape = [n, dim] if batched else [dim]
    args = {"input1": d.floats(dt, shape), "input2": d.floats(dt, shape),
            "target": d.signs(d.pick((dt, dt, "int64")), [n] if batched else [])}
    if batched and d.chance(0.2):  # parallel vectors, zero vectors
        args["input2"] = d.tensor(dt, shape, [v if isinstance(v, float) else 0.0 for v in args["input1"]["data"]])
    d.maybe(args, "margin", lambda: d.pick((0.0, 0.2, 0.5, -0.5)), 0.5)
    d.maybe(args, "reduction", lambda: d.pick(TORCH_REDUCTIONS), 0.8)
    torch_legacy(d, args)
    return args


def triplet_inputs(d):
    dt, dim = d.float_dtype(), d.rng.randint(1, 4)
    shape = d.pick(([d.rng.randint(1, 4), dim], [dim], [d.rng.randint(1, 4), dim]))
    args = {"anchor": d.floats(dt, shape), "positive": d.floats(dt, shape), "negative": d.floats(dt, shape)}
    if len(shape) == 2 and d.chance(0.1):
        args["negative"] = d.floats(dt, [1, dim])
    return args


def gen_triplet_margin(d):
    args = triplet_inputs(d)
    d.maybe(args, "margin", lambda: d.pick((1.0, 0.5, 2.0, 0.0)), 0.4)
    d.maybe(args, "p", lambda: d.pick((2.0, 1.0, 3.0, 1.5)), 0.4)
    d.maybe(args, "eps", lambda: d.pick((1e-6, 0.0, 1e-3)), 0.3)
    d.maybe(args, "swap", lambda: d.chance(0.5), 0.4)
    d.maybe(args, "reduction", lambda: d.pick(TORCH_REDUCTIONS), 0.8)
    torch_legacy(d, args)
    return args


def gen_triplet_distance(d):
    args = triplet_inputs(d)
    d.maybe(args, "distance_function", None, 0.1)  # a callable cannot cross the wire
    d.maybe(args, "margin", lambda: d.pick((1.0, 0.5, 2.0, 0.0)), 0.4)
    d.maybe(args, "swap", lambda: d.chance(0.5), 0.4)
    d.maybe(args, "reduction", lambda: d.pick(TORCH_REDUCTIONS), 0.8)
    return args


def gen_multi_margin(d):
    dt, c = d.float_dtype(half=0.05), d.rng.randint(1, 5)
    n = d.rng.randint(1, 4)
    batched = d.chance(0.8)
    args = {"input": d.floats(dt, [n, c] if batched else [c]),
            "target": d.labels([n] if batched else d.pick(([], [1])), c, bad=0.03)}
    d.maybe(args, "p", lambda: d.pick((1, 2)), 0.4)
    d.maybe(args, "margin", lambda: d.pick((1.0, 0.0, 0.5, -1.0, 2.0)), 0.4)
    d.maybe(args, "weight", lambda: d.probs(dt, [c], edges=0.0), 0.3)
    d.maybe(args, "reduction", lambda: d.pick(TORCH_REDUCTIONS), 0.8)
    torch_legacy(d, args)
    return args


def gen_multilabel_margin(d):
    dt, c = d.float_dtype(half=0.05), d.rng.randint(1, 5)
    n = d.rng.randint(1, 4)
    shape = [n, c] if d.chance(0.8) else [c]
    rows = []
    for _ in range(math.prod(shape[:-1])):
        labels = d.rng.sample(range(c), d.rng.randint(0, c))
        row = labels + [-1] * (c - len(labels))
        if len(labels) < c - 1 and d.chance(0.3):  # ignored entries after the first -1
            row[len(labels) + 1] = d.rng.randrange(c)
        if d.chance(0.03):
            row[0] = d.pick((c, -2))
        rows += row
    args = {"input": d.floats(dt, shape), "target": d.tensor("int64", shape, rows)}
    d.maybe(args, "reduction", lambda: d.pick(TORCH_REDUCTIONS), 0.8)
    torch_legacy(d, args)
    return args


def gen_tf_weighted(d):
    """The sigmoid loss's arguments plus pos_weight: a number, or a tensor over the last axis."""
    args = gen_tf_sigmoid(d)
    dt, shape = args["logits"]["dtype"], args["logits"]["shape"]
    if shape and d.chance(0.3):
        args["pos_weight"] = d.floats(dt, shape[-1:], 0.0, 3.0, edges=0.0)
    else:
        args["pos_weight"] = d.pick((1.0, 0.5, 2.0, 0.0, -1.0, 3))
    return args


def gen_tf_log_poisson(d):
    dt, shape = d.float_dtype(), d.dims(d.rng.randint(0, 3))
    args = {"targets": d.counts(dt, shape), "log_input": d.floats(dt, shape)}
    d.maybe(args, "compute_full_loss", lambda: d.chance(0.5), 0.5)
    d.maybe(args, "name", "loss", 0.1)
    return args


def gen_tf_l2(d):
    dt, shape = d.float_dtype(), d.dims(d.rng.randint(0, 3), 0 if d.chance(0.05) else 1)
    args = {"t": d.floats(dt, shape, -10.0, 10.0)}
    d.maybe(args, "name", "loss", 0.1)
    return args


def gen_tf_ctc(d):
    dt = d.pick(("float32", "float32", "float32", "float16", "bfloat16", "float64"))
    t, n, c, s = d.rng.randint(1, 6), d.rng.randint(1, 3), d.rng.randint(2, 5), d.rng.randint(1, 3)
    time_major = d.chance(0.6)
    blank_index = d.pick((None, None, 0, c - 1, -1))
    blank = 0 if blank_index is None else blank_index % c
    idx = d.pick(("int32", "int64"))
    args = {"labels": d.tensor(idx, [n, s], ctc_labels(d, n, s, c, blank)),
            "logits": d.floats(dt, [t, n, c] if time_major else [n, t, c], -4.0, 4.0, edges=0.02)}
    label_length = [d.rng.randint(1, s) for _ in range(n)]
    logit_length = [t if d.chance(0.7) else d.rng.randint(1, t) for _ in range(n)]
    as_list = d.chance(0.3)
    args["label_length"] = label_length if as_list else d.tensor(idx, [n], label_length)
    args["logit_length"] = logit_length if as_list else d.tensor(idx, [n], logit_length)
    if not time_major or d.chance(0.3):
        args["logits_time_major"] = time_major
    if blank_index is not None or d.chance(0.1):
        args["blank_index"] = blank_index
    d.maybe(args, "name", "loss", 0.1)
    return args


def keras_dtype_options(d, args):
    """A computation dtype now and then: float16 and bfloat16 too."""
    if d.chance(0.05):
        args["dtype"] = d.pick(("float16", "bfloat16"))
    return args


def keras_shaped(make_true, make_pred, rank=(1, 3), extra=None, low=1, high=4):
    """A Keras loss over same-shape y_true and y_pred, with constructor options from `extra`."""

    def gen(d):
        dt, shape = d.float_dtype(), d.dims(d.rng.randint(*rank), low, high)
        args = {"y_true": make_true(d, dt, shape), "y_pred": make_pred(d, dt, shape)}
        for key, options in (extra or {}).items():
            d.maybe(args, key, lambda o=options: d.pick(o))
        keras_common(d, args, dt, shape[0])
        return keras_dtype_options(d, args)

    return gen


def keras_floats(d, dt, shape):
    return d.floats(dt, shape)


def keras_rates(d, dt, shape):
    return d.floats(dt, shape, 0.0, 5.0, edges=0.03)


def keras_distribution(d, dt, shape):
    return d.distribution(dt, shape) if d.chance(0.8) else d.probs(dt, shape)


def keras_hinge_labels(d, dt, shape):
    return d.binary(dt, shape) if d.chance(0.4) else d.signs(dt, shape)


def keras_onehot(d, dt, shape):
    return d.distribution(dt, shape, onehot=True)


def gen_keras_cosine(d):
    dt, shape = d.float_dtype(), d.dims(d.rng.randint(1, 4))
    args = {"y_true": d.floats(dt, shape), "y_pred": d.floats(dt, shape)}
    if d.chance(0.1):
        args["y_pred"] = d.tensor(dt, shape, [0.0] * math.prod(shape))
    d.maybe(args, "axis", lambda: d.pick((-1, 0, len(shape) - 1, None, -len(shape))), 0.3)
    keras_common(d, args, dt, shape[0])
    return keras_dtype_options(d, args)


def gen_keras_overlap(tversky):
    def gen(d):
        dt, shape = d.float_dtype(), d.dims(d.rng.randint(1, 4))
        args = {"y_true": d.binary(dt, shape) if d.chance(0.7) else d.probs(dt, shape), "y_pred": d.probs(dt, shape)}
        rank = len(shape)
        axes = [None, -1, 0] + ([[1, 2], 1] if rank == 3 else [1] if rank == 2 else [])
        d.maybe(args, "axis", lambda: d.pick(axes), 0.6)
        if tversky:
            d.maybe(args, "alpha", lambda: d.pick((0.5, 0.3, 0.7, 0.0, 1.0)), 0.6)
            d.maybe(args, "beta", lambda: d.pick((0.5, 0.3, 0.7, 0.0, 1.0)), 0.6)
        keras_common(d, args, dt, shape[0])
        return keras_dtype_options(d, args)

    return gen


def gen_keras_ctc(d):
    dt = d.float_dtype()
    t, n, c, s = d.rng.randint(1, 6), d.rng.randint(1, 3), d.rng.randint(2, 5), d.rng.randint(1, 3)
    labels = [d.rng.randrange(1, c) if d.chance(0.8) else 0 for _ in range(n * s)]
    args = {"y_true": d.tensor(d.pick(("int32", "int64", dt)), [n, s], labels),
            "y_pred": d.floats(dt, [n, t, c], -4.0, 4.0, edges=0.02)}
    keras_common(d, args, dt, n)
    return args


def gen_keras_gce(d):
    dt, shape = d.float_dtype(), d.dims(d.rng.randint(1, 3), 1, 5)
    c = shape[-1]
    args = {"y_true": d.labels(shape[:-1], c, d.pick(("int64", "int32", dt)), extra=(-1, c + 1)),
            "y_pred": d.distribution(dt, shape) if d.chance(0.8) else d.probs(dt, shape)}
    d.maybe(args, "q", lambda: d.pick((0.5, 0.1, 0.7, 0.99, 1e-3)), 0.5)
    keras_common(d, args, dt, shape[0] if len(shape) > 1 else None)
    return keras_dtype_options(d, args)


def gen_keras_binary_focal(d):
    dt, shape, args = keras_binary_args(d)
    d.maybe(args, "apply_class_balancing", lambda: d.chance(0.5), 0.4)
    d.maybe(args, "alpha", lambda: d.pick((0.25, 0.5, 0.0, 1.0)), 0.3)
    d.maybe(args, "gamma", lambda: d.pick((2.0, 0.0, 1.0, 0.5, 3.0)), 0.4)
    d.maybe(args, "label_smoothing", lambda: d.pick((0.0, 0.1, 0.5)), 0.3)
    d.maybe(args, "axis", lambda: d.pick((-1, 0)), 0.2)
    keras_common(d, args, dt, shape[0])
    return keras_dtype_options(d, args)


def gen_keras_categorical_focal(d):
    dt, shape, args = keras_categorical_args(d)
    d.maybe(args, "alpha", lambda: d.pick((0.25, 0.5, 1.0)) if d.chance(0.7)  # or per class, as a tensor
            else d.probs("float32", shape[-1:], edges=0.0), 0.3)
    d.maybe(args, "gamma", lambda: d.pick((2.0, 0.0, 1.0, 0.5)), 0.4)
    d.maybe(args, "label_smoothing", lambda: d.pick((0.0, 0.1, 0.5)), 0.3)
    d.maybe(args, "axis", lambda: d.pick((-1, 0)), 0.2)
    keras_common(d, args, dt, shape[0])
    return keras_dtype_options(d, args)


def gen_keras_circle(d):
    dt, n, dim = d.float_dtype(), d.rng.randint(1, 5), d.rng.randint(1, 4)
    raw = np.array([d.rng.gauss(0.0, 1.0) for _ in range(n * dim)]).reshape(n, dim)
    if d.chance(0.8):
        raw = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    args = {"y_true": d.labels([n], d.rng.randint(1, 3), d.pick(("int32", "int64", dt)), bad=0.0),
            "y_pred": d.tensor(dt, [n, dim], raw.reshape(-1).tolist())}
    d.maybe(args, "gamma", lambda: d.pick((80.0, 1.0, 10.0, 0.0)), 0.5)
    d.maybe(args, "margin", lambda: d.pick((0.4, 0.0, 0.25, 1.0)), 0.4)
    d.maybe(args, "remove_diagonal", lambda: d.chance(0.5), 0.3)
    keras_common(d, args, dt, n)
    return args

F = "torch.nn.functional."
K = "tf.keras.losses."
GENERATORS = {
    F + "l1_loss": torch_pointwise({}, weight=True, legacy=True),
    F + "mse_loss": torch_pointwise({}, weight=True, legacy=True),
    F + "smooth_l1_loss": torch_pointwise({"beta": (0.0, 0.5, 1.0, 2.0, -1.0)}, legacy=True),
    F + "huber_loss": torch_pointwise({"delta": (0.5, 1.0, 2.0, 0.0)}, weight=True),
    F + "cross_entropy": gen_cross_entropy,
    F + "nll_loss": gen_nll_loss,
    F + "binary_cross_entropy": gen_binary_cross_entropy,
    F + "binary_cross_entropy_with_logits": gen_bce_with_logits,
    F + "multilabel_soft_margin_loss": gen_multilabel_soft_margin,
    "tf.nn.sigmoid_cross_entropy_with_logits": gen_tf_sigmoid,
    "tf.nn.softmax_cross_entropy_with_logits": gen_tf_softmax,
    "tf.nn.sparse_softmax_cross_entropy_with_logits": gen_tf_sparse_softmax,
    K + "MeanAbsoluteError": keras_pointwise({}),
    K + "MeanSquaredError": keras_pointwise({}),
    K + "Huber": keras_pointwise({"delta": (0.5, 1.0, 2.0, 0.0, -1.0)}),
    K + "BinaryCrossentropy": gen_keras_bce,
    K + "CategoricalCrossentropy": gen_keras_cce,
    K + "SparseCategoricalCrossentropy": gen_keras_scce,
    F + "poisson_nll_loss": gen_poisson_nll,
    F + "gaussian_nll_loss": gen_gaussian_nll,
    F + "kl_div": gen_kl_div,
    F + "linear_cross_entropy": gen_linear_cross_entropy,
    F + "ctc_loss": gen_torch_ctc,
    F + "margin_ranking_loss": gen_margin_ranking,
    F + "hinge_embedding_loss": torch_signed({"margin": (1.0, 0.0, 0.5, -1.0, 2.0)}),
    F + "soft_margin_loss": torch_signed({}),
    F + "cosine_embedding_loss": gen_cosine_embedding,
    F + "triplet_margin_loss": gen_triplet_margin,
    F + "triplet_margin_with_distance_loss": gen_triplet_distance,
    F + "multi_margin_loss": gen_multi_margin,
    F + "multilabel_margin_loss": gen_multilabel_margin,
    "tf.nn.weighted_cross_entropy_with_logits": gen_tf_weighted,
    "tf.nn.log_poisson_loss": gen_tf_log_poisson,
    "tf.nn.l2_loss": gen_tf_l2,
    "tf.nn.ctc_loss": gen_tf_ctc,
    K + "Poisson": keras_shaped(keras_rates, keras_rates),
    K + "KLDivergence": keras_shaped(keras_distribution, keras_distribution),
    K + "LogCosh": keras_shaped(keras_floats, keras_floats),
    K + "MeanAbsolutePercentageError": keras_shaped(keras_floats, keras_floats),
    K + "MeanSquaredLogarithmicError": keras_shaped(keras_rates, keras_rates),
    K + "CosineSimilarity": gen_keras_cosine,
    K + "Hinge": keras_shaped(keras_hinge_labels, keras_floats),
    K + "SquaredHinge": keras_shaped(keras_hinge_labels, keras_floats),
    K + "CategoricalHinge": keras_shaped(keras_onehot, keras_floats, high=5),
    K + "Dice": gen_keras_overlap(tversky=False),
    K + "Tversky": gen_keras_overlap(tversky=True),
    K + "CTC": gen_keras_ctc,
    K + "CategoricalGeneralizedCrossEntropy": gen_keras_gce,
    K + "BinaryFocalCrossentropy": gen_keras_binary_focal,
    K + "CategoricalFocalCrossentropy": gen_keras_categorical_focal,
    K + "Circle": gen_keras_circle,
}

# The tensor a backend computes on, and the one it compares against, per API family.
PRED_TARGET = {F: ("input", "target"), "tf.nn.": ("logits", "labels"), K: ("y_pred", "y_true")}
# APIs whose tensors have other names (None: no second tensor to misshape).
PRED_TARGET_API = {
    F + "ctc_loss": ("log_probs", "targets"),
    F + "margin_ranking_loss": ("input1", "target"),
    F + "cosine_embedding_loss": ("input1", "input2"),
    F + "triplet_margin_loss": ("anchor", "positive"),
    F + "triplet_margin_with_distance_loss": ("anchor", "positive"),
    F + "linear_cross_entropy": ("input", "linear_weight"),
    "tf.nn.log_poisson_loss": ("log_input", "targets"),
    "tf.nn.l2_loss": ("t", None),
}


def invalidate(d, api, args):
    """Turns a valid call into an invalid one in one of a few ways every backend must reject."""
    pred, target = PRED_TARGET_API.get(api) or next(v for k, v in PRED_TARGET.items() if api.startswith(k))
    how = d.pick(("reduction", "keyword", "shape", "dtype"))
    if how == "reduction" and not api.startswith("tf.nn."):
        args["reduction"] = "avg"
    elif how == "keyword":
        args["no_such_option"] = 1
    elif how == "shape" and target and args[target]["shape"]:
        t = args[target]
        shape = t["shape"][:-1] + [t["shape"][-1] + 1]
        args[target] = d.floats(t["dtype"], shape) if t["dtype"].startswith("float") else d.labels(shape, 2)
    else:
        t = args[pred]
        args[pred] = d.tensor("int64", t["shape"], [int(max(-9.0, min(9.0, v))) if isinstance(v, float) else 0
                                                    for v in t["data"]])
    return args


def draw_call(d, api):
    args = GENERATORS[api](d)
    return invalidate(d, api, args) if d.chance(0.1) else args


# ---------------------------------------------------------------------------------------------
# Comparing outcomes


def mismatching_elements(expected, actual, dtype):
    """(index, expected, actual) of elements outside `dtype`'s tolerance; NaN matches NaN, inf itself."""
    rtol, atol = TOLERANCES.get(dtype, (0.0, 0.0))
    out = []
    for i, (e, a) in enumerate(zip(expected, actual)):
        x, y = frameworks.parse_float(e), frameworks.parse_float(a)
        if math.isnan(x) or math.isnan(y) or math.isinf(x) or math.isinf(y):
            ok = (math.isnan(x) and math.isnan(y)) or x == y
        else:
            ok = abs(x - y) <= atol + rtol * abs(x)
        if not ok:
            out.append((i, e, a))
    return out


def coarser(dtype, other):
    """Of two dtypes, the one with the looser tolerance (`dtype` when `other` is None or no float)."""
    if other not in TOLERANCES or dtype not in TOLERANCES:
        return dtype
    return other if TOLERANCES[other][0] > TOLERANCES[dtype][0] else dtype


def compare(expected, actual, computed_in=None):
    """None when the outcomes agree, else a short reason. Outcomes are (kind, payload) pairs.
    `computed_in`: the dtype the value was computed in, when coarser than its own (judged at that
    dtype's tolerance)."""
    (ekind, e), (akind, a) = expected, actual
    if akind in ("unsupported",):
        return None
    if ekind == "error" and akind == "error":
        return None if e["kind"] == a.get("kind") else f"error kind {a.get('kind')}, expected {e['kind']}"
    if ekind != akind:
        return f"{akind} where {ekind} was expected"
    if (e["dtype"], e["shape"]) != (a.get("dtype"), a.get("shape")):
        return f"{a.get('dtype')}{a.get('shape')}, expected {e['dtype']}{e['shape']}"
    if len(a.get("data", [])) != len(e["data"]):
        return f"{len(a.get('data', []))} elements for shape {a['shape']}"
    bad = mismatching_elements(e["data"], a["data"], coarser(e["dtype"], computed_in))
    if not bad:
        return None
    shown = ", ".join(f"[{i}] {x!r} vs {y!r}" for i, x, y in bad[:3])
    more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
    return f"{len(bad)} of {len(e['data'])} elements differ: {shown}{more}"


def compare_gradients(expected, actual, loss_dtype=None):
    """`compare` for backward outcomes, whose values are {argument name: gradient}. As the suite
    does (src/compare.rs, gradient_tolerance), a gradient is judged at the tolerance of the coarser
    of its argument's dtype and `loss_dtype`, the dtype the loss was computed in (Keras computes
    float64 inputs in float32 and casts the gradient back)."""
    (ekind, e), (akind, a) = expected, actual
    if akind == "unsupported" or ekind != "value" or akind != "value":
        return compare(expected, actual)
    if not isinstance(a, dict) or sorted(a) != sorted(e):
        return f"gradients for {sorted(a) if isinstance(a, dict) else a!r}, expected {sorted(e)}"
    reasons = []
    for name in e:
        reason = compare(("value", e[name]), ("value", a[name]) if isinstance(a[name], dict) else ("value", {}),
                         loss_dtype)
        if reason:
            reasons.append(f"{name}: {reason}")
    return "; ".join(reasons) or None


def load_differentiable(specs_dir=SPECS_DIR):
    """{api: [differentiable argument names]} from `apis.<key>.differentiable` of specs/*.yaml."""
    out = {}
    for path in sorted(Path(specs_dir).glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for entry in (doc.get("apis") or {}).values():
            if isinstance(entry, dict) and isinstance(entry.get("api"), str):
                out.setdefault(entry["api"], list(entry.get("differentiable") or []))
    return out


def float_wrt(args, differentiable):
    """The differentiable names that are floating-point tensors in this call, in spec order."""
    return [n for n in differentiable
            if frameworks.is_tensor(args.get(n)) and args[n]["dtype"] in frameworks.FLOAT_DTYPES]


# ---------------------------------------------------------------------------------------------
# Talking to the server


class Server:
    """A `lossconf/1` process: one JSON request line in, one response line out."""

    def __init__(self, command, timeout):
        self.proc = subprocess.Popen(shlex.split(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.lines, self.timeout, self.next_id = queue.Queue(), timeout, 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def request(self, req, timeout=None):
        """The response object; raises RuntimeError if the server dies, hangs or breaks protocol."""
        self.next_id += 1
        req = {"id": self.next_id, **req}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        try:
            line = self.lines.get(timeout=timeout or self.timeout)
        except queue.Empty:
            raise RuntimeError(f"no response within {timeout or self.timeout} s") from None
        if line is None:
            raise RuntimeError(f"server exited with status {self.proc.wait()}")
        resp = json.loads(line)
        if resp.get("id") != req["id"]:
            raise RuntimeError(f"response id {resp.get('id')} to request {req['id']}: {line.strip()}")
        return resp

    def forward(self, api, args):
        resp = self.request({"op": "forward", "api": api, "args": args})
        for kind in ("ok", "error", "unsupported"):
            if kind in resp:
                return ("value" if kind == "ok" else kind), resp[kind]
        raise RuntimeError(f"response without ok/error/unsupported: {resp}")

    def backward(self, api, args, wrt, grad_output):
        req = {"op": "backward", "api": api, "args": args, "wrt": wrt}
        if grad_output is not None:
            req["grad_output"] = grad_output
        resp = self.request(req)
        for kind in ("ok", "error", "unsupported"):
            if kind in resp:
                return ("value" if kind == "ok" else kind), resp[kind]
        raise RuntimeError(f"response without ok/error/unsupported: {resp}")

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def serve(perturb):
    """A `lossconf/1` server backed by the frameworks (for trying the checker end to end).

    `perturb` scales every float result (loss or gradient) by (1 + perturb), to show that
    mismatches are caught.
    """

    def scaled(t):
        if perturb and t["dtype"] in frameworks.FLOAT_DTYPES:
            t["data"] = [x * (1 + perturb) if isinstance(x, float) else x for x in t["data"]]
        return t

    for line in sys.stdin:
        try:
            req = json.loads(line)
        except json.JSONDecodeError as exc:
            print(json.dumps({"id": None, "error": {"kind": "protocol", "message": str(exc)}}), flush=True)
            continue
        rid = req.get("id")
        if req.get("op") == "describe":
            resp = {"id": rid, "ok": {"backend": "frameworks", "version": "0", "apis": sorted(GENERATORS)}}
        else:
            try:
                if req.get("op") == "backward":
                    kind, payload = frameworks.backward(req["api"], req.get("args") or {}, req.get("wrt"),
                                                        req.get("grad_output"))
                    if kind == "value":
                        payload = {name: scaled(g) for name, g in payload.items()}
                else:
                    kind, payload = frameworks.evaluate(req["api"], req.get("args") or {})
                    if kind == "value":
                        payload = scaled(payload)
            except (frameworks.UnknownApi, frameworks.UnclassifiedError) as exc:
                kind, payload = "unsupported", str(exc)
            except frameworks.InvalidRequest as exc:
                kind, payload = "error", {"kind": "protocol", "message": str(exc)}
            resp = {"id": rid, {"value": "ok"}.get(kind, kind): payload}
        print(json.dumps(resp), flush=True)


# ---------------------------------------------------------------------------------------------
# Main


def show(outcome):
    kind, payload = outcome
    if kind == "value" and not frameworks.is_tensor(payload):  # gradients by argument name
        return "; ".join(f"{name}: {show(('value', g))}" for name, g in payload.items())
    if kind == "value":
        data = payload["data"]
        head = ", ".join(repr(x) for x in data[:6]) + (", …" if len(data) > 6 else "")
        return f"{payload['dtype']}{payload['shape']} [{head}]"
    if kind == "error":
        return f"{payload.get('kind')} error: {payload.get('message')}"
    return f"{kind}: {payload}"


def check(server, apis, n, seed, verbose):
    """Runs n calls per API; returns {api: Counter} of outcomes."""
    stats = defaultdict(Counter)
    for api in apis:
        d = Draw(f"{seed}/{api}")  # per-API streams: filtering APIs never changes another's calls
        for _ in range(n):
            args = draw_call(d, api)
            try:
                expected = frameworks.evaluate(api, args)
            except frameworks.UnclassifiedError as exc:
                stats[api]["unclassified"] += 1
                print(f"UNCLASSIFIED {exc}")
                continue
            actual = server.forward(api, args)
            reason = compare(expected, actual)
            if actual[0] == "unsupported":
                stats[api]["unsupported"] += 1
            elif reason is None:
                stats[api]["match " + expected[0]] += 1
            else:
                stats[api]["MISMATCH"] += 1
                print(f"MISMATCH {frameworks.describe_call(api, args)}: {reason}\n  frameworks: {show(expected)}\n"
                      f"  server:     {show(actual)}")
                if verbose:
                    print("  args: " + json.dumps(args))
    return stats


def draw_grad_output(d, forward):
    """grad_output for a call: random values of the loss's dtype and shape, or None (the
    protocol's default of ones) when the forward call is an error or the loss is not a float."""
    kind, value = forward
    if kind != "value" or value["dtype"] not in frameworks.FLOAT_DTYPES:
        return None
    return d.floats(value["dtype"], value["shape"], -2.0, 2.0, edges=0.0)


def check_backward(server, apis, n, seed, verbose, differentiable):
    """Backward of the same n calls per API as `check`; returns {api: Counter} of outcomes."""
    stats = defaultdict(Counter)
    for api in apis:
        d = Draw(f"{seed}/{api}")  # the same calls as forward mode
        g = Draw(f"{seed}/{api}/grad_output")  # a stream of its own: calls never depend on it
        for _ in range(n):
            args = draw_call(d, api)
            wrt = float_wrt(args, differentiable.get(api, []))
            if not wrt:
                stats[api]["no wrt"] += 1
                continue
            try:
                forward = frameworks.evaluate(api, args)
                grad_output = draw_grad_output(g, forward)
                expected = frameworks.backward(api, args, wrt, grad_output)
            except frameworks.UnclassifiedError as exc:
                stats[api]["unclassified"] += 1
                print(f"UNCLASSIFIED {exc}")
                continue
            actual = server.backward(api, args, wrt, grad_output)
            reason = compare_gradients(expected, actual, forward[1]["dtype"] if forward[0] == "value" else None)
            if actual[0] == "unsupported":
                stats[api]["unsupported"] += 1
            elif reason is None:
                stats[api]["match " + expected[0]] += 1
            else:
                stats[api]["MISMATCH"] += 1
                go = "ones" if grad_output is None else show(("value", grad_output))
                print(f"MISMATCH backward {frameworks.describe_call(api, args)} wrt {wrt}, grad_output {go}: "
                      f"{reason}\n  frameworks: {show(expected)}\n  server:     {show(actual)}")
                if verbose:
                    print("  args: " + json.dumps(args) + "\n  grad_output: " + json.dumps(grad_output))
    return stats


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--command", default=DEFAULT_COMMAND, help=f"server command (default: {DEFAULT_COMMAND})")
    ap.add_argument("--api", action="append", default=[], metavar="PATTERN",
                    help="only APIs matching this glob or substring (repeatable)")
    ap.add_argument("--n", type=int, default=50, help="calls per API (default 50)")
    ap.add_argument("--seed", default="0")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for one response")
    ap.add_argument("--verbose", action="store_true", help="print the full arguments of each mismatch")
    ap.add_argument("--backward", action="store_true",
                    help="check gradients (op backward) of the differentiable arguments instead of losses")
    ap.add_argument("--specs-dir", type=Path, default=SPECS_DIR,
                    help="where --backward reads `differentiable` (default: specs/)")
    ap.add_argument("--serve", action="store_true", help="act as a lossconf/1 server backed by the frameworks")
    ap.add_argument("--perturb", type=float, default=0.0, help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.serve:
        return serve(opts.perturb)

    apis = [a for a in GENERATORS if not opts.api or any(p in a or fnmatch.fnmatch(a, p) for p in opts.api)]
    if not apis:
        raise SystemExit(f"no API matches {opts.api}; known: {', '.join(GENERATORS)}")
    server = Server(opts.command, opts.timeout)
    try:
        server.request({"op": "describe"}, timeout=max(opts.timeout, 900))  # first use may compile
        if opts.backward:
            stats = check_backward(server, apis, opts.n, opts.seed, opts.verbose, load_differentiable(opts.specs_dir))
        else:
            stats = check(server, apis, opts.n, opts.seed, opts.verbose)
    except RuntimeError as exc:
        raise SystemExit(f"error: server `{opts.command}`: {exc}") from None
    finally:
        server.close()

    print()
    for api in apis:
        counts = ", ".join(f"{v} {k}" for k, v in sorted(stats[api].items()))
        print(f"{api}: {counts}")
    total = sum(s["MISMATCH"] + s["unclassified"] for s in stats.values())
    what = "backward calls" if opts.backward else "calls"
    print(f"{'FAILED' if total else 'ok'}: {total} mismatched or unclassified of {len(apis) * opts.n} {what}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
