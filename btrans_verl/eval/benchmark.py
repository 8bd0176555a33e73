"""Benchmarks for the population evaluation: verl parquet rows (the schema `data_prep` writes) as problems.

A benchmark is given as one of

* a verl parquet file: ``data/gsm8k/test.parquet`` (from ``python -m data_prep gsm8k --src vendor --out data/gsm8k``);
* a folder holding ``<split>.parquet``: ``data/gsm8k`` (split ``test`` by default);
* a data_prep dataset name, converted in memory from ``--data-src`` (a data root such as ``/path/to/shared/data``,
  ``vendor`` for the files shipped in data_prep, or ``hf:OWNER/NAME``): ``gsm8k``, ``math500``, ``minerva``
  (= ``minerva_math``), ``aime24``, ``aime24_ttrl``, ``mmlu_pro``, ``simplerl_zoo``.

    from btrans_verl.eval.benchmark import load_benchmark
    problems, source = load_benchmark("gsm8k", data_src="vendor", limit=8)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from btrans_verl.eval.config import EvalInputError
from btrans_verl.rewards.math_answer import reference_answer

__all__ = ["ALIASES", "DATA_ROOT_ENV", "Problem", "default_data_src", "load_benchmark", "problems_from_rows",
           "render_prompts"]

ALIASES = {"minerva": "minerva_math"}
DATA_ROOT_ENV = "BTRANS_SHARED_DATA"  # a data root (data_prep's layout) to use when --data-src is not given


@dataclass(frozen=True)
class Problem:
    """One benchmark problem: its chat messages, its reference answer and its identity (for seeds)."""

    position: int  # 0-based position in the evaluated list
    index: int  # the row's extra_info.index (its row in the source file), else its position
    data_source: str
    messages: tuple[dict[str, str], ...]
    reference: str


def default_data_src() -> str:
    """``$BTRANS_SHARED_DATA`` when set (it must be a folder), else ``vendor`` (the files shipped in data_prep)."""
    root = os.environ.get(DATA_ROOT_ENV)
    if not root:
        return "vendor"
    if not Path(root).is_dir():
        raise EvalInputError(f"{DATA_ROOT_ENV}={root!r} is not a folder (a data root in data_prep's layout; unset it "
                             f"to use the vendored files)")
    return root


def _row_problem(row: dict[str, Any], position: int, where: str) -> Problem:
    prompt = row.get("prompt")
    if prompt is None or isinstance(prompt, str) or len(prompt) == 0:
        raise EvalInputError(f"{where}: row {position} has no 'prompt' list of chat messages (verl schema)")
    messages = []
    for m in prompt:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
            raise EvalInputError(f"{where}: row {position}: prompt message {m!r} lacks 'role'/'content'")
        messages.append({"role": str(m["role"]), "content": m["content"]})
    reward = row.get("reward_model") or {}
    reference = reference_answer(reward.get("ground_truth") if isinstance(reward, dict) else None)
    if reference is None:
        raise EvalInputError(f"{where}: row {position} has no reward_model.ground_truth")
    extra = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
    index = extra.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        index = position
    return Problem(position, index, str(row.get("data_source") or ""), tuple(messages), reference)


def problems_from_rows(rows: Sequence[dict[str, Any]], where: str, limit: int | None = None) -> list[Problem]:
    """Problems from verl rows (the first ``limit`` of them); ``where`` names the source in errors."""
    if not rows:
        raise EvalInputError(f"{where}: no rows")
    rows = list(rows)[:limit] if limit else list(rows)
    return [_row_problem(dict(r), i, where) for i, r in enumerate(rows)]


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    from data_prep.errors import DataPrepError
    from data_prep.sources import read_local

    try:
        return [r.data for r in read_local(path)]
    except DataPrepError as exc:
        raise EvalInputError(f"benchmark {str(path)!r}: {exc}") from None


def _from_data_prep(name: str, data_src: str, split: str, template: str | None,
                    progress: bool) -> tuple[list[dict[str, Any]], str]:
    from data_prep.convert import convert_split
    from data_prep.datasets import DATASETS, resolve_sources
    from data_prep.errors import DataPrepError
    from data_prep.templates import get_template

    spec = DATASETS[ALIASES.get(name, name)]
    try:
        tmpl = get_template(template or spec.default_template)
        [source] = resolve_sources(spec, data_src, split)
        result = convert_split(spec, source, tmpl, progress=progress)
    except (DataPrepError, ValueError) as exc:
        raise EvalInputError(f"benchmark {name!r} (data_prep {spec.name}, --data-src {data_src!r}, "
                             f"split {split!r}): {exc}") from None
    return result.rows, f"data_prep {spec.name} split {split} from {source.location} (template {tmpl.name})"


def load_benchmark(benchmark: str, *, data_src: str | None = None, split: str = "test",
                   template: str | None = None, limit: int | None = None,
                   progress: bool = False) -> tuple[list[Problem], str]:
    """The problems of ``benchmark`` (see the module docstring) and a one-line description of where they came
    from. Raises :class:`EvalInputError` naming the benchmark for anything unusable."""
    from data_prep.datasets import DATASETS

    path = Path(benchmark)
    if path.is_file():
        if path.suffix.lower() != ".parquet":
            raise EvalInputError(f"benchmark {benchmark!r} is not a .parquet file; prepare one with "
                                 "`python -m data_prep <dataset> --src ... --out DIR`")
        rows, where = _read_parquet(path), str(path)
    elif path.is_dir():
        target = path / f"{split}.parquet"
        if not target.is_file():
            found = sorted(p.name for p in path.glob("*.parquet"))
            raise EvalInputError(f"benchmark folder {benchmark!r} has no {split}.parquet (found: {found or 'none'}); "
                                 "pass the file itself or --split")
        rows, where = _read_parquet(target), str(target)
    elif ALIASES.get(benchmark, benchmark) in DATASETS:
        rows, where = _from_data_prep(benchmark, data_src or default_data_src(), split, template, progress)
    elif "/" in benchmark or benchmark.endswith(".parquet"):
        raise EvalInputError(f"benchmark {benchmark!r}: no such file or folder")
    else:
        names = sorted({*DATASETS, *ALIASES})
        raise EvalInputError(f"unknown benchmark {benchmark!r}: give a verl .parquet, a folder with "
                             f"<split>.parquet, or a data_prep dataset name ({', '.join(names)})")
    return problems_from_rows(rows, where, limit), where


def render_prompts(problems: Sequence[Problem], tokenizer: Any, *, chat_template: bool = True) -> list[list[int]]:
    """Token ids of every problem's prompt: the tokenizer's chat template with the generation prompt, or (without
    ``chat_template``) the concatenated message contents."""
    if chat_template and not getattr(tokenizer, "chat_template", None):
        raise EvalInputError("the model's tokenizer has no chat template; pass --no-chat-template to use the raw "
                             "prompt text")
    out = []
    for p in problems:
        if chat_template:
            text = tokenizer.apply_chat_template(list(p.messages), add_generation_prompt=True, tokenize=False)
            out.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
        else:
            text = "\n\n".join(m["content"] for m in p.messages)
            out.append(list(tokenizer(text)["input_ids"]))
    return out
