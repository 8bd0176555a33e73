import functools
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# test-only plugins (fault injection for real verl runs): see tests/plugins/btrans_faults.py
sys.path.insert(0, str(Path(__file__).parent / "plugins"))

FAMILIES = ("qwen2", "qwen3", "llama")


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@functools.cache
def _composed(overrides: tuple[str, ...]):
    import verl
    from hydra import compose, initialize_config_dir

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose("ppo_trainer", overrides=list(overrides))


@pytest.fixture(scope="session")
def compose_cfg():
    """`compose_cfg(*overrides)`: verl's `ppo_trainer` config composed through Hydra's compose API with our search
    path (what `main_ppo` hands its Ray workers); a fresh copy on every call."""
    return lambda *overrides: _composed(tuple(overrides)).copy()
