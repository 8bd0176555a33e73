"""Seeded, difficulty-stratified sampling (the paper trains on 400 such SimpleRL-Zoo examples).

Rule, for ``n`` rows from a pool stratified by ``extra_info["level"]``:

1. Allocation (largest-remainder / Hamilton method). Level ``l`` with ``N_l`` of the ``N`` rows gets the
   quota ``n * N_l / N``; each level first gets ``floor(quota)``, then the ``n - sum(floors)`` rows left
   go one each to the levels with the largest fractional remainders (ties: the larger level pool, then
   the smaller level value). Counts therefore sum exactly to ``n`` and each is within 1 of its quota.
   Exact integer arithmetic is used, so there is no floating-point tie-breaking.
   Explicit per-level counts (``level_counts``) replace the proportional allocation; levels not named
   get 0 rows.
2. Selection, without replacement, within each level: every row gets the key
   ``sha256(f"{seed}:{extra_info['index']}")`` and each level keeps its ``k`` rows with the smallest keys.
   This depends only on the seed and the rows' source positions, not on the Python or numpy version,
   so the same seed always selects the same rows. The sample is returned in source order.

Rows without a level (e.g. GSM8K) form a single stratum, i.e. plain seeded sampling.

Offline only SimpleRL-Zoo's hard split (levels 3-5, 8523 rows) exists, so the paper-style sample is::

    python -m data_prep simplerl_zoo --src /path/to/shared/data --out data/simplerl_zoo --sample-n 400 --seed 0
    python -m data_prep simplerl_zoo --src /path/to/shared/data --out data/simplerl_zoo --level-counts 3=100,4=150,5=150
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PAPER_SAMPLE_N = 400


def _level_order(level: Hashable) -> tuple:
    """Sort key for level values: numbers ascending, then other values by text, None last."""
    if level is None:
        return (2, 0, "")
    if isinstance(level, (int, float)) and not isinstance(level, bool):
        return (0, level, "")
    return (1, 0, str(level))


def allocate(sizes: Mapping[Hashable, int], n: int) -> dict[Hashable, int]:
    """Largest-remainder allocation of ``n`` over strata of the given sizes (see the module docstring)."""
    total = sum(sizes.values())
    if any(size < 0 for size in sizes.values()):
        raise ValueError(f"negative stratum size in {dict(sizes)}")
    if not 0 <= n <= total:
        raise ValueError(f"cannot sample {n} rows from a pool of {total}")
    if n == 0:
        return {level: 0 for level in sizes}
    floors = {level: n * size // total for level, size in sizes.items()}
    remainders = {level: n * size % total for level, size in sizes.items()}
    left = n - sum(floors.values())
    order = sorted(sizes, key=lambda lv: (-remainders[lv], -sizes[lv], _level_order(lv)))
    for level in order[:left]:
        floors[level] += 1
    return {level: floors[level] for level in sorted(sizes, key=_level_order)}


def sample_key(seed: int, index: int) -> bytes:
    return hashlib.sha256(f"{seed}:{index}".encode()).digest()


@dataclass(frozen=True)
class SampleResult:
    rows: list[dict[str, Any]]
    allocation: dict[Hashable, int]  # level -> rows taken
    pool: dict[Hashable, int]  # level -> rows available
    seed: int


def _level_of(row: Mapping[str, Any]) -> Hashable:
    return row.get("extra_info", {}).get("level")


def stratified_sample(
    rows: Sequence[Mapping[str, Any]],
    n: int | None = None,
    *,
    seed: int = 0,
    level_counts: Mapping[Hashable, int] | None = None,
) -> SampleResult:
    """Sample ``n`` rows (or exactly ``level_counts`` per level) stratified by level; see the module docstring."""
    if n is None and level_counts is None:
        raise ValueError("give n or level_counts")
    indices = [row["extra_info"]["index"] for row in rows]
    if len(set(indices)) != len(indices):
        raise ValueError("rows' extra_info.index values are not unique; cannot key the sample")
    pool = Counter(_level_of(row) for row in rows)
    pool = {level: pool[level] for level in sorted(pool, key=_level_order)}
    if level_counts is not None:
        unknown = [lv for lv in level_counts if lv not in pool]
        if unknown:
            raise ValueError(f"level_counts names levels {unknown} absent from the pool; levels: {list(pool)}")
        for level, count in level_counts.items():
            if not 0 <= count <= pool[level]:
                raise ValueError(f"level {level!r}: cannot take {count} of {pool[level]} rows")
        if n is not None and n != sum(level_counts.values()):
            raise ValueError(f"n={n} but level_counts sum to {sum(level_counts.values())}")
        allocation = {level: int(level_counts.get(level, 0)) for level in pool}
    else:
        allocation = allocate(pool, n)
    chosen: set[int] = set()
    for level, k in allocation.items():
        members = [row for row in rows if _level_of(row) == level]
        members.sort(key=lambda row: sample_key(seed, row["extra_info"]["index"]))
        chosen.update(row["extra_info"]["index"] for row in members[:k])
    picked = [dict(row) for row in rows if row["extra_info"]["index"] in chosen]
    return SampleResult(picked, allocation, pool, seed)
