"""Registries by name, filled by decorators: the one pattern behind sigma scales, answer formats, generated
benchmarks and sweep grids.

    ANSWER_FORMATS: dict[str, Callable] = {}
    answer_format = registrar(ANSWER_FORMATS, "answer format")

    @answer_format("boxed")
    def _last_boxed(text): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def registrar(table: dict[str, Callable], what: str) -> Callable[[str], Callable[[F], F]]:
    """A decorator factory: `@reg(name)` puts the decorated function into `table` under `name` and returns it
    unchanged. A name registered twice raises ValueError naming it (`what` says what the table holds)."""

    def reg(name: str) -> Callable[[F], F]:
        def register(fn: F) -> F:
            if name in table:
                raise ValueError(f"{what} {name!r} is registered twice")
            table[name] = fn
            return fn

        return register

    return reg
