import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FAMILIES = ("qwen2", "qwen3", "llama")


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param
