"""verl plugin (entry point `verl.plugins: btrans`): imported by `import verl` in every verl process.

verl imports plugin modules and swallows their import errors at DEBUG level, so this module must not fail
silently: anything that goes wrong is logged at ERROR and remembered in `IMPORT_ERROR`, and a run with
`+btrans=on` checks `btrans_verl.verl_plugin.LOADED` before Ray starts.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("btrans_verl")
LOADED = False
IMPORT_ERROR: BaseException | None = None

try:
    from btrans_verl import cpu as _cpu

    if hasattr(_cpu, "apply_verl_patches"):
        _cpu.apply_verl_patches()
    LOADED = True
except BaseException as e:  # noqa: BLE001 - verl would swallow it: log loudly, keep it for the driver's check
    IMPORT_ERROR = e
    logger.error("btrans-verl: the verl plugin failed to load: %s: %s", type(e).__name__, e, exc_info=True)
