"""data_prep converts every real file in the shared data to verl rows: exact counts, parsed answers, spot checks.

Shared data: $BTRANS_SHARED_DATA, default <repo>/../shared/data. Run:
    .venv/bin/python -m pytest tests/test_data_prep_converts_real_files.py -q
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_prep import (
    BadInputError,
    convert_split,
    get_dataset,
    get_template,
    resolve_sources,
    verify_file,
)
from data_prep.checksums import KNOWN_SHA256, VERIFIED
from data_prep.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BTRANS_SHARED_DATA", REPO.parent / "shared" / "data"))
pytestmark = pytest.mark.skipif(
    not (SHARED / "PROVENANCE.json").is_file(),
    reason=f"shared data not found at {SHARED} (set BTRANS_SHARED_DATA to a data root in data_prep's layout)",
)

EXPECTED_ROWS = {
    ("gsm8k", "test"): 1319,
    ("gsm8k", "train"): 7473,
    ("math500", "test"): 500,
    ("minerva_math", "test"): 272,
    ("aime24", "test"): 30,
    ("aime24_ttrl", "test"): 30,
    ("simplerl_zoo", "test"): 500,
    ("mmlu_pro", "test"): 12032,
}
# SimpleRL-Zoo's hard training split has 8523 rows; rows 5054 and 5158 have an empty answer upstream
# (answer, gt_answer, target and reward_model.ground_truth all ""), so strict conversion rejects them.
SIMPLERL_TRAIN_ROWS = 8523
SIMPLERL_EMPTY_ANSWER_ROWS = [5054, 5158]

_cache: dict[tuple[str, str, bool], object] = {}


def converted(dataset: str, split: str, skip_bad: bool = False):
    key = (dataset, split, skip_bad)
    if key not in _cache:
        spec = get_dataset(dataset)
        [source] = resolve_sources(spec, SHARED, split)
        template = get_template(spec.default_template)
        _cache[key] = convert_split(spec, source, template, skip_bad=skip_bad, progress=False)
    return _cache[key]


@pytest.mark.parametrize(("dataset", "split"), sorted(EXPECTED_ROWS))
def test_every_row_converts_with_a_nonempty_answer(dataset, split):
    result = converted(dataset, split)
    spec = get_dataset(dataset)
    assert len(result.rows) == EXPECTED_ROWS[dataset, split] == result.records_in
    assert result.skipped == []
    assert result.checksum == VERIFIED
    for i, row in enumerate(result.rows):
        assert row["data_source"] == spec.data_source
        assert row["ability"] == spec.ability
        assert [m["role"] for m in row["prompt"]] == ["user"]
        assert row["prompt"][0]["content"].strip()
        assert row["reward_model"]["style"] == "rule"
        answer = row["reward_model"]["ground_truth"]
        assert isinstance(answer, str) and answer.strip() == answer and answer
        assert row["extra_info"]["split"] == split and row["extra_info"]["index"] == i
        assert row["extra_info"]["question"] in row["prompt"][0]["content"]


def test_all_known_shared_files_match_their_sha256():
    for relative in KNOWN_SHA256:
        if "/" in relative:  # shared-layout keys; the others are vendored files
            assert verify_file(SHARED / relative) == VERIFIED, relative


def test_gsm8k_answer_is_the_number_after_hashes_without_commas():
    test = converted("gsm8k", "test")
    assert test.rows[0]["reward_model"]["ground_truth"] == "18"
    assert test.rows[2]["reward_model"]["ground_truth"] == "70000"
    train = converted("gsm8k", "train")
    answers = [row["reward_model"]["ground_truth"] for row in train.rows]
    assert "1080" in answers  # written "#### 1,080" upstream
    assert not any("," in a for a in answers)


def test_aime_answers_are_canonical_integers_in_both_layouts():
    qwen = converted("aime24", "test")
    ttrl = converted("aime24_ttrl", "test")
    for result in (qwen, ttrl):
        answers = [row["reward_model"]["ground_truth"] for row in result.rows]
        assert all(a == str(int(a)) for a in answers)
        assert all(0 <= int(a) <= 999 for a in answers)
    # TTRL row 1 is written "025" upstream; Qwen's id 67 likewise
    assert ttrl.rows[1]["reward_model"]["ground_truth"] == "25"
    by_id = {row["extra_info"]["unique_id"]: row["reward_model"]["ground_truth"] for row in qwen.rows}
    assert by_id["67"] == "25" and by_id["75"] == "73" and by_id["60"] == "204"
    # the same 30 problems (ordered and typeset slightly differently): same answers, and where the question
    # text matches up to whitespace, the same answer
    assert Counter(r["reward_model"]["ground_truth"] for r in qwen.rows) == Counter(
        r["reward_model"]["ground_truth"] for r in ttrl.rows
    )
    def by_question(rows):
        return {"".join(r["extra_info"]["question"].split()): r["reward_model"]["ground_truth"] for r in rows}

    qwen_q, ttrl_q = by_question(qwen.rows), by_question(ttrl.rows)
    shared = qwen_q.keys() & ttrl_q.keys()
    assert len(shared) >= 25 and all(qwen_q[q] == ttrl_q[q] for q in shared)
    assert all(row["data_source"] == "aime24" for row in ttrl.rows)


def test_minerva_answer_is_the_last_boxed_content():
    rows = converted("minerva_math", "test").rows
    assert rows[0]["reward_model"]["ground_truth"] == "1.6"
    assert rows[1]["reward_model"]["ground_truth"] == "4.5e33"
    nested = [row["reward_model"]["ground_truth"] for row in rows if "{" in row["reward_model"]["ground_truth"]]
    assert nested and all(a.count("{") == a.count("}") for a in nested)
    assert rows[0]["extra_info"]["type"] == "Introduction to Astronomy (8.282J Spring 2006)"


def test_math500_keeps_answer_field_and_metadata():
    rows = converted("math500", "test").rows
    assert rows[0]["reward_model"]["ground_truth"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    extra = rows[0]["extra_info"]
    assert (extra["level"], extra["subject"], extra["unique_id"]) == (2, "Precalculus", "test/precalculus/807.json")
    assert Counter(row["extra_info"]["level"] for row in rows) == {1: 43, 2: 90, 3: 105, 4: 128, 5: 134}


def test_simplerl_zoo_train_rejects_its_two_empty_answers_unless_skipped():
    with pytest.raises(BadInputError) as caught:
        converted("simplerl_zoo", "train")
    message = str(caught.value)
    assert "level3to5_train.parquet" in message
    assert "row 5054" in message and "row 5158" in message and "answer is empty" in message
    result = converted("simplerl_zoo", "train", skip_bad=True)
    assert [bad.row for bad in result.skipped] == SIMPLERL_EMPTY_ANSWER_ROWS
    assert result.records_in == SIMPLERL_TRAIN_ROWS == len(result.rows) + len(result.skipped)
    assert Counter(row["extra_info"]["level"] for row in result.rows) == {3: 2514, 4: 2648, 5: 3359}


def test_simplerl_zoo_prompt_is_built_from_question_not_the_chat_formatted_prompt():
    template = get_template("qwen_boxed")
    for split in ("train", "test"):
        rows = converted("simplerl_zoo", split, skip_bad=True).rows
        assert all("<|im_start|>" not in row["prompt"][0]["content"] for row in rows)
        first = rows[0]
        assert first["prompt"][0]["content"] == template.render(first["extra_info"]["question"])
    train = converted("simplerl_zoo", "train", skip_bad=True).rows
    assert train[0]["reward_model"]["ground_truth"] == "118" and train[0]["extra_info"]["level"] == 5


def test_mmlu_pro_prompt_lists_lettered_options_and_answer_is_a_letter():
    rows = converted("mmlu_pro", "test").rows
    first = rows[0]
    assert first["reward_model"]["ground_truth"] == "I"
    assert "\nI. Unsafe practices, Distress, Fear, Serious\n" in first["prompt"][0]["content"]
    assert all(row["reward_model"]["ground_truth"] in "ABCDEFGHIJ" for row in rows)
    # row 5073 holds a U+0085 character inside a JSON string: it must not split the line
    assert rows[5073]["extra_info"]["index"] == 5073


def test_cli_all_mode_writes_every_dataset_and_a_summary(tmp_path, capsys):
    assert main(["all", "--src", str(SHARED), "--out", str(tmp_path), "--skip-bad", "--no-progress"]) == 0
    captured = capsys.readouterr()
    for (dataset, split), rows in EXPECTED_ROWS.items():
        assert pq.read_metadata(tmp_path / dataset / f"{split}.parquet").num_rows == rows
    assert pq.read_metadata(tmp_path / "simplerl_zoo" / "train.parquet").num_rows == 8521
    sample = pq.read_table(tmp_path / "simplerl_zoo" / "train_n400_seed0.parquet").to_pylist()
    assert Counter(row["extra_info"]["level"] for row in sample) == {3: 118, 4: 124, 5: 158}
    assert "train_n400_seed0" in captured.out and "3:2514 4:2648 5:3359" in captured.out
    assert "row 5054" in captured.err and "row 5158" in captured.err  # the skips are listed, not silent
    first = pq.read_table(tmp_path / "gsm8k" / "test.parquet").slice(0, 1).to_pylist()[0]
    assert set(first) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
    assert first["reward_model"] == {"style": "rule", "ground_truth": "18"}


def test_cli_all_mode_without_skip_bad_fails_naming_file_and_row(tmp_path, capsys):
    assert main(["all", "--src", str(SHARED), "--out", str(tmp_path), "--split", "train", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "level3to5_train.parquet" in err and "row 5054" in err and "--skip-bad" in err
