"""Semantic diversity and step-wise consistency on hand-computed vectors."""

import math

import numpy as np
import pytest

from btrans_verl.eval.metrics import (
    cosine_similarity_matrix,
    semantic_diversity,
    semantic_diversity_of_set,
    semantic_diversity_of_texts,
    split_steps,
    step_consistency,
    step_consistency_from_embeddings,
    step_consistency_of_response,
)

E1, E2 = [1.0, 0.0], [0.0, 1.0]


def test_pairwise_cosine_distance_hand_cases():
    assert semantic_diversity_of_set([E1, E2]) == pytest.approx(1.0)          # orthogonal
    assert semantic_diversity_of_set([E1, [3.0, 0.0]]) == pytest.approx(0.0)  # same direction, any length
    assert semantic_diversity_of_set([E1, [-2.0, 0.0]]) == pytest.approx(2.0)  # opposite
    # pairs (e1,e2)=1, (e1,e1)=0, (e2,e1)=1 -> 2/3
    assert semantic_diversity_of_set([E1, E2, E1]) == pytest.approx(2 / 3)
    # 45 degrees: 1 - cos(pi/4)
    assert semantic_diversity_of_set([E1, [1.0, 1.0]]) == pytest.approx(1 - 1 / math.sqrt(2))


def test_diversity_is_averaged_over_prompts_not_pooled():
    prompts = [np.array([E1, E2]), np.array([E1, E1, E1])]
    assert semantic_diversity(prompts) == pytest.approx((1.0 + 0.0) / 2)


def test_diversity_errors():
    with pytest.raises(ValueError, match=">= 2"):
        semantic_diversity_of_set([E1])
    with pytest.raises(ValueError, match="zero vector"):
        semantic_diversity_of_set([E1, [0.0, 0.0]])
    with pytest.raises(ValueError):
        semantic_diversity([])


def test_cosine_matrix():
    s = cosine_similarity_matrix([E1, E2, [1.0, 1.0]])
    assert s.shape == (3, 3)
    assert np.allclose(np.diag(s), 1.0)
    assert s[0, 1] == pytest.approx(0.0) and s[0, 2] == pytest.approx(1 / math.sqrt(2))


def test_split_steps_drops_blank_and_whitespace_lines():
    assert split_steps("First.\n\n   \n\tSecond.  \r\nThird") == ["First.", "Second.", "Third"]
    assert split_steps("") == [] and split_steps(" \n\t\n") == []


VEC = {"A": [1.0, 0.0], "B": [1.0, 1.0], "C": [0.0, 1.0], "D": [-1.0, 0.0]}


def fake_encode(texts):
    return np.array([VEC[t] for t in texts])


def test_step_consistency_hand_computed_with_exclusions():
    responses = [
        "A\nB\n\n  \nC",   # cos(A,B) = cos(B,C) = 1/sqrt2 -> 1/sqrt2
        "A\nC",            # cos = 0
        "A\nD\nA",         # cos = -1, -1 -> -1
        "only one step\n\n",  # excluded (< 2 steps)
        "   ",             # excluded (no steps)
    ]
    sc = step_consistency(responses, fake_encode)
    assert sc.num_scored == 3 and sc.num_excluded == 2
    assert sc.score == pytest.approx((1 / math.sqrt(2) + 0.0 - 1.0) / 3)


def test_step_consistency_from_embeddings_and_nan_when_nothing_scored():
    assert step_consistency_of_response([VEC["A"], VEC["B"], VEC["C"]]) == pytest.approx(1 / math.sqrt(2))
    sc = step_consistency_from_embeddings([np.array([VEC["A"], VEC["A"]]), np.zeros((1, 2)), np.zeros((0, 2))])
    assert (sc.score, sc.num_scored, sc.num_excluded) == (pytest.approx(1.0), 1, 2)
    none = step_consistency(["x", ""], fake_encode)
    assert math.isnan(none.score) and none.num_scored == 0 and none.num_excluded == 2
    assert none.to_dict()["score"] is None       # JSON-safe


def test_diversity_of_texts_uses_the_encoder_per_prompt():
    assert semantic_diversity_of_texts([["A", "C"], ["B", "B"]], fake_encode) == pytest.approx(0.5)
