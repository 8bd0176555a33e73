"""Grading responses for the population evaluation, with the reward code's own answer logic.

A response's answer is extracted by its problem's *answer format*, a registry (:func:`answer_format`):

* ``boxed`` (every data_prep benchmark): the content of the last ``\\boxed{}``
  (:func:`btrans_verl.rewards.math_answer.extract_boxed_answer`);
* ``first_number`` (completion-style benchmarks such as :mod:`btrans_verl.eval.arithmetic`, whose prompt ends
  with "q =" for the model to continue): the first integer or decimal number of the response.

The answer is correct iff :func:`btrans_verl.rewards.schemes.grade_answer` says so against the reference (normal
form, exact numbers, then math-verify under a time limit). For maj@K, answers vote by their normal form
(:func:`~btrans_verl.rewards.math_answer.normalize_answer`), and every answer graded correct joins the
reference's bucket; a response without an answer takes a place in a K-subset but never votes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tqdm import tqdm

from btrans_verl.registry import registrar
from btrans_verl.rewards.math_answer import extract_boxed_answer, normalize_answer
from btrans_verl.rewards.schemes import Outcome, grade_answer

__all__ = ["ANSWER_FORMATS", "DEFAULT_ANSWER_FORMAT", "Graded", "answer_format", "extract_answer",
           "extract_first_number", "grade_responses"]

#: Answer extractors by format name: response text -> answer (None: no usable answer).
ANSWER_FORMATS: dict[str, Callable[[str | None], str | None]] = {}
DEFAULT_ANSWER_FORMAT = "boxed"

_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


#: ``@answer_format(name)`` registers ``extract(text) -> answer | None`` as the answer format ``name``.
answer_format = registrar(ANSWER_FORMATS, "answer format")


@answer_format("boxed")
def _last_boxed(text: str | None) -> str | None:
    """The content of the last ``\\boxed{}`` (:func:`~btrans_verl.rewards.math_answer.extract_boxed_answer`)."""
    return extract_boxed_answer(text)


@answer_format("first_number")
def extract_first_number(text: str | None) -> str | None:
    """The first integer or decimal number of ``text`` (a leading ``-`` included): ``" 12\\n..."`` -> ``"12"``;
    None when there is none."""
    match = _NUMBER_RE.search(text or "")
    return match.group() if match else None


def extract_answer(text: str | None, fmt: str = DEFAULT_ANSWER_FORMAT) -> str | None:
    """The answer of ``text`` under the answer format ``fmt``; ValueError names an unknown format."""
    try:
        extract = ANSWER_FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown answer format {fmt!r}; known: {sorted(ANSWER_FORMATS)}") from None
    return extract(text)


@dataclass(frozen=True)
class Graded:
    """``[problem][sample]`` tables of one method's responses."""

    answers: list[list[str | None]]  # extracted answers (None: no usable answer)
    vote_keys: list[list[str | None]]  # normal forms, the maj@K buckets
    correct: list[list[bool]]


def _formats(answer_formats: Sequence[str] | None, count: int) -> list[str]:
    """One known answer format per problem (None: all the default)."""
    if answer_formats is None:
        return [DEFAULT_ANSWER_FORMAT] * count
    formats = list(answer_formats)
    if len(formats) != count:
        raise ValueError(f"{len(formats)} answer formats for {count} references")
    unknown = sorted({f for f in formats if f not in ANSWER_FORMATS})
    if unknown:
        raise ValueError(f"unknown answer format(s) {unknown}; known: {sorted(ANSWER_FORMATS)}")
    return formats


def grade_responses(texts: Sequence[Sequence[str]], references: Sequence[str], *,
                    answer_formats: Sequence[str] | None = None, desc: str = "grading",
                    progress: bool = True) -> Graded:
    """Grade ``texts[problem][sample]`` against ``references[problem]``, extracting each answer by
    ``answer_formats[problem]`` (None: every problem ``boxed``)."""
    if len(texts) != len(references):
        raise ValueError(f"{len(texts)} problems of responses for {len(references)} references")
    formats = _formats(answer_formats, len(references))
    answers, keys, correct = [], [], []
    bar = tqdm(total=sum(len(r) for r in texts), desc=desc, unit="resp", disable=not progress, leave=False)
    for row, ref, fmt in zip(texts, references, formats):
        a_row, k_row, c_row = [], [], []
        for text in row:
            ans = extract_answer(text, fmt)
            a_row.append(ans)
            k_row.append(None if ans is None else (normalize_answer(ans) or None))
            c_row.append(grade_answer(ans, ref) is Outcome.CORRECT)
            bar.update(1)
        answers.append(a_row)
        keys.append(k_row)
        correct.append(c_row)
    bar.close()
    return Graded(answers, keys, correct)
