"""Parallel layouts: pipeline stages wrap what they hold, counters count each request once under TP / PP / DP
and disaggregated serving, and the layouts the latent cannot follow (dual batch overlap, speculative decoding
with token granularity) are refused by the plugin and by the run config before Ray starts.

These layouts need several devices or processes that these 2-core machines cannot run, so the pieces are
tested directly: vLLM's real `PPMissingLayer` and `RMSNorm` modules, the real counter aggregation and the
real patched engine-client method, verl's real composed config."""

import asyncio

import pytest
import torch

vllm = pytest.importorskip("vllm")
from vllm.config import VllmConfig, set_current_vllm_config  # noqa: E402
from vllm.model_executor.layers.layernorm import RMSNorm  # noqa: E402
from vllm.model_executor.models.utils import PPMissingLayer  # noqa: E402

from btrans_verl.patching import patched  # noqa: E402
from btrans_verl.verl.replay_buffer import SERVER_NAME  # noqa: E402
from btrans_verl.vllm import plugin  # noqa: E402
from btrans_verl.vllm.canary import eager_check  # noqa: E402
from btrans_verl.vllm.counters import counter_delta, sum_worker_counters  # noqa: E402
from btrans_verl.vllm.requests import LatentRequest  # noqa: E402
from btrans_verl.vllm.settings import EngineSettings  # noqa: E402
from btrans_verl.vllm.worker import engine_refusal, install, request_refusal  # noqa: E402

HIDDEN = 16


class _Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.input_layernorm = RMSNorm(HIDDEN)
        self.post_attention_layernorm = RMSNorm(HIDDEN)


def _stage(layers: range, total: int, last: bool) -> torch.nn.Module:
    """A decoder as vLLM builds it on one pipeline stage: layers of other stages and (but on the last stage)
    the final norm are PPMissingLayer placeholders."""
    with set_current_vllm_config(VllmConfig()):
        root, model = torch.nn.Module(), torch.nn.Module()
        model.layers = torch.nn.ModuleList([_Layer() if i in layers else PPMissingLayer() for i in range(total)])
        model.norm = RMSNorm(HIDDEN) if last else PPMissingLayer()
        root.model = model
    return root


@pytest.mark.parametrize("layers,last,wrapped", [(range(0, 2), False, 4), (range(2, 4), True, 5)])
def test_each_pipeline_stage_wraps_the_norms_it_holds_and_they_add_the_contract_latent(layers, last, wrapped):
    stage = _stage(layers, total=4, last=last)
    state = install(stage, "qwen3", max_tokens=8, device=torch.device("cpu"), settings=EngineSettings(), max_minds=4)
    assert state is not None  # before: the final norm's PPMissingLayer made install() raise
    assert state.kinds == ("input_layernorm", "post_attention_layernorm", "final_norm")  # rows for every kind
    assert state.counters.norms_patched == wrapped
    assert ("model.norm" in state.norms) == last
    with set_current_vllm_config(VllmConfig()):
        errors, checked = eager_check(stage, state)
    assert errors == [] and checked == wrapped


def _worker(tp, pp, dp, requests, norms=5):
    return {"norms_patched": norms, "requests_with_latent": requests, "tokens_shifted": 10 * requests,
            "steps_with_latent": 1, "steps": 1, "rank": 0, "tp_rank": tp, "pp_rank": pp, "pp_last": 1, "dp_rank": dp}


def test_requests_are_counted_once_per_replica_under_tensor_and_pipeline_parallelism():
    # TP 2 x PP 2: all four workers of the replica saw the same 8 requests
    workers = [_worker(tp, pp, 0, 8, norms=3 if pp == 0 else 2) for pp in range(2) for tp in range(2)]
    total = sum_worker_counters(workers)
    assert total["requests_with_latent"] == 8 and total["tokens_shifted"] == 80
    assert total["norms_patched"] == 5  # the two stages' norms, once (not once per tensor rank)
    assert total["workers"] == 4
    assert "tp_rank" not in total and "rank" not in total
    assert counter_delta(total, {}) == {"requests_with_latent": 8, "tokens_shifted": 80, "steps_with_latent": 1,
                                        "steps": 1}


def test_data_parallel_engines_serve_disjoint_requests_and_are_summed():
    workers = [_worker(tp, 0, dp, 3 + dp) for dp in range(2) for tp in range(2)]  # DP 2 x TP 2
    assert sum_worker_counters(workers)["requests_with_latent"] == 3 + 4


def test_replies_of_older_plugins_without_ranks_still_sum():
    assert sum_worker_counters([{"norms_patched": 5, "requests_with_latent": 2}])["requests_with_latent"] == 2


class _DPClient:
    """Just the engine-client state the patched vLLM method reads: several engine cores, and the transport call
    (one reply per engine: a list with one dict per worker)."""

    def __init__(self, engines):
        self.core_engines = engines
        self.calls = []

    async def _call_utility_async(self, method, *args, engine):
        self.calls.append((method, args[0], engine))
        return [{"engine": engine}]


def test_our_rpcs_reach_every_data_parallel_engine_and_others_are_untouched():
    from vllm.v1.engine.core_client import AsyncMPClient

    plugin._patch_engine_client()
    method = AsyncMPClient.collective_rpc_async
    assert patched(method) == "vllm: AsyncMPClient.collective_rpc_async"
    client = _DPClient([b"\x00\x00", b"\x01\x00"])
    replies = asyncio.run(method(client, "btrans_counters"))
    assert replies == [{"engine": b"\x00\x00"}, {"engine": b"\x01\x00"}]  # before: the first engine's only
    assert {c[2] for c in client.calls} == {b"\x00\x00", b"\x01\x00"}
    assert asyncio.run(method(client, "btrans_canary")) == replies


def test_disaggregated_decode_servers_are_rollout_servers_and_reward_servers_are_not():
    assert SERVER_NAME.match("vllm_server_0_0") and SERVER_NAME.match("vllm_server_12_0_abc")
    m = SERVER_NAME.match("vllm_server_decode_1_0")
    assert m and m["decode"] and m["replica"] == "1"
    for other in ("vllm_server_reward_0_0", "vllm_server_teacher_0_0", "sglang_server_0_0"):
        assert not SERVER_NAME.match(other), other


class _Config:
    def __init__(self, dbo=False, spec=None, btrans=None):
        self.parallel_config = type("P", (), {"enable_dbo": dbo})()
        self.speculative_config = spec
        self.additional_config = {"btrans": btrans or {"granularity": "token"}}


def test_the_plugin_refuses_dual_batch_overlap_and_token_latents_with_speculative_decoding():
    seq, tok = LatentRequest(seed=1), LatentRequest(seed=1, granularity="token")
    assert engine_refusal(_Config()) is None and request_refusal(_Config(), tok) is None
    assert "enable_dbo" in engine_refusal(_Config(dbo=True))
    assert "enable_dbo" in request_refusal(_Config(dbo=True), seq)
    assert request_refusal(_Config(spec=object()), seq) is None  # sequence latents do not depend on positions
    assert "speculative decoding" in request_refusal(_Config(spec=object()), tok)
    # token latents need an engine that serves them; a stock engine serves no latent at all
    assert "granularity'] = 'token'" in request_refusal(_Config(btrans=True), tok)
    stock = _Config()
    stock.additional_config = {}
    assert "not configured for B-Trans" in request_refusal(stock, seq)


def test_the_real_vllm_config_field_for_dual_batch_overlap_is_the_one_refused():
    from vllm.config import ParallelConfig

    assert "enable_dbo" in ParallelConfig.__dataclass_fields__


def test_the_run_config_refuses_dbo_and_token_speculation_before_ray(compose_cfg):
    from btrans_verl.verl.settings import validate_run_config

    # PP is fine
    validate_run_config(compose_cfg("+btrans=on", "actor_rollout_ref.rollout.pipeline_model_parallel_size=2"))
    with pytest.raises(ValueError, match=r"engine_kwargs\.vllm\.enable_dbo"):
        validate_run_config(compose_cfg("+btrans=on", "+actor_rollout_ref.rollout.engine_kwargs.vllm.enable_dbo=true"))
    spec = "+actor_rollout_ref.rollout.engine_kwargs.vllm.speculative_config={method:ngram,num_speculative_tokens:2}"
    validate_run_config(compose_cfg("+btrans=on", spec))  # sequence granularity: fine
    with pytest.raises(ValueError, match=r"speculative_config.*granularity=token"):
        validate_run_config(compose_cfg("+btrans=on", spec, "btrans.granularity=token"))

