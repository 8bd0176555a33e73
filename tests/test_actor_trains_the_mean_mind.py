"""The actor and reference are the mean mind: with btrans.mu != 0 the model verl's FSDP engine builds carries the
constant shift mu after every target norm (and nothing else); with mu = 0 or B-Trans off it is the base model."""

from __future__ import annotations

import types

import torch

from btrans_verl.latent import DEFAULT_TARGETS
from btrans_verl.patching import patched
from btrans_verl.tiny import tiny_model
from btrans_verl.verl.mean_shift import attach_mean_shift, mean_shift_config


def _hf_config(model, **attrs):
    for k, v in attrs.items():
        setattr(model.config, k, v)
    return model.config


def test_nonzero_mu_shifts_every_target_norm_deterministically():
    model = tiny_model("qwen3", seed=1)
    ids = torch.randint(3, 200, (2, 12))
    base = model(ids).logits
    cfg = _hf_config(model, btrans_enable=True, btrans_mu=0.05, btrans_targets=list(DEFAULT_TARGETS))
    population = attach_mean_shift(model, cfg, role="actor")
    assert population is not None and population.counters.norms_patched == 2 * 2 + 1
    shifted = model(ids).logits
    assert not torch.allclose(base, shifted, atol=1e-4)
    assert torch.equal(shifted, model(ids).logits)  # no noise: the same every call
    population.detach()
    assert torch.allclose(model(ids).logits, base)


def test_zero_mu_or_btrans_off_attach_nothing():
    model = tiny_model("qwen3")
    assert attach_mean_shift(model, _hf_config(model, btrans_enable=True, btrans_mu=0.0,
                                               btrans_targets=list(DEFAULT_TARGETS))) is None
    assert mean_shift_config(_hf_config(model, btrans_enable=False, btrans_mu=0.3)) is None
    assert mean_shift_config(types.SimpleNamespace()) is None  # a run without B-Trans


def test_the_verl_plugin_patches_verls_fsdp_engine():
    from verl.workers.engine.fsdp import transformer_impl

    import btrans_verl.verl.plugin as plugin

    assert plugin.LOADED, plugin.IMPORT_ERROR
    assert patched(transformer_impl.FSDPEngine._build_module) == "actor mean shift"


def test_the_mean_minds_log_prob_of_the_samples_is_logged_from_verls_old_log_probs():
    from verl.trainer.ppo.v1 import trainer_base

    import btrans_verl.verl.plugin as plugin
    from btrans_verl.verl.trainer_metrics import METRIC, mean_logprob_per_token

    assert plugin.LOADED, plugin.IMPORT_ERROR
    assert patched(trainer_base.PPOTrainer._compute_old_log_prob) == METRIC
    log_probs = torch.tensor([[-1.0, -3.0, 0.0], [-2.0, 0.0, 0.0]])  # [trajectories, response], padded
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert mean_logprob_per_token(log_probs, mask) == -2.0  # (-2 + -2) / 2: each trajectory's own mean first
