"""Turning one split's records into verl rows, and writing rows to parquet.

Row schema (verl RL dataset)::

    data_source   str          e.g. "gsm8k"
    prompt        list[dict]   [{"role": "user", "content": <templated question>}]
    ability       str          "math" ("multiple_choice" for MMLU-Pro)
    reward_model  dict         {"style": "rule", "ground_truth": <answer>}
    extra_info    dict         split, index (0-based row in the source file), dataset metadata, question

Python use::

    from data_prep import convert_split, get_dataset, get_template, resolve_sources, write_parquet
    spec = get_dataset("gsm8k")
    [test] = resolve_sources(spec, "/path/to/shared/data", split="test")
    result = convert_split(spec, test, get_template("qwen_boxed"))
    write_parquet(result.rows, "data/gsm8k/test.parquet")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_prep.checksums import verify_file
from data_prep.datasets import Converted, DatasetSpec
from data_prep.errors import BadInputError, BadRow, DataPrepError, RowProblem
from data_prep.sources import SplitSource, read_records
from data_prep.templates import PromptTemplate

HUB_UNVERIFIED = "hub (unverified)"


@dataclass
class SplitResult:
    """The converted rows of one split, plus what was skipped and how the file was verified."""

    dataset: str
    split: str
    source: str
    rows: list[dict[str, Any]]
    skipped: list[BadRow] = field(default_factory=list)
    checksum: str = ""
    records_in: int = 0
    output: str | None = None
    note: str = ""


def build_row(spec: DatasetSpec, converted: Converted, template: PromptTemplate, split: str, index: int) -> dict:
    extra_info = {"split": split, "index": index, **converted.extra, "question": converted.question}
    return {
        "data_source": spec.data_source,
        "prompt": [{"role": "user", "content": template.render(converted.question, converted.options)}],
        "ability": spec.ability,
        "reward_model": {"style": "rule", "ground_truth": converted.answer},
        "extra_info": extra_info,
    }


def convert_split(
    spec: DatasetSpec,
    source: SplitSource,
    template: PromptTemplate,
    *,
    skip_bad: bool = False,
    progress: bool = True,
) -> SplitResult:
    """Verify and read ``source`` and convert every record.

    Bad records raise :class:`BadInputError` (listing file and rows) unless ``skip_bad``, in which case
    they are returned in ``SplitResult.skipped``. A file with no usable row is always an error.
    """
    checksum = HUB_UNVERIFIED if source.is_hub else verify_file(source.location)
    records = read_records(source)
    rows: list[dict[str, Any]] = []
    bad: list[BadRow] = []
    bar = tqdm(records, desc=f"{spec.name}/{source.split}", unit="row", disable=not progress, leave=False)
    for record in bar:
        try:
            if record.error is not None:
                raise RowProblem(record.error)
            converted = spec.convert(record.data or {})
            rows.append(build_row(spec, converted, template, source.split, record.row))
        except RowProblem as problem:
            bad.append(BadRow(source.location, record.row, str(problem), record.line))
    if bad and not skip_bad:
        raise BadInputError(source.location, bad, len(records))
    _drop_unknown_metadata(rows)
    if not rows:
        raise DataPrepError(f"{source.location}: no usable rows ({len(records)} records, {len(bad)} bad)")
    return SplitResult(spec.name, source.split, source.location, rows, bad, checksum, len(records))


def _drop_unknown_metadata(rows: list[dict[str, Any]]) -> None:
    """Remove extra_info keys that are None in every row (metadata this source does not have, e.g. SimpleRL-Zoo
    train has no unique_id), so parquet gets no all-null columns. Keys known for some rows stay (None elsewhere)."""
    keys = {key for row in rows for key in row["extra_info"]}
    unknown = {key for key in keys if all(row["extra_info"].get(key) is None for row in rows)}
    for row in rows:
        for key in unknown:
            row["extra_info"].pop(key, None)


def write_parquet(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write rows to ``path`` (parent folders created) with pandas/pyarrow."""
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False, engine="pyarrow")
    return path
