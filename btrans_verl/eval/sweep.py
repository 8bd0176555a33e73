"""Do minds explore better than temperature? A sigma x temperature sweep in one engine run, and its frontier.

    python -m btrans_verl.eval.sweep --model smollm2 --benchmark arithmetic --grid population --n 8 \\
        --max-tokens 8 --seed 0 --out runs/population_smollm2

Every point of a grid is one way of drawing n samples per problem. A grid's points form curves, one per method:

    temperature            no latent, temperature T (T = 0 is the greedy mean mind: every curve's origin)
    minds                  sequence-wise latents (hypothesis sampling) at greedy decoding, sigma growing
    minds + temperature    sequence-wise latents on top of a fixed temperature
    token-wise             the paper's ablation: a fresh latent per token position, greedy

and each latent curve comes with absolute sigma (one std for every norm) or relative sigma (`weight_rms`: each
norm's std is sigma times the RMS of its weight). Grids are registered by name (`GRIDS`, `register_grid`) and
fixed in code, before any result is looked at.

One vLLM engine (opted in with token-wise latents, so that it serves every point) generates every point; each
sample is its own request, checked against the plugin's counters. All points share the latent and sampling seeds
of each (problem, sample) (`engine.sample_seeds`): points differ only in their settings (common random
numbers). Every sample is then scored by the mean mind (`engine.score_under_mean_mind`).

Each point gets the evaluation's metrics with 95% bootstrap intervals over problems (`report.evaluate_method`):
accuracy, pass@K, maj@K, distinct answers per problem, informative groups, the mean mind's log-prob per token,
semantic diversity, degenerate rate. **Matched diversity** answers the question: for a latent point with
diversity d (distinct answers per problem), the temperature curve's quality at the same d is read off by linear
interpolation between its points (never extrapolated), and the difference is bootstrapped over problems (the
interpolation is redone in every resample).

Writes into --out: sweep.json (every point and every matched difference), sweep.md (the tables),
frontier.png (quality against diversity, one curve per method) and samples.jsonl (every response).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from btrans_verl.eval.config import DEFAULT_KS, EvalConfig, EvalInputError
from btrans_verl.eval.metrics import SamplingSettings
from btrans_verl.eval.report import MethodEvaluation, evaluate_method
from btrans_verl.eval.statistics import DEFAULT_RESAMPLES
from btrans_verl.registry import registrar

__all__ = ["SweepPoint", "GRIDS", "register_grid", "grid", "MatchedDifference", "matched_difference",
           "run_sweep", "main"]

SCHEMA = "btrans_verl.eval.sweep/1"
DIVERSITY = "distinct_answers"  # the frontier's x axis
QUALITIES = ("accuracy", "pass@n", "maj@n", "mean_mind_logprob")  # compared at matched diversity
BASELINE_CURVE = "temperature"


@dataclass(frozen=True)
class SweepPoint:
    """One way of drawing the samples: a latent (granularity None: none) of std sigma, and a temperature."""

    curve: str
    sigma: float = 0.0
    temperature: float = 0.0
    granularity: str | None = None  # "sequence" | "token" | None (no latent)
    sigma_scale: str = "absolute"

    def __post_init__(self):
        from btrans_verl.latent import GRANULARITIES, SIGMA_SCALES

        if self.granularity not in (None, *GRANULARITIES):
            raise ValueError(f"sweep point {self.curve!r}: granularity {self.granularity!r} is not one of "
                             f"{GRANULARITIES} or None")
        if self.sigma_scale not in SIGMA_SCALES:
            raise ValueError(f"sweep point {self.curve!r}: sigma_scale {self.sigma_scale!r} is not one of "
                             f"{list(SIGMA_SCALES)}")
        if self.sigma < 0 or self.temperature < 0:
            raise ValueError(f"sweep point {self.curve!r}: sigma and temperature must be >= 0")
        if (self.granularity is None) != (self.sigma == 0):
            raise ValueError(f"sweep point {self.curve!r}: a latent point needs sigma > 0, a point without one "
                             "sigma = 0")

    @property
    def latent(self) -> bool:
        return self.granularity is not None

    @property
    def name(self) -> str:
        scale = "" if self.sigma_scale == "absolute" else " rel"
        return f"{self.curve} σ={self.sigma:g}{scale} T={self.temperature:g}"


#: Grids by name: a function returning the grid's points (in generation order); ``@register_grid(name)``.
GRIDS: dict[str, Callable[[], tuple[SweepPoint, ...]]] = {}
register_grid = registrar(GRIDS, "grid")


def grid(name: str) -> tuple[SweepPoint, ...]:
    if name not in GRIDS:
        raise EvalInputError(f"unknown grid {name!r}; known: {sorted(GRIDS)}")
    return GRIDS[name]()


def _latent_curve(curve: str, sigmas: Sequence[float], scale: str, temperature: float = 0.0,
                  granularity: str = "sequence") -> tuple[SweepPoint, ...]:
    return tuple(SweepPoint(curve, s, temperature, granularity, scale) for s in sigmas)


@register_grid("population")
def _population() -> tuple[SweepPoint, ...]:
    """The grid of docs/population.md, fixed before it was run. Temperatures span greedy to very hot; absolute
    sigmas double from 0.01 (SmolLM2-135M's norms output RMS 0.04 early to 1.8 late, so 0.01 already shakes its
    early norms); relative sigmas double from 5% to 40% of each norm's output scale."""
    temperature = tuple(SweepPoint(BASELINE_CURVE, 0.0, t) for t in (0.0, 0.3, 0.6, 0.9, 1.2))
    absolute, relative = (0.01, 0.02, 0.04, 0.08), (0.05, 0.1, 0.2, 0.4)
    return (temperature
            + _latent_curve("minds (absolute σ)", absolute, "absolute")
            + _latent_curve("minds (relative σ)", relative, "weight_rms")
            + _latent_curve("minds + T=0.6 (relative σ)", relative[:3], "weight_rms", temperature=0.6)
            + _latent_curve("token-wise (relative σ)", relative[:3], "weight_rms", granularity="token"))


@register_grid("smoke")
def _smoke() -> tuple[SweepPoint, ...]:
    """Three temperatures and two latent points of each kind: for trying the command (and for the tests)."""
    return (tuple(SweepPoint(BASELINE_CURVE, 0.0, t) for t in (0.0, 0.8, 1.6))
            + _latent_curve("minds (relative σ)", (0.3, 1.0), "weight_rms")
            + _latent_curve("token-wise (absolute σ)", (0.3,), "absolute", granularity="token"))


# --------------------------------------------------------------------------------------------------------
# Matched diversity
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MatchedDifference:
    """A latent point's quality minus the temperature curve's at the same diversity, with its interval. None
    where the point's diversity lies outside the temperature curve's range (then nothing is compared)."""

    point: str
    metric: str
    diversity: float
    value: float
    temperature_at_match: float | None
    difference: float | None
    low: float | None
    high: float | None

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and (self.low > 0.0 or self.high < 0.0)


def _interp(x: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Linear interpolation of the curve (xs, ys) at x, column by column: xs, ys [points, B], x [B]; NaN
    where x is outside the curve's range. Curve points of equal diversity (greedy and a low temperature often
    both give one answer) count as one, their mean quality."""
    out = np.full(x.shape, np.nan)
    for b in range(x.shape[0]):
        cx, inverse = np.unique(xs[:, b], return_inverse=True)  # sorted; points of equal diversity are averaged
        cy = np.bincount(inverse, weights=ys[:, b]) / np.bincount(inverse)
        if cx[0] <= x[b] <= cx[-1]:
            out[b] = np.interp(x[b], cx, cy)
    return out


def matched_difference(point: str, metric: str, x: np.ndarray, y: np.ndarray, base_x: np.ndarray,
                       base_y: np.ndarray, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                       level: float = 0.95) -> MatchedDifference:
    """x, y: the point's per-problem diversity and quality [P]; base_x, base_y: the temperature curve's
    [points, P]. The interval is a percentile bootstrap over problems; a resample whose diversity falls outside
    the temperature curve's range counts as no match, and more than 5% of those leaves the interval undefined."""
    full = _interp(np.array([x.mean()]), base_x.mean(axis=1)[:, None], base_y.mean(axis=1)[:, None])[0]
    if np.isnan(full):
        return MatchedDifference(point, metric, float(x.mean()), float(y.mean()), None, None, None, None)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))  # [B, P]
    diff = y[idx].mean(axis=1) - _interp(x[idx].mean(axis=1), base_x[:, idx].mean(axis=2),
                                         base_y[:, idx].mean(axis=2))  # [B]
    lo = hi = None
    if np.isnan(diff).mean() <= 0.05:
        tail = (1 - level) / 2
        lo, hi = (float(v) for v in np.nanquantile(diff, [tail, 1 - tail]))
    return MatchedDifference(point, metric, float(x.mean()), float(y.mean()), float(full),
                             float(y.mean() - full), lo, hi)


def _quality(ev: MethodEvaluation, metric: str, n: int) -> np.ndarray | None:
    key = {"pass@n": f"pass@{n}", "maj@n": f"maj@{n}"}.get(metric, metric)
    values = ev.per_problem.get(key)
    return None if values is None else np.asarray(values, dtype=np.float64)


def matched_differences(points: Sequence[SweepPoint], evals: Sequence[MethodEvaluation], n: int,
                        seed: int = 0) -> list[MatchedDifference]:
    """Every latent point against the temperature curve, for each quality of `QUALITIES`."""
    base = [i for i, p in enumerate(points) if p.curve == BASELINE_CURVE]
    if len(base) < 2:
        return []
    out = []
    for metric in QUALITIES:
        base_y = [_quality(evals[i], metric, n) for i in base]
        if any(v is None for v in base_y):
            continue
        base_x = np.stack([np.asarray(evals[i].per_problem[DIVERSITY]) for i in base])  # [points, P]
        for p, ev in zip(points, evals, strict=True):
            y = _quality(ev, metric, n)
            if p.latent and y is not None:
                out.append(matched_difference(p.name, metric, np.asarray(ev.per_problem[DIVERSITY]), y, base_x,
                                              np.stack(base_y), seed=seed))
    return out


# --------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------
def point_params(point: SweepPoint, max_tokens: int, latent_seed: int, sampling_seed: int):
    """The `SamplingParams` of one sample of `point`."""
    from vllm import SamplingParams

    from btrans_verl.vllm.requests import latent_args

    extra = (latent_args(latent_seed, point.sigma, granularity=point.granularity, sigma_scale=point.sigma_scale)
             if point.latent else None)
    return SamplingParams(temperature=point.temperature, max_tokens=max_tokens,
                          seed=sampling_seed if point.temperature > 0 else None, extra_args=extra)


def run_sweep(cfg: EvalConfig, points: Sequence[SweepPoint], grid_name: str, score_samples: int | None = None) -> Path:
    """Generate, score, grade and measure every point of the grid; write the outputs. Returns sweep.md's path.
    `score_samples`: score the first m samples of every problem under the mean mind (default all n; scoring
    costs a prefill of prompt and response per sample, which a latent sample cannot share)."""
    from btrans_verl.eval.embeddings import make_encoder
    from btrans_verl.eval.engine import generate_requests, score_under_mean_mind, start_engine, stop_engine
    from btrans_verl.eval.grading import grade_responses
    from btrans_verl.eval.pipeline import prepare_run

    prep = prepare_run(cfg)  # every input check, before vLLM starts
    P, n = len(prep.problems), cfg.n
    m = n if score_samples is None else score_samples
    llm = start_engine(prep.model, cfg, token_latents=any(p.granularity == "token" for p in points))
    generated, scores, seconds = [], [], []
    try:
        for k, point in enumerate(points):
            print(f"[btrans sweep] {k + 1}/{len(points)} {point.name}: {P} problems x {n} samples", flush=True)
            t0 = time.perf_counter()
            params = [[point_params(point, cfg.max_tokens, prep.latent_seeds[i][j], prep.sampling_seeds[i][j])
                       for j in range(n)] for i in range(P)]
            out = generate_requests(llm, point.name, prep.prompts, params, P * n if point.latent else 0,
                                    cfg.progress)
            generated.append(out)
            scores.append(score_under_mean_mind(llm, prep.prompts, [row[:m] for row in out.token_ids],
                                                cfg.progress))
            seconds.append(time.perf_counter() - t0)
    finally:
        stop_engine(llm)

    refs = [p.reference for p in prep.problems]
    formats = [p.answer_format for p in prep.problems]
    encode = make_encoder()
    evals, graded = [], []
    for point, out, score in zip(points, generated, scores, strict=True):
        g = grade_responses(out.texts, refs, answer_formats=formats, progress=False)
        graded.append(g)
        settings = SamplingSettings(point.curve, n=n, sigma=point.sigma, temperature=point.temperature,
                                    seed=cfg.seed, sigma_scale=point.sigma_scale)
        evals.append(evaluate_method(settings, g.correct, answers_per_problem=g.vote_keys,
                                     responses_per_problem=out.texts, encode=encode,
                                     finish_reasons_per_problem=out.finish_reasons,
                                     mean_mind_logprobs_per_problem=score, ks=cfg.ks, maj_ks=[n]))
    matched = matched_differences(points, evals, n, seed=cfg.seed)
    doc = {
        "schema": SCHEMA, "command": cfg.command, "grid": grid_name, "model": str(prep.model),
        "benchmark": prep.source, "num_problems": P, "n": n, "seed": cfg.seed, "max_tokens": cfg.max_tokens,
        "diversity": DIVERSITY, "mean_mind_scored_samples": m,
        "points": [{**asdict(p), "name": p.name, "seconds": round(s, 1), "counters": out.counters,
                    "metrics": _metrics(ev, n)} for p, ev, out, s in zip(points, evals, generated, seconds)],
        "matched": [{**asdict(m), "excludes_zero": m.excludes_zero} for m in matched],
    }
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "sweep.json").write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    from btrans_verl.eval.plots import plot_frontier

    plot_frontier(points, evals, n, cfg.out / "frontier.png",
                  title=f"{prep.model.name} on {cfg.benchmark}: {P} problems x n={n}, seed {cfg.seed}")
    md = cfg.out / "sweep.md"
    md.write_text(markdown(doc), encoding="utf-8")
    _write_samples(cfg.out / "samples.jsonl", prep, points, generated, graded, scores)
    print(md.read_text(encoding="utf-8"))
    print(f"[btrans sweep] wrote {cfg.out / 'sweep.json'}, {md}, {cfg.out / 'frontier.png'}, "
          f"{cfg.out / 'samples.jsonl'}")
    return md


def _metrics(ev: MethodEvaluation, n: int) -> dict:
    keys = ("accuracy", f"pass@{n}", f"maj@{n}", "distinct_answers", "informative_groups", "mean_mind_logprob")
    out = {k: {"value": float(np.mean(ev.per_problem[k])), "interval": list(ev.intervals[k])}
           for k in keys if k in ev.per_problem}
    out["diversity"] = ev.diversity
    out["degenerate"] = ev.degenerate
    return out


def _cell(m: dict, key: str, digits: int = 3) -> str:
    if key not in m:
        return "—"
    lo, hi = m[key]["interval"]
    return f"{m[key]['value']:.{digits}f} [{lo:.{digits - 1}f}, {hi:.{digits - 1}f}]"


def markdown(doc: dict) -> str:
    """sweep.md: every point, then every matched difference."""
    n = doc["n"]
    head = ["curve", "σ", "scale", "T", "accuracy", f"pass@{n}", f"maj@{n}", "distinct answers", "informative groups",
            "mean-mind log-prob", "semantic diversity", "degenerate"]
    lines = [f"# Sweep `{doc['grid']}`: {Path(doc['model']).name}, {doc['num_problems']} problems x n={n}, "
             f"seed {doc['seed']}", "", f"`{doc['command']}`", "", f"Benchmark: {doc['benchmark']}. Mean-mind "
             f"log-prob: the first {doc['mean_mind_scored_samples']} samples of every problem.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in doc["points"]:
        m = p["metrics"]
        lines.append("| " + " | ".join([
            p["curve"], f"{p['sigma']:g}", p["sigma_scale"] if p["granularity"] else "—", f"{p['temperature']:g}",
            _cell(m, "accuracy"), _cell(m, f"pass@{n}"), _cell(m, f"maj@{n}"), _cell(m, "distinct_answers", 2),
            _cell(m, "informative_groups"), _cell(m, "mean_mind_logprob", 2),
            "—" if m["diversity"] is None else f"{m['diversity']:.3f}",
            "—" if m["degenerate"] is None else f"{m['degenerate']:.3f}"]) + " |")
    lines += ["", f"Matched diversity ({DIVERSITY}): each latent point minus the temperature curve interpolated at "
              "the same diversity, 95% bootstrap interval over problems (* : excludes 0; — : outside the "
              "temperature curve's range).", "", "| point | metric | diversity | value | temperature at match | "
              "difference |", "|---|---|---|---|---|---|"]
    for m in doc["matched"]:
        if m["difference"] is None:
            diff, at = "— (outside)", "—"
        else:
            at = f"{m['temperature_at_match']:.3f}"
            ci = "" if m["low"] is None else f" [{m['low']:+.3f}, {m['high']:+.3f}]"
            diff = f"{m['difference']:+.3f}{ci}{' *' if m['excludes_zero'] else ''}"
        lines.append(f"| {m['point']} | {m['metric']} | {m['diversity']:.2f} | {m['value']:.3f} | {at} | {diff} |")
    return "\n".join(lines) + "\n"


def _write_samples(path: Path, prep, points, generated, graded, scores) -> None:
    with path.open("w", encoding="utf-8") as f:
        for point, out, g, score in zip(points, generated, graded, scores, strict=True):
            for i, p in enumerate(prep.problems):
                for j in range(prep.cfg.n):
                    f.write(json.dumps({
                        "point": point.name, "problem": p.position, "sample": j,
                        "latent_seed": prep.latent_seeds[i][j] if point.latent else None,
                        "sampling_seed": prep.sampling_seeds[i][j] if point.temperature > 0 else None,
                        "reference": p.reference, "answer": g.answers[i][j], "correct": g.correct[i][j],
                        "mean_mind_logprob": score[i][j] if j < len(score[i]) else None,
                        "finish_reason": out.finish_reasons[i][j],
                        "text": out.texts[i][j], "token_ids": out.token_ids[i][j]}, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m btrans_verl.eval.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="HF model folder (or merged verl checkpoint), 'smollm2' or 'tiny'")
    p.add_argument("--benchmark", required=True, help="as for python -m btrans_verl.eval (e.g. arithmetic)")
    p.add_argument("--grid", default="population", help=f"a registered grid: {', '.join(sorted(GRIDS))}")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n", type=int, default=8, help="samples per problem at every point (default 8)")
    p.add_argument("--seed", type=int, default=0, help="sweep seed; every sample seed derives from it (default 0)")
    p.add_argument("--max-tokens", type=int, default=8, help="max new tokens per response (default 8)")
    p.add_argument("--limit", type=int, help="only the first LIMIT problems")
    p.add_argument("--data-src", help="data_prep --src for data_prep benchmark names (see python -m btrans_verl.eval)")
    p.add_argument("--score-samples", type=int,
                   help="score only the first M samples of each problem under the mean mind (default: all n)")
    p.add_argument("--max-model-len", type=int, default=1024, help="vLLM max_model_len (default 1024)")
    p.add_argument("--max-num-seqs", type=int, default=64, help="vLLM max_num_seqs (default 64)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        points = grid(args.grid)
        ks = tuple(sorted({k for k in DEFAULT_KS if k <= args.n} | {args.n}))  # pass@n always: the frontier's
        cfg = EvalConfig(model=args.model, benchmark=args.benchmark, out=Path(args.out), n=args.n, seed=args.seed,
                         ks=ks, methods=("mean",), max_tokens=args.max_tokens, limit=args.limit, data_src=args.data_src,
                         max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
                         progress=not args.no_progress,
                         command="python -m btrans_verl.eval.sweep " + shlex.join(argv))
        if cfg.n < 2:
            raise EvalInputError(f"n must be >= 2 for diversity and informative groups, got {cfg.n}")
        if args.score_samples is not None and not 1 <= args.score_samples <= cfg.n:
            raise EvalInputError(f"--score-samples must be in [1, n={cfg.n}], got {args.score_samples}")
        run_sweep(cfg, points, args.grid, args.score_samples)
    except EvalInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from btrans_verl.eval.engine import LatentNotAppliedError

        if isinstance(exc, LatentNotAppliedError):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
