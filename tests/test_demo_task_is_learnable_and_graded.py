"""The demonstration task of `make quickstart` / `make train`: its rows are verl rows that our reward managers grade
exactly, the tiny model it teaches starts between chance and perfect (so GRPO has something to learn and the
majority vote beats chance), and the training command records every step and draws its curve with the baseline.
The training itself runs in CI as `make quickstart` (README), not here."""

from __future__ import annotations

import json
import random
import re

import pandas as pd
import pytest
import torch

from btrans_verl.cpu import train
from btrans_verl.demo_task import CHANCE, DATA_SOURCE, PAIRS, QUESTION, rows, teach_addition, write_addition
from btrans_verl.rewards.schemes import score_response


def test_rows_are_every_sum_with_its_answer_and_a_unique_index():
    for split in ("train", "test"):
        got = rows(split)
        assert len(got) == len(PAIRS) == 55
        assert {r["extra_info"]["index"] for r in got} == set(range(55))  # one mind seed per question
        for r, (a, b) in zip(got, PAIRS):
            assert r["data_source"] == DATA_SOURCE and r["extra_info"]["split"] == split
            assert r["prompt"] == [{"role": "user", "content": QUESTION.format(a=a, b=b)}]
            assert r["reward_model"]["ground_truth"] == str(a + b) and a + b <= 9


def test_the_reward_grades_the_boxed_sum():
    truth = rows("train")[PAIRS.index((3, 4))]["reward_model"]["ground_truth"]
    assert score_response("The answer is \\boxed{7}.", truth, "binary").score == 1.0
    assert score_response("The answer is \\boxed{8}.", truth, "binary").score == 0.0
    assert score_response("The answer is 7.", truth, "binary").score == 0.0  # no boxed answer, no reward


def test_parquet_files_are_written_once(tmp_path):
    dest = write_addition(tmp_path / "addition")
    frame = pd.read_parquet(dest / "train.parquet")
    assert len(frame) == 55 and set(frame.columns) >= {"data_source", "prompt", "reward_model", "extra_info"}
    stamp = (dest / "test.parquet").stat().st_mtime_ns
    write_addition(dest)
    assert (dest / "test.parquet").stat().st_mtime_ns == stamp


@pytest.mark.slow  # a minute of supervised warm start on 2 cores
def test_the_taught_tiny_model_starts_between_chance_and_perfect(tmp_path):
    from btrans_verl.tiny import tiny_model, write_tiny_tokenizer

    tok = write_tiny_tokenizer(tmp_path / "tok")
    model = tiny_model("qwen3", seed=0, vocab=64 * ((len(tok) + 63) // 64))
    teach_addition(model, tok)
    torch.manual_seed(0)
    correct, majority_right = 0, 0
    for a, b in random.Random(0).sample(PAIRS, 20):
        chat = [{"role": "user", "content": QUESTION.format(a=a, b=b)}]
        prompt = torch.tensor([tok.encode(tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))])
        with torch.no_grad():
            out = model.generate(prompt.repeat(8, 1), attention_mask=torch.ones(8, prompt.shape[1], dtype=torch.long),
                                 do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=16,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        answers = [re.findall(r"\\boxed\{(\d+)\}", tok.decode(o[prompt.shape[1]:], skip_special_tokens=True))
                   for o in out]
        answers = [a_[-1] for a_ in answers if a_]
        assert len(answers) >= 6  # the format is learnt
        correct += sum(x == str(a + b) for x in answers)
        majority_right += max(set(answers), key=answers.count) == str(a + b)
    accuracy = correct / (20 * 8)
    assert 0.15 < accuracy < 0.8, accuracy  # above chance (0.1), far from solved: room for GRPO
    assert majority_right / 20 > 2 * CHANCE, majority_right  # TTRL's pseudo-label beats chance


def test_every_step_is_recorded_once_across_invocations(tmp_path):
    path = tmp_path / "steps.jsonl"
    train.record_steps(path, [{"step": 1, "critic/score/mean": 0.3}, {"step": 2, "critic/score/mean": 0.4}])
    rows_ = train.record_steps(path, [{"step": 2, "critic/score/mean": 0.5}, {"step": 3, "critic/score/mean": 0.6}])
    assert [r["step"] for r in rows_] == [1, 2, 3] and rows_[1]["critic/score/mean"] == 0.5
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_the_curve_draws_the_run_and_its_baseline(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    on = [{"step": s, "critic/score/mean": 0.1 * s, "ttrl/label_accuracy": 0.5} for s in (1, 2, 3)]
    off = [{"step": s, "critic/score/mean": 0.05 * s, "ttrl/label_accuracy": float("nan")} for s in (1, 2, 3)]
    path = train.plot_curves({"B-Trans on": on, "B-Trans off": off}, "ttrl", tmp_path / "curve.png", CHANCE)
    with PIL.open(path) as image:
        assert image.size[0] > image.size[1] > 100  # two panels side by side


def test_the_default_run_is_the_demo_task_through_main_ppo_with_btrans_on(tmp_path):
    spec = train.DATA["addition"]
    args = train.build_args("rlvr", "on", tmp_path / "model", tmp_path / "data", tmp_path / "run", spec.steps,
                            batch=spec.batch, n=spec.n, n_samples=spec.n_samples,
                            response_length=spec.response_length, lr=spec.lr, extra=[])
    assert args[:2] == ["+btrans=on", "btrans/task=rlvr"]
    assert f"data.train_files={tmp_path / 'data' / 'train.parquet'}" in args
    assert f"actor_rollout_ref.actor.optim.lr={spec.lr}" in args
    ttrl = train.build_args("ttrl", "off", tmp_path / "model", tmp_path / "data", tmp_path / "run", 3, batch=8, n=8,
                            n_samples=4, response_length=24, lr=3e-4, extra=["trainer.logger=[console]"])
    assert ttrl[:4] == ["+btrans=off", "btrans/task=ttrl", "btrans.ttrl.n_votes=8", "btrans.ttrl.n_samples=4"]
    assert f"data.train_files={tmp_path / 'data' / 'test.parquet'}" in ttrl  # TTRL trains label-free on test
