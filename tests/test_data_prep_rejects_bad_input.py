"""Bad input is never dropped silently: each failure names the file and row; --skip-bad turns row failures
into counted, listed skips; checksum mismatches name file and both hashes. Run:
    .venv/bin/python -m pytest tests/test_data_prep_rejects_bad_input.py -q
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from data_prep import (
    BadInputError,
    ChecksumMismatchError,
    DataPrepError,
    convert_split,
    get_dataset,
    get_template,
    resolve_sources,
    sha256_file,
)
from data_prep.checksums import KNOWN_SHA256, UNKNOWN
from data_prep.cli import main


def write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def convert(dataset: str, path: Path, skip_bad: bool = False, split: str = "test"):
    spec = get_dataset(dataset)
    [source] = resolve_sources(spec, path, split)
    return convert_split(spec, source, get_template(spec.default_template), skip_bad=skip_bad, progress=False)


GOOD_GSM8K = {"question": "1+1?", "answer": "1+1=2\n#### 2"}


def test_missing_field_names_file_row_and_field(tmp_path):
    path = write_jsonl(tmp_path / "my_gsm8k.jsonl", [GOOD_GSM8K, {"question": "no answer here"}])
    with pytest.raises(BadInputError) as caught:
        convert("gsm8k", path)
    message = str(caught.value)
    assert str(path) in message and "row 1 (line 2)" in message and "missing field 'answer'" in message
    assert [bad.row for bad in caught.value.bad_rows] == [1]


def test_gsm8k_without_hash_marker_or_with_non_number_is_rejected(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [
        {"question": "q", "answer": "just text"},
        {"question": "q", "answer": "#### twelve"},
        GOOD_GSM8K,
    ])
    with pytest.raises(BadInputError) as caught:
        convert("gsm8k", path)
    message = str(caught.value)
    assert "row 0 (line 1): no '####' answer marker" in message
    assert "row 1 (line 2): answer after '####' is not a number: 'twelve'" in message


def test_minerva_without_boxed_or_with_unbalanced_braces_is_rejected(tmp_path):
    path = write_jsonl(tmp_path / "minerva.jsonl", [
        {"problem": "p", "solution": "so $x = \\boxed{\\frac{1}{2}}$", "type": "t", "idx": 0},
        {"problem": "p", "solution": "the answer is 3", "type": "t", "idx": 1},
        {"problem": "p", "solution": "\\boxed{\\frac{1}{2}", "type": "t", "idx": 2},
    ])
    with pytest.raises(BadInputError) as caught:
        convert("minerva_math", path)
    message = str(caught.value)
    assert f"{path}: row 1 (line 2): no \\boxed{{...}} in the solution" in message
    assert f"{path}: row 2 (line 3): unbalanced braces" in message
    kept = convert("minerva_math", path, skip_bad=True)
    assert [row["reward_model"]["ground_truth"] for row in kept.rows] == ["\\frac{1}{2}"]


def test_invalid_json_line_and_non_integer_aime_answer_are_row_errors(tmp_path):
    path = write_jsonl(tmp_path / "aime.jsonl", [
        {"id": 1, "problem": "p", "answer": "007"},
        '{"id": 2, "problem": "p", "answer": ',
        {"id": 3, "problem": "p", "answer": "12a"},
    ])
    with pytest.raises(BadInputError) as caught:
        convert("aime24", path)
    message = str(caught.value)
    assert "row 1 (line 2): invalid JSON" in message
    assert "row 2 (line 3): AIME answer is not an integer string: '12a'" in message


def test_skip_bad_counts_and_lists_skips_in_the_summary(tmp_path, capsys):
    path = write_jsonl(tmp_path / "g_test.jsonl", [GOOD_GSM8K, {"question": "q"}, GOOD_GSM8K])
    result = convert("gsm8k", path, skip_bad=True)
    assert len(result.rows) == 2 and len(result.skipped) == 1 and result.records_in == 3
    assert [row["extra_info"]["index"] for row in result.rows] == [0, 2]  # source positions kept
    out = tmp_path / "out"
    assert main(["gsm8k", "--src", str(path), "--out", str(out), "--skip-bad", "--no-progress"]) == 0
    captured = capsys.readouterr()
    header, _, line = captured.out.splitlines()[:3]
    assert header.split()[:4] == ["dataset", "split", "rows", "skipped"]
    assert line.split()[:4] == ["gsm8k", "test", "2", "1"]
    assert f"skipped: {path}: row 1 (line 2): missing field 'answer'" in captured.err
    assert (out / "test.parquet").is_file()


def test_cli_without_skip_bad_fails_naming_file_and_row(tmp_path, capsys):
    path = write_jsonl(tmp_path / "g_test.jsonl", [GOOD_GSM8K, {"question": "q"}])
    assert main(["gsm8k", "--src", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"{path}: row 1 (line 2): missing field 'answer'" in err and "--skip-bad" in err
    assert not (tmp_path / "out" / "test.parquet").exists()


def test_a_file_with_no_usable_row_is_an_error_even_with_skip_bad(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "q"}])
    with pytest.raises(DataPrepError, match=r"g\.jsonl: no usable rows \(1 records, 1 bad\)"):
        convert("gsm8k", path, skip_bad=True)


def test_wrong_file_formats_name_the_file(tmp_path):
    not_a_list = tmp_path / "t.json"
    not_a_list.write_text('{"prompt": "p", "answer": "1"}')
    with pytest.raises(DataPrepError, match=rf"{not_a_list}: expected a JSON list of objects, got dict"):
        convert("aime24_ttrl", not_a_list)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(DataPrepError, match=rf"{broken}: cannot read parquet"):
        convert("simplerl_zoo", broken, split="train")
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n")
    with pytest.raises(DataPrepError, match=r"unsupported file type '\.csv'"):
        convert("gsm8k", csv)
    with pytest.raises(DataPrepError, match="none of .* exists"):
        resolve_sources(get_dataset("math500"), tmp_path)


def test_checksum_mismatch_names_file_and_both_hashes(tmp_path):
    path = write_jsonl(tmp_path / "gsm8k" / "test.jsonl", [GOOD_GSM8K])  # claims to be the known upstream file
    with pytest.raises(ChecksumMismatchError) as caught:
        convert("gsm8k", tmp_path)
    message = str(caught.value)
    assert str(path) in message
    assert KNOWN_SHA256["gsm8k/test.jsonl"] in message and sha256_file(path) in message


def test_unknown_file_is_accepted_with_a_printed_warning(tmp_path, capsys):
    path = write_jsonl(tmp_path / "mine_test.jsonl", [GOOD_GSM8K])
    result = convert("gsm8k", path)
    assert result.checksum == UNKNOWN and len(result.rows) == 1
    assert f"warning: {path}: not in data_prep's known-sha256 table" in capsys.readouterr().err


def test_mmlu_answer_letter_must_name_an_option_and_agree_with_answer_index(tmp_path):
    path = write_jsonl(tmp_path / "mmlu.jsonl", [
        {"question": "q", "options": ["x", "y"], "answer": "C", "answer_index": 2},
        {"question": "q", "options": ["x", "y"], "answer": "A", "answer_index": 1},
        {"question": "q", "options": [], "answer": "A"},
    ])
    with pytest.raises(BadInputError) as caught:
        convert("mmlu_pro", path)
    message = str(caught.value)
    assert "row 0 (line 1): answer 'C' but only 2 options" in message
    assert "row 1 (line 2): answer 'A' disagrees with answer_index 1" in message
    assert "row 2 (line 3): field 'options' must be a non-empty list of strings" in message


def test_simplerl_zoo_rows_need_a_level(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "zoo_train.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": "q", "answer": "1", "level": None}]), path)
    with pytest.raises(BadInputError, match=r"zoo_train\.parquet: row 0: missing field 'level'"):
        convert("simplerl_zoo", path, split="train")


def test_unknown_template_and_dataset_names_list_the_known_ones(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"unknown prompt template 'qwen'; known templates: .*qwen_boxed"):
        get_template("qwen")
    with pytest.raises(ValueError, match=r"unknown dataset 'gsm9k'; known datasets: gsm8k"):
        get_dataset("gsm9k")
    path = write_jsonl(tmp_path / "g_test.jsonl", [GOOD_GSM8K])
    assert main(["gsm8k", "--src", str(path), "--out", str(tmp_path), "--template", "nope"]) == 1
    err = capsys.readouterr().err
    assert "unknown prompt template 'nope'; known templates: mmlu_pro_boxed, plain, qwen_boxed" in err


def test_hub_source_fails_clearly_without_the_datasets_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(DataPrepError, match=r"hf:openai/gsm8k:main: .*needs the 'datasets' package"):
        convert("gsm8k", "hf:openai/gsm8k:main")


def test_hub_source_wraps_load_failures(tmp_path, monkeypatch):
    class FakeDatasets:
        @staticmethod
        def load_dataset(name, config, split):
            raise ConnectionError(f"offline: {name} {config} {split}")

    monkeypatch.setitem(sys.modules, "datasets", FakeDatasets)
    with pytest.raises(DataPrepError, match=r"hf:openai/gsm8k:main \[split test\]: could not load .*offline"):
        convert("gsm8k", "hf:openai/gsm8k:main")
