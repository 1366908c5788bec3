#!/usr/bin/env python3
"""A `lossconf/1` backend serving the real PyTorch and TensorFlow/Keras (docs/protocol.md).

    lossconf run --command ".venv/bin/python adapters/python/serve.py"

runs every case through the live frameworks: with the pinned versions of tools/requirements.txt it
must pass with zero failures, which proves the committed expected values are what the frameworks
compute. It reuses tools/frameworks.py, the same evaluation and error classification that
tools/reference.py records expectations with, so the two can never drift apart.

One request per line on stdin, one response per line on stdout, in order; stderr is free.
`backward` answers `{"ok": {name: gradient}}` from torch autograd / tf.GradientTape
(`frameworks.backward`, the same code that records cases/*.gradients.yaml).
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))

import frameworks  # noqa: E402  (path set above)

TORCH = [
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "cosine_embedding_loss", "cross_entropy",
    "ctc_loss", "gaussian_nll_loss", "hinge_embedding_loss", "huber_loss", "kl_div", "l1_loss",
    "linear_cross_entropy", "margin_ranking_loss", "mse_loss", "multi_margin_loss", "multilabel_margin_loss",
    "multilabel_soft_margin_loss", "nll_loss", "poisson_nll_loss", "smooth_l1_loss", "soft_margin_loss",
    "triplet_margin_loss", "triplet_margin_with_distance_loss",
]
TF_NN = [
    "ctc_loss", "l2_loss", "log_poisson_loss", "sigmoid_cross_entropy_with_logits",
    "softmax_cross_entropy_with_logits", "sparse_softmax_cross_entropy_with_logits",
    "weighted_cross_entropy_with_logits",
]
KERAS = [
    "BinaryCrossentropy", "BinaryFocalCrossentropy", "CTC", "CategoricalCrossentropy",
    "CategoricalFocalCrossentropy", "CategoricalGeneralizedCrossEntropy", "CategoricalHinge", "Circle",
    "CosineSimilarity", "Dice", "Hinge", "Huber", "KLDivergence", "LogCosh", "MeanAbsoluteError",
    "MeanAbsolutePercentageError", "MeanSquaredError", "MeanSquaredLogarithmicError", "Poisson",
    "SparseCategoricalCrossentropy", "SquaredHinge", "Tversky",
]
APIS = sorted(
    [f"torch.nn.functional.{n}" for n in TORCH] + [f"tf.nn.{n}" for n in TF_NN] + [f"tf.keras.losses.{n}" for n in KERAS]
)


def respond(line):
    try:
        req = json.loads(line)
    except json.JSONDecodeError as exc:
        return {"id": None, "error": {"kind": "protocol", "message": f"not JSON: {exc}"}}
    if not isinstance(req, dict) or not isinstance(req.get("id"), (int, str)):
        return {"id": None, "error": {"kind": "protocol", "message": "a request is an object with an id"}}
    rid, op = req["id"], req.get("op")
    if op == "describe":
        return {"id": rid, "ok": {"backend": "frameworks", "protocol": "lossconf/1", "version": "torch+tensorflow",
                                  "ops": ["describe", "forward", "backward"], "apis": APIS}}
    if op not in ("forward", "backward") or not isinstance(req.get("api"), str):
        return {"id": rid, "error": {"kind": "protocol", "message": "op must be describe, forward or backward (with api)"}}
    if op == "backward" and not isinstance(req.get("wrt"), list):
        return {"id": rid, "error": {"kind": "protocol", "message": "backward needs wrt, a list of argument names"}}
    try:
        if op == "forward":
            kind, payload = frameworks.evaluate(req["api"], req.get("args") or {})
        else:
            kind, payload = frameworks.backward(req["api"], req.get("args") or {}, req["wrt"], req.get("grad_output"))
    except frameworks.UnknownApi as exc:
        return {"id": rid, "unsupported": str(exc)}
    except frameworks.InvalidRequest as exc:  # wrt or grad_output that do not fit the call
        return {"id": rid, "error": {"kind": "protocol", "message": str(exc)}}
    except frameworks.UnclassifiedError as exc:
        # The framework raised, but no rule says which kind: never a silent match.
        return {"id": rid, "error": {"kind": "backend", "message": f"unclassified framework error: {exc}"}}
    except Exception as exc:  # a bug in argument conversion: this call fails, the server goes on
        return {"id": rid, "error": {"kind": "backend", "message": f"{type(exc).__name__}: {exc}"}}
    if kind == "value":
        return {"id": rid, "ok": payload}
    return {"id": rid, "error": {"kind": payload["kind"], "message": f"{payload['type']}: {payload['message']}"}}


def main():
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(respond(line)), flush=True)


if __name__ == "__main__":
    main()
