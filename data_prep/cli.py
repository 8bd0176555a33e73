"""Command line: ``python -m data_prep <dataset|all|list> --src PATH --out DIR [options]``.

Examples (from the repository root)::

    python -m data_prep list
    python -m data_prep gsm8k --src /path/to/shared/data --out data/gsm8k
    python -m data_prep gsm8k --src vendor --out data/gsm8k_demo               # files shipped in the package
    python -m data_prep math500 --src /path/to/shared/data/math500/test.jsonl --out data/math500 --template plain
    python -m data_prep simplerl_zoo --src /path/to/shared/data --out data/simplerl_zoo --sample-n 400 --seed 0 \\
        --skip-bad
    python -m data_prep all --src /path/to/shared/data --out data --skip-bad
    python -m data_prep all --src vendor --out data/demo
    python -m data_prep gsm8k --src hf:openai/gsm8k:main --out data/gsm8k     # needs `datasets` and network

Outputs: ``DIR/<split>.parquet`` (``all``: ``DIR/<dataset>/<split>.parquet``); a sample is written beside
the full split as ``<split>_n<N>_seed<S>.parquet``. ``all`` converts every dataset found under the root
(MMLU-Pro is optional; with ``--src vendor`` only the vendored ones) and samples ``PAPER_SAMPLE_N`` = 400
SimpleRL-Zoo training rows unless ``--sample-n``/``--level-counts`` say otherwise (sampling options apply
to SimpleRL-Zoo only in ``all`` mode). Bad rows stop the run with file and row named, unless ``--skip-bad``
(then they are counted in the summary and listed on stderr). Exit status: 0 ok, 1 error.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from data_prep.convert import SplitResult, convert_split, write_parquet
from data_prep.datasets import DATASETS, DatasetSpec, resolve_sources
from data_prep.errors import DataPrepError
from data_prep.sampling import PAPER_SAMPLE_N, stratified_sample
from data_prep.templates import TEMPLATES, get_template


@dataclass(frozen=True)
class SampleConfig:
    n: int | None
    seed: int
    level_counts: dict[int | str, int] | None
    split: str = "train"

    @property
    def active(self) -> bool:
        return self.n is not None or self.level_counts is not None


def parse_level_counts(text: str) -> dict[int | str, int]:
    """``"3=118,4=124,5=158"`` -> ``{3: 118, 4: 124, 5: 158}``."""
    counts: dict[int | str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        level, sep, count = item.partition("=")
        if not sep or not count.strip().isdigit():
            raise argparse.ArgumentTypeError(f"bad level count {item!r}; expected LEVEL=COUNT, e.g. 3=118")
        key: int | str = int(level) if level.strip().isdigit() else level.strip()
        counts[key] = int(count)
    if not counts:
        raise argparse.ArgumentTypeError("empty --level-counts")
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep",
        description="Convert math RL datasets to verl's parquet schema.",
        epilog=f"datasets: {', '.join(DATASETS)}; templates: {', '.join(TEMPLATES)}",
    )
    parser.add_argument("dataset", choices=[*DATASETS, "all", "list"], help="dataset to convert, 'all', or 'list'")
    parser.add_argument("--src", help="data root, dataset folder, one file, 'vendor', or hf:OWNER/NAME[:CONFIG]")
    parser.add_argument("--out", help="output folder")
    parser.add_argument("--split", help="only this split (default: all of the dataset's splits)")
    parser.add_argument("--template", help="prompt template name (default: the dataset's own)")
    parser.add_argument("--sample-n", type=int, help="also write a stratified sample of this many rows")
    parser.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
    parser.add_argument("--level-counts", type=parse_level_counts,
                        help="explicit per-level counts, e.g. 3=100,4=150,5=150 (overrides proportional)")
    parser.add_argument("--sample-split", default="train", help="split to sample from (default train)")
    parser.add_argument("--skip-bad", action="store_true", help="skip bad rows (counted and listed) instead of failing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _list() -> None:
    print("datasets:")
    for spec in DATASETS.values():
        vendored = f", vendored: {'/'.join(spec.vendored)}" if spec.vendored else ""
        print(f"  {spec.name:<13} splits {'/'.join(spec.files)}, template {spec.default_template}{vendored}")
    print("templates:")
    for template in TEMPLATES.values():
        print(f"  {template.name:<15} {template.description}")


def prepare_dataset(
    spec: DatasetSpec,
    src: str,
    out: Path,
    *,
    split: str | None,
    template_name: str | None,
    sample: SampleConfig,
    skip_bad: bool,
    progress: bool,
) -> list[SplitResult]:
    """Convert, write and (optionally) sample one dataset; returns one result per written file."""
    template = get_template(template_name or spec.default_template)
    sources = resolve_sources(spec, src, split)
    results: list[SplitResult] = []
    for source in sources:
        result = convert_split(spec, source, template, skip_bad=skip_bad, progress=progress)
        result.output = str(write_parquet(result.rows, out / f"{source.split}.parquet"))
        results.append(result)
        for bad in result.skipped:
            print(f"skipped: {bad.describe()}", file=sys.stderr)
    if sample.active:
        base = next((r for r in results if r.split == sample.split), None)
        if base is None:
            converted = [r.split for r in results]
            raise DataPrepError(f"{spec.name}: cannot sample split {sample.split!r}: converted {converted}")
        drawn = stratified_sample(base.rows, sample.n, seed=sample.seed, level_counts=sample.level_counts)
        name = f"{base.split}_n{len(drawn.rows)}_seed{sample.seed}"
        path = write_parquet(drawn.rows, out / f"{name}.parquet")
        per_level = " ".join(f"{lv}:{k}/{drawn.pool[lv]}" for lv, k in drawn.allocation.items())
        note = f"sample of {len(base.rows)} (seed {sample.seed}): {per_level}"
        results.append(SplitResult(spec.name, name, base.source, drawn.rows, [], base.checksum, len(base.rows),
                                   str(path), note))
    return results


def _levels(rows: list[dict]) -> str:
    counts = Counter(row["extra_info"].get("level") for row in rows)
    if set(counts) == {None}:
        return "-"
    return " ".join(f"{level}:{counts[level]}" for level in sorted(counts, key=lambda lv: (lv is None, str(lv))))


def format_summary(results: list[SplitResult], absent: Sequence[str] = ()) -> str:
    header = ("dataset", "split", "rows", "skipped", "levels", "input", "output")
    table = [header] + [
        (r.dataset, r.split, str(len(r.rows)), str(len(r.skipped)), _levels(r.rows), r.checksum, r.output or "")
        for r in results
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"note: {r.dataset}/{r.split}: {r.note}" for r in results if r.note]
    lines += [f"absent (optional, skipped): {name}" for name in absent]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> list[SplitResult]:
    if args.dataset == "list":
        _list()
        return []
    if not args.src or not args.out:
        raise DataPrepError("--src and --out are required")
    if args.template:
        get_template(args.template)  # fail before any work on an unknown name
    out = Path(args.out)
    progress = not args.no_progress
    sample = SampleConfig(args.sample_n, args.seed, args.level_counts, args.sample_split)
    if args.dataset != "all":
        results = prepare_dataset(DATASETS[args.dataset], args.src, out, split=args.split, template_name=args.template,
                                  sample=sample, skip_bad=args.skip_bad, progress=progress)
        print(format_summary(results))
        return results
    results, absent = [], []
    for spec in DATASETS.values():
        if args.split and args.split not in spec.files:
            continue
        if args.src == "vendor" and not spec.vendored:
            continue  # `all --src vendor`: just the datasets shipped in the package
        if spec.optional:
            try:
                resolve_sources(spec, args.src, args.split)
            except DataPrepError as exc:
                print(f"warning: {spec.name} skipped: {exc}", file=sys.stderr)
                absent.append(spec.name)
                continue
        spec_sample = SampleConfig(None, args.seed, None)
        if spec.name == "simplerl_zoo":
            spec_sample = sample
            if not sample.active and args.split in (None, sample.split):
                spec_sample = SampleConfig(PAPER_SAMPLE_N, args.seed, None, sample.split)
        results += prepare_dataset(spec, args.src, out / spec.name, split=args.split, template_name=args.template,
                                   sample=spec_sample, skip_bad=args.skip_bad, progress=progress)
    print(format_summary(results, absent))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (DataPrepError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
