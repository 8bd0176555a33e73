"""Label-free rewards by majority vote over a group of responses (TTRL-style).

For one prompt, a group of ``n_votes`` candidate responses is sampled.  Each
candidate's final answer (last ``\\boxed{}``) is extracted and equivalent
answers are clustered into vote buckets; the largest bucket's answer becomes
the pseudo-label, and each candidate is rewarded by comparing its answer with
the pseudo-label.  The ground truth, when known, is used **only** for metrics.

Rules (all deterministic):

* **Failed sessions** (``responses[i] is None`` or ``failed[i]``) do not vote and
  get reward 0.0.  The rest of the group is voted on as usual.
* **Empty answers** (no box, unterminated box, empty box) do not vote, so they
  can never be the majority.  If no candidate has an answer there is no
  pseudo-label and every reward is 0.0 (``has_pseudo_label`` = 0 in metrics).
* **Clustering**: candidates are visited in order; an answer joins the first
  existing bucket whose representative (the bucket's first answer) it is
  equivalent to (same normal form, or math-verify with a time limit, the
  representative being the gold side), else it opens a new bucket.
* **Ties** between equally large buckets go to the bucket whose first member
  comes earliest in candidate order.
* **Rewards**: ``scheme(outcome)`` where the outcome is CORRECT if the candidate
  is in the winning bucket or its answer is equivalent to the pseudo-label,
  NO_ANSWER if it has no answer, else WRONG.  With the default ``binary``
  scheme this is TTRL's 1/0 reward.
* **n_votes > n_samples** (TTRL's vote-with-more, train-with-fewer): all
  ``n_votes`` candidates vote, rewards are returned for the **first**
  ``n_samples`` candidates only, i.e. those are the ones trained on.  Callers
  who want a random training subset shuffle the group before calling.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from btrans_verl.rewards.math_answer import (
    DEFAULT_TIMEOUT_S,
    answers_equivalent,
    extract_boxed_answer,
    fast_equivalence,
    normalize_answer,
    reference_answer,
)
from btrans_verl.rewards.schemes import Outcome, get_scheme

logger = logging.getLogger(__name__)

__all__ = [
    "VoteBucket",
    "GroupMetrics",
    "GroupVoteResult",
    "majority_vote_group",
    "aggregate_group_metrics",
]


@dataclass
class VoteBucket:
    """Candidates whose answers were judged equivalent."""

    representative: str
    members: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass
class GroupMetrics:
    """Per-group metrics.  Ground-truth metrics are None when no ground truth was given.

    Attributes:
        label_accuracy: 1.0 if the pseudo-label is equivalent to the ground truth
            (0.0 when there is no pseudo-label).
        reward_accuracy: fraction of trained (first ``n_samples``), non-failed
            candidates whose majority-vote reward equals the reward the same
            scheme would give against the ground truth.
        majority_ratio: winning bucket size / number of valid votes (0.0 if none).
        pass_at_k: 1.0 if any of the ``k = n_votes`` candidates is correct
            against the ground truth (failed ones count as incorrect).
        distinct_answers: number of vote buckets.
        empty_answer_ratio: non-failed candidates without an answer / non-failed
            candidates (0.0 if all failed).
        distinct_latents: distinct non-None latent seeds among all candidates,
            None when the caller passed no seeds.
        failed_ratio: failed candidates / n_votes.
        has_pseudo_label: 1.0 if a pseudo-label exists, else 0.0.
        n_votes, n_samples, n_valid_votes: group sizes.
    """

    label_accuracy: float | None
    reward_accuracy: float | None
    majority_ratio: float
    pass_at_k: float | None
    distinct_answers: float
    empty_answer_ratio: float
    distinct_latents: float | None
    failed_ratio: float
    has_pseudo_label: float
    n_votes: float
    n_samples: float
    n_valid_votes: float

    def as_dict(self) -> dict[str, float]:
        """Metrics under TTRL-style names (``pass@k`` for :attr:`pass_at_k`); None values omitted."""
        out: dict[str, float] = {}
        for name, value in vars(self).items():
            if value is not None:
                out["pass@k" if name == "pass_at_k" else name] = float(value)
        return out


@dataclass
class GroupVoteResult:
    """Outcome of voting in one group.

    Attributes:
        rewards: one reward per trained candidate (the first ``n_samples``).
        pseudo_label: the winning bucket's representative answer, or None.
        answers: the extracted answer of every candidate (None if failed/empty).
        buckets: vote buckets in order of first appearance.
        winner: index into ``buckets`` of the winning bucket, or None.
        metrics: per-group metrics.
    """

    rewards: list[float]
    pseudo_label: str | None
    answers: list[str | None]
    buckets: list[VoteBucket]
    winner: int | None
    metrics: GroupMetrics


class _Comparator:
    """Answer equivalence with per-call and optional per-group time budgets."""

    def __init__(self, timeout_s: float, group_timeout_s: float | None) -> None:
        self.timeout_s = timeout_s
        self.deadline = None if group_timeout_s is None else time.monotonic() + group_timeout_s
        self.budget_exhausted = False

    def __call__(self, pred: str, ref: str) -> bool:
        decided = fast_equivalence(pred, ref)
        if decided is not None:
            return decided
        timeout_s = self.timeout_s
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                if not self.budget_exhausted:
                    logger.warning("majority vote: group time budget spent; undecided pairs count as different")
                self.budget_exhausted = True
                return False
            timeout_s = min(timeout_s, remaining)
        return answers_equivalent(pred, ref, timeout_s=timeout_s, use_fast_path=False)


def _check_lengths(n_votes: int, **sequences: Sequence | None) -> None:
    for name, seq in sequences.items():
        if seq is not None and len(seq) != n_votes:
            raise ValueError(f"{name} has {len(seq)} entries for {n_votes} candidates")


def _cluster(answers: Sequence[str | None], same: _Comparator) -> list[VoteBucket]:
    buckets: list[VoteBucket] = []
    bucket_of_form: dict[str, int] = {}
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        form = normalize_answer(answer)
        chosen = bucket_of_form.get(form)
        if chosen is None:
            chosen = next((b for b, bucket in enumerate(buckets) if same(answer, bucket.representative)), None)
        if chosen is None:
            buckets.append(VoteBucket(representative=answer))
            chosen = len(buckets) - 1
        bucket_of_form[form] = chosen
        buckets[chosen].members.append(index)
    return buckets


def majority_vote_group(
    responses: Sequence[str | None],
    *,
    ground_truth: object = None,
    n_samples: int | None = None,
    failed: Sequence[bool] | None = None,
    latent_seeds: Sequence[Hashable | None] | None = None,
    scheme: str = "binary",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    group_timeout_s: float | None = None,
    extract: Callable[[str], str | None] = extract_boxed_answer,
) -> GroupVoteResult:
    """Majority-vote rewards for the candidate responses to one prompt.

    Args:
        responses: the ``n_votes`` candidate responses; None marks a failed session.
        ground_truth: reference answer, used only for metrics.
        n_samples: how many candidates (the first ones) get rewards; default all.
        failed: optional per-candidate failure flags (same effect as None).
        latent_seeds: optional per-candidate latent seeds, for ``distinct_latents``.
        scheme: reward scheme name (see :mod:`btrans_verl.rewards.schemes`).
        timeout_s: time limit of one math-verify comparison.
        group_timeout_s: optional budget for all math-verify work of this group;
            once spent, undecided pairs count as different answers.
        extract: answer extractor applied to each response.

    Returns:
        :class:`GroupVoteResult`; see the module docstring for the rules.
    """
    scheme_fn = get_scheme(scheme)
    n_votes = len(responses)
    if n_votes == 0:
        raise ValueError("majority vote needs at least one candidate")
    n_samples = n_votes if n_samples is None else n_samples
    if not 1 <= n_samples <= n_votes:
        raise ValueError(f"n_samples must be in [1, n_votes={n_votes}], got {n_samples}")
    _check_lengths(n_votes, failed=failed, latent_seeds=latent_seeds)

    is_failed = [responses[i] is None or bool(failed is not None and failed[i]) for i in range(n_votes)]
    answers: list[str | None] = []
    for response, dead in zip(responses, is_failed, strict=True):
        answer = None if dead else extract(response)
        answers.append(answer if answer is not None and normalize_answer(answer) else None)

    same = _Comparator(timeout_s, group_timeout_s)
    buckets = _cluster(answers, same)
    winner = max(range(len(buckets)), key=lambda b: buckets[b].size) if buckets else None  # first max wins ties
    pseudo_label = buckets[winner].representative if winner is not None else None
    winners = set(buckets[winner].members) if winner is not None else set()

    def vote_outcome(i: int) -> Outcome:
        if answers[i] is None:
            return Outcome.NO_ANSWER
        if i in winners or same(answers[i], pseudo_label):
            return Outcome.CORRECT
        return Outcome.WRONG

    rewards = [
        0.0 if is_failed[i] or pseudo_label is None else float(scheme_fn(vote_outcome(i))) for i in range(n_samples)
    ]

    metrics = _group_metrics(
        answers=answers,
        is_failed=is_failed,
        buckets=buckets,
        winner=winner,
        pseudo_label=pseudo_label,
        rewards=rewards,
        reference=reference_answer(ground_truth),
        latent_seeds=latent_seeds,
        scheme_fn=scheme_fn,
        same=same,
    )
    return GroupVoteResult(
        rewards=rewards,
        pseudo_label=pseudo_label,
        answers=answers,
        buckets=buckets,
        winner=winner,
        metrics=metrics,
    )


def _group_metrics(
    *,
    answers: Sequence[str | None],
    is_failed: Sequence[bool],
    buckets: Sequence[VoteBucket],
    winner: int | None,
    pseudo_label: str | None,
    rewards: Sequence[float],
    reference: str | None,
    latent_seeds: Sequence[Hashable | None] | None,
    scheme_fn: Callable[[Outcome], float],
    same: _Comparator,
) -> GroupMetrics:
    n_votes, n_samples = len(answers), len(rewards)
    n_failed = sum(is_failed)
    n_alive = n_votes - n_failed
    n_valid = sum(answer is not None for answer in answers)

    label_accuracy = reward_accuracy = pass_at_k = None
    if reference is not None:
        verdict_of_form: dict[str, bool] = {}

        def gt_outcome(i: int) -> Outcome:
            answer = answers[i]
            if answer is None:
                return Outcome.NO_ANSWER
            form = normalize_answer(answer)
            if form not in verdict_of_form:
                verdict_of_form[form] = same(answer, reference)
            return Outcome.CORRECT if verdict_of_form[form] else Outcome.WRONG

        label_accuracy = float(pseudo_label is not None and same(pseudo_label, reference))
        trained_alive = [i for i in range(n_samples) if not is_failed[i]]
        if trained_alive:
            matches = sum(rewards[i] == float(scheme_fn(gt_outcome(i))) for i in trained_alive)
            reward_accuracy = matches / len(trained_alive)
        pass_at_k = float(any(gt_outcome(i) is Outcome.CORRECT for i in range(n_votes) if not is_failed[i]))

    distinct_latents = None
    if latent_seeds is not None:
        distinct_latents = float(len({seed for seed in latent_seeds if seed is not None}))

    return GroupMetrics(
        label_accuracy=label_accuracy,
        reward_accuracy=reward_accuracy,
        majority_ratio=buckets[winner].size / n_valid if winner is not None else 0.0,
        pass_at_k=pass_at_k,
        distinct_answers=float(len(buckets)),
        empty_answer_ratio=(n_alive - n_valid) / n_alive if n_alive else 0.0,
        distinct_latents=distinct_latents,
        failed_ratio=n_failed / n_votes,
        has_pseudo_label=float(pseudo_label is not None),
        n_votes=float(n_votes),
        n_samples=float(n_samples),
        n_valid_votes=float(n_valid),
    )


def aggregate_group_metrics(
    groups: Iterable[GroupMetrics | Mapping[str, float]],
    prefix: str = "",
) -> dict[str, float]:
    """Mean of each metric over the groups that report it, plus ``num_groups``.

    Ground-truth metrics are averaged only over groups that had a ground truth;
    ``distinct_latents`` only over groups given seeds.  Keys get ``prefix``.
    """
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    num_groups = 0
    for group in groups:
        num_groups += 1
        values = group.as_dict() if isinstance(group, GroupMetrics) else group
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + float(value)
            counts[key] = counts.get(key, 0) + 1
    out = {f"{prefix}{key}": sums[key] / counts[key] for key in sums}
    out[f"{prefix}num_groups"] = float(num_groups)
    return out
