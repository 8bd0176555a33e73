"""A generated arithmetic benchmark, completion style, on which SmolLM2-135M-Instruct is neither at floor nor at
ceiling (GSM8K gives it about 0%: it cannot even box its answers).

Every problem is a small expression ``q`` such as ``47 + 8``. Its chat prompt is a user turn "What is q? Answer
with a number." followed by an assistant turn already begun with "q =", which the model *continues*
(:func:`btrans_verl.eval.benchmark.render_prompts` renders it with ``continue_final_message=True``). The answer is
the first number of the continuation (answer format ``first_number`` of :mod:`btrans_verl.eval.grading`), as in
lm-eval-harness's completion-style arithmetic tasks. Rows are verl rows in the schema data_prep writes
(``data_source`` ``btrans_eval/arithmetic``, ``reward_model.ground_truth``, ``extra_info.kind`` / ``question`` /
``answer_format``).

The problem kinds are a registry (:func:`kind`), each with its operand ranges and its count. The rows are a pure
function of the seed: each kind draws from its own ``random.Random`` seeded with a string (stable on every machine
and Python version; no numpy or torch RNG), questions are never repeated, and the rows are shuffled (with a seeded
``random.Random`` too) so that ``--limit`` keeps a mixture of kinds.

Calibration (the mixture was chosen on the greedy accuracy of the mean mind only, never on any B-Trans or
temperature-sampling result): SmolLM2-135M-Instruct greedy, chat template, first number of the continuation.
First with HF transformers on CPU (40 problems per kind, float32, 8 new tokens), to pick the kinds; then with the
real command on the default rows (seed 0, 18 per kind, 144 problems):

    =============  =============================  ======================  =====================
    kind           question                       transformers (40 each)  eval command (default)
    =============  =============================  ======================  =====================
    add_1d_1d      a + b, a, b in 1..9            0.85                    1.00 (18/18)
    add_2d_1d      a + b, a in 10..99, b in 1..9  0.15                    0.06 (1/18)
    add_2d_2d      a + b, a, b in 10..99          0.25                    0.17 (3/18)
    add_three_1d   a + b + c, a, b, c in 1..9     0.18                    0.06 (1/18)
    sub_within_18  a - b, a in 5..18, b in 1..a   0.43                    0.56 (10/18)
    sub_2d_1d      a - b, a in 10..99, b in 1..9  0.03                    0.06 (1/18)
    mul_1d_1d      a * b, a, b in 2..9            0.90                    0.89 (16/18)
    mul_teen_1d    a * b, a in 10..19, b in 2..9  0.35                    0.56 (10/18)
    all                                           0.39                    0.42 (60/144)
    =============  =============================  ======================  =====================

The eval-command column is ``VLLM_CPU_KVCACHE_SPACE=1 python -m btrans_verl.eval --model smollm2 --benchmark
arithmetic --methods mean --max-tokens 8 --n 1`` (vLLM on CPU, float32; report.md: accuracy 0.417 [0.34, 0.50]);
its per-kind figures come from ``samples.jsonl`` joined with the rows' ``extra_info.kind``.

    python -m btrans_verl.eval.arithmetic --out data/arithmetic          # test.parquet + provenance.json
    python -m btrans_verl.eval --model smollm2 --benchmark arithmetic --methods mean --max-tokens 8 --n 1 \\
        --out runs/eval_smollm2_arithmetic                               # the same rows, generated in memory
"""

from __future__ import annotations

import argparse
import hashlib
import json
import operator
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ANSWER_FORMAT", "DATA_SOURCE", "DEFAULT_PER_KIND", "DEFAULT_SEED", "INSTRUCTION", "KINDS", "Kind",
           "evaluate", "kind", "kind_counts", "main", "provenance", "rows", "rows_sha256", "write_benchmark"]

DATA_SOURCE = "btrans_eval/arithmetic"
ANSWER_FORMAT = "first_number"  # btrans_verl.eval.grading: the first number of the continuation
INSTRUCTION = "Answer with a number."
DEFAULT_SEED = 0
DEFAULT_PER_KIND = 18  # 8 kinds x 18 = 144 problems: small enough to sample many times on 2 CPU cores
MAX_DRAWS_PER_PROBLEM = 200  # rejection sampling of repeated questions gives up after count x this many draws

#: An expression as drawn: operands and operators alternating, e.g. (47, "+", 8); evaluated left to right.
Expression = tuple[int | str, ...]
OPERATORS: dict[str, Callable[[int, int], int]] = {"+": operator.add, "-": operator.sub, "*": operator.mul}


@dataclass(frozen=True)
class Kind:
    """One kind of problem: how to draw an expression, and how many problems of it the default benchmark holds."""

    name: str
    draw: Callable[[random.Random], Expression]
    count: int
    description: str


KINDS: dict[str, Kind] = {}


def kind(name: str, *, description: str, count: int = DEFAULT_PER_KIND):
    """Register the decorated ``draw(rng) -> Expression`` as the problem kind ``name`` (``count`` problems in the
    default benchmark)."""

    def register(draw: Callable[[random.Random], Expression]) -> Callable[[random.Random], Expression]:
        if name in KINDS:
            raise ValueError(f"problem kind {name!r} is registered twice")
        KINDS[name] = Kind(name, draw, count, description)
        return draw

    return register


@kind("add_1d_1d", description="a + b, a, b in 1..9")
def _add_1d_1d(rng: random.Random) -> Expression:
    return rng.randint(1, 9), "+", rng.randint(1, 9)


@kind("add_2d_1d", description="a + b, a in 10..99, b in 1..9")
def _add_2d_1d(rng: random.Random) -> Expression:
    return rng.randint(10, 99), "+", rng.randint(1, 9)


@kind("add_2d_2d", description="a + b, a, b in 10..99")
def _add_2d_2d(rng: random.Random) -> Expression:
    return rng.randint(10, 99), "+", rng.randint(10, 99)


@kind("add_three_1d", description="a + b + c, a, b, c in 1..9")
def _add_three_1d(rng: random.Random) -> Expression:
    return rng.randint(1, 9), "+", rng.randint(1, 9), "+", rng.randint(1, 9)


@kind("sub_within_18", description="a - b, a in 5..18, b in 1..a")
def _sub_within_18(rng: random.Random) -> Expression:
    a = rng.randint(5, 18)
    return a, "-", rng.randint(1, a)


@kind("sub_2d_1d", description="a - b, a in 10..99, b in 1..9")
def _sub_2d_1d(rng: random.Random) -> Expression:
    return rng.randint(10, 99), "-", rng.randint(1, 9)


@kind("mul_1d_1d", description="a * b, a, b in 2..9")
def _mul_1d_1d(rng: random.Random) -> Expression:
    return rng.randint(2, 9), "*", rng.randint(2, 9)


@kind("mul_teen_1d", description="a * b, a in 10..19, b in 2..9")
def _mul_teen_1d(rng: random.Random) -> Expression:
    return rng.randint(10, 19), "*", rng.randint(2, 9)


def evaluate(expr: Expression) -> int:
    """The value of ``expr``, left to right (no kind mixes operators of different precedence)."""
    value = expr[0]
    for op, operand in zip(expr[1::2], expr[2::2]):
        value = OPERATORS[op](value, operand)
    return value


def render(expr: Expression) -> str:
    """The question text of ``expr``: ``47 + 8``."""
    return " ".join(str(x) for x in expr)


def kind_counts(per_kind: int | Mapping[str, int] | None = None) -> dict[str, int]:
    """Problems per kind: the declared counts (None), the same number for every kind (an int), or exactly the
    kinds named in a mapping. Raises ValueError naming an unknown kind or a bad count."""
    if per_kind is None:
        counts = {name: k.count for name, k in KINDS.items()}
    elif isinstance(per_kind, Mapping):
        unknown = [name for name in per_kind if name not in KINDS]
        if unknown:
            raise ValueError(f"unknown problem kind(s) {unknown}; known: {sorted(KINDS)}")
        counts = {name: per_kind[name] for name in KINDS if name in per_kind}
    else:
        counts = {name: per_kind for name in KINDS}
    for name, count in counts.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count of problem kind {name!r} must be an integer >= 0, got {count!r}")
    return counts


def _draw_distinct(k: Kind, count: int, seed: int, seen: set[str]) -> list[Expression]:
    """``count`` expressions of kind ``k`` whose questions are not in ``seen`` (which they join)."""
    rng = random.Random(f"btrans_eval/arithmetic/{seed}/{k.name}")
    drawn: list[Expression] = []
    for _ in range(count * MAX_DRAWS_PER_PROBLEM):
        if len(drawn) == count:
            break
        expr = k.draw(rng)
        question = render(expr)
        if question not in seen:
            seen.add(question)
            drawn.append(expr)
    if len(drawn) < count:
        raise ValueError(f"problem kind {k.name!r} ({k.description}): only {len(drawn)} distinct questions found, "
                         f"{count} asked")
    return drawn


def _row(index: int, kind_name: str, expr: Expression, seed: int) -> dict[str, Any]:
    question = render(expr)
    return {
        "data_source": DATA_SOURCE,
        "prompt": [{"role": "user", "content": f"What is {question}? {INSTRUCTION}"},
                   {"role": "assistant", "content": f"{question} ="}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": str(evaluate(expr))},
        "extra_info": {"split": "test", "index": index, "kind": kind_name, "question": question,
                       "answer_format": ANSWER_FORMAT, "seed": seed},
    }


def rows(seed: int = DEFAULT_SEED, per_kind: int | Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """The benchmark's verl rows for ``seed`` (see :func:`kind_counts` for ``per_kind``), shuffled, with
    ``extra_info.index`` their position. The same seed gives identical rows on any machine."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    seen: set[str] = set()
    drawn = [(name, expr) for name, count in kind_counts(per_kind).items()
             for expr in _draw_distinct(KINDS[name], count, seed, seen)]
    random.Random(f"btrans_eval/arithmetic/{seed}/order").shuffle(drawn)
    return [_row(i, name, expr, seed) for i, (name, expr) in enumerate(drawn)]


def rows_sha256(benchmark_rows: list[dict[str, Any]]) -> str:
    """sha256 of the rows' canonical JSON (sorted keys, no spaces, ASCII): the benchmark's fingerprint."""
    text = json.dumps(benchmark_rows, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def provenance(benchmark_rows: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """What generated ``benchmark_rows``: the module, the seed, the counts and descriptions per kind, the
    row count and the rows' sha256."""
    counts: dict[str, int] = {}
    for row in benchmark_rows:
        counts[row["extra_info"]["kind"]] = counts.get(row["extra_info"]["kind"], 0) + 1
    return {
        "generator": __name__,
        "seed": seed,
        "per_kind": {name: counts.get(name, 0) for name in KINDS if name in counts},
        "kinds": {name: KINDS[name].description for name in KINDS if name in counts},
        "answer_format": ANSWER_FORMAT,
        "data_source": DATA_SOURCE,
        "rows": len(benchmark_rows),
        "sha256": rows_sha256(benchmark_rows),
    }


def write_benchmark(dest: Path, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """Write dest/test.parquet (the default rows for ``seed``) and dest/provenance.json; returns the provenance."""
    from data_prep.convert import write_parquet

    dest = Path(dest)
    benchmark_rows = rows(seed)
    write_parquet(benchmark_rows, dest / "test.parquet")
    record = provenance(benchmark_rows, seed)
    (dest / "provenance.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m btrans_verl.eval.arithmetic",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for test.parquet and provenance.json")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"generator seed (default {DEFAULT_SEED})")
    ns = p.parse_args(argv)
    record = write_benchmark(ns.out, ns.seed)
    print(f"wrote {ns.out / 'test.parquet'} ({record['rows']} rows, sha256 {record['sha256']}) and "
          f"{ns.out / 'provenance.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
