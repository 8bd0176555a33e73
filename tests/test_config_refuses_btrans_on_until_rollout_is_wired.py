"""Until verl's rollout sends each trajectory's seed to vLLM, `+btrans=on` must not run as a silent no-op."""

import pytest

import btrans_verl.config as config
from omegaconf import OmegaConf


@pytest.mark.refuses_unwired
def test_enabled_btrans_is_refused_before_ray_while_rollout_latents_are_not_wired():
    assert config.ROLLOUT_LATENTS_WIRED is False
    cfg = OmegaConf.create({"btrans": {"enable": True}, "actor_rollout_ref": {"rollout": {"name": "vllm", "n": 4}}})
    with pytest.raises(ValueError, match="no latent reaches the model"):
        config.validate_run_config(cfg)
    cfg.btrans.enable = False
    assert config.validate_run_config(cfg).enable is False
