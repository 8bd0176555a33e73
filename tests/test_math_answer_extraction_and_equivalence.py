"""Last-boxed-answer extraction and answer equivalence (fast path and math-verify)."""

from __future__ import annotations

import pytest

from btrans_verl.rewards.math_answer import (
    answers_equivalent,
    extract_boxed_answer,
    fast_equivalence,
    math_verify_equal,
    normalize_answer,
    reference_answer,
)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (r"First \boxed{1}, then finally \boxed{42}.", "42"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"so $\boxed{x^{2}+\sqrt{y_{1}}}$", r"x^{2}+\sqrt{y_{1}}"),
        (r"\fbox{7}", "7"),
        (r"The answer is $\boxed 5$.", "5"),
        (r"The answer is \boxed 12.", "12"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),
        (r"\boxed{ 3 }", "3"),
        (r"\boxed{\text{(B)}}", r"\text{(B)}"),
    ],
)
def test_extracts_the_last_boxed_answer(response, expected):
    assert extract_boxed_answer(response) == expected


@pytest.mark.parametrize(
    "response",
    [
        None,
        "",
        "no box here, the answer is 5",
        r"\boxed{}",
        r"\boxed{   }",
        r"complete \boxed{3} then truncated \boxed{\frac{1}{",
        r"ends with \boxed",
    ],
)
def test_missing_empty_or_truncated_boxes_give_no_answer(response):
    assert extract_boxed_answer(response) is None


def test_reference_answer_accepts_plain_numeric_and_boxed_ground_truth():
    assert reference_answer(" 42 ") == "42"
    assert reference_answer(42) == "42"
    assert reference_answer(r"\boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert reference_answer(None) is None
    assert reference_answer("  ") is None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("025", "25"),
        (r"\frac12", r"\frac{1}{2}"),
        (r"\dfrac{1}{2}", r"\frac12"),
        ("0.5", "1/2"),
        ("1,000", "1000"),
        (r"10^\circ", "10"),
        (r"$\left( 1, 2 \right)$", "(1,2)"),
        (r"50\%", "50"),
        (r"\text{east}", "east"),
    ],
)
def test_fast_path_accepts_equivalent_forms(a, b):
    assert fast_equivalence(a, b) is True
    assert answers_equivalent(a, b)


def test_fast_path_rejects_different_exact_numbers_and_defers_the_rest():
    assert fast_equivalence("25", "26") is False
    assert fast_equivalence(r"\frac{1}{3}", "1/2") is False
    assert fast_equivalence("0.333333", r"\frac13") is None  # rounded decimal: math-verify decides
    assert fast_equivalence(r"\frac{\sqrt2}{2}", r"\frac{1}{\sqrt{2}}") is None
    assert normalize_answer(r"\pi r") != normalize_answer(r"\pir")


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        ("0.5", "1/2"),
        (r"\frac12", "0.5"),
        (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}"),
        (r"x = 3", "3"),
        (r"\{1, 2\}", r"\{2, 1\}"),
    ],
)
def test_math_verify_path_alone_recognises_equivalence(pred, ref):
    assert answers_equivalent(pred, ref, use_fast_path=False)


def test_math_verify_path_rejects_different_values():
    assert not answers_equivalent(r"\frac{\sqrt{3}}{2}", r"\frac{1}{\sqrt{2}}", use_fast_path=False)
    assert not answers_equivalent("0.51", "1/2")
    assert not math_verify_equal("x+1", "x+2")


@pytest.mark.parametrize(("pred", "ref"), [(None, "1"), ("1", None), ("", "1"), ("  ", "  ")])
def test_empty_answers_are_never_equivalent(pred, ref):
    assert answers_equivalent(pred, ref) is False
