"""verl plugin (entry point `verl.plugins: btrans`): imported by `import verl` in every verl process.

What it installs, in every process (driver, TaskRunner, trainer workers, agent-loop / reward workers, vLLM server
actors, vLLM workers), without importing anything heavy at plugin time (post-import hooks of
`btrans_verl.patching`, so verl's lazy platform choice is not frozen early):

* the `btrans` and `btrans_ttrl` reward managers (`reward_managers.py`), registered the moment verl imports its
  reward-manager registry, so `reward.reward_manager.name` resolves wherever verl looks it up;
* the mean-shift actor and reference when btrans.mu != 0 (`mean_shift.py`);
* verl's vLLM server returning what `collective_rpc` returns (`seams.py`), so the guard can read vLLM's counters;
* `btrans/mean_mind_logprob`, the actor's (mean mind's) log-prob per token of each step's samples
  (`trainer_metrics.py`);
* failure hygiene (`hygiene.py`): a dead Ray actor or vLLM engine ends the run instead of hanging it.

verl imports plugin modules and swallows their import errors at DEBUG level, so this module must not fail
silently: anything that goes wrong is logged at ERROR and remembered in `IMPORT_ERROR`, and a run with
`+btrans=on` checks `btrans_verl.verl.plugin.LOADED` before Ray starts (`settings.check_verl_plugin_loaded`).
"""

from __future__ import annotations

import logging

logger = logging.getLogger("btrans_verl")
LOADED = False
IMPORT_ERROR: BaseException | None = None

REWARD_REGISTRY_MODULE = "verl.experimental.reward_loop.reward_manager"


def _register_reward_managers(_module) -> None:
    import btrans_verl.verl.reward_managers  # noqa: F401  (registers "btrans" and "btrans_ttrl")


try:
    from btrans_verl.patching import when_imported
    from btrans_verl.verl import hygiene, mean_shift, seams, trainer_metrics

    when_imported(REWARD_REGISTRY_MODULE, _register_reward_managers)
    seams.install()
    mean_shift.install()
    trainer_metrics.install()
    hygiene.install()
    LOADED = True
except BaseException as e:  # noqa: BLE001 - verl would swallow it: log loudly, keep it for the driver's check
    IMPORT_ERROR = e
    logger.error("btrans-verl: the verl plugin failed to load: %s: %s", type(e).__name__, e, exc_info=True)
