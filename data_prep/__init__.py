"""data_prep: convert math RL datasets to verl's parquet schema (one row per problem).

Datasets: GSM8K, MATH-500, Minerva Math, AIME24 (Qwen2.5-Math and TTRL layouts), SimpleRL-Zoo (hard
split, levels 3-5) with a seeded difficulty-stratified sample, and optionally MMLU-Pro. Inputs are
sha256-checked against known upstream versions; bad rows are errors naming file and row (or counted
skips with ``--skip-bad``). Commands::

    python -m data_prep list
    python -m data_prep all --src /path/to/shared/data --out data --skip-bad
    python -m data_prep simplerl_zoo --src /path/to/shared/data --out data/simplerl_zoo --sample-n 400 --seed 0 \\
        --skip-bad
    python -m data_prep gsm8k --src vendor --out data/gsm8k_demo

Modules: ``templates`` (prompt registry), ``answers`` (answer extraction), ``datasets`` (per-dataset
converters and file layout), ``sources`` (reading files / the hub), ``checksums`` (sha256 table),
``convert`` (rows and parquet), ``sampling`` (stratified sample), ``vendored`` (shipped demo files),
``cli`` (the command line).
"""

from data_prep.checksums import KNOWN_SHA256, sha256_file, verify_file
from data_prep.convert import SplitResult, build_row, convert_split, write_parquet
from data_prep.datasets import DATASETS, DatasetSpec, get_dataset, resolve_sources
from data_prep.errors import BadInputError, BadRow, ChecksumMismatchError, DataPrepError, RowProblem
from data_prep.sampling import PAPER_SAMPLE_N, allocate, stratified_sample
from data_prep.templates import TEMPLATES, PromptTemplate, get_template, register_template
from data_prep.vendored import VENDORED_FILES, vendored_path

__all__ = [
    "BadInputError", "BadRow", "ChecksumMismatchError", "DATASETS", "DataPrepError", "DatasetSpec",
    "KNOWN_SHA256", "PAPER_SAMPLE_N", "PromptTemplate", "RowProblem", "SplitResult", "TEMPLATES",
    "VENDORED_FILES", "allocate", "build_row", "convert_split", "get_dataset", "get_template",
    "register_template", "resolve_sources", "sha256_file", "stratified_sample", "vendored_path",
    "verify_file", "write_parquet",
]
