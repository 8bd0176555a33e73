"""maj@K: the exact dynamic programme equals brute-force enumeration of all K-subsets; Monte-Carlo agrees."""

import itertools
import math
import random
import time
from collections import Counter
from fractions import Fraction

import pytest

from btrans_verl.eval.metrics import maj_at_k, mean_maj_at_k


def brute_force_maj(answers, reference, k):
    """Independent reference: vote in every K-subset, split ties uniformly, None never votes."""
    total = Fraction(0)
    subsets = list(itertools.combinations(answers, k))
    for sub in subsets:
        votes = Counter(a for a in sub if a is not None)
        if not votes:
            continue
        top = max(votes.values())
        winners = [a for a, v in votes.items() if v == top]
        if reference in winners:
            total += Fraction(1, len(winners))
    return total / len(subsets)


def test_hand_computed_case_with_ties_and_an_unparsable_answer():
    # C(5,3) = 10 subsets: 3 hold both "a" (a wins); 6 hold one "a": {a,b,None} 1/2, {a,b,c} 1/3,
    # {a,None,c} 1/2, each twice -> 8/3; one holds no "a". maj@3 = (3 + 8/3) / 10 = 17/30.
    answers = ["a", "a", "b", None, "c"]
    for method in ("exact", "enumerate"):
        assert maj_at_k(answers, 3, reference="a", method=method) == pytest.approx(17 / 30, abs=1e-12)


def test_exact_equals_enumeration_on_random_cases():
    rng = random.Random(7)
    for _ in range(250):
        n = rng.randint(1, 10)
        vocab = ["x", "y", "z", "w", None][: rng.randint(1, 5)]
        answers = [rng.choice(vocab) for _ in range(n)]
        reference = rng.choice(["x", "y", "q"])
        k = rng.randint(1, n)
        expected = float(brute_force_maj(answers, reference, k))
        assert maj_at_k(answers, k, reference=reference) == pytest.approx(expected, abs=1e-12)
        assert maj_at_k(answers, k, reference=reference, method="enumerate") == pytest.approx(expected, abs=1e-12)


def test_correctness_flags_give_the_same_value_as_a_reference():
    rng = random.Random(3)
    for _ in range(50):
        n = rng.randint(2, 9)
        answers = [rng.choice([0, 1, 2, 3, None]) for _ in range(n)]
        flags = [a == 2 for a in answers]
        k = rng.randint(1, n)
        assert maj_at_k(answers, k, correct=flags) == pytest.approx(maj_at_k(answers, k, reference=2), abs=1e-12)
    # flagged answers form one bucket: "1/2" and "0.5" flagged correct vote together against "1/3"
    assert maj_at_k(["1/2", "0.5", "1/3"], 3, correct=[True, True, False]) == 1.0


def test_degenerate_cases():
    assert maj_at_k([None, None, None], 2, reference="a") == 0.0
    assert maj_at_k(["b", "b", "b"], 3, reference="a") == 0.0
    assert maj_at_k(["a", "b"], 2, reference="a") == pytest.approx(0.5)   # tie split
    assert maj_at_k(["a", "a", "b"], 3, reference="a") == 1.0              # K = n: plain majority
    assert maj_at_k(["a", "b", "c", "a"], 1, reference="a") == pytest.approx(0.5)  # maj@1 = accuracy
    with pytest.raises(ValueError, match="K=4 > n=3"):
        maj_at_k(["a", "b", "c"], 4, reference="a")
    with pytest.raises(ValueError):
        maj_at_k(["a"], 1)                                       # neither reference nor flags
    with pytest.raises(ValueError):
        maj_at_k(["a"], 1, reference="a", correct=[True])        # both
    with pytest.raises(ValueError, match="enumerate_limit"):
        maj_at_k(["a"] * 40, 20, reference="a", method="enumerate")


def test_exact_is_fast_for_large_n_and_monte_carlo_is_seeded_and_agrees():
    rng = random.Random(11)
    answers = [rng.choice(["17", "17", "17", "12", "9", "4", None] + [str(i) for i in range(20)])
               for _ in range(64)]
    assert math.comb(64, 16) > 10**14          # far too many subsets to enumerate
    t = time.perf_counter()
    exact = maj_at_k(answers, 16, reference="17")
    assert time.perf_counter() - t < 5.0
    mc1 = maj_at_k(answers, 16, reference="17", method="monte_carlo", num_draws=3000, seed=5)
    mc2 = maj_at_k(answers, 16, reference="17", method="monte_carlo", num_draws=3000, seed=5)
    assert mc1 == mc2                                      # reproducible for a seed
    assert abs(mc1 - exact) < 4 * 0.5 / math.sqrt(3000)    # within 4 standard errors


def test_mean_over_problems():
    answers = [["a", "a", "b"], ["c", "d", "d"]]
    refs = ["a", "c"]
    # problem 1: subsets of 2: {a,a} 1, {a,b} 1/2 twice -> 2/3; problem 2: {c,d} 1/2 twice, {d,d} 0 -> 1/3
    assert mean_maj_at_k(answers, 2, references=refs) == pytest.approx(0.5)
    flags = [[True, True, False], [True, False, False]]
    assert mean_maj_at_k(answers, 2, correct_per_problem=flags) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        mean_maj_at_k(answers, 2)
