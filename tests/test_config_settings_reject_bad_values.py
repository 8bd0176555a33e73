"""BTransSettings / validate_run_config unit behaviour: every bad value is a ValueError naming its key, the latent
fields are validated by LatentConfig itself, and the Hydra callback turns failures into an exit Hydra cannot
swallow. Fast: no Hydra composition here (see test_config_composes_through_real_entry_point.py for that)."""

from __future__ import annotations

import math
import types

import pytest
from omegaconf import OmegaConf

from btrans_verl.latent import DEFAULT_TARGETS, LatentConfig
from btrans_verl.verl import settings as bc
from btrans_verl.verl.settings import BTransSettings, RLVRSettings, TTRLSettings, ValidateRunConfig, validate_run_config

GOOD = {
    "enable": True, "mu": 0.0, "sigma": 0.05, "targets": list(DEFAULT_TARGETS), "granularity": "sequence",
    "sigma_scale": "absolute",
    "val_mind": "mean", "step_consistency": False, "seed": 42, "task": "rlvr", "rlvr": {"reward_scheme": "binary"},
    "ttrl": {"n_votes": 64, "n_samples": 32, "reward_scheme": "binary"},
    "adaptive_sigma": {"enable": False, "target": 0.5, "gain": 1.0, "sigma_min": 0.005, "sigma_max": 0.5},
}


def with_(**changes):
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in GOOD.items()}
    for k, v in changes.items():
        if "__" in k:
            outer, inner = k.split("__")
            d[outer][inner] = v
        else:
            d[k] = v
    return d


def run_cfg(btrans=None, *, name="vllm", n=8, adv="grpo", **top):
    # the engines' opt-in as conf/btrans/on.yaml derives it
    opt_in = {"enable": "${btrans.enable}", "targets": "${btrans.targets}", "granularity": "${btrans.granularity}"}
    cfg = {"actor_rollout_ref": {"rollout": {"name": name, "n": n, "temperature": 1.0, "seed": 42,
                                             "agent": {"agent_loop_manager_class": bc.AGENT_LOOP_MANAGER},
                                             "engine_kwargs": {"vllm": {"additional_config": {"btrans": opt_in}}}}},
           "trainer": {"v1": {"sampler": {"custom_sampler": {"path": bc.SAMPLER_PATH, "name": bc.SAMPLER_NAME}}}},
           "algorithm": {"adv_estimator": adv}, "data": {"shuffle": False, "seed": 1},
           "reward": {"reward_manager": {"source": "register",
                                         "name": bc.REWARD_MANAGERS.get((btrans or {}).get("task"), "btrans")}}}
    if btrans is not None:
        cfg["btrans"] = btrans
    cfg.update(top)
    return OmegaConf.create(cfg)


def test_defaults_are_the_documented_ones_and_reuse_latent_config():
    s = BTransSettings()
    assert (s.enable, s.mu, s.sigma, s.targets, s.granularity, s.sigma_scale) == (
        True, 0.0, 0.05, DEFAULT_TARGETS, "sequence", "absolute")
    assert (s.val_mind, s.seed, s.task) == ("mean", 42, "rlvr")
    assert s.rlvr == RLVRSettings("binary") and s.ttrl == TTRLSettings(64, 32, "binary")
    assert isinstance(s.latent, LatentConfig) and s.latent == LatentConfig()


def test_from_config_round_trips_plain_and_omegaconf_nodes():
    s = BTransSettings.from_config(GOOD)
    assert s.to_dict() == GOOD
    assert BTransSettings.from_config(OmegaConf.create(GOOD)) == s
    assert BTransSettings.from_config({}) == BTransSettings()  # absent keys take the defaults
    assert BTransSettings.from_config({"sigma": 0, "mu": 1}).sigma == 0.0  # ints become floats (LatentConfig)
    assert BTransSettings.from_config({"enable": False}).latent.enable is False


BAD = [
    ("negative_sigma", with_(sigma=-0.01), "btrans.sigma"),
    ("nan_sigma", with_(sigma=float("nan")), "btrans.sigma"),
    ("inf_sigma", with_(sigma=float("inf")), "btrans.sigma"),
    ("string_sigma", with_(sigma="0.1"), "btrans.sigma"),
    ("nan_mu", with_(mu=float("nan")), "btrans.mu"),
    ("unknown_target", with_(targets=["input_layernorm", "mlp"]), "btrans.targets"),
    ("empty_targets", with_(targets=[]), "btrans.targets"),
    ("string_targets", with_(targets="input_layernorm"), "btrans.targets"),
    ("per_head_target_vllm_cannot_apply", with_(targets=["input_layernorm", "q_norm"]), "btrans.targets: per-head"),
    ("granularity", with_(granularity="word"), "btrans.granularity"),
    ("sigma_scale", with_(sigma_scale="per_layer"), "btrans.sigma_scale"),
    ("enable_int", with_(enable=1), "btrans.enable"),
    ("enable_string", with_(enable="yes"), "btrans.enable"),
    ("val_mind", with_(val_mind="median"), "btrans.val_mind"),
    ("step_consistency", with_(step_consistency="yes"), "btrans.step_consistency"),
    ("seed_negative", with_(seed=-1), "btrans.seed"),
    ("seed_too_big", with_(seed=2**63), "btrans.seed"),
    ("seed_float", with_(seed=1.5), "btrans.seed"),
    ("seed_bool", with_(seed=True), "btrans.seed"),
    ("seed_null", with_(seed=None), "btrans.seed"),
    ("unknown_task", with_(task="sft"), "btrans.task"),
    ("rlvr_scheme", with_(rlvr__reward_scheme="cubic"), "btrans.rlvr.reward_scheme"),
    ("ttrl_scheme", with_(ttrl__reward_scheme=None), "btrans.ttrl.reward_scheme"),
    ("n_votes_below_n_samples", with_(ttrl__n_votes=16), "btrans.ttrl.n_votes"),
    ("n_votes_zero", with_(ttrl__n_votes=0), "btrans.ttrl.n_votes"),
    ("n_samples_zero", with_(ttrl__n_samples=0), "btrans.ttrl.n_samples"),
    ("n_votes_float", with_(ttrl__n_votes=64.0), "btrans.ttrl.n_votes"),
    ("unknown_key", with_(sigmaa=0.1), "btrans: unknown key"),
    ("unknown_nested_key", with_(ttrl__votes=3), "btrans.ttrl: unknown key"),
    ("nested_not_mapping", with_(rlvr="binary"), "btrans.rlvr must be a mapping"),
]


@pytest.mark.parametrize("data,key", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_values_raise_value_error_naming_the_key(data, key):
    with pytest.raises(ValueError) as e:
        BTransSettings.from_config(data)
    assert key in str(e.value)
    with pytest.raises(ValueError):  # the same through validate_run_config on a whole config
        validate_run_config(run_cfg(data, n=64 if data.get("task") == "ttrl" else 8))


@pytest.mark.parametrize("field,value", [("sigma", -1.0), ("sigma", math.nan), ("mu", math.inf),
                                         ("targets", ("bogus",)), ("granularity", "word"),
                                         ("sigma_scale", "relative")])
def test_latent_errors_are_latent_configs_own(field, value):
    with pytest.raises(ValueError) as ours:
        BTransSettings(**{field: value})
    with pytest.raises(ValueError) as theirs:
        LatentConfig(**{field: value})
    assert str(ours.value) == str(theirs.value)


def test_cross_field_checks_name_verl_keys():
    ttrl = with_(task="ttrl")
    assert validate_run_config(run_cfg(ttrl, n=64)).task == "ttrl"
    with pytest.raises(ValueError, match=r"actor_rollout_ref\.rollout\.n \(8\) must equal btrans\.ttrl\.n_votes"):
        validate_run_config(run_cfg(ttrl, n=8))
    with pytest.raises(ValueError, match=r"btrans\.ttrl\.n_samples"):
        validate_run_config(run_cfg(with_(task="ttrl", ttrl__n_samples=1), n=64))
    with pytest.raises(ValueError, match=r"actor_rollout_ref\.rollout\.n \(1\) must be >= 2"):
        validate_run_config(run_cfg(GOOD, n=1))
    assert validate_run_config(run_cfg(GOOD, n=1, adv="gae")) is not None  # no group: one sample is fine
    with pytest.raises(ValueError, match=r"actor_rollout_ref\.rollout\.name must be 'vllm'"):
        validate_run_config(run_cfg(GOOD, name="sglang"))
    assert validate_run_config(run_cfg(with_(enable=False), name="sglang")).enable is False  # off: any rollout
    with pytest.raises(ValueError, match=r"btrans\.enable is not set"):
        validate_run_config(run_cfg({"task": "ttrl"}))
    assert validate_run_config(run_cfg(None)) is None
    cfg = run_cfg(ttrl, n=64)
    cfg.reward.reward_manager.name = "btrans"  # TTRL scored per trajectory would need labels: refused
    with pytest.raises(ValueError, match=r"reward\.reward_manager\.name must be 'btrans_ttrl'"):
        validate_run_config(cfg)


def test_the_rollout_engines_opt_in_must_agree_with_btrans():
    key = r"actor_rollout_ref\.rollout\.engine_kwargs\.vllm\.additional_config\.btrans"
    assert validate_run_config(run_cfg(GOOD)).enable
    assert validate_run_config(run_cfg(with_(enable=False))).enable is False  # off: stock engines
    cfg = run_cfg(GOOD)
    cfg.actor_rollout_ref.rollout.engine_kwargs.vllm.additional_config.btrans.enable = False
    with pytest.raises(ValueError, match=key + " does not opt the rollout engines in"):
        validate_run_config(cfg)
    cfg = run_cfg(with_(enable=False))
    cfg.actor_rollout_ref.rollout.engine_kwargs.vllm.additional_config.btrans = True
    with pytest.raises(ValueError, match=key + " opts the rollout engines in to B-Trans while btrans.enable is false"):
        validate_run_config(cfg)
    cfg = run_cfg(GOOD)
    cfg.actor_rollout_ref.rollout.engine_kwargs.vllm.additional_config.btrans.targets = ["input_layernorm"]
    with pytest.raises(ValueError, match=key + r" \(latents after input_layernorm; granularity sequence\) differs"):
        validate_run_config(cfg)
    cfg = run_cfg(GOOD)
    cfg.actor_rollout_ref.rollout.engine_kwargs.vllm.additional_config.btrans.granularity = "token"
    with pytest.raises(ValueError, match="differs from btrans.targets / btrans.granularity"):
        validate_run_config(cfg)
    cfg = run_cfg(GOOD)
    cfg.actor_rollout_ref.rollout.engine_kwargs.vllm.additional_config.btrans.sigma = 0.1
    with pytest.raises(ValueError, match=key + r": additional_config\['btrans'\]: unknown key\(s\) \['sigma'\]"):
        validate_run_config(cfg)


def test_interpolations_resolve_against_the_whole_config():
    cfg = run_cfg(with_(seed="${actor_rollout_ref.rollout.seed}"))
    assert validate_run_config(cfg).seed == 42
    with pytest.raises(ValueError, match=r"btrans\.seed"):  # verl's data.seed is null by default
        validate_run_config(run_cfg(with_(seed="${data.seed}"), data={"seed": None, "shuffle": True}))
    with pytest.raises(ValueError, match=r"btrans: cannot read"):
        validate_run_config(run_cfg(with_(seed="${no.such.key}")))
    with pytest.raises(ValueError, match=r"btrans: cannot read"):
        validate_run_config(run_cfg(with_(sigma="???")))


def test_verl_plugin_check(monkeypatch):
    monkeypatch.delitem(bc.sys.modules, bc.VERL_PLUGIN_MODULE, raising=False)
    with pytest.raises(RuntimeError, match="did not load"):
        bc.check_verl_plugin_loaded()
    broken = types.SimpleNamespace(LOADED=False, IMPORT_ERROR=ImportError("no vllm"))
    monkeypatch.setitem(bc.sys.modules, bc.VERL_PLUGIN_MODULE, broken)
    with pytest.raises(RuntimeError, match="ImportError: no vllm"):
        bc.check_verl_plugin_loaded()
    monkeypatch.setitem(bc.sys.modules, bc.VERL_PLUGIN_MODULE, types.SimpleNamespace(LOADED=True))
    bc.check_verl_plugin_loaded()


def test_callback_exit_is_not_swallowed_by_hydra(monkeypatch):
    from hydra._internal.callbacks import Callbacks

    monkeypatch.setitem(bc.sys.modules, bc.VERL_PLUGIN_MODULE, types.SimpleNamespace(LOADED=True))
    hydra_node = {"callbacks": {"btrans_validate": {"_target_": "btrans_verl.verl.settings.ValidateRunConfig"}}}
    callbacks = Callbacks(run_cfg(with_(sigma=-1.0), hydra=hydra_node))
    assert [type(c) for c in callbacks.callbacks] == [ValidateRunConfig]
    with pytest.raises(SystemExit) as e:  # Hydra turns Exceptions from callbacks into warnings; not this
        callbacks.on_job_start(config=run_cfg(with_(sigma=-1.0), hydra=hydra_node), task_function=None)
    assert str(e.value.code).startswith("btrans: invalid run config: btrans.sigma")
    callbacks.on_job_start(config=run_cfg(GOOD, hydra=hydra_node), task_function=None)  # valid: passes

    monkeypatch.delitem(bc.sys.modules, bc.VERL_PLUGIN_MODULE)
    with pytest.raises(SystemExit, match="did not load"):
        ValidateRunConfig().on_job_start(run_cfg(GOOD))
    ValidateRunConfig().on_job_start(run_cfg(None))  # no btrans node: nothing to check
