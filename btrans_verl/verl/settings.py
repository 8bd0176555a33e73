"""B-Trans run settings: the typed, validated view of the `btrans:` config node.

Users select B-Trans with Hydra config groups shipped in `conf/` (the package `btrans_verl.conf`, found by the
search-path plugin in `hydra_plugins/btrans_verl_searchpath`):

    python -m verl.trainer.main_ppo +btrans=on  <overrides>                      # B-Trans, task rlvr
    python -m verl.trainer.main_ppo +btrans=off <overrides>                      # the baseline, all else equal
    python -m verl.trainer.main_ppo +btrans=on btrans/task=ttrl <overrides>      # label-free TTRL
    python -m verl.trainer.main_ppo +btrans=on btrans/lora=on <overrides>        # LoRA training

All B-Trans settings live under the single top-level node `btrans:`, which verl never converts to one of its
dataclasses (so it may hold keys verl does not know). `BTransSettings.from_config(cfg.btrans)` turns it into
a dataclass and validates it; `validate_run_config(cfg)` also checks it against verl's own keys. The config
groups register `ValidateRunConfig` as a Hydra callback, so that check runs in the driver process, after
composition and before verl's task function (and therefore before Ray starts). `--cfg job` only prints the
composed config and runs no callback.

Every `ValueError` names the offending key (`btrans.sigma`, `actor_rollout_ref.rollout.n`, ...). The latent
fields are validated by `btrans_verl.latent.LatentConfig`, the single owner of their rules.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from btrans_verl.latent import DEFAULT_TARGETS, NORM_KINDS, LatentConfig, _check_seed

try:  # Hydra is a dependency; the import only fails in stripped-down environments
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object

__all__ = [
    "TASKS",
    "VAL_MINDS",
    "RLVRSettings",
    "TTRLSettings",
    "AdaptiveSigmaSettings",
    "BTransSettings",
    "validate_run_config",
    "settings_from_run_config",
    "check_verl_plugin_loaded",
    "ValidateRunConfig",
]

logger = logging.getLogger(__name__)

TASKS = ("rlvr", "ttrl")
VAL_MINDS = ("mean", "sample")

# verl advantage estimators that normalise within a prompt's group of responses: a group of 1 has no signal.
GROUP_ADV_ESTIMATORS = ("grpo", "grpo_vectorized", "grpo_passk", "rloo", "rloo_vectorized", "opo", "gdpo",
                        "reinforce_plus_plus_baseline")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_reward_scheme(key: str, name) -> str:
    from btrans_verl.rewards.schemes import available_schemes  # light: no math-verify import at module level

    known = available_schemes()
    if not isinstance(name, str) or name not in known:
        raise ValueError(f"{key} must be a registered reward scheme {known}, got {name!r}")
    return name


def _check_keys(prefix: str, data: Mapping, cls) -> None:
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ValueError(f"{prefix}: unknown key(s) {unknown}; known: {known}")


@dataclass
class RLVRSettings:
    """Settings of the `rlvr` task (reinforcement learning with verifiable rewards, SimpleRL-Zoo style).
    Config node `btrans.rlvr`, set by the config group `btrans/task=rlvr`.

    Each key's meaning and default: conf/btrans/task/rlvr.yaml (the one place they are written).
    """

    reward_scheme: str = "binary"

    def __post_init__(self):
        self.reward_scheme = _check_reward_scheme("btrans.rlvr.reward_scheme", self.reward_scheme)


@dataclass
class TTRLSettings:
    """Settings of the `ttrl` task (test-time RL: label-free rewards by majority vote, TTRL style).
    Config node `btrans.ttrl`, set by the config group `btrans/task=ttrl`.

    Each key's meaning and default: conf/btrans/task/ttrl.yaml (the one place they are written).
    """

    n_votes: int = 64
    n_samples: int = 32
    reward_scheme: str = "binary"

    def __post_init__(self):
        for name in ("n_votes", "n_samples"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f"btrans.ttrl.{name} must be a positive integer, got {v!r}")
        if self.n_votes < self.n_samples:
            raise ValueError(f"btrans.ttrl.n_votes ({self.n_votes}) must be >= btrans.ttrl.n_samples "
                             f"({self.n_samples}): every trained candidate is one of the voters")
        self.reward_scheme = _check_reward_scheme("btrans.ttrl.reward_scheme", self.reward_scheme)


@dataclass
class AdaptiveSigmaSettings:
    """Adaptive sigma (config node `btrans.adaptive_sigma`, off by default): the controller of
    `btrans_verl.verl.exploration` steers sigma toward a target share of informative groups.

    Each key's meaning and default: conf/btrans/on.yaml (the one place they are written).
    """

    enable: bool = False
    target: float = 0.5
    gain: float = 1.0
    sigma_min: float = 0.005
    sigma_max: float = 0.5

    def __post_init__(self):
        if not isinstance(self.enable, bool):
            raise ValueError(f"btrans.adaptive_sigma.enable must be true or false, got {self.enable!r}")
        for name in ("target", "gain", "sigma_min", "sigma_max"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"btrans.adaptive_sigma.{name} must be a finite number, got {v!r}")
            setattr(self, name, float(v))
        if not 0.0 < self.target < 1.0:
            raise ValueError(f"btrans.adaptive_sigma.target must be in (0, 1), got {self.target!r}")
        if self.gain <= 0.0:
            raise ValueError(f"btrans.adaptive_sigma.gain must be > 0, got {self.gain!r}")
        if not 0.0 < self.sigma_min <= self.sigma_max:
            raise ValueError(f"btrans.adaptive_sigma needs 0 < sigma_min <= sigma_max, got sigma_min="
                             f"{self.sigma_min!r}, sigma_max={self.sigma_max!r}")


@dataclass
class BTransSettings:
    """Everything B-Trans adds to a verl run (config node `btrans`). Validated at construction.

    What each key means, and its default, is written once: in conf/btrans/on.yaml (task keys in
    conf/btrans/task/*.yaml), where users read it. The defaults here are the same values (a test composes the
    configs and compares); `seed` is `${actor_rollout_ref.rollout.seed}` there, 42 in verl and here.

    `latent` (not a config key) is the validated `LatentConfig` built from enable / mu / sigma / targets /
    granularity / sigma_scale: the latent's own rules have one owner, `btrans_verl.latent`.
    """

    enable: bool = True
    mu: float = LatentConfig.mu
    sigma: float = LatentConfig.sigma
    targets: tuple[str, ...] = DEFAULT_TARGETS
    granularity: str = LatentConfig.granularity
    sigma_scale: str = LatentConfig.sigma_scale
    val_mind: str = "mean"
    step_consistency: bool = False
    seed: int = 42
    task: str = "rlvr"
    rlvr: RLVRSettings = field(default_factory=RLVRSettings)
    ttrl: TTRLSettings = field(default_factory=TTRLSettings)
    adaptive_sigma: AdaptiveSigmaSettings = field(default_factory=AdaptiveSigmaSettings)
    latent: LatentConfig = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.enable, bool):
            raise ValueError(f"btrans.enable must be true or false, got {self.enable!r}")
        # The latent's own rules (finite mu / sigma, sigma >= 0, known targets, granularity) live in LatentConfig;
        # its errors already name `btrans.<key>`.
        self.latent = LatentConfig(enable=self.enable, mu=self.mu, sigma=self.sigma, targets=self.targets,
                                   granularity=self.granularity, sigma_scale=self.sigma_scale)
        self.mu, self.sigma, self.targets = self.latent.mu, self.latent.sigma, self.latent.targets
        per_head = [t for t in self.targets if NORM_KINDS[t].per_head]
        if per_head:
            raise ValueError(f"btrans.targets: per-head norms {per_head} are not supported in verl runs: the "
                             f"rollout engines wrap the hidden-size norms only (vLLM users can opt in with "
                             f"additional_config['btrans']['targets'])")
        if self.val_mind not in VAL_MINDS:
            raise ValueError(f"btrans.val_mind must be one of {VAL_MINDS}, got {self.val_mind!r}")
        if not isinstance(self.step_consistency, bool):
            raise ValueError(f"btrans.step_consistency must be true or false, got {self.step_consistency!r}")
        _check_seed(self.seed, "btrans.seed")
        if self.task not in TASKS:
            raise ValueError(f"btrans.task must be one of {TASKS}, got {self.task!r}")
        if not isinstance(self.rlvr, RLVRSettings):
            raise ValueError(f"btrans.rlvr must be RLVRSettings, got {type(self.rlvr).__name__}")
        if not isinstance(self.ttrl, TTRLSettings):
            raise ValueError(f"btrans.ttrl must be TTRLSettings, got {type(self.ttrl).__name__}")
        adaptive = self.adaptive_sigma
        if not isinstance(adaptive, AdaptiveSigmaSettings):
            raise ValueError(f"btrans.adaptive_sigma must be AdaptiveSigmaSettings, got {type(adaptive).__name__}")
        if adaptive.enable and not self.enable:
            raise ValueError("btrans.adaptive_sigma.enable=true needs btrans.enable=true: a run without latents has "
                             "no sigma to adapt")
        if adaptive.enable and not adaptive.sigma_min <= self.sigma <= adaptive.sigma_max:
            raise ValueError(f"btrans.sigma ({self.sigma!r}) must lie in [btrans.adaptive_sigma.sigma_min, sigma_max] "
                             f"= [{adaptive.sigma_min!r}, {adaptive.sigma_max!r}]: the controller starts from it")

    @classmethod
    def from_config(cls, node) -> BTransSettings:
        """Build from the composed `btrans` node (an OmegaConf DictConfig, interpolations resolved against the
        whole config, or a plain mapping). Unknown keys are errors; absent keys take the defaults above."""
        data = _to_plain(node, "btrans")
        _check_keys("btrans", data, cls)
        kwargs = dict(data)
        for name, sub in (("rlvr", RLVRSettings), ("ttrl", TTRLSettings), ("adaptive_sigma", AdaptiveSigmaSettings)):
            if name in kwargs:
                sub_data = kwargs[name]
                if sub_data is None:
                    sub_data = {}
                if not isinstance(sub_data, Mapping):
                    raise ValueError(f"btrans.{name} must be a mapping, got {sub_data!r}")
                _check_keys(f"btrans.{name}", sub_data, sub)
                kwargs[name] = sub(**sub_data)
        if isinstance(kwargs.get("targets"), list):
            kwargs["targets"] = tuple(kwargs["targets"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The settings as the plain `btrans` node (what `from_config` reads back)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        d["targets"] = list(self.targets)
        d["rlvr"] = dataclasses.asdict(self.rlvr)
        d["ttrl"] = dataclasses.asdict(self.ttrl)
        d["adaptive_sigma"] = dataclasses.asdict(self.adaptive_sigma)
        return d


def _to_plain(node, where: str) -> dict:
    if node is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf
        from omegaconf.errors import OmegaConfBaseException
    except ImportError:  # pragma: no cover
        DictConfig = OmegaConf = None
        OmegaConfBaseException = Exception
    if DictConfig is not None and isinstance(node, DictConfig):
        try:
            data = OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or "?"
            raise ValueError(f"{where}: cannot read {key}: {type(e).__name__}: {e}") from e
    elif isinstance(node, Mapping):
        data = dict(node)
    else:
        raise ValueError(f"{where} must be a mapping, got {type(node).__name__}")
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {data!r}")
    return data


def _select(cfg, key: str, default=None):
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        try:
            return OmegaConf.select(cfg, key, default=default, throw_on_missing=False)
        except Exception as e:  # an interpolation that does not resolve
            raise ValueError(f"{key}: {type(e).__name__}: {e}") from e
    node = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


# The components conf/btrans/on.yaml selects. Replacing any of them with B-Trans on would drop the latents (the
# manager sends them to vLLM) or the guard that proves they were applied (the sampler), so that is refused.
AGENT_LOOP_MANAGER = "btrans_verl.verl.rollout.BTransAgentLoopManager"
SAMPLER_PATH, SAMPLER_NAME = "pkg://btrans_verl.verl.replay_buffer", "BTransReplayBuffer"
# The reward manager of each task (registered by btrans_verl.verl.reward_managers; conf/btrans/task/*.yaml sets it).
REWARD_MANAGERS = {"rlvr": "btrans", "ttrl": "btrans_ttrl"}


def validate_run_config(cfg) -> BTransSettings | None:
    """Check a composed verl config (DictConfig, with or without Hydra's `hydra` node) for B-Trans.

    Returns the validated `BTransSettings`, or None when the config has no `btrans` node (B-Trans not
    selected). Raises ValueError naming the offending key:

    * every `BTransSettings` rule (`btrans.sigma`, `btrans.targets`, `btrans.task`, `btrans.ttrl.n_votes`, ...);
    * `btrans.enable` missing: the node must come from `+btrans=on` or `+btrans=off`;
    * `actor_rollout_ref.rollout.name` must be "vllm" when B-Trans is enabled (the latent is applied inside
      vLLM; verl's other rollouts are not served);
    * task ttrl: `actor_rollout_ref.rollout.n` must equal `btrans.ttrl.n_votes` (the rollout generates all the
      voters), and a group advantage estimator (GRPO, RLOO, ...) needs `btrans.ttrl.n_samples` >= 2;
    * task rlvr: a group advantage estimator needs `actor_rollout_ref.rollout.n` >= 2;
    * the rollout engines' opt-in (`actor_rollout_ref.rollout.engine_kwargs.vllm.additional_config.btrans`, set
      by conf/btrans/on.yaml) must agree with btrans.enable / targets / granularity (`_check_engine_opt_in`);
    * vLLM engine layouts the latent cannot follow (`_check_engine_layout`): dual batch overlap
      (`actor_rollout_ref.rollout.engine_kwargs.vllm.enable_dbo`), and speculative decoding
      (`...engine_kwargs.vllm.speculative_config`, or `actor_rollout_ref.model.mtp` with `enable_rollout`)
      with `btrans.granularity=token`. Tensor, pipeline and data parallelism are supported.

    Meant to run in the driver before Ray starts (the Hydra callback `ValidateRunConfig` does that).
    """
    node = _select(cfg, "btrans")
    if node is None:
        return None
    if "enable" not in node:
        raise ValueError("btrans.enable is not set: select B-Trans with `+btrans=on` or `+btrans=off` "
                         "(the config groups set every btrans key)")
    settings = BTransSettings.from_config(node)

    rollout_name = _select(cfg, "actor_rollout_ref.rollout.name")
    if settings.enable and rollout_name != "vllm":
        raise ValueError(f"actor_rollout_ref.rollout.name must be 'vllm' when btrans.enable is true "
                         f"(B-Trans applies the latent inside vLLM), got {rollout_name!r}")

    n = _select(cfg, "actor_rollout_ref.rollout.n")
    adv = _select(cfg, "algorithm.adv_estimator")
    group_adv = str(adv) in GROUP_ADV_ESTIMATORS
    if settings.task == "ttrl":
        if n != settings.ttrl.n_votes:
            raise ValueError(f"actor_rollout_ref.rollout.n ({n}) must equal btrans.ttrl.n_votes "
                             f"({settings.ttrl.n_votes}) for task ttrl: the rollout samples every voter")
        if group_adv and settings.ttrl.n_samples < 2:
            raise ValueError(f"btrans.ttrl.n_samples ({settings.ttrl.n_samples}) must be >= 2 with "
                             f"algorithm.adv_estimator={adv}: a group of one has no advantage signal")
    elif group_adv and (not _is_int(n) or n < 2):
        raise ValueError(f"actor_rollout_ref.rollout.n ({n}) must be >= 2 with algorithm.adv_estimator={adv}: "
                         f"a group of one has no advantage signal")

    if _select(cfg, "data.shuffle") and _select(cfg, "data.seed") is None:
        logger.warning("B-Trans: data.shuffle is on and data.seed is null: the prompt order (hence which prompt "
                       "gets which latent seeds at a step) differs between reruns; set data.seed to reproduce")
    temperature = _select(cfg, "actor_rollout_ref.rollout.temperature", 1.0)
    if settings.enable and isinstance(temperature, (int, float)) and not math.isclose(temperature, 1.0):
        logger.warning("B-Trans: actor_rollout_ref.rollout.temperature is %s, not 1.0 (the recipes use 1.0)",
                       temperature)
    _check_wiring(cfg, settings)
    _check_engine_opt_in(cfg, settings)
    if settings.enable:
        _check_engine_layout(cfg, settings)

    return settings


ENGINE_OPT_IN = "actor_rollout_ref.rollout.engine_kwargs.vllm.additional_config.btrans"


def _check_engine_opt_in(cfg, settings: BTransSettings) -> None:
    """The rollout engines' B-Trans settings (`btrans_verl.vllm.settings`, derived from btrans.* by
    conf/btrans/on.yaml) must say what btrans.* says: opted in with the run's targets and granularity when B-Trans
    is on (or the rollout would refuse every latent, or wrap other norms), stock engines when it is off (the
    baseline runs the plain model at stock speed)."""
    from btrans_verl.vllm.settings import parse_engine_settings

    raw = _select(cfg, ENGINE_OPT_IN)
    try:
        engine = parse_engine_settings(_plain(raw))
    except ValueError as e:
        raise ValueError(f"{ENGINE_OPT_IN}: {e}") from None
    if not settings.enable:
        if engine is not None:
            raise ValueError(f"{ENGINE_OPT_IN} opts the rollout engines in to B-Trans while btrans.enable is false: "
                             f"the baseline must run stock engines (set {ENGINE_OPT_IN}.enable=false or leave it "
                             f"to +btrans=off), got {raw!r}")
        return
    if engine is None:
        raise ValueError(f"{ENGINE_OPT_IN} does not opt the rollout engines in to B-Trans (got {raw!r}): every "
                         f"latent would be refused; leave it to +btrans=on, which derives it from btrans.*")
    if set(engine.targets) != set(settings.targets) or engine.granularity != settings.granularity:
        raise ValueError(f"{ENGINE_OPT_IN} ({engine.describe()}) differs from btrans.targets / btrans.granularity "
                         f"({list(settings.targets)}, {settings.granularity}): leave it to +btrans=on, which derives "
                         f"it from btrans.*")


def _plain(value):
    """An OmegaConf node as plain Python (interpolations resolved); anything else unchanged."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _check_engine_layout(cfg, settings: BTransSettings) -> None:
    """Refuse vLLM engine settings under which the latent would not be the one promised (the plugin refuses
    them too, per request; here the run stops before Ray starts)."""
    vllm_kwargs = _select(cfg, "actor_rollout_ref.rollout.engine_kwargs.vllm") or {}
    vllm_kwargs = vllm_kwargs if isinstance(vllm_kwargs, Mapping) else {}
    if vllm_kwargs.get("enable_dbo"):
        raise ValueError("actor_rollout_ref.rollout.engine_kwargs.vllm.enable_dbo must be false with B-Trans on: "
                         "dual batch overlap runs micro-batches on slices of the batch that the per-token latent "
                         "rows do not follow")
    if settings.granularity == "token":
        mtp = _select(cfg, "actor_rollout_ref.model.mtp") or _select(cfg, "actor_rollout_ref.rollout.mtp") or {}
        mtp = mtp if isinstance(mtp, Mapping) else {}
        for key, on in (("actor_rollout_ref.rollout.engine_kwargs.vllm.speculative_config",
                         vllm_kwargs.get("speculative_config") is not None),
                        ("actor_rollout_ref.model.mtp.enable_rollout",
                         bool(mtp.get("enable")) and bool(mtp.get("enable_rollout")))):
            if on:
                raise ValueError(f"{key}: speculative decoding is not supported with btrans.granularity=token "
                                 f"(per-token latents would drift from the Hugging Face replay); use granularity "
                                 f"sequence, the paper's method")


def _check_wiring(cfg, settings: BTransSettings) -> None:
    """The verl components that carry the latents must be ours (see AGENT_LOOP_MANAGER)."""
    manager = _select(cfg, "actor_rollout_ref.rollout.agent.agent_loop_manager_class")
    if manager != AGENT_LOOP_MANAGER:
        raise ValueError(f"actor_rollout_ref.rollout.agent.agent_loop_manager_class must be {AGENT_LOOP_MANAGER!r} "
                         f"with +btrans (it sends each trajectory's latent to vLLM), got {manager!r}")
    path = _select(cfg, "trainer.v1.sampler.custom_sampler.path")
    name = _select(cfg, "trainer.v1.sampler.custom_sampler.name")
    if (path, name) != (SAMPLER_PATH, SAMPLER_NAME):
        raise ValueError(f"trainer.v1.sampler.custom_sampler must be path={SAMPLER_PATH!r} name={SAMPLER_NAME!r} "
                         f"with +btrans (it proves the latents reached vLLM), got path={path!r} name={name!r}")
    reward_manager = (_select(cfg, "reward.reward_manager.source"), _select(cfg, "reward.reward_manager.name"))
    if reward_manager != ("register", REWARD_MANAGERS[settings.task]):
        raise ValueError(f"reward.reward_manager.name must be {REWARD_MANAGERS[settings.task]!r} with source "
                         f"'register' for btrans.task={settings.task} (it computes the task's rewards: "
                         f"btrans_verl.verl.reward_managers), got name={reward_manager[1]!r} "
                         f"source={reward_manager[0]!r}")
    if _select(cfg, "trainer.use_v1", True) is not True:
        raise ValueError(f"trainer.use_v1 must be true with +btrans (verl's v1 trainer), got "
                         f"{_select(cfg, 'trainer.use_v1')!r}")
    mode = _select(cfg, "trainer.v1.trainer_mode", "sync")
    if mode != "sync":
        raise ValueError(f"trainer.v1.trainer_mode must be 'sync' with +btrans, got {mode!r}")
    shift = _select(cfg, "actor_rollout_ref.model.override_config") or {}
    shift = shift if isinstance(shift, Mapping) else {}
    for key, want in (("btrans_enable", settings.enable), ("btrans_mu", settings.mu),
                      ("btrans_targets", list(settings.targets))):
        if key not in shift and not (settings.enable and settings.mu != 0.0):
            continue  # mu = 0: the mean mind is the base model, nothing for the actor to apply
        got = shift.get(key)
        got = list(got) if isinstance(got, Sequence) and not isinstance(got, str) else got  # list / ListConfig
        if got != want:
            raise ValueError(f"actor_rollout_ref.model.override_config.{key} must be {want!r} (it tells the actor "
                             f"and reference which mean shift to train with; conf/btrans/on.yaml sets it from "
                             f"btrans.*), got {got!r}")


def settings_from_run_config(cfg) -> BTransSettings:
    """The validated `BTransSettings` of a composed run config that must have a `btrans` node (used inside verl's
    Ray workers, which receive the whole config). Raises ValueError when the node is missing."""
    settings = validate_run_config(cfg)
    if settings is None:
        raise ValueError("this verl run uses a btrans_verl component but its config has no `btrans` node: "
                         "select B-Trans with `+btrans=on` or `+btrans=off`")
    return settings


VERL_PLUGIN_MODULE = "btrans_verl.verl.plugin"


def check_verl_plugin_loaded() -> None:
    """Raise RuntimeError unless `import verl` loaded btrans-verl's verl plugin (entry point `verl.plugins:
    btrans` -> `btrans_verl.verl.plugin`) in this process without error. verl swallows plugin import errors at
    DEBUG level, and the same plugin must load in every Ray worker, so the driver checks it before Ray starts.
    Call it in a process that has imported verl (the driver of `python -m verl.trainer.main_ppo` has)."""
    mod = sys.modules.get(VERL_PLUGIN_MODULE)
    if mod is None:
        raise RuntimeError(f"verl did not load the btrans-verl plugin ({VERL_PLUGIN_MODULE}): is btrans-verl "
                           f"installed in this environment, and does VERL_USE_EXTERNAL_PLUGINS (now "
                           f"{os.environ.get('VERL_USE_EXTERNAL_PLUGINS', 'unset = auto')!r}) allow 'btrans'?")
    if not getattr(mod, "LOADED", False):
        err = getattr(mod, "IMPORT_ERROR", None)
        raise RuntimeError(f"the btrans-verl verl plugin failed to load: {type(err).__name__}: {err}")


class ValidateRunConfig(_HydraCallback):
    """Hydra callback: in `on_job_start`, i.e. in the driver after composition and before the task function
    (`verl.trainer.main_ppo.main`, which starts Ray), runs `validate_run_config` on the composed config and, when
    the config has a `btrans` node, `check_verl_plugin_loaded`.

    Registered by `conf/btrans/on.yaml` (and so by `off.yaml`) as `hydra.callbacks.btrans_validate`.
    Hydra 1.3 turns exceptions raised by callbacks into warnings and carries on, so a failed check is reported
    as `SystemExit` (exit status 1, message on stderr), which Hydra does not catch.
    """

    def on_job_start(self, config, **kwargs: Any) -> None:
        try:
            settings = validate_run_config(config)
            if settings is not None:
                check_verl_plugin_loaded()
        except (ValueError, RuntimeError) as e:
            raise SystemExit(f"btrans: invalid run config: {e}") from e
        if settings is not None:
            logger.info("B-Trans settings: %s", settings.to_dict())
