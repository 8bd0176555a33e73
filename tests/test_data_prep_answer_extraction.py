"""Answer extraction rules: last \\boxed{} with nested braces, GSM8K '####' with commas, canonical AIME integers.
Run:
    .venv/bin/python -m pytest tests/test_data_prep_answer_extraction.py -q
"""

from __future__ import annotations

import pytest

from data_prep.answers import aime_answer, boxed_answer, gsm8k_answer, last_boxed, mmlu_answer, nonempty_answer
from data_prep.errors import RowProblem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$\\boxed{42}$", "42"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("first \\boxed{1} then \\boxed{2}", "2"),  # the LAST one
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not nest
        ("\\boxed{a \\\\ b}", "a \\\\ b"),  # a LaTeX line break before the closing brace
        ("\\boxed {7}", "7"),
        ("$\\boxed 5$", "5"),
        ("\\boxed{}", ""),
        ("no box", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_boxed_answer_rejects_missing_empty_and_unbalanced():
    with pytest.raises(RowProblem, match="no \\\\boxed"):
        boxed_answer("x = 3")
    with pytest.raises(RowProblem, match="empty"):
        boxed_answer("\\boxed{  }")
    with pytest.raises(RowProblem, match="unbalanced"):
        boxed_answer("\\boxed{\\frac{1}{2}")
    assert boxed_answer("\\boxed{ 4.5e33 } \\mathrm{ergs}") == "4.5e33"


@pytest.mark.parametrize(
    ("solution", "expected"),
    [("a\n#### 18", "18"), ("#### 1,080", "1080"), ("x #### -3", "-3"), ("#### 2.5", "2.5"),
     ("####  850,000 ", "850000")],
)
def test_gsm8k_answer(solution, expected):
    assert gsm8k_answer(solution) == expected


def test_gsm8k_answer_rejects_missing_marker_and_non_numbers():
    with pytest.raises(RowProblem, match="no '####'"):
        gsm8k_answer("18")
    with pytest.raises(RowProblem, match="not a number"):
        gsm8k_answer("#### 18 dollars")


@pytest.mark.parametrize(
    ("raw", "expected"), [("025", "25"), ("073", "73"), ("204", "204"), ("000", "0"), (7, "7"), (" 080 ", "80")]
)
def test_aime_answer_is_a_canonical_integer_string(raw, expected):
    assert aime_answer(raw) == expected


@pytest.mark.parametrize("raw", ["", "12a", "-5", "1.0", None, True, 3.0])
def test_aime_answer_rejects_non_integers(raw):
    with pytest.raises(RowProblem):
        aime_answer(raw)


def test_nonempty_and_mmlu_answers():
    assert nonempty_answer(" \\frac{1}{2} ") == "\\frac{1}{2}"
    assert nonempty_answer(3) == "3"
    with pytest.raises(RowProblem, match="empty"):
        nonempty_answer("  ")
    assert mmlu_answer("J", 10, 9) == "J"
    with pytest.raises(RowProblem, match="not an option letter"):
        mmlu_answer("AB", 10)
