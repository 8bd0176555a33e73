"""Dry run: compose, resolve and validate a verl run config exactly as `python -m verl.trainer.main_ppo` would,
without GPUs, without Ray and without the model's files.

    python -m btrans_verl.verl.dry_run +btrans=on actor_rollout_ref.model.path=Qwen/Qwen3-1.7B <overrides...>
    DRY_RUN=1 bash recipes/rlvr_qwen3_1.7b.sh          # every recipe runs this with its own overrides

Exit status 0 with a short summary (model, task, B-Trans on/off, sigma, group size, batch sizes, GPUs), or 1 with
the error naming the offending key (2: bad command line). What it checks:

1. composition: Hydra's compose API on verl's own config directory (`verl/trainer/config`, config `ppo_trainer`,
   the one `main_ppo`'s `@hydra.main` uses) plus btrans-verl's search path (the installed Hydra plugin), with the
   same overrides; then every interpolation is resolved;
2. B-Trans: `btrans_verl.verl.settings.validate_run_config` (what the Hydra callback runs before Ray) and the verl
   plugin's load check;
3. verl's keys and values: the nodes verl turns into its dataclasses (actor, reference, rollout, algorithm, and
   critic / distillation when used) are checked key by key against their dataclass, scalar types included, then
   converted with `verl.utils.config.omega_conf_to_dataclass` (the reference after the key renames verl's engine
   worker applies) so that the dataclasses' own `__post_init__` checks run. The model node is converted only when
   its path is a local folder (conversion reads the model's config and tokenizer; then its context length and
   chat template are checked too); otherwise its keys are checked and the summary says so. `reward` is read by
   verl as a plain mapping: its reward-manager keys are checked, and the manager must be registered;
4. verl's `validate_config` (what `main_ppo.main` runs before Ray), and the batch arithmetic verl only checks at
   run time on the GPUs (`btrans_verl.verl.checks.check_batch_arithmetic`);
5. the components the config names by import path import: the agent-loop manager class, the replay-buffer
   sampler;
6. data files that exist here: their row counts against `data.train_batch_size` (missing files are reported,
   not fatal: the data may live on the cluster only).

Steps 3-6 live in `btrans_verl.verl.checks`.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from btrans_verl.verl.checks import (
    DryRunError,
    Findings,
    check_batch_arithmetic,
    check_components,
    check_data,
    check_verl_dataclasses,
    get,
)

__all__ = ["DryRunError", "Report", "compose_run_config", "dry_run", "main"]

USAGE = """usage: python -m btrans_verl.verl.dry_run [--print-config] <hydra overrides...>

Composes the config `python -m verl.trainer.main_ppo <hydra overrides...>` would run, validates it without GPUs or
Ray, prints a summary and exits 0, or exits 1 naming the offending key.
  --print-config   also print the resolved config (YAML)
"""


def verl_config_dir() -> str:
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        raise DryRunError("verl is not installed in this environment")
    return str(Path(spec.submodule_search_locations[0]) / "trainer" / "config")


# ------------------------------------------------------------------------------------------------ composition
def compose_run_config(overrides: Sequence[str]):
    """The config `python -m verl.trainer.main_ppo <overrides>` composes (without Hydra's own `hydra` node)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=verl_config_dir(), version_base=None):
            return compose("ppo_trainer", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise DryRunError(f"composition failed: {type(e).__name__}: {e}") from e


def resolve(cfg):
    """A resolved copy of `cfg`; an interpolation that fails names its key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    cfg = cfg.copy()
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        raise DryRunError(f"{getattr(e, 'full_key', None) or '?'}: cannot resolve: {e}") from e
    return cfg


# ------------------------------------------------------------------------------------------------- summary
@dataclass
class Report:
    """What the dry run found; `lines()` is the summary it prints."""

    cfg: object
    settings: object = None
    found: Findings = field(default_factory=Findings)
    plan: dict = field(default_factory=dict)
    data: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        cfg, s, p = self.cfg, self.settings, self.plan
        model = get(cfg, "actor_rollout_ref.model.path")
        if s is None:
            method = "no btrans node (plain verl run)"
        elif s.enable:
            method = (f"B-Trans on (sigma {s.sigma} {s.sigma_scale}, mu {s.mu}, {s.granularity}, "
                      f"val_mind {s.val_mind})")
        else:
            method = "baseline (+btrans=off: B-Trans disabled, all else equal)"
        task = s.task if s is not None else "-"
        if s is not None and s.task == "ttrl":
            task += f" (n_votes {s.ttrl.n_votes}, n_samples {s.ttrl.n_samples})"
        rank = get(cfg, "actor_rollout_ref.model.lora_rank") or 0
        lora = (f"rank {rank}, alpha {get(cfg, 'actor_rollout_ref.model.lora_alpha')}" if rank > 0
                else "off (full-parameter training)")
        out = [
            f"model     {model}",
            f"task      {task}; {method}",
            f"training  {get(cfg, 'algorithm.adv_estimator')}, lr {get(cfg, 'actor_rollout_ref.actor.optim.lr')}, "
            f"LoRA {lora}, total_epochs {get(cfg, 'trainer.total_epochs')}",
            f"rollout   {get(cfg, 'actor_rollout_ref.rollout.name')}, n {p['n']}, temperature "
            f"{get(cfg, 'actor_rollout_ref.rollout.temperature')}, prompt {get(cfg, 'data.max_prompt_length')} + "
            f"response {get(cfg, 'data.max_response_length')} tokens, {p['infer_world']} GPU(s) per vLLM replica",
            f"batch     {p['prompts']} prompts/step -> {p['trained']} trained trajectories; mini-batch "
            f"{p['mini_prompts']} prompts = {p['mini']} trajectories -> {p['updates']} update(s)/step; "
            f"micro {p['micro']}",
            f"GPUs      {p['nnodes']} node(s) x {p['per_node']} = {p['n_gpus']} (actor dp {p['dp']}, "
            f"{p['n_gpus'] // p['infer_world']} vLLM replica(s))",
        ]
        out += [f"data      {d}" for d in self.data]
        out.append(f"verl      converted: {', '.join(self.found.converted)}")
        out += [f"note      {n}" for n in self.found.notes]
        return out


# ---------------------------------------------------------------------------------------------------- main
def dry_run(overrides: Sequence[str]) -> Report:
    """Run every check on the config of `main_ppo <overrides>`; raise DryRunError naming the key, or return the
    report."""
    import verl  # noqa: F401 - loads verl's plugins, btrans-verl's among them, as main_ppo does

    cfg = resolve(compose_run_config(overrides))
    report = Report(cfg)
    with warnings.catch_warnings():
        # verl warns, on import, about every optional engine it cannot import (megatron, veomni, ...)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"verl\.")
        _check(cfg, report)
    if any("NOT FOUND HERE" in d for d in report.data):
        report.found.notes.append("data files missing here are not an error (they may live on the cluster); make "
                                  "them with `python -m data_prep` (see recipes/README.md)")
    return report


def _check(cfg, report: Report) -> None:
    from btrans_verl.verl.settings import check_verl_plugin_loaded, validate_run_config

    try:
        report.settings = validate_run_config(cfg)
        if report.settings is not None:
            check_verl_plugin_loaded()
    except (ValueError, RuntimeError) as e:
        raise DryRunError(f"btrans: {e}") from e
    report.plan = check_batch_arithmetic(cfg, report.settings)
    check_verl_dataclasses(cfg, report.found)
    check_components(cfg)
    report.data = check_data(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE, end="")
        return 0
    print_config = "--print-config" in args
    args = [a for a in args if a != "--print-config"]
    flags = [a for a in args if a.startswith("-")]
    if flags:
        print(f"btrans dry run: unknown option(s) {flags}\n{USAGE}", file=sys.stderr, end="")
        return 2
    try:
        report = dry_run(args)
    except DryRunError as e:
        print(f"btrans dry run: INVALID: {e}", file=sys.stderr)
        return 1
    if print_config:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(report.cfg))
    print("btrans dry run: OK (config composed, resolved and validated; no GPU, no Ray)")
    for line in report.lines():
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
