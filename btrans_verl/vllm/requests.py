"""The per-request latent arguments, as they travel in `SamplingParams.extra_args`.

Nested form (Python callers, verl):

    SamplingParams(..., extra_args={"btrans": {"seed": 1234, "sigma": 0.05, "mu": 0.0,
                                               "granularity": "sequence", "sigma_scale": "absolute",
                                               "targets": ["input_layernorm", "post_attention_layernorm",
                                                           "final_norm"]}})

Flat form (the OpenAI server only forwards flat `vllm_xargs`):

    {"vllm_xargs": {"btrans_seed": 1234, "btrans_sigma": 0.05}}

`seed` is required and names the mind (an integer in [0, 2**63)); `sigma` defaults to LatentConfig's default,
`mu` to 0.0, `granularity` to "sequence", `sigma_scale` to "absolute" ("weight_rms": each norm's sigma times the
RMS of its weight, `btrans_verl.latent.SIGMA_SCALES`), `targets` (the norm kinds that carry the latent, a list
or, flat, a comma-separated string) to `btrans_verl.latent.DEFAULT_TARGETS`. The request names its whole mind,
so the Hugging Face side replays it with `LatentConfig(sigma, mu, targets, granularity, sigma_scale)` and seed.
Unknown `btrans` keys are an error. A request without these keys runs exactly as in stock vLLM.

`n > 1` (several sequences from one request): every sequence is its own hypothesis. vLLM fans the request out
into n child requests; child i runs the mind `btrans_verl.seeds.child_seed(seed, i)` (`child_extra_args`), so
n children are n minds. To sample one mind several times, send separate requests with the same seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from btrans_verl.latent import DEFAULT_TARGETS, NORM_KINDS, LatentConfig, _check_seed
from btrans_verl.seeds import child_seed

KEYS = ("seed", "sigma", "mu", "granularity", "targets", "sigma_scale")
FLAT_PREFIX = "btrans_"
NESTED_KEY = "btrans"


@dataclass(frozen=True)
class LatentRequest:
    """One request's mind. A few bytes: this is all the latent state a request carries."""

    seed: int
    sigma: float = LatentConfig.sigma
    mu: float = LatentConfig.mu
    granularity: str = LatentConfig.granularity
    targets: tuple[str, ...] = DEFAULT_TARGETS  # norm kinds that carry the latent, in NORM_KINDS order
    sigma_scale: str = LatentConfig.sigma_scale  # "absolute" | "weight_rms" (relative sigma)

    def __post_init__(self):
        _check_seed(self.seed)
        targets = self.targets.split(",") if isinstance(self.targets, str) else self.targets
        if isinstance(targets, (list, tuple)):
            targets = [t.strip() if isinstance(t, str) else t for t in targets]
        # the latent's rules live in LatentConfig; a request is checked by them, with the same messages
        mind = LatentConfig(mu=self.mu, sigma=self.sigma, targets=targets, granularity=self.granularity,
                            sigma_scale=self.sigma_scale)
        object.__setattr__(self, "targets", tuple(k for k in NORM_KINDS if k in mind.targets))  # canonical order
        object.__setattr__(self, "sigma", mind.sigma)
        object.__setattr__(self, "mu", mind.mu)

    @property
    def cache_salt(self) -> str:
        """Prefix-cache salt: requests with the same mind may share KV blocks, different minds never do."""
        return (f"btrans:{self.seed}:{self.sigma!r}:{self.mu!r}:{self.granularity}:{','.join(self.targets)}:"
                f"{self.sigma_scale}")


def latent_args(seed: int, sigma: float | None = None, mu: float | None = None,
                granularity: str | None = None, targets=None, sigma_scale: str | None = None) -> dict[str, Any]:
    """The `extra_args` entry that gives a request this mind."""
    args: dict[str, Any] = {"seed": int(seed)}
    for k, v in (("sigma", sigma), ("mu", mu), ("granularity", granularity), ("sigma_scale", sigma_scale)):
        if v is not None:
            args[k] = v
    if targets is not None:
        args["targets"] = list(targets)
    return {NESTED_KEY: args}


def parse_latent_request(extra_args: Mapping[str, Any] | None) -> LatentRequest | None:
    """The request's mind, or None when it carries none. Raises ValueError on malformed arguments."""
    if not extra_args:
        return None
    fields: dict[str, Any] = {}
    nested = extra_args.get(NESTED_KEY)
    if nested is not None:
        if not isinstance(nested, Mapping):
            raise ValueError(f"extra_args['btrans'] must be a mapping, got {type(nested).__name__}")
        unknown = sorted(set(nested) - set(KEYS))
        if unknown:
            raise ValueError(f"unknown btrans key(s) {unknown} in extra_args; known: {list(KEYS)}")
        fields.update(nested)
    for key, value in extra_args.items():
        if key.startswith(FLAT_PREFIX):
            name = key[len(FLAT_PREFIX):]
            if name not in KEYS:
                raise ValueError(f"unknown btrans key {key!r} in extra_args; known: "
                                 f"{[FLAT_PREFIX + k for k in KEYS]}")
            if name in fields and fields[name] != value:
                raise ValueError(f"btrans {name} given twice with different values")
            fields[name] = value
    if not fields:
        return None
    if "seed" not in fields:
        raise ValueError(f"btrans latent arguments {sorted(fields)} lack the required 'seed'")
    seed = fields["seed"]
    if isinstance(seed, str) and seed.isdigit():  # flat xargs from JSON may arrive as strings
        seed = int(seed)
    if isinstance(seed, float) and seed.is_integer():
        raise ValueError(f"btrans seed must be an integer, got float {seed!r} (precision would be lost)")
    return LatentRequest(seed=seed, **{k: (_as_float(k, v) if k in ("sigma", "mu") else v)
                                       for k, v in fields.items() if k != "seed"})


_PARSED = "_btrans_latent"  # an attribute of a SamplingParams vLLM owns: (extra_args object, its LatentRequest)


def remember_latent(params, lat: LatentRequest | None) -> None:
    """Keep `lat`, parsed from `params.extra_args`, on `params` for `latent_of` in this process. Only for a
    params object vLLM owns (the front end's clone of the caller's, one deserialised in an engine process):
    a caller may reuse its own object with new arguments, so the caller's is always parsed afresh. Params that
    take no attribute (or a copy, another process's) simply parse again."""
    try:
        setattr(params, _PARSED, (getattr(params, "extra_args", None), lat))
    except AttributeError:
        pass


def _names_latent(key: str) -> bool:
    """Whether an `extra_args` key is a latent's (nested `btrans` or flat `btrans_*`): all a parse reads."""
    return key == NESTED_KEY or key.startswith(FLAT_PREFIX)


def latent_entries(extra_args: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `extra_args` entries that name a latent."""
    return {k: v for k, v in (extra_args or {}).items() if _names_latent(k)}


def latent_of(params) -> LatentRequest | None:
    """`parse_latent_request(params.extra_args)` for a params object vLLM owns, parsed once per object and
    process (the front end, EngineCore and workers of one process share it; a multiprocess engine parses once
    in each process). The parse is kept with the `extra_args` object it read: params whose `extra_args` was
    replaced (a child's own mind) is parsed again."""
    if params is None:
        return None
    extra = getattr(params, "extra_args", None)
    parsed = getattr(params, _PARSED, None)
    if parsed is not None and parsed[0] is extra:
        return parsed[1]
    lat = parse_latent_request(extra)
    remember_latent(params, lat)
    return lat


def _as_float(name: str, value: Any) -> Any:
    """sigma / mu as given (ints and numeric strings from JSON become floats); LatentRequest checks the rest."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return value
    try:
        return float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"btrans {name} must be a finite number, got {value!r}") from None


def child_extra_args(extra_args: Mapping[str, Any] | None, index: int) -> dict[str, Any] | None:
    """`extra_args` for child `index` of a request with n > 1: the same arguments with the latent replaced by
    the child's own mind (seed `child_seed(seed, index)`, in the nested form; flat `btrans_*` keys dropped).
    None when the request carries no latent (its children then run as stock vLLM)."""
    lat = parse_latent_request(extra_args)
    if lat is None:
        return None
    child = asdict(replace(lat, seed=child_seed(lat.seed, index)))
    child["targets"] = list(child["targets"])
    rest = {k: v for k, v in extra_args.items() if not _names_latent(k)}
    return {**rest, NESTED_KEY: child}
