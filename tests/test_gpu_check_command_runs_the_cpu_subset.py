"""`python -m btrans_verl.gpu_check`, the acceptance command for GPU nodes, runs its CPU subset here: one line per
check, a verdict, exit code 0 when nothing failed and non-zero when a check fails."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # runs python -m btrans_verl.gpu_check (vLLM engines): skipped by `make test-fast`

pytest.importorskip("vllm")

CHECKS = ("v1_hf_replay", "sleep_level2", "warm_cache", "v2_hf_replay", "tp2", "decode_overhead")


def _gpu_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "btrans_verl.gpu_check", *args], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"})


def _lines(proc) -> dict[str, str]:
    return {line.split()[1]: line for line in proc.stdout.splitlines()
            if len(line.split()) > 1 and line.split()[0] in ("PASS", "FAIL", "SKIP", "INFO")}


def test_the_cpu_subset_passes_and_says_what_it_skipped():
    proc = _gpu_check()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = _lines(proc)
    assert set(lines) == set(CHECKS), proc.stdout
    assert lines["v1_hf_replay"].startswith("PASS") and "canary ok" in lines["v1_hf_replay"], lines
    assert all(lines[c].startswith("SKIP") for c in CHECKS[1:]), lines  # each with its reason
    assert "verdict: PASS (1 passed, 0 failed, 5 skipped)" in proc.stdout


def test_a_failing_check_fails_the_command(tmp_path):
    proc = _gpu_check("--model", str(tmp_path))  # an empty folder: the engine cannot start
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _lines(proc)["v1_hf_replay"].startswith("FAIL")
    assert "verdict: FAIL (v1_hf_replay, sleep_level2)" in proc.stdout
