"""The wall-clock limit around math-verify fires on slow input, from any thread."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import types

import pytest

from btrans_verl.rewards.math_answer import answers_equivalent
from btrans_verl.rewards.time_limit import ProcessTimeLimiter, TimeLimitExceeded

SLACK_S = 1.5  # scheduling slack on a loaded 2-core CI machine


def stubborn_sleep(seconds: float) -> str:
    """Sleeps and swallows every interrupt, so only killing the helper stops it."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            time.sleep(0.05)
        except BaseException:  # noqa: BLE001 - deliberately ignores the soft timeout
            pass
    return "finished"


@pytest.fixture(scope="module")
def limiter():
    lim = ProcessTimeLimiter(max_workers=2, kill_grace_s=0.5)
    yield lim
    lim.close()


def _timed(fn, *args, **kwargs):
    start = time.monotonic()
    try:
        return fn(*args, **kwargs), time.monotonic() - start
    except Exception as exc:  # noqa: BLE001 - returned for inspection
        return exc, time.monotonic() - start


def test_returns_result_and_forwards_exceptions(limiter):
    assert limiter.run(pow, 2, 10, timeout_s=5) == 1024
    with pytest.raises(ValueError):
        limiter.run(int, "not a number", timeout_s=5)


def test_sleeping_function_is_cut_off_at_the_limit(limiter):
    limiter.run(pow, 1, 1, timeout_s=5)  # warm a helper: start-up is not part of the limit
    outcome, elapsed = _timed(limiter.run, time.sleep, 30, timeout_s=0.5)
    assert isinstance(outcome, TimeLimitExceeded)
    assert 0.45 <= elapsed < 0.5 + SLACK_S
    # the soft limit interrupted the helper; it is reused, not killed
    assert limiter.run(pow, 3, 2, timeout_s=5) == 9


def test_function_ignoring_the_interrupt_is_killed_and_replaced(limiter):
    outcome, elapsed = _timed(limiter.run, stubborn_sleep, 30, timeout_s=0.5)
    assert isinstance(outcome, TimeLimitExceeded)
    assert "killed" in str(outcome)
    assert elapsed < 0.5 + limiter.kill_grace_s + SLACK_S
    assert limiter.run(stubborn_sleep, 0.1, timeout_s=5) == "finished"


def test_limit_fires_from_a_non_main_thread(limiter):
    results: dict[str, object] = {}

    def worker() -> None:
        results["slow"] = _timed(limiter.run, time.sleep, 30, timeout_s=0.5)
        results["fast"] = limiter.run(pow, 2, 5, timeout_s=5)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    outcome, elapsed = results["slow"]
    assert isinstance(outcome, TimeLimitExceeded)
    assert elapsed < 0.5 + SLACK_S
    assert results["fast"] == 32


def test_concurrent_callers_share_the_pool(limiter):
    outcomes: list[object] = []

    def call() -> None:
        outcomes.append(limiter.run(stubborn_sleep, 0.3, timeout_s=10))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert outcomes == ["finished"] * 4
    assert limiter.alive_workers <= limiter.max_workers


def test_math_verify_on_pathological_input_times_out_in_a_worker_thread():
    # 9^(9^(9^9)) vs 5 makes sympy compute forever; without a limit this call hangs.
    answers_equivalent("1", "2")  # warm the default helper outside the measured call
    results: dict[str, object] = {}

    def worker() -> None:
        results["verdict"] = _timed(answers_equivalent, r"9^{9^{9^{9}}}", "5", timeout_s=1.0)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=30)
    verdict, elapsed = results["verdict"]
    assert verdict is False
    assert elapsed < 1.0 + SLACK_S + 1.0


def test_limit_works_under_asyncio_run_in_executor():
    async def main() -> tuple[object, float]:
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        verdict = await loop.run_in_executor(None, lambda: answers_equivalent(r"10^{10^{10^{10}}}", "7", timeout_s=1.0))
        return verdict, time.monotonic() - start

    verdict, elapsed = asyncio.run(main())
    assert verdict is False
    assert elapsed < 1.0 + SLACK_S + 1.0


def test_thread_fallback_still_releases_the_caller_when_no_helper_starts():
    lim = ProcessTimeLimiter(max_workers=1, start_timeout_s=0.0)  # no helper can become ready in 0 s
    try:
        outcome, elapsed = _timed(lim.run, time.sleep, 30, timeout_s=0.3)
        assert isinstance(outcome, TimeLimitExceeded)
        assert elapsed < 0.3 + SLACK_S
        assert lim.run(pow, 2, 3, timeout_s=5) == 8
        assert lim.alive_workers == 0
    finally:
        lim.close()


def test_function_not_importable_in_the_helper_is_reported_not_fatal(limiter):
    fake = types.ModuleType("module_that_only_exists_in_the_caller")
    exec("def f():\n    return 1\n", fake.__dict__)
    sys.modules[fake.__name__] = fake
    try:
        with pytest.raises((ModuleNotFoundError, ImportError)):
            limiter.run(fake.f, timeout_s=5)
    finally:
        del sys.modules[fake.__name__]
    assert limiter.run(pow, 2, 2, timeout_s=5) == 4


def test_helper_that_dies_mid_call_is_reported_and_replaced(limiter):
    with pytest.raises(RuntimeError, match="died"):
        limiter.run(os._exit, 3, timeout_s=5)
    assert limiter.run(pow, 5, 2, timeout_s=5) == 25
