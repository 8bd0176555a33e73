"""Reading input records from local files (JSONL, JSON list, parquet) or the Hugging Face hub.

``--src`` forms accepted by the CLI (see :func:`data_prep.datasets.resolve_sources`):

* a ``/path/to/shared/data``-style root, or a dataset's own folder:  ``--src /path/to/shared/data``
* one file (split from ``--split`` or from the file name):        ``--src /path/to/shared/data/gsm8k/test.jsonl``
* the files vendored in the package:                              ``--src vendor``
* a hub dataset (needs ``pip install datasets`` and network):     ``--src hf:openai/gsm8k:main``
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_prep.errors import DataPrepError

HF_PREFIX = "hf:"


@dataclass(frozen=True)
class RawRecord:
    """One input record; ``error`` is set (and ``data`` is None) when the record itself could not be parsed."""

    row: int  # 0-based position among the file's records
    data: dict[str, Any] | None
    line: int | None = None  # 1-based line number for JSONL
    error: str | None = None


@dataclass(frozen=True)
class SplitSource:
    """Where one split comes from: a local file, or ``hf:NAME[:CONFIG]`` plus a hub split name."""

    split: str
    location: str
    hf_split: str | None = None

    @property
    def is_hub(self) -> bool:
        return self.location.startswith(HF_PREFIX)


def read_records(source: SplitSource) -> list[RawRecord]:
    if source.is_hub:
        return read_hub(source.location, source.hf_split or source.split)
    return read_local(Path(source.location))


def read_local(path: Path) -> list[RawRecord]:
    """Records of a .jsonl, .json (a list of objects) or .parquet file; bad files raise DataPrepError."""
    if not path.is_file():
        raise DataPrepError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json_list(path)
    if suffix == ".parquet":
        return _read_parquet(path)
    raise DataPrepError(f"{path}: unsupported file type {suffix!r} (expected .jsonl, .json or .parquet)")


def _read_jsonl(path: Path) -> list[RawRecord]:
    records: list[RawRecord] = []
    try:
        # split on "\n" only: str.splitlines() would also split on U+2028 etc., which JSON strings may contain
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise DataPrepError(f"{path}: not UTF-8 text: {exc}") from None
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue  # blank lines hold no record
        row = len(records)
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            records.append(RawRecord(row, None, line_no, f"invalid JSON: {exc.msg} at column {exc.colno}"))
            continue
        if not isinstance(data, dict):
            records.append(RawRecord(row, None, line_no, f"expected a JSON object, got {type(data).__name__}"))
            continue
        records.append(RawRecord(row, data, line_no))
    return records


def _read_json_list(path: Path) -> list[RawRecord]:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataPrepError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(payload, list):
        raise DataPrepError(f"{path}: expected a JSON list of objects, got {type(payload).__name__}")
    return [
        RawRecord(i, item) if isinstance(item, dict)
        else RawRecord(i, None, error=f"expected a JSON object, got {type(item).__name__}")
        for i, item in enumerate(payload)
    ]


def _read_parquet(path: Path) -> list[RawRecord]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataPrepError(f"{path}: cannot read parquet: {exc}") from None
    return [RawRecord(i, row) for i, row in enumerate(rows)]


def parse_hub_location(location: str) -> tuple[str, str | None]:
    """``hf:openai/gsm8k:main`` -> (``"openai/gsm8k"``, ``"main"``)."""
    spec = location[len(HF_PREFIX) :]
    name, _, config = spec.partition(":")
    if not name:
        raise DataPrepError(f"{location}: empty hub dataset name (expected hf:OWNER/NAME[:CONFIG])")
    return name, config or None


def read_hub(location: str, split: str) -> list[RawRecord]:
    """Records of a hub dataset split via ``datasets.load_dataset`` (imported lazily; needs network)."""
    name, config = parse_hub_location(location)
    try:
        import datasets  # noqa: F401  (optional dependency)
    except ImportError:
        raise DataPrepError(
            f"{location}: reading from the Hugging Face hub needs the 'datasets' package (pip install datasets); "
            "or download the files and pass a local --src"
        ) from None
    try:
        loaded = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # offline, unknown name, unknown split, ...
        raise DataPrepError(
            f"{location} [split {split}]: could not load from the hub: {type(exc).__name__}: {exc}"
        ) from None
    return [RawRecord(i, dict(row)) for i, row in enumerate(loaded)]
