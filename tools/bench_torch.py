#!/usr/bin/env python3
"""Times PyTorch (CPU) on the workloads of `lossconf bench`, for its `--torch` ratio table.

    tools/bench_torch.py --threads 2 --repeat 5 > torch.json
    target/release/lossconf bench --threads 2 --torch torch.json

Same workloads as src/bench.rs (names, shapes, dtypes, distributions, reductions): forward is
the loss call; forward_backward is the loss call plus `loss.backward()` with respect to the
same argument the reference differentiates (`input`, or `log_probs` for ctc_loss), inputs
created with `requires_grad=True` outside the timed region. Each measurement: one warm-up run,
then `--repeat` timed runs; min and median in seconds. Output: JSON on stdout.

PyTorch's allocator backs large tensors with transparent huge pages only when the environment
has THP_MEM_ALLOC_ENABLE=1 (the reference always advises them for its large buffers); run it
both ways to see both comparisons (docs/benchmarks.md):

    THP_MEM_ALLOC_ENABLE=1 tools/bench_torch.py --threads 2 > torch-thp.json
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

NAMES = [
    "cross_entropy",
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "binary_cross_entropy_with_logits",
    "kl_div",
    "ctc_loss",
]


def workload(name, shrink, gen):
    """(inputs dict, the differentiated argument's name, the call) for one workload."""
    s = max(1, shrink)
    if name == "cross_entropy":
        n, c = 8192 // s, 32000
        x = torch.randn(n, c, generator=gen)
        t = torch.randint(0, c, (n,), generator=gen)
        return {"input": x}, lambda a: F.cross_entropy(a["input"], t)
    if name in ("mse_loss", "l1_loss", "smooth_l1_loss", "binary_cross_entropy_with_logits"):
        n = (1 << 24) // s
        x = torch.randn(n, generator=gen)
        if name == "binary_cross_entropy_with_logits":
            t = torch.rand(n, generator=gen)
        else:
            t = torch.randn(n, generator=gen)
        fn = getattr(F, name)
        return {"input": x}, lambda a: fn(a["input"], t)
    if name == "kl_div":
        n, c = 4096 // s, 4096
        x = torch.randn(n, c, generator=gen).log_softmax(1)
        t = torch.rand(n, c, generator=gen)
        return {"input": x}, lambda a: F.kl_div(a["input"], t, reduction="batchmean")
    if name == "ctc_loss":
        T, N, C, S = 200, max(1, 32 // s), 50, 40
        lp = torch.randn(T, N, C, generator=gen).log_softmax(2)
        tg = torch.randint(1, C, (N, S), generator=gen)
        il = torch.full((N,), T, dtype=torch.long)
        tl = torch.full((N,), S, dtype=torch.long)
        return {"input": lp}, lambda a: F.ctc_loss(a["input"], tg, il, tl)
    raise ValueError(name)


def timed(repeat, fn):
    fn()  # warm-up
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"min": times[0], "median": statistics.median_low(times)}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--shrink", type=int, default=1)
    ap.add_argument("--only", action="append", default=[])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    out = []
    for name in NAMES:
        if args.only and not any(o in name for o in args.only):
            continue
        inputs, call = workload(name, args.shrink, gen)

        def forward():
            with torch.no_grad():
                call(inputs)

        grad_inputs = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}

        def forward_backward():
            for v in grad_inputs.values():
                v.grad = None
            call(grad_inputs).backward()

        out.append(
            {
                "name": name,
                "forward": timed(args.repeat, forward),
                "forward_backward": timed(args.repeat, forward_backward),
            }
        )
        print(f"{name}: {out[-1]}", file=sys.stderr)
        del inputs, grad_inputs
    json.dump(
        {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "repeat": args.repeat,
            "shrink": args.shrink,
            "cpu": cpu_model(),
            # PyTorch's CPU allocator advises huge pages only with this set (c10 alloc_cpu).
            "thp_mem_alloc_enable": os.environ.get("THP_MEM_ALLOC_ENABLE"),
            "workloads": out,
        },
        sys.stdout,
        indent=2,
    )
    print()


if __name__ == "__main__":
    main()
