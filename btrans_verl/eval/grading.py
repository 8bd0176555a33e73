"""Grading responses for the population evaluation, with the reward code's own answer logic.

A response's answer is the content of its last ``\\boxed{}``
(:func:`btrans_verl.rewards.math_answer.extract_boxed_answer`); it is correct iff
:func:`btrans_verl.rewards.schemes.grade_answer` says so against the reference (normal form, exact numbers, then
math-verify under a time limit). For maj@K, answers vote by their normal form
(:func:`~btrans_verl.rewards.math_answer.normalize_answer`), and every answer graded correct joins the
reference's bucket; a response without a boxed answer takes a place in a K-subset but never votes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tqdm import tqdm

from btrans_verl.rewards.math_answer import extract_boxed_answer, normalize_answer
from btrans_verl.rewards.schemes import Outcome, grade_answer

__all__ = ["Graded", "grade_responses"]


@dataclass(frozen=True)
class Graded:
    """``[problem][sample]`` tables of one method's responses."""

    answers: list[list[str | None]]  # extracted boxed answers (None: no usable box)
    vote_keys: list[list[str | None]]  # normal forms, the maj@K buckets
    correct: list[list[bool]]


def grade_responses(texts: Sequence[Sequence[str]], references: Sequence[str], *, desc: str = "grading",
                    progress: bool = True) -> Graded:
    """Grade ``texts[problem][sample]`` against ``references[problem]``."""
    if len(texts) != len(references):
        raise ValueError(f"{len(texts)} problems of responses for {len(references)} references")
    answers, keys, correct = [], [], []
    bar = tqdm(total=sum(len(r) for r in texts), desc=desc, unit="resp", disable=not progress, leave=False)
    for row, ref in zip(texts, references):
        a_row, k_row, c_row = [], [], []
        for text in row:
            ans = extract_boxed_answer(text)
            a_row.append(ans)
            k_row.append(None if ans is None else (normalize_answer(ans) or None))
            c_row.append(grade_answer(ans, ref) is Outcome.CORRECT)
            bar.update(1)
        answers.append(a_row)
        keys.append(k_row)
        correct.append(c_row)
    bar.close()
    return Graded(answers, keys, correct)
