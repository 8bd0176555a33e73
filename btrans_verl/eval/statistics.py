"""Intervals for population metrics: percentile bootstrap over problems, and paired differences between methods.

Every figure of the evaluation is a mean over problems of a per-problem value (accuracy c/n, pass@K, maj@K, an
informative-group indicator, ...). Problems are the unit that varies between benchmarks, so the interval
resamples problems with replacement (B resamples, seeded):

    interval(values) = (q_{2.5%}, q_{97.5%}) of { mean(values[idx_b]) : b < B },  idx_b ~ Uniform(P)^P

Two methods measured on the same problems are compared by the paired difference: per-problem differences
d_i = a_i - b_i, its mean, and the same bootstrap interval of mean(d). An interval that excludes 0 says the
difference is larger than the problem-to-problem noise of this benchmark (at the 95% level).

    >>> lo, hi = bootstrap_interval([1.0, 0.0, 1.0, 1.0], seed=0)
    >>> 0.0 <= lo <= 0.75 <= hi <= 1.0
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95


def _values(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{what}: need a non-empty 1-D sequence of per-problem values, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"{what}: per-problem values must be finite (problem {int(np.argmin(np.isfinite(v)))})")
    return v


def bootstrap_interval(values: Sequence[float] | np.ndarray, *, resamples: int = DEFAULT_RESAMPLES,
                       level: float = DEFAULT_LEVEL, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-problem `values` (see the module docstring)."""
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    v = _values(values, "bootstrap_interval")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(resamples, v.size))  # [B, P] problem indices
    means = v[idx].mean(axis=1)  # [B]
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedDifference:
    """Method a minus method b on the same problems: mean of per-problem differences and its interval."""

    metric: str
    a: str
    b: str
    mean: float
    low: float
    high: float
    num_problems: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "excludes_zero": self.excludes_zero}


def paired_difference(metric: str, a_name: str, a: Sequence[float] | np.ndarray, b_name: str,
                      b: Sequence[float] | np.ndarray, *, resamples: int = DEFAULT_RESAMPLES,
                      level: float = DEFAULT_LEVEL, seed: int = 0) -> PairedDifference:
    """`a - b` per problem (the same problems, in the same order), with its bootstrap interval."""
    va, vb = _values(a, f"{metric} of {a_name}"), _values(b, f"{metric} of {b_name}")
    if va.shape != vb.shape:
        raise ValueError(f"paired {metric}: {a_name} has {va.size} problems, {b_name} has {vb.size}")
    d = va - vb  # [P]
    lo, hi = bootstrap_interval(d, resamples=resamples, level=level, seed=seed)
    return PairedDifference(metric, a_name, b_name, float(d.mean()), lo, hi, int(d.size))
