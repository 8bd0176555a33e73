"""The evaluation's per-sample seeds are the documented derivation (unique, reproducible, paired between B-Trans and
the temperature baseline), each method's requests carry exactly the intended latent, and the plugin's counters are
checked: a latent method whose latents did not reach the model fails loudly instead of reporting a silent no-op."""

from types import SimpleNamespace

import pytest

from btrans_verl.eval.benchmark import Problem
from btrans_verl.eval.config import EvalConfig
from btrans_verl.eval.engine import LatentNotAppliedError, generate_method, request_params, sample_seeds
from btrans_verl.seeds import trajectory_seed

pytest.importorskip("vllm")


def _problems(indices, source="gsm8k"):
    return [Problem(i, idx, source, ({"role": "user", "content": "q"},), "1") for i, idx in enumerate(indices)]


def test_seeds_follow_trajectory_seed_and_are_unique():
    latent, sampling = sample_seeds(_problems([5, 9, 12]), 4, eval_seed=3)
    for i, idx in enumerate([5, 9, 12]):
        for j in range(4):
            assert latent[i][j] == trajectory_seed(3, 0, idx, j, data_source="gsm8k", partition="val")
            assert sampling[i][j] == latent[i][j] >> 32 and 0 <= sampling[i][j] < 2 ** 31
    assert len({s for row in latent for s in row}) == 12
    assert sample_seeds(_problems([5, 9, 12]), 4, eval_seed=3) == (latent, sampling)
    other, _ = sample_seeds(_problems([5, 9, 12]), 4, eval_seed=4)
    assert not {s for row in other for s in row} & {s for row in latent for s in row}
    dup, _ = sample_seeds(_problems([7, 7]), 3, eval_seed=3)  # a repeated row still gets fresh minds
    assert len({s for row in dup for s in row}) == 6


def test_each_method_carries_exactly_its_latent(tmp_path):
    cfg = EvalConfig(model="m", benchmark="b", out=tmp_path, n=2, sigma=0.02, temperature=0.9, max_tokens=7)
    mean = request_params("mean", cfg, None, None)
    assert mean.temperature == 0.0 and mean.seed is None and not mean.extra_args and mean.max_tokens == 7
    bt = request_params("btrans", cfg, 123, 45)
    assert bt.extra_args == {"btrans": {"seed": 123, "sigma": 0.02, "granularity": "sequence",
                                        "sigma_scale": "absolute"}}
    relative = EvalConfig(model="m", benchmark="b", out=tmp_path, n=2, sigma=0.02, sigma_scale="weight_rms")
    assert request_params("btrans", relative, 123, 45).extra_args["btrans"]["sigma_scale"] == "weight_rms"
    assert (bt.temperature, bt.seed) == (0.9, 45)
    tok = request_params("token", cfg, 123, 45)
    assert tok.extra_args["btrans"]["granularity"] == "token" and tok.seed == 45
    tp = request_params("temperature", cfg, None, 45)
    assert not tp.extra_args and (tp.temperature, tp.seed) == (0.9, 45)


class FakeLLM:
    """Returns canned outputs; its counters move by `shift` per generate call (or it has no plugin at all)."""

    def __init__(self, shift=None, plugin=True):
        self.counters = {"norms_patched": 5, "requests_with_latent": 0, "tokens_shifted": 0}
        self.shift, self.plugin, self.calls = shift or {}, plugin, []

    def collective_rpc(self, name):
        if not self.plugin:
            raise AttributeError(f"'Worker' object has no attribute {name!r}")
        return [dict(self.counters)]

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append(params)
        for k, v in self.shift.items():
            self.counters[k] += v
        out = SimpleNamespace(text="\\boxed{1}", finish_reason="stop", token_ids=[5, 6])
        return [SimpleNamespace(outputs=[out]) for _ in prompts]


def _run(llm, method, tmp_path):
    cfg = EvalConfig(model="m", benchmark="b", out=tmp_path, n=2, sigma=0.1, progress=False)
    latent, sampling = sample_seeds(_problems([0, 1]), 2, cfg.seed)
    return generate_method(llm, method, [[1, 2], [3, 4]], cfg, latent, sampling)


def test_a_latent_method_that_shifted_nothing_fails_loudly(tmp_path):
    with pytest.raises(LatentNotAppliedError, match="sent 4 requests with a latent.*0 shifted tokens"):
        _run(FakeLLM(), "btrans", tmp_path)
    with pytest.raises(LatentNotAppliedError, match="counted 3 requests"):
        _run(FakeLLM({"requests_with_latent": 3, "tokens_shifted": 50}), "token", tmp_path)
    with pytest.raises(LatentNotAppliedError, match="plugin is not loaded"):
        _run(FakeLLM(plugin=False), "btrans", tmp_path)


def test_a_baseline_that_was_shifted_fails_and_clean_runs_pass(tmp_path):
    with pytest.raises(LatentNotAppliedError, match="sent no latent"):
        _run(FakeLLM({"requests_with_latent": 1, "tokens_shifted": 9}), "temperature", tmp_path)
    ok = _run(FakeLLM({"requests_with_latent": 4, "tokens_shifted": 40}), "btrans", tmp_path)
    assert ok.counters == {"requests_with_latent": 4, "tokens_shifted": 40} and ok.n == 2
    assert ok.texts == [["\\boxed{1}"] * 2] * 2 and ok.sigma == 0.1
    mean = _run(FakeLLM(), "mean", tmp_path)
    assert mean.n == 1 and mean.latent_seeds == [[None], [None]] and mean.temperature == 0.0
    # without the plugin, methods without latents still run (nothing could have been shifted)
    assert _run(FakeLLM(plugin=False), "temperature", tmp_path).counters == {}
