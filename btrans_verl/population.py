"""Population metrics and the no-silent-no-op guard, computed where verl samples each training batch.

    python -m verl.trainer.main_ppo +btrans=on ...     # conf/btrans/on.yaml sets
    trainer.v1.sampler.custom_sampler={path: pkg://btrans_verl.population, name: BTransReplayBuffer}

`BTransReplayBuffer` is verl 0.9.1's sync replay buffer plus, on every `sample()` (in the trainer process, once
the step's rollouts are finished):

* B-Trans metrics of the sampled trajectories (btrans/scored_by_btrans: the fraction of trajectories rewarded
  by btrans-verl's reward manager or TTRL vote), logged with verl's step metrics and exported with Ray's metrics
  API (`ray.util.metrics.Gauge`, names `btrans_<metric>`, shown on the Ray dashboard's Metrics view):
    btrans/trajectories, btrans/trajectories_with_latent, btrans/distinct_latents_per_group (mean over prompts),
    btrans/distinct_answers_per_group (RLVR: distinct normalised boxed answers; TTRL: distinct vote buckets),
    btrans/vllm/requests_with_latent, btrans/vllm/tokens_shifted, btrans/vllm/steps_with_latent (deltas since
    the previous sample, summed over every vLLM worker: the plugin's counters), btrans/vllm/norms_patched;
    TTRL: ttrl/label_accuracy, ttrl/reward_accuracy, ttrl/majority_ratio, ttrl/pass@k, ttrl/distinct_answers,
    ttrl/failed_ratio (means over prompts; TTRL's names).
* The guard. With btrans.enable=true, if vLLM's counters did not grow by at least the number of sampled
  trajectories that carry a latent, the run stops with an error (a latent that never reached the model would
  be a silent no-op). With btrans.enable=false, any latent seen by vLLM stops the run (the baseline must be
  the plain model). No vLLM server found also stops the run.
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from typing import Any

import ray
import transfer_queue as tq
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

from btrans_verl.config import BTransSettings
from btrans_verl.vllm.counters import LatentNotAppliedError, counter_delta, sum_worker_counters

logger = logging.getLogger("btrans_verl.population")

SERVER_NAME = re.compile(r"^vllm_server_\d+_0(?!\d)")  # verl names rollout servers vllm_server_<replica>_<node>
TTRL_GROUP_KEYS = ("label_accuracy", "reward_accuracy", "majority_ratio", "pass_at_k", "distinct_answers",
                   "failed_ratio")


def vllm_counters() -> tuple[dict[str, int], int]:
    """Sum of every rollout vLLM worker's B-Trans counters, and the number of servers asked."""
    names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                   if SERVER_NAME.match(a["name"]))
    # list_named_actors(all_namespaces=True) gives dicts; verl's servers live in the job's namespace
    replies = []
    for name in names:
        per_worker = ray.get(ray.get_actor(name).collective_rpc.remote("btrans_counters"))
        if not isinstance(per_worker, list):
            raise LatentNotAppliedError(f"vLLM server {name} returned {per_worker!r} for btrans_counters: is the "
                                        f"btrans-verl verl plugin loaded in the server actor?")
        replies.extend(per_worker)
    return sum_worker_counters(replies), len(names)


def _as_list(x) -> list:
    if x is None:
        return []
    if hasattr(x, "tolist"):
        return x.tolist()
    return [getattr(v, "data", v) for v in x]


def batch_metrics(seeds: list[int], uids: list[str], extra_fields: list[dict], task: str) -> dict[str, float]:
    """B-Trans metrics of one sampled batch (see the module docstring). Pure: tested on hand-made batches."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, uid in enumerate(uids):
        groups[str(uid)].append(i)
    with_latent = [s for s in seeds if int(s) >= 0]
    out = {"btrans/trajectories": float(len(seeds)), "btrans/trajectories_with_latent": float(len(with_latent))}
    if groups:
        out["btrans/distinct_latents_per_group"] = sum(
            len({int(seeds[i]) for i in members if int(seeds[i]) >= 0}) for members in groups.values()) / len(groups)
    infos = [(e or {}).get("reward_extra_info", {}) if isinstance(e, dict) else {} for e in extra_fields]
    # who scored the trajectories: the btrans reward manager (RLVR) or the TTRL vote (their reward_extra_info keys)
    ours = "ttrl_majority_ratio" if task == "ttrl" else "answer_id"
    out["btrans/scored_by_btrans"] = sum(ours in info for info in infos) / max(len(infos), 1)
    if task == "ttrl":
        per_group = {uid: infos[members[0]] for uid, members in groups.items() if infos[members[0]]}
        for key in TTRL_GROUP_KEYS:
            values = [float(v[f"ttrl_{key}"]) for v in per_group.values()
                      if not math.isnan(float(v.get(f"ttrl_{key}", math.nan)))]
            if values:
                name = "pass@k" if key == "pass_at_k" else key
                out[f"ttrl/{name}"] = sum(values) / len(values)
        if per_group:
            out["btrans/distinct_answers_per_group"] = out.get("ttrl/distinct_answers", 0.0)
    else:
        answers = [[infos[i].get("answer_id") for i in members] for members in groups.values()]
        counted = [len({a for a in group if a is not None and a >= 0}) for group in answers
                   if any(a is not None for a in group)]
        if counted:
            out["btrans/distinct_answers_per_group"] = sum(counted) / len(counted)
    return out


def check_latents_applied(enable: bool, batch_with_latent: int, delta: dict[str, int], servers: int) -> None:
    """Raise LatentNotAppliedError when vLLM's counters contradict the batch."""
    if servers == 0:
        raise LatentNotAppliedError("no vLLM rollout server (Ray actor vllm_server_<i>_0) was found to read the "
                                    "B-Trans counters from")
    seen = delta.get("requests_with_latent", 0)
    if enable and seen < batch_with_latent:
        raise LatentNotAppliedError(
            f"B-Trans is on and {batch_with_latent} trajectories of this batch carry a latent, but vLLM's workers "
            f"applied a latent to only {seen} requests since the previous batch (counters {delta}): the latent "
            f"did not reach the model")
    if not enable and (seen or delta.get("tokens_shifted", 0)):
        raise LatentNotAppliedError(f"B-Trans is off but vLLM applied latents (counters {delta}): the baseline "
                                    f"must run the plain model")


class BTransReplayBuffer(ReplayBuffer):
    """verl's sync ReplayBuffer plus B-Trans metrics and the guard. Needs `sampler_kwargs.btrans` (the run's
    `btrans` node; conf/btrans/on.yaml passes it)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        node = (self.sampler_kwargs or {}).get("btrans")
        if node is None:
            raise ValueError("trainer.v1.sampler.sampler_kwargs.btrans is missing: BTransReplayBuffer needs the "
                             "run's btrans settings (conf/btrans/on.yaml sets it to ${btrans})")
        self.btrans = BTransSettings.from_config(node)
        self._last_counters: dict[str, int] = {}
        self._gauges: dict[str, Any] = {}

    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        meta, metrics = super().sample(global_steps=global_steps, partition_id=partition_id, batch_size=batch_size)
        if partition_id != "train" or not meta.keys:
            return meta, metrics
        data = tq.kv_batch_get(keys=meta.keys, partition_id=meta.partition_id,
                               select_fields=["btrans_seed", "uid", "extra_fields"])
        seeds = [int(s) for s in _as_list(data["btrans_seed"])]
        found = batch_metrics(seeds, _as_list(data["uid"]), _as_list(data["extra_fields"]), self.btrans.task)
        counters, servers = vllm_counters()
        delta = counter_delta(counters, self._last_counters)
        self._last_counters = counters
        check_latents_applied(self.btrans.enable, int(found["btrans/trajectories_with_latent"]), delta, servers)
        found.update({f"btrans/vllm/{k}": float(v) for k, v in delta.items()})
        found["btrans/vllm/norms_patched"] = float(counters.get("norms_patched", 0))
        found["btrans/enable"] = float(self.btrans.enable)
        found["btrans/sigma"] = float(self.btrans.sigma)
        self._export(found)
        metrics.update(found)
        return meta, metrics

    def _export(self, values: dict[str, float]) -> None:
        from ray.util.metrics import Gauge

        for key, value in values.items():
            name = "btrans_" + re.sub(r"[^a-zA-Z0-9_]", "_", key.split("/", 1)[-1] if key.startswith("btrans/")
                                      else key)
            if name not in self._gauges:
                self._gauges[name] = Gauge(name, description=f"B-Trans metric {key} (per training step)")
            self._gauges[name].set(float(value))
