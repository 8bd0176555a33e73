"""verl's rollout with one mind per trajectory: the agent-loop manager that `+btrans=on` selects.

    python -m verl.trainer.main_ppo +btrans=on ...            # conf/btrans/on.yaml sets
    actor_rollout_ref.rollout.agent.agent_loop_manager_class=btrans_verl.verl.rollout.BTransAgentLoopManager

verl 0.9.1's v1 trainer hands each step's prompts to an agent-loop manager, whose Ray workers start
`rollout.n` sessions per prompt (`session_id` 0..n-1) and put every finished trajectory into the
TransferQueue. `BTransAgentLoopWorker` changes three things, all inside the worker:

1. Hypothesis sampling. Each session gets its own sampling-params dict (verl shares one across the n sessions)
   carrying the latent of its mind, `extra_args={"btrans": {seed, sigma, mu, granularity, targets,
   sigma_scale}}` (the vLLM plugin's per-request arguments, `btrans_verl.vllm.requests`). The seeds are
   assigned by the manager, which sees the whole step's batch before splitting it over the workers
   (`assign_minds`, column `btrans_seeds`):
   `btrans_verl.seeds.step_seeds` over (btrans.seed, train|val, global step, data_source, extra_info.index,
   sample): reproducible, fresh after a resume, and distinct within a step by construction, also on a dataset
   without `extra_info.index` (verl gives every row index 0) or with a repeated row.
2. The seed travels with the trajectory: the field `btrans_seed` (int; -1 = no latent, i.e. the mean mind
   with mu = 0) is stored with every trajectory in the TransferQueue, so any trajectory's mind can be replayed
   with `btrans_verl.hf.attach(..., mode="replay")`.
3. TTRL (btrans.task=ttrl). All n_votes sessions of a prompt run in the same worker, so they meet here: each
   finished session adds its response to its prompt's `VoteGroup` and waits; when every session has answered
   or failed, the group is handed whole to one of verl's reward-loop workers, whose `btrans_ttrl` reward manager
   votes and returns every candidate's reward (`reward_managers.py`). Each session's reward is set before verl's
   own post-processing (which then skips per-trajectory scoring). Sessions with session_id >= n_samples vote
   but are not trained on (they are not put into the TransferQueue). A failed session abstains: it does not
   sink its group.

The workers are named `btrans_agent_loop_worker_<i>_<hex>` on the Ray dashboard (`NamedActorClass`, through
verl's `agent_loop_workers_class` hook).

Validation rollouts follow `btrans.val_mind`: "mean" (no latent when mu = 0) or "sample" (seeds from the
"val" partition).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import ray
import torch
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ, AgentLoopWorkerTQ

from btrans_verl.seeds import StepLedger, step_seeds
from btrans_verl.verl.exploration import controller_for
from btrans_verl.verl.reward_managers import NO_LATENT, SEED_FIELD, TTRL_MANAGER, VOTE_RESULT_KEY, vote_group_data
from btrans_verl.verl.settings import AGENT_LOOP_MANAGER, BTransSettings, settings_from_run_config
from btrans_verl.vllm.requests import NESTED_KEY, latent_args

logger = logging.getLogger("btrans_verl.verl.rollout")

STEP_SEEDS_FIELD = "btrans_seeds"  # batch column set by the manager: int64 [prompts, max n], -1 past a row's n
STEP_SIGMA_FIELD = "btrans_step_sigma"  # batch column set by the manager with adaptive sigma: float64 [prompts]
SIGMA_FIELD = "btrans_sigma"  # stored with every trajectory: the sigma its mind was drawn with (0.0: no latent)


def samples_minds(settings: BTransSettings, validate: bool) -> bool:
    """Whether the trajectories of a rollout each get a sampled mind (else: the mean mind, or B-Trans off)."""
    return settings.enable and not (validate and settings.val_mind == "mean")


def mind_for(settings: BTransSettings, *, validate: bool, seed: int | None,
             sigma: float | None = None) -> tuple[int, dict[str, Any] | None]:
    """(btrans_seed, extra_args) of one trajectory, given the seed its step assigned it (`assign_minds`; None
    when it samples no mind) and the step's sigma (adaptive sigma; default btrans.sigma). extra_args is None
    when the request needs no latent."""
    if not settings.enable:
        return NO_LATENT, None
    if not samples_minds(settings, validate):
        if settings.mu == 0.0:
            return NO_LATENT, None
        # the mean mind with a non-zero mean shift: z = mu exactly (sigma 0), any seed
        return NO_LATENT, latent_args(0, sigma=0.0, mu=settings.mu, granularity=settings.granularity,
                                      targets=settings.targets)  # sigma 0: the scale does not matter
    if seed is None or seed < 0:
        raise RuntimeError(f"B-Trans: this trajectory was not assigned a mind (seed {seed!r}): the step's batch did "
                           f"not pass through {AGENT_LOOP_MANAGER}.generate_sequences")
    return seed, latent_args(seed, sigma=settings.sigma if sigma is None else sigma, mu=settings.mu,
                             granularity=settings.granularity, targets=settings.targets,
                             sigma_scale=settings.sigma_scale)


def assign_minds(batch, settings: BTransSettings, rollout_config,
                 ledgers: dict[tuple[str, int], StepLedger] | None = None) -> list[list[int]] | None:
    """Give every trajectory of one step's batch (verl's prompt TensorDict, before the manager splits it) its
    mind: `step_seeds` over the batch's rows (`index`, `data_source`, per-row `__rollout_n__` or rollout.n /
    val_kwargs.n), written into the column `btrans_seeds` (int64 [prompts, max n], -1 padding). `ledgers`
    (partition, global step) -> what earlier batches of that step got, so that a step submitted in several
    batches stays unique (only the latest step of each partition is kept). Returns the seeds (None when the
    rollout samples no mind)."""
    validate = bool(batch["validate"]) if "validate" in batch.keys() else False
    if not samples_minds(settings, validate):
        return None
    rows = len(batch)
    default_n = rollout_config.val_kwargs.n if validate else rollout_config.n
    counts = [int(x) for x in _column(batch, "__rollout_n__", [default_n] * rows)]
    indices = [int(x) for x in _column(batch, "index", [0] * rows)]
    sources = [str(x) for x in _column(batch, "data_source", [""] * rows)]
    partition, global_step = ("val" if validate else "train"), int(batch["global_steps"])
    ledger = None
    if ledgers is not None:
        for key in [k for k in ledgers if k[0] == partition and k[1] != global_step]:
            del ledgers[key]
        ledger = ledgers.setdefault((partition, global_step), StepLedger())
    seeds = step_seeds(settings.seed, global_step, indices, counts, data_sources=sources, partition=partition,
                       ledger=ledger)
    table = torch.full((rows, max(counts, default=1)), NO_LATENT, dtype=torch.int64)  # [prompts, max n]
    for row, row_seeds in enumerate(seeds):
        table[row, : len(row_seeds)] = torch.tensor(row_seeds, dtype=torch.int64)
    batch[STEP_SEEDS_FIELD] = table
    return seeds


def _column(batch, key: str, default: list) -> list:
    """One per-row column of a verl batch TensorDict as a list (tensor or non-tensor stack); default if absent."""
    if key not in batch.keys():
        return default
    value = batch[key]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    values = list(value.tolist() if hasattr(value, "tolist") else value)
    if len(values) != len(batch):
        raise ValueError(f"B-Trans: batch column {key!r} has {len(values)} entries for {len(batch)} prompts")
    return values


@dataclass
class VoteGroup:
    """The n_votes sessions of one TTRL prompt, gathered in one worker's event loop and handed whole to the
    `btrans_ttrl` reward manager, which votes (`reward_managers.py`). Each session waits for the group's result."""

    n_votes: int
    n_samples: int
    reward_model: dict = field(default_factory=dict)
    candidates: dict[int, tuple[list[int] | None, int]] = field(default_factory=dict)  # session -> (ids|None, seed)
    result: asyncio.Future | None = None

    def _future(self) -> asyncio.Future:
        if self.result is None:
            self.result = asyncio.get_running_loop().create_future()
        return self.result

    async def submit(self, session_id: int, response_ids: list[int] | None, seed: int, score) -> dict:
        """Record one session's response (None = failed) and wait for the group's rewards. The last session in
        calls `await score(self)`, which returns one {reward_score, reward_extra_info} per session (in session
        order); returns this session's."""
        future = self._future()
        if session_id in self.candidates:
            raise RuntimeError(f"TTRL group: session {session_id} answered twice")
        self.candidates[session_id] = (response_ids, seed)
        if len(self.candidates) == self.n_votes and not future.done():
            try:
                rewards = await score(self)
                if len(rewards) != self.n_votes:
                    raise RuntimeError(f"TTRL group: the reward manager returned {len(rewards)} rewards for "
                                       f"{self.n_votes} candidates")
                future.set_result(rewards)
            except BaseException as e:  # every waiting session must learn about it
                future.set_exception(e)
        return (await asyncio.shield(future))[session_id]

    def abstain(self, session_id: int, seed: int, score) -> None:
        """A session failed before answering: it abstains (a failed vote), so its siblings are not kept waiting."""
        if session_id not in self.candidates:
            self._future()
            task = asyncio.get_running_loop().create_task(self.submit(session_id, None, seed, score))
            task.add_done_callback(_ignore_result)


def _ignore_result(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()  # consumed: the failure is reported by the session that failed


class _Worker(AgentLoopWorkerTQ.__ray_actor_class__):
    """AgentLoopWorkerTQ with per-trajectory minds and TTRL vote groups (see the module docstring)."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self.btrans = settings_from_run_config(config)
        self.vote_groups: dict[str, VoteGroup] = {}
        logger.info("B-Trans agent-loop worker: %s", self.btrans.to_dict())

    async def _run_prompt(self, prompt: dict, sampling_params: dict, trajectory: dict, trace: bool = False):
        if self.btrans.task != "ttrl" or trajectory["validate"]:
            return await super()._run_prompt(prompt, sampling_params, trajectory, trace)
        if self.reward_loop_worker_handles is None:
            raise RuntimeError("B-Trans TTRL: verl started no reward-loop workers, so the btrans_ttrl reward manager "
                               "cannot vote (the v1 trainer starts them; see reward.num_workers)")
        uid = prompt["uid"]
        n_votes = int(prompt.get("__rollout_n__", self.config.actor_rollout_ref.rollout.n))
        self.vote_groups[uid] = VoteGroup(n_votes=n_votes, n_samples=min(self.btrans.ttrl.n_samples, n_votes),
                                          reward_model=dict(prompt.get("reward_model") or {}))
        try:
            return await super()._run_prompt(prompt, sampling_params, trajectory, trace)
        finally:
            self.vote_groups.pop(uid, None)

    async def _run_agent_loop(self, sampling_params: dict, trajectory: dict, *, agent_name: str,
                              trace: bool = True, **kwargs):
        validate = bool(trajectory["validate"])
        step_seeds_row = kwargs.pop(STEP_SEEDS_FIELD, None)  # [max n]; not stored with the trajectory
        seed = None if step_seeds_row is None else int(step_seeds_row[int(kwargs["session_id"])])
        step_sigma = kwargs.pop(STEP_SIGMA_FIELD, None)  # adaptive sigma: this step's; not stored as such
        seed, extra = mind_for(self.btrans, validate=validate, seed=seed,
                               sigma=None if step_sigma is None else float(step_sigma))
        params = dict(sampling_params)  # verl shares one dict across the n sessions of a prompt
        if extra is not None:
            if NESTED_KEY in (params.get("extra_args") or {}):
                raise ValueError(f"sampling params already carry extra_args[{NESTED_KEY!r}]")
            params["extra_args"] = {**(params.get("extra_args") or {}), **extra}
        kwargs[SEED_FIELD] = seed
        kwargs[SIGMA_FIELD] = float(extra[NESTED_KEY]["sigma"]) if extra is not None else 0.0
        group = None if validate else self.vote_groups.get(kwargs["uid"])
        try:
            return await super()._run_agent_loop(params, trajectory, agent_name=agent_name, trace=trace, **kwargs)
        except BaseException:
            if group is not None:
                group.abstain(int(kwargs["session_id"]), seed, self._score_vote_group)
            raise

    async def _agent_loop_postprocess(self, output, validate, **kwargs):
        group = None if validate else self.vote_groups.get(kwargs["uid"])
        if group is not None:
            session_id = int(kwargs["session_id"])
            final = output[-1] if isinstance(output, list) else output
            result = await group.submit(session_id, list(final.response_ids), int(kwargs[SEED_FIELD]),
                                        self._score_vote_group)
            final.reward_score, final.extra_fields["reward_extra_info"] = result["reward_score"], \
                result["reward_extra_info"]  # set: verl's own per-trajectory scoring is skipped
            if session_id >= group.n_samples:
                return None  # a voter only: not trained on
        return await super()._agent_loop_postprocess(output, validate, **kwargs)

    async def _score_vote_group(self, group: VoteGroup) -> list[dict]:
        """Hand the whole group to a reward-loop worker, whose `btrans_ttrl` manager votes."""
        handle = random.choice(self.reward_loop_worker_handles)
        out = await handle.compute_score.remote(vote_group_data(group.candidates, group.n_votes, group.n_samples,
                                                                group.reward_model))
        if not isinstance(out, dict) or VOTE_RESULT_KEY not in out:
            raise RuntimeError(f"B-Trans TTRL: the reward manager {self.config.reward.reward_manager.name!r} did not "
                               f"vote (got {type(out).__name__}); task ttrl needs reward.reward_manager.name="
                               f"{TTRL_MANAGER!r}")
        return out[VOTE_RESULT_KEY]


BTransAgentLoopWorker = ray.remote(_Worker)


class NamedActorClass:
    """An actor class whose `.options(name=...)` gets a prefix: verl names its agent-loop workers
    `agent_loop_worker_<i>_<hex>` in `_init_agent_loop_workers`; through its hook `agent_loop_workers_class` ours
    show up as `btrans_agent_loop_worker_<i>_<hex>` on the Ray dashboard, and verl's body stays verl's."""

    def __init__(self, actor_class, prefix: str):
        self.actor_class, self.prefix = actor_class, prefix

    def options(self, **options):
        if "name" in options:
            options["name"] = self.prefix + options["name"]
        return self.actor_class.options(**options)

    def __getattr__(self, name):
        return getattr(self.actor_class, name)


class BTransAgentLoopManager(AgentLoopManagerTQ):
    """verl's v1 agent-loop manager with `BTransAgentLoopWorker`s, named `btrans_agent_loop_worker_<i>` on the
    Ray dashboard. Selected by conf/btrans/on.yaml (and off.yaml: the baseline runs the same code with
    btrans.enable=false, so the two differ only in the latent)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.agent_loop_workers_class = NamedActorClass(BTransAgentLoopWorker, "btrans_")
        self.btrans = settings_from_run_config(self.config)
        self.seed_ledgers: dict[tuple[str, int], StepLedger] = {}

    def generate_sequences(self, prompts):
        seeds = assign_minds(prompts, self.btrans, self.rollout_config, self.seed_ledgers)  # before the split
        controller = controller_for(self.btrans)
        validate = bool(prompts["validate"]) if "validate" in prompts.keys() else False
        if controller is not None and seeds is not None and not validate:
            prompts[STEP_SIGMA_FIELD] = torch.full((len(prompts),), controller.sigma, dtype=torch.float64)
        return super().generate_sequences(prompts)

