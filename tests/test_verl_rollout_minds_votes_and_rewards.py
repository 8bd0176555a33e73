"""The pieces that run inside verl's Ray workers, on hand-made inputs: which mind each trajectory gets, TTRL's
group vote as concurrent sessions meet it (failures, voters that are not trained), the `btrans` reward manager
through verl's registry, the population metrics and the guard that refuses a silent no-op."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from btrans_verl import config as bc
from btrans_verl.population import LatentNotAppliedError, batch_metrics, check_latents_applied
from btrans_verl.rollout import NO_LATENT, TTRL_INFO_KEYS, VoteGroup, mind_for, ttrl_reward_info
from btrans_verl.seeds import trajectory_seed
from btrans_verl.vllm.requests import parse_latent_request


def settings(**kw) -> bc.BTransSettings:
    return bc.BTransSettings(**kw)


def boxed(answer: str) -> str:
    return f"so the answer is \\boxed{{{answer}}}."


# ------------------------------------------------------------------------------------------------- minds
def test_each_trajectory_gets_its_own_reproducible_mind_and_the_vllm_request_carries_it():
    s = settings(sigma=0.07, seed=5)
    minds = [mind_for(s, validate=False, global_steps=3, index=11, data_source="gsm8k", session_id=i)
             for i in range(8)]
    seeds = [seed for seed, _ in minds]
    assert len(set(seeds)) == 8 and all(0 <= x < 2**63 for x in seeds)
    assert seeds[2] == trajectory_seed(5, 3, 11, 2, data_source="gsm8k")  # the documented derivation
    request = parse_latent_request(minds[2][1])  # what the vLLM plugin will read
    assert (request.seed, request.sigma, request.mu, request.granularity) == (seeds[2], 0.07, 0.0, "sequence")
    # rerun: same; next step (e.g. after resume): fresh
    again = [mind_for(s, validate=False, global_steps=3, index=11, data_source="gsm8k", session_id=i)[0]
             for i in range(8)]
    later = {mind_for(s, validate=False, global_steps=4, index=11, data_source="gsm8k", session_id=i)[0]
             for i in range(8)}
    assert again == seeds and not later & set(seeds)
    # the request names the run's targets too, so vLLM shifts exactly the norms the run asked for
    narrow = mind_for(settings(targets=["final_norm", "input_layernorm"]), validate=False, global_steps=3,
                      index=11, data_source="gsm8k", session_id=0)[1]
    assert request.targets == ("input_layernorm", "post_attention_layernorm", "final_norm")
    assert parse_latent_request(narrow).targets == ("input_layernorm", "final_norm")


def test_validation_uses_the_mean_mind_by_default_and_off_sends_nothing():
    assert mind_for(settings(), validate=True, global_steps=0, index=0, data_source="", session_id=0) == \
        (NO_LATENT, None)
    seed, extra = mind_for(settings(val_mind="sample"), validate=True, global_steps=0, index=0, data_source="",
                           session_id=1)
    assert seed == trajectory_seed(42, 0, 0, 1, partition="val") and extra is not None
    assert mind_for(settings(enable=False), validate=False, global_steps=1, index=0, data_source="",
                    session_id=0) == (NO_LATENT, None)


# ------------------------------------------------------------------------------------------------- TTRL votes
async def _sessions(group: VoteGroup, answers: dict[int, str | None], fail: set[int] = frozenset()):
    """Run the sessions concurrently, in a shuffled finishing order; failed ones abstain."""
    async def one(i: int):
        await asyncio.sleep(0.001 * ((i * 7) % 5))
        if i in fail:
            group.abstain(i, 100 + i)
            return None
        return await group.submit(i, answers[i], 100 + i)

    return await asyncio.gather(*(one(i) for i in range(group.n_votes)))


def test_sessions_meet_vote_and_only_the_first_n_samples_are_trained():
    group = VoteGroup(n_votes=6, n_samples=4, scheme="binary", ground_truth="0.5")
    answers = {0: boxed(r"\frac12"), 1: boxed("3"), 2: boxed("0.5"), 3: "no answer", 4: boxed("1/2"), 5: boxed("3")}
    results = asyncio.run(_sessions(group, answers))
    assert all(r is results[0] for r in results)  # one vote for the whole group
    vote = results[0]
    assert vote.pseudo_label == r"\frac12" and vote.rewards == [1.0, 0.0, 1.0, 0.0]
    rewards, infos = zip(*(ttrl_reward_info(vote, i) for i in range(6)))
    assert rewards == (1.0, 0.0, 1.0, 0.0, 0.0, 0.0)
    assert [info["ttrl_voter_only"] for info in infos] == [0.0] * 4 + [1.0] * 2
    assert all(tuple(info) == TTRL_INFO_KEYS for info in infos)  # same keys on every trajectory
    assert infos[0]["ttrl_label_accuracy"] == 1.0 and infos[0]["ttrl_distinct_latents"] == 6.0


def test_a_failed_session_abstains_and_does_not_sink_its_group():
    group = VoteGroup(n_votes=4, n_samples=4, scheme="binary", ground_truth="7")
    results = asyncio.run(_sessions(group, {0: boxed("7"), 2: boxed("7"), 3: boxed("8")}, fail={1}))
    vote = next(r for r in results if r is not None)
    assert vote.pseudo_label == "7" and vote.rewards == [1.0, 0.0, 1.0, 0.0]
    assert vote.metrics.failed_ratio == 0.25


def test_all_empty_group_gives_zero_rewards_and_no_label():
    group = VoteGroup(n_votes=3, n_samples=3, scheme="simplerl")
    vote = asyncio.run(_sessions(group, {0: "?", 1: r"\boxed{}", 2: "none"}))[0]
    assert vote.pseudo_label is None and vote.rewards == [0.0, 0.0, 0.0]
    assert np.isnan(ttrl_reward_info(vote, 0)[1]["ttrl_label_accuracy"])  # no ground truth: no label metric


def test_a_session_cannot_answer_twice():
    group = VoteGroup(n_votes=2, n_samples=2, scheme="binary")

    async def twice():
        first = asyncio.ensure_future(group.submit(0, boxed("1"), 1))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="answered twice"):
            await group.submit(0, boxed("1"), 1)
        await group.submit(1, boxed("1"), 2)
        return await first

    assert asyncio.run(twice()).pseudo_label == "1"


# ------------------------------------------------------------------------------------------------- reward manager
def _data(tokenizer, response: str, ground_truth):
    from verl import DataProto

    prompt = torch.tensor([tokenizer.encode("What is 1/2?")])
    resp = torch.tensor([tokenizer.encode(response)])
    mask = torch.ones(1, prompt.shape[1] + resp.shape[1], dtype=torch.int64)
    return DataProto.from_dict(tensors={"prompts": prompt, "responses": resp, "attention_mask": mask},
                               non_tensors={"reward_model": np.array([{"ground_truth": ground_truth}], dtype=object),
                                            "data_source": np.array(["gsm8k"]), "index": np.array([3])})


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from btrans_verl.cpu.smoke import write_tiny_tokenizer

    return write_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize("scheme,response,expected", [
    ("binary", boxed(r"\frac{1}{2}"), 1.0), ("binary", boxed("2"), 0.0), ("binary", "no box", 0.0),
    ("simplerl", boxed("0.5"), 1.0), ("simplerl", boxed("2"), -0.5), ("simplerl", "no box", -1.0)])
def test_btrans_reward_manager_is_registered_in_verl_and_scores_boxed_answers(tokenizer, scheme, response, expected):
    import btrans_verl.verl_plugin  # noqa: F401  (verl imports it; registers the manager lazily)
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls

    cfg = OmegaConf.create({"btrans": {"enable": True, "rlvr": {"reward_scheme": scheme}},
                            "actor_rollout_ref": {"rollout": {"name": "vllm", "n": 4, "agent": {
                                "agent_loop_manager_class": bc.AGENT_LOOP_MANAGER}}},
                            "trainer": {"v1": {"sampler": {"custom_sampler": {"path": bc.SAMPLER_PATH,
                                                                              "name": bc.SAMPLER_NAME}}}}})
    manager = get_reward_manager_cls("btrans")(config=cfg, tokenizer=tokenizer, compute_score=None,
                                               reward_router_address=None, reward_model_tokenizer=None)
    out = asyncio.run(manager.run_single(_data(tokenizer, response, "0.5")))
    assert out["reward_score"] == expected
    info = out["reward_extra_info"]
    assert set(info) == {"acc", "answer_found", "score", "answer_id"}
    assert info["acc"] == float(expected == 1.0) and (info["answer_id"] == -1.0) == ("boxed" not in response)
    with pytest.raises(ValueError, match="ground_truth"):
        asyncio.run(manager.run_single(_data(tokenizer, response, None)))


# ------------------------------------------------------------------------------------------------- metrics, guard
def test_population_metrics_of_a_batch():
    seeds = [11, 12, 13, NO_LATENT, 21, 21]
    uids = ["a", "a", "a", "b", "c", "c"]
    infos = [{"reward_extra_info": {"answer_id": x}} for x in (1.0, 2.0, 1.0, -1.0, 5.0, 5.0)]
    m = batch_metrics(seeds, uids, infos, "rlvr")
    assert m["btrans/trajectories"] == 6 and m["btrans/trajectories_with_latent"] == 5
    assert m["btrans/distinct_latents_per_group"] == pytest.approx((3 + 0 + 1) / 3)
    assert m["btrans/distinct_answers_per_group"] == pytest.approx((2 + 0 + 1) / 3)
    assert m["btrans/scored_by_btrans"] == 1.0
    assert batch_metrics(seeds, uids, [{"reward_extra_info": {"acc": 1.0}}] * 6, "rlvr")["btrans/scored_by_btrans"] == 0
    ttrl = [{"reward_extra_info": {"ttrl_label_accuracy": v, "ttrl_majority_ratio": 0.5, "ttrl_pass_at_k": 1.0,
                                   "ttrl_distinct_answers": 2.0}} for v in (1.0, 1.0, 1.0, float("nan"), 0.0, 0.0)]
    t = batch_metrics(seeds, uids, ttrl, "ttrl")
    assert t["ttrl/label_accuracy"] == pytest.approx(0.5) and t["ttrl/pass@k"] == 1.0
    assert t["btrans/distinct_answers_per_group"] == 2.0


def test_guard_refuses_a_silent_no_op_and_a_contaminated_baseline():
    check_latents_applied(True, 8, {"requests_with_latent": 12, "tokens_shifted": 300}, servers=1)
    with pytest.raises(LatentNotAppliedError, match="did not reach the model"):
        check_latents_applied(True, 8, {"requests_with_latent": 0, "tokens_shifted": 0}, servers=1)
    with pytest.raises(LatentNotAppliedError, match="baseline"):
        check_latents_applied(False, 0, {"requests_with_latent": 1, "tokens_shifted": 5}, servers=1)
    with pytest.raises(LatentNotAppliedError, match="no vLLM rollout server"):
        check_latents_applied(True, 8, {}, servers=0)
