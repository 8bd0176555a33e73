"""Model Runner V2 hook (btrans_verl.vllm.runner_v2) driven through real vLLM V2 objects on CPU.

V2's execute_model needs Triton, so the step is driven by hand: a real CPU V2 runner is built and loaded
(patched `load_model`), its real ModelState gets real `NewRequestData` in `add_request`, real `InputBatch`es
(built by `InputBatch.make_dummy`, then given the step's request order and token counts) go through its
`prepare_inputs`, and the real loaded vLLM model runs the forward. Only attention is a stand-in (exact causal
SDPA with a per-request K/V cache across steps), because V2's attention metadata needs the Triton path; the
latents live in the norms, not in attention. Logits are compared with the Hugging Face replay of the same seed.

Distributed init and the vLLM config are process-global, so the driver runs in a subprocess.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow  # loads a model into vLLM's V2 runner: skipped by `make test-fast`

pytest.importorskip("vllm")

DRIVER = textwrap.dedent(r'''
    import dataclasses, json, sys, tempfile
    import numpy as np
    import torch
    import transformers

    from btrans_verl.hf import attach
    from btrans_verl.latent import LatentConfig
    from btrans_verl.tiny import tiny_model
    from btrans_verl.vllm.requests import latent_args

    model_dir = sys.argv[1]
    tiny_model("qwen3").save_pretrained(model_dir)

    import vllm.v1.worker.cpu.shm  # noqa: F401  (CPU patches: pin_memory etc.)
    from btrans_verl.patching import patched
    from btrans_verl.vllm.plugin import is_hooked_runner
    from btrans_verl.vllm.runner_v2 import patch_v2

    assert patch_v2() is True
    assert patch_v2() is True  # idempotent

    from vllm import SamplingParams
    from vllm.config import set_current_vllm_config
    from vllm.distributed import ensure_model_parallel_initialized, init_distributed_environment
    from vllm.engine.arg_utils import EngineArgs
    from vllm.forward_context import set_forward_context
    from vllm.model_executor.layers.attention.attention import Attention
    from vllm.v1.core.sched.output import NewRequestData
    from vllm.v1.worker.cpu.model_runner import CPUModelRunner
    from vllm.v1.worker.gpu.input_batch import InputBatch
    from vllm.v1.worker.gpu import model_runner as v2mod

    SIGMA = 1.0
    cfg = EngineArgs(model=model_dir, enforce_eager=True, dtype="float32", skip_tokenizer_init=True,
                     max_model_len=128, max_num_batched_tokens=256, max_num_seqs=8, seed=0,
                     additional_config={"btrans": {"granularity": "token"}}).create_engine_config()
    out = {}
    with set_current_vllm_config(cfg):
        init_distributed_environment(1, 0, f"file://{model_dir}/dist_init", 0, backend="gloo")
        ensure_model_parallel_initialized(1, 1)
        runner = CPUModelRunner(cfg, torch.device("cpu"))
        runner.load_model()
        load_model_again = type(runner).load_model
        out["hooked"] = is_hooked_runner(type(runner)) and is_hooked_runner(v2mod.GPUModelRunner)
        state = runner._btrans
        out["norms_patched"] = state.counters.norms_patched
        ms = runner.model_state

        # ---- stand-in attention: exact causal SDPA, per-request K/V kept across steps
        step = {}
        kv = {}

        def make_attn(mod):
            nh, nkv, hd = mod.num_heads, mod.num_kv_heads, mod.head_size

            def forward(query, key, value, output_shape=None):
                outs = []
                for rid, s, e in zip(step["req_ids"], step["qsl"][:-1], step["qsl"][1:]):
                    n = e - s
                    q = query[s:e].view(n, nh, hd).transpose(0, 1)  # [nh, n, hd]
                    k = key[s:e].view(n, nkv, hd).transpose(0, 1)
                    v = value[s:e].view(n, nkv, hd).transpose(0, 1)
                    pk, pv = kv.get((id(mod), rid), (k[:, :0], v[:, :0]))
                    k, v = torch.cat([pk, k], 1), torch.cat([pv, v], 1)  # [nkv, L, hd]
                    kv[(id(mod), rid)] = (k, v)
                    past = k.shape[1] - n
                    mask = torch.arange(k.shape[1])[None, :] <= (past + torch.arange(n))[:, None]
                    rep = nh // nkv
                    o = torch.nn.functional.scaled_dot_product_attention(
                        q, k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0), attn_mask=mask,
                        scale=hd ** -0.5)
                    outs.append(o.transpose(0, 1).reshape(n, nh * hd))
                return torch.cat(outs, 0)

            return forward

        for m in runner.model.modules():
            if isinstance(m, Attention):
                m.forward = make_attn(m)

        def new_req(rid, prompt, extra):
            sp = SamplingParams(max_tokens=4, extra_args=extra)
            return NewRequestData(req_id=rid, prompt_token_ids=prompt, mm_features=[], sampling_params=sp,
                                  pooling_params=None, block_ids=([],), num_computed_tokens=0,
                                  lora_request=None, prefill_token_ids=prompt)

        def run_step(entries):
            """entries: (req_id, row, tokens, num_computed) in batch order -> {req_id: logits [n, vocab]}"""
            num_sched = [len(t) for _, _, t, _ in entries]
            total = sum(num_sched)
            batch = InputBatch.make_dummy(len(entries), total, runner.input_buffers)
            qsl = np.concatenate([[0], np.cumsum(num_sched)]).astype(np.int32)
            batch = dataclasses.replace(
                batch, req_ids=[e[0] for e in entries],
                idx_mapping_np=np.array([e[1] for e in entries], dtype=np.int32),
                num_scheduled_tokens=np.array(num_sched, dtype=np.int32), query_start_loc_np=qsl,
                num_computed_tokens_np=np.array([e[3] for e in entries], dtype=np.int32))
            ids = torch.tensor([t for _, _, toks, _ in entries for t in toks], dtype=torch.long)
            pos = torch.tensor([c + j for _, _, toks, c in entries for j in range(len(toks))], dtype=torch.long)
            extra_inputs = ms.prepare_inputs(batch, runner.req_states)
            step.update(req_ids=[e[0] for e in entries], qsl=qsl.tolist())
            with torch.no_grad(), set_forward_context(None, cfg, num_tokens=total):
                kw = {"input_ids": ids, "positions": pos, "inputs_embeds": None, "intermediate_tensors": None}
                kw.update(extra_inputs)
                hidden = runner.model(**kw)
                logits = runner.model.compute_logits(hidden)
            return {e[0]: logits[s:t].float() for e, s, t in zip(entries, qsl[:-1], qsl[1:])}

        P1 = [5, 17, 42, 7, 99, 3, 250, 11]
        P2 = [9, 8, 7, 6, 5, 4]
        P3 = [31, 41, 59, 26, 53, 58, 97, 93]
        # real ModelState.add_request with real NewRequestData, rows as the runner would assign them
        ms.add_request(0, new_req("A", P1, latent_args(424242, SIGMA)))
        ms.add_request(1, new_req("B", P2, None))
        ms.add_request(2, new_req("C", P3, latent_args(9, SIGMA, granularity="token")))
        # step 1: order C, A, B; C is chunked (first half)
        s1 = run_step([("C", 2, P3[:4], 0), ("A", 0, P1, 0), ("B", 1, P2, 0)])
        out["padding_rows_zero"] = bool((state.sigma[:, 4 + 8 + 6:] == 0).all() and (state.mu[:, 18:] == 0).all()
                                        and (state.slot_idx[18:] == 0).all())
        tok = int(s1["A"][-1].argmax())
        ms.remove_request("B")
        out["B_forgotten"] = "B" not in state.requests
        # step 2: C's second chunk and A's decode, order A, C
        s2 = run_step([("A", 0, [tok], 8), ("C", 2, P3[4:], 4)])
        # dummy batch (random ids never added) and capture-style dummy inputs: zero latents, nothing kept
        # A (sequence: its slot) then C (token-wise: its rows)
        out["latents_were_live"] = bool(state.slot_idx[0] != 0 and (state.sigma[:, 1:5] != 0).all())
        ms.prepare_dummy_inputs(2, 5)
        out["capture_zero"] = bool((state.sigma == 0).all() and (state.mu == 0).all() and (state.slot_idx == 0).all())
        run_step([("A", 0, [int(s2["A"][-1].argmax())], 9)])  # live again
        n_before = len(state.requests)
        ms.prepare_inputs(InputBatch.make_dummy(2, 5, runner.input_buffers), runner.req_states)
        out["dummy_zero"] = bool((state.sigma == 0).all() and (state.mu == 0).all() and (state.slot_idx == 0).all())
        out["dummy_ids_not_kept"] = len(state.requests) == n_before
        out["counters"] = dataclasses.asdict(state.counters)

        out["single_wrap"] = patched(load_model_again) is not None and patched(
            load_model_again.__wrapped__) is None  # patch_v2 twice: one wrapper
        out["model_state_hooked_once"] = getattr(ms, "_btrans_feeder", None) is not None

    def hf(granularity=None):
        m = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
        if granularity is None:
            return m, None
        return m, attach(m, LatentConfig(sigma=SIGMA, granularity=granularity), mode="mean")

    plain, _ = hf()
    seq_m, seq_pop = hf("sequence")
    tok_m, tok_pop = hf("token")
    with torch.no_grad():
        ref_B = plain(torch.tensor([P2])).logits[0]
        ref_A_plain = plain(torch.tensor([P1])).logits[0]
        with seq_pop.replay([424242]):
            ref_A = seq_m(torch.tensor([P1 + [tok]])).logits[0]
        with tok_pop.replay([9]):
            ref_C = tok_m(torch.tensor([P3])).logits[0]
    d = lambda a, b: float((a - b).abs().max())
    out["A_step1"] = d(s1["A"], ref_A[:8])
    out["A_decode"] = d(s2["A"], ref_A[8:9])
    out["B_plain"] = d(s1["B"], ref_B)
    out["C_chunk1"] = d(s1["C"], ref_C[:4])
    out["C_chunk2"] = d(s2["C"], ref_C[4:])
    out["A_vs_plain"] = d(s1["A"], ref_A_plain)  # the latent really acts
    print("RESULT " + json.dumps(out))
''')


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("tiny_qwen3_v2"))
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", DRIVER, model_dir], capture_output=True, text=True,
                          timeout=240, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:] + proc.stdout[-2000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_load_model_wraps_norms_and_marks_the_v2_runner_hooked(result):
    assert result["hooked"]
    assert result["norms_patched"] > 0
    assert result["single_wrap"]
    assert result["model_state_hooked_once"]


def test_v2_sequence_latent_matches_hf_replay_in_prefill_and_decode(result):
    assert result["A_step1"] < 1e-4, result
    assert result["A_decode"] < 1e-4, result
    assert result["A_vs_plain"] > 0.05, result


def test_v2_request_without_latent_equals_the_plain_model(result):
    assert result["B_plain"] < 1e-4, result


def test_v2_token_granularity_uses_absolute_positions_across_chunks(result):
    assert result["C_chunk1"] < 1e-4, result
    assert result["C_chunk2"] < 1e-4, result


def test_v2_padding_dummy_batches_and_capture_get_zero_latents_and_requests_are_forgotten(result):
    assert result["padding_rows_zero"]
    assert result["dummy_zero"]
    assert result["dummy_ids_not_kept"]
    assert result["latents_were_live"]
    assert result["capture_zero"]
    assert result["B_forgotten"]
    assert result["counters"]["requests_with_latent"] == 2
    assert result["counters"]["steps"] == 4  # three real steps and one dummy batch; capture is not a step
