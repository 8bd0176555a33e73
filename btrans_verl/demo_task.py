"""The demonstration task: single-digit addition, small enough that the tiny default model visibly learns it by
GRPO in a few minutes on 2 CPU cores. It is a demonstration of the training loop, not a benchmark.

    python -m btrans_verl.demo_task --out data/addition      # writes train.parquet and test.parquet

Every question is "What is a + b?" for digits a, b with a + b <= 9 (55 questions), in the rows `data_prep`
writes (verl's format: chat prompt, `reward_model.ground_truth`, `extra_info.index`), so the B-Trans reward
managers grade the `\\boxed{}` answer exactly as on GSM8K. Train and test hold the same 55 questions: RLVR trains
on train with its answers; TTRL trains label-free on test (the answers only feed its metrics).

The tiny model (`btrans_verl.models.tiny_dir("addition")`) is first taught the task by a *noisy teacher*
(`teach_addition`): the right sum with probability `TEACHER_ACCURACY` = 0.4, otherwise a uniformly random digit.
It starts between chance (0.1) and perfect, like a pretrained model on a task it half knows: a sampled answer is
right about a third of the time, and the majority over a few samples more often (TTRL's pseudo-label beats
chance). GRPO then has something to sharpen: on this CPU, with B-Trans on, the mean reward climbs from about 0.3
towards 0.9 within the 15 steps of `make train` (README, "The two commands").
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

DATA_SOURCE = "btrans_demo/addition"
QUESTION = "What is {a} + {b}? Put your final answer within \\boxed{{}}."
PAIRS = tuple((a, b) for a in range(10) for b in range(10) if a + b <= 9)  # 55 questions
TEACHER_ACCURACY = 0.4  # how often the noisy teacher gives the right sum (else a uniformly random digit)
CHANCE = 0.1  # accuracy of a uniformly random digit


def rows(split: str) -> list[dict]:
    """The task's rows for `split` ("train" or "test"), one per question, in data_prep's row format."""
    return [{
        "data_source": DATA_SOURCE,
        "prompt": [{"role": "user", "content": QUESTION.format(a=a, b=b)}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": str(a + b)},
        "extra_info": {"split": split, "index": i, "question": f"{a} + {b}"},
    } for i, (a, b) in enumerate(PAIRS)]


def write_addition(dest: Path) -> Path:
    """dest/train.parquet and dest/test.parquet (55 rows each); nothing is rewritten when they exist."""
    from data_prep.convert import write_parquet

    dest = Path(dest)
    for split in ("train", "test"):
        if not (dest / f"{split}.parquet").is_file():
            write_parquet(rows(split), dest / f"{split}.parquet")
    return dest


def teach_addition(model, tok, steps: int = 600, batch: int = 16, seed: int = 0) -> float:
    """Supervised warm start by the noisy teacher (see the module docstring): `steps` AdamW steps on `batch`
    questions each, loss on the answer only (`btrans_verl.tiny.teach_answers`). About a minute on 2 cores for the
    tiny model. Returns the last loss."""
    from btrans_verl.tiny import teach_answers

    def draw(rng: random.Random) -> list[tuple[str, int]]:
        return [(QUESTION.format(a=a, b=b), a + b if rng.random() < TEACHER_ACCURACY else rng.randrange(10))
                for a, b in rng.sample(PAIRS, batch)]

    return teach_answers(model, tok, draw, steps, seed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m btrans_verl.demo_task", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for train.parquet and test.parquet")
    ns = p.parse_args(argv)
    print(write_addition(ns.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
