"""Tests of tools/ against the real frameworks: `python tools/test_tools.py`.

Every error rule is provoked by a real call, so a framework upgrade that rewords a message fails
here (naming the rule) instead of silently changing an expected error kind.
"""

import importlib.util
import json
import math
import os
import sys
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import check_serve  # noqa: E402
import frameworks  # noqa: E402
import reference  # noqa: E402
from frameworks import evaluate  # noqa: E402


def t(dtype, data, shape=None):
    """A lossconf/1 tensor from nested-free data; shape defaults to 1-D."""
    return {"dtype": dtype, "shape": [len(data)] if shape is None else shape, "data": data}


F32 = lambda data, shape=None: t("float32", data, shape)  # noqa: E731
I64 = lambda data, shape=None: t("int64", data, shape)  # noqa: E731

TF = "torch.nn.functional."
K = "tf.keras.losses."
row = F32([1.0, 2.0], [1, 2])
SCORES = F32([0.1, 0.2, 0.4, 0.8], [1, 4])
# uniform (T=3, N=2, C=3) CTC inputs with padded targets [[1, 2], [1]]
CTC = {"log_probs": F32([-1.0986122886681098] * 18, [3, 2, 3]), "targets": I64([1, 2, 1, 0], [2, 2]),
       "input_lengths": I64([3, 3]), "target_lengths": I64([2, 1])}
CTC_TF = {"labels": t("int32", [1, 2, 1, 0], [2, 2]), "logits": F32([0.0] * 18, [3, 2, 3]),
          "label_length": t("int32", [2, 1]), "logit_length": t("int32", [3, 3])}
# linear_cross_entropy: one sample, in_features 2, C = 3
LCE = {"input": row, "linear_weight": F32([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [3, 2]), "target": I64([1])}

# rule id -> a real call that must raise an error matched first by that rule
PROVOKE = {
    "torch_reduction": (TF + "mse_loss", {"input": F32([1.0]), "target": F32([1.0]), "reduction": "mean_sum"}),
    "torch_reduction_mode": (TF + "huber_loss", {"input": F32([1.0]), "target": F32([0.0]), "weight": F32([1.0]),
                                                 "reduction": "avg"}),
    "torch_reduction_not_valid": (TF + "multilabel_soft_margin_loss", {"input": row, "target": row, "reduction": "avg"}),
    "keras_reduction": (K + "MeanAbsoluteError", {"reduction": "mean_sum", "y_true": F32([1.0]), "y_pred": F32([1.0])}),
    "unexpected_keyword": (TF + "mse_loss", {"input": F32([1.0]), "target": F32([1.0]), "foo": 1}),
    "torch_label_smoothing": (TF + "cross_entropy", {"input": row, "target": I64([1]), "label_smoothing": 1.5}),
    "torch_nonpositive_option": (TF + "huber_loss", {"input": F32([1.0]), "target": F32([0.0]), "delta": -1.0}),
    "tf_reduce_scalar": (K + "MeanAbsoluteError", {"y_true": F32([1.0], []), "y_pred": F32([1.0], [])}),
    "keras_axis_range": (K + "CategoricalCrossentropy", {"axis": 3, "y_true": row, "y_pred": row}),
    "tf_axis_range": ("tf.nn.softmax_cross_entropy_with_logits", {"labels": row, "logits": row, "axis": 3}),
    "torch_arg_type": (TF + "cross_entropy", {"input": row, "target": I64([1]), "ignore_index": 1.5}),
    "not_a_tensor": (TF + "mse_loss", {"input": 3.0, "target": F32([1.0])}),
    "torch_target_index": (TF + "cross_entropy", {"input": row, "target": I64([5])}),
    "tf_label_value": ("tf.nn.sparse_softmax_cross_entropy_with_logits", {"labels": I64([-1]), "logits": row}),
    "torch_bce_range": (TF + "binary_cross_entropy", {"input": F32([1.5]), "target": F32([1.0])}),
    "torch_negative_var": (TF + "gaussian_nll_loss", {"input": F32([1.0]), "target": F32([1.0]), "var": F32([-1.0])}),
    "torch_scalar_type": (TF + "nll_loss", {"input": row, "target": I64([1]), "weight": t("float64", [1.0, 2.0])}),
    "torch_not_implemented": (TF + "mse_loss", {"input": I64([1]), "target": I64([1])}),
    "torch_target_dtype": (TF + "cross_entropy", {"input": row, "target": t("int32", [1])}),
    "torch_found_dtype": (TF + "binary_cross_entropy", {"input": F32([0.5]), "target": I64([1])}),
    "torch_result_cast": (TF + "binary_cross_entropy_with_logits", {"input": F32([0.5]), "target": I64([1])}),
    "torch_infer_dtype": (TF + "l1_loss", {"input": I64([1]), "target": I64([1])}),
    "torch_bool_sub": (TF + "l1_loss", {"input": t("bool", [1]), "target": t("bool", [0])}),
    "torch_probs_float": (TF + "cross_entropy", {"input": F32([1.0], []), "target": I64([1], [])}),
    "tf_attr_dtype": ("tf.nn.sparse_softmax_cross_entropy_with_logits", {"labels": t("uint8", [1]), "logits": row}),
    "tf_input_dtype": ("tf.nn.sigmoid_cross_entropy_with_logits", {"labels": t("float64", [1.0]), "logits": F32([1.0])}),
    "torch_broadcast": (TF + "mse_loss", {"input": F32([1.0, 2.0, 3.0]), "target": F32([1.0, 2.0])}),
    "torch_broadcast_weight": (TF + "binary_cross_entropy", {"input": F32([0.5, 0.2]), "target": F32([1.0, 0.0]), "weight": F32([1.0, 2.0, 3.0])}),
    "torch_batch_size": (TF + "cross_entropy", {"input": row, "target": I64([1, 0])}),
    "torch_target_size": (TF + "binary_cross_entropy_with_logits", {"input": F32([0.5, 0.2]), "target": F32([1.0])}),
    "torch_multi_target": (TF + "cross_entropy", {"input": row, "target": F32([1.0, 2.0, 3.0], [1, 3])}),
    "torch_target_size_nd": (TF + "nll_loss", {"input": F32([0.0] * 8, [1, 2, 4]), "target": I64([0, 0, 0], [1, 3])}),
    "torch_spatial_target": (TF + "nll_loss", {"input": F32([1.0, 2.0], [1, 1, 1, 2]), "target": I64([1], [1, 1])}),
    "torch_min_dims": (TF + "nll_loss", {"input": F32([1.0], []), "target": I64([1], [])}),
    "torch_weight_size": (TF + "huber_loss", {"input": F32([1.0, 2.0]), "target": F32([0.0, 0.0]), "weight": F32([1.0])}),
    "torch_class_weight": (TF + "cross_entropy", {"input": row, "target": I64([1]), "weight": F32([1.0, 2.0, 3.0])}),
    "tf_incompatible": (K + "MeanAbsoluteError", {"y_true": F32([1.0, 2.0, 3.0]), "y_pred": F32([1.0, 2.0])}),
    "same_shape": ("tf.nn.sigmoid_cross_entropy_with_logits", {"labels": F32([1.0, 0.0, 1.0]), "logits": F32([1.0, 2.0])}),
    "tf_broadcastable": ("tf.nn.softmax_cross_entropy_with_logits", {"labels": F32([1.0, 0.0, 1.0], [1, 3]), "logits": row}),
    "tf_sparse_labels_shape": ("tf.nn.sparse_softmax_cross_entropy_with_logits", {"labels": I64([1, 0]), "logits": row}),
    "tf_scalar_logits": ("tf.nn.sparse_softmax_cross_entropy_with_logits", {"labels": I64([1], []), "logits": F32([1.0], [])}),
    "tf_reshape_size": (K + "SparseCategoricalCrossentropy", {"ignore_class": 1, "y_true": I64([0, 1, 0, 1], [2, 2]),
                                                              "y_pred": F32([0.0] * 6, [2, 3])}),
    "keras_rank": (K + "SparseCategoricalCrossentropy", {"y_true": I64([0, 1, 0, 1], [2, 2]), "y_pred": F32([0.0] * 6, [2, 3])}),
    "tf_slice_scalar": ("tf.nn.softmax_cross_entropy_with_logits", {"labels": F32([1.0], []), "logits": F32([1.0], [])}),
    "keras_same_rank": (K + "BinaryCrossentropy", {"y_true": F32([1.0, 0.0]), "y_pred": F32([0.5, 0.2, 0.3, 0.9], [2, 2])}),
    "tf_at_least_one_class": ("tf.nn.sparse_softmax_cross_entropy_with_logits", {"labels": I64([0, 0]), "logits": F32([], [2, 0])}),
    "keras_axis_type": (K + "CategoricalCrossentropy", {"axis": True, "y_true": row, "y_pred": row}),
    "keras_dtype_policy": (K + "MeanSquaredError", {"dtype": "int7", "y_true": row, "y_pred": row}),
    "torch_ignore_index_prob": (TF + "cross_entropy", {"input": F32([1.0, 2.0, 3.0], [1, 3]), "target": F32([1.0, 0.0, 0.0], [1, 3]),
                                                       "ignore_index": 0}),
    "keras_axis_unsupported": (K + "SparseCategoricalCrossentropy", {"axis": 0, "y_true": I64([1]), "y_pred": row}),
    "torch_overload_types": (TF + "gaussian_nll_loss", {"input": F32([0.0, 1.0]), "target": F32([0.0, 0.0]), "var": 2}),
    "tf_convert_none": ("tf.nn.ctc_loss", {**CTC_TF, "label_length": None}),
    "torch_p_supported": (TF + "multi_margin_loss", {"input": SCORES, "target": I64([3]), "p": 3}),
    "torch_margin_positive": (TF + "triplet_margin_loss", {"anchor": row, "positive": row, "negative": row, "margin": 0.0}),
    "torch_ctc_blank": (TF + "ctc_loss", {**CTC, "blank": 3}),
    "torch_ignore_index_probs": (TF + "linear_cross_entropy", {**LCE, "target": F32([0.2, 0.3, 0.5], [1, 3]),
                                                                "ignore_index": -100}),
    "torch_target_arg_range": (TF + "multilabel_margin_loss", {"input": SCORES, "target": I64([7, -1, 0, 0], [1, 4])}),
    "torch_target_range": (TF + "multi_margin_loss", {"input": SCORES, "target": I64([4])}),
    "torch_ctc_length_value": (TF + "ctc_loss", {**CTC, "input_lengths": I64([4, 3])}),
    "torch_kl_div_integral": (TF + "kl_div", {"input": F32([0.1, 0.2]), "target": I64([1, 0])}),
    "torch_lengths_integral": (TF + "ctc_loss", {**CTC, "input_lengths": F32([3.0, 3.0])}),
    "torch_matmul_dtype": (TF + "linear_cross_entropy", {**LCE, "linear_weight": t("float64", [0.5] * 6, [3, 2])}),
    "torch_mat_dtype": (TF + "linear_cross_entropy", {**LCE, "input": I64([1, 2], [1, 2]), "linear_bias": F32([0.0] * 3)}),
    "torch_output_broadcast": (TF + "soft_margin_loss", {"input": F32([1.0]), "target": F32([1.0, -1.0])}),
    "torch_1d_target_size": (TF + "cross_entropy", {"input": F32([0.5, 0.2, 0.3]), "target": I64([0, 1])}),
    "torch_nonempty_matrix": (TF + "multilabel_margin_loss", {"input": F32([0.0] * 8, [2, 2, 2]), "target": I64([0] * 8, [2, 2, 2])}),
    "torch_inconsistent_target_size": (TF + "multilabel_margin_loss", {"input": SCORES, "target": I64([1, -1, 0], [1, 3])}),
    "torch_inconsistent_weight_size": (TF + "multi_margin_loss", {"input": SCORES, "target": I64([3]), "weight": F32([1.0] * 3)}),
    "torch_weight_1d": (TF + "multi_margin_loss", {"input": SCORES, "target": I64([3]), "weight": F32([1.0] * 4, [1, 4])}),
    "torch_multi_margin_target": (TF + "multi_margin_loss", {"input": SCORES, "target": I64([3, 3])}),
    "torch_var_size": (TF + "gaussian_nll_loss", {"input": F32([0.0] * 6, [2, 3]), "target": F32([0.0] * 6, [2, 3]),
                                                  "var": F32([1.0, 1.0], [1, 2])}),
    "torch_same_dimension": (TF + "margin_ranking_loss", {"input1": F32([1.0, 2.0]), "input2": F32([2.0, 1.0]),
                                                          "target": F32([1.0], [])}),
    "torch_triplet_dims": (TF + "triplet_margin_loss", {"anchor": F32([1.0, 2.0]), "positive": row, "negative": row}),
    "torch_cosine_dims": (TF + "cosine_embedding_loss", {"input1": F32([1.0, 2.0]), "input2": F32([2.0, 1.0]),
                                                         "target": F32([1.0])}),
    "torch_ctc_lengths_size": (TF + "ctc_loss", {**CTC, "input_lengths": I64([3, 3, 3])}),
    "torch_ctc_empty": (TF + "ctc_loss", {**CTC, "log_probs": F32([], [0, 2, 3]), "input_lengths": I64([0, 0])}),
    "torch_checked_size": (TF + "ctc_loss", {**CTC, "target_lengths": I64([3, 1])}),
    "torch_checked_dim": (TF + "ctc_loss", {**CTC, "log_probs": F32([-1.0] * 18, [3, 2, 3, 1])}),
    "torch_lce_input_dim": (TF + "linear_cross_entropy", {**LCE, "input": F32([0.0] * 12, [2, 3, 2])}),
    "torch_lce_weight_dim": (TF + "linear_cross_entropy", {**LCE, "linear_weight": F32([1.0, 2.0])}),
    "torch_lce_in_features": (TF + "linear_cross_entropy", {**LCE, "linear_weight": F32([0.0] * 9, [3, 3])}),
    "torch_lce_bias_shape": (TF + "linear_cross_entropy", {**LCE, "linear_bias": F32([0.0, 0.0])}),
    "torch_lce_kdim_batched": (TF + "linear_cross_entropy", {**LCE, "input": F32([0.5, -1.0]),
                                                              "linear_weight": F32([0.0] * 12, [3, 2, 2]), "target": I64([1, 0])}),
    "tf_empty_max": (K + "CategoricalHinge", {"y_true": F32([], [0, 4]), "y_pred": F32([], [0, 4])}),
    "tf_empty_scatter": (K + "CTC", {"y_true": t("int32", [], [0, 2]), "y_pred": F32([], [0, 3, 3])}),
    "keras_ctc_rank": (K + "CTC", {"y_true": t("int32", [1, 2]), "y_pred": F32([0.0] * 18, [2, 3, 3])}),
    "tf_shape_index": ("tf.nn.ctc_loss", {**CTC_TF, "labels": t("int32", [1, 2])}),
}

# rule id -> (api, args, wrt): a real backward call whose error that rule matches first
BACKWARD_PROVOKE = {
    "torch_not_differentiable": (TF + "soft_margin_loss", {"input": F32([0.5]), "target": F32([1.0])}, ["target"]),
}


def backward_exception(api, args, wrt, grad_output=None):
    """(outcome, the framework exception frameworks.backward classified, or None)."""
    seen, classify = [], frameworks.framework_error

    def spy(api, args, exc, what=""):
        seen.append(exc)
        return classify(api, args, exc, what)

    with mock.patch.object(frameworks, "framework_error", spy):
        outcome = frameworks.backward(api, args, wrt, grad_output)
    return outcome, (seen[0] if seen else None)


class Rules(unittest.TestCase):
    def test_every_rule_is_provoked_by_a_real_call(self):
        rule_ids = [r.id for r in frameworks.RULES]
        self.assertEqual(len(rule_ids), len(set(rule_ids)), "rule ids must be unique")
        self.assertEqual(sorted(rule_ids), sorted([*PROVOKE, *BACKWARD_PROVOKE]), "each rule needs exactly one provocation")
        kinds = {r.id: r.kind for r in frameworks.RULES}
        for rule_id, (api, args) in PROVOKE.items():
            with self.subTest(rule=rule_id):
                try:
                    frameworks.call(api, args)
                except Exception as exc:  # noqa: BLE001
                    self.assertEqual(frameworks.matching_rule(exc), rule_id, f"{type(exc).__name__}: {exc}")
                    outcome, err = evaluate(api, args)
                    self.assertEqual((outcome, err["kind"]), ("error", kinds[rule_id]))
                else:
                    self.fail(f"{api} did not raise")
        for rule_id, (api, args, wrt) in BACKWARD_PROVOKE.items():
            with self.subTest(rule=rule_id):
                (outcome, err), exc = backward_exception(api, args, wrt)
                self.assertIsNotNone(exc, f"backward of {api} wrt {wrt} did not raise")
                self.assertEqual(frameworks.matching_rule(exc), rule_id, f"{type(exc).__name__}: {exc}")
                self.assertEqual((outcome, err["kind"]), ("error", kinds[rule_id]))

    def test_unknown_error_stops_with_the_call_named(self):
        class Strange(Exception):
            pass

        self.assertIsNone(frameworks.classify(Strange("something new")))

    def test_unknown_api_is_not_an_error_outcome(self):
        with self.assertRaises(frameworks.UnknownApi):
            evaluate("torch.nn.functional.no_such_loss", {})
        with self.assertRaises(frameworks.UnknownApi):
            evaluate("jax.nn.l1", {})


class Values(unittest.TestCase):
    def test_torch_value_is_exact_float32(self):
        kind, v = evaluate(TF + "mse_loss", {"input": F32([1.0, 1.0, 1.0, 1.0], [2, 2]),
                                             "target": F32([0.0, 1.0, 2.0, 3.0], [2, 2])})
        self.assertEqual((kind, v), ("value", {"dtype": "float32", "shape": [], "data": [1.5]}))

    def test_float32_result_is_the_exact_float64_of_the_float32(self):
        _, v = evaluate(TF + "l1_loss", {"input": F32([0.1]), "target": F32([0.0]), "reduction": "none"})
        self.assertEqual(v["data"], [0.10000000149011612])

    def test_nonfinite_in_and_out(self):
        _, v = evaluate(TF + "l1_loss", {"input": F32(["nan", "inf", 1.0]), "target": F32([0.0, 0.0, "-inf"]),
                                         "reduction": "none"})
        self.assertEqual(v, {"dtype": "float32", "shape": [3], "data": ["nan", "inf", "inf"]})

    def test_bfloat16_on_both_frameworks(self):
        x = t("bfloat16", [1.0, 2.0], [1, 2])
        _, v = evaluate(TF + "cross_entropy", {"input": x, "target": I64([1])})
        self.assertEqual(v["dtype"], "bfloat16")
        self.assertTrue(math.isclose(v["data"][0], 0.3125))
        _, v = evaluate("tf.nn.softmax_cross_entropy_with_logits", {"labels": t("bfloat16", [0.0, 1.0], [1, 2]), "logits": x})
        self.assertEqual((v["dtype"], v["shape"], v["data"]), ("bfloat16", [1], [0.3125]))

    def test_keras_constructor_and_call_arguments_share_the_map(self):
        args = {"delta": 0.5, "reduction": "sum", "y_true": F32([0.0, 0.0], [2, 1]),
                "y_pred": F32([1.0, 0.25], [2, 1]), "sample_weight": F32([1.0, 2.0])}
        kind, v = evaluate(K + "Huber", args)
        # per sample: 0.5*1 - 0.5*0.5^2 = 0.375 (linear part), 0.5*0.25^2 = 0.03125; weighted sum
        self.assertEqual((kind, v), ("value", {"dtype": "float32", "shape": [], "data": [0.4375]}))

    def test_yaml_1_1_exponent_strings_are_floats(self):
        _, v = evaluate(TF + "smooth_l1_loss", {"input": F32([1.0]), "target": F32(["1e-5"]), "beta": "1e-5"})
        self.assertEqual(v["dtype"], "float32")

    def test_integer_and_bool_results(self):
        self.assertEqual(frameworks.from_result("bool", __import__("numpy").array([True, False])),
                         {"dtype": "bool", "shape": [2], "data": [1, 0]})


class Backward(unittest.TestCase):
    # x - y = [0.5, 2, -1, 0]: with N = 4 and g = 0.5, 2 (x - y) g / N = (x - y) / 4, exact in float32
    X, Y, G = [1.0, 2.0, 3.0, 4.0], [0.5, 0.0, 4.0, 4.0], 0.5
    WANT = [0.125, 0.5, -0.25, 0.0]

    def test_torch_mse_gradient_is_2_diff_g_over_n(self):
        kind, grads = frameworks.backward(TF + "mse_loss", {"input": F32(self.X), "target": F32(self.Y)},
                                          ["input", "target"], F32([self.G], []))
        self.assertEqual(kind, "value")
        self.assertEqual(list(grads), ["input", "target"])
        self.assertEqual(grads["input"], F32(self.WANT))
        self.assertEqual(grads["target"], F32([-v for v in self.WANT]))

    def test_tf_mse_gradient_is_2_diff_g_over_n(self):
        for dtype in ("float32", "float64"):
            kind, grads = frameworks.backward(K + "MeanSquaredError", {"y_true": t(dtype, self.Y), "y_pred": t(dtype, self.X)},
                                              ["y_pred", "y_true"], F32([self.G], []))  # Keras computes in float32
            self.assertEqual((kind, list(grads)), ("value", ["y_pred", "y_true"]))
            self.assertEqual(grads["y_pred"], t(dtype, self.WANT), "gradient in the argument's dtype")
            self.assertEqual(grads["y_true"], t(dtype, [-v for v in self.WANT]))

    def test_grad_output_defaults_to_ones(self):
        args = {"input": F32(self.X), "target": F32(self.Y), "reduction": "none"}
        _, grads = frameworks.backward(TF + "mse_loss", args, ["input"])
        self.assertEqual(grads["input"]["data"], [1.0, 4.0, -2.0, 0.0])
        _, grads = frameworks.backward(TF + "mse_loss", args, ["input"], frameworks.pattern_tensor("float32", [4]))
        self.assertEqual(grads["input"]["data"], [0.5, -4.0, -4.0, 0.0])

    def test_pattern_grad_output(self):
        self.assertEqual(frameworks.pattern_tensor("float64", []), t("float64", [0.5], []))
        p = frameworks.pattern_tensor("float16", [3, 3])
        self.assertEqual((p["shape"], p["data"]), ([3, 3], [0.5, -1.0, 2.0, -0.25, 1.5, 0.75, -2.0, 0.5, -1.0]))
        np, torch = __import__("numpy"), frameworks.torch()
        for x in frameworks.PATTERN:  # exact in every float dtype
            self.assertEqual(float(np.float16(x)), x)
            self.assertEqual(torch.tensor(x, dtype=torch.bfloat16).item(), x)

    def test_bfloat16_gradients_keep_their_dtype(self):
        x = t("bfloat16", [1.0, 2.0], [1, 2])
        for api, args, wrt in ((TF + "cross_entropy", {"input": x, "target": I64([1])}, ["input"]),
                               ("tf.nn.softmax_cross_entropy_with_logits", {"labels": t("bfloat16", [0.0, 1.0], [1, 2]),
                                                                            "logits": x}, ["logits"])):
            kind, grads = frameworks.backward(api, args, wrt)
            self.assertEqual((kind, grads[wrt[0]]["dtype"], grads[wrt[0]]["shape"]), ("value", "bfloat16", [1, 2]))

    def test_unconnected_argument_has_zero_gradient(self):
        # Keras casts a float y_true of sparse labels to int: nothing flows back to it
        kind, grads = frameworks.backward(K + "SparseCategoricalCrossentropy", {"y_true": F32([1.0]), "y_pred": row},
                                          ["y_pred", "y_true"])
        self.assertEqual((kind, grads["y_true"]), ("value", F32([0.0])))

    def test_errors_are_classified(self):
        (kind, err), exc = backward_exception(TF + "soft_margin_loss", {"input": F32([0.5]), "target": F32([1.0])},
                                              ["target"])
        self.assertEqual((kind, err["kind"], err["type"]), ("error", "argument", "RuntimeError"))
        self.assertIn("not differentiable with respect to argument 'target'", err["message"])
        # a call that fails forward fails backward with the same error
        args = {"input": F32([1.0, 2.0, 3.0]), "target": F32([1.0, 2.0])}
        self.assertEqual(frameworks.backward(TF + "mse_loss", args, ["input"]), evaluate(TF + "mse_loss", args))

    def test_requests_that_do_not_fit_the_call_raise(self):
        args = {"input": F32([1.0]), "target": F32([1.0]), "reduction": "sum"}
        for wrt in (["reduction"], ["input", "input"], ["nope"], "input"):
            with self.assertRaises(frameworks.InvalidRequest):
                frameworks.backward(TF + "mse_loss", args, wrt)
        with self.assertRaises(frameworks.InvalidRequest):
            frameworks.backward(TF + "mse_loss", args, ["input"], F32([1.0]))  # the loss is 0-d
        with self.assertRaises(frameworks.InvalidRequest):
            frameworks.backward(TF + "mse_loss", args, ["input"], t("float64", [1.0], []))

    def test_python_adapter_answers_backward(self):
        spec = importlib.util.spec_from_file_location(
            "serve_adapter", Path(__file__).resolve().parent.parent / "adapters" / "python" / "serve.py")
        serve = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(serve)
        self.assertIn("backward", serve.respond('{"id":1,"op":"describe"}')["ok"]["ops"])
        req = {"id": 2, "op": "backward", "api": TF + "mse_loss", "wrt": ["input"],
               "args": {"input": F32(self.X), "target": F32(self.Y)}, "grad_output": F32([self.G], [])}
        self.assertEqual(serve.respond(json.dumps(req)), {"id": 2, "ok": {"input": F32(self.WANT)}})
        del req["grad_output"]
        self.assertEqual(serve.respond(json.dumps(req))["ok"]["input"]["data"], [0.25, 1.0, -0.5, 0.0])
        req["wrt"] = ["target", "bogus"]
        self.assertEqual(serve.respond(json.dumps(req))["error"]["kind"], "protocol")


class ExpectedFile(unittest.TestCase):
    def test_round_trips_exact_values_one_json_entry_per_line(self):
        value = {"dtype": "float64", "shape": [5], "data": [0.1, 1e-05, 1e20, -0.0, "nan"]}
        error = {"kind": "value", "type": "ValueError", "message": "bad: {'x'} \"q\" inf"}
        entries = {"f/a": {"digest": "0123456789abcdef", "framework": "torch", "value": reference.Flow(value)},
                   "f/b": {"digest": "1234567890123456", "framework": "tensorflow", "error": reference.Flow(error)}}
        text = reference.dump_expected("f", {"python": "3.11.7", "numpy": "2.4.6"}, entries)
        body = text.split("expected:\n", 1)[1].splitlines()
        self.assertEqual(len(body), 2, "one line per entry")
        self.assertIn('"data": [0.1, 1e-05, 1e+20, -0.0, "nan"]', body[0])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "f.expected.yaml"
            path.write_text(text)
            back = reference.load_yaml(path)
        self.assertEqual(back["family"], "f")
        self.assertEqual(back["expected"]["f/a"]["value"]["data"][:4], [0.1, 1e-05, 1e20, -0.0])
        self.assertEqual(back["expected"]["f/a"]["value"]["data"][4], "nan")
        self.assertEqual(back["expected"]["f/b"]["error"], error)
        self.assertEqual(back["expected"]["f/b"]["digest"], "1234567890123456")
        self.assertEqual(list(back["expected"]), ["f/a", "f/b"], "entries keep case order")
        # still a YAML document (other readers may use a YAML parser), with the same error entry
        self.assertEqual(yaml.safe_load(text)["expected"]["f/b"]["error"], error)
        self.assertEqual(text, reference.dump_expected("f", {"python": "3.11.7", "numpy": "2.4.6"}, entries))

    def test_reuses_unchanged_entries_and_drops_vanished_ones(self):
        case = lambda name, digest, x: {"name": name, "api": TF + "l1_loss", "digest": digest,  # noqa: E731
                                        "args": {"input": F32([x]), "target": F32([0.0])}}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "fam.yaml"

            def write(cases):
                path.write_text(yaml.safe_dump({"format": "lossconf-cases/1", "family": "fam",
                                                "spec_digest": "0", "cases": cases}))

            versions = reference.recorded_versions()
            write([case("fam/a", "aa", 1.0), case("fam/b", "bb", 2.0)])
            self.assertEqual(reference.run_family(path, versions, False), (2, 0, 0))
            write([case("fam/a", "aa", 1.0), case("fam/c", "cc", 3.0)])
            self.assertEqual(reference.run_family(path, versions, False), (1, 1, 0))
            written = yaml.safe_load((Path(tmp) / "fam.expected.yaml").read_text())
            self.assertEqual(list(written["expected"]), ["fam/a", "fam/c"])
            self.assertEqual(written["expected"]["fam/c"]["value"]["data"], [3.0])

    def test_writes_gradients_for_cases_with_wrt_and_a_forward_value(self):
        def case(name, digest, x, wrt=("input", "target"), target=0.0):
            c = {"name": name, "api": TF + "mse_loss", "digest": digest,
                 "args": {"input": F32([x, 2.0 * x]), "target": F32([target] if target is None else [target, target])}}
            if target is None:  # shapes that do not broadcast: a forward error
                c["args"]["target"] = F32([0.0, 0.0, 0.0])
            if wrt:
                c["wrt"] = list(wrt)
            return c

        with tempfile.TemporaryDirectory() as tmp:
            path, grad_path = Path(tmp) / "fam.yaml", Path(tmp) / "fam.gradients.yaml"

            def write(cases):
                path.write_text("format: lossconf-cases/1\nfamily: fam\nspec_digest: '0'\ncases:\n"
                                + "".join("- " + json.dumps(c) + "\n" for c in cases))

            versions = reference.recorded_versions()
            cases = [case("fam/z", "zz", 1.0), case("fam/a", "aa", 2.0, wrt=("input",)),
                     case("fam/none", "nn", 3.0, wrt=()), case("fam/err", "ee", 1.0, target=None)]
            write(cases)
            counts = [0, 0, 0]
            self.assertEqual(reference.run_family(path, versions, False, counts), (4, 0, 1))
            self.assertEqual(counts, [2, 0, 0])
            text = grad_path.read_text()
            self.assertTrue(text.startswith("# Recorded by tools/reference.py with torch autograd / tf.GradientTape. Do not edit.\n"
                                            "format: lossconf-gradients/1\nfamily: fam\nversions: {"))
            body = text.split("expected:\n", 1)[1].splitlines()
            self.assertEqual([line.split('"')[1] for line in body], ["fam/a", "fam/z"], "sorted, one line each")
            doc = reference.load_yaml(grad_path)
            self.assertEqual(doc["settings"], frameworks.SETTINGS)
            self.assertEqual(yaml.safe_load(text)["expected"], doc["expected"], "valid YAML with the same entries")
            z = doc["expected"]["fam/z"]
            # mean of (x - 0)^2 over [1, 2] with grad_output 0.5: d/dx = 2 x 0.5 / 2 = x / 2
            self.assertEqual((z["digest"], z["framework"], z["grad_output"]), ("zz", "torch", F32([0.5], [])))
            self.assertEqual(z["value"], {"input": F32([0.5, 1.0]), "target": F32([-0.5, -1.0])})
            self.assertEqual(list(doc["expected"]["fam/a"]["value"]), ["input"])
            # unchanged: reused; a changed wrt (same digest) or a changed call: recomputed
            self.assertEqual(reference.run_family(path, versions, False, counts), (0, 4, 1))
            self.assertEqual(counts, [0, 2, 0])
            cases[1] = case("fam/a", "aa", 2.0)
            cases[0] = case("fam/z", "z2", 4.0)
            write(cases)
            self.assertEqual(reference.run_family(path, versions, False, counts), (1, 3, 1))
            self.assertEqual(counts, [2, 0, 0])
            self.assertEqual(list(reference.load_yaml(grad_path)["expected"]["fam/a"]["value"]), ["input", "target"])
            reference.run_family(path, versions, True, counts)
            self.assertEqual(counts, [2, 0, 0], "--all recomputes")
            # no case with wrt left: the file goes
            write([case("fam/none", "nn", 3.0, wrt=())])
            reference.run_family(path, versions, False, counts)
            self.assertFalse(grad_path.exists())
            self.assertEqual([p.name for p in reference.case_files(Path(tmp), [])], ["fam.yaml"])

    def test_version_mismatch_is_reported(self):
        with tempfile.TemporaryDirectory() as tmp:
            req = Path(tmp) / "requirements.txt"
            req.write_text("# comment\ntorch==0.0.1\nkeras==3.15.1  # pinned\n")
            self.assertEqual(reference.pinned_versions(req), {"torch": "0.0.1", "keras": "3.15.1"})
        self.assertEqual(reference.public_version("2.15.0+cu132"), "2.15.0")


class Compare(unittest.TestCase):
    def value(self, data, dtype="float32", shape=None):
        return "value", t(dtype, data, shape)

    def test_nan_matches_nan_and_inf_only_itself(self):
        self.assertIsNone(check_serve.compare(self.value(["nan", "inf"]), self.value(["nan", "inf"])))
        self.assertIsNotNone(check_serve.compare(self.value(["inf"]), self.value(["-inf"])))
        self.assertIsNotNone(check_serve.compare(self.value([1.0]), self.value(["nan"])))

    def test_float32_tolerance_is_assert_close(self):
        self.assertIsNone(check_serve.compare(self.value([1.0]), self.value([1.0 + 1e-5])))  # atol 1e-5 + rtol 1.3e-6
        self.assertIsNotNone(check_serve.compare(self.value([1.0]), self.value([1.0 + 2e-5])))
        self.assertIsNotNone(check_serve.compare(self.value([1.0], "float64"), self.value([1.0 + 3e-7], "float64")))

    def test_shape_dtype_and_error_kinds(self):
        self.assertIsNotNone(check_serve.compare(self.value([1.0]), self.value([1.0], "float64")))
        self.assertIsNotNone(check_serve.compare(self.value([1.0], shape=[1]), self.value([1.0], shape=[])))
        err = lambda k: ("error", {"kind": k, "message": "m"})  # noqa: E731
        self.assertIsNone(check_serve.compare(err("shape"), err("shape")))
        self.assertIsNotNone(check_serve.compare(err("shape"), err("value")))
        self.assertIsNotNone(check_serve.compare(err("shape"), self.value([1.0])))
        self.assertIsNotNone(check_serve.compare(self.value([1.0]), err("shape")))

    def test_gradients_compare_each_argument(self):
        g = lambda **kw: ("value", {k: t("float32", v) for k, v in kw.items()})  # noqa: E731
        self.assertIsNone(check_serve.compare_gradients(g(input=[1.0], target=["nan"]), g(target=["nan"], input=[1.0])))
        self.assertIn("target", check_serve.compare_gradients(g(input=[1.0], target=[1.0]), g(input=[1.0], target=[1.1])))
        self.assertIsNotNone(check_serve.compare_gradients(g(input=[1.0], target=[1.0]), g(input=[1.0])))
        self.assertIsNotNone(check_serve.compare_gradients(g(input=[1.0]), ("error", {"kind": "shape"})))

    def test_backward_wrt_comes_from_the_specs(self):
        diff = check_serve.load_differentiable()
        self.assertEqual(diff[TF + "mse_loss"][:2], ["input", "target"])
        args = {"input": F32([1.0]), "target": I64([1]), "reduction": "sum"}
        self.assertEqual(check_serve.float_wrt(args, ["input", "target", "weight"]), ["input"])

    def test_generated_calls_are_reproducible(self):
        for api in check_serve.GENERATORS:
            a = check_serve.draw_call(check_serve.Draw(f"7/{api}"), api)
            b = check_serve.draw_call(check_serve.Draw(f"7/{api}"), api)
            self.assertEqual(a, b)


if __name__ == "__main__":
    unittest.main(verbosity=1)
