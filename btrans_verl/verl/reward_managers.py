"""The B-Trans reward managers, registered in verl's reward-manager registry and run where verl runs reward
managers: its reward-loop workers. `reward.reward_manager.name` shows which one a run uses (the task's config sets
it; `settings.validate_run_config` refuses a mismatch).

    python -m verl.trainer.main_ppo +btrans=on ...                   # RLVR:  reward.reward_manager.name=btrans
    python -m verl.trainer.main_ppo +btrans=on btrans/task=ttrl ...  # TTRL:  reward.reward_manager.name=btrans_ttrl

* `btrans` (RLVR): verl calls `run_single` once per finished trajectory. Score: the last `\\boxed{}` answer of the
  response against `reward_model.ground_truth`, equivalence by math-verify under a time limit
  (`btrans_verl.rewards.schemes.score_response`), mapped by `btrans.rlvr.reward_scheme` ("binary" 1/0, "simplerl"
  +1/-0.5/-1). `reward_extra_info`: `acc`, `answer_found`, `score`, `answer_id` (a 52-bit hash of the normalised
  answer, -1 without one: the population metrics count distinct answers per prompt with it), `repetition_loop`
  (1.0 for a text stuck in a loop, `btrans_verl.eval.metrics.is_repetition_loop`: `btrans/degenerate`), and with
  `btrans.step_consistency` also `step_consistency` (the response's step-wise consistency, NaN below two steps).
  Both managers add `step_consistency` to their keys then.
* `btrans_ttrl` (TTRL, label-free): the agent-loop worker gathers a prompt's n_votes candidates and hands the group
  over whole (`vote_group_data`, one row per candidate; `rollout.py`). The manager votes with
  `btrans_verl.rewards.majority_vote_group`: equivalent forms share a bucket, an empty answer never wins, ties break
  deterministically, a failed session abstains, only the first n_samples candidates are trained (the rest vote),
  every candidate is rewarded against the majority with `btrans.ttrl.reward_scheme`. The ground truth, when the
  prompt has one, is used for the metrics only (`ttrl_*` keys, TTRL's names). A single trajectory (validation)
  is scored against ground truth as `btrans` does.

verl requires the same `reward_extra_info` keys on every trajectory of a batch: each manager always returns its
full set (`RLVR_INFO_KEYS`, `TTRL_INFO_KEYS`, plus `step_consistency` when the run asks for it).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading

import numpy as np
from verl import DataProto
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from btrans_verl.eval.metrics import is_repetition_loop
from btrans_verl.rewards.majority_vote import GroupVoteResult, majority_vote_group
from btrans_verl.rewards.math_answer import normalize_answer, reference_answer
from btrans_verl.rewards.schemes import Outcome, score_response
from btrans_verl.verl.settings import REWARD_MANAGERS, settings_from_run_config

logger = logging.getLogger("btrans_verl.verl.reward_managers")

RLVR_MANAGER, TTRL_MANAGER = REWARD_MANAGERS["rlvr"], REWARD_MANAGERS["ttrl"]
# Every trajectory carries its mind's seed in the field SEED_FIELD (rollout.py writes it); NO_LATENT: generated
# without a latent (the mean mind with mu = 0).
SEED_FIELD = "btrans_seed"
NO_LATENT = -1

RLVR_INFO_KEYS = ("acc", "answer_found", "score", "answer_id", "repetition_loop")
TTRL_INFO_KEYS = ("ttrl_label_accuracy", "ttrl_reward_accuracy", "ttrl_majority_ratio", "ttrl_pass_at_k",
                  "ttrl_distinct_answers", "ttrl_distinct_latents", "ttrl_failed_ratio", "ttrl_has_pseudo_label",
                  "ttrl_voter_only", "acc", "repetition_loop")

# The hand-over of one TTRL group: non-tensor columns, one row per candidate (session order), and the result key.
VOTE_GROUP_KEY = "btrans_vote_group"  # per row: the response token ids, None for a failed session
VOTE_SEED_KEY = SEED_FIELD  # per row: the candidate's latent seed
VOTE_RESULT_KEY = "btrans_vote"  # run_single's answer: one {reward_score, reward_extra_info} per candidate


def vote_group_data(candidates: dict[int, tuple[list[int] | None, int]], n_votes: int, n_samples: int,
                    reward_model: dict) -> DataProto:
    """One TTRL prompt's candidates (session_id -> (response ids or None, latent seed)) as the DataProto that
    `btrans_ttrl.run_single` votes on."""
    if sorted(candidates) != list(range(n_votes)):
        raise ValueError(f"TTRL group: expected sessions 0..{n_votes - 1}, got {sorted(candidates)}")
    ids = np.empty(n_votes, dtype=object)
    ids[:] = [candidates[i][0] for i in range(n_votes)]
    return DataProto(non_tensor_batch={VOTE_GROUP_KEY: ids,
                                       VOTE_SEED_KEY: np.array([candidates[i][1] for i in range(n_votes)]),
                                       "reward_model": np.array([reward_model] * n_votes, dtype=object)},
                     meta_info={"n_samples": n_samples})


def answer_id(answer: str | None) -> float:
    """A float-exact 52-bit id of the normalised answer (-1.0 for none): equal answers, equal ids."""
    if answer is None or not normalize_answer(answer):
        return -1.0
    digest = hashlib.blake2b(normalize_answer(answer).encode(), digest_size=8).digest()
    return float(int.from_bytes(digest, "big") >> 12)


@register(RLVR_MANAGER)
class BTransRewardManager(RewardManagerBase):
    """Math reward for RLVR: the trajectory's last boxed answer against its ground truth."""

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None,
                 reward_model_tokenizer=None, **_unused):
        super().__init__(config, tokenizer, compute_score)
        self.settings = settings_from_run_config(config)
        self.scheme = self.settings.ttrl.reward_scheme if self.settings.task == "ttrl" else \
            self.settings.rlvr.reward_scheme
        self._encode = None  # the step embedder, loaded at first use (btrans.step_consistency)
        self._encode_lock = threading.Lock()

    def coherence(self, texts: list[str | None]) -> dict[str, list[float]]:
        """`step_consistency` of each text when the run logs it (NaN for a text of < 2 steps or a failed
        session), else nothing."""
        if not self.settings.step_consistency:
            return {}
        from btrans_verl.eval.metrics import step_consistency

        with self._encode_lock:  # one embedder per worker, used from the executor's threads
            if self._encode is None:
                from btrans_verl.eval.embeddings import make_encoder

                self._encode = make_encoder()
            scores = [math.nan if t is None else step_consistency([t], self._encode).score for t in texts]
        return {"step_consistency": scores}

    async def run_single(self, data) -> dict:
        item = data[-1]  # multi-turn: the last output carries the final answer
        responses = item.batch["responses"]
        valid = int(item.batch["attention_mask"][-responses.shape[-1]:].sum())
        reward_model = item.non_tensor_batch.get("reward_model") or {}
        if "ground_truth" not in reward_model or reference_answer(reward_model["ground_truth"]) is None:
            raise ValueError(f"btrans reward: trajectory of data_source={item.non_tensor_batch.get('data_source')!r} "
                             f"index={item.non_tensor_batch.get('index')!r} has no usable "
                             f"reward_model.ground_truth ({reward_model.get('ground_truth')!r})")
        loop = asyncio.get_running_loop()
        text = await loop.run_in_executor(None, lambda: self.tokenizer.decode(responses[:valid],
                                                                              skip_special_tokens=True))
        result = await loop.run_in_executor(None, score_response, text, reward_model["ground_truth"], self.scheme)
        coherence = await loop.run_in_executor(None, self.coherence, [text])
        return {"reward_score": result.score,
                "reward_extra_info": {"acc": float(result.correct),
                                      "answer_found": float(result.outcome is not Outcome.NO_ANSWER),
                                      "score": result.score, "answer_id": answer_id(result.answer),
                                      "repetition_loop": float(is_repetition_loop(text)),
                                      **{k: v[0] for k, v in coherence.items()}}}


@register(TTRL_MANAGER)
class BTransTTRLRewardManager(BTransRewardManager):
    """TTRL: votes over a whole group of candidates (see the module docstring); single trajectories (validation)
    are scored against ground truth."""

    async def run_single(self, data) -> dict:
        if VOTE_GROUP_KEY not in data.non_tensor_batch:
            return await super().run_single(data)
        loop = asyncio.get_running_loop()
        result, texts = await loop.run_in_executor(None, self.vote, data)
        coherence = await loop.run_in_executor(None, self.coherence, texts)
        rewards = [ttrl_reward(result, i, texts[i]) for i in range(len(data))]
        for key, values in coherence.items():
            for reward, value in zip(rewards, values, strict=True):
                reward["reward_extra_info"][key] = value
        return {"reward_score": None, VOTE_RESULT_KEY: rewards}

    def vote(self, data) -> tuple[GroupVoteResult, list[str | None]]:
        """The group's vote and its candidates' texts (None: a failed session)."""
        ids = data.non_tensor_batch[VOTE_GROUP_KEY]
        texts = [None if x is None else self.tokenizer.decode(list(x), skip_special_tokens=True) for x in ids]
        seeds = [int(s) for s in data.non_tensor_batch[VOTE_SEED_KEY]]
        ground_truth = (data.non_tensor_batch["reward_model"][0] or {}).get("ground_truth")
        return majority_vote_group(texts, ground_truth=ground_truth, n_samples=int(data.meta_info["n_samples"]),
                                   scheme=self.settings.ttrl.reward_scheme,
                                   latent_seeds=[None if s == NO_LATENT else s for s in seeds]), texts


def ttrl_reward(result: GroupVoteResult, candidate: int, text: str | None = None) -> dict:
    """{reward_score, reward_extra_info} of one TTRL candidate from its group's vote (0 for a voter only);
    `text`: the candidate's response (None: a failed session, not a loop)."""
    m = result.metrics
    trained = candidate < len(result.rewards)
    reward = float(result.rewards[candidate]) if trained else 0.0
    info = {
        "ttrl_label_accuracy": _num(m.label_accuracy), "ttrl_reward_accuracy": _num(m.reward_accuracy),
        "ttrl_majority_ratio": m.majority_ratio, "ttrl_pass_at_k": _num(m.pass_at_k),
        "ttrl_distinct_answers": m.distinct_answers, "ttrl_distinct_latents": _num(m.distinct_latents),
        "ttrl_failed_ratio": m.failed_ratio, "ttrl_has_pseudo_label": m.has_pseudo_label,
        "ttrl_voter_only": float(not trained), "acc": reward,
        "repetition_loop": float(text is not None and is_repetition_loop(text)),
    }
    return {"reward_score": reward, "reward_extra_info": info}


def _num(x) -> float:
    return math.nan if x is None else float(x)
