"""verl plugin (entry point `verl.plugins: btrans`): imported by `import verl` in every verl process.

What it does, in every process (driver, TaskRunner, trainer workers, agent-loop / reward workers, vLLM server
actors, vLLM workers), without importing anything heavy at plugin time (post-import hooks,
`btrans_verl.cpu.hooks.when_imported`, so verl's lazy platform choice is not frozen early):

* the CPU platform and patches, when `BTRANS_CPU=1` (`btrans_verl.cpu`);
* registers the `btrans` reward manager (`btrans_verl.reward_manager`) the moment verl imports its
  reward-manager registry, so `reward.reward_manager.name=btrans` resolves wherever verl looks it up;
* builds the actor and reference as the mean mind when btrans.mu != 0 (`btrans_verl.actor`);
* makes verl's vLLM server actor return what `collective_rpc` returns (verl 0.9.1 awaits and drops it;
  `vllm_async_server.py`, `vLLMHttpServer.collective_rpc`), so the trainer can read the vLLM plugin's B-Trans
  counters (`btrans_verl.population`).

verl imports plugin modules and swallows their import errors at DEBUG level, so this module must not fail
silently: anything that goes wrong is logged at ERROR and remembered in `IMPORT_ERROR`, and a run with
`+btrans=on` checks `btrans_verl.verl_plugin.LOADED` before Ray starts.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("btrans_verl")
LOADED = False
IMPORT_ERROR: BaseException | None = None

SERVER_MODULE = "verl.workers.rollout.vllm_rollout.vllm_async_server"
REWARD_REGISTRY_MODULE = "verl.experimental.reward_loop.reward_manager"


def _register_reward_manager(_module) -> None:
    import btrans_verl.reward_manager  # noqa: F401  (registers "btrans")


def _return_collective_rpc_results(module) -> None:
    from btrans_verl.cpu.versions import require_verl

    require_verl("collective_rpc returns its results")
    server = module.vLLMHttpServer
    if getattr(server.collective_rpc, "_btrans", False):
        return

    async def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        return await self.engine.collective_rpc(method=method, timeout=timeout, args=args, kwargs=kwargs)

    collective_rpc._btrans = True
    collective_rpc.__doc__ = server.collective_rpc.__doc__
    server.collective_rpc = collective_rpc


try:
    from btrans_verl import cpu as _cpu
    from btrans_verl.cpu.hooks import when_imported

    _cpu.apply_verl_patches()
    when_imported(REWARD_REGISTRY_MODULE, _register_reward_manager)
    when_imported(SERVER_MODULE, _return_collective_rpc_results)
    from btrans_verl import actor as _actor

    _actor.install()
    LOADED = True
except BaseException as e:  # noqa: BLE001 - verl would swallow it: log loudly, keep it for the driver's check
    IMPORT_ERROR = e
    logger.error("btrans-verl: the verl plugin failed to load: %s: %s", type(e).__name__, e, exc_info=True)
