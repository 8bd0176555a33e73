"""Ground-truth answer extraction. Each function returns a non-empty string or raises RowProblem."""

from __future__ import annotations

import re
from typing import Any

from btrans_verl.rewards.math_answer import braced_content
from data_prep.errors import RowProblem

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_BOXED = "\\boxed"
MMLU_LETTERS = "ABCDEFGHIJKLMNOP"


def gsm8k_answer(solution: str) -> str:
    """The text after the last ``####`` with thousands commas stripped, e.g. ``"... #### 1,080"`` -> ``"1080"``."""
    if "####" not in solution:
        raise RowProblem("no '####' answer marker in the solution")
    answer = solution.rsplit("####", 1)[1].strip().replace(",", "")
    if not _NUMBER.fullmatch(answer):
        raise RowProblem(f"answer after '####' is not a number: {answer!r}")
    return answer


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text`` (nested braces matched), or None if there is none.

    Backslash escapes (``\\{``, ``\\}``, ``\\\\``) inside do not count as braces. The brace-less form
    ``\\boxed 5`` yields the following token. Unbalanced braces raise RowProblem.
    """
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    i = start + len(_BOXED)
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        content = braced_content(text, i)
        if content is None:
            raise RowProblem("unbalanced braces after the last \\boxed{")
        return content
    token = re.match(r"[^\s$]*", text[i:])
    return token.group(0) if token else ""


def boxed_answer(solution: str) -> str:
    """The stripped content of the last ``\\boxed{...}``; missing or empty is a RowProblem."""
    content = last_boxed(solution)
    if content is None:
        raise RowProblem("no \\boxed{...} in the solution")
    content = content.strip()
    if not content:
        raise RowProblem("the last \\boxed{} is empty")
    return content


def aime_answer(value: Any) -> str:
    """An AIME answer as a canonical integer string: ``"025"`` -> ``"25"``, ``"000"`` -> ``"0"``."""
    if isinstance(value, bool):
        raise RowProblem(f"AIME answer is not an integer: {value!r}")
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str) or not value.strip().isdigit():
        raise RowProblem(f"AIME answer is not an integer string: {value!r}")
    return str(int(value.strip()))


def nonempty_answer(value: Any) -> str:
    """A free-form answer (MATH-500, SimpleRL-Zoo): must be a non-empty string after stripping."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise RowProblem(f"answer is not a string: {value!r}")
    if not value.strip():
        raise RowProblem("answer is empty")
    return value.strip()


def mmlu_answer(letter: Any, n_options: int, answer_index: Any = None) -> str:
    """Validate a multiple-choice answer letter against the option count (and ``answer_index`` if given)."""
    if not isinstance(letter, str) or len(letter.strip()) != 1 or letter.strip() not in MMLU_LETTERS:
        raise RowProblem(f"answer is not an option letter: {letter!r}")
    letter = letter.strip()
    position = MMLU_LETTERS.index(letter)
    if position >= n_options:
        raise RowProblem(f"answer {letter!r} but only {n_options} options")
    if answer_index is not None and answer_index != position:
        raise RowProblem(f"answer {letter!r} disagrees with answer_index {answer_index!r}")
    return letter
