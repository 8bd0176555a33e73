"""The one verl seam B-Trans needs opened: verl's vLLM server actor returns what `collective_rpc` returns.

verl 0.9.1's `vLLMHttpServer.collective_rpc` (`verl/workers/rollout/vllm_rollout/vllm_async_server.py`) awaits
the engine's `collective_rpc` and drops its result. The B-Trans guard reads the vLLM plugin's per-worker counters
and canary reports through it (`replay_buffer.py`), so the patch returns the engine's answer; the call is
otherwise unchanged. Installed by the verl plugin; lands when (if ever) the process imports that module.
"""

from __future__ import annotations

from btrans_verl.verl import patch_verl

SERVER_MODULE = "verl.workers.rollout.vllm_rollout.vllm_async_server"


def _make_collective_rpc(_original):
    async def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        return await self.engine.collective_rpc(method=method, timeout=timeout, args=args, kwargs=kwargs)

    return collective_rpc


def install() -> None:
    patch_verl(SERVER_MODULE, "vLLMHttpServer", "collective_rpc", _make_collective_rpc,
               what="collective_rpc returns its results")
