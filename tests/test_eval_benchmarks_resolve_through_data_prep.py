"""Benchmarks of the evaluation command: a data_prep name, a prepared parquet and its folder give the same problems
(messages, reference answers, row indices), and prompts render through the model's chat template."""

import pytest

from btrans_verl.eval.benchmark import load_benchmark, problems_from_rows, render_prompts
from btrans_verl.eval.config import EvalInputError


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from data_prep.cli import main as data_prep_main

    out = tmp_path_factory.mktemp("gsm8k")
    assert data_prep_main(["gsm8k", "--src", "vendor", "--out", str(out), "--no-progress"]) == 0
    return out


def test_name_file_and_folder_give_the_same_problems(prepared):
    by_name, where = load_benchmark("gsm8k", data_src="vendor")
    by_file, _ = load_benchmark(str(prepared / "test.parquet"))
    by_folder, _ = load_benchmark(str(prepared))
    assert by_name == by_file == by_folder
    assert len(by_name) == 64 and "gsm8k" in where and "test" in where
    first = by_name[0]
    assert first.reference == "18" and first.index == 0 and first.data_source == "gsm8k"
    assert first.messages[0]["role"] == "user" and "\\boxed{}" in first.messages[0]["content"]
    assert [p.index for p in by_name] == list(range(64))


def test_limit_split_and_other_vendored_datasets(prepared):
    problems, _ = load_benchmark("gsm8k", data_src="vendor", limit=5)
    assert [p.position for p in problems] == list(range(5))
    train, _ = load_benchmark(str(prepared), split="train", limit=3)
    assert len(train) == 3 and train[0].reference != problems[0].reference
    aime, _ = load_benchmark("aime24_ttrl", data_src="vendor")
    assert len(aime) == 30 and all(p.reference.isdigit() for p in aime)


def test_aliases_and_missing_data_are_named():
    with pytest.raises(EvalInputError, match=r"'minerva'.*minerva_math.*no vendored data"):
        load_benchmark("minerva", data_src="vendor")
    with pytest.raises(EvalInputError, match="unknown benchmark 'nope'"):
        load_benchmark("nope")


def test_rows_without_the_verl_schema_are_named():
    with pytest.raises(EvalInputError, match="row 0 has no 'prompt'"):
        problems_from_rows([{"reward_model": {"ground_truth": "1"}}], "x.parquet")
    with pytest.raises(EvalInputError, match="row 1 has no reward_model.ground_truth"):
        problems_from_rows([{"prompt": [{"role": "user", "content": "q"}], "reward_model": {"ground_truth": "1"}},
                            {"prompt": [{"role": "user", "content": "q"}], "reward_model": {}}], "x.parquet")
    [p] = problems_from_rows([{"prompt": [{"role": "user", "content": "q"}],
                               "reward_model": {"ground_truth": "\\boxed{3}"}}], "x.parquet")
    assert p.reference == "3" and p.index == 0 and p.data_source == ""


def test_prompts_render_through_the_chat_template(tmp_path):
    from btrans_verl.tiny import write_tiny_tokenizer

    tok = write_tiny_tokenizer(tmp_path)
    problems, _ = load_benchmark("gsm8k", data_src="vendor", limit=2)
    ids = render_prompts(problems, tok)
    text = tok.decode(ids[0])
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
    raw = render_prompts(problems, tok, chat_template=False)
    assert "<|im_start|>" not in tok.decode(raw[0])
    tok.chat_template = None
    with pytest.raises(EvalInputError, match="no chat template"):
        render_prompts(problems, tok)


def test_benchmark_names_read_the_data_root_of_the_environment_or_the_vendored_files(monkeypatch, tmp_path):
    from btrans_verl.eval.benchmark import DATA_ROOT_ENV, default_data_src

    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    assert default_data_src() == "vendor"  # no machine-specific default
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    assert default_data_src() == str(tmp_path)
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "missing"))
    with pytest.raises(EvalInputError, match="BTRANS_SHARED_DATA=.*missing.*is not a folder"):
        load_benchmark("gsm8k")
