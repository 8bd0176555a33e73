"""Evaluation report: every number as JSON, a markdown table, and the PNG figures.

Typical use (the samples come from whatever engine generated them)::

    from btrans_verl.eval import SamplingSettings, evaluate_method, write_report

    bt = evaluate_method(SamplingSettings("B-Trans minds", n=16, sigma=0.3, temperature=0.0, seed=0),
                         correct_per_problem, answers_per_problem=answers,
                         responses_per_problem=texts)          # texts -> MiniLM embeddings
    tp = evaluate_method(SamplingSettings("temperature", n=16, sigma=0.0, temperature=1.0, seed=0), ...)
    files = write_report([bt, tp], "runs/eval", title="GSM8K test, Qwen2.5-0.5B")

Every reported figure carries the settings it was measured under (n, K, sigma, temperature, seed): in the
JSON each figure is one flat record, in the markdown table each row states them, and the plots state
them in legends and titles.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import (
    Encoder,
    MajMethod,
    SamplingSettings,
    StepConsistency,
    degenerate_rate,
    distinct_answers_per_problem,
    informative_groups_per_problem,
    maj_at_k_per_problem,
    mean_logprob_per_problem,
    pass_at_k_per_problem,
    semantic_diversity,
    step_consistency,
)
from .statistics import PairedDifference, bootstrap_interval, paired_difference

__all__ = [
    "REPORT_SCHEMA",
    "DEFAULT_KS",
    "DEFINITIONS",
    "MethodEvaluation",
    "ReportFiles",
    "evaluate_method",
    "paired_differences",
    "figure_records",
    "report_dict",
    "markdown_report",
    "write_report",
]

REPORT_SCHEMA = "btrans_verl.eval.report/3"
BASELINE_METHOD = "temperature (no latent)"  # what paired differences are taken against (engine.METHOD_LABELS)
DEFAULT_KS: tuple[int, ...] = (1, 2, 4, 8, 16)

#: How each metric is defined (copied into the JSON and the markdown).
DEFINITIONS: dict[str, str] = {
    "accuracy": "mean over problems of c/n (fraction of the n samples that are correct); K=1",
    "pass@K": "unbiased estimator 1 - C(n-c,K)/C(n,K) per problem from n >= K samples, averaged over problems",
    "maj@K": ("probability that the majority vote of a uniformly random K-subset of the n answers is "
              "correct (ties shared: 1/(tied answers)); unparsable answers take a place but do not vote; "
              "averaged over problems"),
    "diversity": ("semantic diversity: mean pairwise cosine distance 1 - cos(e_i, e_j) of the n responses' "
                  "embeddings (all-MiniLM-L6-v2 by default) within a prompt, averaged over prompts; K=n"),
    "step_consistency": ("mean cosine similarity of consecutive reasoning steps (non-empty lines) of a "
                         "response, averaged over responses with >= 2 steps (the others are excluded and "
                         "counted); K=1"),
    "informative_groups": ("fraction of problems whose n samples are neither all correct nor all wrong: the "
                           "groups in which GRPO's advantage is non-zero; K=n"),
    "distinct_answers": ("number of different final answers (normal forms) among a problem's n samples, averaged "
                         "over problems: 1 = every sample agrees; the diversity GRPO and majority votes see; K=n"),
    "mean_mind_logprob": ("the mean mind's (no latent) log-probability per token of each sample's response, "
                          "averaged over samples and problems: how plausible the base model finds what was "
                          "sampled (0 is certain; lower is further from it); K=1"),
    "degenerate": ("fraction of responses that loop (half of their word 4-grams repeat an earlier one) or were "
                   "truncated by the token budget; K=1"),
    "interval": ("[low, high]: 95% percentile bootstrap interval of the mean over problems (2,000 resamples of "
                 "the problems, seeded by the run's seed); paired differences resample the per-problem "
                 "differences of two methods on the same problems"),
}


@dataclass
class MethodEvaluation:
    """All metrics of one method (one row of the report).

    ``embeddings`` (one row per response, all problems) is kept for the PCA map and not serialised.
    """

    settings: SamplingSettings
    num_problems: int
    accuracy: float
    pass_at_k: dict[int, float]
    maj_at_k: dict[int, float] = field(default_factory=dict)
    maj_estimator: str | None = None
    diversity: float | None = None
    step_consistency: StepConsistency | None = None
    informative_groups: float | None = None
    degenerate: float | None = None
    distinct_answers: float | None = None
    mean_mind_logprob: float | None = None
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric name -> (low, high)
    per_problem: dict[str, list[float]] = field(default_factory=dict, repr=False, compare=False)
    embeddings: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`."""

    json_path: Path
    markdown_path: Path
    figures: dict[str, Path]


def evaluate_method(settings: SamplingSettings, correct_per_problem: Sequence[Sequence[bool]], *,
                    answers_per_problem: Sequence[Sequence[Hashable | None]] | None = None,
                    references: Sequence[Hashable | None] | None = None,
                    responses_per_problem: Sequence[Sequence[str]] | None = None,
                    encode: Encoder | None = None,
                    finish_reasons_per_problem: Sequence[Sequence[str | None]] | None = None,
                    mean_mind_logprobs_per_problem: Sequence[Sequence[float]] | None = None,
                    ks: Sequence[int] = DEFAULT_KS, maj_ks: Sequence[int] | None = None,
                    maj_method: MajMethod = "exact") -> MethodEvaluation:
    """Compute every metric of one method from its samples.

    Args:
        settings: how the samples were made; ``settings.n`` must equal every problem's sample count.
        correct_per_problem: ``[problem][sample] -> bool``.
        answers_per_problem: normalised final answers (``None`` = unparsable); enables maj@K.
        references: normalised reference answers per problem for maj@K; when omitted, the answers flagged
            correct in ``correct_per_problem`` form the correct bucket.
        responses_per_problem: response texts; enables diversity, step consistency and the PCA map.
        encode: ``list[str] -> (m, d)`` embedder; default all-MiniLM-L6-v2
            (:func:`.embeddings.make_encoder`), loaded only when texts are given.
        finish_reasons_per_problem: vLLM's finish reasons; a "length" counts as degenerate (truncated).
        mean_mind_logprobs_per_problem: the mean-mind log-probability per token of each sample (or of the
            first m <= n samples of every problem, the same m for all: a cheaper estimate of the same mean);
            enables ``mean_mind_logprob``.
        ks: the K of pass@K (those above ``n`` are left out).
        maj_ks: the K of maj@K; default the largest K in ``ks`` that is ``<= n``.
        maj_method: estimator of :func:`.metrics.maj_at_k` (default exact).
    """
    P = len(correct_per_problem)
    if P == 0:
        raise ValueError("need at least one problem")
    for name, rows in (("correct_per_problem", correct_per_problem), ("answers_per_problem", answers_per_problem),
                       ("responses_per_problem", responses_per_problem),
                       ("finish_reasons_per_problem", finish_reasons_per_problem)):
        if rows is None:
            continue
        if len(rows) != P:
            raise ValueError(f"{name} has {len(rows)} problems, correct_per_problem has {P}")
        bad = [i for i, r in enumerate(rows) if len(r) != settings.n]
        if bad:
            raise ValueError(f"{name}: problem {bad[0]} has {len(rows[bad[0]])} samples but settings.n="
                             f"{settings.n} ({len(bad)} problems differ)")

    per_problem = {"accuracy": pass_at_k_per_problem(correct_per_problem, 1)}
    per_problem |= {f"pass@{k}": pass_at_k_per_problem(correct_per_problem, k)
                    for k in sorted(set(ks)) if k <= settings.n}
    if settings.n >= 2:
        per_problem["informative_groups"] = informative_groups_per_problem(correct_per_problem)
    result = MethodEvaluation(settings=settings, num_problems=P, accuracy=float(np.mean(per_problem["accuracy"])),
                              pass_at_k={int(m[5:]): float(np.mean(v)) for m, v in per_problem.items()
                                         if m.startswith("pass@")},
                              informative_groups=float(np.mean(per_problem["informative_groups"]))
                              if settings.n >= 2 else None,
                              per_problem=per_problem)

    if answers_per_problem is not None:
        if maj_ks is None:
            fitting = [k for k in ks if k <= settings.n]
            maj_ks = (max(fitting),) if fitting else ()
        for k in sorted(set(maj_ks)):
            if k > settings.n:
                raise ValueError(f"maj@{k} needs n >= {k} samples, n={settings.n}")
            per_problem[f"maj@{k}"] = maj_at_k_per_problem(
                answers_per_problem, k, references=references,
                correct_per_problem=None if references is not None else correct_per_problem,
                method=maj_method, seed=settings.seed)
            result.maj_at_k[int(k)] = float(np.mean(per_problem[f"maj@{k}"]))
        result.maj_estimator = maj_method
        per_problem["distinct_answers"] = distinct_answers_per_problem(answers_per_problem)
        result.distinct_answers = float(np.mean(per_problem["distinct_answers"]))
    if mean_mind_logprobs_per_problem is not None:
        scored = {len(row) for row in mean_mind_logprobs_per_problem}
        if len(mean_mind_logprobs_per_problem) != P or len(scored) != 1 or not 1 <= min(scored) <= settings.n:
            raise ValueError(f"mean_mind_logprobs_per_problem: need {P} problems with the same 1..{settings.n} "
                             f"scored samples each, got {len(mean_mind_logprobs_per_problem)} with {sorted(scored)}")
        per_problem["mean_mind_logprob"] = mean_logprob_per_problem(mean_mind_logprobs_per_problem)
        result.mean_mind_logprob = float(np.mean(per_problem["mean_mind_logprob"]))
    result.intervals = {m: bootstrap_interval(v, seed=settings.seed) for m, v in per_problem.items()}

    if responses_per_problem is not None:
        if encode is None:
            from .embeddings import make_encoder

            encode = make_encoder()
        flat = [r for rs in responses_per_problem for r in rs]
        emb = np.asarray(encode(flat), dtype=np.float64)
        if emb.ndim != 2 or emb.shape[0] != len(flat):
            raise ValueError(f"encoder returned shape {emb.shape} for {len(flat)} responses")
        result.embeddings = emb
        if settings.n >= 2:
            result.diversity = semantic_diversity([emb[i * settings.n:(i + 1) * settings.n] for i in range(P)])
        result.step_consistency = step_consistency(flat, encode)
        result.degenerate = degenerate_rate(responses_per_problem, finish_reasons_per_problem)
    return result


def paired_differences(evaluations: Sequence[MethodEvaluation],
                       baseline: str = BASELINE_METHOD) -> list[PairedDifference]:
    """Every method minus the baseline method, per metric both measured on the same problems (accuracy, pass@K,
    maj@K, informative groups), with bootstrap intervals. Empty when the baseline was not run."""
    base = next((ev for ev in evaluations if ev.settings.method == baseline), None)
    if base is None:
        return []
    out = []
    for ev in evaluations:
        if ev is base or ev.num_problems != base.num_problems:
            continue
        for metric, values in ev.per_problem.items():
            if metric in base.per_problem:
                out.append(paired_difference(metric, ev.settings.method, values, baseline,
                                             base.per_problem[metric], seed=ev.settings.seed))
    return out


def _clean(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def figure_records(ev: MethodEvaluation) -> list[dict[str, Any]]:
    """Every number of one method as flat records, each stating method, metric, K, n, sigma, temperature,
    seed and num_problems."""
    s = ev.settings
    base = {"method": s.method, "n": s.n, "sigma": s.sigma, "sigma_scale": s.sigma_scale,
            "temperature": s.temperature, "seed": s.seed, "num_problems": ev.num_problems}
    def ci(name: str) -> dict[str, float]:
        lo, hi = ev.intervals.get(name, (None, None))
        return {} if lo is None else {"low": _clean(lo), "high": _clean(hi)}

    recs: list[dict[str, Any]] = [{**base, "metric": "accuracy", "K": 1, "value": _clean(ev.accuracy),
                                   **ci("accuracy")}]
    recs += [{**base, "metric": "pass@K", "K": k, "value": _clean(v), **ci(f"pass@{k}")}
             for k, v in sorted(ev.pass_at_k.items())]
    recs += [{**base, "metric": "maj@K", "K": k, "value": _clean(v), "estimator": ev.maj_estimator, **ci(f"maj@{k}")}
             for k, v in sorted(ev.maj_at_k.items())]
    if ev.informative_groups is not None:
        recs.append({**base, "metric": "informative_groups", "K": s.n, "value": _clean(ev.informative_groups),
                     **ci("informative_groups")})
    if ev.distinct_answers is not None:
        recs.append({**base, "metric": "distinct_answers", "K": s.n, "value": _clean(ev.distinct_answers),
                     **ci("distinct_answers")})
    if ev.mean_mind_logprob is not None:
        recs.append({**base, "metric": "mean_mind_logprob", "K": 1, "value": _clean(ev.mean_mind_logprob),
                     **ci("mean_mind_logprob")})
    if ev.degenerate is not None:
        recs.append({**base, "metric": "degenerate", "K": 1, "value": _clean(ev.degenerate)})
    if ev.diversity is not None:
        recs.append({**base, "metric": "diversity", "K": s.n, "value": _clean(ev.diversity)})
    if ev.step_consistency is not None:
        sc = ev.step_consistency
        recs.append({**base, "metric": "step_consistency", "K": 1, "value": _clean(sc.score),
                     "num_scored": sc.num_scored, "num_excluded": sc.num_excluded})
    return recs


def report_dict(evaluations: Sequence[MethodEvaluation], *, title: str = "B-Trans population evaluation",
                figures: Mapping[str, str] | None = None,
                extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON document: schema, title, definitions, per-method summaries, flat figure records, plots."""
    methods = []
    for ev in evaluations:
        methods.append({
            **ev.settings.to_dict(),
            "num_problems": ev.num_problems,
            "accuracy": _clean(ev.accuracy),
            "pass_at_k": {str(k): _clean(v) for k, v in sorted(ev.pass_at_k.items())},
            "maj_at_k": {str(k): _clean(v) for k, v in sorted(ev.maj_at_k.items())},
            "maj_estimator": ev.maj_estimator,
            "diversity": _clean(ev.diversity),
            "step_consistency": None if ev.step_consistency is None else ev.step_consistency.to_dict(),
            "informative_groups": _clean(ev.informative_groups),
            "degenerate": _clean(ev.degenerate),
            "distinct_answers": _clean(ev.distinct_answers),
            "mean_mind_logprob": _clean(ev.mean_mind_logprob),
            "intervals": {m: [_clean(lo), _clean(hi)] for m, (lo, hi) in ev.intervals.items()},
        })
    return {
        "schema": REPORT_SCHEMA,
        "title": title,
        "definitions": dict(DEFINITIONS),
        "methods": methods,
        "figures": [r for ev in evaluations for r in figure_records(ev)],
        "paired": [d.to_dict() for d in paired_differences(evaluations)],
        "plots": dict(figures or {}),
        "extra": dict(extra or {}),
    }


def _fmt(x: float | None, digits: int = 3) -> str:
    x = _clean(x)
    return "—" if x is None else f"{x:.{digits}f}"


def _with_ci(ev: MethodEvaluation, metric: str, value: float | None) -> str:
    """`0.500 [0.40, 0.60]`: the figure and its bootstrap interval, when it has one."""
    if metric not in ev.intervals or _clean(value) is None:
        return _fmt(value)
    lo, hi = ev.intervals[metric]
    return f"{_fmt(value)} [{lo:.2f}, {hi:.2f}]"


def markdown_report(evaluations: Sequence[MethodEvaluation], *, title: str = "B-Trans population evaluation",
                    figures: Mapping[str, str] | None = None) -> str:
    """Markdown: one table row per method (settings, accuracy, pass@K, maj@K, diversity, step consistency),
    then the definitions and links to the figures."""
    if not evaluations:
        raise ValueError("no evaluations to report")
    pass_ks = sorted({k for ev in evaluations for k in ev.pass_at_k})
    maj_ks = sorted({k for ev in evaluations for k in ev.maj_at_k})
    head = (["Method", "n", "σ", "T", "seed", "problems", "accuracy"] + [f"pass@{k}" for k in pass_ks]
            + [f"maj@{k}" for k in maj_ks] + ["informative groups", "distinct answers", "mean-mind log-prob",
                                              "diversity", "step consistency (scored/excluded)", "degenerate"])
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ev in evaluations:
        s = ev.settings
        sc = ev.step_consistency
        sc_cell = "—" if sc is None else f"{_fmt(sc.score)} ({sc.num_scored}/{sc.num_excluded})"
        sigma = f"{s.sigma:g}" + ("" if s.sigma_scale == "absolute" else f" ({s.sigma_scale})")
        row = ([s.method, str(s.n), sigma, f"{s.temperature:g}", str(s.seed), str(ev.num_problems),
                _with_ci(ev, "accuracy", ev.accuracy)]
               + [_with_ci(ev, f"pass@{k}", ev.pass_at_k.get(k)) for k in pass_ks]
               + [_with_ci(ev, f"maj@{k}", ev.maj_at_k.get(k)) for k in maj_ks]
               + [_with_ci(ev, "informative_groups", ev.informative_groups),
                  _with_ci(ev, "distinct_answers", ev.distinct_answers),
                  _with_ci(ev, "mean_mind_logprob", ev.mean_mind_logprob), _fmt(ev.diversity), sc_cell,
                  _fmt(ev.degenerate)])
        lines.append("| " + " | ".join(row) + " |")
    paired = paired_differences(evaluations)
    if paired:
        lines += ["", f"Paired differences against {BASELINE_METHOD} (same problems; * : the interval excludes 0):",
                  "", "| Method | metric | difference | interval |", "|---|---|---|---|"]
        lines += [f"| {d.a} | {d.metric} | {d.mean:+.3f}{' *' if d.excludes_zero else ''} | "
                  f"[{d.low:+.3f}, {d.high:+.3f}] |" for d in paired]
    estimators = sorted({ev.maj_estimator for ev in evaluations if ev.maj_estimator})
    lines += ["", "Every row states the settings of its samples: n samples per problem, latent σ, temperature "
              "T, seed; K is in each column name (accuracy and step consistency: K=1; diversity: K=n).", ""]
    lines += [f"- **{name}**: {text}" for name, text in DEFINITIONS.items()]
    if estimators:
        lines.append(f"- maj@K estimator: {', '.join(estimators)} (see `btrans_verl.eval.metrics.maj_at_k`)")
    if figures:
        lines.append("")
        lines += [f"![{name}]({rel})" for name, rel in figures.items()]
    return "\n".join(lines) + "\n"


def write_report(evaluations: Sequence[MethodEvaluation], out_dir: str | Path, *,
                 title: str = "B-Trans population evaluation", plots: bool = True,
                 extra: Mapping[str, Any] | None = None, stem: str = "report") -> ReportFiles:
    """Write ``<stem>.json``, ``<stem>.md`` and (with ``plots``) ``pass_at_k.png`` and, when embeddings are
    present, ``embedding_map.png`` into ``out_dir``.

    The JSON is strict (no NaN: missing values are ``null``).
    """
    if not evaluations:
        raise ValueError("no evaluations to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if plots:
        from .plots import plot_embedding_map, plot_pass_at_k

        curves = {ev.settings: ev.pass_at_k for ev in evaluations if ev.pass_at_k}
        if curves:
            problems = {ev.num_problems for ev in evaluations}
            written["pass_at_k"] = plot_pass_at_k(
                curves, out / "pass_at_k.png", num_problems=problems.pop() if len(problems) == 1 else None)
        embs = {ev.settings: ev.embeddings for ev in evaluations
                if ev.embeddings is not None and len(ev.embeddings)}
        if embs:
            written["embedding_map"] = plot_embedding_map(embs, out / "embedding_map.png")
    rel = {name: p.name for name, p in written.items()}
    json_path = out / f"{stem}.json"
    json_path.write_text(json.dumps(report_dict(evaluations, title=title, figures=rel, extra=extra),
                                    indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    md_path = out / f"{stem}.md"
    md_path.write_text(markdown_report(evaluations, title=title, figures=rel), encoding="utf-8")
    return ReportFiles(json_path=json_path, markdown_path=md_path, figures=written)
