"""Compute expected values for cases/ by running the real frameworks.

    python tools/reference.py [--all] [--family NAME ...] [--cases-dir cases]

For each `cases/<family>.yaml` (written by `lossconf generate`) this writes
`cases/<family>.expected.yaml` and, for the cases with a `wrt` list whose forward value is not an
error, `cases/<family>.gradients.yaml` (format: docs/case-format.md). Entries whose case digest is
unchanged are reused, so regenerating after a small spec edit only runs the changed cases; `--all`
recomputes everything. Expected values must come from the pinned frameworks in
tools/requirements.txt, so a version mismatch refuses to write (unless --allow-version-mismatch,
which records the versions actually used).
"""

import argparse
import importlib.metadata
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import frameworks  # noqa: E402

CASES_FORMAT = "lossconf-cases/1"
EXPECTED_FORMAT = "lossconf-expected/1"
GRADIENTS_FORMAT = "lossconf-gradients/1"
GRADIENTS_COMMENT = "# Recorded by tools/reference.py with torch autograd / tf.GradientTape. Do not edit.\n"
REQUIREMENTS = Path(__file__).with_name("requirements.txt")

# Recorded in every expected file: key -> distribution that provides it.
RECORDED_VERSIONS = {"numpy": "numpy", "torch": "torch", "tensorflow": "tensorflow-cpu", "keras": "keras"}

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
BaseDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class CaseFileError(Exception):
    """A case or expected file that does not have the documented shape."""


# ---------------------------------------------------------------------------------------------
# Versions


def public_version(version):
    """`2.15.0+cu132` -> `2.15.0`: pip's `==2.15.0` accepts any local build label too."""
    return version.split("+", 1)[0]


def installed_version(dist):
    try:
        return public_version(importlib.metadata.version(dist))
    except importlib.metadata.PackageNotFoundError:
        return None


def pinned_versions(path=REQUIREMENTS):
    """`{distribution: version}` for every `name==version` line of requirements.txt."""
    pins = {}
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+).*", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def version_mismatches():
    """Human lines for each pinned distribution whose installed version differs."""
    out = []
    for dist, want in pinned_versions().items():
        have = installed_version(dist)
        if have != want:
            out.append(f"{dist}: pinned {want}, installed {have or 'none'}")
    return out


def recorded_versions():
    """The `versions` map of an expected file, read from installed metadata (no imports)."""
    versions = {"python": platform.python_version()}
    for key, dist in RECORDED_VERSIONS.items():
        versions[key] = installed_version(dist) or installed_version(key) or "none"
    return versions


# ---------------------------------------------------------------------------------------------
# Reading


def load_yaml(path):
    """A case or expected file. Both put one entry per line in JSON flow style after a short YAML
    header, so the body is read with `json` (fast, and YAML 1.2 numbers such as `1e-5` stay
    numbers, which PyYAML's 1.1 resolver would read as strings); anything else goes to PyYAML."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line in ("cases:", "expected:"):
            head = yaml.load("\n".join(lines[:i]), Loader=Loader) or {}
            body = [l for l in lines[i + 1:] if l.strip()]
            try:
                if line == "cases:":
                    head["cases"] = [json.loads(l[2:]) for l in body if l.startswith("- {")] \
                        if all(l.startswith("- {") for l in body) else None
                else:
                    head["expected"] = dict(_entry_line(l) for l in body)
            except (ValueError, TypeError):
                break
            if head.get("cases", head.get("expected")) is not None:
                return head
            break
    return yaml.load(text, Loader=Loader)


def _entry_line(line):
    """`  "name": {...}` -> (name, entry)."""
    if not line.startswith('  "'):
        raise ValueError(line)
    name, end = json.JSONDecoder().raw_decode(line, 2)
    if not line.startswith(": ", end):
        raise ValueError(line)
    return name, json.loads(line[end + 2:])


def load_cases(path):
    """The `cases` list of a case file, checked enough that a bad file names itself."""
    doc = load_yaml(path)
    family = path.name.removesuffix(".yaml")
    if not isinstance(doc, dict) or doc.get("format") != CASES_FORMAT:
        raise CaseFileError(f"{path}: `format` must be {CASES_FORMAT}")
    if doc.get("family") != family:
        raise CaseFileError(f"{path}: `family` is {doc.get('family')!r}, the file name says {family!r}")
    cases, seen = doc.get("cases") or [], set()
    for i, case in enumerate(cases):
        missing = [k for k in ("name", "api", "digest") if not isinstance(case.get(k), str)]
        if missing or not isinstance(case.get("args", {}), dict):
            raise CaseFileError(f"{path}: case {i} ({case.get('name')}): needs string {missing} and a map `args`")
        wrt = case.get("wrt", [])
        if not isinstance(wrt, list) or not all(isinstance(n, str) and n in (case.get("args") or {}) for n in wrt):
            raise CaseFileError(f"{path}: case {case['name']}: `wrt` must list argument names of the case, got {wrt!r}")
        if case["name"] in seen:
            raise CaseFileError(f"{path}: case name {case['name']} appears twice")
        seen.add(case["name"])
    return cases


def load_reusable(path, versions, fmt=EXPECTED_FORMAT):
    """Entries of an existing expected (or gradients) file that may be reused: only if made with
    these versions and settings, since a reused value is stamped with the versions of the new file."""
    if not path.exists():
        return {}
    doc = load_yaml(path)
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        return {}
    if doc.get("versions") != versions or doc.get("settings") != frameworks.SETTINGS:
        return {}
    return doc.get("expected") or {}


# ---------------------------------------------------------------------------------------------
# Writing


class Flow(dict):
    """A mapping written on one line: tensors, errors, versions."""


class Dumper(BaseDumper):
    """Deterministic YAML that PyYAML and Rust's serde_yaml both read back to the same values."""


def represent_flow(dumper, data):
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)


def represent_str(dumper, data):
    # "nan" and "1e5" are plain strings to PyYAML but numbers to other readers: quote them.
    quote = data in frameworks.NONFINITE or frameworks.EXPONENT_FLOAT.fullmatch(data)
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"' if quote else None)


Dumper.add_representer(Flow, represent_flow)
Dumper.add_representer(str, represent_str)


def entry(case, outcome):
    """One expected entry: digest, framework, then value or error."""
    kind, payload = outcome
    e = {"digest": case["digest"], "framework": frameworks.framework_of(case["api"])}
    e[kind] = Flow(payload)
    return e


def dump_expected(family, versions, entries, fmt=EXPECTED_FORMAT):
    """A short YAML header, then one entry per line in JSON flow style (valid YAML): fast to read
    on both sides, and a diff shows exactly which expectations changed."""
    head = {
        "format": fmt,
        "family": family,
        "versions": Flow(versions),
        "settings": Flow(frameworks.SETTINGS),
    }
    text = yaml.dump(head, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=1 << 30,
                     default_flow_style=False)
    lines = [f"  {json.dumps(name)}: {json.dumps(e, allow_nan=False, ensure_ascii=False)}"
             for name, e in entries.items()]
    return text + "expected:\n" + "".join(line + "\n" for line in lines)


def dump_gradients(family, versions, entries):
    """The gradients file: the expected file's layout under its own format, entries by name."""
    body = dump_expected(family, versions, dict(sorted(entries.items())), GRADIENTS_FORMAT)
    return GRADIENTS_COMMENT + body


def write_if_changed(path, text):
    """Writes atomically, and not at all when the bytes are the same (keeps mtimes quiet)."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Running


def run_family(path, versions, recompute_all, gradient_counts=None):
    """Computes one family's expected and gradients files; returns (computed, reused, errors) of
    the forward values. `gradient_counts`, a list of three, gets the same counts of gradients."""
    family = path.name.removesuffix(".yaml")
    cases = load_cases(path)
    old = {} if recompute_all else load_reusable(path.with_name(f"{family}.expected.yaml"), versions)
    entries, computed, reused, errors = {}, 0, 0, 0
    outcomes = {}
    for case in cases:
        prev = old.get(case["name"])
        if prev is not None and prev.get("digest") == case["digest"] and ("value" in prev) != ("error" in prev):
            kind = "value" if "value" in prev else "error"
            outcome = (kind, prev[kind])
            reused += 1
        else:
            try:
                outcome = frameworks.evaluate(case["api"], case.get("args") or {})
            except (frameworks.UnclassifiedError, frameworks.UnknownApi) as exc:
                raise SystemExit(f"error: {path}: case {case['name']}: {exc}") from None
            computed += 1
        errors += outcome[0] == "error"
        entries[case["name"]] = entry(case, outcome)
        outcomes[case["name"]] = outcome
    write_if_changed(path.with_name(f"{family}.expected.yaml"), dump_expected(family, versions, entries))
    counts = run_gradients(path, versions, recompute_all, cases, outcomes)
    if gradient_counts is not None:
        gradient_counts[:] = counts
    return computed, reused, errors


def gradient_entry(case, grad_output, outcome):
    """One gradients entry: digest, framework, grad_output, then value ({name: tensor}) or error."""
    kind, payload = outcome
    e = {"digest": case["digest"], "framework": frameworks.framework_of(case["api"]),
         "grad_output": Flow(grad_output)}
    e[kind] = Flow({k: Flow(v) for k, v in payload.items()}) if kind == "value" else Flow(payload)
    return e


def reusable_gradient(prev, case, grad_output):
    """The outcome of an old gradients entry if it still answers this case, else None.

    Same digest (same call) and same grad_output (same forward shape and dtype); a value must hold
    exactly the `wrt` names. An error does not say which `wrt` it was recorded for, so errors are
    always recomputed (a `differentiable` edit in a spec changes `wrt` but not the digest).
    """
    if prev is None or prev.get("digest") != case["digest"] or prev.get("grad_output") != grad_output:
        return None
    value = prev.get("value")
    if "error" in prev or not isinstance(value, dict) or list(value) != case["wrt"]:
        return None
    return "value", value


def run_gradients(path, versions, recompute_all, cases, outcomes):
    """Writes `<family>.gradients.yaml` for the cases with a `wrt` list and a forward value
    (removes it when there are none); returns (computed, reused, errors)."""
    family = path.name.removesuffix(".yaml")
    grad_path = path.with_name(f"{family}.gradients.yaml")
    todo = [c for c in cases if c.get("wrt") and outcomes[c["name"]][0] == "value"]
    if not todo:
        if grad_path.exists():
            grad_path.unlink()
        return 0, 0, 0
    old = {} if recompute_all else load_reusable(grad_path, versions, GRADIENTS_FORMAT)
    entries, computed, reused, errors = {}, 0, 0, 0
    for case in todo:
        forward = outcomes[case["name"]][1]
        grad_output = frameworks.pattern_tensor(forward["dtype"], forward["shape"])
        outcome = reusable_gradient(old.get(case["name"]), case, grad_output)
        if outcome is not None:
            reused += 1
        else:
            try:
                outcome = frameworks.backward(case["api"], case.get("args") or {}, case["wrt"], grad_output)
            except (frameworks.UnclassifiedError, frameworks.UnknownApi, frameworks.InvalidRequest,
                    frameworks.GradientMismatch) as exc:
                raise SystemExit(f"error: {path}: case {case['name']}: {type(exc).__name__}: {exc}") from None
            computed += 1
        errors += outcome[0] == "error"
        entries[case["name"]] = gradient_entry(case, grad_output, outcome)
    write_if_changed(grad_path, dump_gradients(family, versions, entries))
    return computed, reused, errors


def case_files(cases_dir, families):
    """`cases/<family>.yaml` files in name order, restricted to `families` when given."""
    files = sorted(p for p in cases_dir.glob("*.yaml")
                   if not p.name.endswith((".expected.yaml", ".gradients.yaml")))
    if families:
        by_name = {p.name.removesuffix(".yaml"): p for p in files}
        unknown = sorted(set(families) - set(by_name))
        if unknown:
            raise SystemExit(f"error: no case file for {', '.join(unknown)} in {cases_dir}")
        files = [by_name[f] for f in sorted(set(families))]
    if not files:
        raise SystemExit(f"error: no case files in {cases_dir} (run `cargo run --release -- generate` first)")
    return files


def pin_hash_seed():
    """Re-runs this process with PYTHONHASHSEED=0 unless it already has it.

    Framework messages print Python sets (Keras: "Expected one of {'sum', 'none', ...}") whose
    order follows string hashes, which Python randomizes per process; a fixed seed keeps the
    expected files byte-identical from run to run.
    """
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--all", action="store_true", help="recompute every case, not only new or changed ones")
    ap.add_argument("--family", nargs="+", default=[], metavar="NAME", help="only these families")
    ap.add_argument("--cases-dir", type=Path, default=Path("cases"))
    ap.add_argument("--allow-version-mismatch", action="store_true",
                    help="write even if installed frameworks differ from tools/requirements.txt")
    opts = ap.parse_args(argv)

    mismatches = version_mismatches()
    if mismatches and not opts.allow_version_mismatch:
        raise SystemExit("error: installed versions differ from tools/requirements.txt; expected values "
                         "must come from the pins (or pass --allow-version-mismatch):\n  " + "\n  ".join(mismatches))
    versions = recorded_versions()
    files = case_files(opts.cases_dir, opts.family)
    totals, grad_totals, start = [0, 0, 0], [0, 0, 0], time.perf_counter()
    for path in files:
        # Family times leave out framework imports (paid once, by whichever family needs them).
        t0, imports0 = time.perf_counter(), frameworks.import_seconds
        grads = [0, 0, 0]
        try:
            counts = run_family(path, versions, opts.all, grads)
        except CaseFileError as exc:
            raise SystemExit(f"error: {exc}") from None
        totals = [a + b for a, b in zip(totals, counts)]
        grad_totals = [a + b for a, b in zip(grad_totals, grads)]
        seconds = time.perf_counter() - t0 - (frameworks.import_seconds - imports0)
        print(f"{path.name.removesuffix('.yaml')}: {counts[0]} computed, {counts[1]} reused, "
              f"{counts[2]} errors; gradients {grads[0]} computed, {grads[1]} reused, {grads[2]} errors; "
              f"{seconds:.2f} s", flush=True)
    print(f"total: {len(files)} families, {totals[0]} computed, {totals[1]} reused, {totals[2]} errors; "
          f"gradients {grad_totals[0]} computed, {grad_totals[1]} reused, {grad_totals[2]} errors; "
          f"{time.perf_counter() - start:.2f} s (framework imports {frameworks.import_seconds:.1f} s)")


if __name__ == "__main__":
    pin_hash_seed()
    main()
