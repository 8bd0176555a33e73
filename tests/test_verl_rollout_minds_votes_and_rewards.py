"""The pieces that run inside verl's Ray workers, on hand-made inputs: which mind each trajectory gets, TTRL's
group vote as concurrent sessions meet it (failures, voters that are not trained), the `btrans` reward manager
through verl's registry, the population metrics and the guard that refuses a silent no-op."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from btrans_verl.seeds import step_seeds, trajectory_seed
from btrans_verl.verl import settings as bc
from btrans_verl.verl.replay_buffer import LatentNotAppliedError, batch_metrics, check_latents_applied
from btrans_verl.verl.reward_managers import RLVR_INFO_KEYS, TTRL_INFO_KEYS, VOTE_RESULT_KEY, vote_group_data
from btrans_verl.verl.rollout import NO_LATENT, STEP_SEEDS_FIELD, VoteGroup, assign_minds, mind_for
from btrans_verl.vllm.requests import parse_latent_request


def settings(**kw) -> bc.BTransSettings:
    return bc.BTransSettings(**kw)


def boxed(answer: str) -> str:
    return f"so the answer is \\boxed{{{answer}}}."


# ------------------------------------------------------------------------------------------------- minds
def verl_batch(indices, data_sources, global_steps, *, validate=None, rollout_n=None):
    """A step's prompt batch as verl 0.9.1's v1 trainer builds it (`tu.get_tensordict` of a collated batch dict,
    global_steps / validate as non-tensor data)."""
    from verl.utils import tensordict_utils as tu

    batch_dict = {"raw_prompt": np.array([[{"role": "user", "content": f"q{i}"}] for i in range(len(indices))],
                                         dtype=object),
                  "index": np.array(indices), "data_source": np.array(data_sources, dtype=object),
                  "uid": np.array([f"uid-{i}" for i in range(len(indices))], dtype=object)}
    if rollout_n is not None:
        batch_dict["__rollout_n__"] = np.array(rollout_n)
    batch = tu.get_tensordict(batch_dict)
    tu.assign_non_tensor_data(batch, "global_steps", global_steps)
    if validate is not None:
        tu.assign_non_tensor_data(batch, "validate", validate)
    return batch


ROLLOUT = OmegaConf.create({"n": 4, "val_kwargs": {"n": 2}})


def test_each_trajectory_of_a_step_gets_its_own_reproducible_mind_and_the_vllm_request_carries_it():
    s = settings(sigma=0.07, seed=5)
    batch = verl_batch([11, 12], ["gsm8k", "gsm8k"], 3)
    seeds = assign_minds(batch, s, ROLLOUT)
    assert seeds == step_seeds(5, 3, [11, 12], 4, data_sources=["gsm8k"] * 2)  # the documented derivation
    assert seeds[0][2] == trajectory_seed(5, 3, 11, 2, data_source="gsm8k")
    assert batch[STEP_SEEDS_FIELD].tolist() == seeds  # the column the workers read, row by row
    flat = sum(seeds, [])
    assert len(set(flat)) == 8 and all(0 <= x < 2**63 for x in flat)
    seed, extra = mind_for(s, validate=False, seed=seeds[0][2])
    request = parse_latent_request(extra)  # what the vLLM plugin will read
    assert (request.seed, request.sigma, request.mu, request.granularity) == (seed, 0.07, 0.0, "sequence")
    # rerun: same; next step (e.g. after resume): fresh
    assert assign_minds(verl_batch([11, 12], ["gsm8k", "gsm8k"], 3), s, ROLLOUT) == seeds
    later = sum(assign_minds(verl_batch([11, 12], ["gsm8k", "gsm8k"], 4), s, ROLLOUT), [])
    assert not set(later) & set(flat)
    # the request names the run's targets too, so vLLM shifts exactly the norms the run asked for
    narrow = mind_for(settings(targets=["final_norm", "input_layernorm"]), validate=False, seed=seed)[1]
    assert request.targets == ("input_layernorm", "post_attention_layernorm", "final_norm")
    assert parse_latent_request(narrow).targets == ("input_layernorm", "final_norm")
    # and its sigma scale: btrans.sigma_scale=weight_rms makes every request's sigma relative
    assert request.sigma_scale == "absolute"
    relative = mind_for(settings(sigma_scale="weight_rms"), validate=False, seed=seed)[1]
    assert parse_latent_request(relative).sigma_scale == "weight_rms"


def test_minds_are_unique_within_a_step_without_extra_info_index_with_repeated_rows_and_several_batches():
    s = settings(seed=1)
    # no extra_info.index: verl gives every row index 0; the same row twice; per-row n
    batch = verl_batch([0, 0, 0, 7, 7], ["gsm8k", "gsm8k", "math", "gsm8k", "gsm8k"], 2, rollout_n=[4, 4, 4, 2, 3])
    ledgers = {}
    seeds = assign_minds(batch, s, ROLLOUT, ledgers)
    assert [len(r) for r in seeds] == [4, 4, 4, 2, 3]
    assert len(set(sum(seeds, []))) == 17
    assert batch[STEP_SEEDS_FIELD][3].tolist() == seeds[3] + [NO_LATENT, NO_LATENT]  # padding past the row's n
    # reproducible, whatever the split over workers
    chunks = verl_batch([0, 0, 0, 7, 7], ["gsm8k", "gsm8k", "math", "gsm8k", "gsm8k"], 2,
                        rollout_n=[4, 4, 4, 2, 3])
    assign_minds(chunks, s, ROLLOUT, {})
    rows = [r for c in chunks.chunk(2) for r in c[STEP_SEEDS_FIELD].tolist()]
    assert [[x for x in r if x != NO_LATENT] for r in rows] == seeds
    # the same step topped up with more prompts (the same rows again): still no seed twice
    more = assign_minds(verl_batch([0, 7], ["gsm8k", "gsm8k"], 2, rollout_n=[4, 2]), s, ROLLOUT, ledgers)
    assert not set(sum(more, [])) & set(sum(seeds, [])) and len(set(sum(more, []))) == 6
    # the next step starts a fresh ledger (the old one is dropped)
    assign_minds(verl_batch([0], ["gsm8k"], 3), s, ROLLOUT, ledgers)
    assert set(ledgers) == {("train", 3)}


def test_validation_uses_the_mean_mind_by_default_and_off_sends_nothing():
    val = verl_batch([0, 1], ["gsm8k", "gsm8k"], 0, validate=True)
    assert assign_minds(val, settings(), ROLLOUT) is None and STEP_SEEDS_FIELD not in val.keys()
    assert mind_for(settings(), validate=True, seed=None) == (NO_LATENT, None)
    sampled = assign_minds(val, settings(val_mind="sample"), ROLLOUT)
    assert [len(r) for r in sampled] == [2, 2]  # val_kwargs.n
    assert sampled[0][1] == trajectory_seed(42, 0, 0, 1, data_source="gsm8k", partition="val")
    seed, extra = mind_for(settings(val_mind="sample"), validate=True, seed=sampled[0][1])
    assert seed == sampled[0][1] and extra is not None
    assert assign_minds(verl_batch([0], ["gsm8k"], 1), settings(enable=False), ROLLOUT) is None
    assert mind_for(settings(enable=False), validate=False, seed=None) == (NO_LATENT, None)
    with pytest.raises(RuntimeError, match="not assigned a mind"):  # a sampled mind needs its step's seed
        mind_for(settings(), validate=False, seed=None)


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
    from btrans_verl.tiny import write_tiny_tokenizer

    return write_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize("scheme,response,expected", [
    ("binary", boxed(r"\frac{1}{2}"), 1.0), ("binary", boxed("2"), 0.0), ("binary", "no box", 0.0),
    ("simplerl", boxed("0.5"), 1.0), ("simplerl", boxed("2"), -0.5), ("simplerl", "no box", -1.0)])
def test_btrans_reward_manager_is_registered_in_verl_and_scores_boxed_answers(compose_cfg, tokenizer, scheme, response,
                                                                               expected):
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls

    import btrans_verl.verl.plugin  # noqa: F401  (verl imports it; registers the manager lazily)

    cfg = compose_cfg("+btrans=on", f"btrans.rlvr.reward_scheme={scheme}")  # the config verl's workers receive
    manager = get_reward_manager_cls("btrans")(config=cfg, tokenizer=tokenizer, compute_score=None,
                                               reward_router_address=None, reward_model_tokenizer=None)
    out = asyncio.run(manager.run_single(_data(tokenizer, response, "0.5")))
    assert out["reward_score"] == expected
    info = out["reward_extra_info"]
    assert tuple(info) == RLVR_INFO_KEYS and info["repetition_loop"] == 0.0
    assert info["acc"] == float(expected == 1.0) and (info["answer_id"] == -1.0) == ("boxed" not in response)
    looping = "so we add the numbers " * 12 + boxed("0.5")
    looped = asyncio.run(manager.run_single(_data(tokenizer, looping, "0.5")))["reward_extra_info"]
    assert looped["repetition_loop"] == 1.0
    with pytest.raises(ValueError, match="ground_truth"):
        asyncio.run(manager.run_single(_data(tokenizer, response, None)))


# ------------------------------------------------------------------------------------------------- TTRL votes
def ttrl_manager(compose_cfg, tokenizer, n_votes: int, n_samples: int, scheme: str = "binary", *overrides: str):
    """The registered `btrans_ttrl` manager, built as verl's reward-loop worker builds it, from the whole config."""
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls

    import btrans_verl.verl.plugin  # noqa: F401  (verl imports it; registers the managers lazily)

    cfg = compose_cfg("+btrans=on", "btrans/task=ttrl", f"btrans.ttrl.n_votes={n_votes}",
                      f"btrans.ttrl.n_samples={n_samples}", f"btrans.ttrl.reward_scheme={scheme}", *overrides)
    assert cfg.reward.reward_manager.name == "btrans_ttrl"  # the task's config selects it
    return get_reward_manager_cls(cfg.reward.reward_manager.name)(
        config=cfg, tokenizer=tokenizer, compute_score=None, reward_router_address=None, reward_model_tokenizer=None)


async def _sessions(group: VoteGroup, manager, tokenizer, answers: dict[int, str | None], fail=frozenset()):
    """Run the sessions concurrently, in a shuffled finishing order (failed ones abstain), and hand the gathered
    group to the manager as the agent-loop worker hands it to a reward-loop worker."""
    calls = []

    async def score(g: VoteGroup):
        calls.append(dict(g.candidates))
        out = await manager.run_single(vote_group_data(g.candidates, g.n_votes, g.n_samples, g.reward_model))
        return out[VOTE_RESULT_KEY]

    async def one(i: int):
        await asyncio.sleep(0.001 * ((i * 7) % 5))
        if i in fail:
            group.abstain(i, 100 + i, score)
            return None
        return await group.submit(i, tokenizer.encode(answers[i]), 100 + i, score)

    results = await asyncio.gather(*(one(i) for i in range(group.n_votes)))
    await asyncio.sleep(0)
    assert len(calls) == 1 and sorted(calls[0]) == list(range(group.n_votes))  # the group, whole, once
    return results


def test_the_ttrl_manager_votes_over_the_whole_group_and_only_the_first_n_samples_are_trained(compose_cfg, tokenizer):
    manager = ttrl_manager(compose_cfg, tokenizer, n_votes=6, n_samples=4)
    group = VoteGroup(n_votes=6, n_samples=4, reward_model={"ground_truth": "0.5"})
    answers = {0: boxed(r"\frac12"), 1: boxed("3"), 2: boxed("0.5"), 3: "no answer", 4: boxed("1/2"), 5: boxed("3")}
    results = asyncio.run(_sessions(group, manager, tokenizer, answers))
    assert [r["reward_score"] for r in results] == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]  # equivalent forms win together
    infos = [r["reward_extra_info"] for r in results]
    assert [info["ttrl_voter_only"] for info in infos] == [0.0] * 4 + [1.0] * 2
    assert all(tuple(info) == TTRL_INFO_KEYS for info in infos)  # same keys on every trajectory
    assert infos[0]["ttrl_label_accuracy"] == 1.0 and infos[0]["ttrl_distinct_latents"] == 6.0


def test_a_failed_session_abstains_and_does_not_sink_its_group(compose_cfg, tokenizer):
    manager = ttrl_manager(compose_cfg, tokenizer, n_votes=4, n_samples=4)
    group = VoteGroup(n_votes=4, n_samples=4, reward_model={"ground_truth": "7"})
    results = asyncio.run(_sessions(group, manager, tokenizer, {0: boxed("7"), 2: boxed("7"), 3: boxed("8")},
                                    fail={1}))
    assert results[1] is None and [r["reward_score"] for i, r in enumerate(results) if i != 1] == [1.0, 1.0, 0.0]
    assert results[0]["reward_extra_info"]["ttrl_failed_ratio"] == 0.25


def test_all_empty_group_gives_zero_rewards_and_no_label(compose_cfg, tokenizer):
    manager = ttrl_manager(compose_cfg, tokenizer, n_votes=3, n_samples=3, scheme="simplerl")
    group = VoteGroup(n_votes=3, n_samples=3)
    results = asyncio.run(_sessions(group, manager, tokenizer, {0: "?", 1: r"\boxed{}", 2: "none"}))
    assert [r["reward_score"] for r in results] == [0.0, 0.0, 0.0]  # an empty answer never wins
    assert np.isnan(results[0]["reward_extra_info"]["ttrl_label_accuracy"])  # no ground truth: no label metric
    assert results[0]["reward_extra_info"]["ttrl_has_pseudo_label"] == 0.0


def test_ttrl_candidates_carry_their_step_consistency_when_the_run_asks_for_it(compose_cfg, tokenizer):
    manager = ttrl_manager(compose_cfg, tokenizer, 3, 2, "binary", "btrans.step_consistency=true")
    group = VoteGroup(n_votes=3, n_samples=2, reward_model={"ground_truth": "5"})
    answers = {0: "Add two and three.\nThat makes five.\n" + boxed("5"), 1: boxed("5"), 2: boxed("4")}
    results = asyncio.run(_sessions(group, manager, tokenizer, answers, fail=frozenset({2})))
    infos = [r["reward_extra_info"] for r in results if r is not None]
    assert all(tuple(i) == (*TTRL_INFO_KEYS, "step_consistency") for i in infos)
    assert 0.3 < infos[0]["step_consistency"] <= 1.0 and math.isnan(infos[1]["step_consistency"])


def test_a_session_cannot_answer_twice(compose_cfg, tokenizer):
    manager = ttrl_manager(compose_cfg, tokenizer, n_votes=2, n_samples=2)
    group = VoteGroup(n_votes=2, n_samples=2)

    async def score(g):
        return (await manager.run_single(vote_group_data(g.candidates, 2, 2, {})))[VOTE_RESULT_KEY]

    async def twice():
        first = asyncio.ensure_future(group.submit(0, tokenizer.encode(boxed("1")), 1, score))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="answered twice"):
            await group.submit(0, tokenizer.encode(boxed("1")), 1, score)
        await group.submit(1, tokenizer.encode(boxed("1")), 2, score)
        return await first

    assert asyncio.run(twice())["reward_score"] == 1.0


def test_the_ttrl_manager_scores_a_single_validation_trajectory_against_ground_truth(compose_cfg, tokenizer):
    manager = ttrl_manager(compose_cfg, tokenizer, n_votes=2, n_samples=2)
    assert asyncio.run(manager.run_single(_data(tokenizer, boxed("0.5"), "1/2")))["reward_score"] == 1.0


def test_step_consistency_is_scored_on_the_reward_workers_when_the_run_asks_for_it(compose_cfg, tokenizer):
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls

    import btrans_verl.verl.plugin  # noqa: F401

    def build(*overrides):
        cfg = compose_cfg("+btrans=on", *overrides)
        return get_reward_manager_cls(cfg.reward.reward_manager.name)(
            config=cfg, tokenizer=tokenizer, compute_score=None, reward_router_address=None,
            reward_model_tokenizer=None)

    steps = "First add two and three to get five.\nSo the sum is five.\n" + boxed("5")
    off = asyncio.run(build().run_single(_data(tokenizer, steps, "5")))["reward_extra_info"]
    assert "step_consistency" not in off  # off by default: no embedder on the reward workers
    manager = build("btrans.step_consistency=true")
    info = asyncio.run(manager.run_single(_data(tokenizer, steps, "5")))["reward_extra_info"]
    assert tuple(info) == (*RLVR_INFO_KEYS, "step_consistency") and 0.3 < info["step_consistency"] <= 1.0
    one_line = asyncio.run(manager.run_single(_data(tokenizer, boxed("5"), "5")))["reward_extra_info"]
    assert math.isnan(one_line["step_consistency"])  # a single step has no consecutive pair
    m = batch_metrics([1, 2], ["a", "a"], [{"reward_extra_info": info}, {"reward_extra_info": one_line}], "rlvr")
    assert m["btrans/step_consistency"] == pytest.approx(info["step_consistency"])  # over responses of >= 2 steps


# ------------------------------------------------------------------------------------------------- metrics, guard
def test_population_metrics_of_a_batch():
    seeds = [11, 12, 13, NO_LATENT, 21, 21]
    uids = ["a", "a", "a", "b", "c", "c"]
    infos = [{"reward_extra_info": {"answer_id": x, "repetition_loop": float(x == 5.0)}}
             for x in (1.0, 2.0, 1.0, -1.0, 5.0, 5.0)]
    m = batch_metrics(seeds, uids, infos, "rlvr")
    assert m["btrans/degenerate"] == pytest.approx(2 / 6)
    graded = [{"reward_extra_info": {"answer_id": x, "acc": c}}
              for x, c in ((1.0, 1.0), (2.0, 0.0), (2.0, 0.0), (-1.0, 0.0), (5.0, 0.0), (6.0, 1.0))]
    g = batch_metrics(seeds, uids, graded, "rlvr")
    # group a: right answer in it, majority (2) wrong; b: no answer; c: a 1-1 tie of a wrong and a right answer
    assert g["btrans/pass@n"] == pytest.approx((1 + 0 + 1) / 3) and g["btrans/maj@n"] == pytest.approx(0.5 / 3)
    assert m["btrans/trajectories"] == 6 and m["btrans/trajectories_with_latent"] == 5
    assert m["btrans/distinct_latents"] == 4  # 21 twice: a repeated mind shows here
    assert m["btrans/distinct_latents_per_group"] == pytest.approx((3 + 0 + 1) / 3)
    assert m["btrans/distinct_answers_per_group"] == pytest.approx((2 + 0 + 1) / 3)
    assert m["btrans/scored_by_btrans"] == 1.0
    assert batch_metrics(seeds, uids, [{"reward_extra_info": {"acc": 1.0}}] * 6, "rlvr")["btrans/scored_by_btrans"] == 0
    ttrl = [{"reward_extra_info": {"ttrl_label_accuracy": v, "ttrl_majority_ratio": 0.5, "ttrl_pass_at_k": 1.0,
                                   "ttrl_distinct_answers": 2.0}} for v in (1.0, 1.0, 1.0, float("nan"), 0.0, 0.0)]
    t = batch_metrics(seeds, uids, ttrl, "ttrl")
    assert t["ttrl/label_accuracy"] == pytest.approx(0.5) and t["ttrl/pass@k"] == 1.0
    assert t["btrans/distinct_answers_per_group"] == 2.0


def test_informative_groups_are_those_with_a_grpo_advantage():
    uids = ["a", "a", "b", "b", "c", "c"]
    rlvr = [{"reward_extra_info": {"score": x, "answer_id": 1.0}} for x in (1.0, 0.0, 1.0, 1.0, 0.0, 0.0)]
    assert batch_metrics([1, 2, 3, 4, 5, 6], uids, rlvr, "rlvr")["btrans/informative_groups"] == pytest.approx(1 / 3)
    ttrl = [{"reward_extra_info": {"acc": x, "ttrl_majority_ratio": 0.5}} for x in (1.0, 0.0, 1.0, 0.0, 1.0, 1.0)]
    assert batch_metrics([1, 2, 3, 4, 5, 6], uids, ttrl, "ttrl")["btrans/informative_groups"] == pytest.approx(2 / 3)


def test_guard_refuses_a_silent_no_op_and_a_contaminated_baseline():
    check_latents_applied(True, 8, {"requests_with_latent": 12, "tokens_shifted": 300}, servers=1)
    with pytest.raises(LatentNotAppliedError, match="did not reach the model"):
        check_latents_applied(True, 8, {"requests_with_latent": 0, "tokens_shifted": 0}, servers=1)
    with pytest.raises(LatentNotAppliedError, match="baseline"):
        check_latents_applied(False, 0, {"requests_with_latent": 1, "tokens_shifted": 5}, servers=1)
    with pytest.raises(LatentNotAppliedError, match="no vLLM rollout server"):
        check_latents_applied(True, 8, {}, servers=0)
