"""Final-answer extraction and answer equivalence for math responses.

* :func:`extract_boxed_answer` pulls the content of the **last** ``\\boxed{...}``
  (or ``\\fbox{...}``, or the brace-less ``\\boxed 5``) out of a response.
* :func:`answers_equivalent` decides whether a predicted answer equals a
  reference answer: first a cheap normalised-string / exact-number check, then
  math-verify (``parse`` + ``verify``) under a wall-clock limit that works from
  any thread (see :mod:`btrans_verl.rewards.time_limit`).

Pure Python, independent of verl.
"""

from __future__ import annotations

import functools
import logging
import re
from fractions import Fraction

from btrans_verl.rewards.time_limit import ProcessTimeLimiter, TimeLimitExceeded, run_with_time_limit

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "extract_boxed_answer",
    "reference_answer",
    "normalize_answer",
    "fast_equivalence",
    "math_verify_equal",
    "answers_equivalent",
]

DEFAULT_TIMEOUT_S = 5.0
"""Default wall-clock limit (seconds) for one math-verify comparison."""

# --------------------------------------------------------------------------- extraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def braced_content(text: str, open_idx: int) -> str | None:
    """Content between ``text[open_idx] == "{"`` and its matching ``}``; None if unbalanced.

    Escaped braces (``\\{``, ``\\}``) do not count.
    """
    depth = 0
    i = open_idx
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[open_idx + 1 : i]
        i += 1
    return None


def extract_boxed_answer(text: str | None) -> str | None:
    """Return the stripped content of the last ``\\boxed``/``\\fbox`` in ``text``.

    Handles nested braces (``\\boxed{\\frac{1}{2}}``) and the brace-less form
    ``\\boxed 5`` (content runs to the next whitespace or ``$``; trailing ``.,;``
    are dropped).

    Returns None when there is no usable answer: no box at all, the last box is
    unterminated (e.g. a truncated response), or the box is empty.  Only the last
    box counts, even if an earlier one was complete.
    """
    if not text:
        return None
    matches = list(_BOX_RE.finditer(text))
    if not matches:
        return None
    start = matches[-1].end()
    pos = start
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos >= len(text):
        return None
    if text[pos] == "{":
        content = braced_content(text, pos)
    else:
        end = pos
        while end < len(text) and not text[end].isspace() and text[end] != "$":
            end += 1
        content = text[pos:end].rstrip(".,;")
    if content is None:
        return None
    content = content.strip()
    return content or None


def reference_answer(ground_truth: object) -> str | None:
    """Turn a dataset's ground truth into an answer string.

    Accepts plain answers (``"42"``, ``42``) and boxed ones (``"\\boxed{42}"``).
    Returns None for a missing or empty ground truth.
    """
    if ground_truth is None:
        return None
    text = str(ground_truth).strip()
    if _BOX_RE.search(text):
        return extract_boxed_answer(text)
    return text or None


# --------------------------------------------------------------------------- fast path

_TEXT_WRAPPER_RE = re.compile(r"\\(?:text|textbf|textrm|textnormal|mathrm|mathbf|mbox)\{([^{}]*)\}")
_SPACING_RE = re.compile(r"\\(?:[,;:! ]|q?quad(?![A-Za-z]))")
_DELIM_SIZE_RE = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])")
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_INT_RE = re.compile(r"^[+-]?\d+$")
_DECIMAL_RE = re.compile(r"^[+-]?(?:\d+\.\d*|\.\d+)$")
_SLASH_FRAC_RE = re.compile(r"^([+-]?)(\d+)/(\d+)$")
_LATEX_FRAC_RE = re.compile(r"^([+-]?)\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}$")


def normalize_answer(answer: str) -> str:
    """Cheap, conservative LaTeX normalisation used for the string fast path.

    Drops surrounding ``$``, ``\\left``/``\\right``, spacing commands, ``\\text{}``
    wrappers, degree and percent signs, whitespace and a trailing period; maps
    ``\\dfrac``/``\\tfrac`` to ``\\frac``; adds braces to ``\\frac12`` and
    ``\\sqrt2``; removes thousands separators (``1,000``) and leading zeros of
    integers (``025``).  Two answers with the same normal form are equivalent.
    """
    s = answer.strip()
    while len(s) >= 2 and s[0] == "$" and s[-1] == "$":
        s = s[1:-1].strip()
    s = _DELIM_SIZE_RE.sub("", s)
    s = _SPACING_RE.sub(" ", s)
    s = _TEXT_WRAPPER_RE.sub(r"\1", s)
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "", s)
    s = s.replace("\\%", "").replace("%", "")
    # "\pi r" must not become "\pir": keep a command's separation from a following letter.
    s = re.sub(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])", r"\1{}", s)
    s = re.sub(r"\s+", "", s)
    s = re.sub(r"\\frac([0-9A-Za-z])([0-9A-Za-z])", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\{([^{}]*)\}([0-9A-Za-z])", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac([0-9A-Za-z])\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\sqrt([0-9A-Za-z])", r"\\sqrt{\1}", s)
    s = s.rstrip(".")
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    if _INT_RE.match(s):
        s = str(int(s))
    return s


def _exact_number(normalized: str) -> tuple[Fraction, bool] | None:
    """Parse an integer, decimal or simple fraction; returns (value, is_decimal)."""
    if _INT_RE.match(normalized):
        return Fraction(int(normalized)), False
    if _DECIMAL_RE.match(normalized):
        return Fraction(normalized), True
    match = _SLASH_FRAC_RE.match(normalized) or _LATEX_FRAC_RE.match(normalized)
    if match:
        sign, num, den = match.groups()
        if int(den) == 0:
            return None
        value = Fraction(int(num), int(den))
        return (-value if sign == "-" else value), False
    return None


def fast_equivalence(pred: str, ref: str) -> bool | None:
    """Decide equivalence without math-verify when it is cheap and safe to do so.

    Returns True for equal normal forms or equal exact numbers, False for two
    different exact numbers when no decimal is involved (``25`` vs ``26``,
    ``1/3`` vs ``1/2``), and None (undecided) otherwise.  A decimal that differs
    from a fraction stays undecided because math-verify treats rounded decimals
    (``0.333333`` vs ``1/3``) as equal.
    """
    p, r = normalize_answer(pred), normalize_answer(ref)
    if not p or not r:
        return False
    if p == r:
        return True
    p_num, r_num = _exact_number(p), _exact_number(r)
    if p_num is None or r_num is None:
        return None
    if p_num[0] == r_num[0]:
        return True
    if not p_num[1] and not r_num[1]:
        return False
    return None


# --------------------------------------------------------------------------- math-verify path

_math_verify_quieted = False


def _boxed(answer: str) -> str:
    return "\\boxed{" + answer + "}"


def math_verify_equal(pred: str, ref: str) -> bool:
    """math-verify equivalence of two bare answers, **without** any time limit.

    Both answers are wrapped in ``\\boxed{}`` and parsed with math-verify's
    default (LaTeX + plain expression) extraction; ``ref`` is the gold side of the
    (asymmetric) ``verify``.  math-verify's own signal-based timeouts are disabled
    because they only work in the main thread; callers must impose a limit (see
    :func:`answers_equivalent`).  This function runs inside the time-limit helper.
    """
    global _math_verify_quieted
    from math_verify import parse, verify

    if not _math_verify_quieted:
        # It warns once that its own timeout is off; that is deliberate here.
        logging.getLogger("math_verify").setLevel(logging.ERROR)
        _math_verify_quieted = True
    gold = parse(_boxed(ref), parsing_timeout=None)
    target = parse(_boxed(pred), parsing_timeout=None)
    if not gold or not target:
        return False
    return bool(verify(gold, target, timeout_seconds=None))


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _limited_math_verify(pred: str, ref: str, timeout_s: float, limiter: ProcessTimeLimiter | None) -> bool:
    try:
        if limiter is None:
            return bool(run_with_time_limit(math_verify_equal, pred, ref, timeout_s=timeout_s))
        return bool(limiter.run(math_verify_equal, pred, ref, timeout_s=timeout_s))
    except TimeLimitExceeded:
        logger.warning("math-verify timed out after %.3gs on %r vs %r", timeout_s, _short(pred), _short(ref))
    except Exception:  # a reward must never crash training
        logger.warning("math-verify failed on %r vs %r", _short(pred), _short(ref), exc_info=True)
    return False


@functools.lru_cache(maxsize=65536)
def _cached_math_verify(pred: str, ref: str, timeout_s: float) -> bool:
    return _limited_math_verify(pred, ref, timeout_s, None)


def answers_equivalent(
    pred: str | None,
    ref: str | None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    use_fast_path: bool = True,
    limiter: ProcessTimeLimiter | None = None,
) -> bool:
    """Whether answer ``pred`` is mathematically equivalent to reference ``ref``.

    Empty or missing answers are never equivalent to anything.  The fast path
    (:func:`fast_equivalence`) settles common cases without math-verify; the rest
    go to math-verify in a helper process, limited to ``timeout_s`` seconds (plus
    the limiter's kill grace).  A timeout or an internal error counts as "not
    equivalent" and is logged.  Safe to call from any thread; blocking, so from
    asyncio use ``loop.run_in_executor``.

    Results of the default limiter are cached per ``(pred, ref, timeout_s)``.
    """
    if pred is None or ref is None:
        return False
    pred, ref = pred.strip(), ref.strip()
    if not pred or not ref:
        return False
    if use_fast_path:
        decided = fast_equivalence(pred, ref)
        if decided is not None:
            return decided
    if limiter is None:
        return _cached_math_verify(pred, ref, float(timeout_s))
    return _limited_math_verify(pred, ref, float(timeout_s), limiter)
