"""The mean mind's view of each step's samples, logged where verl computes it: `btrans/mean_mind_logprob`.

The actor trains the mean mind (z = mu), so verl's `old_log_probs` (the actor's log-probabilities of the sampled
response tokens, computed once per step before the update, at the rollout temperature) are the mean mind's
log-probabilities of what the minds sampled. Their per-token mean over each trajectory, averaged over the step's
trajectories, says how far the sampled minds strayed from what the model finds plausible (the same measure as the
evaluation's `mean_mind_logprob`, `btrans_verl.eval.engine.score_under_mean_mind`, which scores at temperature 1).

verl 0.9.1's v1 trainer (`verl/trainer/ppo/v1/trainer_base.py`, `PPOTrainer._compute_old_log_prob`) writes them to
the TransferQueue and logs only the entropy; the patch reads them back (one [trajectories, response] fetch) and
adds the metric. In rollout-correction bypass mode the old log-probs are the rollout's own (each mind's), not the
mean mind's: nothing is logged then.
"""

from __future__ import annotations

from btrans_verl.verl import patch_verl

TRAINER_MODULE = "verl.trainer.ppo.v1.trainer_base"
METRIC = "btrans/mean_mind_logprob"


def mean_logprob_per_token(log_probs, mask) -> float:
    """Mean over trajectories of each trajectory's mean log-prob per response token: [B, T] each -> float."""
    mask = mask.to(log_probs.dtype)
    per_trajectory = (log_probs * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # [B]
    return float(per_trajectory.mean())


def _bypass(config) -> bool:
    rollout_correction = config.algorithm.get("rollout_correction", None)
    return bool(rollout_correction and rollout_correction.get("bypass_mode", False))


def _make_compute_old_log_prob(original):
    def _compute_old_log_prob(self, batch, metrics):
        batch = original(self, batch, metrics)
        if not _bypass(self.config):
            import transfer_queue as tq

            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                                   select_fields=["old_log_probs", "response_mask"]).to_padded_tensor()
            metrics[METRIC] = mean_logprob_per_token(data["old_log_probs"], data["response_mask"])
        return batch

    return _compute_old_log_prob


def install() -> None:
    patch_verl(TRAINER_MODULE, "PPOTrainer", "_compute_old_log_prob", _make_compute_old_log_prob, what=METRIC)
