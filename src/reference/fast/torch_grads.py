#!/usr/bin/env python3
"""Writes torch_grads.json next to this file: small calls of the APIs with fast paths, with
PyTorch's forward values and autograd gradients (torch.autograd.grad), the source of truth for
the fast kernels' backward (`cargo test --lib fast::`).

    /work/venv/bin/python src/reference/fast/torch_grads.py
"""

import json
import math
import os

import torch
import torch.nn.functional as F

g = torch.Generator().manual_seed(1234)


def enc(t):
    if t.dtype in (torch.int64, torch.int32):
        data = t.reshape(-1).tolist()
    else:
        data = []
        for v in t.reshape(-1).tolist():
            if math.isnan(v):
                data.append("nan")
            elif math.isinf(v):
                data.append("inf" if v > 0 else "-inf")
            else:
                data.append(v)
    name = str(t.dtype).replace("torch.", "")
    return {"dtype": name, "shape": list(t.shape), "data": data}


cases = []


def add(api, tensors, options, wrt, fn):
    """tensors: name -> tensor (float ones may be differentiated); fn(**all) -> loss."""
    req = {k: (v.clone().requires_grad_(True) if k in wrt else v) for k, v in tensors.items()}
    out = fn(**req, **options)
    if out.dim() == 0:
        go = None
        grads = torch.autograd.grad(out, [req[k] for k in wrt])
    else:
        go = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
        grads = torch.autograd.grad(out, [req[k] for k in wrt], go)
    args = {k: enc(v) for k, v in tensors.items()}
    args.update(options)
    cases.append(
        {
            "api": "torch.nn.functional." + api,
            "args": args,
            "wrt": list(wrt),
            "grad_output": None if go is None else enc(go),
            "output": enc(out.detach()),
            "grads": {k: enc(gr) for k, gr in zip(wrt, grads)},
        }
    )


for dt in (torch.float32, torch.float64):
    for red in ("none", "mean", "sum"):
        x = torch.randn(3, 5, generator=g, dtype=dt)
        t = torch.randn(3, 5, generator=g, dtype=dt)
        t[0, :2] = x[0, :2]  # l1 at d == 0
        t[1, 0] = x[1, 0] - 1.0  # smooth_l1 at |d| == beta
        t[1, 1] = x[1, 1] + 0.5  # ... and beta 0.5
        for api in ("mse_loss", "l1_loss"):
            add(api, {"input": x, "target": t}, {"reduction": red}, ["input", "target"], getattr(F, api))
        for beta in (1.0, 0.5, 2.0):
            add("smooth_l1_loss", {"input": x, "target": t}, {"reduction": red, "beta": beta},
                ["input", "target"], F.smooth_l1_loss)
        z = torch.randn(4, 6, generator=g, dtype=dt) * 8
        z[0, 0], z[0, 1] = 60.0, -60.0
        p = torch.rand(4, 6, generator=g, dtype=dt)
        p[1, :3] = torch.tensor([0.0, 1.0, 0.5], dtype=dt)
        add("binary_cross_entropy_with_logits", {"input": z, "target": p}, {"reduction": red},
            ["input", "target"], F.binary_cross_entropy_with_logits)
        q = torch.rand(4, 6, generator=g, dtype=dt) * 0.98 + 0.01
        q[0, 0] = 0.0
        q[0, 1] = 1.0
        add("binary_cross_entropy", {"input": q, "target": p}, {"reduction": red}, ["input"],
            F.binary_cross_entropy)
        # kl_div
        lp = torch.randn(3, 4, generator=g, dtype=dt).log_softmax(1)
        tp = torch.rand(3, 4, generator=g, dtype=dt)
        tp[0, 0] = 0.0
        for kred in (red, "batchmean") if red == "mean" else (red,):
            add("kl_div", {"input": lp, "target": tp}, {"reduction": kred}, ["input"], F.kl_div)
            add("kl_div", {"input": lp, "target": tp.clamp_min(1e-3).log()}, {"reduction": kred, "log_target": True},
                ["input"], F.kl_div)
        # cross_entropy with class targets
        logits = torch.randn(6, 7, generator=g, dtype=dt) * 3
        logits[0, 2] = 40.0  # one dominant class, the target
        logits[1, :] = 0.5  # all equal
        tgt = torch.randint(0, 7, (6,), generator=g)
        tgt[0] = 2
        tgt[3] = -100
        for ls in (0.0, 0.1):
            add("cross_entropy", {"input": logits, "target": tgt}, {"reduction": red, "label_smoothing": ls},
                ["input"], F.cross_entropy)
        tgt2 = tgt.clone()
        tgt2[3] = 4
        add("cross_entropy", {"input": logits, "target": tgt2}, {"reduction": red, "ignore_index": 4},
            ["input"], F.cross_entropy)
        # ctc_loss
        T, N, C = 9, 3, 5
        lps = torch.randn(T, N, C, generator=g, dtype=dt).log_softmax(2)
        targets = torch.tensor([[1, 2, 2, 0], [3, 1, 4, 4], [2, 0, 0, 0]])
        il = [9, 7, 5]
        tl = [3, 4, 1]
        add("ctc_loss", {"log_probs": lps, "targets": targets},
            {"input_lengths": il, "target_lengths": tl, "reduction": red}, ["log_probs"],
            lambda log_probs, targets, **o: F.ctc_loss(log_probs, targets, **o))
        flat = torch.tensor([1, 2, 2, 3, 1, 4, 4, 2])
        add("ctc_loss", {"log_probs": lps, "targets": flat},
            {"input_lengths": il, "target_lengths": [3, 4, 1], "reduction": red, "blank": 0}, ["log_probs"],
            lambda log_probs, targets, **o: F.ctc_loss(log_probs, targets, **o))
        add("ctc_loss", {"log_probs": lps, "targets": targets},
            {"input_lengths": [9, 9, 9], "target_lengths": [2, 0, 1], "reduction": red, "blank": 4}, ["log_probs"],
            lambda log_probs, targets, **o: F.ctc_loss(log_probs, targets, **o))

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_grads.json")
with open(path, "w") as f:
    f.write("[\n" + ",\n".join(json.dumps(c) for c in cases) + "\n]\n")
print(f"{len(cases)} cases -> {path} (torch {torch.__version__})")
