"""B-Trans inside verl: every rollout trajectory gets its own mind, the update stays deterministic.

    python -m verl.trainer.main_ppo +btrans=on <overrides>      # conf/btrans/on.yaml wires the pieces below

Data flow of one training step (verl 0.9.1's v1 trainer), and the module that owns each part:

    driver     settings.py      btrans.* validated before Ray starts (Hydra callback; dry_run.py + checks.py
                                 run the same checks without Ray)
    rollout    rollout.py       the agent-loop manager gives each trajectory a mind (step-unique seed); its
                                 workers send the mind to vLLM with the request ------> btrans_verl.vllm
                                 (TTRL: a prompt's n_votes candidates are gathered and handed over whole)
    rewards    reward_managers.py  in verl's reward-loop workers: RLVR scores each answer against ground truth;
                                 TTRL votes over the group and rewards every candidate against the majority
    sampling   replay_buffer.py B-Trans metrics, and the guard: vLLM's counters and canary prove the latents
                                 were applied, or the run stops
    update     mean_shift.py    the actor and reference train with the mean mind z = mu (nothing when mu = 0)
    (adaptive) exploration.py   btrans.adaptive_sigma: sigma steered between steps from the sampled batch's
                                 informative groups (read by rollout.py, updated by replay_buffer.py)

and, in every process: plugin.py (verl's `verl.plugins` entry point, which installs the rest), seams.py (one
verl seam: its vLLM server returns what `collective_rpc` returns), hygiene.py (a dead Ray actor or vLLM engine
ends the run instead of hanging it). Every change to verl goes through `btrans_verl.patching`, guarded by
`require_verl`: the patches were checked against the verl releases in `SUPPORTED_VERL` (REQUIRED_VERL.txt).
"""

from __future__ import annotations

from collections.abc import Callable

from btrans_verl.patching import patch, require_version, when_imported

SUPPORTED_VERL = ("0.9.1",)


def require_verl(what: str) -> str:
    """verl's installed version, or UnsupportedVersionError naming it and the patch `what` that refused."""
    return require_version("verl", SUPPORTED_VERL, what)


def patch_verl(module_name: str, owner: str, name: str, make: Callable, *, what: str) -> None:
    """When (if ever) this process imports `module_name`: check the verl release (`require_verl`), then replace
    `<owner>.<name>` of that module by `make(original)` (`btrans_verl.patching.patch`)."""

    def apply(module) -> None:
        require_verl(what)
        patch(getattr(module, owner), name, make, what=what)

    when_imported(module_name, apply, key=f"btrans.verl.{module_name}.{owner}.{name}")
