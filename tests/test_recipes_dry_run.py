"""Every recipe in recipes/ composes and validates (both modes) through `btrans_verl.verl.dry_run`, and the dry run
rejects bad configs naming the offending key.

The recipes print their Hydra overrides with PRINT_OVERRIDES=1 (a cheap bash call, no Python); the dry run then
runs in-process on exactly those overrides (`btrans_verl.verl.dry_run.main`), so verl is imported once for the module.
The launch paths (DRY_RUN=1, single node, Ray job submission) are checked with stub `python` and `ray` executables
that print their arguments: they must receive the very same overrides.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from btrans_verl.verl.dry_run import main as dry_run_main

REPO = Path(__file__).resolve().parents[1]
RECIPES_DIR = REPO / "recipes"
LIBRARIES = {"common.sh", "rlvr_common.sh", "multinode.sh"}  # sourced or cluster helpers, not experiments
RECIPES = sorted(p.stem for p in RECIPES_DIR.glob("*.sh") if p.name not in LIBRARIES)
PAPER_EXPERIMENTS = {"rlvr_qwen3_1.7b", "rlvr_qwen3_8b", "rlvr_qwen2.5_math_7b", "rlvr_llama3.1_8b",
                     "ttrl_aime24_qwen3_1.7b"}

# the files `python -m data_prep all --out DATA_DIR` writes that the recipes read, with their real row counts
DATA_ROWS = {"simplerl_zoo/train_n400_seed0.parquet": 400, "gsm8k/test.parquet": 1319, "math500/test.parquet": 500,
             "minerva_math/test.parquet": 272, "aime24_ttrl/test.parquet": 30}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Stand-in parquet files with the real row counts (the dry run reads only the row count)."""
    root = tmp_path_factory.mktemp("data")
    for rel, rows in DATA_ROWS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"row": list(range(rows))}), root / rel)
    return root


def run_recipe(name: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("MODE", "DRY_RUN", "PRINT_OVERRIDES", "NNODES", "GPUS_PER_NODE", "RAY_ADDRESS")}
    full_env.update(env)
    return subprocess.run(["bash", str(RECIPES_DIR / f"{name}.sh"), *args], env=full_env, capture_output=True,
                          text=True, timeout=60)


def recipe_overrides(name: str, *args: str, **env: str) -> list[str]:
    proc = run_recipe(name, *args, PRINT_OVERRIDES="1", **env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def dry_run(overrides: list[str], capsys) -> tuple[int, str, str]:
    code = dry_run_main(overrides)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_paper_experiment_has_a_recipe():
    assert set(RECIPES) == PAPER_EXPERIMENTS


@pytest.mark.parametrize("mode", ["btrans", "baseline"])
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_dry_run_passes(recipe, mode, data_dir, capsys):
    overrides = recipe_overrides(recipe, MODE=mode, DATA_DIR=str(data_dir))
    assert overrides[0] == {"btrans": "+btrans=on", "baseline": "+btrans=off"}[mode]
    assert any(o.startswith("actor_rollout_ref.model.path=") for o in overrides)
    code, out, err = dry_run(overrides, capsys)
    assert code == 0, err
    assert ("B-Trans on (sigma 0.05" in out) == (mode == "btrans")
    assert ("baseline (+btrans=off" in out) == (mode == "baseline")
    assert "1 node(s) x 8 = 8" in out
    if recipe.startswith("ttrl"):
        assert "ttrl (n_votes 64, n_samples 32)" in out
        assert "8 prompts/step -> 256 trained trajectories" in out
        assert "(30 rows); 3 step(s)/epoch, 240 step(s) in all" in out
    else:
        assert "rlvr;" in out and "LoRA rank 32" in out
        assert "80 prompts/step -> 640 trained trajectories" in out
        assert "(400 rows); 5 step(s)/epoch, 100 step(s) in all" in out
        assert "(1319 rows)" in out and "(500 rows)" in out and "(272 rows)" in out


@pytest.mark.parametrize("recipe,env,shape", [
    ("rlvr_qwen3_8b", {"NNODES": "2"}, "2 node(s) x 8 = 16"),
    ("ttrl_aime24_qwen3_1.7b", {"NNODES": "4"}, "4 node(s) x 8 = 32"),
    ("rlvr_qwen3_1.7b", {"GPUS_PER_NODE": "4"}, "1 node(s) x 4 = 4"),
])
def test_recipe_dry_run_other_cluster_shapes(recipe, env, shape, data_dir, capsys):
    code, out, err = dry_run(recipe_overrides(recipe, DATA_DIR=str(data_dir), **env), capsys)
    assert code == 0, err
    assert shape in out


def test_recipe_options_reach_the_overrides(data_dir, capsys):
    overrides = recipe_overrides("rlvr_qwen3_1.7b", "trainer.total_epochs=2", SIGMA="0.1", LORA_RANK="0",
                                 DATA_DIR=str(data_dir))
    assert "btrans.sigma=0.1" in overrides and "actor_rollout_ref.actor.optim.lr=1e-6" in overrides
    assert not any(o.startswith("btrans/lora=") for o in overrides)
    assert overrides[-1] == "trainer.total_epochs=2"  # extra arguments come last, so they win
    code, out, err = dry_run(overrides, capsys)
    assert code == 0, err
    assert "sigma 0.1" in out and "LoRA off" in out and "10 step(s) in all" in out


# ------------------------------------------------------------------------------------------- launch paths
@pytest.fixture
def stubs(tmp_path) -> Path:
    """`python` and `ray` stand-ins that print their arguments, one per line."""
    for name in ("python", "ray"):
        stub = tmp_path / name
        stub.write_text(f"#!/usr/bin/env bash\nprintf '{name.upper()}:%s\\n' \"$@\"\n")
        stub.chmod(0o755)
    return tmp_path


def _args(stdout: str, prefix: str) -> list[str]:
    return [line[len(prefix):] for line in stdout.splitlines() if line.startswith(prefix)]


def test_launch_paths_get_the_printed_overrides(stubs, data_dir):
    env = {"DATA_DIR": str(data_dir), "PYTHON": str(stubs / "python"), "PATH": f"{stubs}:{os.environ['PATH']}"}
    overrides = recipe_overrides("ttrl_aime24_qwen3_1.7b", "trainer.total_epochs=1", **env)

    dry = run_recipe("ttrl_aime24_qwen3_1.7b", "trainer.total_epochs=1", DRY_RUN="1", **env)
    assert dry.returncode == 0, dry.stderr
    assert _args(dry.stdout, "PYTHON:") == ["-m", "btrans_verl.verl.dry_run", *overrides]

    local = run_recipe("ttrl_aime24_qwen3_1.7b", "trainer.total_epochs=1", **env)
    assert local.returncode == 0, local.stderr
    assert _args(local.stdout, "PYTHON:") == ["-m", "verl.trainer.main_ppo", *overrides]

    env2 = {**env, "NNODES": "2", "RAY_ADDRESS": "http://head:8265"}
    submitted = run_recipe("ttrl_aime24_qwen3_1.7b", "trainer.total_epochs=1", **env2)
    assert submitted.returncode == 0, submitted.stderr
    ray_args = _args(submitted.stdout, "RAY:")
    assert ray_args[:3] == ["job", "submit", "--address"] and ray_args[3] == "http://head:8265"
    tail = ray_args[ray_args.index("--") + 1:]
    assert tail[:3] == [str(stubs / "python"), "-m", "verl.trainer.main_ppo"]
    assert tail[3:] == [o.replace("trainer.nnodes=1", "trainer.nnodes=2") for o in overrides]


def test_recipe_refuses_bad_environment(data_dir, tmp_path):
    bad_mode = run_recipe("rlvr_qwen3_8b", MODE="on", PRINT_OVERRIDES="1")
    assert bad_mode.returncode == 2 and "MODE must be 'btrans' or 'baseline', got 'on'" in bad_mode.stderr
    bad_rank = run_recipe("rlvr_qwen3_8b", LORA_RANK="big", PRINT_OVERRIDES="1")
    assert bad_rank.returncode == 2 and "LORA_RANK" in bad_rank.stderr
    no_cluster = run_recipe("rlvr_qwen3_8b", NNODES="2", DATA_DIR=str(data_dir))
    assert no_cluster.returncode == 2 and "multinode.sh head" in no_cluster.stderr
    no_data = run_recipe("rlvr_qwen3_8b", DATA_DIR=str(tmp_path / "empty"))
    assert no_data.returncode == 2
    assert "data file not found" in no_data.stderr and "python -m data_prep" in no_data.stderr


# --------------------------------------------------------------------------------------- dry-run rejections
REJECTED = {
    "negative_sigma": ("rlvr_qwen3_1.7b", ["btrans.sigma=-0.1"], ["btrans.sigma"]),
    "unknown_rollout_key_appended": ("rlvr_qwen3_1.7b", ["+actor_rollout_ref.rollout.not_a_key=1"],
                                     ["actor_rollout_ref.rollout.not_a_key", "RolloutConfig"]),
    "unknown_rollout_key": ("rlvr_qwen3_1.7b", ["actor_rollout_ref.rollout.not_a_key=1"],
                            ["actor_rollout_ref.rollout.not_a_key"]),
    "unknown_nested_key": ("rlvr_qwen3_1.7b", ["+actor_rollout_ref.actor.optim.betas_typo=1"],
                           ["actor_rollout_ref.actor.optim.betas_typo"]),
    "wrong_type": ("rlvr_qwen3_1.7b", ["actor_rollout_ref.rollout.gpu_memory_utilization=high"],
                   ["actor_rollout_ref.rollout.gpu_memory_utilization"]),
    "batch_not_whole_minibatches": ("rlvr_qwen3_1.7b", ["data.train_batch_size=100"],
                                    ["data.train_batch_size", "actor_rollout_ref.actor.ppo_mini_batch_size",
                                     "dummy sequences"]),
    "ttrl_trained_not_whole_minibatches": ("ttrl_aime24_qwen3_1.7b", ["btrans.ttrl.n_samples=20"],
                                           ["btrans.ttrl.n_samples", "actor_rollout_ref.actor.ppo_mini_batch_size"]),
    "tp_does_not_divide_gpus": ("rlvr_qwen3_8b", ["trainer.n_gpus_per_node=3"],
                                ["actor_rollout_ref.rollout.tensor_model_parallel_size", "trainer.n_gpus_per_node"]),
    "batch_larger_than_dataset": ("ttrl_aime24_qwen3_1.7b", ["data.train_batch_size=32"],
                                  ["data.train_batch_size", "30 rows"]),
    "unregistered_reward_manager": ("rlvr_qwen3_1.7b", ["reward.reward_manager.name=nope"],
                                    ["reward.reward_manager.name", "nope"]),
    "lora_rank_too_large_for_vllm": ("rlvr_qwen3_1.7b", ["actor_rollout_ref.model.lora_rank=1024"],
                                     ["actor_rollout_ref.model.lora_rank"]),
    "max_model_len_too_short": ("rlvr_qwen2.5_math_7b", ["+actor_rollout_ref.rollout.max_model_len=2048"],
                                ["actor_rollout_ref.rollout.max_model_len", "data.max_response_length"]),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_dry_run_rejects_naming_the_key(case, data_dir, capsys):
    recipe, extra, named = REJECTED[case]
    code, out, err = dry_run(recipe_overrides(recipe, *extra, DATA_DIR=str(data_dir)), capsys)
    assert code == 1, out
    assert err.startswith("btrans dry run: INVALID: ")
    for key in named:
        assert key in err, err


def test_dry_run_checks_the_agent_loop_manager_imports(capsys):
    # without +btrans (a plain verl run) nothing pins the manager; the dry run still imports it
    code, _out, err = dry_run(["actor_rollout_ref.rollout.name=vllm", "algorithm.adv_estimator=grpo",
                               "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
                               "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
                               "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=1",
                               "+actor_rollout_ref.rollout.agent.agent_loop_manager_class=no_such.Manager"], capsys)
    assert code == 1
    assert "actor_rollout_ref.rollout.agent.agent_loop_manager_class" in err and "no_such.Manager" in err


def test_dry_run_usage(capsys):
    assert dry_run_main(["--bogus"]) == 2
    assert "unknown option" in capsys.readouterr().err
    assert dry_run_main(["--help"]) == 0
    assert "python -m btrans_verl.verl.dry_run" in capsys.readouterr().out


@pytest.fixture(scope="module")
def local_model(tmp_path_factory) -> Path:
    """A model folder with a 4096-token context (Qwen2.5-Math-7B's), config and tokenizer only: no weights."""
    from btrans_verl.tiny import tiny_config, write_tiny_tokenizer

    dest = tmp_path_factory.mktemp("model")
    config = tiny_config("qwen2", max_positions=4096)
    config.architectures = ["Qwen2ForCausalLM"]  # verl needs it (a folder without it is rejected, rightly)
    config.save_pretrained(dest)
    write_tiny_tokenizer(dest)
    return dest


def test_local_model_is_converted_and_its_context_checked(local_model, data_dir, capsys):
    env = {"MODEL_PATH": str(local_model), "DATA_DIR": str(data_dir)}
    code, out, err = dry_run(recipe_overrides("rlvr_qwen2.5_math_7b", **env), capsys)
    assert code == 0, err
    assert "actor_rollout_ref.model (HFModelConfig, config and tokenizer read)" in out
    code, out, err = dry_run(recipe_overrides("rlvr_qwen2.5_math_7b", "data.max_response_length=4000", **env), capsys)
    assert code == 1
    assert "data.max_response_length" in err and "context of 4096 tokens" in err


def test_local_model_without_chat_template_is_refused(local_model, data_dir, tmp_path, capsys):
    import shutil

    bare = tmp_path / "no_template"
    shutil.copytree(local_model, bare)
    (bare / "chat_template.jinja").unlink()
    code, _out, err = dry_run(recipe_overrides("rlvr_llama3.1_8b", MODEL_PATH=str(bare), DATA_DIR=str(data_dir)),
                              capsys)
    assert code == 1
    assert "actor_rollout_ref.model.custom_chat_template" in err and "no chat template" in err
