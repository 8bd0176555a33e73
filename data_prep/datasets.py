"""Dataset registry: for each dataset, where its files are and how one record becomes a verl row.

Every converter takes one input record (a dict) and returns a :class:`Converted` (question, ground-truth
answer, metadata) or raises RowProblem. Answer rules:

* ``gsm8k``         text after ``####``, thousands commas stripped (``"1,080"`` -> ``"1080"``)
* ``math500``       the ``answer`` field
* ``minerva_math``  content of the LAST ``\\boxed{...}`` in ``solution`` (nested braces matched)
* ``aime24``        ``answer`` as a canonical integer string (``"025"`` -> ``"25"``); same for ``aime24_ttrl``
  (TTRL layout: ``prompt``, ``answer``, ``source``, ``id``)
* ``simplerl_zoo``  prompt built from ``question`` (falling back to ``extra_info.question``, which is all the
  test parquet has), never from the pre-formatted ``prompt`` column; answer from ``answer`` (falling back to
  ``reward_model.ground_truth``); ``level`` from the top-level column (``extra_info.level`` upstream is
  always 1 and is ignored)
* ``mmlu_pro``      the answer letter, checked against the options and ``answer_index``
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep import answers
from data_prep.errors import DataPrepError, RowProblem
from data_prep.sources import HF_PREFIX, SplitSource
from data_prep.vendored import vendored_path


@dataclass(frozen=True)
class Converted:
    question: str
    answer: str
    extra: dict[str, Any] = field(default_factory=dict)
    options: str | None = None  # lettered option lines, multiple choice only


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # CLI name
    data_source: str  # value of the row's data_source column
    files: dict[str, str]  # split -> path relative to a data root in data_prep's layout
    convert: Callable[[Mapping[str, Any]], Converted]
    default_template: str = "qwen_boxed"
    ability: str = "math"
    optional: bool = False  # `all` mode: absent files are a warning, not an error
    vendored: dict[str, str] = field(default_factory=dict)  # split -> vendored_path() key


def _text(rec: Mapping[str, Any], name: str) -> str:
    if name not in rec or rec[name] is None:
        raise RowProblem(f"missing field {name!r}")
    value = rec[name]
    if not isinstance(value, str):
        raise RowProblem(f"field {name!r} is {type(value).__name__}, expected a string")
    if not value.strip():
        raise RowProblem(f"field {name!r} is empty")
    return value


def _required(rec: Mapping[str, Any], name: str) -> Any:
    if name not in rec or rec[name] is None:
        raise RowProblem(f"missing field {name!r}")
    return rec[name]


def _level(value: Any) -> int | None:
    """MATH levels as ints: ``3`` or ``"Level 3"`` -> 3; None stays None; anything else is a RowProblem."""
    if value is None or isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        digits = value.strip().removeprefix("Level").strip()
        if digits.isdigit():
            return int(digits)
    raise RowProblem(f"unparsable level {value!r}")


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def convert_gsm8k(rec: Mapping[str, Any]) -> Converted:
    return Converted(_text(rec, "question"), answers.gsm8k_answer(_text(rec, "answer")))


def convert_math500(rec: Mapping[str, Any]) -> Converted:
    extra = {"level": _level(rec.get("level")), "subject": rec.get("subject"), "unique_id": rec.get("unique_id")}
    return Converted(_text(rec, "problem"), answers.nonempty_answer(_required(rec, "answer")), extra)


def convert_minerva(rec: Mapping[str, Any]) -> Converted:
    extra = {"type": rec.get("type"), "unique_id": _str_or_none(rec.get("idx"))}
    return Converted(_text(rec, "problem"), answers.boxed_answer(_text(rec, "solution")), extra)


def convert_aime24(rec: Mapping[str, Any]) -> Converted:
    extra = {"unique_id": _str_or_none(rec.get("id")), "url": rec.get("url")}
    return Converted(_text(rec, "problem"), answers.aime_answer(_required(rec, "answer")), extra)


def convert_aime24_ttrl(rec: Mapping[str, Any]) -> Converted:
    extra = {"unique_id": _str_or_none(rec.get("id")), "source": rec.get("source")}
    return Converted(_text(rec, "prompt"), answers.aime_answer(_required(rec, "answer")), extra)


def convert_simplerl_zoo(rec: Mapping[str, Any]) -> Converted:
    nested_extra = rec.get("extra_info") if isinstance(rec.get("extra_info"), Mapping) else {}
    nested_reward = rec.get("reward_model") if isinstance(rec.get("reward_model"), Mapping) else {}
    if rec.get("question") is not None:
        question = _text(rec, "question")
    elif nested_extra.get("question") is not None:
        question = _text(nested_extra, "question")
    else:
        raise RowProblem("missing field 'question' (and no extra_info.question)")
    if "answer" in rec:
        answer = answers.nonempty_answer(rec["answer"])
    elif "ground_truth" in nested_reward:
        answer = answers.nonempty_answer(nested_reward["ground_truth"])
    else:
        raise RowProblem("missing field 'answer' (and no reward_model.ground_truth)")
    extra = {
        "level": _level(_required(rec, "level")),
        "subject": rec.get("subject"),
        "unique_id": rec.get("unique_id"),
    }
    return Converted(question, answer, extra)


def convert_mmlu_pro(rec: Mapping[str, Any]) -> Converted:
    options = _required(rec, "options")
    if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
        raise RowProblem("field 'options' must be a non-empty list of strings")
    if len(options) > len(answers.MMLU_LETTERS):
        raise RowProblem(f"{len(options)} options; at most {len(answers.MMLU_LETTERS)} supported")
    letter = answers.mmlu_answer(_required(rec, "answer"), len(options), rec.get("answer_index"))
    lettered = "\n".join(f"{answers.MMLU_LETTERS[i]}. {o}" for i, o in enumerate(options))
    extra = {
        "subject": rec.get("category"),
        "unique_id": _str_or_none(rec.get("question_id")),
        "options": list(options),
        "src": rec.get("src"),
    }
    return Converted(_text(rec, "question"), letter, extra, lettered)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("gsm8k", "gsm8k", {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"}, convert_gsm8k,
                    vendored={"train": "gsm8k_train_first256", "test": "gsm8k_test_first64"}),
        DatasetSpec("math500", "math500", {"test": "math500/test.jsonl"}, convert_math500),
        DatasetSpec("minerva_math", "minerva_math", {"test": "minerva_math/test.jsonl"}, convert_minerva),
        DatasetSpec("aime24", "aime24", {"test": "aime24/test.jsonl"}, convert_aime24),
        DatasetSpec("aime24_ttrl", "aime24", {"test": "aime24_ttrl/test.json"}, convert_aime24_ttrl,
                    vendored={"test": "aime24_ttrl_test"}),
        DatasetSpec("simplerl_zoo", "simplerl_zoo",
                    {"train": "simplerl_zoo/level3to5_train.parquet", "test": "simplerl_zoo/level3to5_test.parquet"},
                    convert_simplerl_zoo),
        DatasetSpec("mmlu_pro", "mmlu_pro", {"test": "mmlu_pro/test_v2024-05.jsonl"}, convert_mmlu_pro,
                    default_template="mmlu_pro_boxed", ability="multiple_choice", optional=True),
    )
}


def get_dataset(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}") from None


def _infer_split(spec: DatasetSpec, path: Path) -> str:
    stem = path.stem.lower()
    found = [split for split in spec.files if split in stem]
    if len(found) == 1:
        return found[0]
    if len(spec.files) == 1:
        return next(iter(spec.files))
    raise DataPrepError(f"{path}: cannot tell the split from the file name; pass --split ({'/'.join(spec.files)})")


def resolve_sources(spec: DatasetSpec, src: str | Path, split: str | None = None) -> list[SplitSource]:
    """The split files for ``spec`` from ``src`` (a root dir, a dataset dir, one file, ``vendor`` or ``hf:...``)."""
    wanted = [split] if split else list(spec.files)
    src_text = str(src)
    if src_text == "vendor":
        if not spec.vendored:
            have = [s.name for s in DATASETS.values() if s.vendored]
            raise DataPrepError(f"no vendored data for {spec.name!r}; vendored datasets: {', '.join(have)}")
        missing = [s for s in wanted if s not in spec.vendored]
        if missing:
            raise DataPrepError(f"no vendored {spec.name} split {missing[0]!r}; vendored: {', '.join(spec.vendored)}")
        return [SplitSource(s, str(vendored_path(spec.vendored[s]))) for s in wanted]
    if src_text.startswith(HF_PREFIX):
        return [SplitSource(s, src_text, hf_split=s) for s in wanted]
    path = Path(src)
    if path.is_file():
        return [SplitSource(split or _infer_split(spec, path), str(path))]
    if not path.is_dir():
        raise DataPrepError(f"{path}: no such file or directory")
    unknown = [s for s in wanted if s not in spec.files]
    if unknown:
        raise DataPrepError(f"{spec.name} has no split {unknown[0]!r}; splits: {', '.join(spec.files)}")
    sources = []
    for s in wanted:
        relative = Path(spec.files[s])
        candidates = [path / relative, path / relative.name]  # a root, or the dataset's own folder
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise DataPrepError(f"{spec.name} split {s!r}: none of {', '.join(map(str, candidates))} exists")
        sources.append(SplitSource(s, str(found)))
    return sources
