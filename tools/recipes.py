"""Recipes of accuracy/cases.yaml -> numpy arrays, bit-identical to src/accuracy.rs.

A tensor argument of an accuracy case is a recipe, not data (docs/accuracy.md). Every draw is
`splitmix64(seed * 2^32 + i)` in wrapping uint64 arithmetic, and values are made with correctly
rounded IEEE operations only (float64 `+ - *`, then one rounding to the dtype), so numpy and Rust
produce the very same bits. `digest` is the order-sensitive hash both sides record.
"""

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MUL1 = np.uint64(0xBF58476D1CE4E5B9)
MUL2 = np.uint64(0x94D049BB133111EB)
FLOAT_DTYPES = ("float32", "float64")
INT_DTYPES = ("int64", "int32")


class RecipeError(Exception):
    """A recipe that does not have the documented shape."""


def mix(z):
    """The splitmix64 finaliser of a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * MUL1
        z = (z ^ (z >> np.uint64(27))) * MUL2
        return z ^ (z >> np.uint64(31))


def draws(seed, n):
    """`splitmix64(seed * 2^32 + i)` for i in 0..n, as uint64."""
    if not (isinstance(seed, int) and 0 <= seed < 2**32):
        raise RecipeError(f"seed must be an integer in [0, 2^32), got {seed!r}")
    if n >= 2**32:
        raise RecipeError("at most 2^32 elements")
    with np.errstate(over="ignore"):
        x = (np.uint64(seed) << np.uint64(32)) + np.arange(n, dtype=np.uint64)
        return mix(x + GOLDEN)


def num(v, what):
    """A float field: a YAML number (or a decimal string PyYAML 1.1 left as a string)."""
    if isinstance(v, bool):
        raise RecipeError(f"{what}: expected a number, got {v!r}")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    raise RecipeError(f"{what}: expected a number, got {v!r}")


def as_dtype(values_f64, dtype):
    if dtype in FLOAT_DTYPES:
        return values_f64.astype(dtype)
    raise RecipeError(f"dtype {dtype!r}: expected one of {FLOAT_DTYPES}")


FIELDS = {
    "uniform": {"seed", "dtype", "shape", "low", "high"},
    "grid": {"seed", "dtype", "shape", "start", "step", "count"},
    "choice": {"seed", "dtype", "shape", "values"},
    "integers": {"seed", "dtype", "shape", "low", "high"},
    "full": {"dtype", "shape", "value"},
    "offset": {"of", "plus"},
}


def materialise(recipe, done, where):
    """The array of one recipe; `done` holds the arguments already made (for `offset`)."""
    kind = recipe.get("recipe")
    if kind not in FIELDS:
        raise RecipeError(f"{where}: unknown recipe {kind!r}: expected one of {sorted(FIELDS)}")
    extra = set(recipe) - FIELDS[kind] - {"recipe"}
    missing = FIELDS[kind] - set(recipe)
    if extra or missing:
        raise RecipeError(f"{where}: recipe {kind}: unknown fields {sorted(extra)}, missing {sorted(missing)}")
    if kind == "offset":
        base = done.get(recipe["of"])
        if base is None:
            raise RecipeError(f"{where}: offset of {recipe['of']!r}, which is not an earlier argument")
        plus = materialise(recipe["plus"], done, f"{where}.plus")
        if plus.dtype != np.float64 or plus.shape != base.shape:
            raise RecipeError(f"{where}: `plus` must be a float64 recipe of the same shape")
        return (base.astype(np.float64) + plus).astype(base.dtype)
    shape = [int(d) for d in recipe["shape"]]
    n = int(np.prod(shape, dtype=np.int64))
    dtype = recipe["dtype"]
    if kind == "full":
        if dtype in INT_DTYPES:
            return np.full(shape, int(recipe["value"]), dtype=dtype)
        return as_dtype(np.full(shape, num(recipe["value"], f"{where}.value")), dtype)
    r = draws(recipe["seed"], n)
    if kind == "uniform":
        low, high = num(recipe["low"], f"{where}.low"), num(recipe["high"], f"{where}.high")
        u = (r >> np.uint64(11)).astype(np.float64) * 2.0**-53  # exact: 53-bit integer times 2^-53
        x = np.float64(low) + np.float64(high - low) * u  # each op correctly rounded in float64
        return as_dtype(x, dtype).reshape(shape)
    if kind == "grid":
        start, step = num(recipe["start"], f"{where}.start"), num(recipe["step"], f"{where}.step")
        k = (r % np.uint64(int(recipe["count"]))).astype(np.float64)
        return as_dtype(np.float64(start) + np.float64(step) * k, dtype).reshape(shape)
    if kind == "choice":
        values = np.array([num(v, f"{where}.values") for v in recipe["values"]], dtype=np.float64)
        if dtype in FLOAT_DTYPES and not np.array_equal(values.astype(dtype).astype(np.float64), values):
            raise RecipeError(f"{where}: every value must be exact in {dtype}")
        k = (r % np.uint64(len(values))).astype(np.int64)
        return as_dtype(values[k], dtype).reshape(shape)
    if kind == "integers":
        low, high = int(recipe["low"]), int(recipe["high"])
        if dtype not in INT_DTYPES or high <= low:
            raise RecipeError(f"{where}: integers need an integer dtype and low < high")
        k = (r % np.uint64(high - low)).astype(np.int64) + low
        return k.astype(dtype).reshape(shape)
    raise AssertionError(kind)


def digest(arr):
    """Order-sensitive hash of a materialised tensor, as 16 hex digits.

    `sum_i mix(bits_i + mix(i + golden))` mod 2^64, where `bits_i` is the float64 bit pattern of
    a float element (its exact value) or the two's complement of an integer element.
    """
    flat = arr.reshape(-1)
    if flat.dtype.kind == "f":
        bits = flat.astype(np.float64).view(np.uint64)
    else:
        bits = flat.astype(np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        pos = mix(np.arange(flat.size, dtype=np.uint64) + GOLDEN)
        h = mix(bits + pos)
        total = int(np.sum(h, dtype=np.uint64))
    return f"{total & 0xFFFFFFFFFFFFFFFF:016x}"
