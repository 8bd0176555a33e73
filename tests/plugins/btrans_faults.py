"""Test-only fault injection for the failure-hygiene tests: SIGKILL a process of a real verl run at a chosen call.

    BTRANS_TEST_FAULT=vllm_worker_update:2   SIGKILL the vLLM worker process on its 2nd weight update
    BTRANS_TEST_FAULT=trainer_update:2       SIGKILL the FSDP trainer worker (a Ray actor) on its 2nd weight update

Loaded through verl's own hook for external modules, in every process that imports verl (Ray actors and vLLM
workers inherit the environment of the run):

    PYTHONPATH=tests/plugins VERL_USE_EXTERNAL_MODULES=btrans_faults BTRANS_TEST_FAULT=... python -m verl...

`fault_env(...)` builds that environment. The first weight update happens before step 1 (after the model is
loaded), the second at the end of step 1. SIGKILL is what the kernel's OOM killer sends, the commonest way these
processes die on small machines. Nothing in the package knows about this module.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
from pathlib import Path

from btrans_verl.patching import patch, when_imported

FAULT_ENV = "BTRANS_TEST_FAULT"
MODULE = "btrans_faults"

_TARGETS = {
    "vllm_worker_update": ("verl.workers.rollout.vllm_rollout.utils", "vLLMColocateWorkerExtension",
                           "update_weights_from_ipc"),
    "trainer_update": ("verl.workers.engine_workers", "ActorRolloutRefWorker", "update_weights"),
}


def fault_env(fault: str, base: dict | None = None) -> dict:
    """Environment variables that make a verl run load this module and inject `fault` (e.g. "trainer_update:2")."""
    parse_fault(fault)
    env = dict(base or {})
    inherited = env.get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    path = [str(Path(__file__).parent), *filter(None, inherited.split(":"))]
    modules = [m for m in env.get("VERL_USE_EXTERNAL_MODULES", "").split(",") if m]
    env.update({FAULT_ENV: fault, "PYTHONPATH": ":".join(path),
                "VERL_USE_EXTERNAL_MODULES": ",".join([*modules, MODULE])})
    return env


def parse_fault(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, _, count = value.partition(":")
    if name not in _TARGETS:
        raise ValueError(f"{FAULT_ENV}={value!r}: unknown fault {name!r}; known: {sorted(_TARGETS)}")
    return name, int(count or 1)


def install_faults() -> None:
    fault = parse_fault(os.environ.get(FAULT_ENV))
    if fault is None:
        return
    name, at = fault
    module_name, cls_name, method = _TARGETS[name]
    calls = {"n": 0}

    def count_and_maybe_die():
        calls["n"] += 1
        if calls["n"] == at:
            print(f"[btrans_faults] injected fault {name}:{at}: SIGKILL pid {os.getpid()}", file=sys.stderr,
                  flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    def make(original):
        if inspect.iscoroutinefunction(original):
            async def wrapper(*args, **kwargs):
                count_and_maybe_die()
                return await original(*args, **kwargs)
        else:
            def wrapper(*args, **kwargs):
                count_and_maybe_die()
                return original(*args, **kwargs)
        return wrapper

    when_imported(module_name, lambda module: patch(getattr(module, cls_name), method, make, what=f"fault {name}"),
                  key=f"btrans_faults.{name}")


install_faults()
