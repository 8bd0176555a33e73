"""The report writes strict JSON where every figure states n, K, sigma, temperature and seed, a markdown
table with one row per method, and the figures."""

import json
import math

import matplotlib.image as mpimg
import numpy as np
import pytest

from btrans_verl.eval.metrics import SamplingSettings
from btrans_verl.eval.report import evaluate_method, markdown_report, write_report

VEC = {"x": [1.0, 0.0, 0.0], "y": [0.0, 1.0, 0.0], "z": [0.0, 0.0, 1.0], "w": [1.0, 1.0, 0.0]}


def fake_encode(texts):
    # a response embeds as the sum of its words' vectors (+ a small constant so none is zero)
    return np.array([np.sum([VEC[w] for w in t.split()], axis=0) + 0.01 for t in texts])


def _method(name, sigma, temperature, seed, n=16, problems=3, p_correct=0.4):
    rng = np.random.default_rng(seed)
    settings = SamplingSettings(name, n=n, sigma=sigma, temperature=temperature, seed=seed)
    correct = (rng.random((problems, n)) < p_correct).tolist()
    answers = [["42" if c else rng.choice(["7", "9", None]) for c in row] for row in correct]
    texts = [[" ".join(rng.choice(list(VEC), size=3)).replace(" ", "\n", 1) for _ in range(n)]
             for _ in range(problems)]
    texts[0][0] = "x"   # one single-step response: excluded from step consistency
    return settings, correct, answers, texts


def test_evaluate_method_and_report_files(tmp_path):
    evs = []
    for name, sigma, temp, seed in [("B-Trans minds", 0.3, 0.0, 0), ("temperature", 0.0, 1.0, 1)]:
        settings, correct, answers, texts = _method(name, sigma, temp, seed)
        ev = evaluate_method(settings, correct, answers_per_problem=answers, references=["42"] * 3,
                             responses_per_problem=texts, encode=fake_encode)
        assert list(ev.pass_at_k) == [1, 2, 4, 8, 16] and list(ev.maj_at_k) == [16]
        assert ev.maj_estimator == "exact"
        assert ev.pass_at_k[1] == pytest.approx(ev.accuracy)
        assert 0.0 <= ev.diversity <= 2.0
        assert ev.step_consistency.num_excluded == 1 and ev.step_consistency.num_scored == 47
        assert ev.embeddings.shape == (48, 3)
        evs.append(ev)

    files = write_report(evs, tmp_path / "eval", title="toy", extra={"dataset": "toy"})
    doc = json.loads(files.json_path.read_text())          # strict JSON (NaN is refused on write)
    assert doc["schema"].startswith("btrans_verl.eval.report/")
    assert [m["method"] for m in doc["methods"]] == ["B-Trans minds", "temperature"]
    metrics = {(r["method"], r["metric"], r["K"]) for r in doc["figures"]}
    for method in ("B-Trans minds", "temperature"):
        for k in (1, 2, 4, 8, 16):
            assert (method, "pass@K", k) in metrics
        assert {(method, "accuracy", 1), (method, "maj@K", 16), (method, "diversity", 16),
                (method, "step_consistency", 1)} <= metrics
    for rec in doc["figures"]:
        for key in ("n", "K", "sigma", "temperature", "seed", "value", "num_problems"):
            assert key in rec, (key, rec)
    temp_rec = next(r for r in doc["figures"] if r["method"] == "temperature")
    assert (temp_rec["sigma"], temp_rec["temperature"], temp_rec["seed"], temp_rec["n"]) == (0.0, 1.0, 1, 16)

    md = files.markdown_path.read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Method"))
    for col in ["n", "σ", "T", "seed", "accuracy", "pass@1", "pass@2", "pass@4", "pass@8", "pass@16",
                "maj@16", "diversity", "step consistency"]:
        assert col in header
    rows = [line for line in md.splitlines() if line.startswith("| B-Trans") or line.startswith("| temperature")]
    assert len(rows) == 2 and "| 0.3 | 0 | 0 |" in rows[0] and "| 0 | 1 | 1 |" in rows[1]

    assert set(files.figures) == {"pass_at_k", "embedding_map"} and doc["plots"]["pass_at_k"] == "pass_at_k.png"
    for p in files.figures.values():
        assert p.stat().st_size > 0 and mpimg.imread(p).shape[0] > 0


def test_missing_values_are_null_in_json_and_dash_in_markdown(tmp_path):
    s = SamplingSettings("B-Trans minds", n=4, sigma=0.1, temperature=0.0, seed=3)
    ev = evaluate_method(s, [[True, False, False, True]], responses_per_problem=[["x", "y", "z", "w"]],
                         encode=fake_encode)
    assert list(ev.pass_at_k) == [1, 2, 4] and ev.maj_at_k == {}
    assert math.isnan(ev.step_consistency.score)
    files = write_report([ev], tmp_path, plots=False)
    doc = json.loads(files.json_path.read_text())
    sc = next(r for r in doc["figures"] if r["metric"] == "step_consistency")
    assert sc["value"] is None and sc["num_excluded"] == 4
    assert files.figures == {}
    assert "— (0/4)" in markdown_report([ev])


def test_sample_counts_must_match_settings():
    s = SamplingSettings("temperature", n=4, sigma=0.0, temperature=1.0, seed=0)
    with pytest.raises(ValueError, match="settings.n=4"):
        evaluate_method(s, [[True, False, True]])
    with pytest.raises(ValueError):
        SamplingSettings("bad", n=0, sigma=0.0, temperature=1.0, seed=0)
