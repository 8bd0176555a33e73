"""Wall-clock time limits that work from any thread.

math-verify protects itself with ``signal.alarm``, which only works in the main
thread of the main interpreter.  Reward code in verl runs inside Ray actors, in
``run_in_executor`` thread pools and asyncio tasks, so we cannot rely on it.

This module runs the limited function in a small pool of long-lived helper
processes.  A helper is a fresh ``python`` interpreter started with
``subprocess`` (no ``fork``, so it is safe inside processes that already run
threads, such as Ray workers; and unlike ``multiprocessing``'s "spawn" it never
re-imports the caller's ``__main__`` script, so unguarded scripts work too).
It talks to the caller over a socket pair with ``multiprocessing.connection``:

* inside the helper, the function runs in the helper's main thread under an
  ``ITIMER_REAL`` timer, so ordinary pure-Python hangs (sympy) are interrupted
  cheaply and the helper is reused ("soft" limit);
* in the caller, we wait ``timeout_s + kill_grace_s`` for the answer; if it does
  not come (a hang in C code, a function that swallows the interrupt), the
  helper is killed and replaced on the next call ("hard" limit).

Either way the caller gets :class:`TimeLimitExceeded` after at most
``timeout_s + kill_grace_s`` seconds.  Helper start-up (interpreter start and
the ``preload`` imports) happens before the clock starts, so a cold start does
not eat into the limit.

If a helper cannot be started, that call falls back to running the function
in a daemon thread and abandoning it on timeout; the caller is still released
on time, but the abandoned thread keeps running.  This is logged.

The function and its arguments must be picklable, and the function importable
by module name in a new interpreter whose ``sys.path`` is the caller's
(module-level functions of importable modules, builtins; not functions defined
in a ``__main__`` script).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "TimeLimitExceeded",
    "ProcessTimeLimiter",
    "run_with_time_limit",
    "get_default_limiter",
]


class TimeLimitExceeded(TimeoutError):
    """Raised when a time-limited call did not finish within its limit."""


class _SoftTimeout(BaseException):
    """Raised inside a helper process by the interval timer.

    A ``BaseException`` so that libraries' ``except Exception`` blocks (math-verify
    has many) do not swallow it.
    """


# --------------------------------------------------------------------------- helper side

_task_active = False


def _on_alarm(signum: int, frame: Any) -> None:
    if _task_active:
        raise _SoftTimeout()


def _picklable_error(exc: BaseException) -> BaseException:
    """Return ``exc`` if it survives pickling, else a RuntimeError describing it."""
    try:
        pickle.dumps(exc)
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc!r}")


def _helper_entry(fd: int, preload: Sequence[str]) -> None:
    """Entry point of a helper interpreter; ``fd`` is its end of the socket pair."""
    _helper_main(Connection(fd), preload)


def _helper_main(conn: Connection, preload: Sequence[str]) -> None:
    """Main loop of a helper process: run tasks until told to stop or the pipe closes."""
    global _task_active
    import importlib

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we die
    signal.signal(signal.SIGALRM, _on_alarm)
    for module_name in preload:
        try:
            importlib.import_module(module_name)
        except Exception:  # a failed preload only costs time later, never correctness
            logger.exception("time-limit helper could not preload %s", module_name)
    conn.send(("ready", None))

    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            task = pickle.loads(payload)
        except Exception as exc:  # e.g. the function's module is not importable here
            conn.send(("error", _picklable_error(exc)))
            continue
        if task is None:
            return
        fn, args, kwargs, timeout_s = task
        try:
            _task_active = True
            signal.setitimer(signal.ITIMER_REAL, max(timeout_s, 1e-3))
            result = fn(*args, **kwargs)
            _task_active = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            reply: tuple[str, Any] = ("ok", result)
        except _SoftTimeout:
            reply = ("timeout", None)
        except BaseException as exc:  # noqa: BLE001 - forwarded to the caller
            reply = ("error", _picklable_error(exc))
        finally:
            _task_active = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            conn.send(reply)
        except Exception as exc:  # unpicklable result
            conn.send(("error", RuntimeError(f"time-limited result could not be sent back: {exc!r}")))


# --------------------------------------------------------------------------- caller side


_HELPER_CODE = (
    "import sys; from btrans_verl.rewards.time_limit import _helper_entry; "
    "_helper_entry(int(sys.argv[1]), sys.argv[2:])"
)


@dataclass
class _Helper:
    process: subprocess.Popen
    conn: Connection

    def kill(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            logger.warning("time-limit helper %d did not exit after SIGKILL", self.process.pid)


@dataclass
class ProcessTimeLimiter:
    """Run picklable callables in helper processes under a wall-clock limit.

    Thread-safe: up to ``max_workers`` calls run concurrently; further callers wait
    for a free helper (that wait is not counted against their limit).

    Args:
        max_workers: most helper processes alive at once (started lazily).
        preload: modules each helper imports before it reports ready.
        kill_grace_s: extra time given to the in-helper timer before the caller
            kills the helper.
        start_timeout_s: how long to wait for a new helper to become ready.
    """

    max_workers: int = 2
    preload: tuple[str, ...] = ()
    kill_grace_s: float = 1.0
    start_timeout_s: float = 120.0
    _idle: list[_Helper] = field(default_factory=list, init=False, repr=False)
    _alive: int = field(default=0, init=False, repr=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, init=False, repr=False)
    _owner_pid: int = field(default_factory=os.getpid, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {self.max_workers}")

    # -- public API -----------------------------------------------------------------

    def run(
        self,
        fn: Callable[..., Any],
        *args: Any,
        timeout_s: float,
        **kwargs: Any,
    ) -> Any:
        """Call ``fn(*args, **kwargs)`` and return its result within ``timeout_s`` seconds.

        Raises:
            TimeLimitExceeded: the call did not finish in time.
            Exception: whatever ``fn`` raised (re-raised in the caller).
        """
        if timeout_s <= 0:
            raise TimeLimitExceeded(f"non-positive time limit {timeout_s}")
        self._reset_after_fork()
        helper = self._acquire()
        if helper is None:
            return _run_in_thread(fn, args, kwargs, timeout_s)
        return self._run_on(helper, fn, args, kwargs, timeout_s)

    def close(self) -> None:
        """Stop all idle helpers.

        A helper busy at that moment returns to the pool when its call ends; the
        limiter stays usable (later calls start new helpers).
        """
        with self._cond:
            helpers, self._idle = self._idle, []
            self._alive -= len(helpers)
            self._cond.notify_all()
        for helper in helpers:
            try:
                helper.conn.send(None)
            except OSError:
                pass
            helper.kill()

    @property
    def alive_workers(self) -> int:
        """Number of helper processes currently alive (idle or busy)."""
        return self._alive

    # -- internals ------------------------------------------------------------------

    def _run_on(self, helper: _Helper, fn: Callable[..., Any], args: tuple, kwargs: dict, timeout_s: float) -> Any:
        try:
            helper.conn.send((fn, args, kwargs, timeout_s))
        except (OSError, EOFError):
            self._discard(helper)
            raise RuntimeError("time-limit helper died before the call started") from None
        except Exception:
            self._release(helper)  # pickling failed before anything was written
            raise

        if not helper.conn.poll(timeout_s + self.kill_grace_s):
            self._discard(helper)
            raise TimeLimitExceeded(f"{_name(fn)} exceeded {timeout_s:.3g}s (helper killed)")
        try:
            status, payload = helper.conn.recv()
        except (EOFError, OSError):
            self._discard(helper)
            raise RuntimeError(f"time-limit helper died while running {_name(fn)}") from None
        except Exception:
            self._release(helper)  # the whole message was read; only unpickling it failed
            raise

        self._release(helper)
        if status == "ok":
            return payload
        if status == "timeout":
            raise TimeLimitExceeded(f"{_name(fn)} exceeded {timeout_s:.3g}s")
        raise payload

    def _acquire(self) -> _Helper | None:
        with self._cond:
            while True:
                if self._idle:
                    return self._idle.pop()
                if self._alive < self.max_workers:
                    self._alive += 1
                    break
                self._cond.wait()
        try:
            return self._start_helper()
        except Exception as exc:
            with self._cond:
                self._alive -= 1
                self._cond.notify()
            logger.warning(
                "could not start a time-limit helper process (%r); running this call in a thread "
                "instead (a hung call will be abandoned, not stopped)",
                exc,
            )
            return None

    def _start_helper(self) -> _Helper:
        parent_conn, child_conn = multiprocessing.Pipe(duplex=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _HELPER_CODE, str(child_conn.fileno()), *self.preload],
                pass_fds=(child_conn.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
                close_fds=True,
            )
        except BaseException:
            parent_conn.close()
            raise
        finally:
            child_conn.close()
        helper = _Helper(process=process, conn=parent_conn)
        try:
            ready = parent_conn.poll(self.start_timeout_s)
            status = parent_conn.recv()[0] if ready else None
        except (EOFError, OSError):
            status = "died"
        if status != "ready":
            helper.kill()
            raise RuntimeError(f"time-limit helper failed to start (status {status!r})")
        return helper

    def _release(self, helper: _Helper) -> None:
        with self._cond:
            self._idle.append(helper)
            self._cond.notify()

    def _discard(self, helper: _Helper) -> None:
        helper.kill()
        with self._cond:
            self._alive -= 1
            self._cond.notify()

    def _reset_after_fork(self) -> None:
        """A forked child must not talk to its parent's helpers."""
        if self._owner_pid != os.getpid():
            with self._cond:
                self._idle = []
                self._alive = 0
                self._owner_pid = os.getpid()


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _run_in_thread(fn: Callable[..., Any], args: tuple, kwargs: dict, timeout_s: float) -> Any:
    """Fallback: run in a daemon thread, abandon it on timeout."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - forwarded to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="btrans-time-limit-thread", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeLimitExceeded(f"{_name(fn)} exceeded {timeout_s:.3g}s (thread abandoned)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


# --------------------------------------------------------------------------- default limiter

_default_limiter: ProcessTimeLimiter | None = None
_default_lock = threading.Lock()


def get_default_limiter() -> ProcessTimeLimiter:
    """The process-wide limiter used by the reward code (created on first use).

    Its helpers preload math-verify so the first equivalence check is not slowed
    by sympy's import.  ``BTRANS_REWARD_LIMIT_WORKERS`` sets its size (default 2).
    """
    global _default_limiter
    with _default_lock:
        if _default_limiter is None or _default_limiter._owner_pid != os.getpid():
            workers = int(os.environ.get("BTRANS_REWARD_LIMIT_WORKERS", "2"))
            _default_limiter = ProcessTimeLimiter(
                max_workers=max(1, workers),
                preload=("btrans_verl.rewards.math_answer", "math_verify"),
            )
        return _default_limiter


def run_with_time_limit(fn: Callable[..., Any], *args: Any, timeout_s: float, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` on the default limiter; see :meth:`ProcessTimeLimiter.run`."""
    return get_default_limiter().run(fn, *args, timeout_s=timeout_s, **kwargs)


@atexit.register
def _close_default_limiter() -> None:
    if _default_limiter is not None and _default_limiter._owner_pid == os.getpid():
        _default_limiter.close()
