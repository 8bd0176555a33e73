"""Fault injection for the failure-hygiene tests (off unless `BTRANS_CPU_FAULT` is set).

    BTRANS_CPU_FAULT=vllm_worker_update:2   SIGKILL the vLLM worker process on its 2nd weight update
    BTRANS_CPU_FAULT=trainer_update:2       SIGKILL the FSDP trainer worker (a Ray actor) on its 2nd weight update

The first weight update happens before step 1 (after the model is loaded), the second at the end of step 1.
SIGKILL is what the kernel's OOM killer sends, the commonest way these processes die on small machines.
"""

from __future__ import annotations

import functools
import os
import signal
import sys

from btrans_verl.cpu.hooks import when_imported

FAULT_ENV = "BTRANS_CPU_FAULT"

_TARGETS = {
    "vllm_worker_update": ("verl.workers.rollout.vllm_rollout.utils", "vLLMColocateWorkerExtension",
                           "update_weights_from_ipc"),
    "trainer_update": ("verl.workers.engine_workers", "ActorRolloutRefWorker", "update_weights"),
}


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

    def _patch(module):
        cls = getattr(module, cls_name)
        original = cls.__dict__[method]
        calls = {"n": 0}

        def die():
            print(f"[btrans_verl.cpu.faults] injected fault {name}:{at}: SIGKILL pid {os.getpid()}",
                  file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        # Ray's @register wraps methods with attributes Ray/verl read; keep them via functools.wraps.
        if _is_coroutine(original):
            @functools.wraps(original)
            async def wrapper(*args, **kwargs):
                calls["n"] += 1
                if calls["n"] == at:
                    die()
                return await original(*args, **kwargs)
        else:
            @functools.wraps(original)
            def wrapper(*args, **kwargs):
                calls["n"] += 1
                if calls["n"] == at:
                    die()
                return original(*args, **kwargs)

        setattr(cls, method, wrapper)

    when_imported(module_name, _patch, key=f"btrans.cpu.fault.{name}")


def _is_coroutine(fn) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn)
