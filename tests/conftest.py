import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FAMILIES = ("qwen2", "qwen3", "llama")


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(autouse=True)
def _rollout_latents_wired(request, monkeypatch):
    """In-process config tests check every other rule as if the rollout integration existed; the refusal that
    guards the missing integration has its own test (marked `refuses_unwired`)."""
    if "refuses_unwired" in request.keywords:
        return
    import btrans_verl.config as config

    monkeypatch.setattr(config, "ROLLOUT_LATENTS_WIRED", True)
