"""pyproject.toml lists packages explicitly (conf/ ships as btrans_verl.conf): a package left off the list
would silently be missing from wheels."""

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_python_package_is_listed_and_conf_maps_to_btrans_verl_conf():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = set()
    for top in ("btrans_verl", "data_prep", "hydra_plugins"):
        for init in (ROOT / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(ROOT).parts))
    found.add("hydra_plugins")  # a namespace package (no __init__.py), listed for editable installs
    found.add("btrans_verl.conf")
    assert found - listed == set(), f"packages missing from pyproject.toml: {sorted(found - listed)}"
    assert cfg["package-dir"]["btrans_verl.conf"] == "conf"


def test_entry_points_name_importable_objects():
    from importlib.metadata import entry_points

    (vllm_ep,) = [e for e in entry_points(group="vllm.general_plugins") if e.name == "btrans"]
    assert callable(vllm_ep.load())
    (verl_ep,) = [e for e in entry_points(group="verl.plugins") if e.name == "btrans"]
    module = verl_ep.load()
    assert module.LOADED, module.IMPORT_ERROR
