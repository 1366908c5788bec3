"""Tests of tools/exact.py and tools/recipes.py: `python tools/test_exact.py` (no frameworks needed).

The Rust side (`cargo test --test accuracy`) checks that src/accuracy.rs materialises every
recipe to the digest recorded here; these check the exact arithmetic itself.
"""

import math
import os
import random
import sys
import unittest
from fractions import Fraction

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import exact  # noqa: E402
import recipes  # noqa: E402


class ExactArithmetic(unittest.TestCase):
    def test_exact_sum_is_exact(self):
        rng = random.Random(1)
        vals = [rng.uniform(-1, 1) * 2.0 ** rng.randint(-60, 60) for _ in range(5000)] + [1e300, -1e300, 5e-324]
        self.assertEqual(exact.exact_sum([np.array(vals)]), sum(map(Fraction, vals)))

    def test_square_and_difference_terms_are_exact(self):
        rng = np.random.default_rng(2)
        x, y = rng.standard_normal(1000), rng.standard_normal(1000) * 1e-9
        s, e = exact.diff_terms(x, y)
        for i in range(0, 1000, 97):
            d = Fraction(x[i]) - Fraction(y[i])
            self.assertEqual(Fraction(s[i]) + Fraction(e[i]), d)
            self.assertEqual(sum(Fraction(t[i]) for t in exact.square_terms(s, e)), d * d)

    def test_rounding_ties_to_even_and_ulps(self):
        one = Fraction(1)
        half_ulp = Fraction(1, 2**24)
        self.assertEqual(exact.round_to(one + half_ulp, "float32"), 1.0)  # tie: even
        self.assertEqual(exact.round_to(one + 3 * half_ulp, "float32"), 1.0 + 2.0**-22)
        self.assertEqual(exact.ulp(one, "float32"), Fraction(1, 2**23))
        self.assertEqual(exact.ulp(one - Fraction(1, 2**40), "float32"), Fraction(1, 2**24))
        self.assertEqual(exact.ulps(1.0 + 2.0**-23, one, "float32"), 1.0)
        self.assertIsNone(exact.ulps(math.inf, one, "float32"))

    def test_arb_ball_converts_exactly(self):
        mid, rad = exact.arb_to_fraction(exact.arb(2).log())
        self.assertLess(abs(float(mid) - math.log(2)), 1e-16)
        self.assertLess(rad, Fraction(1, 2**300))


class Recipes(unittest.TestCase):
    def test_splitmix64_matches_the_published_sequence(self):
        self.assertEqual(int(recipes.draws(0, 1)[0]), 0xE220A8397B1DCDAF)

    def test_unknown_fields_are_named(self):
        with self.assertRaisesRegex(recipes.RecipeError, "bogus"):
            recipes.materialise({"recipe": "full", "dtype": "float32", "shape": [1], "value": 1, "bogus": 2}, {}, "x")

    def test_choice_pairs_share_indices(self):
        a = recipes.materialise({"recipe": "choice", "seed": 3, "dtype": "float32", "shape": [50], "values": [1, 2, 3]}, {}, "a")
        b = recipes.materialise({"recipe": "choice", "seed": 3, "dtype": "float32", "shape": [50], "values": [10, 20, 30]}, {}, "b")
        self.assertTrue(np.array_equal(a * 10, b))


if __name__ == "__main__":
    unittest.main()
