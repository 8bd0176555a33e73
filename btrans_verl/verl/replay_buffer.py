"""Population metrics and the no-silent-no-op guard, computed where verl samples each training batch.

    python -m verl.trainer.main_ppo +btrans=on ...     # conf/btrans/on.yaml sets
    trainer.v1.sampler.custom_sampler={path: pkg://btrans_verl.verl.replay_buffer, name: BTransReplayBuffer}

`BTransReplayBuffer` is verl 0.9.1's sync replay buffer plus, on every `sample()` (in the trainer process, once
the step's rollouts are finished):

* B-Trans metrics of the sampled trajectories (btrans/scored_by_btrans: the fraction of trajectories rewarded
  by btrans-verl's reward manager or TTRL vote), logged with verl's step metrics and exported with Ray's metrics
  API (`ray.util.metrics.Gauge`, names `btrans_<metric>`, shown on the Ray dashboard's Metrics view):
    btrans/trajectories, btrans/trajectories_with_latent, btrans/distinct_latents (over the batch: equal to
    trajectories_with_latent, since no two trajectories of a step share a mind), btrans/distinct_latents_per_group
    (mean over prompts),
    btrans/distinct_answers_per_group (RLVR: distinct normalised boxed answers; TTRL: distinct vote buckets),
    btrans/pass@n and btrans/maj@n (RLVR: the fraction of prompt groups with a right answer, and whose majority
    answer is right, ties sharing the credit; answers vote by their normal form's `answer_id`, so equivalent
    forms such as 1/2 and 0.5 vote apart, unlike the evaluation's maj@K; TTRL logs ttrl/pass@k and
    ttrl/label_accuracy),
    btrans/informative_groups (the fraction of prompt groups whose rewards are not all equal: the groups in which
    GRPO's advantage is non-zero), btrans/degenerate (the fraction of responses stuck in a repetition loop;
    verl's response_length/clip_ratio counts the truncated ones), btrans/mean_mind_logprob (the actor's log-prob
    per token of the samples, logged by `trainer_metrics.py`), btrans/step_consistency (with
    btrans.step_consistency: the mean step-wise consistency of the responses with two or more steps),
    btrans/sigma (the sigma the step's minds were drawn with, from the trajectories' `btrans_sigma`),
    btrans/sigma_next (adaptive sigma only: the controller's sigma after this step),
    btrans/vllm/requests_with_latent, btrans/vllm/tokens_shifted, btrans/vllm/steps_with_latent (deltas since
    the previous sample, summed over every vLLM worker: the plugin's counters), btrans/vllm/norms_patched;
    TTRL: ttrl/label_accuracy, ttrl/reward_accuracy, ttrl/majority_ratio, ttrl/pass@k, ttrl/distinct_answers,
    ttrl/failed_ratio (means over prompts; TTRL's names).
* The guard, on counts and on content. With btrans.enable=true, if vLLM's counters did not grow by at least
  the number of sampled trajectories that carry a latent, the run stops with an error (a latent that never
  reached the model would be a silent no-op); then every rollout worker runs the canary
  (`btrans_verl.vllm.canary`: what its wrapped norms and its running graph add for a fixed mind must be the
  contract's z) and any mismatch stops the run naming the server and rank (btrans/vllm/canary_workers: how many
  workers passed). sample() runs while the engines are awake: verl sleeps them right after it. With
  btrans.enable=false, any latent seen by vLLM stops the run (the baseline must be the plain model). No vLLM
  server found also stops the run. Requests are counted once per model replica (tensor and pipeline ranks see
  every request) over every data-parallel engine; disaggregated replicas are checked on the prefill and on the
  decode servers.
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

from btrans_verl.eval.metrics import is_informative
from btrans_verl.verl.exploration import controller_for
from btrans_verl.verl.settings import BTransSettings
from btrans_verl.vllm.canary import check_canary_reports
from btrans_verl.vllm.counters import LatentNotAppliedError, counter_delta, sum_worker_counters

logger = logging.getLogger("btrans_verl.verl.replay_buffer")

# verl names its rollout servers vllm_server_<replica>_<node> (prefill servers of a disaggregated replica too) and
# the decode servers of a prefill/decode-disaggregated replica vllm_server_decode_<replica>_<i>; reward and teacher
# servers (vllm_server_reward_*, vllm_server_teacher_*) are not rollout servers. Only node 0 of a multi-node
# replica runs the engine client (the other nodes run headless workers that its collective_rpc reaches).
SERVER_NAME = re.compile(r"^vllm_server_(?P<decode>decode_)?(?P<replica>\d+)_(?P<node>\d+)(?!\d)")
TTRL_GROUP_KEYS = ("label_accuracy", "reward_accuracy", "majority_ratio", "pass_at_k", "distinct_answers",
                   "failed_ratio")


def rollout_servers() -> dict[str, str]:
    """{actor name: role} of every rollout vLLM server: role "decode" for the decode servers of a disaggregated
    replica, "serve" for the others (plain servers, and prefill servers, which see every request too)."""
    found = {}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        m = SERVER_NAME.match(actor["name"])
        if m and (m["decode"] or m["node"] == "0"):
            found[actor["name"]] = "decode" if m["decode"] else "serve"
    return dict(sorted(found.items()))


def vllm_counters(servers: dict[str, str]) -> dict[str, dict[str, int]]:
    """Every rollout vLLM worker's B-Trans counters summed per server role ({"serve": ..., "decode": ...}; each
    request counted once per role, see `sum_worker_counters`); `servers` from `rollout_servers()`."""
    replies: dict[str, list] = {}
    for name, role in servers.items():
        per_worker = ray.get(ray.get_actor(name).collective_rpc.remote("btrans_counters"))
        if not isinstance(per_worker, list):
            raise LatentNotAppliedError(f"vLLM server {name} returned {per_worker!r} for btrans_counters: is the "
                                        f"btrans-verl verl plugin loaded in the server actor?")
        replies.setdefault(role, []).extend(per_worker)
    return {role: sum_worker_counters(r) for role, r in replies.items()}


def check_vllm_canaries(servers: dict[str, str]) -> int:
    """Run the content canary (`btrans_verl.vllm.canary`) on every rollout server; raise LatentContentError naming
    the server and the ranks whose norms do not add the contract's z. Returns the number of workers checked.
    Called while the rollout engines are awake (verl puts them to sleep after the replay buffer's sample())."""
    checked = 0
    for name in servers:
        reports = ray.get(ray.get_actor(name).collective_rpc.remote("btrans_canary"))
        check_canary_reports(name, reports)
        checked += len(reports)
    return checked


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
    out = {"btrans/trajectories": float(len(seeds)), "btrans/trajectories_with_latent": float(len(with_latent)),
           "btrans/distinct_latents": float(len({int(s) for s in with_latent}))}
    if groups:
        out["btrans/distinct_latents_per_group"] = sum(
            len({int(seeds[i]) for i in members if int(seeds[i]) >= 0}) for members in groups.values()) / len(groups)
    infos = [(e or {}).get("reward_extra_info", {}) if isinstance(e, dict) else {} for e in extra_fields]
    # who scored the trajectories: the btrans reward manager (RLVR) or the TTRL vote (their reward_extra_info keys)
    ours = "ttrl_majority_ratio" if task == "ttrl" else "answer_id"
    out["btrans/scored_by_btrans"] = sum(ours in info for info in infos) / max(len(infos), 1)
    # GRPO's exploration signal: groups whose rewards are not all equal (the others have zero advantage)
    reward_key = "acc" if task == "ttrl" else "score"  # TTRL: reward against the vote; RLVR: the scheme's score
    rewards = [[float(infos[i][reward_key]) for i in members if reward_key in infos[i]] for members in groups.values()]
    rewards = [g for g in rewards if len(g) >= 2]
    if rewards:
        out["btrans/informative_groups"] = sum(map(is_informative, rewards)) / len(rewards)
    loops = [float(info["repetition_loop"]) for info in infos if "repetition_loop" in info]
    if loops:
        out["btrans/degenerate"] = sum(loops) / len(loops)  # texts stuck in a loop (truncation: verl's clip_ratio)
    steps = [float(info["step_consistency"]) for info in infos
             if not math.isnan(float(info.get("step_consistency", math.nan)))]
    if steps:
        out["btrans/step_consistency"] = sum(steps) / len(steps)  # btrans.step_consistency: responses of >= 2 steps
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
        graded = [[(infos[i]["answer_id"], float(infos[i]["acc"])) for i in members
                   if "answer_id" in infos[i] and "acc" in infos[i]] for members in groups.values()]
        graded = [g for g in graded if g]
        if graded:
            out["btrans/pass@n"] = sum(max(acc for _, acc in g) for g in graded) / len(graded)
            out["btrans/maj@n"] = sum(map(_majority_correct, graded)) / len(graded)
    return out


def _majority_correct(group: list[tuple[float, float]]) -> float:
    """Whether the majority answer of one group is right: answers vote by `answer_id` (-1: none, never votes);
    an answer is right when its trajectories' `acc` is 1; a tie shares the credit among the tied answers."""
    votes: dict[float, int] = defaultdict(int)
    right: dict[float, bool] = defaultdict(bool)
    for answer, acc in group:
        if answer >= 0:
            votes[answer] += 1
            right[answer] |= acc >= 1.0
    if not votes:
        return 0.0
    top = max(votes.values())
    tied = [a for a, v in votes.items() if v == top]
    return sum(right[a] for a in tied) / len(tied)


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
        self._last_counters: dict[str, dict[str, int]] = {}
        self._gauges: dict[str, Any] = {}

    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        meta, metrics = super().sample(global_steps=global_steps, partition_id=partition_id, batch_size=batch_size)
        if partition_id != "train" or not meta.keys:
            return meta, metrics
        data = tq.kv_batch_get(keys=meta.keys, partition_id=meta.partition_id,
                               select_fields=["btrans_seed", "btrans_sigma", "uid", "extra_fields"])
        seeds = [int(s) for s in _as_list(data["btrans_seed"])]
        found = batch_metrics(seeds, _as_list(data["uid"]), _as_list(data["extra_fields"]), self.btrans.task)
        # the sigma the step's minds were drawn with (the median: one value per step; adaptive sigma moves it)
        sigmas = sorted(float(x) for x, s in zip(_as_list(data["btrans_sigma"]), seeds) if s >= 0)
        found["btrans/sigma"] = sigmas[len(sigmas) // 2] if sigmas else float(self.btrans.sigma)
        controller = controller_for(self.btrans)
        if controller is not None:
            found["btrans/sigma_next"] = controller.observe(found.get("btrans/informative_groups", math.nan))
        servers = rollout_servers()
        per_role = vllm_counters(servers)
        deltas = {role: counter_delta(c, self._last_counters.get(role, {})) for role, c in per_role.items()}
        self._last_counters = per_role
        for delta in deltas.values() or [{}]:  # disaggregated: the prefill and the decode engines both apply it
            check_latents_applied(self.btrans.enable, int(found["btrans/trajectories_with_latent"]), delta,
                                  len(servers))
        role = "decode" if "decode" in deltas else "serve"
        found.update({f"btrans/vllm/{k}": float(v) for k, v in deltas.get(role, {}).items()})
        found["btrans/vllm/norms_patched"] = float(per_role.get(role, {}).get("norms_patched", 0))
        if self.btrans.enable:
            found["btrans/vllm/canary_workers"] = float(check_vllm_canaries(servers))
        found["btrans/enable"] = float(self.btrans.enable)
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
