"""The one patch helper (`btrans_verl.patching`) and the package's seams: every patch is marked, idempotent and
refuses a moved target; product code never imports the CPU platform; no module keeps its own patch marker."""

from __future__ import annotations

import ast
import types
from pathlib import Path

import pytest

from btrans_verl import patching

PACKAGE = Path(patching.__file__).parent


def test_patch_wraps_once_keeps_metadata_and_marks_it():
    class Server:
        async def launch(self, x):
            """launch doc"""
            return x

        @classmethod
        def build(cls, y):
            return y

    calls = []

    def make(original):
        async def launch(self, x):
            calls.append(x)
            return await original(self, x)
        return launch

    assert patching.patch(Server, "launch", make, what="count launches") is True
    assert patching.patch(Server, "launch", make, what="count launches") is False  # idempotent
    assert Server.launch.__doc__ == "launch doc" and Server.launch.__name__ == "launch"
    assert patching.patched(Server.launch) == "count launches" and patching.patched(Server.build) is None
    import asyncio

    assert asyncio.run(Server().launch(3)) == 3 and calls == [3]  # wrapped exactly once
    patching.patch(Server, "build", lambda orig: lambda cls, y: orig(cls, y) + 1, what="classmethod")
    assert isinstance(Server.__dict__["build"], classmethod) and Server.build(1) == 2


def test_patch_refuses_a_target_that_moved_and_a_module_global_works():
    module = types.ModuleType("upstream")
    module.f = lambda: 1
    patching.patch(module, "f", lambda orig: lambda: orig() + 1, what="plus one")
    assert module.f() == 2 and patching.patched(module.f) == "plus one"
    with pytest.raises(patching.PatchTargetMissing, match=r"upstream.*\.g not found"):
        patching.patch(module, "g", lambda orig: orig, what="moved")


def test_add_gives_a_class_a_marked_attribute_and_never_shadows_upstream():
    class Worker:
        def execute_model(self):
            return "upstream"

    def btrans_counters(self):
        return {"norms_patched": 5}

    assert patching.add(Worker, "btrans_counters", btrans_counters, what="counters rpc") is True
    assert patching.add(Worker, "btrans_counters", btrans_counters, what="counters rpc") is False  # idempotent
    assert Worker().btrans_counters() == {"norms_patched": 5}  # a method: bound to the instance
    assert patching.patched(Worker.btrans_counters) == "counters rpc"
    with pytest.raises(patching.PatchTargetTaken, match=r"Worker\.execute_model already exists upstream"):
        patching.add(Worker, "execute_model", btrans_counters, what="clash")


def test_require_version_names_the_installed_release():
    with pytest.raises(patching.UnsupportedVersionError,
                       match=r"'my patch' supports verl 0\.0\.1 only, but verl 0\.9\.1"):
        patching.require_version("verl", ("0.0.1",), "my patch")
    assert patching.require_version("verl", ("0.9.1",), "my patch") == "0.9.1"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_product_code_never_imports_the_cpu_platform():
    offenders = {str(p.relative_to(PACKAGE)): sorted(n for n in _imports(p) if n.startswith("btrans_verl.cpu"))
                 for p in PACKAGE.rglob("*.py") if "cpu" not in p.relative_to(PACKAGE).parts[:1]}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_every_patch_goes_through_the_helper():
    """No module sets its own marker attribute on an upstream function (the old `_btrans_*` conventions)."""
    own_markers = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                   if any(m in p.read_text() for m in ("._btrans_cpu", "._btrans_wrapped", "._btrans_watchdog",
                                                         "._btrans_hooked"))]
    assert own_markers == []


def test_required_verl_names_the_one_release_the_patches_accept():
    from btrans_verl.verl import SUPPORTED_VERL

    root = PACKAGE.parent
    pins = [ln.strip() for ln in (root / "REQUIRED_VERL.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    assert pins == [f"verl=={v}" for v in SUPPORTED_VERL]
    assert f'"verl=={SUPPORTED_VERL[0]}"' in (root / "pyproject.toml").read_text()
