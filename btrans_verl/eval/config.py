"""Settings of one population-evaluation run (``python -m btrans_verl.eval``), validated at construction.

    python -m btrans_verl.eval --model smollm2 --benchmark gsm8k --data-src vendor --limit 8 --n 8 \\
        --sigma 0.01 --temperature 0.7 --seed 0 --out runs/eval_smollm2_gsm8k

Every bad value raises :class:`EvalInputError` naming it, before any model, data or engine is touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from btrans_verl.seeds import SEED_LIMIT

__all__ = ["EvalInputError", "METHODS", "DEFAULT_METHODS", "DEFAULT_KS", "EvalConfig"]

#: The methods a run can evaluate, by command-line key.
#:   mean         the mean mind: no latent (mu = 0, the base model), greedy, one sample per problem
#:   btrans       B-Trans minds: n samples at temperature T, each with its own sequence-wise latent (sigma)
#:   temperature  plain temperature sampling: n samples at temperature T, no latent
#:   token        token-wise latents (the paper's ablation): like btrans, with a fresh z per token position
METHODS = ("mean", "btrans", "temperature", "token")
DEFAULT_METHODS = METHODS
#: Pass@K / maj@K values reported (those <= n).
DEFAULT_KS = (1, 2, 4, 8, 16)


class EvalInputError(ValueError):
    """Bad input to the evaluation command (a value, a path, a benchmark); the message names it."""


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EvalInputError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _int(name: str, value: int, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EvalInputError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value >= high):
        bound = f">= {low}" if high is None else f"in [{low}, {high})"
        raise EvalInputError(f"{name} must be {bound}, got {value}")
    return value


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run.

    Attributes:
        model: HF model folder (a merged verl checkpoint is one too), or ``smollm2`` / ``tiny``.
        benchmark: a verl parquet, a folder holding ``<split>.parquet``, or a data_prep dataset name.
        out: output folder (report.json, report.md, PNGs, samples.jsonl).
        n: samples per problem for the sampled methods (the mean mind always takes one, greedy).
        ks: K values of Pass@K and maj@K; each must be <= n.
        sigma: latent standard deviation of the B-Trans methods (> 0).
        sigma_scale: what sigma is relative to (``btrans_verl.latent.SIGMA_SCALES``): ``absolute`` (default) or
            ``weight_rms`` (relative sigma: each norm's std is sigma times the RMS of its weight).
        temperature: sampling temperature of the sampled methods (B-Trans and plain temperature).
        seed: evaluation seed; every latent and sampling seed is derived from it (see ``engine.sample_seeds``).
        methods: which methods to run, a subset of :data:`METHODS`, in that order.
        max_tokens: generation limit per response.
        limit: evaluate only the first ``limit`` problems (None: all).
        data_src: data_prep ``--src`` for benchmark names (a data root, ``vendor``, ``hf:...``; None: auto).
        split: split of a benchmark name or folder.
        template: data_prep prompt template for benchmark names (None: the dataset's own).
        chat_template: render prompts with the tokenizer's chat template (else the raw user text).
        max_model_len / max_num_seqs / dtype / enforce_eager: vLLM engine settings (dtype None: float32 on
            CPU, auto on GPU).
        progress: show progress bars.
        command: the command line as typed (stated in the report; not a setting).
    """

    model: str
    benchmark: str
    out: Path
    n: int = 16
    ks: tuple[int, ...] | None = None
    sigma: float = 0.05
    sigma_scale: str = "absolute"
    temperature: float = 0.7
    seed: int = 0
    methods: tuple[str, ...] = DEFAULT_METHODS
    max_tokens: int = 512
    limit: int | None = None
    data_src: str | None = None
    split: str = "test"
    template: str | None = None
    chat_template: bool = True
    max_model_len: int = 2048
    max_num_seqs: int = 64
    dtype: str | None = None
    enforce_eager: bool = True
    progress: bool = True
    command: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        for name in ("model", "benchmark"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise EvalInputError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        set_("out", Path(self.out))
        _int("n", self.n, 1)
        set_("sigma", _finite("sigma", self.sigma))
        from btrans_verl.latent import SIGMA_SCALES

        if self.sigma_scale not in SIGMA_SCALES:
            raise EvalInputError(f"sigma_scale must be one of {list(SIGMA_SCALES)}, got {self.sigma_scale!r}")
        set_("temperature", _finite("temperature", self.temperature))
        _int("seed", self.seed, 0, SEED_LIMIT)
        _int("max_tokens", self.max_tokens, 1)
        _int("max_model_len", self.max_model_len, 2)
        _int("max_num_seqs", self.max_num_seqs, 1)
        if self.limit is not None:
            _int("limit", self.limit, 1)
        methods = tuple(self.methods)
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods or len(set(methods)) != len(methods):
            raise EvalInputError(f"methods must be distinct names from {list(METHODS)}, got {list(methods)}")
        set_("methods", tuple(m for m in METHODS if m in methods))
        sampled = [m for m in self.methods if m != "mean"]
        latent = [m for m in self.methods if m in ("btrans", "token")]
        if self.sigma < 0:
            raise EvalInputError(f"sigma must be >= 0, got {self.sigma}")
        if latent and self.sigma == 0:
            raise EvalInputError(f"sigma = 0 makes every mind the mean mind: methods {latent} need sigma > 0")
        if self.temperature < 0:
            raise EvalInputError(f"temperature must be >= 0, got {self.temperature}")
        if "temperature" in self.methods and self.temperature == 0:
            raise EvalInputError("method 'temperature' needs temperature > 0 (at 0 its n samples are identical)")
        if self.max_tokens >= self.max_model_len:
            raise EvalInputError(f"max_tokens ({self.max_tokens}) must be < max_model_len ({self.max_model_len})")
        if self.ks is None:
            set_("ks", tuple(k for k in DEFAULT_KS if k <= self.n))
        else:
            ks = tuple(sorted({_int("K", k, 1) for k in self.ks}))
            if not ks:
                raise EvalInputError("ks is empty")
            if sampled and ks[-1] > self.n:
                raise EvalInputError(f"K={ks[-1]} > n={self.n}: Pass@K and maj@K need n >= K samples per problem")
            set_("ks", ks)

    @property
    def sampled_methods(self) -> tuple[str, ...]:
        return tuple(m for m in self.methods if m != "mean")
