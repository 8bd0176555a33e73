"""Post-import hooks: run a callback right after a module has been executed (or now, if it already was).

Patching verl/vLLM at plugin time must not import the heavy modules being patched (that would drag torch
distributed, transformers and vLLM's model zoo into every process, and could freeze verl's lazy platform
before it is registered). Instead, `when_imported("verl.x.y", fn)` defers `fn(module)` until the module is
first imported in this process. Callbacks run once per (module, key).

The mechanism is a `sys.meta_path` finder that asks the remaining finders for the real spec, then wraps the
spec's loader for the duration of one `exec_module` call; afterwards the module's `__loader__` and
`__spec__.loader` are restored to the original loader, so nothing downstream sees the wrapper.
"""

from __future__ import annotations

import importlib.abc
import logging
import sys
import threading
from collections.abc import Callable
from types import ModuleType

logger = logging.getLogger(__name__)

_lock = threading.RLock()
_pending: dict[str, list[tuple[str, Callable[[ModuleType], None]]]] = {}
_done: set[tuple[str, str]] = set()


def _run(name: str, module: ModuleType, key: str, fn: Callable[[ModuleType], None]) -> None:
    with _lock:
        if (name, key) in _done:
            return
        _done.add((name, key))
    fn(module)


def _is_initialised(module: ModuleType) -> bool:
    spec = getattr(module, "__spec__", None)
    return not getattr(spec, "_initializing", False)


def when_imported(name: str, fn: Callable[[ModuleType], None], key: str | None = None) -> None:
    """Call `fn(module)` once `name` has been imported (immediately if it already is).

    `key` de-duplicates registrations (default: the function's qualified name), so calling a patch installer
    twice is harmless. Exceptions raised by `fn` propagate to whoever triggered the import: a failed patch
    must not go unnoticed.
    """
    key = key or f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
    with _lock:
        if (name, key) in _done:
            return
        module = sys.modules.get(name)
        if module is None or not _is_initialised(module):
            entries = _pending.setdefault(name, [])
            if all(k != key for k, _ in entries):
                entries.append((key, fn))
            _install_finder()
            return
    _run(name, module, key, fn)


def pending() -> dict[str, list[str]]:
    """Module names with callbacks still waiting for their import (for diagnostics and tests)."""
    with _lock:
        return {name: [k for k, _ in entries] for name, entries in _pending.items() if entries}


class _LoaderProxy:
    """Delegates everything to the real loader; `exec_module` also fires the callbacks afterwards."""

    def __init__(self, loader, name: str):
        self._loader = loader
        self._name = name

    def __getattr__(self, attr):
        return getattr(self._loader, attr)

    def create_module(self, spec):
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: ModuleType) -> None:
        try:
            self._loader.exec_module(module)
        finally:
            # Hide the proxy again, whatever happened.
            module.__loader__ = self._loader
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self._loader
        with _lock:
            entries = _pending.pop(self._name, [])
        for key, fn in entries:
            _run(self._name, module, key, fn)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    def __init__(self):
        self._busy = threading.local()

    def find_spec(self, fullname, path, target=None):
        with _lock:
            if not _pending.get(fullname):
                return None
        busy = getattr(self._busy, "names", None)
        if busy is None:
            busy = self._busy.names = set()
        if fullname in busy:
            return None
        busy.add(fullname)
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            busy.discard(fullname)
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec  # namespace packages and legacy loaders: nothing to wrap
        spec.loader = _LoaderProxy(spec.loader, fullname)
        return spec


_finder: _PostImportFinder | None = None


def _install_finder() -> None:
    global _finder
    if _finder is None:
        _finder = _PostImportFinder()
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
