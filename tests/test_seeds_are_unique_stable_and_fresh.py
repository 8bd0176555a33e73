"""Per-trajectory latent seeds (btrans_verl.seeds): unique within a step, stable across reruns (fresh processes,
any PYTHONHASHSEED), fresh across steps (so a resumed run does not replay minds), always in [0, 2**63)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from btrans_verl.seeds import SEED_LIMIT, child_seed, step_seeds, trajectory_seed

PROMPTS, SAMPLES = 512, 16
INDICES = [7 * i + 3 for i in range(PROMPTS)]  # dataset rows (extra_info.index) of one step's batch


def flat(seeds):
    return [s for row in seeds for s in row]


def digest(seeds) -> str:
    return hashlib.sha256(json.dumps(seeds).encode()).hexdigest()


def test_unique_within_a_step_and_in_range():
    for partition in ("train", "val"):
        seeds = flat(step_seeds(42, 10, INDICES, SAMPLES, partition=partition))
        assert len(seeds) == PROMPTS * SAMPLES == len(set(seeds))
        assert all(isinstance(s, int) and 0 <= s < SEED_LIMIT for s in seeds)
    assert SEED_LIMIT == 2**63
    # the train and val minds of the same step are different minds
    assert not set(flat(step_seeds(42, 10, INDICES, SAMPLES))) & set(
        flat(step_seeds(42, 10, INDICES, SAMPLES, partition="val")))


def test_seeds_are_valid_latent_seeds():
    from btrans_verl.latent import MAX_SEED, sample_latent

    assert SEED_LIMIT == MAX_SEED + 1
    for s in step_seeds(42, 1, [0, 1], 2)[0]:
        assert sample_latent(seed=s, norm_index=0, hidden=4).shape == (4,)


def test_per_trajectory_function_matches_the_step_function():
    seeds = step_seeds(5, 3, INDICES[:32], 4, data_sources=["math"] * 32, partition="val")
    for i, index in enumerate(INDICES[:32]):
        for j in range(4):
            assert seeds[i][j] == trajectory_seed(5, 3, index, j, data_source="math", partition="val")


def test_repeated_prompts_and_missing_indices_still_get_unique_seeds():
    # verl fills `index` with 0 when a row has no extra_info.index: every prompt then looks the same
    seeds = step_seeds(42, 1, [0] * 64, 8)
    assert len(set(flat(seeds))) == 64 * 8
    # a repeated row continues its sample ids: its first occurrence keeps the per-trajectory seeds
    assert seeds[0] == [trajectory_seed(42, 1, 0, j) for j in range(8)]
    assert seeds[1] == [trajectory_seed(42, 1, 0, 8 + j) for j in range(8)]
    # equal indices from two datasets are two prompts
    two = step_seeds(42, 1, [5, 5], 4, data_sources=["gsm8k", "math"])
    assert len(set(flat(two))) == 8 and two[0] != two[1]
    # per-prompt group sizes (verl's __rollout_n__)
    mixed = step_seeds(42, 1, [1, 1, 2], [3, 5, 2])
    assert [len(r) for r in mixed] == [3, 5, 2] and len(set(flat(mixed))) == 10


def test_collisions_are_resolved_deterministically_and_independently_of_batch_order():
    # 10-bit seeds force collisions among 400 trajectories; 63-bit seeds (the default) practically never collide
    indices = list(range(100))
    seeds = step_seeds(1, 2, indices, 4, bits=10)
    values = flat(seeds)
    assert len(values) == len(set(values)) == 400 and max(values) < 2**10
    first_choice = [trajectory_seed(1, 2, i, j) >> 53 for i in indices for j in range(4)]
    assert len(set(first_choice)) < 400  # collisions did happen and were resolved
    assert step_seeds(1, 2, indices, 4, bits=10) == seeds  # deterministic
    order = list(range(100))
    random.Random(0).shuffle(order)
    shuffled = step_seeds(1, 2, [indices[k] for k in order], 4, bits=10)
    assert {indices[k]: row for k, row in zip(order, shuffled)} == dict(zip(indices, seeds))
    with pytest.raises(ValueError, match="do not fit"):
        step_seeds(1, 2, list(range(600)), 1, bits=10)


def test_fresh_across_steps_experiments_and_partitions():
    base = step_seeds(42, 100, INDICES, SAMPLES)
    for other in (step_seeds(42, 101, INDICES, SAMPLES),  # next step (a resumed run continues here)
                  step_seeds(43, 100, INDICES, SAMPLES),  # another experiment seed
                  step_seeds(42, 100, INDICES, SAMPLES, partition="val")):
        assert not set(flat(base)) & set(flat(other))


RERUN = f"""
import hashlib, json, sys
from btrans_verl.seeds import step_seeds
steps = {{str(s): step_seeds(42, s, {INDICES!r}, {SAMPLES:d}) for s in (0, 1, 57)}}
val = step_seeds(42, 57, {INDICES!r}, {SAMPLES:d}, partition="val", data_sources=["aime"] * {PROMPTS:d})
print(hashlib.sha256(json.dumps([steps, val]).encode()).hexdigest())
"""


def test_stable_across_reruns_in_fresh_processes():
    here = digest([{str(s): step_seeds(42, s, INDICES, SAMPLES) for s in (0, 1, 57)},
                   step_seeds(42, 57, INDICES, SAMPLES, partition="val", data_sources=["aime"] * PROMPTS)])
    for hashseed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        out = subprocess.run([sys.executable, "-c", RERUN], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == here


def test_pinned_values_never_change():
    # the derivation is part of the experiment record: changing it silently would change every run's minds
    assert trajectory_seed(42, 0, 0, 0) == 8807644347711721824
    assert trajectory_seed(42, 7, 123, 5, data_source="gsm8k", partition="val") == 8111699611465218564
    assert digest(step_seeds(42, 1, list(range(8)), 2)) == \
        "4c03f610bbc6f36f8d3705b4f6db125f1a815b3cd7f175457f4f93c3d8d4cb4c"


@pytest.mark.parametrize("kwargs", [
    {"experiment_seed": -1}, {"experiment_seed": 2**63}, {"global_step": -1}, {"index": -5}, {"sample": 1.0},
    {"index": True}, {"partition": "test"}, {"index": "3"},
])
def test_bad_inputs_are_rejected(kwargs):
    args = {"experiment_seed": 1, "global_step": 0, "index": 0, "sample": 0} | kwargs
    with pytest.raises(ValueError):
        trajectory_seed(**args)


def test_numpy_integers_are_accepted_and_lengths_checked():
    assert step_seeds(np.int64(42), np.int64(3), np.arange(4), np.int64(2)) == step_seeds(42, 3, [0, 1, 2, 3], 2)
    with pytest.raises(ValueError, match="data_sources"):
        step_seeds(42, 3, [0, 1], 2, data_sources=["a"])
    with pytest.raises(ValueError, match="n_samples"):
        step_seeds(42, 3, [0, 1], [2])


def test_children_of_one_request_get_distinct_pinned_minds():
    # vLLM's n > 1 children: child i of seed s runs child_seed(s, i); neighbouring seeds must not share minds
    children = {child_seed(s, i) for s in range(64) for i in range(16)}
    assert len(children) == 64 * 16 and children.isdisjoint(range(64))
    assert all(0 <= c < SEED_LIMIT for c in children)
    assert child_seed(0, 0) == 695878184715305979 and child_seed(2**63 - 1, 31) == 5960288952021810086
    for bad in ({"seed": -1, "index": 0}, {"seed": 2**63, "index": 0}, {"seed": 1, "index": -1},
                {"seed": 1.0, "index": 0}):
        with pytest.raises(ValueError):
            child_seed(**bad)
