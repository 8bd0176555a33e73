"""Worker side: wrap the model's target norms and feed them each step's per-token latent keys.

How a latent reaches a token (V1 model runner, CPU and GPU):

    1. load_model     every RMSNorm of a kind the engine supports (`engine_targets()`) gets `forward` wrapped
                      (norm index from its module name). The wrappers read fixed-address buffers of
                      `max_num_tokens` rows, allocated here, before any profiling run or graph capture:
                          keys  int64   [max_tokens]          hypothesis key (btrans_verl.latent.hypothesis_key)
                          mu    float32 [kinds, max_tokens]   one row per wrapped norm kind
                          sigma float32 [kinds, max_tokens]
                      plus the normal table and element salts on the model's device.
    2. each step      after the runner's `_prepare_inputs` (which fixed this step's request order and token
                      counts), `fill()` writes every scheduled token's key / mu / sigma in place; a kind the
                      request does not target, tokens without a latent, and padding rows get mu = sigma = 0,
                      i.e. a zero latent.
    3. forward        norm output [tokens, hidden] + (mu + sigma * NORMAL_TABLE[hash(keys, norm, h)]):
                      the same ops for every batch, no Python branching on request content, graph-safe.
    4. wake_up        after sleep mode wakes the weights up (level 2 leaves every tensor allocated in
                      `load_model` undefined), `restore()` rebuilds the table, salts and rows in place.

The per-request state is its `LatentRequest` (seed, mu, sigma, granularity, targets: a few bytes); the per-step cost
outside the forward is one vectorised pass over the scheduled tokens. Batch reordering, requests joining and
leaving, chunked prefill and preemption need no bookkeeping: the keys are recomputed from the current order
every step, and a token's key depends only on its request's seed (and, for granularity "token", its absolute
position), never on its slot.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch

from btrans_verl.latent import (
    DEFAULT_TARGETS,
    NORM_KINDS,
    check_family,
    element_salts,
    hypothesis_key,
    latent_from_keys,
    match_norm,
    normal_table,
    shift,
)
from btrans_verl.vllm.requests import LatentRequest, parse_latent_request

logger = logging.getLogger("btrans_verl.vllm")

TARGETS_ENV = "BTRANS_VLLM_TARGETS"


@dataclass
class WorkerCounters:
    """Proof that latents reached the model, per worker process."""

    norms_patched: int = 0
    requests_with_latent: int = 0  # distinct requests seen carrying a latent
    tokens_shifted: int = 0  # scheduled tokens that carried a (non-zero-sigma or non-zero-mu) latent
    steps_with_latent: int = 0
    steps: int = 0


def engine_targets() -> tuple[str, ...]:
    """The norm kinds this engine wraps: `BTRANS_VLLM_TARGETS` (comma-separated) or, by default, every
    hidden-size norm (`DEFAULT_TARGETS`). Qwen3's per-head `q_norm` / `k_norm` are opt-in here, because every
    wrapped norm costs its latent computation on every step, whether or not a request targets it."""
    raw = os.environ.get(TARGETS_ENV, "")
    targets = tuple(t.strip() for t in raw.split(",") if t.strip()) or DEFAULT_TARGETS
    unknown = [t for t in targets if t not in NORM_KINDS]
    if unknown:
        raise ValueError(f"{TARGETS_ENV}: unknown target(s) {unknown}; known: {sorted(NORM_KINDS)}")
    return tuple(k for k in NORM_KINDS if k in targets)


def engine_refusal(vllm_config) -> str | None:
    """Why this engine cannot carry latents at all (None: it can). Dual batch overlap (`enable_dbo`) runs the
    forward on token slices of the batch while the wrappers read latent rows from 0, so the second slice
    would get the first one's latents."""
    parallel = getattr(vllm_config, "parallel_config", None)
    if getattr(parallel, "enable_dbo", False):
        return ("dual batch overlap (enable_dbo=True) splits the batch into micro-batches that the latent rows do "
                "not follow; start the engine without enable_dbo to serve B-Trans requests")
    return None


def request_refusal(vllm_config, lat: LatentRequest) -> str | None:
    """Why this engine cannot serve this request's latent (None: it can)."""
    reason = engine_refusal(vllm_config)
    if reason is not None:
        return reason
    if lat.granularity == "token" and getattr(vllm_config, "speculative_config", None) is not None:
        return ("btrans granularity 'token' is not supported with speculative decoding (token positions are read "
                "before rejected drafts are accounted, so per-token latents would drift from the Hugging Face "
                "replay); use granularity 'sequence' or an engine without speculative_config")
    return None


class LatentState:
    """The buffers and request table of one model runner. `kinds`: the wrapped norm kinds (one mu / sigma row
    each, so that a request's `targets` choose which of them carry its latent)."""

    def __init__(self, max_tokens: int, device: torch.device, hidden_sizes: set[int], kinds: tuple[str, ...]):
        self.device = device
        self.kinds = kinds
        self.keys = torch.zeros(max_tokens, dtype=torch.int64, device=device)  # [max_tokens]
        self.mu = torch.zeros(len(kinds), max_tokens, dtype=torch.float32, device=device)  # [kinds, max_tokens]
        self.sigma = torch.zeros(len(kinds), max_tokens, dtype=torch.float32, device=device)  # [kinds, max_tokens]
        # copies (never aliases of the contract's cached CPU tensors, which the canary compares against)
        self.table = normal_table().to(device, copy=True)  # [65536]
        self.salts = {h: element_salts(h).to(device, copy=True) for h in hidden_sizes}  # {hidden: [hidden]}
        self.requests: dict[str, LatentRequest | None] = {}
        self.counters = WorkerCounters()
        self.norms: dict[str, tuple[int, int]] = {}  # wrapped module name -> (norm index, kind row)
        self._filled = 0  # rows written last step (to reset)

    # ------------------------------------------------------------------------------------------ sleep / wake
    def restore(self) -> None:
        """Rebuild every tensor the latent reads, in place (same addresses: compiled graphs and captured CUDA
        graphs keep reading them): the normal table and element salts from the contract, the per-token rows
        zeroed. Run after vLLM wakes the weights up: sleep level 2 (verl's default in hybrid mode) discards the
        memory pool that `load_model` allocated them in and restores only the model's registered buffers."""
        self.table.copy_(normal_table())
        for hidden, salts in self.salts.items():
            salts.copy_(element_salts(hidden))
        self.keys.zero_()
        self.mu.zero_()
        self.sigma.zero_()
        self._filled = 0

    # ------------------------------------------------------------------------------------------ per step
    def lookup(self, req_id: str, sampling_params) -> LatentRequest | None:
        if req_id not in self.requests:
            extra = getattr(sampling_params, "extra_args", None) if sampling_params is not None else None
            lat = parse_latent_request(extra)
            self.requests[req_id] = lat
            if lat is not None:
                self.counters.requests_with_latent += 1
        return self.requests[req_id]

    def unsupported_targets(self, lat: LatentRequest) -> list[str]:
        """The kinds a request targets that this engine did not wrap (its latent would silently miss them)."""
        return [t for t in lat.targets if t not in self.kinds]

    def forget(self, req_ids) -> None:
        for r in req_ids:
            self.requests.pop(r, None)

    def fill(self, req_ids: list[str], sampling_params: list, num_scheduled: np.ndarray,
             num_computed: np.ndarray) -> None:
        """Write this step's per-token keys / mu / sigma. req_ids[i] has num_scheduled[i] tokens starting at
        absolute position num_computed[i], in the runner's current batch order."""
        self.counters.steps += 1
        lats = [self.lookup(r, sp) for r, sp in zip(req_ids, sampling_params)]
        total = int(num_scheduled.sum())
        if self._filled:
            # rows of the last step: back to the zero latent (padding and latent-free tokens read zeros)
            self.mu[:, : self._filled].zero_()
            self.sigma[:, : self._filled].zero_()
            self.keys[: self._filled].zero_()
            self._filled = 0
        active = [i for i, lat in enumerate(lats) if lat is not None]
        if not active:
            return
        seeds = np.zeros(len(lats), dtype=np.int64)
        mus = np.zeros((len(self.kinds), len(lats)), dtype=np.float32)  # [kinds, reqs]
        sigmas = np.zeros((len(self.kinds), len(lats)), dtype=np.float32)  # [kinds, reqs]
        per_token = np.zeros(len(lats), dtype=bool)
        for i in active:
            lat = lats[i]
            seeds[i] = lat.seed
            for k, kind in enumerate(self.kinds):
                if kind in lat.targets:
                    mus[k, i], sigmas[k, i] = lat.mu, lat.sigma
            per_token[i] = lat.granularity == "token"
        req_idx = np.repeat(np.arange(len(lats)), num_scheduled)  # [tokens] -> request
        starts = np.cumsum(num_scheduled) - num_scheduled
        positions = num_computed[req_idx] + (np.arange(total) - starts[req_idx])  # [tokens]
        keys = hypothesis_key(torch.from_numpy(seeds))[torch.from_numpy(req_idx)]  # [tokens]
        tok = per_token[req_idx]
        if tok.any():
            tok_t = torch.from_numpy(tok)
            keys[tok_t] = hypothesis_key(torch.from_numpy(seeds[req_idx][tok]), torch.from_numpy(positions[tok]))
        self.keys[:total].copy_(keys, non_blocking=True)
        self.mu[:, :total].copy_(torch.from_numpy(mus[:, req_idx]), non_blocking=True)  # [kinds, tokens]
        self.sigma[:, :total].copy_(torch.from_numpy(sigmas[:, req_idx]), non_blocking=True)  # [kinds, tokens]
        self._filled = total
        shifted = int(((sigmas != 0) | (mus != 0)).any(axis=0)[req_idx].sum())
        self.counters.tokens_shifted += shifted
        self.counters.steps_with_latent += int(shifted > 0)

    # ------------------------------------------------------------------------------------------ forward
    def latent(self, num_tokens: int, norm_idx: int, kind: int, hidden: int) -> torch.Tensor:
        """z for the first num_tokens rows of the batch at one norm of wrapped kind `kind` (its row in the
        mu / sigma buffers): float32 [num_tokens, hidden]."""
        return latent_from_keys(self.keys[:num_tokens], norm_idx, hidden, self.mu[kind, :num_tokens],
                                self.sigma[kind, :num_tokens], table=self.table, salts=self.salts[hidden])


def _wrap_norm(module: torch.nn.Module, state: LatentState, norm_idx: int, kind: int) -> None:
    inner = module.forward

    def forward(x, residual=None, *args, **kwargs):
        out = inner(x, residual, *args, **kwargs) if residual is not None else inner(x, *args, **kwargs)
        normed = out[0] if isinstance(out, tuple) else out  # [tokens, hidden] or per-head [tokens, heads, head_dim]
        z = state.latent(normed.shape[0], norm_idx, kind, normed.shape[-1])  # [tokens, hidden]
        if normed.dim() == 3:  # q_norm / k_norm: one z per token, shared by its heads (as on the HF side)
            z = z.unsqueeze(1)  # [tokens, 1, head_dim]
        shifted = shift(normed, z)
        return (shifted, *out[1:]) if isinstance(out, tuple) else shifted

    forward.btrans_state = state  # what the canary checks: this module's forward is ours, fed by `state`
    module.forward = forward
    module.btrans_norm_index = norm_idx


def is_missing_layer(module: torch.nn.Module) -> bool:
    """vLLM's pipeline-parallel placeholder (`PPMissingLayer`): a norm that lives on another stage."""
    return type(module).__name__ == "PPMissingLayer"


def install(model: torch.nn.Module, model_type: str, max_tokens: int, device: torch.device) -> LatentState | None:
    """Wrap the target norms of a freshly loaded vLLM model. Returns None (and logs why) when nothing can be
    wrapped; requests carrying a latent are then refused by the plugin's `Worker.execute_model` guard.

    Pipeline parallelism: a stage holds only its own layers; norms of other stages are `PPMissingLayer`
    placeholders (the final norm, on every stage but the last) or absent. They are skipped; a kind counts as
    present when any stage has it, so every stage keeps one mu / sigma row per engine target."""
    targets = engine_targets()
    try:
        check_family(model_type, targets)
    except ValueError as e:
        logger.warning("B-Trans: latents disabled for this engine: %s", e)
        return None
    found, elsewhere = [], set()
    for name, module in model.named_modules():
        hit = match_norm(name, targets)
        if hit is None:
            continue
        if is_missing_layer(module):
            elsewhere.add(hit[0])
            continue
        if not hasattr(module, "weight") or "norm" not in type(module).__name__.lower():
            raise RuntimeError(f"B-Trans: {name} matched target {hit[0]} but is a {type(module).__name__}")
        found.append((name, hit, module))
    present = {kind for _, (kind, _), _ in found} | elsewhere
    missing = sorted(set(targets) - present)
    if not found or missing:
        logger.warning("B-Trans: latents disabled for this engine: targets %s match no module", missing or targets)
        return None
    hidden_sizes = {int(m.weight.shape[-1]) for _, _, m in found}
    kinds = tuple(k for k in NORM_KINDS if k in targets)
    state = LatentState(max_tokens, device, hidden_sizes, kinds)
    for name, (kind, idx), module in found:
        _wrap_norm(module, state, idx, kinds.index(kind))
        state.norms[name] = (idx, kinds.index(kind))
    state.counters.norms_patched = len(found)
    logger.info("B-Trans: %d norms carry per-request latents (targets %s%s)", len(found), list(targets),
                f"; on other pipeline stages: {sorted(elsewhere)}" if elsewhere else "")
    return state


def counters_dict(state: LatentState | None) -> dict:
    return asdict(state.counters) if state is not None else asdict(WorkerCounters())
