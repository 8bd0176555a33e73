"""Population metrics for B-Trans evaluation (pure: numpy and the standard library only).

Every metric here works on already-collected samples, independent of the engine that made them. The
conventions shared by all functions:

* A *problem* (prompt) has ``n`` sampled responses. For B-Trans each response comes from a different
  "mind" (one latent draw per sequence); for the temperature baseline each comes from one more sample.
* Correctness is given per response as a bool (``correct_per_problem[i][j]``).
* Final answers are given already normalised: equal strings / bucket ids mean the same answer. ``None``
  means "no parsable answer" (it takes a place in a subset but never votes).
* Embeddings are rows of a 2-D array; cosine similarity is computed on L2-normalised rows.

Formulas (LaTeX-ish, ``C(a, b)`` is the binomial coefficient):

* Pass@K for one problem (Chen et al. 2021 unbiased estimator)::

      pass@K = 1 - C(n - c, K) / C(n, K) = 1 - prod_{i = n - c + 1}^{n} (1 - K / i)

  averaged over problems.
* maj@K for one problem: the probability, over a uniformly random K-subset of the n samples, that the
  majority vote of the subset's (non-``None``) answers is correct; a tie among t + 1 top answers that
  includes the correct one earns 1 / (t + 1) (a uniformly random tie-break, in expectation).
* accuracy = mean over problems of c / n (equals pass@1).
* semantic diversity of one prompt = mean over pairs i < j of (1 - cos(e_i, e_j)); averaged over prompts.
* step-wise consistency of one response = mean over consecutive steps of cos(s_t, s_{t+1}); averaged over
  responses with at least two steps.
* informative groups = fraction of problems with 0 < c < n (a binary reward then gives GRPO a non-zero
  advantage in that group: the exploration signal GRPO can use).
* degenerate rate = fraction of responses that loop (>= half of their word 4-grams repeat an earlier one) or
  were truncated (finish reason "length").

Intervals over problems and paired differences between methods: ``btrans_verl.eval.statistics``.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Literal

import numpy as np

__all__ = [
    "SamplingSettings",
    "Encoder",
    "pass_at_k",
    "mean_pass_at_k",
    "pass_at_k_curve",
    "maj_at_k",
    "mean_maj_at_k",
    "MajMethod",
    "DEFAULT_ENUMERATE_LIMIT",
    "accuracy",
    "pass_at_k_per_problem",
    "maj_at_k_per_problem",
    "is_informative",
    "informative_groups_per_problem",
    "informative_group_rate",
    "is_repetition_loop",
    "degenerate_rate",
    "cosine_similarity_matrix",
    "semantic_diversity_of_set",
    "semantic_diversity",
    "semantic_diversity_of_texts",
    "split_steps",
    "StepConsistency",
    "step_consistency_of_response",
    "step_consistency_from_embeddings",
    "step_consistency",
]

Answer = Hashable | None
Encoder = Callable[[Sequence[str]], np.ndarray]
MajMethod = Literal["exact", "enumerate", "monte_carlo"]

#: ``maj_at_k(method="enumerate")`` refuses to enumerate more K-subsets than this.
DEFAULT_ENUMERATE_LIMIT = 200_000


# --------------------------------------------------------------------------------------------------------
# How the samples were made (every reported number carries this)
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplingSettings:
    """How one method's samples were generated; stated next to every figure in plots and reports.

    Attributes:
        method: display name, e.g. ``"B-Trans minds"`` or ``"temperature"``.
        n: samples (responses) per problem.
        sigma: B-Trans latent standard deviation (``0.0`` for the plain-temperature baseline).
        temperature: sampling temperature (``0.0`` = greedy).
        seed: base random seed of the run.
        sigma_scale: what sigma is relative to (``absolute``, or ``weight_rms``: relative sigma).
    """

    method: str
    n: int
    sigma: float
    temperature: float
    seed: int
    sigma_scale: str = "absolute"

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")

    def label(self) -> str:
        """Legend label stating every setting, e.g. ``B-Trans minds (n=16, σ=0.3, T=0, seed=0)``."""
        sigma = f"{self.sigma:g}" + ("" if self.sigma_scale == "absolute" else f"·{self.sigma_scale}")
        return f"{self.method} (n={self.n}, σ={sigma}, T={self.temperature:g}, seed={self.seed})"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------------
# Pass@K
# --------------------------------------------------------------------------------------------------------
def _check_nck(n: int, c: int, k: int) -> None:
    if n < 1:
        raise ValueError(f"need n >= 1 samples, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if k < 1:
        raise ValueError(f"K must be >= 1, got K={k}")
    if k > n:
        raise ValueError(f"pass@K needs n >= K samples: K={k} > n={n}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@K of one problem from ``n`` samples of which ``c`` are correct.

    ``pass@K = 1 - C(n-c, K) / C(n, K)``, computed in the numerically stable product form
    ``1 - prod_{i=n-c+1}^{n} (1 - K/i)`` (no huge binomials). Exactly 1.0 when ``n - c < K``.

    Raises:
        ValueError: if ``K > n``, ``K < 1``, ``n < 1`` or ``c`` outside ``[0, n]``.
    """
    _check_nck(n, c, k)
    if n - c < k:
        return 1.0
    i = np.arange(n - c + 1, n + 1, dtype=np.float64)
    return float(1.0 - np.prod(1.0 - k / i))


def _counts(correct_per_problem: Sequence[Sequence[bool]]) -> list[tuple[int, int]]:
    if len(correct_per_problem) == 0:
        raise ValueError("need at least one problem")
    out = []
    for i, row in enumerate(correct_per_problem):
        flags = [bool(x) for x in row]
        if not flags:
            raise ValueError(f"problem {i} has no samples")
        out.append((len(flags), sum(flags)))
    return out


def mean_pass_at_k(correct_per_problem: Sequence[Sequence[bool]], k: int) -> float:
    """Mean over problems of :func:`pass_at_k` (``n``, ``c`` read from each problem's correctness flags).

    ``pass@K = (1/P) * sum_p [1 - C(n_p - c_p, K) / C(n_p, K)]``. Problems may have different ``n_p``;
    every ``n_p`` must be ``>= K``.
    """
    return float(np.mean([pass_at_k(n, c, k) for n, c in _counts(correct_per_problem)]))


def pass_at_k_curve(correct_per_problem: Sequence[Sequence[bool]],
                    ks: Sequence[int] = (1, 2, 4, 8, 16)) -> dict[int, float]:
    """``{K: mean pass@K}`` for every ``K`` in ``ks`` that every problem has enough samples for.

    Values of ``K`` larger than the smallest per-problem ``n`` are left out (pass@K cannot be estimated
    without bias from fewer than K samples).
    """
    counts = _counts(correct_per_problem)
    n_min = min(n for n, _ in counts)
    return {int(k): float(np.mean([pass_at_k(n, c, k) for n, c in counts]))
            for k in sorted(set(ks)) if k <= n_min}


def accuracy(correct_per_problem: Sequence[Sequence[bool]]) -> float:
    """Mean over problems of the per-problem fraction correct: ``(1/P) * sum_p c_p / n_p`` (= pass@1)."""
    return float(np.mean([c / n for n, c in _counts(correct_per_problem)]))


def pass_at_k_per_problem(correct_per_problem: Sequence[Sequence[bool]], k: int) -> list[float]:
    """:func:`pass_at_k` of every problem (K=1: its fraction correct)."""
    return [pass_at_k(n, c, k) for n, c in _counts(correct_per_problem)]


# --------------------------------------------------------------------------------------------------------
# Exploration signal for GRPO, and degenerate texts
# --------------------------------------------------------------------------------------------------------
def is_informative(rewards: Sequence[float]) -> bool:
    """A group whose rewards are not all equal: GRPO's group-normalised advantage is non-zero in it (the rule of
    both this report and the training metric `btrans/informative_groups`)."""
    return len({float(r) for r in rewards}) > 1


def informative_groups_per_problem(correct_per_problem: Sequence[Sequence[bool]]) -> list[float]:
    """1.0 for a problem whose samples are neither all correct nor all wrong, else 0.0. With a binary reward
    such a group is exactly one where GRPO's group-normalised advantage is non-zero: the samples teach
    something. Needs n >= 2 samples per problem."""
    for i, (n, _) in enumerate(_counts(correct_per_problem)):
        if n < 2:
            raise ValueError(f"problem {i}: an informative group needs n >= 2 samples, got {n}")
    return [float(is_informative(row)) for row in correct_per_problem]


def informative_group_rate(correct_per_problem: Sequence[Sequence[bool]]) -> float:
    """Fraction of problems whose group gives GRPO a non-zero advantage (:func:`informative_groups_per_problem`)."""
    return float(np.mean(informative_groups_per_problem(correct_per_problem)))


def distinct_answers_per_problem(answers_per_problem: Sequence[Sequence[Answer]]) -> list[float]:
    """How many different final answers each problem's samples gave (their normal forms; a response without an
    answer gives none): 1 when every sample agrees, n when all differ, 0 when none answered. The diversity that
    GRPO and majority votes see."""
    return [float(len({a for a in row if a is not None})) for row in answers_per_problem]


def mean_logprob_per_problem(logprobs_per_sample: Sequence[Sequence[float]]) -> list[float]:
    """Per problem, the mean over its samples of a per-sample value (here: the mean mind's log-probability per
    token of the sample, :func:`btrans_verl.eval.engine.score_under_mean_mind`)."""
    out = []
    for i, row in enumerate(logprobs_per_sample):
        if not row or not all(math.isfinite(v) for v in row):
            raise ValueError(f"problem {i}: need finite per-sample log-probabilities, got {list(row)[:4]}")
        out.append(float(np.mean(row)))
    return out


REPEAT_NGRAM = 4  # word n-gram length of the repetition test
REPEAT_SHARE = 0.5  # share of repeated n-grams from which a text is a repetition loop


def is_repetition_loop(text: str, ngram: int = REPEAT_NGRAM, share: float = REPEAT_SHARE) -> bool:
    """A text stuck in a loop: at least ``share`` of its word ``ngram``-grams repeat an earlier one (texts with
    fewer than ``2 * ngram`` words never are)."""
    words = text.split()
    if len(words) < 2 * ngram:
        return False
    grams = [tuple(words[i:i + ngram]) for i in range(len(words) - ngram + 1)]
    return (len(grams) - len(set(grams))) / len(grams) >= share


def degenerate_rate(responses_per_problem: Sequence[Sequence[str]],
                    finish_reasons_per_problem: Sequence[Sequence[str | None]] | None = None) -> float:
    """Fraction of responses that are degenerate: a repetition loop (:func:`is_repetition_loop`) or, when finish
    reasons are given, truncated (finish reason "length": the token budget ran out before an answer)."""
    flat = [t for ts in responses_per_problem for t in ts]
    if not flat:
        raise ValueError("need at least one response")
    reasons = [r for rs in finish_reasons_per_problem for r in rs] if finish_reasons_per_problem is not None \
        else [None] * len(flat)
    if len(reasons) != len(flat):
        raise ValueError(f"{len(reasons)} finish reasons for {len(flat)} responses")
    return sum(is_repetition_loop(t) or r == "length" for t, r in zip(flat, reasons)) / len(flat)


# --------------------------------------------------------------------------------------------------------
# maj@K
# --------------------------------------------------------------------------------------------------------
_CORRECT = object()  # bucket id of "the correct answer" when correctness flags are given


def _buckets(answers: Sequence[Answer], reference: Answer,
             correct: Sequence[bool] | None) -> tuple[int, list[int], int]:
    """(size of the correct bucket, sizes of the other buckets, number of abstentions)."""
    if correct is not None:
        if reference is not None:
            raise ValueError("give either reference or correct, not both")
        if len(correct) != len(answers):
            raise ValueError(f"{len(correct)} correctness flags for {len(answers)} answers")
        keyed: list[object] = [_CORRECT if ok else a for a, ok in zip(answers, correct)]
        correct_key: object = _CORRECT
    else:
        if reference is None:
            raise ValueError("give a reference answer or per-answer correctness flags")
        keyed = list(answers)
        correct_key = reference
    tally = Counter(a for a in keyed if a is not None)
    n_correct = tally.pop(correct_key, 0)
    n_abstain = sum(1 for a in keyed if a is None)
    return n_correct, sorted(tally.values(), reverse=True), n_abstain


def _vote_credit(subset_keys: Sequence[object], correct_key: object) -> Fraction:
    """Credit of one subset: 1 if the correct answer wins outright, 1/(t+1) if tied with t others."""
    tally = Counter(a for a in subset_keys if a is not None)
    mine = tally.get(correct_key, 0)
    if mine == 0:
        return Fraction(0)
    top = max(tally.values())
    if mine < top:
        return Fraction(0)
    return Fraction(1, sum(1 for v in tally.values() if v == top))


def _maj_exact(n_correct: int, others: Sequence[int], n_abstain: int, k: int) -> Fraction:
    """Exact expectation over all C(n, K) subsets, by dynamic programming over bucket counts.

    For each count ``a >= 1`` of correct answers in the subset, a DP over the wrong buckets tracks
    ``f[s][t]`` = number of ways to pick ``s`` wrong answers with every wrong bucket picked ``<= a`` times
    and exactly ``t`` buckets picked ``a`` times (ties). Abstentions fill the remaining ``K - a - s``
    places. Cost ``O(K^3 * m)`` for ``m`` wrong buckets, independent of ``C(n, K)``.
    """
    n = n_correct + sum(others) + n_abstain
    total = math.comb(n, k)
    acc = Fraction(0)
    for a in range(1, min(k, n_correct) + 1):
        rest = k - a
        tmax = rest // a
        f = [[0] * (tmax + 1) for _ in range(rest + 1)]
        f[0][0] = 1
        for size in others:
            g = [[0] * (tmax + 1) for _ in range(rest + 1)]
            for s in range(rest + 1):
                row = f[s]
                for t in range(tmax + 1):
                    w = row[t]
                    if not w:
                        continue
                    for j in range(0, min(size, a, rest - s) + 1):
                        g[s + j][t + (j == a)] += w * math.comb(size, j)
            f = g
        ways_a = Fraction(0)
        for s in range(rest + 1):
            fill = math.comb(n_abstain, rest - s)
            if not fill:
                continue
            for t in range(tmax + 1):
                if f[s][t]:
                    ways_a += Fraction(f[s][t] * fill, t + 1)
        acc += math.comb(n_correct, a) * ways_a
    return acc / total


def maj_at_k(answers: Sequence[Answer], k: int, *, reference: Answer = None,
             correct: Sequence[bool] | None = None, method: MajMethod = "exact",
             num_draws: int = 4096, seed: int = 0,
             enumerate_limit: int = DEFAULT_ENUMERATE_LIMIT) -> float:
    """maj@K of one problem: expected correctness of the majority vote of a random K-subset of n answers.

    ``maj@K = (1 / C(n, K)) * sum_{S subset, |S| = K} credit(S)`` where ``credit(S)`` is 1 if the correct
    answer has strictly the most votes in ``S``, ``1/(t+1)`` if it ties with ``t`` other answers for the
    most votes (uniform random tie-break, in expectation), and 0 otherwise (including when ``S`` holds no
    correct answer or only ``None``). ``None`` answers take a place in ``S`` but never vote.

    The correct answer is given either as ``reference`` (an answer equal to it is correct) or as per-answer
    ``correct`` flags (all flagged answers count as one bucket, the correct one; the others keep their own
    buckets).

    Estimation (``method``):
        * ``"exact"`` (default): the exact average over all ``C(n, K)`` subsets, computed by a dynamic
          programme over answer-bucket counts (see :func:`_maj_exact`) in ``O(K^3 * buckets)`` time, so it
          is exact for every ``n`` and ``K``; no sampling.
        * ``"enumerate"``: the same average by brute-force enumeration of every K-subset; refused when
          ``C(n, K) > enumerate_limit`` (a cross-check of ``"exact"``).
        * ``"monte_carlo"``: mean credit over ``num_draws`` K-subsets drawn uniformly without replacement
          with ``numpy.random.default_rng(seed)``; standard error ``<= 0.5 / sqrt(num_draws)``.

    Raises:
        ValueError: if ``K > n`` or ``K < 1``, or neither/both of ``reference`` / ``correct`` are given.
    """
    n = len(answers)
    if n < 1:
        raise ValueError("need at least one answer")
    if k < 1:
        raise ValueError(f"K must be >= 1, got K={k}")
    if k > n:
        raise ValueError(f"maj@K needs n >= K samples: K={k} > n={n}")
    n_correct, others, n_abstain = _buckets(answers, reference, correct)
    if method == "exact":
        return float(_maj_exact(n_correct, others, n_abstain, k))

    # subset methods work on the keyed answers
    if correct is not None:
        keyed: list[object] = [_CORRECT if ok else a for a, ok in zip(answers, correct)]
        correct_key: object = _CORRECT
    else:
        keyed, correct_key = list(answers), reference
    if method == "enumerate":
        total = math.comb(n, k)
        if total > enumerate_limit:
            raise ValueError(f"C({n}, {k}) = {total} subsets exceed enumerate_limit={enumerate_limit}; "
                             "use method='exact'")
        s = sum((_vote_credit([keyed[i] for i in idx], correct_key)
                 for idx in itertools.combinations(range(n), k)), Fraction(0))
        return float(s / total)
    if method == "monte_carlo":
        if num_draws < 1:
            raise ValueError(f"num_draws must be >= 1, got {num_draws}")
        rng = np.random.default_rng(seed)
        s = Fraction(0)
        for _ in range(num_draws):
            idx = rng.choice(n, size=k, replace=False)
            s += _vote_credit([keyed[i] for i in idx], correct_key)
        return float(s / num_draws)
    raise ValueError(f"unknown maj@K method {method!r}")


def mean_maj_at_k(answers_per_problem: Sequence[Sequence[Answer]], k: int, *,
                  references: Sequence[Answer] | None = None,
                  correct_per_problem: Sequence[Sequence[bool]] | None = None,
                  method: MajMethod = "exact", num_draws: int = 4096, seed: int = 0) -> float:
    """Mean over problems of :func:`maj_at_k` (give ``references`` or ``correct_per_problem``).

    With ``method="monte_carlo"`` problem ``p`` uses seed ``seed + p``, so results are reproducible.
    """
    P = len(answers_per_problem)
    if P == 0:
        raise ValueError("need at least one problem")
    if (references is None) == (correct_per_problem is None):
        raise ValueError("give exactly one of references / correct_per_problem")
    if references is not None and len(references) != P:
        raise ValueError(f"{len(references)} references for {P} problems")
    if correct_per_problem is not None and len(correct_per_problem) != P:
        raise ValueError(f"{len(correct_per_problem)} correctness rows for {P} problems")
    return float(np.mean(maj_at_k_per_problem(answers_per_problem, k, references=references,
                                              correct_per_problem=correct_per_problem, method=method,
                                              num_draws=num_draws, seed=seed)))


def maj_at_k_per_problem(answers_per_problem: Sequence[Sequence[Answer]], k: int, *,
                         references: Sequence[Answer] | None = None,
                         correct_per_problem: Sequence[Sequence[bool]] | None = None,
                         method: MajMethod = "exact", num_draws: int = 4096, seed: int = 0) -> list[float]:
    """:func:`maj_at_k` of every problem (what :func:`mean_maj_at_k` averages; intervals resample it)."""
    return [maj_at_k(answers, k, reference=None if references is None else references[p],
                     correct=None if correct_per_problem is None else correct_per_problem[p],
                     method=method, num_draws=num_draws, seed=seed + p)
            for p, answers in enumerate(answers_per_problem)]


# --------------------------------------------------------------------------------------------------------
# Embedding-based metrics
# --------------------------------------------------------------------------------------------------------
def _as_matrix(x: np.ndarray | Sequence[Sequence[float]], what: str) -> np.ndarray:
    m = np.asarray(x, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D array (rows = vectors), got shape {m.shape}")
    return m


def _normalise_rows(m: np.ndarray, what: str) -> np.ndarray:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"{what}: cosine similarity is undefined for a zero vector")
    return m / norms


def cosine_similarity_matrix(x: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """``S[i, j] = <x_i, x_j> / (|x_i| |x_j|)`` for the rows of ``x`` (shape ``(m, d)`` -> ``(m, m)``)."""
    m = _normalise_rows(_as_matrix(x, "cosine_similarity_matrix"), "cosine_similarity_matrix")
    return np.clip(m @ m.T, -1.0, 1.0)


def semantic_diversity_of_set(embeddings: np.ndarray | Sequence[Sequence[float]]) -> float:
    """Mean pairwise cosine distance of one prompt's response embeddings.

    ``D = (2 / (m (m - 1))) * sum_{i < j} (1 - cos(e_i, e_j))`` for ``m >= 2`` rows; ranges ``[0, 2]``
    (0 when all responses embed identically).

    Raises:
        ValueError: for fewer than two rows or a zero row.
    """
    x = _as_matrix(embeddings, "semantic_diversity_of_set")
    if x.shape[0] < 2:
        raise ValueError(f"semantic diversity needs >= 2 responses, got {x.shape[0]}")
    s = cosine_similarity_matrix(x)
    iu = np.triu_indices(x.shape[0], k=1)
    return float(np.mean(1.0 - s[iu]))


def semantic_diversity(embeddings_per_prompt: Sequence[np.ndarray | Sequence[Sequence[float]]]) -> float:
    """Mean over prompts of :func:`semantic_diversity_of_set`: ``(1/P) * sum_p D_p``.

    Every prompt must have at least two responses.
    """
    if len(embeddings_per_prompt) == 0:
        raise ValueError("need at least one prompt")
    return float(np.mean([semantic_diversity_of_set(e) for e in embeddings_per_prompt]))


def split_steps(response: str) -> list[str]:
    """Reasoning steps of a response: its lines, stripped, without empty/whitespace-only lines."""
    return [line.strip() for line in response.splitlines() if line.strip()]


@dataclass(frozen=True)
class StepConsistency:
    """Step-wise consistency over a set of responses.

    Attributes:
        score: mean over scored responses of their mean consecutive-step cosine similarity; ``nan`` when
            no response has two steps.
        num_scored: responses with ``>= 2`` steps (those averaged).
        num_excluded: responses with ``< 2`` steps (left out of the mean, counted here).
    """

    score: float
    num_scored: int
    num_excluded: int

    def to_dict(self) -> dict[str, object]:
        return {"score": None if math.isnan(self.score) else self.score,
                "num_scored": self.num_scored, "num_excluded": self.num_excluded}


def step_consistency_of_response(step_embeddings: np.ndarray | Sequence[Sequence[float]]) -> float:
    """``(1 / (T - 1)) * sum_{t=1}^{T-1} cos(s_t, s_{t+1})`` for ``T >= 2`` step embeddings (rows, in order)."""
    x = _as_matrix(step_embeddings, "step_consistency_of_response")
    if x.shape[0] < 2:
        raise ValueError(f"step consistency needs >= 2 steps, got {x.shape[0]}")
    u = _normalise_rows(x, "step_consistency_of_response")
    return float(np.mean(np.clip(np.sum(u[:-1] * u[1:], axis=1), -1.0, 1.0)))


def step_consistency_from_embeddings(
        step_embeddings_per_response: Sequence[np.ndarray | Sequence[Sequence[float]]]) -> StepConsistency:
    """Average :func:`step_consistency_of_response` over responses; those with < 2 steps are excluded.

    ``score = (1/R') * sum_{r : T_r >= 2} consistency_r`` where ``R'`` counts responses with two steps.
    Each item is a ``(T_r, d)`` array of the response's step embeddings, in order (``T_r`` may be 0 or 1).
    """
    scores: list[float] = []
    excluded = 0
    for e in step_embeddings_per_response:
        x = np.asarray(e, dtype=np.float64)
        if x.size == 0 or (x.ndim == 2 and x.shape[0] < 2):
            excluded += 1
            continue
        scores.append(step_consistency_of_response(x))
    score = float(np.mean(scores)) if scores else float("nan")
    return StepConsistency(score=score, num_scored=len(scores), num_excluded=excluded)


def step_consistency(responses: Sequence[str], encode: Encoder) -> StepConsistency:
    """Step-wise consistency of raw responses.

    Each response is split with :func:`split_steps`; responses with < 2 steps are excluded (counted in
    ``num_excluded``); the steps of the others are embedded in one batched ``encode`` call
    (``list[str] -> (m, d) array``) and scored with :func:`step_consistency_of_response`.
    """
    steps = [split_steps(r) for r in responses]
    kept = [ss for ss in steps if len(ss) >= 2]
    excluded = len(steps) - len(kept)
    if not kept:
        return StepConsistency(score=float("nan"), num_scored=0, num_excluded=excluded)
    flat = [s for ss in kept for s in ss]
    emb = _as_matrix(encode(flat), "step_consistency: encoder output")
    if emb.shape[0] != len(flat):
        raise ValueError(f"encoder returned {emb.shape[0]} rows for {len(flat)} steps")
    scores, pos = [], 0
    for ss in kept:
        scores.append(step_consistency_of_response(emb[pos:pos + len(ss)]))
        pos += len(ss)
    return StepConsistency(score=float(np.mean(scores)), num_scored=len(kept), num_excluded=excluded)


def semantic_diversity_of_texts(responses_per_prompt: Sequence[Sequence[str]], encode: Encoder) -> float:
    """:func:`semantic_diversity` of raw responses, embedded with one batched ``encode`` call."""
    flat = [r for rs in responses_per_prompt for r in rs]
    emb = _as_matrix(encode(flat), "semantic_diversity_of_texts: encoder output")
    if emb.shape[0] != len(flat):
        raise ValueError(f"encoder returned {emb.shape[0]} rows for {len(flat)} responses")
    out, pos = [], 0
    for rs in responses_per_prompt:
        out.append(emb[pos:pos + len(rs)])
        pos += len(rs)
    return semantic_diversity(out)

