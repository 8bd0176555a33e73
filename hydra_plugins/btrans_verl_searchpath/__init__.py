"""Hydra search-path plugin of btrans-verl (see `btrans_verl_searchpath.py`). Hydra imports every module under
the `hydra_plugins` namespace package when it composes a config, so this package stays import-light."""
