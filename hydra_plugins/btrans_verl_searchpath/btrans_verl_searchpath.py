"""Make btrans-verl's config groups visible to any Hydra app, in particular verl's stock entry point:

    python -m verl.trainer.main_ppo +btrans=on <overrides>

Hydra discovers this class by scanning the `hydra_plugins` namespace package (which must have no
`__init__.py` of its own) and calls `manipulate_search_path` before composing. We *append*
`pkg://btrans_verl.conf`: the groups live under `btrans/`, which verl's `config/` does not use, so nothing of
verl's is shadowed. `pkg://` resolves through importlib.resources, so it works from an editable install, a
wheel, or a zip alike. The package `btrans_verl.conf` is the repository's top-level `conf/` directory
(mapped in pyproject.toml).

Only Hydra is imported here: every Hydra app in the environment imports this module.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

PROVIDER = "btrans-verl"
CONFIG_PACKAGE = "pkg://btrans_verl.conf"


class BTransVerlSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider=PROVIDER, path=CONFIG_PACKAGE)
