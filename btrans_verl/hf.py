"""B-Trans for Hugging Face transformers models (Qwen2, Qwen3, Llama), without editing model files.

Forward hooks on the target norms add each row's latent (`btrans_verl.latent`) to the norm's output.

Modes:
    off     the plain model: hooks return the output untouched.
    mean    the mean mind: adds `mu` only. Deterministic, differentiable, samples nothing; this is what the
            actor trains with (identity when mu = 0).
    sample  a fresh mind per sequence per `generate()` call (seeds drawn at the call's first forward, readable
            afterwards as `population.last_seeds`); outside `generate()`, per forward call.
    replay  the caller gives one seed per batch row (`population.replay(seeds)`): replays any mind, e.g. the
            one a vLLM rollout used.

    from btrans_verl.hf import attach
    from btrans_verl.latent import LatentConfig
    pop = attach(model, LatentConfig(sigma=0.05), mode="sample")
    out = model.generate(**batch, do_sample=False)         # every row is its own mind
    seeds = pop.last_seeds
    with pop.replay(seeds):
        logits = model(**batch).logits                      # the same minds again
    pop.detach()
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import torch

from btrans_verl.latent import (
    NORM_KINDS,
    LatentConfig,
    _check_seed,
    check_family,
    hypothesis_key,
    latent_from_keys,
    norm_scale,
    norm_sigma,
    shift,
    target_norms,
)

MODES = ("off", "mean", "sample", "replay")

def _model_type(model) -> str:
    cfg = getattr(model, "config", None)
    mt = getattr(cfg, "model_type", None)
    if mt is None:
        raise ValueError(f"B-Trans: cannot tell the model family of {type(model).__name__} (no config.model_type)")
    return mt


@dataclass
class Counters:
    """Proof that latents reached the model. `norm_calls_shifted` counts norm outputs that received a
    latent (or the mean shift); `tokens_shifted` counts tokens that went through a shifted forward."""

    norms_patched: int = 0
    norm_calls_shifted: int = 0
    tokens_shifted: int = 0
    rows_sampled: int = 0


class HFPopulation:
    """The population of minds of one transformers model. Create with `attach()`."""

    def __init__(self, model: torch.nn.Module, config: LatentConfig, mode: str = "mean", seed: int | None = None):
        check_family(_model_type(model), config.targets)
        self.model, self.config = model, config
        self.counters = Counters()
        self.last_seeds: list[int] | None = None
        self._rng = random.Random(seed) if seed is not None else random.SystemRandom()
        self._mode = "off"
        self._seeds: torch.Tensor | None = None  # [rows] int64 for replay / sample
        self._z_cache: dict[tuple[int, str], torch.Tensor] = {}  # (norm index, device) -> z, sequence mode
        self._sigma_cache: dict[int, float] = {}  # norm index -> its sigma (relative sigma: from its weight)
        self._positions: torch.Tensor | None = None  # [batch, seq] of the current forward, token mode
        self._in_generate = False
        self._new_call = False
        self._handles: list = []

        self._norms: list[tuple[str, int, torch.nn.Module]] = []
        decoder = None
        for name, kind, idx, module in target_norms(model, config.targets):
            self._norms.append((kind, idx, module))
            if kind == "input_layernorm" and decoder is None:
                decoder = name.rsplit(".layers.", 1)[0]
        if not self._norms:
            raise ValueError(f"B-Trans: nothing to wrap: no module of {type(model).__name__} matches targets "
                             f"{list(config.targets)}")
        found = {k for k, _, _ in self._norms}
        absent = [t for t in config.targets if t not in found]
        if absent:
            raise ValueError(f"B-Trans: target(s) {absent} match no module of {type(model).__name__}")
        self._first_idx = min(idx for _, idx, _ in self._norms)
        self._module_of = {idx: module for _, idx, module in self._norms}
        self.counters.norms_patched = len(self._norms)

        for kind, idx, module in self._norms:
            self._handles.append(module.register_forward_hook(self._make_hook(kind, idx)))
        top = model.get_submodule(decoder) if decoder else model
        self._handles.append(top.register_forward_pre_hook(self._pre_forward, with_kwargs=True))
        self._orig_generate = getattr(model, "generate", None)
        if self._orig_generate is not None:
            model.generate = self._generate
        self.set_mode(mode)

    # ----------------------------------------------------------------------------------------- control
    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"B-Trans: unknown mode {mode!r}; known: {MODES}")
        if mode == "replay" and self._seeds is None:
            raise ValueError("B-Trans: mode 'replay' needs seeds: use population.replay(seeds)")
        self._mode = mode
        self._forget()

    def set_seeds(self, seeds) -> None:
        """Seeds for replay: one per batch row, integers in [0, 2**63)."""
        seeds = [int(s) if not isinstance(s, int) else s for s in seeds]
        for s in seeds:
            _check_seed(s)
        if not seeds:
            raise ValueError("B-Trans: replay needs at least one seed")
        self._seeds = torch.tensor(seeds, dtype=torch.int64)
        self._forget()

    @contextlib.contextmanager
    def replay(self, seeds):
        """Within the block, row i of every batch is the mind of seeds[i]."""
        prev_mode, prev_seeds = self._mode, self._seeds
        self.set_seeds(seeds)
        self.set_mode("replay")
        try:
            yield self
        finally:
            self._seeds = prev_seeds
            self._mode = prev_mode
            self._forget()

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self._orig_generate is not None:
            del self.model.generate  # back to the class's method
        self._mode = "off"

    def _forget(self) -> None:
        """Drop the cached latents and sigmas: the minds (or the weights a relative sigma reads) may change."""
        self._z_cache.clear()
        self._sigma_cache.clear()

    def _sigma(self, idx: int) -> float:
        """The std of norm `idx`'s latent: sigma, or with a relative sigma sigma * its weight's scale (read from
        the weight at the first forward of a call, so a trained norm is read as it is now)."""
        cfg = self.config
        if not cfg.relative:
            return cfg.sigma
        if idx not in self._sigma_cache:
            scale = norm_scale(cfg.sigma_scale, self._module_of[idx].weight)
            self._sigma_cache[idx] = norm_sigma(cfg.sigma, scale)
        return self._sigma_cache[idx]

    # ----------------------------------------------------------------------------------------- hooks
    def _generate(self, *args, **kwargs):
        self._in_generate, self._new_call = True, True
        try:
            return self._orig_generate(*args, **kwargs)
        finally:
            self._in_generate = False

    def _draw(self, rows: int) -> None:
        seeds = [self._rng.getrandbits(63) for _ in range(rows)]
        self._seeds = torch.tensor(seeds, dtype=torch.int64)
        self.last_seeds = seeds
        self.counters.rows_sampled += rows
        self._forget()

    def _pre_forward(self, module, args, kwargs):
        if self._mode in ("off", "mean"):
            return None
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        ref = ids if ids is not None else embeds
        rows, seq = ref.shape[0], ref.shape[1]
        if self._mode == "sample" and (self._new_call or not self._in_generate):
            self._draw(rows)
            self._new_call = False
        if self._seeds.shape[0] != rows:
            raise ValueError(f"B-Trans: {self._seeds.shape[0]} seeds for a batch of {rows} rows")
        if self.config.granularity == "token":
            pos = kwargs.get("position_ids")
            if pos is None:
                cache_pos = kwargs.get("cache_position")
                pos = cache_pos.unsqueeze(0) if cache_pos is not None else torch.arange(seq).unsqueeze(0)
            self._positions = pos.expand(rows, -1).to(torch.int64).cpu()  # [batch, seq]
        return None

    def _latent(self, idx: int, hidden: int, device) -> torch.Tensor:
        """z for every row (sequence: [batch, hidden]) or every token (token: [batch, seq, hidden])."""
        cfg = self.config
        if self.config.granularity == "token":
            keys = hypothesis_key(self._seeds.unsqueeze(1), self._positions)  # [batch, seq]
            return latent_from_keys(keys.to(device), idx, hidden, cfg.mu, self._sigma(idx))
        key = (idx, str(device))
        z = self._z_cache.get(key)
        if z is None:
            keys = hypothesis_key(self._seeds).to(device)  # [batch]
            z = self._z_cache[key] = latent_from_keys(keys, idx, hidden, cfg.mu, self._sigma(idx))  # [batch, hidden]
        return z

    def _make_hook(self, kind: str, idx: int):
        per_head = NORM_KINDS[kind].per_head

        def hook(module, inputs, output):
            if self._mode == "off":
                return None
            normed = output[0] if isinstance(output, tuple) else output  # [batch, seq, (heads,) hidden]
            hidden = normed.shape[-1]
            if self._mode == "mean":
                z = torch.full((hidden,), self.config.mu, dtype=torch.float32, device=normed.device)
            else:
                z = self._latent(idx, hidden, normed.device)  # [batch, (seq,) hidden]
                lead = 1 if self.config.granularity == "sequence" else 2
                z = z.reshape(*z.shape[:lead], *([1] * (normed.dim() - lead - 1)), hidden)
            out = shift(normed, z)
            self.counters.norm_calls_shifted += 1
            if idx == self._first_idx and not per_head:
                self.counters.tokens_shifted += normed.shape[0] * normed.shape[1]
            return (out, *output[1:]) if isinstance(output, tuple) else out

        return hook


def attach(model: torch.nn.Module, config: LatentConfig | None = None, mode: str = "mean",
           seed: int | None = None) -> HFPopulation:
    """Hook B-Trans into a transformers model. `seed` seeds the sampler of `sample` mode (None: OS entropy).
    Raises ValueError before touching the model on an unsupported family, an unknown or absent target, or
    an unknown mode."""
    config = config or LatentConfig()
    if mode not in MODES:
        raise ValueError(f"B-Trans: unknown mode {mode!r}; known: {MODES}")
    if not config.enable and mode != "off":
        raise ValueError(f"B-Trans: config.enable is False but mode {mode!r} was asked for")
    return HFPopulation(model, config, mode=mode, seed=seed)
