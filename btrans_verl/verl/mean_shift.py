"""The deterministic actor and reference: verl's FSDP engine builds them as the mean mind (z = mu).

    python -m verl.trainer.main_ppo +btrans=on btrans.mu=0.01 ...

B-Trans perturbs rollouts only; the update step uses the mean shift `mu` and no noise. With mu = 0 (the default)
the mean mind is the base model and nothing is attached. Otherwise every model verl's FSDP engine builds (actor
and reference, with or without LoRA) gets `btrans_verl.hf.attach(model, LatentConfig(mu, sigma=0), mode="mean")`
right after `from_pretrained`, before LoRA and FSDP wrapping, so the same norms carry the same constant shift the
vLLM rollout adds to every mind.

How the settings get there: conf/btrans/on.yaml writes them into `actor_rollout_ref.model.override_config`, which
verl copies onto the Hugging Face config (`verl/utils/model.py` `update_model_config`) as the attributes
`btrans_enable`, `btrans_mu`, `btrans_targets`. The patch (installed by the verl plugin in every process, active
in the trainer workers) wraps `FSDPEngine._build_module` (`verl/workers/engine/fsdp/transformer_impl.py`,
verl 0.9.1) and prints one line per model it shifts, so the run log proves it.
"""

from __future__ import annotations

import logging

from btrans_verl.latent import LatentConfig
from btrans_verl.verl import patch_verl

logger = logging.getLogger("btrans_verl.verl.mean_shift")

ENGINE_MODULE = "verl.workers.engine.fsdp.transformer_impl"


def mean_shift_config(hf_config) -> LatentConfig | None:
    """The latent config of the mean mind from the attributes on `hf_config`; None when nothing is to attach."""
    if not getattr(hf_config, "btrans_enable", False):
        return None
    mu = float(getattr(hf_config, "btrans_mu", 0.0))
    if mu == 0.0:
        return None
    return LatentConfig(mu=mu, sigma=0.0, targets=tuple(hf_config.btrans_targets))


def attach_mean_shift(module, hf_config, role: str = "model"):
    """Attach the mean mind to `module` when its config asks for a non-zero shift. Returns the population or None."""
    config = mean_shift_config(hf_config)
    if config is None:
        return None
    from btrans_verl.hf import attach

    population = attach(module, config, mode="mean")
    print(f"[btrans] {role}: mean shift mu={config.mu} attached to {population.counters.norms_patched} norms "
          f"({', '.join(config.targets)})", flush=True)
    return population


def _make_build_module(original):
    def _build_module(self):
        built = original(self)
        role = "reference" if self.engine_config.forward_only else "actor"
        attach_mean_shift(built, self.model_config.hf_config, role=role)
        return built

    return _build_module


def install() -> None:
    """Patch verl's FSDP engine when (if ever) this process imports it."""
    patch_verl(ENGINE_MODULE, "FSDPEngine", "_build_module", _make_build_module, what="actor mean shift")
