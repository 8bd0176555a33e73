"""Per-trajectory latent seeds: which mind of the population generates which trajectory.

A B-Trans mind is its seed (`btrans_verl.latent`: an integer in [0, 2**63)). During RL every trajectory gets
its own mind, and the seed is *derived*, never drawn from a random generator, so that

* a rerun with the same config reproduces every seed (no process, device, PYTHONHASHSEED or Ray dependence:
  the derivation is a keyed BLAKE2b hash of integers and UTF-8 strings);
* a resumed run continues with fresh seeds: the global step is part of the derivation, and verl resumes at
  step N + 1 after a checkpoint at step N;
* no two trajectories of one step share a seed: `step_seeds` proves it by construction (see below); the verl
  rollout assigns them per step, in its agent-loop manager (`btrans_verl.verl.rollout.assign_minds`), with a
  `StepLedger` when a step's prompts arrive in several batches;
* every seed is in [0, 2**63).

What identifies a trajectory (the hash input):

    experiment seed  `btrans.seed` (default `${actor_rollout_ref.rollout.seed}`, verl's rollout seed, 42)
    partition        "train" for training rollouts, "val" for validation rollouts (verl runs validation at
                     the same `global_steps` value as a training step; the partition keeps their minds apart)
    global step      verl's `global_steps` (the trainer's step counter; it also separates epochs, since it
                     keeps counting across them)
    prompt identity  (`data_source`, `index`): the dataset row's `data_source` column and `extra_info.index`
                     (verl copies it into the batch column `index`, default 0 when the row has none).
                     verl's per-prompt `uid` is NOT used: it is a fresh uuid4 in every run.
    sample id        0 .. n-1 within the prompt's group (verl's `session_id`; for TTRL the n_votes candidates)

Uniqueness. `trajectory_seed` is the 63-bit hash of that identity. `step_seeds` takes every trajectory of a
step at once (the agent-loop manager sees the whole step's batch), and

1. gives repeated prompt identities in the batch (the same row twice, or a dataset without `extra_info.index`,
   where every row has index 0) consecutive, non-overlapping sample-id ranges, in batch order, so that every
   trajectory has a distinct identity;
2. resolves hash collisions (about 4e-12 for 8,192 trajectories, so in practice never) deterministically: the
   trajectories are visited in sorted identity order, independent of batch order, and one whose seed is
   already taken is re-hashed with an attempt counter until it gets a free value. Every seed returned is
   checked against the set of those already assigned, so the result is unique by construction.

The first occurrence of every identity that does not collide gets exactly `trajectory_seed(...)`, so workers
that only see part of a step can recompute (and check) the seeds they were given.

    >>> from btrans_verl.seeds import step_seeds, trajectory_seed
    >>> seeds = step_seeds(42, global_step=3, indices=[10, 11], n_samples=2)
    >>> seeds[0][1] == trajectory_seed(42, 3, 10, 1)
    True
"""

from __future__ import annotations

import hashlib
import operator
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from btrans_verl.latent import MAX_SEED

__all__ = ["SEED_LIMIT", "PARTITIONS", "StepLedger", "trajectory_seed", "step_seeds", "child_seed"]

SEED_LIMIT = MAX_SEED + 1  # seeds are in [0, SEED_LIMIT): the latent's seed range, owned by btrans_verl.latent
PARTITIONS = ("train", "val")
_U64 = 1 << 64
_HASH_KEY = b"btrans-verl/trajectory-seed"
_HASH_PERSON = b"btrans-seed-v1"  # bump the version if the derivation ever changes
_CHILD_KEY = b"btrans-verl/child-seed"
_MAX_ATTEMPTS = 10_000


def _check_uint(name: str, value, limit: int = _U64) -> int:
    # numpy / torch integer scalars are fine; bools, floats, strings and None are caller bugs
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if not 0 <= value < limit:
        raise ValueError(f"{name} must be in [0, {limit}), got {value}")
    return int(value)


def _check_partition(partition: str) -> str:
    if partition not in PARTITIONS:
        raise ValueError(f"partition must be one of {PARTITIONS}, got {partition!r}")
    return partition


def _str_bytes(s: str) -> bytes:
    b = str(s).encode("utf-8")
    return struct.pack("<Q", len(b)) + b  # length-prefixed: no two (data_source, ...) tuples encode alike


def _hash(experiment_seed: int, partition: str, global_step: int, data_source: str, index: int,
          sample: int, attempt: int, bits: int) -> int:
    h = hashlib.blake2b(digest_size=8, key=_HASH_KEY, person=_HASH_PERSON)
    h.update(_str_bytes(partition))
    h.update(struct.pack("<QQ", experiment_seed, global_step))
    h.update(_str_bytes(data_source))
    h.update(struct.pack("<QQQ", index, sample, attempt))
    return int.from_bytes(h.digest(), "little") >> (64 - bits)


def trajectory_seed(experiment_seed: int, global_step: int, index: int, sample: int, *, data_source: str = "",
                    partition: str = "train", attempt: int = 0) -> int:
    """The seed of one trajectory: a 63-bit keyed BLAKE2b hash of its identity (see the module docstring).

    Args:
        experiment_seed: `btrans.seed`, in [0, 2**63).
        global_step: verl's `global_steps` of the step the trajectory belongs to (>= 0).
        index: the prompt's dataset row index (`extra_info.index`, verl's batch column `index`; >= 0).
        sample: the trajectory's position in its prompt's group, 0 .. n-1 (verl's `session_id`).
        data_source: the row's `data_source` (keeps rows of two datasets with equal indices apart).
        partition: "train" or "val".
        attempt: collision-resolution counter; 0 except inside `step_seeds`.

    Returns an int in [0, 2**63). Unique within a step only as produced by `step_seeds`.
    """
    return _hash(_check_uint("experiment_seed", experiment_seed, SEED_LIMIT), _check_partition(partition),
                 _check_uint("global_step", global_step), str(data_source), _check_uint("index", index),
                 _check_uint("sample", sample), _check_uint("attempt", attempt), 63)


@dataclass
class StepLedger:
    """What earlier `step_seeds` calls of the same step and partition assigned, for a step whose prompts arrive
    in several batches (verl may top a step up with more prompts): sample ids continue per prompt identity and
    no seed is given twice. Use one ledger per (partition, global step)."""

    next_sample: dict[tuple[str, int], int] = field(default_factory=dict)
    taken: set[int] = field(default_factory=set)


def step_seeds(experiment_seed: int, global_step: int, indices: Sequence[int], n_samples: int | Sequence[int], *,
               data_sources: Sequence[str] | None = None, partition: str = "train",
               bits: int = 63, ledger: StepLedger | None = None) -> list[list[int]]:
    """Seeds for every trajectory of one step, unique within the step.

    Args:
        experiment_seed: `btrans.seed`, in [0, 2**63).
        global_step: verl's `global_steps` for this step.
        indices: one dataset row index per prompt of the step's batch, in batch order.
        n_samples: trajectories per prompt: one int for all prompts (verl's `rollout.n`, or TTRL's n_votes), or
            one per prompt (verl's per-row `__rollout_n__`).
        data_sources: one `data_source` per prompt (default: "" for all).
        partition: "train" or "val".
        bits: seeds are drawn from [0, 2**bits); 63 (the default) for real use. Smaller values exist only to
            exercise collision resolution in tests; the step must have at most 2**(bits - 1) trajectories.
        ledger: this step's earlier assignments (updated in place): the result is also distinct from them.

    Returns `seeds[i][j]`: the seed of sample j of prompt i. All values are distinct and in [0, 2**bits).
    """
    experiment_seed = _check_uint("experiment_seed", experiment_seed, SEED_LIMIT)
    global_step = _check_uint("global_step", global_step)
    partition = _check_partition(partition)
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 63:
        raise ValueError(f"bits must be an integer in [1, 63], got {bits!r}")
    indices = [_check_uint(f"indices[{i}]", x) for i, x in enumerate(indices)]
    if data_sources is None:
        data_sources = [""] * len(indices)
    elif len(data_sources) != len(indices):
        raise ValueError(f"data_sources has {len(data_sources)} entries for {len(indices)} prompts")
    if hasattr(n_samples, "__len__"):
        if len(n_samples) != len(indices):
            raise ValueError(f"n_samples has {len(n_samples)} entries for {len(indices)} prompts")
        counts = [_check_uint(f"n_samples[{i}]", n) for i, n in enumerate(n_samples)]
    else:
        counts = [_check_uint("n_samples", n_samples)] * len(indices)
    ledger = StepLedger() if ledger is None else ledger
    total = sum(counts) + len(ledger.taken)
    if total > (1 << (bits - 1)):
        raise ValueError(f"{total} trajectories do not fit uniquely in {bits}-bit seeds")

    # 1. distinct identities: a repeated (data_source, index) continues its sample ids where the previous
    #    occurrence stopped.
    next_sample = ledger.next_sample
    identities: list[tuple[str, int, int, int, int]] = []  # (data_source, index, sample, row, col)
    for row, (source, index, n) in enumerate(zip(data_sources, indices, counts)):
        source = str(source)
        first = next_sample.get((source, index), 0)
        next_sample[(source, index)] = first + n
        identities.extend((source, index, first + j, row, j) for j in range(n))

    # 2. hash, resolving collisions in sorted identity order (independent of batch order).
    seeds: list[list[int]] = [[0] * n for n in counts]
    taken = ledger.taken
    for source, index, sample, row, col in sorted(identities):
        for attempt in range(_MAX_ATTEMPTS):
            s = _hash(experiment_seed, partition, global_step, source, index, sample, attempt, bits)
            if s not in taken:
                break
        else:  # pragma: no cover - needs ~2**bits trajectories
            raise RuntimeError(f"no free seed for trajectory {(source, index, sample)} after {_MAX_ATTEMPTS} tries")
        taken.add(s)
        seeds[row][col] = s
    return seeds


def child_seed(seed: int, index: int) -> int:
    """The mind of child `index` (0 .. n-1) of one request that asks vLLM for n > 1 sequences
    (`SamplingParams.n`) with latent seed `seed`: every sequence is its own hypothesis, so each child gets its
    own seed, a 63-bit keyed BLAKE2b hash of (seed, index). A hash rather than `seed + index` (vLLM's rule for
    sampling seeds) so that requests with neighbouring seeds do not share minds. Replay child i in Hugging Face
    with `child_seed(seed, i)`.

        >>> child_seed(7, 0) != child_seed(7, 1) != 7
        True
    """
    h = hashlib.blake2b(digest_size=8, key=_CHILD_KEY, person=_HASH_PERSON)
    h.update(struct.pack("<QQ", _check_uint("seed", seed, SEED_LIMIT), _check_uint("index", index)))
    return int.from_bytes(h.digest(), "little") >> 1
