"""The B-Trans config groups compose through verl's real entry point and are validated before Ray starts.

* verl's stock `python -m verl.trainer.main_ppo` finds `+btrans=on` through our Hydra search-path plugin
  (installed package, no `hydra.searchpath` override) and `--cfg job` prints the expected `btrans` node for
  on / off / rlvr / ttrl / lora;
* the same entry point, run for real (not `--cfg`), rejects bad configs in the driver before Ray starts (the
  Hydra callback registered by the config groups), and lets valid ones through to `ray.init`;
* Hydra's compose API (verl's config dir + our search path) gives configs that `validate_run_config` accepts or
  rejects naming the key; `+btrans=off` equals `+btrans=on` except `btrans.enable`.

The entry point is slow to import (~10 s), so one subprocess runs every entry-point case in sequence: it executes
`verl.trainer.main_ppo` as `__main__` with `runpy` (what `python -m` does) once per case, with `ray.init`
replaced by a sentinel that records that Ray would start. One more subprocess runs the literal
`python -m verl.trainer.main_ppo +btrans=on --cfg job`. Both start when this module's first test runs and
work while the in-process compose tests run.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from btrans_verl.latent import LatentConfig
from btrans_verl.verl.settings import BTransSettings, validate_run_config

PY = sys.executable
TIMEOUT_S = 300

# What verl's own validate_config (run by main() before Ray) needs besides our groups.
MINIMAL = [
    "actor_rollout_ref.model.path=/nonexistent/model",
    "data.train_batch_size=4",
    "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=1",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
    "trainer.n_gpus_per_node=1",
]

# name -> overrides, printed with --cfg job (`+btrans=on` alone: the plain `python -m` run below)
PRINTED = {
    "off": ["+btrans=off"],
    "rlvr": ["+btrans=on", "btrans/task=rlvr"],
    "ttrl": ["+btrans=on", "btrans/task=ttrl"],
    "off_ttrl_lora": ["+btrans=off", "btrans/task=ttrl", "btrans/lora=on"],
}

# name -> (overrides, key the error must name); each must exit before Ray
REJECTED = {
    "negative_sigma": (["+btrans=on", "btrans.sigma=-0.1"], "btrans.sigma"),
    "nan_sigma": (["+btrans=on", "btrans.sigma=nan"], "btrans.sigma"),
    "unknown_target": (["+btrans=on", "btrans.targets=[input_layernorm,mlp]"], "btrans.targets"),
    "unknown_task": (["+btrans=on", "btrans.task=sft"], "btrans.task"),
    "n_votes_below_n_samples": (["+btrans=on", "btrans/task=ttrl", "btrans.ttrl.n_votes=16",
                                 "btrans.ttrl.n_samples=32"], "btrans.ttrl.n_votes"),
    "rollout_n_is_not_n_votes": (["+btrans=on", "btrans/task=ttrl", "actor_rollout_ref.rollout.n=8"],
                                 "actor_rollout_ref.rollout.n"),
    "rollout_is_not_vllm": (["+btrans=on", "actor_rollout_ref.rollout.name=sglang"],
                            "actor_rollout_ref.rollout.name"),
    # replacing the manager that sends the latents to vLLM would make B-Trans a silent no-op
    "agent_loop_manager_replaced": (["+btrans=on", "actor_rollout_ref.rollout.agent.agent_loop_manager_class="
                                     "verl.trainer.ppo.v1.AgentLoopManagerTQ"],
                                    "actor_rollout_ref.rollout.agent.agent_loop_manager_class"),
    "sampler_replaced": (["+btrans=on", "trainer.v1.sampler.custom_sampler.name=ReplayBuffer"],
                         "trainer.v1.sampler.custom_sampler"),
    "async_trainer": (["+btrans=on", "trainer.v1.trainer_mode=colocate_async"], "trainer.v1.trainer_mode"),
    "legacy_trainer": (["+btrans=on", "trainer.use_v1=false"], "trainer.use_v1"),
    "actor_shift_tampered": (["+btrans=on", "actor_rollout_ref.model.override_config.btrans_mu=0.3"],
                             "actor_rollout_ref.model.override_config.btrans_mu"),
}

# name -> overrides; valid: main() must get as far as ray.init
ACCEPTED = {
    "on": ["+btrans=on"],
    "on_ttrl": ["+btrans=on", "btrans/task=ttrl"],
    "off": ["+btrans=off"],
    "off_ttrl": ["+btrans=off", "btrans/task=ttrl"],
}

DRIVER = textwrap.dedent(
    r'''
    import contextlib, io, json, runpy, sys, traceback

    import ray

    class RayWouldStart(BaseException):
        """Raised instead of starting Ray; a BaseException so Hydra's handlers let it through."""

    calls = []

    def fake_ray_init(*args, **kwargs):
        calls.append(1)
        raise RayWouldStart()

    ray.init = fake_ray_init
    spec_path, out_path = sys.argv[1], sys.argv[2]
    spec = json.load(open(spec_path))
    results = {}
    for name, argv in spec.items():
        sys.argv = ["main_ppo.py"] + argv
        calls.clear()
        out, err = io.StringIO(), io.StringIO()
        status, code = "returned", None
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                runpy.run_module("verl.trainer.main_ppo", run_name="__main__", alter_sys=True)
        except SystemExit as e:
            status, code = "exit", e.code if isinstance(e.code, (int, type(None))) else str(e.code)
        except RayWouldStart:
            status = "ray"
        except BaseException:
            status, code = "raised", traceback.format_exc()
        results[name] = {"status": status, "code": code, "ray_init_called": bool(calls),
                         "stdout": out.getvalue(), "stderr": err.getvalue()[-4000:]}
    json.dump(results, open(out_path, "w"))
    '''
)


class _Background:
    """The two entry-point subprocesses, started once, awaited by the tests that need them."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        spec = {}
        for name, ov in PRINTED.items():
            spec[f"print:{name}"] = ov + self._hydra_dirs(f"print_{name}") + ["--cfg", "job"]
        for name, (ov, _key) in REJECTED.items():
            spec[f"reject:{name}"] = ov + MINIMAL + self._hydra_dirs(f"reject_{name}")
        for name, ov in ACCEPTED.items():
            spec[f"accept:{name}"] = ov + MINIMAL + self._hydra_dirs(f"accept_{name}")
        (workdir / "spec.json").write_text(json.dumps(spec))
        (workdir / "driver.py").write_text(DRIVER)
        env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
        self.driver = subprocess.Popen([PY, str(workdir / "driver.py"), str(workdir / "spec.json"),
                                        str(workdir / "results.json")], cwd=workdir, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.plain = subprocess.Popen([PY, "-m", "verl.trainer.main_ppo", "+btrans=on", "--cfg", "job"],
                                      cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
        self._results = self._plain = None

    def _hydra_dirs(self, name):
        return [f"hydra.run.dir={self.workdir / 'runs' / name}", "hydra.output_subdir=null"]

    @property
    def results(self) -> dict:
        if self._results is None:
            out, err = self.driver.communicate(timeout=TIMEOUT_S)
            assert self.driver.returncode == 0, f"driver failed:\n{out[-3000:]}\n{err[-3000:]}"
            self._results = json.loads((self.workdir / "results.json").read_text())
        return self._results

    @property
    def plain_run(self) -> tuple[int, str, str]:
        if self._plain is None:
            out, err = self.plain.communicate(timeout=TIMEOUT_S)
            self._plain = (self.plain.returncode, out, err)
        return self._plain

    def close(self):
        for p in (self.driver, self.plain):
            if p.poll() is None:
                p.kill()
                p.communicate()


@pytest.fixture(scope="module", autouse=True)
def background(tmp_path_factory):
    bg = _Background(tmp_path_factory.mktemp("entry_point"))
    yield bg
    bg.close()


# --------------------------------------------------------------------------------------------------------------
# installation: the plugin is discoverable and the YAML ships as the package btrans_verl.conf
# --------------------------------------------------------------------------------------------------------------
INSTALL_CHECK = textwrap.dedent(
    """
    import importlib.resources, json, pkgutil
    import hydra_plugins
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin
    conf = importlib.resources.files("btrans_verl.conf")
    print(json.dumps({
        "path": [str(p) for p in hydra_plugins.__path__],
        "walk": [m.name for m in pkgutil.walk_packages(hydra_plugins.__path__, "hydra_plugins.")],
        "plugins": [c.__name__ for c in Plugins.instance().discover(SearchPathPlugin)],
        "yaml": {rel: conf.joinpath(rel).read_text().splitlines()[0] for rel in (
            "btrans/on.yaml", "btrans/off.yaml", "btrans/task/rlvr.yaml", "btrans/task/ttrl.yaml",
            "btrans/lora/none.yaml", "btrans/lora/on.yaml")},
    }))
    """
)


def test_search_path_plugin_is_discovered_and_configs_ship_as_a_package(tmp_path):
    # in a fresh interpreter outside the repository, as a user runs it (inside the repo, `python -m pytest` puts
    # the repo root on sys.path, which hides an installation that Hydra cannot scan)
    out = subprocess.run([PY, "-c", INSTALL_CHECK], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout)
    assert "hydra_plugins.btrans_verl_searchpath.btrans_verl_searchpath" in info["walk"], (
        f"Hydra cannot enumerate our plugin: hydra_plugins.__path__ = {info['path']}. With a setuptools editable "
        "install, 'hydra_plugins' itself must be listed in [tool.setuptools] packages (then reinstall).")
    assert "BTransVerlSearchPathPlugin" in info["plugins"]
    assert set(info["yaml"].values()) == {"# @package _global_"}


# --------------------------------------------------------------------------------------------------------------
# Hydra compose API: validate_run_config on composed configs (runs while the subprocesses work)
# --------------------------------------------------------------------------------------------------------------
def test_composed_recipes_validate_with_documented_defaults(compose_cfg):
    on = validate_run_config(compose_cfg("+btrans=on"))
    assert isinstance(on, BTransSettings) and isinstance(on.latent, LatentConfig)
    assert (on.enable, on.mu, on.sigma, on.granularity, on.val_mind, on.task) == \
        (True, 0.0, 0.05, "sequence", "mean", "rlvr")
    assert on.targets == ("input_layernorm", "post_attention_layernorm", "final_norm")
    assert on.seed == 42 and on.rlvr.reward_scheme == "binary"

    cfg = compose_cfg("+btrans=on")
    assert cfg.algorithm.adv_estimator == "grpo"
    assert cfg.actor_rollout_ref.rollout.name == "vllm"
    assert cfg.actor_rollout_ref.rollout.n == 8 and cfg.actor_rollout_ref.rollout.temperature == 1.0
    assert cfg.actor_rollout_ref.model.lora_rank == 0

    ttrl_cfg = compose_cfg("+btrans=on", "btrans/task=ttrl", "btrans/lora=on")
    ttrl = validate_run_config(ttrl_cfg)
    assert ttrl.task == "ttrl" and (ttrl.ttrl.n_votes, ttrl.ttrl.n_samples) == (64, 32)
    assert ttrl_cfg.actor_rollout_ref.rollout.n == 64 and ttrl_cfg.actor_rollout_ref.rollout.temperature == 1.0
    assert ttrl_cfg.actor_rollout_ref.actor.optim.lr == 5e-7
    assert ttrl_cfg.actor_rollout_ref.model.lora_rank == 32
    assert ttrl_cfg.actor_rollout_ref.model.target_modules == "all-linear"

    # overriding n_votes moves rollout.n with it; btrans.seed follows verl's rollout seed
    small = compose_cfg("+btrans=on", "btrans/task=ttrl", "btrans.ttrl.n_votes=8", "btrans.ttrl.n_samples=4",
                        "actor_rollout_ref.rollout.seed=7")
    settings = validate_run_config(small)
    assert settings.ttrl.n_votes == small.actor_rollout_ref.rollout.n == 8
    assert settings.seed == 7


@pytest.mark.parametrize("extra", [(), ("btrans/task=ttrl", "btrans/lora=on")], ids=["rlvr", "ttrl_lora"])
def test_off_is_on_with_enable_false_and_nothing_else(compose_cfg, extra):
    on = OmegaConf.to_container(compose_cfg("+btrans=on", *extra), resolve=False)
    off = OmegaConf.to_container(compose_cfg("+btrans=off", *extra), resolve=False)
    assert (on["btrans"].pop("enable"), off["btrans"].pop("enable")) == (True, False)
    assert on == off
    assert validate_run_config(compose_cfg("+btrans=off", *extra)).enable is False


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_validate_run_config_rejects_composed_config_naming_the_key(compose_cfg, name):
    overrides, key = REJECTED[name]
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        validate_run_config(compose_cfg(*overrides))


def test_hydra_itself_rejects_unknown_group_options_and_double_selection(compose_cfg):
    from hydra.errors import ConfigCompositionException, MissingConfigException

    with pytest.raises(MissingConfigException):
        compose_cfg("+btrans=on", "btrans/task=sft")
    with pytest.raises(ConfigCompositionException):  # the task group already has a default: no `+`
        compose_cfg("+btrans=on", "+btrans/task=ttrl")


# --------------------------------------------------------------------------------------------------------------
# the real entry point
# --------------------------------------------------------------------------------------------------------------
def _printed(background, name):
    r = background.results[f"print:{name}"]
    assert r["status"] == "returned" and not r["ray_init_called"], r["stderr"]
    return OmegaConf.create(r["stdout"])


def test_plain_python_dash_m_prints_the_btrans_node(background):
    rc, out, err = background.plain_run
    assert rc == 0, err[-3000:]
    cfg = OmegaConf.create(out)
    assert cfg.btrans.enable is True and cfg.btrans.sigma == 0.05 and cfg.btrans.task == "rlvr"
    assert OmegaConf.select(cfg, "btrans.seed") == 42  # ${actor_rollout_ref.rollout.seed}
    assert cfg.actor_rollout_ref.rollout.name == "vllm"
    assert "hydra" not in cfg  # --cfg job: the callback is registered but no job runs


@pytest.mark.parametrize("name", sorted(PRINTED))
def test_cfg_job_prints_the_expected_btrans_node(background, name):
    cfg = _printed(background, name)
    b = cfg.btrans
    expect_task = "ttrl" if "ttrl" in name else "rlvr"
    assert b.enable is (not name.startswith("off"))
    assert (b.mu, b.sigma, b.granularity, b.val_mind, b.task) == (0.0, 0.05, "sequence", "mean", expect_task)
    assert list(b.targets) == ["input_layernorm", "post_attention_layernorm", "final_norm"]
    assert OmegaConf.select(cfg, "btrans.seed") == cfg.actor_rollout_ref.rollout.seed == 42
    assert cfg.algorithm.adv_estimator == "grpo"
    assert cfg.actor_rollout_ref.rollout.temperature == 1.0
    rollout_n = OmegaConf.select(cfg, "actor_rollout_ref.rollout.n")
    if expect_task == "ttrl":
        assert (b.ttrl.n_votes, b.ttrl.n_samples, b.ttrl.reward_scheme) == (64, 32, "binary")
        assert rollout_n == 64
    else:
        assert b.rlvr.reward_scheme == "binary" and rollout_n == 8
    assert cfg.actor_rollout_ref.model.lora_rank == (32 if "lora" in name else 0)
    # what was printed is a config validate_run_config accepts
    settings = validate_run_config(cfg)
    assert settings.enable is b.enable and settings.task == expect_task


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_entry_point_rejects_bad_config_before_ray_starts(background, name):
    _overrides, key = REJECTED[name]
    r = background.results[f"reject:{name}"]
    assert r["status"] == "exit", r
    assert not r["ray_init_called"]
    assert "ray init kwargs" not in r["stdout"]  # run_ppo prints this right before ray.init
    assert isinstance(r["code"], str) and r["code"].startswith("btrans: invalid run config:"), r["code"]
    assert key in r["code"]


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_entry_point_lets_valid_config_through_to_ray(background, name):
    r = background.results[f"accept:{name}"]
    assert r["status"] == "ray" and r["ray_init_called"], r["code"] or r["stderr"]
    assert "btrans: invalid run config" not in r["stderr"]


def test_numbers_in_rejections_are_real_nans_and_negatives(compose_cfg):
    # guards the rejection table: Hydra's override grammar gives floats, not strings
    assert math.isnan(compose_cfg(*REJECTED["nan_sigma"][0]).btrans.sigma)
    assert compose_cfg(*REJECTED["negative_sigma"][0]).btrans.sigma == -0.1
