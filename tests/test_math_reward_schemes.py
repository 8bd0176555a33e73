"""Reward schemes (binary, SimpleRL-Zoo) and their registry."""

from __future__ import annotations

import pytest

from btrans_verl.rewards.schemes import (
    Outcome,
    available_schemes,
    get_scheme,
    grade_answer,
    register_scheme,
    score_response,
)

CORRECT = r"We get $\boxed{\frac{1}{2}}$."
CORRECT_OTHER_FORM = r"So the answer is \boxed{0.5}."
WRONG = r"Thus \boxed{3}."
NO_BOX = "The answer is 1/2."
EMPTY_BOX = r"\boxed{}"
TRUNCATED = r"\boxed{\frac{1}{"


@pytest.mark.parametrize(
    ("response", "binary", "simplerl"),
    [
        (CORRECT, 1.0, 1.0),
        (CORRECT_OTHER_FORM, 1.0, 1.0),
        (WRONG, 0.0, -0.5),
        (NO_BOX, 0.0, -1.0),
        (EMPTY_BOX, 0.0, -1.0),
        (TRUNCATED, 0.0, -1.0),
        (None, 0.0, -1.0),
    ],
)
def test_binary_and_simplerl_rewards(response, binary, simplerl):
    assert score_response(response, "1/2", "binary").score == binary
    assert score_response(response, "1/2", "simplerl").score == simplerl


def test_score_result_reports_answer_and_outcome():
    result = score_response(CORRECT, r"\boxed{0.5}", "simplerl")
    assert result.answer == r"\frac{1}{2}"
    assert result.outcome is Outcome.CORRECT and result.correct
    wrong = score_response(WRONG, "0.5")
    assert wrong.outcome is Outcome.WRONG and wrong.answer == "3" and not wrong.correct


def test_grade_answer_outcomes():
    assert grade_answer("025", "25") is Outcome.CORRECT
    assert grade_answer("24", "25") is Outcome.WRONG
    assert grade_answer(None, "25") is Outcome.NO_ANSWER
    assert grade_answer("25", None) is Outcome.WRONG


def test_unknown_scheme_error_names_it_and_lists_known_ones():
    with pytest.raises(ValueError) as info:
        get_scheme("no_such_scheme")
    message = str(info.value)
    assert "no_such_scheme" in message
    assert "binary" in message and "simplerl" in message
    with pytest.raises(ValueError, match="no_such_scheme"):
        score_response(CORRECT, "1/2", "no_such_scheme")


def test_registering_a_custom_scheme_and_refusing_a_clash():
    @register_scheme("test_half_credit")
    def half_credit(outcome: Outcome) -> float:
        return {Outcome.CORRECT: 1.0, Outcome.WRONG: 0.5, Outcome.NO_ANSWER: 0.0}[outcome]

    assert "test_half_credit" in available_schemes()
    assert score_response(WRONG, "1/2", "test_half_credit").score == 0.5
    register_scheme("test_half_credit")(half_credit)  # same function again: fine
    with pytest.raises(ValueError, match="already registered"):
        register_scheme("test_half_credit")(lambda outcome: 0.0)
    with pytest.raises(ValueError, match="already registered"):
        register_scheme("binary")(half_credit)
