"""Population evaluation of one model on one benchmark: ``python -m btrans_verl.eval``.

    python -m btrans_verl.eval --model smollm2 --benchmark gsm8k --data-src vendor --limit 8 --n 8 \\
        --sigma 0.01 --temperature 0.7 --seed 0 --max-tokens 256 --out runs/eval_smollm2_gsm8k

Methods (``--methods``, default all): the mean mind (no latent, greedy), B-Trans minds (n samples at temperature
T, each its own sequence-wise latent of std sigma), plain temperature sampling (n samples at T, no latent), and
token-wise latents (same sigma and T, a fresh z per token: the ablation for step-wise consistency). One vLLM
engine serves them all; every sample is its own request with seeds derived from (seed, problem, sample) (see
:mod:`btrans_verl.eval.engine`), and the B-Trans plugin's counters must show the latents were applied.

Writes into ``--out``: ``report.json`` (every figure as a record stating method, metric, K, n, sigma,
temperature, seed), ``report.md`` (the table), ``pass_at_k.png``, ``embedding_map.png`` (2-D PCA of the
responses' all-MiniLM-L6-v2 embeddings, coloured by method) and ``samples.jsonl`` (every response with its
seeds, answer and grade). Exit status: 0 ok, 2 bad input (nothing started), 1 latents not applied.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from btrans_verl.eval.config import DEFAULT_METHODS, EvalConfig, EvalInputError
from btrans_verl.eval.engine import LatentNotAppliedError

__all__ = ["build_parser", "config_from_args", "main", "run"]


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m btrans_verl.eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="HF model folder (or merged verl checkpoint), 'smollm2' or 'tiny'")
    p.add_argument("--benchmark", required=True,
                   help="verl .parquet, folder with <split>.parquet, a generated benchmark (arithmetic) or a data_prep "
                        "name (gsm8k, math500, minerva, "
                        "aime24, mmlu_pro, ...)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n", type=int, default=16, help="samples per problem of each sampled method (default 16)")
    p.add_argument("--ks", type=_int_list, help="K of Pass@K / maj@K, e.g. 1,2,4 (default: 1,2,4,8,16 up to n)")
    p.add_argument("--sigma", type=float, default=0.05, help="latent std of the B-Trans methods (default 0.05)")
    p.add_argument("--sigma-scale", default="absolute",
                   help="what sigma is relative to: absolute (default) or weight_rms (each norm's sigma times the "
                        "RMS of its weight: relative sigma)")
    p.add_argument("--temperature", type=float, default=0.7, help="temperature of the sampled methods (default 0.7)")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed; all sample seeds derive from it (default 0)")
    p.add_argument("--methods", type=_name_list, default=DEFAULT_METHODS,
                   help=f"comma-separated subset of {','.join(DEFAULT_METHODS)} (default: all)")
    p.add_argument("--max-tokens", type=int, default=512, help="max new tokens per response (default 512)")
    p.add_argument("--limit", type=int, help="only the first LIMIT problems")
    p.add_argument("--data-src", help="data_prep --src for benchmark names: a data root, 'vendor' or hf:OWNER/NAME "
                                      "(default: $BTRANS_SHARED_DATA if set, else vendor)")
    p.add_argument("--split", default="test", help="split of a benchmark name or folder (default test)")
    p.add_argument("--template", help="data_prep prompt template for benchmark names (default: the dataset's)")
    p.add_argument("--no-chat-template", action="store_true", help="prompt with the raw text, no chat template")
    p.add_argument("--max-model-len", type=int, default=2048, help="vLLM max_model_len (default 2048)")
    p.add_argument("--max-num-seqs", type=int, default=64, help="vLLM max_num_seqs (default 64)")
    p.add_argument("--dtype", help="vLLM dtype (default: float32 on CPU, auto on GPU)")
    p.add_argument("--compile", action="store_true", help="let vLLM compile / capture graphs (default: eager)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def config_from_args(args: argparse.Namespace, argv: Sequence[str]) -> EvalConfig:
    return EvalConfig(
        model=args.model, benchmark=args.benchmark, out=Path(args.out), n=args.n, ks=args.ks, sigma=args.sigma,
        sigma_scale=args.sigma_scale,
        temperature=args.temperature, seed=args.seed, methods=tuple(args.methods), max_tokens=args.max_tokens,
        limit=args.limit, data_src=args.data_src, split=args.split, template=args.template,
        chat_template=not args.no_chat_template, max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
        dtype=args.dtype, enforce_eager=not args.compile, progress=not args.no_progress,
        command="python -m btrans_verl.eval " + shlex.join(argv))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args, argv)
        run(cfg)
    except EvalInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except LatentNotAppliedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def run(cfg: EvalConfig):
    """Run the evaluation described by ``cfg``; returns the :class:`~btrans_verl.eval.report.ReportFiles`."""
    from btrans_verl.eval.pipeline import evaluate_run, prepare_run

    prepared = prepare_run(cfg)  # every input check, before vLLM starts
    return evaluate_run(prepared)
