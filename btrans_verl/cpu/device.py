"""A `torch.cuda`-shaped device module backed by `torch.cpu`: what verl's CPU platform returns as
`device_module` (so `verl.utils.device.get_torch_device()` is this module).

verl calls device-module functions unconditionally, e.g. `get_torch_device().empty_cache()` (27 sites),
`mem_get_info` (`verl/utils/profiler/performance.py:57`), `get_rng_state`/`set_rng_state`
(`verl/utils/checkpoint/checkpoint_manager.py`), `set_per_process_memory_fraction`, `ipc_collect`,
`memory_allocated/reserved`, `max_memory_*` (`verl/workers/engine_workers.py:219-220`). `torch.cpu` (torch 2.13)
lacks most of them. This module supplies them:

- memory queries report host memory: `memory_allocated`/`memory_reserved` = this process's resident set size,
  `max_memory_*` = its peak RSS, `mem_get_info` = (available, total) system RAM. verl's memory metrics then
  describe real CPU memory use instead of raising;
- cache/allocator/IPC functions are no-ops; RNG functions use torch's (CPU) default generator;
- anything not defined here falls through to `torch.cpu` (`Stream`, `stream`, `current_stream`, `Event`,
  `synchronize`, `amp`, ...).
"""

from __future__ import annotations

import os
import platform as _platform
import resource
from types import SimpleNamespace

import torch

NAME = "cpu"


def is_available() -> bool:
    return True


def is_initialized() -> bool:
    return True


def init() -> None:
    return None


def device_count() -> int:
    return 1


def current_device() -> str:
    # torch.cpu.current_device() is also the string "cpu"; torch accepts it everywhere verl passes
    # get_device_id() as a device (`.to(...)`, `device=`, `torch.device(...)`), whereas an int would mean
    # "accelerator index" and fail on a CPU-only torch.
    return NAME


def set_device(device=None) -> None:
    return None


def synchronize(device=None) -> None:
    return None


def empty_cache() -> None:
    return None


def ipc_collect() -> None:
    return None


def set_per_process_memory_fraction(fraction: float, device=None) -> None:
    return None


def reset_peak_memory_stats(device=None) -> None:
    return None


def reset_accumulated_memory_stats(device=None) -> None:
    return None


def reset_max_memory_allocated(device=None) -> None:
    return None


def reset_max_memory_cached(device=None) -> None:
    return None


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_allocated(device=None) -> int:
    return _rss_bytes()


def memory_reserved(device=None) -> int:
    return _rss_bytes()


def max_memory_allocated(device=None) -> int:
    return peak_rss_bytes()


def max_memory_reserved(device=None) -> int:
    return peak_rss_bytes()


def memory_stats(device=None) -> dict:
    return {"allocated_bytes.all.current": _rss_bytes(), "allocated_bytes.all.peak": peak_rss_bytes()}


def _meminfo() -> tuple[int, int]:
    """(available, total) bytes of system RAM."""
    values = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    total = values.get("MemTotal") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    available = values.get("MemAvailable", values.get("MemFree", 0))
    return available, total


def mem_get_info(device=None) -> tuple[int, int]:
    return _meminfo()


def get_device_name(device=None) -> str:
    return _platform.processor() or _platform.machine() or NAME


def get_device_properties(device=None):
    return SimpleNamespace(name=get_device_name(), total_memory=_meminfo()[1],
                           multi_processor_count=os.cpu_count() or 1, major=None, minor=None)


def get_device_capability(device=None):
    return (None, None)


def get_rng_state(device=None) -> torch.Tensor:
    return torch.get_rng_state()


def set_rng_state(new_state: torch.Tensor, device=None) -> None:
    torch.set_rng_state(new_state)


def get_rng_state_all() -> list[torch.Tensor]:
    return [torch.get_rng_state()]


def set_rng_state_all(new_states) -> None:
    torch.set_rng_state(list(new_states)[0])


def manual_seed(seed: int) -> None:
    torch.manual_seed(seed)


def manual_seed_all(seed: int) -> None:
    torch.manual_seed(seed)


def seed() -> None:
    torch.seed()


def seed_all() -> None:
    torch.seed()


def initial_seed() -> int:
    return torch.initial_seed()


def __getattr__(name: str):
    # Module-level fallback (PEP 562): Stream, stream, current_stream, Event, amp, ... come from torch.cpu.
    try:
        return getattr(torch.cpu, name)
    except AttributeError:
        raise AttributeError(f"CPU device module (btrans_verl.cpu.device) has no attribute {name!r}") from None
