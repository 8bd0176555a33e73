"""The `btrans` reward manager, registered in verl's reward-manager registry (`reward.reward_manager.name=btrans`,
set by conf/btrans/on.yaml). verl's reward-loop workers call `run_single` once per finished trajectory.

    python -m verl.trainer.main_ppo +btrans=on ...                       # RLVR: this manager scores every rollout
    python -m verl.trainer.main_ppo +btrans=on btrans/task=ttrl ...      # TTRL: training rewards come from the
                                                                         # majority vote (btrans_verl.rollout);
                                                                         # this manager scores validation only

Score: the last `\\boxed{}` answer of the response against `reward_model.ground_truth`, equivalence by
math-verify under a time limit (`btrans_verl.rewards.schemes.score_response`), mapped by the task's reward
scheme (`btrans.rlvr.reward_scheme` / `btrans.ttrl.reward_scheme`: "binary" 1/0, "simplerl" +1/-0.5/-1).

Every trajectory gets the same `reward_extra_info` keys (verl requires it): `acc` (1.0 if correct),
`answer_found` (1.0 if a boxed answer was extracted), `score`, and `answer_id` (a 52-bit hash of the normalised
answer, -1 without one: lets the population metrics count distinct answers per prompt).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from btrans_verl.config import settings_from_run_config
from btrans_verl.rewards.math_answer import normalize_answer, reference_answer
from btrans_verl.rewards.schemes import Outcome, score_response

logger = logging.getLogger("btrans_verl.reward_manager")

NAME = "btrans"


@register(NAME)
class BTransRewardManager(RewardManagerBase):
    """Math reward for RLVR (and for TTRL's validation against ground truth)."""

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None,
                 reward_model_tokenizer=None, **_unused):
        super().__init__(config, tokenizer, compute_score)
        settings = settings_from_run_config(config)
        self.scheme = settings.ttrl.reward_scheme if settings.task == "ttrl" else settings.rlvr.reward_scheme

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
        return {"reward_score": result.score,
                "reward_extra_info": {"acc": float(result.correct),
                                      "answer_found": float(result.outcome is not Outcome.NO_ANSWER),
                                      "score": result.score, "answer_id": answer_id(result.answer)}}


def answer_id(answer: str | None) -> float:
    """A float-exact 52-bit id of the normalised answer (-1.0 for none): equal answers, equal ids."""
    if answer is None or not normalize_answer(answer):
        return -1.0
    digest = hashlib.blake2b(normalize_answer(answer).encode(), digest_size=8).digest()
    return float(int.from_bytes(digest, "big") >> 12)
