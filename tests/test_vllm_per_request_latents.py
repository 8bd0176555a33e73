"""Per-request latents inside a real vLLM engine (vllm-cpu), through the installed `vllm.general_plugins` entry
point. One shared engine for most tests (opted in, sequence and token latents); the constrained (chunked prefill +
preemption), stock, unpatched and unsupported-model engines run once each, in processes of their own."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # collective_rpc of a function (weight sync)

vllm = pytest.importorskip("vllm")
from vllm import LLM, SamplingParams  # noqa: E402
from vllm.inputs import TokensPrompt  # noqa: E402

from btrans_verl.hf import attach  # noqa: E402
from btrans_verl.latent import LatentConfig  # noqa: E402
from btrans_verl.seeds import child_seed  # noqa: E402
from btrans_verl.tiny import tiny_model  # noqa: E402
from btrans_verl.vllm.requests import latent_args, latent_of, parse_latent_request  # noqa: E402

pytestmark = pytest.mark.slow  # starts vLLM engines: skipped by `make test-fast`

SIGMA = 1.0
PROMPT = [5, 17, 42, 7, 99, 3, 250, 11]
LONG_PROMPT = [(7 * i + 3) % 250 + 3 for i in range(70)]  # > 2 blocks of 32


def params(seed=None, sigma=SIGMA, n=12, **kw):
    extra = latent_args(seed, sigma) if seed is not None else None
    return SamplingParams(temperature=0.0, max_tokens=n, extra_args=extra, detokenize=False, **kw)


def tokens(outs):
    return [list(o.outputs[0].token_ids) for o in outs]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_qwen3")
    tiny_model("qwen3").save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def llm(model_dir):
    engine = LLM(model=model_dir, skip_tokenizer_init=True, enforce_eager=True, dtype="float32",
                 max_model_len=512, max_num_seqs=16, seed=0, block_size=32, enable_prefix_caching=True,
                 additional_config={"btrans": {"granularity": "token"}})
    yield engine
    del engine


def test_different_seeds_give_different_greedy_outputs(llm):
    outs = tokens(llm.generate([TokensPrompt(prompt_token_ids=PROMPT)] * 4, [params(s) for s in (1, 2, 3, 4)]))
    assert len({tuple(o) for o in outs}) == 4


def test_same_seed_is_identical_alone_twice_in_a_batch_and_among_joining_requests(llm):
    p = TokensPrompt(prompt_token_ids=PROMPT)
    alone = tokens(llm.generate([p], [params(7)]))[0]
    twice = tokens(llm.generate([p, p], [params(7), params(7)]))
    assert twice == [alone, alone]
    # continuous batching: requests with other minds join and leave while seed 7 decodes
    engine = llm.llm_engine
    engine.add_request("r7", p, params(7, n=12))
    engine.add_request("a", TokensPrompt(prompt_token_ids=PROMPT[::-1]), params(11, n=3))
    done, step = {}, 0
    while engine.has_unfinished_requests():
        step += 1
        if step == 3:
            engine.add_request("b", TokensPrompt(prompt_token_ids=LONG_PROMPT), params(12, n=6))
            engine.add_request("c", p, params(None, n=9))
        for out in engine.step():
            if out.finished:
                done[out.request_id] = list(out.outputs[0].token_ids)
    assert done["r7"] == alone
    assert set(done) == {"r7", "a", "b", "c"}


def test_sigma_zero_and_no_latent_equal_each_other_and_mu_shifts(llm):
    p = TokensPrompt(prompt_token_ids=PROMPT)
    none, zero, mu = tokens(llm.generate([p] * 3, [params(None), params(5, sigma=0.0),
                                                   SamplingParams(temperature=0.0, max_tokens=12, detokenize=False,
                                                                  extra_args=latent_args(5, 0.0, mu=0.5))]))
    assert none == zero
    assert mu != none


def test_vllm_matches_hf_replay_logprobs_for_the_same_seed(llm, model_dir):
    import transformers

    seed = 424242
    sp = SamplingParams(temperature=1.0, max_tokens=16, seed=3, logprobs=0, detokenize=False,
                        extra_args=latent_args(seed, SIGMA))
    out = llm.generate([TokensPrompt(prompt_token_ids=PROMPT)], [sp])[0].outputs[0]
    gen = list(out.token_ids)
    vllm_lp = torch.tensor([lp[t].logprob for lp, t in zip(out.logprobs, gen)])
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    pop = attach(model, LatentConfig(sigma=SIGMA), mode="mean")
    ids = torch.tensor([PROMPT + gen])
    with torch.no_grad(), pop.replay([seed]):
        logp = torch.log_softmax(model(ids).logits[0, len(PROMPT) - 1:-1], dim=-1)
    hf_lp = logp[torch.arange(len(gen)), torch.tensor(gen)]
    assert torch.allclose(vllm_lp, hf_lp, atol=2e-3), (vllm_lp - hf_lp).abs().max()
    # and a different mind gives measurably different log-probs for the same tokens
    with torch.no_grad(), pop.replay([seed + 1]):
        other = torch.log_softmax(model(ids).logits[0, len(PROMPT) - 1:-1], dim=-1)
    assert (other[torch.arange(len(gen)), torch.tensor(gen)] - hf_lp).abs().max() > 0.05


def test_a_request_names_the_norms_its_latent_shifts_and_hf_replays_exactly_those(llm, model_dir):
    import transformers

    seed = 5150
    sp = SamplingParams(temperature=1.0, max_tokens=12, seed=4, logprobs=0, detokenize=False,
                        extra_args=latent_args(seed, SIGMA, targets=["input_layernorm"]))
    out = llm.generate([TokensPrompt(prompt_token_ids=PROMPT)], [sp])[0].outputs[0]
    gen = list(out.token_ids)
    vllm_lp = torch.tensor([lp[t].logprob for lp, t in zip(out.logprobs, gen)])
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    ids = torch.tensor([PROMPT + gen])
    replayed = {}
    for name, targets in (("narrow", ("input_layernorm",)), ("default", None)):
        cfg = LatentConfig(sigma=SIGMA, **({"targets": targets} if targets else {}))
        pop = attach(model, cfg, mode="mean")
        with torch.no_grad(), pop.replay([seed]):
            logp = torch.log_softmax(model(ids).logits[0, len(PROMPT) - 1:-1], dim=-1)
        replayed[name] = logp[torch.arange(len(gen)), torch.tensor(gen)]
        pop.detach()
    assert torch.allclose(vllm_lp, replayed["narrow"], atol=2e-3), (vllm_lp - replayed["narrow"]).abs().max()
    assert (vllm_lp - replayed["default"]).abs().max() > 0.05  # the other norms really were left alone


def test_token_granularity_changes_the_latent_per_position_and_matches_hf(llm, model_dir):
    import transformers

    sp = SamplingParams(temperature=0.0, max_tokens=10, logprobs=0, detokenize=False,
                        extra_args=latent_args(9, SIGMA, granularity="token"))
    out = llm.generate([TokensPrompt(prompt_token_ids=PROMPT)], [sp])[0].outputs[0]
    gen = list(out.token_ids)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    pop = attach(model, LatentConfig(sigma=SIGMA, granularity="token"), mode="mean")
    with torch.no_grad(), pop.replay([9]):
        logp = torch.log_softmax(model(torch.tensor([PROMPT + gen])).logits[0, len(PROMPT) - 1:-1], dim=-1)
    hf_lp = logp[torch.arange(len(gen)), torch.tensor(gen)]
    vllm_lp = torch.tensor([lp[t].logprob for lp, t in zip(out.logprobs, gen)])
    assert torch.allclose(vllm_lp, hf_lp, atol=2e-3)
    seq = tokens(llm.generate([TokensPrompt(prompt_token_ids=PROMPT)], [params(9, n=10)]))[0]
    assert seq != gen  # per-token minds are not the per-sequence mind of the same seed


def _scale_final_norm(worker, factor: float) -> float:
    """verl's weight sync, in miniature: the final norm's weight times `factor`, through `model.load_weights`."""
    model = worker.model_runner.get_model()
    weight = dict(model.named_parameters())["model.norm.weight"]
    model.load_weights([("model.norm.weight", weight.detach().clone() * factor)])
    return float(weight.double().pow(2).mean().sqrt())


@pytest.mark.parametrize("granularity", ["sequence", "token"])
def test_relative_sigma_reads_each_norms_weight_after_a_weight_sync_and_matches_hf(llm, model_dir, granularity):
    import transformers

    seed, factor = 8080 + (granularity == "token"), 0.125  # a power of two: undone exactly below
    warm = SamplingParams(temperature=0.0, max_tokens=2, detokenize=False,
                          extra_args=latent_args(seed + 2, SIGMA, granularity=granularity, sigma_scale="weight_rms"))
    llm.generate([TokensPrompt(prompt_token_ids=PROMPT)], [warm])  # the engine reads the scales of the old weights
    llm.collective_rpc(_scale_final_norm, args=(factor,))
    llm.reset_prefix_cache()
    try:
        sp = SamplingParams(temperature=1.0, max_tokens=12, seed=6, logprobs=0, detokenize=False,
                            extra_args=latent_args(seed, SIGMA, granularity=granularity, sigma_scale="weight_rms"))
        out = llm.generate([TokensPrompt(prompt_token_ids=PROMPT)], [sp])[0].outputs[0]
    finally:
        llm.collective_rpc(_scale_final_norm, args=(1 / factor,))
        llm.reset_prefix_cache()
    gen = list(out.token_ids)
    vllm_lp = torch.tensor([lp[t].logprob for lp, t in zip(out.logprobs, gen)])
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        model.model.norm.weight.mul_(factor)  # the weights the engine held
    ids = torch.tensor([PROMPT + gen])
    replayed = {}
    for scale in ("weight_rms", "absolute"):
        pop = attach(model, LatentConfig(sigma=SIGMA, granularity=granularity, sigma_scale=scale), mode="mean")
        with torch.no_grad(), pop.replay([seed]):
            logp = torch.log_softmax(model(ids).logits[0, len(PROMPT) - 1:-1], dim=-1)
        replayed[scale] = logp[torch.arange(len(gen)), torch.tensor(gen)]
        pop.detach()
    assert torch.allclose(vllm_lp, replayed["weight_rms"], atol=2e-3), (vllm_lp - replayed["weight_rms"]).abs().max()
    # the final norm's std was sigma * rms(weight) ~ 0.13, not sigma: an absolute replay is far off
    assert (vllm_lp - replayed["absolute"]).abs().max() > 0.05


def test_prefix_cache_is_shared_within_a_mind_and_never_across_minds(llm):
    llm.reset_prefix_cache()
    p = TokensPrompt(prompt_token_ids=LONG_PROMPT)
    fresh_b = tokens(llm.generate([p], [params(22)]))[0]
    llm.reset_prefix_cache()
    first_a = llm.generate([p], [params(21)])[0]
    after_a_b = llm.generate([p], [params(22)])[0]
    again_a = llm.generate([p], [params(21)])[0]
    assert after_a_b.num_cached_tokens == 0  # mind 22 never reads mind 21's KV
    assert list(after_a_b.outputs[0].token_ids) == fresh_b
    assert again_a.num_cached_tokens >= 32  # the same mind still hits its own cache
    assert list(again_a.outputs[0].token_ids) == list(first_a.outputs[0].token_ids)


def test_n_sequences_of_one_request_are_n_minds_each_replayable_and_cached_as_itself(llm):
    p = TokensPrompt(prompt_token_ids=LONG_PROMPT)
    llm.reset_prefix_cache()
    for extra in (latent_args(31, SIGMA), {"btrans_seed": 31, "btrans_sigma": SIGMA}):  # nested and flat forms
        # vLLM refuses n > 1 with temperature 0; top_k = 1 is the same argmax through the sampling path
        sp = SamplingParams(n=3, temperature=1.0, top_k=1, max_tokens=10, detokenize=False, extra_args=extra)
        children = [list(c.token_ids) for c in sorted(llm.generate([p], [sp])[0].outputs, key=lambda c: c.index)]
        assert len({tuple(c) for c in children}) == 3  # three minds, not one mind three times
        # child i is the mind child_seed(31, i): a lone request with that seed reproduces it and reads the KV
        # blocks the child left, so each child's prefix cache was salted with its own mind
        alone = [llm.generate([p], [params(child_seed(31, i), n=10)])[0] for i in range(3)]
        assert [list(a.outputs[0].token_ids) for a in alone] == children
        assert all(a.num_cached_tokens >= 32 for a in alone), [a.num_cached_tokens for a in alone]
    assert llm.generate([p], [params(31, n=10)])[0].num_cached_tokens == 0  # no child ran the parent's seed


def test_counters_prove_latents_were_applied(llm):
    before = llm.collective_rpc("btrans_counters")[0]
    llm.generate([TokensPrompt(prompt_token_ids=PROMPT)] * 2, [params(1, n=5), params(None, n=5)])
    after = llm.collective_rpc("btrans_counters")[0]
    assert after["norms_patched"] == 2 * 2 + 1
    assert after["requests_with_latent"] - before["requests_with_latent"] == 1
    assert after["tokens_shifted"] - before["tokens_shifted"] == len(PROMPT) + 4  # prefill + 4 decode steps


def test_malformed_latent_arguments_are_rejected_naming_the_key(llm):
    with pytest.raises(ValueError, match="btrans_sigmaa"):
        llm.generate([TokensPrompt(prompt_token_ids=PROMPT)],
                     [SamplingParams(max_tokens=2, extra_args={"btrans_seed": 1, "btrans_sigmaa": 0.1})])
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        llm.generate([TokensPrompt(prompt_token_ids=PROMPT)], [params(1, sigma=-1.0)])
    with pytest.raises(ValueError, match="'mlp'"):
        llm.generate([TokensPrompt(prompt_token_ids=PROMPT)],
                     [SamplingParams(max_tokens=2, extra_args=latent_args(1, 0.1, targets=["mlp"]))])
    with pytest.raises(ValueError, match=r"\['q_norm'\] are not wrapped by this engine"):
        llm.generate([TokensPrompt(prompt_token_ids=PROMPT)],
                     [SamplingParams(max_tokens=2,
                                     extra_args=latent_args(1, 0.1, targets=["input_layernorm", "q_norm"]))])


def test_a_latent_is_parsed_once_per_params_object_and_again_when_its_arguments_are_replaced():
    sp = params(3)
    lat = latent_of(sp)
    assert lat == parse_latent_request(sp.extra_args) and latent_of(sp) is lat  # kept on the object
    sp.extra_args = latent_args(4, SIGMA)  # a child's own mind: a new arguments object
    assert latent_of(sp).seed == 4
    assert latent_of(params(None)) is None and latent_of(None) is None


def test_flat_and_nested_arguments_name_the_same_mind():
    assert parse_latent_request({"btrans_seed": "12", "btrans_sigma": 0.5}) == parse_latent_request(
        {"btrans": {"seed": 12, "sigma": 0.5}})
    assert parse_latent_request({"other": 1}) is None
    with pytest.raises(ValueError, match="seed"):
        parse_latent_request({"btrans_sigma": 0.5})


# ------------------------------------------------------------------------------------------ other engines
def _run_engine(model_dir: str, env: dict, engine_kwargs: dict, requests: list, probe: dict | None = None,
                reload_aot: bool = False) -> dict:
    """Start an engine in a fresh process (its own environment; in-process engine core) and return its outputs /
    error, its compile-cache key, vLLM's AOT-compile flag as its engines see it and, with `probe`, the error of
    one more request carrying those extra_args. Engines are opted in (additional_config={"btrans": True}) unless
    engine_kwargs says otherwise; a None value drops the argument. `reload_aot`: then load the AOT artifact the
    engine saved back from disk as vLLM's loader does (`torch.compiler.load_compiled_function` with the model's
    globals), make it the model's compiled function and run the requests again (`reloaded`)."""
    kwargs = {k: v for k, v in {"enforce_eager": True, "additional_config": {"btrans": True}, **engine_kwargs}.items()
              if v is not None}
    code = textwrap.dedent(f"""
        import json, os, sys
        from vllm import LLM, SamplingParams, envs
        from vllm.inputs import TokensPrompt
        if __name__ == "__main__":
            def run(llm):
                outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p, _ in {requests!r}],
                                    [SamplingParams(temperature=0.0, max_tokens=n, detokenize=False, ignore_eos=True,
                                                    logprobs=0, extra_args=e) for _, (n, e) in {requests!r}])
                lps = [[lp[t].logprob for lp, t in zip(o.outputs[0].logprobs, o.outputs[0].token_ids)] for o in outs]
                return outs, lps

            def reload_aot(llm):
                import glob, torch
                model = llm.llm_engine.model_executor.driver_worker.worker.model_runner.get_model().model
                (path,) = glob.glob(os.path.join(model.compilation_config.local_cache_dir, "rank_*", "model"))
                with open(path, "rb") as f:
                    loaded = torch.compiler.load_compiled_function(f, f_globals=model.forward.__globals__)
                loaded.disable_guard_check()
                calls = []
                def counted(*a, **k):
                    calls.append(1)
                    return loaded(*a, **k)
                assert model.aot_compiled_fn is not None  # the function compiled in this process, replaced:
                model.aot_compiled_fn, model.was_aot_compile_fn_loaded_from_disk = counted, True
                outs, lps = run(llm)
                return {{"tokens": [list(o.outputs[0].token_ids) for o in outs], "logprobs": lps,
                         "calls": len(calls), "canary": llm.collective_rpc("btrans_canary")}}

            try:
                llm = LLM(model={model_dir!r}, skip_tokenizer_init=True, dtype="float32", seed=0,
                          disable_log_stats=False, **{kwargs!r})
                outs, lps = run(llm)
                pre = sum(m.value for m in llm.get_metrics() if m.name == "vllm:num_preemptions")
                try:
                    counters = llm.collective_rpc("btrans_counters")
                    canary = llm.collective_rpc("btrans_canary")
                except Exception:  # BTRANS_VLLM_DISABLE=1: no plugin, no counters
                    counters = canary = None
                probe = None
                if {probe!r} is not None:
                    try:
                        llm.generate([TokensPrompt(prompt_token_ids=[5, 6, 7])],
                                     [SamplingParams(max_tokens=2, detokenize=False, extra_args={probe!r})])
                        probe = "accepted"
                    except Exception as exc:
                        probe = type(exc).__name__ + ": " + str(exc)
                reloaded = reload_aot(llm) if {reload_aot!r} else None
                config = llm.llm_engine.vllm_config
                opted, config.additional_config = config.additional_config, {{}}
                stock_hash = config.compute_hash()  # the same engine's key, not opted in
                config.additional_config = opted
                print("RESULT" + json.dumps({{"tokens": [list(o.outputs[0].token_ids) for o in outs],
                                              "logprobs": lps, "preemptions": pre,
                                              "counters": counters, "canary": canary, "probe": probe,
                                              "aot": envs.VLLM_USE_AOT_COMPILE, "reloaded": reloaded,
                                              "hash": config.compute_hash(), "stock_hash": stock_hash}}))
            except Exception as exc:
                print("RESULT" + json.dumps({{"error": type(exc).__name__ + ": " + str(exc)}}))
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(0)  # in-process engine: skip the slow interpreter teardown
    """)
    merged = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
              **env}  # env value None: variable unset
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in merged.items() if v is not None})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT"):])
    result["log"] = proc.stdout[-20000:] + proc.stderr[-20000:]
    return result


def test_an_engine_not_opted_in_is_stock_vllm_and_refuses_latents(llm, model_dir):
    # btrans-verl installed, engine started without additional_config["btrans"]: no wrapper, no buffer, vLLM's own
    # compile-cache key, the tokens of vLLM without the plugin; a latent request is refused saying how to opt in
    reqs = [(PROMPT, (12, None)), (LONG_PROMPT, (8, None))]
    unpatched = _run_engine(model_dir, {"BTRANS_VLLM_DISABLE": "1"}, dict(max_model_len=512, additional_config=None),
                            reqs)
    stock = _run_engine(model_dir, {}, dict(max_model_len=512, additional_config=None), reqs,
                        probe=latent_args(1, SIGMA))
    assert "error" not in stock and "error" not in unpatched, (stock, unpatched)
    assert stock["tokens"] == unpatched["tokens"]
    assert stock["hash"] == unpatched["hash"]  # the compile-cache key of vLLM without the plugin
    (counters,) = stock["counters"]
    # nothing wrapped, nothing allocated
    assert counters["norms_patched"] == 0 and counters["slot_table_bytes"] == 0, counters
    assert "not configured for B-Trans" in stock["probe"] and "additional_config" in stock["probe"], stock["probe"]
    assert "stock engine" in stock["canary"][0]["errors"][0], stock["canary"]
    # an opted-in engine serving requests without a latent gives the same tokens
    ours = tokens(llm.generate([TokensPrompt(prompt_token_ids=p) for p, _ in reqs],
                               [params(None, n=n, ignore_eos=True) for _, (n, _) in reqs]))
    assert ours == stock["tokens"]


def test_a_caller_reusing_its_params_with_a_new_seed_gets_the_new_mind(model_dir):
    """Each process parses a request's latent once (`latent_of`), on vLLM's own clone of the caller's params: with
    an in-process engine core that clone reaches the workers. The caller's object is parsed afresh every call, so a
    caller that edits its SamplingParams in place between calls gets the edited mind, and other entries of
    extra_args (here an array) ride along untouched."""
    code = textwrap.dedent(f"""
        import json, os
        import numpy as np
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt
        if __name__ == "__main__":
            llm = LLM(model={model_dir!r}, skip_tokenizer_init=True, enforce_eager=True, dtype="float32", seed=0,
                      max_model_len=128, additional_config={{"btrans": True}})
            p = TokensPrompt(prompt_token_ids={PROMPT!r})
            def sp(seed):
                return SamplingParams(temperature=0.0, max_tokens=12, detokenize=False,
                                      extra_args={{"btrans": {{"seed": seed, "sigma": {SIGMA!r}}}}})
            fresh = [list(o.outputs[0].token_ids) for o in llm.generate([p, p], [sp(21), sp(22)])]
            reused, again = sp(21), []
            for seed in (21, 22):
                reused.extra_args["btrans"]["seed"] = seed
                again.append(list(llm.generate([p], [reused])[0].outputs[0].token_ids))
            other = sp(22)  # arguments of other consumers beside the latent (an array has no plain ==)
            other.extra_args["user_array"] = np.arange(3)
            beside = list(llm.generate([p], [other])[0].outputs[0].token_ids)
            print("RESULT" + json.dumps({{"fresh": fresh, "reused": again, "beside": beside}}), flush=True)
            os._exit(0)
    """)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT"):])
    assert result["fresh"][0] != result["fresh"][1]
    assert result["reused"] == result["fresh"]
    assert result["beside"] == result["fresh"][1]


def test_chunked_prefill_and_preemption_keep_each_request_its_mind(llm, model_dir):
    # chunked prefill: 70-token prompts in 16-token chunks; preemption: 8 short prompts that each grow to
    # 4 blocks of 32 while the KV cache holds 8 blocks in all
    reqs = [(LONG_PROMPT[i:], (24, latent_args(100 + i, SIGMA))) for i in range(4)]
    reqs += [(PROMPT[i:] + PROMPT[:i], (100, latent_args(200 + i, SIGMA))) for i in range(8)]
    constrained = _run_engine(model_dir, {}, dict(max_model_len=256, max_num_batched_tokens=16,
                                                  enable_chunked_prefill=True, block_size=32,
                                                  num_gpu_blocks_override=8, max_num_seqs=8), reqs)
    assert "error" not in constrained, constrained
    assert constrained["preemptions"] > 0, constrained["log"][-2000:]  # the constraint really preempted
    free = tokens(llm.generate([TokensPrompt(prompt_token_ids=p) for p, _ in reqs],
                               [SamplingParams(temperature=0.0, max_tokens=n, extra_args=e, detokenize=False,
                                               ignore_eos=True) for _, (n, e) in reqs]))
    assert constrained["tokens"] == free


def _files(root):
    return {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs} \
        if os.path.isdir(root) else set()


def test_torch_compiled_engine_reads_each_steps_latents_like_eager_also_through_its_aot_artifact(
        llm, model_dir, tmp_path):
    # enforce_eager=False: vllm-cpu traces the model once with dynamo and compiles it with inductor (GPU: the
    # same wrapper inside vLLM's piecewise graphs). The latent buffers must stay live inputs of the compiled
    # graph, filled in place every step, never constants baked in at trace time (the trace runs on zeros).
    # vLLM AOT-compiles by default (torch >= 2.10), saves the artifact under a key that covers our wrappers and
    # loads it on the next start instead of tracing: a loaded artifact must read the live buffers too, and every
    # B-Trans engine's start-up canary checks its model before the first request (`canary.startup_check`).
    cache = {"VLLM_CACHE_ROOT": str(tmp_path / "vllm-cache"), "VLLM_USE_AOT_COMPILE": None}  # vLLM's default
    reqs = [(PROMPT, (12, None)), (PROMPT, (12, latent_args(1, SIGMA))), (PROMPT, (9, latent_args(2, SIGMA))),
            (LONG_PROMPT, (6, latent_args(3, SIGMA))), (PROMPT[::-1], (10, latent_args(4, SIGMA)))]
    aot = tmp_path / "vllm-cache" / "torch_compile_cache" / "torch_aot_compile"
    engine = dict(enforce_eager=False, max_model_len=512, enable_prefix_caching=False)
    compiled = _run_engine(model_dir, cache, engine, reqs, reload_aot=True)
    assert "error" not in compiled, compiled
    assert compiled["aot"] is True and "start-up canary ok on rank 0 (AOT-compiled in this process)" in compiled["log"]
    (key,) = [d.name for d in aot.iterdir()]  # one artifact, under the B-Trans engine's own key:
    assert compiled["hash"] != compiled["stock_hash"]  # its config hash (part of the key) is not a stock engine's
    assert (aot / key / "rank_0_0" / "model").is_file()
    assert len({tuple(t) for t in compiled["tokens"][:2]}) == 2  # the compiled graph shifts what eager shifts
    assert compiled["counters"][0]["tokens_shifted"] > 0
    assert [(r["ok"], r["graph"], r["graph_source"]) for r in compiled["canary"]] == [
        (True, "ok", "AOT-compiled in this process")], compiled["canary"]
    # score the compiled engine's sequences with the eager engine, each under its own mind
    for (prompt, (_, extra)), gen, lps in zip(reqs, compiled["tokens"], compiled["logprobs"]):
        ref = llm.generate([TokensPrompt(prompt_token_ids=prompt + gen)],
                           [SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False, extra_args=extra)])[0]
        eager = [ref.prompt_logprobs[len(prompt) + i][t].logprob for i, t in enumerate(gen)]
        assert torch.allclose(torch.tensor(lps), torch.tensor(eager), atol=2e-3), (extra, lps, eager)
    # the artifact read back from disk (what a warm start with a working loader runs: vllm-cpu 0.27.1 fails in
    # vLLM's own finalize step, after torch has loaded it) serves every request, reads the rows written after it
    # was loaded (the canary's mind) and gives the same minds
    reloaded = compiled["reloaded"]
    assert reloaded["calls"] > 0 and reloaded["tokens"] == compiled["tokens"], reloaded
    assert [(r["ok"], r["graph"], r["graph_source"].startswith("AOT artifact loaded from")) for r in
            reloaded["canary"]] == [(True, "ok", True)], reloaded["canary"]
    assert torch.allclose(torch.tensor(sum(reloaded["logprobs"], [])), torch.tensor(sum(compiled["logprobs"], [])),
                          atol=1e-5)
    # a warm restart with the same cache root: vllm-cpu cannot load the artifact, compiles again (inductor's
    # cache, under the same key, already has every graph) and gives the same minds; its start-up canary passes
    graphs = _files(aot / key / "inductor_cache")
    assert any("fxgraph" in f for f in graphs), sorted(graphs)[:20]
    warm = _run_engine(model_dir, cache, engine, reqs)
    assert "error" not in warm, warm
    assert [d.name for d in aot.iterdir()] == [key] and "load failure" in warm["log"]
    assert {f for f in _files(aot / key / "inductor_cache") if "fxgraph" in f} == {f for f in graphs if "fxgraph" in f}
    assert warm["tokens"] == compiled["tokens"]
    assert [(r["ok"], r["graph"]) for r in warm["canary"]] == [(True, "ok")], warm["canary"]
    assert torch.allclose(torch.tensor(sum(warm["logprobs"], [])), torch.tensor(sum(compiled["logprobs"], [])),
                          atol=1e-5)


def test_a_latent_on_a_model_without_wrappable_norms_fails_loudly(tmp_path):
    import transformers

    cfg = transformers.GPT2Config(n_layer=1, n_embd=128, n_head=2, vocab_size=256, n_positions=256,
                                  bos_token_id=1, eos_token_id=2)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path)
    # one engine: a request without a latent runs, then one with a latent (the probe) is refused
    res = _run_engine(str(tmp_path), {}, dict(max_model_len=128), [(PROMPT, (4, None))], probe=latent_args(1, 0.5))
    assert "error" not in res and len(res["tokens"][0]) == 4, res
    assert res["probe"] != "accepted" and "no norm of this model was wrapped" in res["log"], res["probe"]


def test_a_request_targeting_norms_the_engine_did_not_wrap_is_refused(model_dir):
    # the engine's targets narrow what it wraps; a request asking for more must not run half-shifted
    narrow = {"btrans": {"targets": ["input_layernorm"]}}
    res = _run_engine(model_dir, {}, dict(max_model_len=128, additional_config=narrow),
                      [(PROMPT, (4, latent_args(1, 0.5)))])
    assert "['post_attention_layernorm', 'final_norm'] are not wrapped by this engine" in res.get("error", ""), res


def test_per_head_q_and_k_norms_carry_the_latent_when_the_engine_opts_in_and_match_hf(model_dir):
    import transformers

    every = ["input_layernorm", "post_attention_layernorm", "final_norm", "q_norm", "k_norm"]
    reqs = [(PROMPT, (10, latent_args(77, SIGMA, targets=every))), (PROMPT, (10, latent_args(77, SIGMA)))]
    res = _run_engine(model_dir, {}, dict(max_model_len=128, additional_config={"btrans": {"targets": every}}), reqs)
    assert "error" not in res, res
    assert res["counters"][0]["norms_patched"] == 2 * 4 + 1  # 2 layers x (input, post-attention, q, k) + final
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    replay = {}
    for (prompt, (_, extra)), gen, lps in zip(reqs, res["tokens"], res["logprobs"]):
        targets = tuple(extra["btrans"].get("targets", ())) or None
        pop = attach(model, LatentConfig(sigma=SIGMA, **({"targets": targets} if targets else {})), mode="mean")
        with torch.no_grad(), pop.replay([77]):
            logp = torch.log_softmax(model(torch.tensor([prompt + gen])).logits[0, len(prompt) - 1:-1], dim=-1)
        pop.detach()
        hf = logp[torch.arange(len(gen)), torch.tensor(gen)]
        assert torch.allclose(torch.tensor(lps), hf, atol=2e-3), (targets, torch.tensor(lps) - hf)
        replay[targets] = hf
    # the q / k latents change the model: the two requests (same seed) are different minds
    assert res["tokens"][0] != res["tokens"][1] or \
        (torch.tensor(res["logprobs"][0]) - torch.tensor(res["logprobs"][1])).abs().max() > 0.05
