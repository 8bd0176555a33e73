"""Stock `python -m verl.trainer.main_ppo` on this CPU machine, B-Trans on vs off: time to the first training step,
time per step, peak memory. Ratios are on / off, taken in one invocation (the two runs back to back, same model,
data and overrides). `+btrans=off` runs stock vLLM engines (not opted in to B-Trans: no wrapper, no buffer), so
the ratio is against stock, not against our engine with the feature idle.

    python bench/cpu_main_ppo_steps.py --steps 4 --model tiny --task ttrl

Time to first step = seconds from launching main_ppo to verl's first `step:1` log line (Ray, workers, vLLM
start-up, weight sync, first rollout and update). Per-step time = verl's `timing_s/step`, mean over steps >= 2
(step 1 carries vLLM's warm-up). Peak memory = max over time of the summed PSS of every process of the run.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
from pathlib import Path

from btrans_verl.cpu import smoke, train

STAMP = re.compile(r"^\[\s*([0-9.]+)s\].*step:1 - ")


def first_step_s(log: Path) -> float:
    for line in log.read_text(errors="replace").splitlines():
        m = STAMP.match(line)
        if m:
            return float(m.group(1))
    return float("nan")


def one(mode: str, args: argparse.Namespace, model: Path, data: Path, root: Path) -> dict:
    workdir = root / f"{args.task}-{mode}"
    overrides = train.build_args(args.task, mode, model, data, workdir, args.steps, batch=args.batch, n=args.n,
                                 n_samples=args.n_samples, response_length=args.response_length,
                                 lr=train.DATA["gsm8k"].lr, extra=["trainer.save_freq=-1"])
    result = smoke.run_main_ppo(overrides, workdir / "main_ppo.log", timeout_s=1200, env=smoke.main_ppo_env(),
                                cwd=workdir)
    if result.returncode != 0:
        raise SystemExit(f"{mode} run failed ({result.returncode}); see {result.log_path}")
    later = [m["timing_s/step"] for m in result.step_metrics if m["step"] >= 2]
    return {"first_step_s": first_step_s(result.log_path), "step_s": statistics.mean(later),
            "step_s_all": [round(m["timing_s/step"], 2) for m in result.step_metrics],
            "peak_gib": result.peak_pss_gib, "wall_s": result.wall_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=["ttrl", "rlvr"], default="ttrl")
    p.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--n-samples", type=int, default=2)
    p.add_argument("--response-length", type=int, default=32)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="btrans_bench_"))
    if args.model == "tiny":
        model = smoke.write_tiny_model(root / "tiny-qwen3")
    else:
        from btrans_verl.models import smollm2_dir

        model = smollm2_dir()
    data = smoke.write_gsm8k(root / "gsm8k")
    off = one("off", args, model, data, root)
    on = one("on", args, model, data, root)
    print(f"| {args.model} {args.task}, {args.batch} prompts x {args.n}, {args.response_length} tokens "
          "| off | on | on/off |")
    print("|---|---|---|---|")
    for key, label in (("first_step_s", "time to first step (s)"), ("step_s", "time per step, steps >= 2 (s)"),
                       ("peak_gib", "peak memory, all processes (GiB PSS)"), ("wall_s", "whole run (s)")):
        print(f"| {label} | {off[key]:.2f} | {on[key]:.2f} | {on[key] / off[key]:.3f} |")
    print(f"per-step times: off {off['step_s_all']}, on {on['step_s_all']}")


if __name__ == "__main__":
    main()
