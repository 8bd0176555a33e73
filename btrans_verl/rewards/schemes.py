"""Reward schemes: how a graded answer turns into a scalar reward.

A scheme maps an :class:`Outcome` (correct / wrong / no answer) to a float.
Schemes live in a small registry so configs can name them::

    @register_scheme("my_scheme")
    def my_scheme(outcome: Outcome) -> float: ...

    get_scheme("binary")(Outcome.CORRECT)  # -> 1.0

Built-ins:

* ``binary``: 1 if correct, else 0.
* ``simplerl``: the SimpleRL-Zoo scheme, +1 correct, -0.5 wrong, -1 when the
  response has no (non-empty, complete) boxed answer.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from btrans_verl.rewards.math_answer import (
    DEFAULT_TIMEOUT_S,
    answers_equivalent,
    extract_boxed_answer,
    reference_answer,
)

__all__ = [
    "Outcome",
    "RewardScheme",
    "register_scheme",
    "get_scheme",
    "available_schemes",
    "grade_answer",
    "ScoreResult",
    "score_response",
]


class Outcome(str, enum.Enum):
    """Result of grading one answer against a reference."""

    CORRECT = "correct"
    WRONG = "wrong"
    NO_ANSWER = "no_answer"


RewardScheme = Callable[[Outcome], float]

_SCHEMES: dict[str, RewardScheme] = {}


def register_scheme(name: str) -> Callable[[RewardScheme], RewardScheme]:
    """Decorator registering a reward scheme under ``name``.

    Re-registering the same function is a no-op; registering a different one
    under a taken name raises ValueError.
    """

    def decorator(fn: RewardScheme) -> RewardScheme:
        existing = _SCHEMES.get(name)
        if existing is not None and existing is not fn:
            raise ValueError(f"reward scheme {name!r} is already registered ({existing!r})")
        _SCHEMES[name] = fn
        return fn

    return decorator


def available_schemes() -> list[str]:
    """Names of all registered schemes, sorted."""
    return sorted(_SCHEMES)


def get_scheme(name: str) -> RewardScheme:
    """Look up a scheme; unknown names raise ValueError listing the known ones."""
    try:
        return _SCHEMES[name]
    except KeyError:
        known = ", ".join(available_schemes())
        raise ValueError(f"unknown reward scheme {name!r}; known schemes: {known}") from None


@register_scheme("binary")
def binary(outcome: Outcome) -> float:
    """1.0 for a correct answer, 0.0 otherwise."""
    return 1.0 if outcome is Outcome.CORRECT else 0.0


@register_scheme("simplerl")
def simplerl(outcome: Outcome) -> float:
    """SimpleRL-Zoo: +1 correct, -0.5 wrong, -1 no boxed answer."""
    return {Outcome.CORRECT: 1.0, Outcome.WRONG: -0.5, Outcome.NO_ANSWER: -1.0}[outcome]


def grade_answer(answer: str | None, reference: str | None, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Outcome:
    """Grade an extracted answer against a reference answer.

    A missing/empty answer is NO_ANSWER; otherwise CORRECT iff
    :func:`~btrans_verl.rewards.math_answer.answers_equivalent`.  A missing
    reference makes every present answer WRONG.
    """
    if answer is None or not answer.strip():
        return Outcome.NO_ANSWER
    if answers_equivalent(answer, reference, timeout_s=timeout_s):
        return Outcome.CORRECT
    return Outcome.WRONG


@dataclass(frozen=True)
class ScoreResult:
    """Reward of one response: ``score`` under the scheme, plus what produced it."""

    score: float
    outcome: Outcome
    answer: str | None

    @property
    def correct(self) -> bool:
        return self.outcome is Outcome.CORRECT


def score_response(
    response: str | None,
    ground_truth: object,
    scheme: str = "binary",
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ScoreResult:
    """Extract the last boxed answer of ``response`` and score it against ``ground_truth``.

    ``ground_truth`` may be a plain answer or contain ``\\boxed{}``.  Raises
    ValueError for an unknown scheme (before doing any work).
    """
    scheme_fn = get_scheme(scheme)
    answer = extract_boxed_answer(response)
    outcome = grade_answer(answer, reference_answer(ground_truth), timeout_s=timeout_s)
    return ScoreResult(score=float(scheme_fn(outcome)), outcome=outcome, answer=answer)
