"""The difficulty-stratified sample: exact largest-remainder counts, sampling without replacement, seeded
and reproducible, explicit per-level counts. Run:
    .venv/bin/python -m pytest tests/test_data_prep_stratified_sample.py -q
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_prep import allocate, convert_split, get_dataset, get_template, resolve_sources, stratified_sample
from data_prep.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BTRANS_SHARED_DATA", REPO.parent / "shared" / "data"))
needs_shared = pytest.mark.skipif(
    not (SHARED / "simplerl_zoo" / "level3to5_train.parquet").is_file(),
    reason=f"shared data not found at {SHARED} (set BTRANS_SHARED_DATA to a data root in data_prep's layout)",
)


def pool(sizes: dict) -> list[dict]:
    """Synthetic rows: ``sizes[level]`` rows per level, indices 0..N-1 interleaved across levels."""
    levels = [level for level, size in sizes.items() for _ in range(size)]
    random.Random(1234).shuffle(levels)
    return [{"extra_info": {"index": i, "level": level}} for i, level in enumerate(levels)]


def indices(rows) -> list[int]:
    return [row["extra_info"]["index"] for row in rows]


def test_largest_remainder_on_the_hard_split_sizes():
    # quotas 400*N_l/8521: 118.01, 124.31, 157.68 -> floors 118+124+157 = 399, the last row to level 5
    assert allocate({3: 2514, 4: 2648, 5: 3359}, 400) == {3: 118, 4: 124, 5: 158}
    # with the two empty-answer rows kept (8523): 117.99, 124.28, 157.74 -> same counts
    assert allocate({3: 2514, 4: 2648, 5: 3361}, 400) == {3: 118, 4: 124, 5: 158}


def test_allocation_sums_exactly_and_stays_within_one_of_the_quota():
    rng = random.Random(0)
    for _ in range(500):
        sizes = {level: rng.randint(0, 300) for level in range(1, rng.randint(2, 7))}
        total = sum(sizes.values())
        n = rng.randint(0, total)
        counts = allocate(sizes, n)
        assert sum(counts.values()) == n
        for level, size in sizes.items():
            quota = Fraction(n * size, total) if total else 0
            assert quota - 1 < counts[level] < quota + 1 and 0 <= counts[level] <= size


def test_allocation_ties_are_deterministic_and_edge_cases_are_exact():
    assert allocate({1: 10, 2: 10, 3: 10}, 4) == {1: 2, 2: 1, 3: 1}  # equal remainders and pools: smaller level
    assert allocate({1: 1, 2: 3}, 2) == {1: 0, 2: 2}  # quotas 0.5 and 1.5, equal remainders: larger pool
    assert allocate({1: 10, 2: 20}, 1) == {1: 0, 2: 1}  # quotas 1/3 and 2/3: larger remainder
    assert allocate({3: 5, 4: 7}, 0) == {3: 0, 4: 0}
    assert allocate({3: 5, 4: 7}, 12) == {3: 5, 4: 7}
    with pytest.raises(ValueError, match="cannot sample 13 rows from a pool of 12"):
        allocate({3: 5, 4: 7}, 13)


def test_sample_is_without_replacement_and_matches_the_allocation():
    rows = pool({3: 250, 4: 260, 5: 330})
    result = stratified_sample(rows, 100, seed=7)
    picked = indices(result.rows)
    assert len(picked) == len(set(picked)) == 100
    assert picked == sorted(picked)  # source order
    assert Counter(row["extra_info"]["level"] for row in result.rows) == result.allocation
    assert result.allocation == allocate({3: 250, 4: 260, 5: 330}, 100)


def test_same_seed_same_rows_different_seed_different_rows():
    rows = pool({3: 250, 4: 260, 5: 330})
    first = indices(stratified_sample(rows, 100, seed=0).rows)
    assert indices(stratified_sample(rows, 100, seed=0).rows) == first
    assert indices(stratified_sample(list(reversed(rows)), 100, seed=0).rows) == first[::-1]  # order-independent
    other = indices(stratified_sample(rows, 100, seed=1).rows)
    assert other != first and len(other) == 100


def test_explicit_level_counts_override_the_proportional_allocation():
    rows = pool({3: 50, 4: 50, 5: 50})
    result = stratified_sample(rows, level_counts={5: 30, 3: 10}, seed=0)
    assert result.allocation == {3: 10, 4: 0, 5: 30}
    assert Counter(row["extra_info"]["level"] for row in result.rows) == {3: 10, 5: 30}
    with pytest.raises(ValueError, match="absent from the pool"):
        stratified_sample(rows, level_counts={2: 1})
    with pytest.raises(ValueError, match="cannot take 51 of 50"):
        stratified_sample(rows, level_counts={3: 51})
    with pytest.raises(ValueError, match="n=5 but level_counts sum to 40"):
        stratified_sample(rows, 5, level_counts={5: 30, 3: 10})


def test_rows_without_level_are_one_stratum():
    rows = [{"extra_info": {"index": i}} for i in range(50)]
    result = stratified_sample(rows, 10, seed=3)
    assert len(result.rows) == 10 and result.allocation == {None: 10}


@needs_shared
def test_paper_sample_of_400_from_the_real_hard_split_is_exact_and_pinned(tmp_path):
    spec = get_dataset("simplerl_zoo")
    [train] = resolve_sources(spec, SHARED, "train")
    rows = convert_split(spec, train, get_template("qwen_boxed"), skip_bad=True, progress=False).rows
    result = stratified_sample(rows, 400, seed=0)
    assert result.pool == {3: 2514, 4: 2648, 5: 3359}
    assert result.allocation == {3: 118, 4: 124, 5: 158}
    picked = indices(result.rows)
    assert picked[:5] == [15, 44, 46, 87, 142]
    # pinned: any change to the sampling rule changes which 400 rows the paper recipe trains on
    digest = hashlib.sha256(",".join(map(str, picked)).encode()).hexdigest()
    assert digest == "45d671f75b1f0ef6880985507448b6d4b95d64b8fe261317069a220f2b4f3923"
    seed1 = set(indices(stratified_sample(rows, 400, seed=1).rows))
    assert seed1 != set(picked)

    # the CLI writes the same rows beside the full split
    out = tmp_path / "simplerl_zoo"
    argv = ["simplerl_zoo", "--src", str(SHARED), "--out", str(out), "--split", "train",
            "--sample-n", "400", "--seed", "0", "--skip-bad", "--no-progress"]
    assert main(argv) == 0
    written = pq.read_table(out / "train_n400_seed0.parquet").to_pylist()
    assert indices(written) == picked
    assert pq.read_metadata(out / "train.parquet").num_rows == 8521


@needs_shared
def test_cli_level_counts_write_exact_counts(tmp_path, capsys):
    argv = ["simplerl_zoo", "--src", str(SHARED), "--out", str(tmp_path), "--split", "train",
            "--level-counts", "3=100,4=150,5=150", "--seed", "5", "--skip-bad", "--no-progress"]
    assert main(argv) == 0
    written = pq.read_table(tmp_path / "train_n400_seed5.parquet").to_pylist()
    assert Counter(row["extra_info"]["level"] for row in written) == {3: 100, 4: 150, 5: 150}
    assert "3:100/2514 4:150/2648 5:150/3359" in capsys.readouterr().out
