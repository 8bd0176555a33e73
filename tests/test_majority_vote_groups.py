"""TTRL-style majority vote on hand-made candidate groups, with metrics checked by hand."""

from __future__ import annotations

import time

import pytest

from btrans_verl.rewards.majority_vote import aggregate_group_metrics, majority_vote_group


def boxed(answer: str) -> str:
    return f"Some reasoning... so the answer is $\\boxed{{{answer}}}$."


def test_equivalent_latex_forms_vote_together():
    group = [boxed(r"\frac12"), boxed("3"), boxed("0.5"), boxed("3"), boxed("1/2"), boxed(r"\dfrac{1}{2}")]
    result = majority_vote_group(group)
    assert result.pseudo_label == r"\frac12"
    assert [bucket.members for bucket in result.buckets] == [[0, 2, 4, 5], [1, 3]]
    assert result.rewards == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    assert result.metrics.majority_ratio == pytest.approx(4 / 6)
    assert result.metrics.distinct_answers == 2


def test_forms_needing_math_verify_join_the_same_bucket():
    group = [boxed(r"\frac{\sqrt{2}}{2}"), boxed("7"), boxed(r"\frac{1}{\sqrt{2}}")]
    result = majority_vote_group(group)
    assert result.pseudo_label == r"\frac{\sqrt{2}}{2}"
    assert result.rewards == [1.0, 0.0, 1.0]


def test_empty_answers_never_win_even_when_most_common():
    group = ["I could not solve it.", r"\boxed{}", "no idea", r"truncated \boxed{4", boxed("7")]
    result = majority_vote_group(group)
    assert result.pseudo_label == "7"
    assert result.rewards == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert result.answers == [None, None, None, None, "7"]
    assert result.metrics.empty_answer_ratio == pytest.approx(4 / 5)
    assert result.metrics.majority_ratio == 1.0
    assert result.metrics.n_valid_votes == 1


def test_ties_go_to_the_earliest_first_appearance():
    first_four = majority_vote_group([boxed("4"), boxed("5"), boxed("5"), boxed("4")])
    assert first_four.pseudo_label == "4"
    assert first_four.rewards == [1.0, 0.0, 0.0, 1.0]
    first_five = majority_vote_group([boxed("5"), boxed("4"), boxed("4"), boxed("5")])
    assert first_five.pseudo_label == "5"
    # repeated runs give the same answer
    assert {majority_vote_group([boxed("9"), boxed("8")]).pseudo_label for _ in range(5)} == {"9"}


def test_all_empty_group_has_no_pseudo_label_and_zero_rewards():
    result = majority_vote_group(["nothing", r"\boxed{}", "still nothing"], ground_truth="2", scheme="simplerl")
    assert result.pseudo_label is None and result.winner is None
    assert result.rewards == [0.0, 0.0, 0.0]
    metrics = result.metrics.as_dict()
    assert metrics["has_pseudo_label"] == 0.0
    assert metrics["label_accuracy"] == 0.0
    assert metrics["majority_ratio"] == 0.0
    assert metrics["distinct_answers"] == 0.0
    assert metrics["empty_answer_ratio"] == 1.0
    assert metrics["pass@k"] == 0.0


def test_failed_session_gets_zero_without_sinking_its_group():
    result = majority_vote_group([None, boxed("2"), boxed("2"), boxed("3")], ground_truth="2")
    assert result.rewards == [0.0, 1.0, 1.0, 0.0]
    assert result.pseudo_label == "2"
    assert result.metrics.failed_ratio == 0.25
    assert result.metrics.majority_ratio == pytest.approx(2 / 3)
    assert result.metrics.empty_answer_ratio == 0.0  # failures are not counted as empty answers
    assert result.metrics.reward_accuracy == 1.0  # over the three live candidates


def test_failed_flags_exclude_text_from_the_vote():
    # The two failed sessions' text would otherwise be the majority.
    result = majority_vote_group(
        [boxed("9"), boxed("9"), boxed("1")],
        failed=[True, True, False],
    )
    assert result.pseudo_label == "1"
    assert result.rewards == [0.0, 0.0, 1.0]
    assert result.answers == [None, None, "1"]


def test_votes_over_n_votes_but_rewards_only_the_first_n_samples():
    # candidates 0-1 are trained on; all six vote. "2" wins 3 votes to 2.
    group = [boxed("1"), boxed("2"), boxed("2"), boxed("1"), boxed("2"), boxed("3")]
    result = majority_vote_group(group, n_samples=2, ground_truth="1")
    assert result.pseudo_label == "2"
    assert result.rewards == [0.0, 1.0]
    metrics = result.metrics
    assert metrics.majority_ratio == pytest.approx(3 / 6)
    assert metrics.n_votes == 6 and metrics.n_samples == 2
    assert metrics.label_accuracy == 0.0
    # trained candidates: mv rewards [0, 1], ground-truth rewards [1, 0]
    assert metrics.reward_accuracy == 0.0
    assert metrics.pass_at_k == 1.0
    assert len(result.answers) == 6


def test_metrics_match_a_hand_computation():
    group = [boxed("2"), boxed("2"), boxed("3"), r"\boxed{}", boxed("3"), None]
    seeds = [11, 11, 12, 13, None, 14]
    result = majority_vote_group(group, ground_truth=r"\boxed{3}", latent_seeds=seeds)
    # buckets: "2" -> [0, 1], "3" -> [2, 4]; tie, "2" appears first and wins.
    assert result.pseudo_label == "2"
    assert result.rewards == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert result.metrics.as_dict() == {
        "label_accuracy": 0.0,
        # live candidates 0-4: mv [1,1,0,0,0] vs ground truth [0,0,1,0,1] agree only at 3
        "reward_accuracy": pytest.approx(1 / 5),
        "majority_ratio": pytest.approx(2 / 4),
        "pass@k": 1.0,
        "distinct_answers": 2.0,
        "empty_answer_ratio": pytest.approx(1 / 5),
        "distinct_latents": 4.0,  # {11, 12, 13, 14}
        "failed_ratio": pytest.approx(1 / 6),
        "has_pseudo_label": 1.0,
        "n_votes": 6.0,
        "n_samples": 6.0,
        "n_valid_votes": 4.0,
    }


def test_ground_truth_is_only_used_for_metrics():
    group = [boxed("5"), boxed("5"), boxed("6")]
    with_gt = majority_vote_group(group, ground_truth="6")
    without_gt = majority_vote_group(group)
    assert with_gt.rewards == without_gt.rewards == [1.0, 1.0, 0.0]
    assert with_gt.metrics.label_accuracy == 0.0
    assert without_gt.metrics.label_accuracy is None
    assert "label_accuracy" not in without_gt.metrics.as_dict()
    assert "distinct_latents" not in without_gt.metrics.as_dict()


def test_simplerl_scheme_in_a_vote_penalises_missing_answers():
    result = majority_vote_group([boxed("5"), boxed("5"), boxed("6"), "no box"], scheme="simplerl")
    assert result.rewards == [1.0, 1.0, -0.5, -1.0]


def test_aggregate_averages_each_metric_over_groups_that_report_it():
    a = majority_vote_group([boxed("1"), boxed("1"), boxed("2")], ground_truth="1", latent_seeds=[1, 2, 3])
    b = majority_vote_group([boxed("4"), "none"])  # no ground truth, no seeds
    agg = aggregate_group_metrics([a.metrics, b.metrics], prefix="ttrl/")
    assert agg["ttrl/num_groups"] == 2.0
    assert agg["ttrl/label_accuracy"] == 1.0  # only group a has a ground truth
    assert agg["ttrl/distinct_latents"] == 3.0
    assert agg["ttrl/majority_ratio"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert agg["ttrl/empty_answer_ratio"] == pytest.approx((0.0 + 0.5) / 2)
    assert agg["ttrl/distinct_answers"] == pytest.approx(1.5)
    assert aggregate_group_metrics([{"x": 1.0}, {"x": 3.0}]) == {"x": 2.0, "num_groups": 2.0}


def test_pathological_answer_costs_at_most_the_time_limit():
    group = [boxed("5"), boxed(r"9^{9^{9^{9}}}"), boxed("5"), boxed(r"9^{9^{9^{9}}}")]
    majority_vote_group([boxed("1"), boxed("x+1")])  # warm the helper process
    start = time.monotonic()
    result = majority_vote_group(group, timeout_s=0.5)
    elapsed = time.monotonic() - start
    assert result.pseudo_label == "5"  # tie between the two buckets, "5" came first
    assert [bucket.members for bucket in result.buckets] == [[0, 2], [1, 3]]
    assert elapsed < 0.5 + 1.0 + 2.0  # one timed-out comparison; the twin answer reuses its bucket


def test_group_time_budget_stops_math_verify_work():
    group = [boxed(r"\frac{\sqrt{2}}{2}"), boxed(r"\frac{1}{\sqrt{3}}"), boxed(r"\frac{1}{\sqrt{2}}")]
    result = majority_vote_group(group, group_timeout_s=0.0)
    assert len(result.buckets) == 3
    assert result.pseudo_label == r"\frac{\sqrt{2}}{2}"
    assert result.rewards == [1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"responses": []}, "at least one"),
        ({"responses": ["a"], "n_samples": 2}, "n_samples"),
        ({"responses": ["a"], "n_samples": 0}, "n_samples"),
        ({"responses": ["a", "b"], "failed": [False]}, "failed"),
        ({"responses": ["a"], "latent_seeds": [1, 2]}, "latent_seeds"),
        ({"responses": ["a"], "scheme": "nope"}, "nope"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs, message):
    responses = kwargs.pop("responses")
    with pytest.raises(ValueError, match=message):
        majority_vote_group(responses, **kwargs)
