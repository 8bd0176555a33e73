"""Which vLLM engines carry latents: an engine opts in through vLLM's `additional_config`; every other engine is
stock vLLM (no wrapper, no buffer, vLLM's own compile-cache key), even with btrans-verl installed.

    LLM(model, additional_config={"btrans": True})                                   # Python
    python -m vllm.entrypoints.openai.api_server --model M --additional-config '{"btrans": true}'
    python -m verl.trainer.main_ppo +btrans=on ...                                   # verl: conf/btrans/on.yaml sets
                       # actor_rollout_ref.rollout.engine_kwargs.vllm.additional_config.btrans from btrans.*

`additional_config["btrans"]` is `true` (the defaults below), `false` / absent (a stock engine), or a mapping:

    enable       bool, default true. false: a stock engine (what `+btrans=off` sends).
    targets      list of norm kinds, default [input_layernorm, post_attention_layernorm, final_norm]: the norms
                 this engine wraps. A request may target a subset; Qwen3's per-head q_norm / k_norm only if
                 listed here (each wrapped norm costs a gather and an add per token per step).
    granularity  "sequence" (default) | "token". "sequence": the engine serves hypothesis-sampled minds (one z
                 per sequence), each computed once per request into a row of a fixed table; a step adds that
                 row. "token": it also serves the paper's ablation (a fresh z per token position), computed by
                 the contract's hash in every wrapped norm on every step: a slower engine, also for sequence
                 requests' batches.

A request carrying a latent to an engine that is not opted in is refused, with this module's `OPT_IN` hint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from btrans_verl.latent import DEFAULT_TARGETS, GRANULARITIES, NORM_KINDS, LatentConfig

KEY = "btrans"
OPT_IN = ("start the engine with additional_config={'btrans': True} (LLM(...)), --additional-config "
          "'{\"btrans\": true}' (vllm serve / the OpenAI server), or run verl with +btrans=on")
FIELDS = ("enable", "targets", "granularity")


@dataclass(frozen=True)
class EngineSettings:
    """An opted-in engine's B-Trans settings (see the module docstring); validated at construction."""

    targets: tuple[str, ...] = DEFAULT_TARGETS
    granularity: str = LatentConfig.granularity

    def __post_init__(self):
        targets = self.targets
        if isinstance(targets, str) or not isinstance(targets, (list, tuple)) or not targets or \
                not all(isinstance(t, str) for t in targets):
            raise ValueError(f"additional_config['btrans']['targets'] must be a non-empty list of norm kinds, "
                             f"got {targets!r}")
        unknown = [t for t in targets if t not in NORM_KINDS]
        if unknown:
            raise ValueError(f"additional_config['btrans']['targets']: unknown norm kind(s) {unknown}; known: "
                             f"{list(NORM_KINDS)}")
        object.__setattr__(self, "targets", tuple(k for k in NORM_KINDS if k in targets))  # canonical order
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"additional_config['btrans']['granularity'] must be one of {GRANULARITIES}, got "
                             f"{self.granularity!r}")

    @property
    def token_latents(self) -> bool:
        """Whether this engine also serves token-wise latents (the hash path in every norm, every step)."""
        return self.granularity == "token"

    def describe(self) -> str:
        return f"latents after {','.join(self.targets)}; granularity {self.granularity}"


def parse_engine_settings(value) -> EngineSettings | None:
    """`additional_config["btrans"]` -> EngineSettings, or None for a stock engine. Raises ValueError naming the
    offending value."""
    if value is None or value is False:
        return None
    if value is True:
        return EngineSettings()
    if not isinstance(value, Mapping):
        raise ValueError(f"additional_config['btrans'] must be true, false or a mapping with keys {FIELDS}, got "
                         f"{value!r}")
    unknown = sorted(set(value) - set(FIELDS))
    if unknown:
        raise ValueError(f"additional_config['btrans']: unknown key(s) {unknown}; known: {list(FIELDS)}")
    enable = value.get("enable", True)
    if not isinstance(enable, bool):
        raise ValueError(f"additional_config['btrans']['enable'] must be true or false, got {enable!r}")
    if not enable:
        return None
    return EngineSettings(**{k: (tuple(v) if k == "targets" and isinstance(v, list) else v)
                             for k, v in value.items() if k != "enable"})


def engine_settings(vllm_config) -> EngineSettings | None:
    """This engine's settings (None: stock engine). `vllm_config`: a VllmConfig, or None (not an engine)."""
    extra = getattr(vllm_config, "additional_config", None)
    if not isinstance(extra, Mapping):
        return None
    return parse_engine_settings(extra.get(KEY))
