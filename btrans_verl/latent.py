"""The latent: what one mind of the population is. This module is the single owner of that definition.

B-Trans ("Many Minds from One Model", arXiv 2512.25063) adds a Gaussian offset after every normalisation layer:

    y = Norm(x) + z,    z ~ N(mu, sigma^2 I)

and draws z **once per sequence** (hypothesis sampling): one seed picks one mind, and that mind is frozen for
every token of the sequence. The ablation baseline draws a new z per token (`granularity="token"`).

The contract (shared by the Hugging Face side, `btrans_verl.hf`, and the vLLM side, `btrans_verl.vllm`):

    z(seed, norm_index, hidden, mu, sigma[, position]) = mu + sigma * eps

    key      = mix(mix(seed_lo ^ K_SEED) ^ seed_hi)                 # a 32-bit hypothesis key per sequence
    key      = mix(key ^ mix(position ^ K_POS))                    # only for granularity="token"
    nkey     = mix(key ^ mix(norm_index ^ K_NORM))                 # one independent draw per wrapped norm
    u[h]     = mix(nkey ^ mix(h ^ K_ELEM))          for h < hidden # 32-bit uniform integers
    eps[h]   = NORMAL_TABLE[u[h] >> 16]                            # 65,536-level normal quantiles

With `sigma_scale="weight_rms"` (relative sigma) norm j draws with its own standard deviation
`sigma_j = f32(f32(sigma) * f32(rms(weight_j)))` instead of sigma: `rms` is the exact root mean square of the norm's
weight (`norm_scale`), a fixed, data-free property that sets the norm's output scale, so sigma becomes a fraction
of each norm's own output scale rather than one absolute value for norms whose outputs differ ~50x in size.

`mix` is a 32-bit integer avalanche hash (xor-shift / multiply), evaluated with int64 tensor ops whose
products never overflow, so every step above is exact integer arithmetic plus one table lookup: the same
seed gives a bit-identical `eps` in any process, on any device (CPU or CUDA), in any engine, and inside
compiled graphs. `NORMAL_TABLE[i]` is the standard normal quantile at (i + 0.5) / 65536, made exactly
antisymmetric and scaled to unit second moment; it reaches +-4.33 (the tail mass beyond is ~1.5e-5).
`z = mu + sigma * eps` is then one float32 multiply and one add, and `shift(normed, z)` adds z in the
activation dtype. Nothing here keeps state: a mind is its seed (8 bytes).

Seeds are integers in [0, 2**63). `norm_index` is a function of the norm's place in the decoder only
(`norm_index(layer, kind)`), never of which norms are enabled, so turning on q/k norms does not change the
latent of any other norm.

    >>> import torch
    >>> z = sample_latent(seed=7, norm_index=norm_index(0, "input_layernorm"), hidden=8, mu=0.0, sigma=1.0)
    >>> z.shape, z.dtype
    (torch.Size([8]), torch.float32)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from statistics import NormalDist

import numpy as np
import torch

from btrans_verl.registry import registrar

# ---------------------------------------------------------------------------------------------------------
# Exact 32-bit hashing on int64 tensors
# ---------------------------------------------------------------------------------------------------------
MASK32 = 0xFFFFFFFF
MASK16 = 0xFFFF
MAX_SEED = (1 << 63) - 1

K_SEED = 0x9E3779B9  # domain separators: golden ratio and friends
K_POS = 0x85EBCA6B
K_NORM = 0xC2B2AE35
K_ELEM = 0x27D4EB2F

_M1 = 0x7FEB352D  # multipliers of a well-known low-bias 32-bit mixer
_M2 = 0x846CA68B

TABLE_BITS = 16
TABLE_SIZE = 1 << TABLE_BITS


def _mul32(x, c: int):
    """(x * c) mod 2**32 for x in [0, 2**32): on tensors (and ints) in two 16-bit halves so no int64 product
    overflows; on numpy arrays in one unsigned product (unsigned numpy arithmetic wraps by definition: a uint32
    array's product is the result, an int64 array's uint64 product keeps it in its low 32 bits)."""
    if isinstance(x, np.ndarray) and x.ndim:
        if x.dtype == np.uint32:
            return x * np.uint32(c)
        return ((x.view(np.uint64) * np.uint64(c)) & np.uint64(MASK32)).view(np.int64)
    lo, hi = c & MASK16, c >> 16
    return (x * lo + (((x * hi) & MASK16) << 16)) & MASK32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit avalanche hash of the uint32 values held in an int64 tensor (or an int, an int64 or
    uint32 numpy array)."""
    x = x ^ (x >> 16)
    x = _mul32(x, _M1)
    x = x ^ (x >> 15)
    x = _mul32(x, _M2)
    return x ^ (x >> 16)


def _as_int64(values, device=None):
    """An int64 tensor; an int64 numpy array for a numpy input, a Python int for an int (the contract's
    functions run on any of them: engines key a few minds on the host)."""
    if isinstance(values, int) and not isinstance(values, bool):
        if not 0 <= values <= MAX_SEED:
            raise ValueError(f"latent seeds and positions must be in [0, 2**63), got {values}")
        return values
    if isinstance(values, np.ndarray):
        t = values.astype(np.int64, copy=False)
    else:
        t = torch.as_tensor(values, dtype=torch.int64, device=device)
    if (t.numel() if isinstance(t, torch.Tensor) else t.size) and int(t.min()) < 0:
        raise ValueError(f"latent seeds and positions must be non-negative, got min {int(t.min())}")
    return t


def hypothesis_key(seeds, positions=None):
    """The 32-bit key of each sequence's mind (`positions=None`, granularity "sequence") or of each token
    (granularity "token": the key also absorbs the token's absolute position). Returns int64, seeds' shape
    (broadcast with positions): a tensor, a numpy array for numpy seeds, an int for an int seed and position."""
    seeds = _as_int64(seeds, device=positions.device if isinstance(positions, torch.Tensor) else None)
    key = mix32(mix32((seeds & MASK32) ^ K_SEED) ^ (seeds >> 32))
    if positions is not None:
        positions = _as_int64(positions, device=getattr(key, "device", None))
        key = mix32(key ^ mix32((positions & MASK32) ^ K_POS))
    return key


def norm_salt(norm_idx):
    """mix(norm_index ^ K_NORM): what a norm mixes into each hypothesis key (an int, or int64 tensors / arrays;
    mix32 is exact on Python ints, int64 tensors and int64 numpy arrays alike)."""
    return mix32((norm_idx & MASK32) ^ K_NORM)


def norm_key(keys, norm_idx, salt=None):
    """Key of one wrapped norm's independent draw, from hypothesis keys (any shape). `norm_idx`: an int, or an
    int64 tensor broadcast against keys (many norms in one pass: keys [R, 1], norm_idx [N] -> [R, N]). `salt`:
    `norm_salt(norm_idx)` when the caller keeps it (engines compute it once per norm)."""
    return mix32(keys ^ (norm_salt(norm_idx) if salt is None else salt))


@cache
def element_salts(hidden: int) -> torch.Tensor:
    """mix(h ^ K_ELEM) for h < hidden: int64 [hidden] (CPU; engines keep a copy on their device)."""
    return mix32(torch.arange(hidden, dtype=torch.int64) ^ K_ELEM)


@lru_cache(maxsize=1)
def normal_table() -> torch.Tensor:
    """NORMAL_TABLE: float32 [65536] standard normal quantiles at (i + 0.5) / 65536, exactly antisymmetric,
    scaled to unit second moment. Computed in float64 by Python's `statistics.NormalDist` (pure Python, the
    same on every platform) and rounded once to float32."""
    nd = NormalDist()
    half = [nd.inv_cdf((i + 0.5) / TABLE_SIZE) for i in range(TABLE_SIZE // 2)]
    values = half + [-v for v in reversed(half)]
    scale = 1.0 / math.sqrt(math.fsum(v * v for v in values) / TABLE_SIZE)
    return torch.tensor([v * scale for v in values], dtype=torch.float64).to(torch.float32)


_DEVICE_COPIES: dict[tuple[str, str, int], torch.Tensor] = {}


def _on_device(device: torch.device, name: str, make, arg: int = 0) -> torch.Tensor:
    k = (str(device), name, arg)
    if k not in _DEVICE_COPIES:
        _DEVICE_COPIES[k] = make().to(device)
    return _DEVICE_COPIES[k]


def standard_normal_from_keys(keys, norm_idx, hidden: int, table=None, salts=None, norm_salts=None):
    """eps for each key: float32 [*shape, hidden], shape = keys.shape (broadcast with `norm_idx` when it is a
    tensor). `table` / `salts` / `norm_salts` are `normal_table()`, `element_salts(hidden)` and
    `norm_salt(norm_idx)` on keys' device; engines pass their own fixed-address copies (graph capture). Runs on
    torch tensors, or on numpy arrays (then `table` and `salts` are numpy arrays too): the same integers and
    the same table entries either way."""
    if table is None:
        table = _on_device(keys.device, "table", normal_table)  # [65536]
    if salts is None:
        salts = _on_device(keys.device, "salts", lambda: element_salts(hidden), hidden)  # [hidden]
    u = mix32(norm_key(keys, norm_idx, norm_salts)[..., None] ^ salts)  # [..., hidden] uint32 in int64
    return table[u >> (32 - TABLE_BITS)]  # [..., hidden] float32


def _column(v):
    """A float32 per-key value (tensor or numpy array) as a column against [..., hidden]; floats as they are."""
    if isinstance(v, torch.Tensor):
        return v.to(torch.float32)[..., None]
    if isinstance(v, np.ndarray):
        return v.astype(np.float32, copy=False)[..., None]
    return v


def latent_from_keys(keys, norm_idx, hidden: int, mu=0.0, sigma=1.0, table=None, salts=None, norm_salts=None):
    """z = mu + sigma * eps, float32 [*shape, hidden] (shape: keys' broadcast with a tensor `norm_idx`). `mu` /
    `sigma` are floats or tensors of that shape (one value per key and norm: per-token mu / sigma in an engine
    batch, or per-request, per-norm rows of an engine's mind table). Torch or numpy, as
    `standard_normal_from_keys`: float32 multiply then add, the same roundings in both."""
    eps = standard_normal_from_keys(keys, norm_idx, hidden, table, salts, norm_salts)  # [..., hidden]
    return _column(mu) + _column(sigma) * eps


def sample_latent(seed: int, norm_index: int, hidden: int, mu: float = 0.0, sigma: float = 1.0,
                  position: int | None = None, device=None) -> torch.Tensor:
    """The reference z of one mind at one norm: float32 [hidden]."""
    _check_seed(seed)
    keys = hypothesis_key(torch.tensor(seed, device=device),
                          None if position is None else torch.tensor(position, device=device))
    return latent_from_keys(keys, norm_index, hidden, mu, sigma)


def shift(normed: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Apply a latent to a norm's output, in the activation dtype: `normed + z`."""
    return normed + z.to(normed.dtype)


def _check_seed(seed: int, what: str = "a latent seed") -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{what} must be an integer in [0, 2**63), got {seed!r}")


# ---------------------------------------------------------------------------------------------------------
# Which norms carry a latent, and their stable indices
# ---------------------------------------------------------------------------------------------------------
# Every target kind owns a fixed slot; norm_index = layer * SLOTS_PER_LAYER + slot, and the final norm has a
# fixed index above any layer's. Module names are the same in transformers and vLLM for the supported
# families (Qwen2, Qwen3, Llama): `model.layers.{i}.input_layernorm`, `...self_attn.q_norm`, `model.norm`.
SLOTS_PER_LAYER = 4
MAX_LAYERS = 1 << 16
FINAL_NORM_INDEX = SLOTS_PER_LAYER * MAX_LAYERS


@dataclass(frozen=True)
class NormKind:
    name: str
    slot: int | None  # None: the final norm
    pattern: re.Pattern  # matches a module's qualified name; group 1 is the layer index
    per_head: bool = False  # applied to [tokens * heads, head_dim] rows


NORM_KINDS: dict[str, NormKind] = {}


def register_norm_kind(name: str, slot: int | None, pattern: str, per_head: bool = False) -> None:
    NORM_KINDS[name] = NormKind(name, slot, re.compile(pattern), per_head)


register_norm_kind("input_layernorm", 0, r"(?:^|\.)layers\.(\d+)\.input_layernorm$")
register_norm_kind("post_attention_layernorm", 1, r"(?:^|\.)layers\.(\d+)\.post_attention_layernorm$")
register_norm_kind("q_norm", 2, r"(?:^|\.)layers\.(\d+)\.self_attn\.q_norm$", per_head=True)
register_norm_kind("k_norm", 3, r"(?:^|\.)layers\.(\d+)\.self_attn\.k_norm$", per_head=True)
register_norm_kind("final_norm", None, r"(?:^|\.)model\.norm$|^norm$")

DEFAULT_TARGETS = ("input_layernorm", "post_attention_layernorm", "final_norm")
GRANULARITIES = ("sequence", "token")


def norm_index(layer: int | None, kind: str) -> int:
    """The stable index of a norm: depends on its layer and kind only."""
    k = NORM_KINDS[kind]
    if k.slot is None:
        return FINAL_NORM_INDEX
    if not 0 <= layer < MAX_LAYERS:
        raise ValueError(f"layer index {layer} out of range")
    return layer * SLOTS_PER_LAYER + k.slot


def match_norm(module_name: str, targets) -> tuple[str, int] | None:
    """(kind, norm_index) if the module named `module_name` is a target norm, else None. Wrapper segments
    (FSDP, activation checkpointing, torch.compile) in the name are ignored."""
    module_name = canonical_name(module_name)
    for kind in targets:
        m = NORM_KINDS[kind].pattern.search(module_name)
        if m:
            return kind, norm_index(int(m.group(1)) if m.groups() else None, kind)
    return None


def target_norms(model: torch.nn.Module, targets) -> list[tuple[str, str, int, torch.nn.Module]]:
    """Every module of `model` that carries a latent, in module order: (qualified name, kind, norm_index,
    module). The one norm discovery of the package: the Hugging Face side and vLLM workers both wrap what this
    finds (each then checks what its engine needs)."""
    found = []
    for name, module in model.named_modules():
        hit = match_norm(name, targets)
        if hit is not None:
            found.append((name, hit[0], hit[1], module))
    return found


# Model families whose decoder layout we know, and the norm kinds each has.
FAMILIES: dict[str, tuple[str, ...]] = {}


def register_family(model_type: str, kinds: tuple[str, ...]) -> None:
    FAMILIES[model_type] = kinds


register_family("qwen2", ("input_layernorm", "post_attention_layernorm", "final_norm"))
register_family("qwen3", ("input_layernorm", "post_attention_layernorm", "final_norm", "q_norm", "k_norm"))
register_family("llama", ("input_layernorm", "post_attention_layernorm", "final_norm"))
register_family("mistral", ("input_layernorm", "post_attention_layernorm", "final_norm"))

_WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def canonical_name(name: str) -> str:
    """Module name with FSDP / checkpoint / compile wrapper segments removed."""
    for seg in _WRAPPER_SEGMENTS:
        name = name.replace(seg, "")
    return name


def check_family(model_type: str, targets) -> None:
    if model_type not in FAMILIES:
        raise ValueError(f"B-Trans: unsupported model family {model_type!r}; supported: {sorted(FAMILIES)}")
    missing = [t for t in targets if t not in FAMILIES[model_type]]
    if missing:
        raise ValueError(f"B-Trans: target(s) {missing} do not exist in {model_type!r} models "
                         f"(it has {list(FAMILIES[model_type])})")


# ---------------------------------------------------------------------------------------------------------
# Sigma scales: what sigma is relative to, per norm
# ---------------------------------------------------------------------------------------------------------
#: Rules `weight -> scale` (a float32-representable float): norm j's latent std is sigma * scale_j.
SIGMA_SCALES: dict[str, Callable[[torch.Tensor], float]] = {}
register_sigma_scale = registrar(SIGMA_SCALES, "sigma scale")


@register_sigma_scale("absolute")
def _absolute(weight: torch.Tensor) -> float:
    """One sigma for every norm (the paper's setting)."""
    return 1.0


@register_sigma_scale("weight_rms")
def _weight_rms(weight: torch.Tensor) -> float:
    """The root mean square of the norm's weight: an RMSNorm's output is weight * x / rms(x), so this is its
    output scale. Exact and the same in every process and on every device: the float64 squares of float32 (or
    bf16) values are exact, `math.fsum` rounds their sum once, and the result is rounded once to float32."""
    values = weight.detach().to("cpu", torch.float64).flatten().tolist()
    rms = math.sqrt(math.fsum(v * v for v in values) / len(values))
    return float(np.float32(rms))


def norm_scale(rule: str, weight: torch.Tensor) -> float:
    """The scale of one norm's sigma under `rule` (a name of SIGMA_SCALES)."""
    return SIGMA_SCALES[rule](weight)


def norm_sigma(sigma: float, scale: float) -> float:
    """The std of one norm's latent: f32(f32(sigma) * f32(scale)), one float32 product (so the Hugging Face side
    and the engines, which multiply float32 arrays, get the same bits)."""
    return float(np.float32(sigma) * np.float32(scale))


# ---------------------------------------------------------------------------------------------------------
# The config
# ---------------------------------------------------------------------------------------------------------
@dataclass
class LatentConfig:
    """How the population of minds is drawn. Validated at construction.

    Args:
        enable: B-Trans on (True) or the plain model (False). Default True.
        mu: the mean shift, added to every target norm's output in every mode but `off`. Default 0.0
            (then the mean mind is the base model).
        sigma: the standard deviation of each latent coordinate; must be finite and >= 0. Default 0.05.
            sigma = 0 makes every mind the mean mind.
        targets: which norms carry a latent. Default: every hidden-size norm of the decoder
            (`input_layernorm`, `post_attention_layernorm`, `final_norm`); Qwen3's per-head `q_norm` /
            `k_norm` only when listed.
        granularity: "sequence" (hypothesis sampling: one z per sequence, frozen over all its tokens; the
            paper's method) or "token" (a fresh z per token position; the paper's ablation). Default
            "sequence".
        sigma_scale: what sigma is relative to. "absolute" (default): every norm's latent has std sigma.
            "weight_rms" (relative sigma): norm j's has std sigma * rms(weight_j), its output scale, so that
            sigma is the same fraction of every norm's output (`norm_scale`, `norm_sigma`).
    """

    enable: bool = True
    mu: float = 0.0
    sigma: float = 0.05
    targets: tuple[str, ...] = field(default=DEFAULT_TARGETS)
    granularity: str = "sequence"
    sigma_scale: str = "absolute"

    def __post_init__(self):
        # The one validation of a mind's settings: verl settings, the Hugging Face side and every vLLM request
        # (`btrans_verl.vllm.requests.LatentRequest`) go through it.
        if not isinstance(self.targets, (list, tuple)) or not all(isinstance(t, str) for t in self.targets):
            raise ValueError(f"btrans.targets must be a list of norm kinds, got {self.targets!r}")
        self.targets = tuple(self.targets)
        for name in ("mu", "sigma"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"btrans.{name} must be a finite number, got {v!r}")
            setattr(self, name, float(v))
        if self.sigma < 0:
            raise ValueError(f"btrans.sigma must be >= 0, got {self.sigma!r}")
        if not self.targets:
            raise ValueError("btrans.targets is empty: nothing to wrap")
        unknown = [t for t in self.targets if t not in NORM_KINDS]
        if unknown:
            raise ValueError(f"btrans.targets: unknown target(s) {unknown}; known: {sorted(NORM_KINDS)}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"btrans.granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.sigma_scale not in SIGMA_SCALES:
            raise ValueError(f"btrans.sigma_scale must be one of {list(SIGMA_SCALES)}, got {self.sigma_scale!r}")

    @property
    def relative(self) -> bool:
        """Whether each norm's sigma is scaled by a property of that norm (not one absolute sigma)."""
        return self.sigma_scale != "absolute"
