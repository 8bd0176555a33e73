"""A 2-step GRPO smoke run of stock `python -m verl.trainer.main_ppo` on CPU, fully offline.

    BTRANS_CPU=1 python -m btrans_verl.cpu.smoke --workdir btrans_runs/smoke --steps 2

builds (once) a tiny random Qwen3 (head_dim 64) with a byte-level BPE tokenizer trained on the vendored GSM8K
questions, converts the vendored GSM8K to verl parquet (`data_prep`), then runs verl's own entry point with the
CPU overrides (`btrans_verl.cpu.CPU_OVERRIDES`) and the standard GSM8K rule reward, under a wall-clock limit.

The run is started in its own session (setsid); whatever happens, every process left in that session (Ray's
GCS/raylet/workers, vLLM processes) is killed afterwards, so no Ray cluster or vLLM process survives the run and
no unrelated process is touched. Peak memory is the maximum over time of the summed PSS (proportional set size:
shared pages split between sharers) of all processes of the session.

`--print-command` prints the exact `main_ppo` command instead of running it.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# The tiny model and its tokenizer are built by `btrans_verl.tiny` (the product's tiny models); re-exported here.
from btrans_verl.tiny import (  # noqa: E402,F401
    CHAT_TEMPLATE,
    FORMAT_ANSWERS,
    SPECIAL_TOKENS,
    teach_answer_format,
    write_tiny_model,
    write_tiny_tokenizer,
)

# verl's built-in rule rewards are chosen by data_source (verl/utils/reward_score/__init__.py:44); data_prep
# writes "gsm8k", which verl does not know ("Reward function is not implemented for data_source='gsm8k'").
VERL_GSM8K_SOURCE = "openai/gsm8k"


def write_gsm8k(dest: Path) -> Path:
    """verl parquet of the vendored GSM8K slices: dest/train.parquet (256 rows), dest/test.parquet (64 rows).

    `data_source` is renamed to verl's id "openai/gsm8k" so that verl's standard GSM8K reward scores it.
    """
    dest = Path(dest)
    if not (dest / "train.parquet").is_file():
        import pandas as pd

        from data_prep.cli import main as data_prep_main

        raw = dest.with_name(dest.name + ".data_prep")
        if data_prep_main(["gsm8k", "--src", "vendor", "--out", str(raw)]) != 0:
            raise RuntimeError("data_prep gsm8k failed")
        dest.mkdir(parents=True, exist_ok=True)
        for split in ("test", "train"):
            frame = pd.read_parquet(raw / f"{split}.parquet")
            frame["data_source"] = VERL_GSM8K_SOURCE
            frame.to_parquet(dest / f"{split}.parquet")
    return dest


# ------------------------------------------------------------------------------------------------ command
def main_ppo_args(model: Path, data: Path, workdir: Path, steps: int = 2, batch: int = 4, n: int = 2,
                  response_length: int = 32, extra: list[str] | None = None, *, train_file: Path | None = None,
                  lr: float = 1e-4, save_freq: int = -1, resume_mode: str = "disable",
                  experiment_name: str = "smoke") -> list[str]:
    """Hydra overrides for a tiny GRPO run (B-Trans off, standard GSM8K rule reward) plus the CPU overrides.
    `train_file` defaults to `data`/train.parquet; checkpoints go to `workdir`/checkpoints."""
    from btrans_verl.cpu import CPU_OVERRIDES

    run = [
        "algorithm.adv_estimator=grpo",
        f"data.train_files={train_file or data / 'train.parquet'}",
        f"data.val_files={data}/test.parquet",
        f"data.train_batch_size={batch}",
        f"data.val_batch_size={batch}",
        "data.max_prompt_length=256",
        f"data.max_response_length={response_length}",
        "data.filter_overlong_prompts=true",
        "data.dataloader_num_workers=0",
        f"actor_rollout_ref.model.path={model}",
        "actor_rollout_ref.model.use_remove_padding=false",
        f"actor_rollout_ref.actor.optim.lr={lr}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={batch}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={batch * n}",
        "actor_rollout_ref.actor.use_kl_loss=true",
        "actor_rollout_ref.actor.kl_loss_coef=0.001",
        "actor_rollout_ref.actor.entropy_coeff=0",
        f"actor_rollout_ref.rollout.n={n}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={batch * n}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={batch * n}",
        "actor_rollout_ref.rollout.max_model_len=512",
        "actor_rollout_ref.rollout.max_num_batched_tokens=2048",
        "algorithm.use_kl_in_reward=false",
        "trainer.logger=[console]",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        f"trainer.save_freq={save_freq}",
        f"trainer.resume_mode={resume_mode}",
        f"trainer.default_local_dir={workdir}/checkpoints",
        "trainer.project_name=btrans_cpu",
        f"trainer.experiment_name={experiment_name}",
        f"trainer.total_training_steps={steps}",
    ]
    return [*CPU_OVERRIDES, *run, *(extra or [])]


def main_ppo_env(base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env["BTRANS_CPU"] = "1"
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache per vLLM engine
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray's dashboard and usage stats are useless here and cost start-up time/memory.
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


# ------------------------------------------------------------------------------------------------ running
def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is `sid`."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid and not _is_zombie(int(entry)):
                    pids.append(int(entry))
            except (ProcessLookupError, PermissionError):
                pass
    return pids


def _pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:200]
    except OSError:
        return "?"


def kill_session(sid: int, grace: float = 5.0) -> int:
    """SIGTERM, then SIGKILL, every process whose session id is `sid`. Returns how many were left at the end."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        pids = session_pids(sid)
        if not pids:
            return 0
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and session_pids(sid):
            time.sleep(0.2)
    return len(session_pids(sid))


@dataclass
class RunResult:
    returncode: int
    wall_s: float
    peak_pss_gib: float
    peak_processes: int
    log_path: Path
    leftover_processes: int  # processes of the run still alive `leftover_grace_s` after the driver exited (-1: timeout)
    step_metrics: list[dict] = field(default_factory=list)
    timed_out: bool = False
    leftover_commands: list[str] = field(default_factory=list)


_STEP_LINE = re.compile(r"step:(\d+) - (.*)")


def parse_step_metrics(text: str) -> list[dict]:
    """verl's console logger prints `step:N - key:value - key:value ...` per training step."""
    steps = []
    for line in text.splitlines():
        match = _STEP_LINE.search(line)
        if not match:
            continue
        metrics = {"step": int(match.group(1))}
        for item in match.group(2).split(" - "):
            key, sep, value = item.rpartition(":")
            if sep:
                try:
                    metrics[key.strip()] = float(value)
                except ValueError:
                    metrics[key.strip()] = value.strip()
        steps.append(metrics)
    return steps


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds run_main_ppo, which then kills the run's whole session


def run_main_ppo(args: list[str], log_path: Path, timeout_s: float = 600, env: dict | None = None,
                 cwd: Path | None = None, leftover_grace_s: float = 15.0) -> RunResult:
    """Run `python -m verl.trainer.main_ppo ARGS` in a new session; always kill the session afterwards (also when
    this process is interrupted or, from the main thread, sent SIGTERM)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", *args]
    peak = {"pss": 0, "n": 0}
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env or main_ppo_env(),
                                cwd=cwd, start_new_session=True)
        sid = proc.pid

        def copy_output():
            # Prefix every line with the seconds since start: the log then shows where the time goes.
            for raw in iter(proc.stdout.readline, b""):
                log.write(f"[{time.monotonic() - start:7.1f}s] {raw.decode(errors='replace')}")
                log.flush()

        copier = threading.Thread(target=copy_output, daemon=True)
        copier.start()
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                pids = session_pids(sid)
                total = sum(_pss_bytes(p) for p in pids)
                if total > peak["pss"]:
                    peak["pss"], peak["n"] = total, len(pids)
                stop.wait(1.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        except BaseException:
            kill_session(sid)
            raise
        finally:
            wall = time.monotonic() - start
            stop.set()
            sampler.join()
            # Hygiene check: what is still running once the driver is gone (after a grace period)?
            deadline = time.monotonic() + (leftover_grace_s if not timed_out else 0)
            while proc.poll() is not None and session_pids(sid) and time.monotonic() < deadline:
                time.sleep(0.5)
            leftover = len(session_pids(sid)) if proc.poll() is not None else -1
            leftover_cmds = [_cmdline(p) for p in session_pids(sid)] if leftover > 0 else []
            kill_session(sid)
            if proc.poll() is None:
                proc.wait()
            copier.join(timeout=10)
    text = log_path.read_text(errors="replace")
    return RunResult(returncode=proc.returncode if not timed_out else 124, wall_s=wall,
                     peak_pss_gib=peak["pss"] / 2**30, peak_processes=peak["n"], log_path=log_path,
                     leftover_processes=leftover, step_metrics=parse_step_metrics(text), timed_out=timed_out,
                     leftover_commands=leftover_cmds)


def prepare(workdir: Path, family: str = "qwen3") -> tuple[Path, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    return write_tiny_model(workdir / f"tiny-{family}", family=family), write_gsm8k(workdir / "gsm8k")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m btrans_verl.cpu.smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("btrans_runs/smoke"))
    parser.add_argument("--family", default="qwen3", choices=["qwen2", "qwen3", "llama"])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--print-command", action="store_true")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for main_ppo")
    ns = parser.parse_args(argv)
    workdir = ns.workdir.resolve()
    model, data = prepare(workdir, ns.family)
    args = main_ppo_args(model, data, workdir, steps=ns.steps, extra=ns.overrides)
    if ns.print_command:
        env = " ".join(f"{k}={v}" for k, v in main_ppo_env({}).items())
        print(f"{env} {shlex.quote(sys.executable)} -m verl.trainer.main_ppo " + " ".join(map(shlex.quote, args)))
        return 0
    result = run_main_ppo(args, workdir / "main_ppo.log", timeout_s=ns.timeout, env=main_ppo_env(), cwd=workdir)
    for metrics in result.step_metrics:
        keys = ("step", "training/global_step", "critic/score/mean", "actor/pg_loss", "actor/kl_loss",
                "training/rollout_actor_probs_pearson_corr", "timing_s/step")
        print({k: metrics[k] for k in keys if k in metrics})
    print(f"returncode={result.returncode} timed_out={result.timed_out} wall={result.wall_s:.1f}s "
          f"peak_pss={result.peak_pss_gib:.2f}GiB over {result.peak_processes} processes "
          f"steps_logged={len(result.step_metrics)} leftover_after_exit={result.leftover_processes} "
          f"log={result.log_path}")
    for command in result.leftover_commands:
        print(f"left behind: {command}")
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
