"""Reading the plugin's counters from outside vLLM: the proof that latents reached the model.

Each vLLM worker keeps a `WorkerCounters` (`btrans_verl.vllm.worker`); `collective_rpc("btrans_counters")`
returns one dict per worker. The evaluation command (`btrans_verl.eval.engine`) and verl's trainer
(`btrans_verl.verl.replay_buffer`) both sum them over workers, take the change over a batch of requests and raise
`LatentNotAppliedError` when the change contradicts what was sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["GAUGES", "PLACE", "LatentNotAppliedError", "sum_worker_counters", "counter_delta"]

# Counters that describe the model, not the requests served: never differenced.
GAUGES = ("norms_patched", "slot_table_bytes", "workers")
PER_STAGE = ("norms_patched", "slot_table_bytes")  # each pipeline stage wraps (and allocates for) its own norms
# Where a worker sits (`btrans_verl.vllm.canary.worker_ranks`): labels, never summed.
PLACE = ("rank", "tp_rank", "pp_rank", "pp_last", "dp_rank")


class LatentNotAppliedError(RuntimeError):
    """vLLM's counters contradict what was sent: latents that never reached the model (a silent no-op), or
    latents applied where none were asked for."""


def sum_worker_counters(per_worker: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """One dict of counters for an engine (the reply of `collective_rpc("btrans_counters")`, one dict per
    worker; replies of several engines or servers may be concatenated), counting each request once.

    Every tensor-parallel rank and every pipeline stage of a model replica sees every request of that replica,
    so the request counters (requests_with_latent, tokens_shifted, steps_with_latent, steps) are taken from one
    worker per replica: tensor rank 0 of pipeline stage 0. Data-parallel engines serve disjoint requests and are
    summed. `norms_patched` and `slot_table_bytes` sum the stages of each replica (tensor rank 0: each stage wraps
    its own norms);
    `workers` counts the dicts. Dicts without place keys (older plugins, single workers) count as rank 0."""
    total: dict[str, int] = {"workers": 0}
    for counters in per_worker:
        total["workers"] += 1
        tp, pp = int(counters.get("tp_rank", 0)), int(counters.get("pp_rank", 0))
        for key, value in counters.items():
            if key in PLACE:
                continue
            total.setdefault(key, 0)
            if key in PER_STAGE:
                total[key] += int(value) if tp == 0 else 0
            elif tp == 0 and pp == 0:
                total[key] += int(value)
    return total


def counter_delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    """How much every counter (not the gauges) grew from `before` to `after`."""
    return {k: after[k] - before.get(k, 0) for k in after if k not in GAUGES}
