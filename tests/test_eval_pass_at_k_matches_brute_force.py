"""pass@K: the stable product-form estimator equals brute-force enumeration of all K-subsets."""

import itertools
import math
import random
from fractions import Fraction

import pytest

from btrans_verl.eval.metrics import accuracy, mean_pass_at_k, pass_at_k, pass_at_k_curve


def brute_force_pass_at_k(flags, k):
    """Fraction of the K-subsets of the samples that contain at least one correct sample."""
    subsets = list(itertools.combinations(range(len(flags)), k))
    hits = sum(1 for s in subsets if any(flags[i] for i in s))
    return Fraction(hits, len(subsets))


def test_estimator_equals_enumeration_of_all_k_subsets_on_random_cases():
    rng = random.Random(1234)
    for _ in range(300):
        n = rng.randint(1, 11)
        flags = [rng.random() < rng.random() for _ in range(n)]
        k = rng.randint(1, n)
        expected = brute_force_pass_at_k(flags, k)
        assert pass_at_k(n, sum(flags), k) == pytest.approx(float(expected), abs=1e-12)


@pytest.mark.parametrize("n,c,k,expected", [
    (1, 1, 1, 1.0),
    (1, 0, 1, 0.0),
    (5, 0, 3, 0.0),
    (10, 3, 1, 0.3),                 # pass@1 = c/n
    (4, 1, 2, 0.5),                  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (5, 2, 2, 0.7),                  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (6, 2, 3, 0.8),                  # 1 - C(4,3)/C(6,3) = 1 - 4/20
    (16, 1, 16, 1.0),                # K = n: any correct sample means a pass
    (8, 6, 3, 1.0),                  # n - c < K: every subset holds a correct sample
])
def test_hand_computed_cases(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_large_n_is_numerically_stable_and_exact():
    for n, c, k in [(200, 7, 16), (1000, 1, 1), (1000, 3, 64), (5000, 2500, 100)]:
        exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
        got = pass_at_k(n, c, k)
        assert 0.0 <= got <= 1.0
        assert got == pytest.approx(float(exact), rel=1e-10, abs=1e-14)


def test_k_larger_than_n_and_bad_counts_are_errors():
    with pytest.raises(ValueError, match="K=5 > n=4"):
        pass_at_k(4, 1, 5)
    for bad in [(0, 0, 1), (4, 5, 1), (4, -1, 1), (4, 1, 0)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)
    with pytest.raises(ValueError):
        mean_pass_at_k([[True, False], [True]], 2)


def test_mean_over_problems_curve_and_accuracy():
    problems = [[True, False, False, False], [False] * 4, [True, True, False, True]]
    # pass@2 per problem: 1 - C(3,2)/C(4,2) = 0.5; 0; 1 - C(1,2)/C(4,2) = 1
    assert mean_pass_at_k(problems, 2) == pytest.approx((0.5 + 0 + 1) / 3)
    assert accuracy(problems) == pytest.approx((0.25 + 0 + 0.75) / 3)
    assert mean_pass_at_k(problems, 1) == pytest.approx(accuracy(problems))
    curve = pass_at_k_curve(problems, ks=(1, 2, 4, 8, 16))
    assert list(curve) == [1, 2, 4]          # K > n = 4 cannot be estimated and is left out
    assert curve[4] == pytest.approx(2 / 3)
    assert all(a <= b + 1e-12 for a, b in zip(list(curve.values()), list(curve.values())[1:]))
