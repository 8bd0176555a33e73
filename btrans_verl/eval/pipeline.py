"""The two stages of ``python -m btrans_verl.eval`` (see :mod:`btrans_verl.eval.run` for the command).

* :func:`prepare_run`: every input check and everything that needs no engine: the model folder, the benchmark's
  problems, the prompts' token ids (with the model's own tokenizer), the per-sample seeds, the output folder.
  Bad input raises :class:`~btrans_verl.eval.config.EvalInputError` here, before vLLM is imported.
* :func:`evaluate_run`: one vLLM engine generates every method's samples (counters checked per method) and
  scores each sample under the mean mind (its log-prob per token), the responses are graded, and the metrics are
  computed and written (:func:`btrans_verl.eval.report.write_report`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from btrans_verl.eval.benchmark import Problem, load_benchmark, render_prompts
from btrans_verl.eval.config import EvalConfig, EvalInputError
from btrans_verl.eval.engine import (
    METHOD_LABELS,
    LatentNotAppliedError,
    MethodSamples,
    engine_counters,
    generate_method,
    resolve_model,
    sample_seeds,
    score_under_mean_mind,
    start_engine,
    stop_engine,
)
from btrans_verl.eval.grading import Graded, grade_responses
from btrans_verl.eval.metrics import SamplingSettings
from btrans_verl.eval.outputs import run_summary, write_markdown_appendix, write_samples
from btrans_verl.eval.report import MethodEvaluation, ReportFiles, evaluate_method, write_report

__all__ = ["PreparedRun", "prepare_run", "evaluate_run"]


@dataclass
class PreparedRun:
    cfg: EvalConfig
    model: Path
    problems: list[Problem]
    source: str
    prompts: list[list[int]]
    latent_seeds: list[list[int]]
    sampling_seeds: list[list[int]]


def prepare_run(cfg: EvalConfig) -> PreparedRun:
    """Check every input and build the prompts and seeds (no engine)."""
    if cfg.out.exists() and not cfg.out.is_dir():
        raise EvalInputError(f"out {str(cfg.out)!r} exists and is not a folder")
    model = resolve_model(cfg.model)
    problems, source = load_benchmark(cfg.benchmark, data_src=cfg.data_src, split=cfg.split, template=cfg.template,
                                      limit=cfg.limit, progress=cfg.progress)
    import transformers

    try:
        tok = transformers.AutoTokenizer.from_pretrained(model)
    except Exception as exc:  # a folder without a usable tokenizer
        raise EvalInputError(f"model {cfg.model!r}: cannot load its tokenizer from {model}: {exc}") from None
    prompts = render_prompts(problems, tok, chat_template=cfg.chat_template)
    # scoring a sample under the mean mind prefills prompt + response and needs one more position
    budget = cfg.max_model_len - cfg.max_tokens - 1
    too_long = [(p.position, len(ids)) for p, ids in zip(problems, prompts) if len(ids) > budget]
    if too_long:
        pos, length = too_long[0]
        raise EvalInputError(f"problem {pos} has a {length}-token prompt, over max_model_len - max_tokens - 1 = "
                             f"{budget} ({len(too_long)} problems are; the mean mind's scoring needs the extra "
                             "position); raise --max-model-len or lower --max-tokens")
    latent, sampling = sample_seeds(problems, cfg.n, cfg.seed)
    cfg.out.mkdir(parents=True, exist_ok=True)
    return PreparedRun(cfg, model, problems, source, prompts, latent, sampling)


def _settings(s: MethodSamples, cfg: EvalConfig) -> SamplingSettings:
    return SamplingSettings(METHOD_LABELS[s.method], n=s.n, sigma=s.sigma, temperature=s.temperature, seed=cfg.seed,
                            sigma_scale=cfg.sigma_scale if s.sigma else "absolute")


def evaluate_run(prep: PreparedRun) -> ReportFiles:
    """Generate, grade, measure and write the report of a prepared run."""
    cfg = prep.cfg
    t0 = time.perf_counter()
    llm = start_engine(prep.model, cfg)
    engine_seconds = time.perf_counter() - t0
    samples: dict[str, MethodSamples] = {}
    try:
        norms_patched = (engine_counters(llm) or {}).get("norms_patched", 0)
        if any(m in ("btrans", "token") for m in cfg.methods) and norms_patched <= 0:
            raise LatentNotAppliedError(f"the B-Trans vLLM plugin wrapped no norm of {prep.model} (or is not "
                                        "loaded): latents cannot be applied")
        for method in cfg.methods:
            print(f"[btrans eval] {METHOD_LABELS[method]}: {len(prep.problems)} problems x "
                  f"{1 if method == 'mean' else cfg.n} samples", flush=True)
            samples[method] = generate_method(llm, method, prep.prompts, cfg, prep.latent_seeds, prep.sampling_seeds)
            samples[method].mean_mind_logprobs = score_under_mean_mind(llm, prep.prompts, samples[method].token_ids,
                                                                       cfg.progress)
    finally:
        stop_engine(llm)

    refs = [p.reference for p in prep.problems]
    graded: dict[str, Graded] = {m: grade_responses(s.texts, refs, desc=f"grading {m}", progress=cfg.progress,
                                                    answer_formats=[p.answer_format for p in prep.problems])
                                 for m, s in samples.items()}
    from btrans_verl.eval.embeddings import make_encoder

    encode = make_encoder()
    evaluations: list[MethodEvaluation] = []
    for m in tqdm(cfg.methods, desc="metrics", unit="method", disable=not cfg.progress, leave=False):
        s, g = samples[m], graded[m]
        evaluations.append(evaluate_method(
            _settings(s, cfg), g.correct, answers_per_problem=g.vote_keys, responses_per_problem=s.texts,
            encode=encode, finish_reasons_per_problem=s.finish_reasons,
            mean_mind_logprobs_per_problem=s.mean_mind_logprobs, ks=cfg.ks,
            maj_ks=[k for k in cfg.ks if k <= s.n]))
    extra = run_summary(prep, samples, evaluations, engine_seconds, norms_patched)
    bench = Path(cfg.benchmark)
    bench_name = "/".join(bench.parts[-2:]) if bench.exists() else cfg.benchmark
    title = f"B-Trans population evaluation: {prep.model.name} on {bench_name} ({len(prep.problems)} problems)"
    files = write_report(evaluations, cfg.out, title=title, extra=extra)
    write_markdown_appendix(files.markdown_path, extra)
    write_samples(cfg.out / "samples.jsonl", prep, samples, graded)
    print(files.markdown_path.read_text(encoding="utf-8"))
    print(f"[btrans eval] wrote {files.json_path}, {files.markdown_path}, "
          f"{', '.join(str(p) for p in files.figures.values())}, {cfg.out / 'samples.jsonl'}")
    return files
