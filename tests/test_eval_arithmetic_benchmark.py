"""The generated arithmetic benchmark (btrans_verl.eval.arithmetic): its rows are a pure function of the seed, right
and distinct; `--benchmark arithmetic` gives completion-style problems whose prompt ends with the assistant prefix;
the `first_number` answer format grades continuations; the CLI writes the rows with their provenance."""

import json
from collections import Counter

import pytest

from btrans_verl.eval import arithmetic
from btrans_verl.eval.benchmark import load_benchmark, problems_from_rows, render_prompts
from btrans_verl.eval.config import EvalInputError
from btrans_verl.eval.grading import extract_first_number, grade_responses

# sha256 of the default rows (seed 0): changes only when the generator (kinds, counts, prompts) changes
DEFAULT_SHA256 = "daa19adfd9839dc036057f54f1afa2db0ef2e445b68aadcc44f750f7bbafb820"


@pytest.fixture(scope="module")
def default_rows():
    return arithmetic.rows()


def test_rows_are_a_pinned_pure_function_of_the_seed(default_rows):
    assert arithmetic.rows_sha256(default_rows) == DEFAULT_SHA256
    assert arithmetic.rows(seed=0) == default_rows
    other = arithmetic.rows(seed=1)
    assert other != default_rows and arithmetic.rows(seed=1) == other


def test_ground_truths_are_the_expressions_and_questions_are_distinct(default_rows):
    questions = [r["extra_info"]["question"] for r in default_rows]
    assert len(set(questions)) == len(questions)
    for i, r in enumerate(default_rows):
        q = r["extra_info"]["question"]
        assert r["reward_model"] == {"style": "rule", "ground_truth": str(eval(q))}  # only digits and + - *
        assert r["extra_info"]["index"] == i and r["extra_info"]["answer_format"] == "first_number"
        assert r["data_source"] == "btrans_eval/arithmetic"
        assert [m["role"] for m in r["prompt"]] == ["user", "assistant"]
        assert r["prompt"][0]["content"].startswith(f"What is {q}?") and r["prompt"][1]["content"] == f"{q} ="


def test_kinds_are_balanced_as_declared(default_rows):
    counts = Counter(r["extra_info"]["kind"] for r in default_rows)
    assert counts == {name: k.count for name, k in arithmetic.KINDS.items()}
    assert 100 <= len(default_rows) <= 160
    assert Counter(r["extra_info"]["kind"] for r in arithmetic.rows(per_kind={"mul_1d_1d": 5})) == {"mul_1d_1d": 5}
    with pytest.raises(ValueError, match="'nope'"):
        arithmetic.rows(per_kind={"nope": 1})
    with pytest.raises(ValueError, match="'add_1d_1d'.*only 81 distinct"):
        arithmetic.rows(per_kind={"add_1d_1d": 82})


def test_benchmark_name_gives_first_number_problems(default_rows):
    problems, where = load_benchmark("arithmetic")
    assert len(problems) == len(default_rows) and DEFAULT_SHA256 in where
    assert {p.answer_format for p in problems} == {"first_number"} and all(p.continues_prefix for p in problems)
    assert [p.reference for p in problems] == [r["reward_model"]["ground_truth"] for r in default_rows]
    with pytest.raises(EvalInputError, match="only the split 'test', not 'train'"):
        load_benchmark("arithmetic", split="train")
    with pytest.raises(EvalInputError, match="arithmetic"):
        load_benchmark("nope")


def test_bad_answer_formats_and_early_assistant_messages_are_named():
    row = {"prompt": [{"role": "user", "content": "q"}], "reward_model": {"ground_truth": "1"},
           "extra_info": {"answer_format": "last_word"}}
    with pytest.raises(EvalInputError, match="row 0 has unknown extra_info.answer_format 'last_word'"):
        problems_from_rows([row], "x.parquet")
    row = {"prompt": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}],
           "reward_model": {"ground_truth": "1"}}
    with pytest.raises(EvalInputError, match="row 0: prompt message 0 of 2 is an assistant message"):
        problems_from_rows([row], "x.parquet")


def test_prompts_continue_the_assistant_prefix(tmp_path):
    import transformers

    from btrans_verl.tiny import write_tiny_tokenizer

    write_tiny_tokenizer(tmp_path)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    problems, _ = load_benchmark("arithmetic", limit=3)
    for p, ids in zip(problems, render_prompts(problems, tok)):
        text = tok.decode(ids)
        assert text.endswith("<|im_start|>assistant\n" + p.messages[-1]["content"])
        assert text.count("<|im_end|>") == 1  # the user's turn ends; the prefix does not
    raw = tok.decode(render_prompts(problems, tok, chat_template=False)[0])
    assert raw == "\n\n".join(m["content"] for m in problems[0].messages)


@pytest.mark.parametrize(("text", "number"), [
    (" 12\n\nThis is a", "12"), ("-3", "-3"), (" 2.5 apples", "2.5"), (" 7.", "7"), (" x is 4 or 5", "4"),
    (" none", None), ("", None), (None, None)])
def test_first_number_extraction(text, number):
    assert extract_first_number(text) == number


def test_first_number_grading_of_right_and_wrong_continuations():
    g = grade_responses([[" 12\n\nThis is", " 13", " twelve"], ["\\boxed{5} 7"]], ["12", "5"],
                        answer_formats=["first_number", "boxed"], progress=False)
    assert g.answers == [["12", "13", None], ["5"]]
    assert g.correct == [[True, False, False], [True]]
    assert g.vote_keys[0][2] is None
    with pytest.raises(ValueError, match="'last_word'"):
        grade_responses([["1"]], ["1"], answer_formats=["last_word"], progress=False)


def test_cli_writes_parquet_and_matching_provenance(tmp_path, default_rows):
    assert arithmetic.main(["--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "provenance.json").read_text())
    assert record["sha256"] == DEFAULT_SHA256 and record["seed"] == 0 and record["rows"] == len(default_rows)
    assert record["generator"] == "btrans_verl.eval.arithmetic"
    assert record["per_kind"] == {name: k.count for name, k in arithmetic.KINDS.items()}
    problems, _ = load_benchmark(str(tmp_path))
    assert problems == load_benchmark("arithmetic")[0]
