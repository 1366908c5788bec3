"""Exact values of the accuracy cases, next to what PyTorch and TensorFlow answer.

    /work/venv/bin/python tools/exact.py [--only NAME ...]   # writes accuracy/expected.yaml

For every case of accuracy/cases.yaml this materialises the recipes (tools/recipes.py, the same
bits as src/accuracy.rs), evaluates the loss with PyTorch and with the TensorFlow expression the
case names, and computes the exact value of the loss:

- rational losses (mse, l1, smooth_l1 with a power-of-two beta) exactly, with error-free
  transformations in float64 (TwoSum, Dekker's TwoProduct) and an exact integer superaccumulator:
  the result is a Python Fraction;
- the others (log, exp) with Arb balls (python-flint) at 320 bits, which carry a rigorous error
  bound; distinct (input, target) pairs are evaluated once and weighted by their count.

Each value is then rounded correctly to the output dtype (both ends of the ball must round the
same way, else the tool stops), written as a 60-digit decimal and as a double-double
(`exact_hi + exact_lo`), and each framework's error is given in ULPs of the output dtype:
|actual - exact| / ulp(exact), ulp(x) = 2^(max(floor(log2|x|), emin) - p + 1) (docs/accuracy.md).
Never edit accuracy/expected.yaml by hand.
"""

import argparse
import decimal
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
from fractions import Fraction
from pathlib import Path

os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
os.environ["KERAS_BACKEND"] = "tensorflow"

import numpy as np  # noqa: E402
import yaml  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import recipes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "accuracy" / "cases.yaml"
EXPECTED = ROOT / "accuracy" / "expected.yaml"
CASES_FORMAT = "lossconf-accuracy-cases/1"
EXPECTED_FORMAT = "lossconf-accuracy-expected/1"
PREC_BITS = 320
DIGITS = 60
THREADS = os.cpu_count() or 1
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# p (significand bits) and emin of each output dtype.
FORMATS = {"float32": (24, -126), "float64": (53, -1022)}


class ExactError(Exception):
    """A case this tool cannot evaluate exactly (or a ball too wide to round)."""


# ---------------------------------------------------------------------------------------------
# Exact rational arithmetic on float64 arrays


def two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def split(a):
    c = 134217729.0 * a  # 2^27 + 1
    hi = c - (c - a)
    return hi, a - hi


def two_prod(a, b):
    p = a * b
    ah, al = split(a)
    bh, bl = split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def exact_sum(terms):
    """The exact sum of float64 arrays (each element an exact term), as a Fraction.

    Each term is m * 2^e with a 53-bit integer m, cut into three 18-bit chunks; chunks are summed
    per exponent with float64 bincount, exact because every partial sum stays below 2^53.
    """
    total = Fraction(0)
    for t in terms:
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        t = t[t != 0]
        if t.size == 0:
            continue
        if not np.all(np.isfinite(t)):
            raise ExactError("a non-finite term")
        if t.size >= 2**30:
            raise ExactError("too many terms for the superaccumulator")
        m, e = np.frexp(t)
        big = (m * 2.0**53).astype(np.int64)  # exact: |m| < 1 has 53 bits
        exp = e.astype(np.int64) - 53
        emin = int(exp.min())
        idx = exp - emin
        acc = 0
        mask = (1 << 18) - 1
        for shift in (0, 18, 36):
            chunk = (big >> shift) & mask if shift < 36 else (big >> 36)
            sums = np.bincount(idx, weights=chunk.astype(np.float64))
            for k in np.nonzero(sums)[0]:
                acc += int(sums[k]) << (int(k) + shift)
        total += Fraction(acc) * Fraction(2) ** emin
    return total


def diff_terms(x, y):
    """`x - y == s + e` exactly."""
    return two_sum(x.astype(np.float64), -y.astype(np.float64))


def square_terms(s, e):
    """Terms whose exact sum is `(s + e)^2`."""
    p1, q1 = two_prod(s, s)
    p2, q2 = two_prod(s, e)
    p3, q3 = two_prod(e, e)
    return [p1, q1, 2 * p2, 2 * q2, p3, q3]


def rational_loss(api, args):
    """(sum of pointwise losses as a Fraction, element count) for mse/l1/smooth_l1."""
    x, y = args["input"], args["target"]
    s, e = diff_terms(x, y)
    sign = np.where(s < 0, -1.0, 1.0)
    a_s, a_e = sign * s, sign * e  # |x - y| == a_s + a_e
    if api == "torch.nn.functional.mse_loss":
        return exact_sum(square_terms(s, e)), x.size
    if api == "torch.nn.functional.l1_loss":
        return exact_sum([a_s, a_e]), x.size
    if api == "torch.nn.functional.smooth_l1_loss":
        beta = float(args.get("beta", 1.0))
        if beta <= 0 or math.frexp(beta)[0] != 0.5:
            raise ExactError("smooth_l1_loss: beta must be a power of two here")
        quad = (a_s < beta) | ((a_s == beta) & (a_e < 0))
        sq = square_terms(s[quad], e[quad])
        lin = [a_s[~quad], a_e[~quad], np.full(int((~quad).sum()), -0.5 * beta)]
        return exact_sum([t * (0.5 / beta) for t in sq] + lin), x.size
    raise AssertionError(api)


# ---------------------------------------------------------------------------------------------
# Arb: transcendental losses

from flint import arb, ctx  # noqa: E402

ctx.prec = PREC_BITS


def arb_of(x):
    return arb(float(x))


def clamp_log(v):
    """torch's BCE `max(log(v), -100)`, log(0) = -inf."""
    if v == 0:
        return arb(-100)
    lg = v.log()
    if lg < -100:
        return arb(-100)
    if not lg > -100 and not lg == -100:
        raise ExactError("log too close to -100 to decide the clamp")
    return lg


def pair_counts(a, b):
    """Distinct (a, b) float32 pairs with their counts."""
    if a.dtype != np.float32 or b.dtype != np.float32:
        raise ExactError("pairwise transcendental losses are evaluated for float32 inputs only")
    key = (a.view(np.uint32).astype(np.uint64) << np.uint64(32)) | b.view(np.uint32).astype(np.uint64)
    uniq, counts = np.unique(key.reshape(-1), return_counts=True)
    ua = (uniq >> np.uint64(32)).astype(np.uint32).view(np.float32)
    ub = (uniq & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.float32)
    return ua.tolist(), ub.tolist(), counts.tolist()


def pointwise_arb(api, args):
    """(sum of pointwise losses as an arb, element count, distinct pairs)."""
    x, y = args["input"], args["target"]
    xs, ys, cs = pair_counts(x, y)
    total = arb(0)
    for xv, yv, c in zip(xs, ys, cs):
        xa, ya = arb(xv), arb(yv)
        if api == "torch.nn.functional.binary_cross_entropy_with_logits":
            v = (1 - ya) * xa + (-xa).exp().log1p()
        elif api == "torch.nn.functional.binary_cross_entropy":
            v = -(ya * clamp_log(xa) + (1 - ya) * clamp_log(1 - xa))
        elif api == "torch.nn.functional.kl_div":
            v = arb(0) if yv == 0 else ya * (ya.log() - xa)
        else:
            raise AssertionError(api)
        total += c * v
    return total, x.size, len(cs)


def cross_entropy_arb(args):
    """(sum over rows of logsumexp(row) - row[target], rows)."""
    x, t = args["input"], args["target"]
    if x.ndim != 2:
        raise ExactError("cross_entropy: input must be (N, C) here")
    total = arb(0)
    for row, k in zip(x.tolist(), t.tolist()):
        s = arb(0)
        for v in row:
            s += arb(v).exp()
        total += s.log() - arb(row[k])
    return total, x.shape[0]


def ctc_arb(args, normalise):
    """Per-sequence CTC losses (arbs): -log of the sum of path probabilities, blank 0.

    Probabilities are exp(log_probs) in Arb (no underflow: Arb exponents are unbounded); with
    `normalise`, each time step is divided by its sum first (TensorFlow's implicit log_softmax).
    """
    lp, tg = args["log_probs"], args["targets"]
    il, tl = args["input_lengths"].tolist(), args["target_lengths"].tolist()
    blank = int(args.get("blank", 0))
    T, N, C = lp.shape
    out = []
    for n in range(N):
        probs = []
        for t in range(il[n]):
            row = [arb(v).exp() for v in lp[t, n].tolist()]
            if normalise:
                z = sum(row, arb(0))
                row = [r / z for r in row]
            probs.append(row)
        labels = tg[n, : tl[n]].tolist()
        ext = [blank]
        for lab in labels:
            ext += [lab, blank]
        S = len(ext)
        alpha = [arb(0)] * S
        alpha[0] = probs[0][ext[0]]
        if S > 1:
            alpha[1] = probs[0][ext[1]]
        for t in range(1, il[n]):
            p = probs[t]
            new = [arb(0)] * S
            for s in range(S):
                a = alpha[s]
                if s >= 1:
                    a = a + alpha[s - 1]
                if s >= 2 and ext[s] != blank and ext[s] != ext[s - 2]:
                    a = a + alpha[s - 2]
                new[s] = a * p[ext[s]]
            alpha = new
        total = alpha[S - 1] + (alpha[S - 2] if S > 1 else arb(0))
        out.append(-total.log())
    return out


# ---------------------------------------------------------------------------------------------
# Exact values: (midpoint Fraction, radius Fraction)


def arb_to_fraction(a):
    m, e = a.mid().man_exp()
    mid = Fraction(int(m)) * Fraction(2) ** int(e)
    rm, re_ = a.rad().mid().man_exp() if not a.rad().is_zero() else (0, 0)
    # rad() is an upper bound stored in an arf: its midpoint is the bound itself.
    rad = Fraction(int(rm)) * Fraction(2) ** int(re_)
    return mid, rad


def reduce(total, count, reduction, batch=None):
    """Applies the reduction to a pointwise sum (a Fraction or an arb)."""
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / count
    if reduction == "batchmean":
        return total / batch
    raise ExactError(f"reduction {reduction!r} is not an accuracy reduction")


def exact_value(api, args, options):
    """(mid, rad) Fractions of the exact loss, the element count, and notes."""
    red = options.get("reduction", "mean")
    if api in ("torch.nn.functional.mse_loss", "torch.nn.functional.l1_loss", "torch.nn.functional.smooth_l1_loss"):
        total, n = rational_loss(api, {**args, **options})
        v = reduce(total, n, red)
        return (v, Fraction(0)), n, "exact rational (error-free transformations + integer superaccumulator)"
    if api in (
        "torch.nn.functional.binary_cross_entropy_with_logits",
        "torch.nn.functional.binary_cross_entropy",
        "torch.nn.functional.kl_div",
    ):
        total, n, distinct = pointwise_arb(api, args)
        v = reduce(total, n, red, batch=args["input"].shape[0])
        return arb_to_fraction(v), n, f"Arb {PREC_BITS} bits over {distinct} distinct (input, target) pairs"
    if api == "torch.nn.functional.cross_entropy":
        total, rows = cross_entropy_arb(args)
        v = reduce(total, rows, red)
        return arb_to_fraction(v), args["input"].size, f"Arb {PREC_BITS} bits, row by row"
    if api == "torch.nn.functional.ctc_loss":
        return ctc_exact(args, red, normalise=False), args["log_probs"].size, f"Arb {PREC_BITS} bits, alpha recursion in probability space"
    raise ExactError(f"no exact evaluation for {api}")


def ctc_exact(args, red, normalise):
    losses = ctc_arb(args, normalise)
    tl = args["target_lengths"].tolist()
    if red == "sum":
        v = sum(losses, arb(0))
    elif red == "mean":
        v = sum((l / max(int(k), 1) for l, k in zip(losses, tl)), arb(0)) / len(losses)
    else:
        raise ExactError(f"ctc reduction {red!r}")
    return arb_to_fraction(v)


# ---------------------------------------------------------------------------------------------
# Rounding and ULPs


def floor_log2(q):
    """floor(log2 |q|) of a nonzero Fraction."""
    q = abs(q)
    e = q.numerator.bit_length() - q.denominator.bit_length()
    if Fraction(2) ** e > q:
        e -= 1
    return e


def ulp(q, dtype):
    p, emin = FORMATS[dtype]
    if q == 0:
        return Fraction(2) ** (emin - p + 1)
    return Fraction(2) ** (max(floor_log2(q), emin) - p + 1)


def round_to(q, dtype):
    """The dtype value nearest to the Fraction q (ties to even), as a Python float."""
    np_t = np.float32 if dtype == "float32" else np.float64
    f = np_t(float(q))  # float(Fraction) is correctly rounded to float64; fix the rest below
    best = None
    for cand in (np.nextafter(f, np_t(-np.inf)), f, np.nextafter(f, np_t(np.inf))):
        if not np.isfinite(cand):
            continue
        d = abs(Fraction(float(cand)) - q)
        even = int(np.array(cand).view(np.uint32 if dtype == "float32" else np.uint64)) % 2 == 0
        key = (d, not even)
        if best is None or key < best[0]:
            best = (key, float(cand))
    return best[1]


def round_ball(mid, rad, dtype):
    lo, hi = round_to(mid - rad, dtype), round_to(mid + rad, dtype)
    if lo != hi:
        raise ExactError(f"the exact ball [{float(mid - rad)!r}, {float(mid + rad)!r}] straddles a rounding boundary of {dtype}")
    return lo


def decimal_string(q):
    with decimal.localcontext() as c:
        c.prec = DIGITS
        d = decimal.Decimal(q.numerator) / decimal.Decimal(q.denominator)
        return f"{d:.{DIGITS - 1}e}"


def double_double(q):
    hi = float(q)
    lo = float(q - Fraction(hi))
    return hi, lo


def ulps(actual, exact, dtype):
    """|actual - exact| / ulp(exact), or None for a non-finite answer."""
    if actual is None or not math.isfinite(actual):
        return None
    return float(abs(Fraction(actual) - exact) / ulp(exact, dtype))


# ---------------------------------------------------------------------------------------------
# Frameworks

_torch = None
_tf = None


def torch():
    global _torch
    if _torch is None:
        import torch as t

        t.set_num_threads(THREADS)
        _torch = t
    return _torch


def tf():
    global _tf
    if _tf is None:
        import tensorflow as t

        t.get_logger().setLevel("ERROR")
        t.config.threading.set_intra_op_parallelism_threads(THREADS)
        t.config.threading.set_inter_op_parallelism_threads(THREADS)
        _ = t.keras.losses
        _tf = t
    return _tf


def torch_value(api, args, options):
    t = torch()
    fn = getattr(t.nn.functional, api.removeprefix("torch.nn.functional."))
    kwargs = {k: t.from_numpy(np.ascontiguousarray(v)) for k, v in args.items()}
    kwargs.update(options)
    with t.no_grad():
        out = fn(**kwargs)
    return float(out.item()), str(out.dtype).removeprefix("torch.")


def _keras(name, **kw):
    return lambda a: getattr(tf().keras.losses, name)(**kw)(a["target"], a["input"])


def _ctc(a):
    t = tf()
    return t.nn.ctc_loss(
        labels=t.constant(a["targets"].astype(np.int32)),
        logits=t.constant(a["log_probs"]),
        label_length=t.constant(a["target_lengths"].astype(np.int32)),
        logit_length=t.constant(a["input_lengths"].astype(np.int32)),
        logits_time_major=True,
        blank_index=0,
    )


# The TensorFlow expressions a case may name (`tensorflow:` in accuracy/cases.yaml). Arguments
# are the case's torch arguments under their torch names.
TF_EXPRESSIONS = {
    "tf.keras.losses.MeanSquaredError()(target, input)": _keras("MeanSquaredError"),
    "tf.reduce_sum(tf.math.squared_difference(input, target))": lambda a: tf().reduce_sum(
        tf().math.squared_difference(a["input"], a["target"])
    ),
    "tf.keras.losses.MeanAbsoluteError()(target, input)": _keras("MeanAbsoluteError"),
    "tf.reduce_sum(tf.abs(input - target))": lambda a: tf().reduce_sum(tf().abs(tf().constant(a["input"]) - a["target"])),
    "tf.keras.losses.Huber(delta=1.0)(target, input)": _keras("Huber", delta=1.0),
    "tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=input))": lambda a: tf().reduce_mean(
        tf().nn.sigmoid_cross_entropy_with_logits(labels=a["target"], logits=a["input"])
    ),
    "tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=input))": lambda a: tf().reduce_sum(
        tf().nn.sigmoid_cross_entropy_with_logits(labels=a["target"], logits=a["input"])
    ),
    "tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=input))": lambda a: tf().reduce_mean(
        tf().nn.sparse_softmax_cross_entropy_with_logits(labels=a["target"], logits=a["input"])
    ),
    "tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target, logits=input))": lambda a: tf().reduce_sum(
        tf().nn.sparse_softmax_cross_entropy_with_logits(labels=a["target"], logits=a["input"])
    ),
    "tf.reduce_sum(tf.nn.ctc_loss(targets, logits=log_probs, time major, blank 0))": lambda a: tf().reduce_sum(_ctc(a)),
    "tf.reduce_mean(tf.nn.ctc_loss(targets, logits=log_probs, time major, blank 0) / target_lengths)": lambda a: tf().reduce_mean(
        _ctc(a) / tf().constant(a["target_lengths"].astype(a["log_probs"].dtype))
    ),
}

# Expressions whose math is not the torch API's: TensorFlow's ctc_loss applies log_softmax to its
# `logits`, so its exact value is computed with each time step normalised.
TF_NORMALISES = {k for k in TF_EXPRESSIONS if "ctc_loss" in k}


def tf_value(expr, args):
    out = TF_EXPRESSIONS[expr](args)
    return float(np.asarray(out.numpy())), out.dtype.name


# ---------------------------------------------------------------------------------------------
# Driver


def load_cases(path=CASES):
    with open(path) as f:
        doc = yaml.load(f, Loader=Loader)
    if not isinstance(doc, dict) or doc.get("format") != CASES_FORMAT:
        raise ExactError(f"{path}: expected `format: {CASES_FORMAT}`")
    names = set()
    for c in doc["cases"]:
        extra = set(c) - {"name", "api", "why", "args", "tensorflow"}
        if extra or not {"name", "api", "why", "args"} <= set(c):
            raise ExactError(f"{path}: case {c.get('name')!r}: fields {sorted(c)}")
        if c["name"] in names:
            raise ExactError(f"{path}: duplicate case {c['name']}")
        names.add(c["name"])
        if c.get("tensorflow") is not None and c["tensorflow"] not in TF_EXPRESSIONS:
            raise ExactError(f"{path}: case {c['name']}: unknown tensorflow expression {c['tensorflow']!r}")
    return doc["cases"]


def split_args(case):
    """(tensors materialised from recipes, other options) of a case."""
    tensors, options, offsets = {}, {}, []
    for k, v in case["args"].items():
        if isinstance(v, dict) and "recipe" in v:
            (offsets if v["recipe"] == "offset" else []).append(k)
            if v["recipe"] != "offset":
                tensors[k] = recipes.materialise(v, tensors, f"{case['name']}.args.{k}")
        else:
            options[k] = v
    for k in offsets:
        tensors[k] = recipes.materialise(case["args"][k], tensors, f"{case['name']}.args.{k}")
    return tensors, options


def evaluate_case(case):
    started = time.perf_counter()
    tensors, options = split_args(case)
    made = time.perf_counter()
    (mid, rad), elements, method = exact_value(case["api"], tensors, options)
    exact_s = time.perf_counter() - made
    tv, tdtype = torch_value(case["api"], tensors, options)
    dtype = tdtype
    if dtype not in FORMATS:
        raise ExactError(f"{case['name']}: output dtype {dtype}")
    rounded = round_ball(mid, rad, dtype)
    if rad > ulp(mid, dtype) * Fraction(1, 2**40):
        raise ExactError(f"{case['name']}: the exact ball is too wide")
    hi, lo = double_double(mid)
    entry = {
        "api": case["api"],
        "options": options,
        "inputs": {k: recipes.digest(v) for k, v in sorted(tensors.items())},
        "elements": int(elements),
        "dtype": dtype,
        "exact": decimal_string(mid),
        "exact_hi": hi,
        "exact_lo": lo,
        "exact_rounded": rounded,
        "method": method,
        "torch": {"value": tv, "ulps": ulps(tv, mid, dtype)},
        "tensorflow": None,
    }
    expr = case.get("tensorflow")
    if expr:
        fv, fdtype = tf_value(expr, tensors)
        t_exact = mid
        block = {"expr": expr, "value": fv}
        if expr in TF_NORMALISES:
            t_exact, _ = ctc_exact(tensors, options.get("reduction", "mean"), normalise=True)
            block["exact"] = decimal_string(t_exact)
            block["note"] = "tf.nn.ctc_loss applies log_softmax to its logits: ULPs against the exact value of that math"
        block["ulps"] = ulps(fv, t_exact, fdtype) if fdtype == dtype else None
        if fdtype != dtype:
            block["note"] = f"answers {fdtype}"
        entry["tensorflow"] = block
    seconds = time.perf_counter() - started
    print(
        f"{case['name']:<40} {elements:>9} exact {float(mid):.9g}  torch {entry['torch']['ulps']!s:.8} ulps"
        f"  tf {(entry['tensorflow'] or {}).get('ulps')!s:.8}  ({exact_s:.1f} s exact, {seconds:.1f} s total)",
        flush=True,
    )
    return entry


def versions():
    out = {"python": platform.python_version()}
    for key, dist in (
        ("numpy", "numpy"),
        ("torch", "torch"),
        ("tensorflow", "tensorflow-cpu"),
        ("keras", "keras"),
        ("python-flint", "python-flint"),
    ):
        try:
            out[key] = importlib.metadata.version(dist).split("+")[0]
        except importlib.metadata.PackageNotFoundError:
            out[key] = None
    return out


def fmt_float(x):
    return "null" if x is None else repr(float(x)) if math.isfinite(x) else json.dumps(str(x))


def dump(entries):
    """YAML, one field a line, floats in shortest round-trip form."""
    lines = [
        "# Written by tools/exact.py: exact values of accuracy/cases.yaml and the frameworks' answers. Do not edit.",
        f"format: {EXPECTED_FORMAT}",
        f"versions: {json.dumps(versions())}",
        f"settings: {json.dumps({'torch_threads': THREADS, 'tf_threads': THREADS, 'TF_ENABLE_ONEDNN_OPTS': '0', 'arb_prec_bits': PREC_BITS, 'device': 'cpu'})}",
        "cases:",
    ]
    for name, e in entries.items():
        lines.append(f"  {name}:")
        for k in ("api", "options", "inputs", "elements", "dtype", "exact"):
            lines.append(f"    {k}: {json.dumps(e[k])}")
        for k in ("exact_hi", "exact_lo", "exact_rounded"):
            lines.append(f"    {k}: {fmt_float(e[k])}")
        lines.append(f"    method: {json.dumps(e['method'])}")
        t = e["torch"]
        lines.append(f"    torch: {{value: {fmt_float(t['value'])}, ulps: {fmt_float(t['ulps'])}}}")
        tf_ = e["tensorflow"]
        if tf_ is None:
            lines.append("    tensorflow: null")
        else:
            lines.append("    tensorflow:")
            lines.append(f"      expr: {json.dumps(tf_['expr'])}")
            lines.append(f"      value: {fmt_float(tf_['value'])}")
            lines.append(f"      ulps: {fmt_float(tf_['ulps'])}")
            for k in ("exact", "note"):
                if k in tf_:
                    lines.append(f"      {k}: {json.dumps(tf_[k])}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="recompute only these cases (others are kept)")
    ap.add_argument("--out", type=Path, default=EXPECTED)
    opts = ap.parse_args(argv)
    started = time.perf_counter()
    cases = load_cases()
    old = {}
    if opts.only and opts.out.exists():
        with open(opts.out) as f:
            old = (yaml.load(f, Loader=Loader) or {}).get("cases") or {}
    entries = {}
    for case in cases:
        if opts.only and case["name"] not in opts.only and case["name"] in old:
            entries[case["name"]] = old[case["name"]]
            continue
        entries[case["name"]] = evaluate_case(case)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(dump(entries))
    print(f"{len(entries)} cases in {time.perf_counter() - started:.1f} s -> {opts.out}")


if __name__ == "__main__":
    main()
