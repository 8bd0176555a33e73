"""Every evaluation figure has a bootstrap interval over problems, methods are compared by paired differences
against temperature sampling, and the report carries GRPO's exploration signal (informative groups) and the rate
of degenerate texts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from btrans_verl.eval.metrics import (
    SamplingSettings,
    degenerate_rate,
    informative_group_rate,
    is_repetition_loop,
    maj_at_k_per_problem,
    mean_maj_at_k,
)
from btrans_verl.eval.report import BASELINE_METHOD, evaluate_method, markdown_report, paired_differences, write_report
from btrans_verl.eval.statistics import bootstrap_interval, paired_difference


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_more_problems():
    rng = np.random.default_rng(1)
    few, many = rng.integers(0, 2, 20).astype(float), rng.integers(0, 2, 400).astype(float)
    lo, hi = bootstrap_interval(few, seed=0)
    assert lo <= few.mean() <= hi
    lo2, hi2 = bootstrap_interval(many, seed=0)
    assert lo2 <= many.mean() <= hi2
    assert 0.07 < hi2 - lo2 < 0.13  # ~ 2 * 1.96 * sqrt(0.25 / 400) = 0.098
    assert hi2 - lo2 < hi - lo
    assert bootstrap_interval(few, seed=0) == (lo, hi)  # seeded: reproducible
    assert bootstrap_interval([0.25] * 7) == (0.25, 0.25)


def test_bootstrap_refuses_what_it_cannot_resample():
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_interval([])
    with pytest.raises(ValueError, match="finite.*problem 1"):
        bootstrap_interval([0.0, float("nan")])
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval([1.0], level=1.0)


def test_paired_difference_sees_a_shift_that_unpaired_noise_would_hide():
    rng = np.random.default_rng(0)
    b = rng.uniform(0, 1, 50)  # problems differ a lot in difficulty
    a = b + 0.05  # the other method is a little better on every one
    d = paired_difference("accuracy", "minds", a, "temperature", b)
    assert d.mean == pytest.approx(0.05) and d.excludes_zero and d.num_problems == 50
    lo_a, _ = bootstrap_interval(a)
    _, hi_b = bootstrap_interval(b)
    assert lo_a < hi_b  # the unpaired intervals overlap
    same = paired_difference("accuracy", "minds", b, "temperature", b)
    assert same.mean == 0.0 and not same.excludes_zero
    with pytest.raises(ValueError, match="minds has 2 problems, temperature has 3"):
        paired_difference("accuracy", "minds", [1, 0], "temperature", [1, 0, 1])


def test_informative_groups_are_the_groups_with_a_grpo_advantage():
    assert informative_group_rate([[True, True], [False, False], [True, False]]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="n >= 2"):
        informative_group_rate([[True]])


def test_repetition_loops_and_truncations_are_degenerate():
    loop = "so the answer is " * 12
    assert is_repetition_loop(loop)
    assert not is_repetition_loop("Natalia sold 48 clips in April and half as many in May, so 72 in total.")
    assert not is_repetition_loop("yes yes yes")  # too short to call
    texts = [[loop, "a fine answer of several distinct words here"], ["short", "another clean reply"]]
    assert degenerate_rate(texts) == 0.25
    assert degenerate_rate(texts, [["stop", "stop"], ["length", "stop"]]) == 0.5
    with pytest.raises(ValueError, match="3 finish reasons for 4 responses"):
        degenerate_rate(texts, [["stop"], ["stop", "stop"]])


def test_per_problem_maj_at_k_is_what_the_mean_averages():
    answers = [["1", "1", "2"], ["3", None, "3"], ["5", "6", "7"]]
    refs = ["1", "3", "7"]
    assert np.mean(maj_at_k_per_problem(answers, 3, references=refs)) == pytest.approx(
        mean_maj_at_k(answers, 3, references=refs))


def _encode(texts):
    return np.random.default_rng(len(texts)).normal(size=(len(texts), 8))  # [texts, 8], no zero row


def _two_methods():
    correct_t = [[True, False, False, False], [False] * 4, [True] * 4, [False, False, True, False]]
    correct_m = [[True, True, False, False], [True, False, False, False], [True] * 4, [False, True, True, False]]
    texts = [["a b c d e f g h i j"] * 4] * 4
    t = evaluate_method(SamplingSettings(BASELINE_METHOD, n=4, sigma=0.0, temperature=1.0, seed=0), correct_t,
                        responses_per_problem=texts, encode=_encode, ks=(1, 4),
                        finish_reasons_per_problem=[["stop", "stop", "stop", "length"]] * 4)
    m = evaluate_method(SamplingSettings("B-Trans minds (sequence-wise)", n=4, sigma=0.05, temperature=0.0, seed=0),
                        correct_m, responses_per_problem=texts, encode=_encode, ks=(1, 4))
    return t, m


def test_the_report_states_intervals_exploration_and_paired_differences(tmp_path):
    t, m = _two_methods()
    assert t.informative_groups == 0.5 and m.informative_groups == 0.75
    assert t.degenerate == 0.25 and m.degenerate == 0.0
    lo, hi = m.intervals["accuracy"]
    assert lo <= m.accuracy <= hi and set(m.intervals) >= {"accuracy", "pass@1", "pass@4", "informative_groups"}
    diffs = {d.metric: d for d in paired_differences([t, m])}
    assert diffs["accuracy"].mean == pytest.approx(m.accuracy - t.accuracy)
    assert diffs["informative_groups"].mean == pytest.approx(0.25)
    assert paired_differences([m]) == []  # no temperature baseline: nothing to pair with
    md = markdown_report([t, m])
    assert f"{m.accuracy:.3f} [{lo:.2f}, {hi:.2f}]" in md and "Paired differences against" in md
    files = write_report([t, m], tmp_path, plots=False)
    doc = json.loads(files.json_path.read_text())
    assert {p["metric"] for p in doc["paired"]} >= {"accuracy", "pass@4", "informative_groups"}
    acc = next(r for r in doc["figures"] if r["metric"] == "accuracy" and r["method"] == m.settings.method)
    assert acc["low"] <= acc["value"] <= acc["high"]
    assert doc["methods"][0]["degenerate"] == 0.25
