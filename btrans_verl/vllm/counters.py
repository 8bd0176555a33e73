"""Reading the plugin's counters from outside vLLM: the proof that latents reached the model.

Each vLLM worker keeps a `WorkerCounters` (`btrans_verl.vllm.worker`); `collective_rpc("btrans_counters")`
returns one dict per worker. The evaluation command (`btrans_verl.eval.engine`) and verl's trainer
(`btrans_verl.population`) both sum them over workers, take the change over a batch of requests and raise
`LatentNotAppliedError` when the change contradicts what was sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["GAUGES", "LatentNotAppliedError", "sum_worker_counters", "counter_delta"]

# Counters that describe the model, not the requests served: never differenced.
GAUGES = ("norms_patched",)


class LatentNotAppliedError(RuntimeError):
    """vLLM's counters contradict what was sent: latents that never reached the model (a silent no-op), or
    latents applied where none were asked for."""


def sum_worker_counters(per_worker: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """One dict of counters summed over the workers of an engine (the reply of `collective_rpc`)."""
    total: dict[str, int] = {}
    for counters in per_worker:
        for key, value in counters.items():
            total[key] = total.get(key, 0) + int(value)
    return total


def counter_delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    """How much every counter (not the gauges) grew from `before` to `after`."""
    return {k: after[k] - before.get(k, 0) for k in after if k not in GAUGES}
