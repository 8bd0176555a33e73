"""Relative sigma (`sigma_scale="weight_rms"`): each norm's latent std is sigma * rms(its weight), exactly, on the
Hugging Face side (the vLLM side is checked against it in test_vllm_per_request_latents.py)."""

import math

import numpy as np
import pytest
import torch

from btrans_verl.hf import attach
from btrans_verl.latent import (
    SIGMA_SCALES,
    LatentConfig,
    hypothesis_key,
    latent_from_keys,
    norm_index,
    norm_scale,
    norm_sigma,
    shift,
)
from btrans_verl.tiny import tiny_model
from btrans_verl.vllm.requests import LatentRequest, latent_args, parse_latent_request

PROMPT = torch.tensor([[5, 17, 42, 7, 99, 3, 250, 11]])


def test_weight_rms_is_exact_order_free_and_float32():
    torch.manual_seed(0)
    w = torch.rand(577) * 3
    scale = norm_scale("weight_rms", w)
    exact = math.sqrt(math.fsum(float(v) ** 2 for v in w.double()) / w.numel())
    assert scale == float(np.float32(exact))
    assert norm_scale("weight_rms", w[torch.randperm(w.numel())]) == scale  # summation order cannot change it
    assert norm_scale("absolute", w) == 1.0
    assert norm_sigma(0.1, scale) == float(np.float32(0.1) * np.float32(scale))


def test_unknown_scale_is_refused_naming_it_and_the_default_is_absolute():
    assert LatentConfig().sigma_scale == "absolute" and not LatentConfig().relative
    assert set(SIGMA_SCALES) == {"absolute", "weight_rms"}
    with pytest.raises(ValueError, match="btrans.sigma_scale.*'per_norm'"):
        LatentConfig(sigma_scale="per_norm")
    with pytest.raises(ValueError, match="btrans.sigma_scale"):
        parse_latent_request({"btrans_seed": 3, "btrans_sigma_scale": "rms"})


def test_requests_carry_the_scale_and_never_share_a_prefix_cache_across_scales():
    nested = parse_latent_request(latent_args(7, 0.1, sigma_scale="weight_rms"))
    flat = parse_latent_request({"btrans_seed": 7, "btrans_sigma": 0.1, "btrans_sigma_scale": "weight_rms"})
    assert nested == flat and nested.sigma_scale == "weight_rms"
    absolute = LatentRequest(seed=7, sigma=0.1)
    assert absolute.sigma_scale == "absolute" and absolute.cache_salt != nested.cache_salt


def _first_norm_outputs(model, cfg, seed, population=None):
    """Layer 0's input norm output, plain and shifted (its input, the embeddings, carries no latent): [hidden]
    at the first token each."""
    norm = model.model.layers[0].input_layernorm
    seen = []
    handle = norm.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))  # before attach: plain
    pop = attach(model, cfg, mode="mean") if population is None else population
    after = []
    later = norm.register_forward_hook(lambda m, i, o: after.append(o.detach().clone()))
    with torch.no_grad(), pop.replay([seed]):
        model(PROMPT)
    if population is None:
        pop.detach()
    handle.remove(), later.remove()
    return seen[-1][0, 0], after[-1][0, 0]


def _first_norm_shift(model, cfg, seed, population=None):
    plain, shifted = _first_norm_outputs(model, cfg, seed, population)
    return shifted - plain  # [hidden]


@pytest.mark.parametrize("granularity", ["sequence", "token"])
def test_hf_adds_sigma_times_the_norms_weight_rms(granularity):
    model = tiny_model("qwen3")
    norm = model.model.layers[0].input_layernorm
    with torch.no_grad():
        norm.weight.mul_(0.1)  # a norm with a small output scale, as early norms of real models
    seed, sigma = 99, 0.5
    cfg = LatentConfig(sigma=sigma, sigma_scale="weight_rms", granularity=granularity)
    plain, shifted = _first_norm_outputs(model, cfg, seed)
    z = shifted - plain
    idx = norm_index(0, "input_layernorm")
    key = hypothesis_key(torch.tensor(seed), torch.tensor(0) if granularity == "token" else None)
    scale = norm_scale("weight_rms", norm.weight)
    assert 0.04 < scale < 0.16
    want = latent_from_keys(key, idx, z.shape[-1], 0.0, norm_sigma(sigma, scale))
    assert torch.equal(shifted, shift(plain, want))  # the contract, bit for bit
    absolute = _first_norm_shift(model, LatentConfig(sigma=sigma, granularity=granularity), seed)
    assert torch.allclose(z, absolute * scale, rtol=1e-5, atol=1e-7)  # the same mind, scaled to the norm


def test_relative_sigma_follows_the_weights_as_they_are_now():
    model = tiny_model("qwen3")
    cfg = LatentConfig(sigma=0.5, sigma_scale="weight_rms")
    before = _first_norm_shift(model, cfg, 5)
    with torch.no_grad():
        model.model.layers[0].input_layernorm.weight.mul_(2.0)  # a trained (or synced) norm weight
    after = _first_norm_shift(model, cfg, 5)
    assert torch.allclose(after, 2 * before, rtol=1e-5)
    # and one population, kept across the change, reads the new weight at its next call
    pop = attach(model, cfg, mode="mean")
    first = _first_norm_shift(model, cfg, 5, pop)
    with torch.no_grad():
        model.model.layers[0].input_layernorm.weight.mul_(0.5)
    assert torch.allclose(_first_norm_shift(model, cfg, 5, pop), first / 2, rtol=1e-5)
    pop.detach()


def test_a_weight_sync_recomputes_running_relative_minds_and_keeps_absolute_ones():
    from types import SimpleNamespace

    from btrans_verl.vllm.settings import EngineSettings
    from btrans_verl.vllm.worker import LatentState

    hidden, kinds = 8, ("input_layernorm", "post_attention_layernorm")
    names = [f"model.layers.0.{k}" for k in kinds] + ["model.norm"]
    idx = [norm_index(0, k) for k in kinds] + [norm_index(None, "final_norm")]
    norms = [(n, i, k, hidden, torch.float32) for n, i, k in zip(names, idx, (*kinds, "final_norm"))]
    state = LatentState(max_tokens=16, max_minds=4, device=torch.device("cpu"), norms=norms, settings=EngineSettings())
    torch.manual_seed(0)
    state.modules = {n: torch.nn.RMSNorm(hidden) for n in names}
    with torch.no_grad():
        for m in state.modules.values():
            m.weight.uniform_(0.1, 2.0)
    params = {"rel": SimpleNamespace(extra_args=latent_args(11, 0.3, sigma_scale="weight_rms")),
              "abs": SimpleNamespace(extra_args=latent_args(12, 0.3))}

    def step():  # one decode token per request
        state.fill(list(params), list(params.values()), np.array([1, 1]), np.array([5, 5]))

    def row(req: str) -> torch.Tensor:  # the final norm's z of the request's slot
        return state.groups[0].minds[2, state.slot_of[req]].clone()

    def contract(seed: int, relative: bool) -> torch.Tensor:
        scale = norm_scale("weight_rms", state.modules["model.norm"].weight) if relative else 1.0
        sigma = norm_sigma(0.3, scale) if relative else 0.3
        return latent_from_keys(hypothesis_key(torch.tensor(seed)), idx[2], hidden, 0.0, sigma)

    step()
    assert torch.equal(row("rel"), contract(11, True)) and torch.equal(row("abs"), contract(12, False))
    computed = state.counters.minds_computed
    with torch.no_grad():
        state.modules["model.norm"].weight.mul_(4.0)  # verl's weight sync
    state.weights_changed()  # what the model's load_weights wrapper calls
    step()
    assert state.counters.minds_computed == computed + 1  # only the relative mind was rebuilt
    assert torch.equal(row("rel"), contract(11, True)) and torch.equal(row("abs"), contract(12, False))
