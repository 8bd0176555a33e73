"""The canary: each worker proves that what its wrapped norms add is the contract's z, checked on content.

    llm.collective_rpc("btrans_canary")        # one report per worker (the trainer's guard calls it every step)

Every opted-in worker also runs it once at start-up (`startup_check`, after compilation, CUDA-graph capture or
loading vLLM's AOT artifact): if it fails, the engine does not start.

Counters prove that requests carried latents; they cannot see a latent that reached the model wrong (a table
wiped by sleep mode, a norm whose wrapper was replaced, a compiled graph traced without our wrappers). The
canary checks content, outside the forward, for one fixed mind (`CANARY_SEED`, mu `CANARY_MU`, sigma
`CANARY_SIGMA`, every wrapped kind):

    graph   (V1 runner, last pipeline stage, final norm wrapped, no data parallelism) two dummy forwards of one
            token through the graph the runner really executes (compiled / CUDA graph included), with and
            without the canary's final-norm latent; the difference of their final hidden states must be the
            contract's z of the final norm. A graph traced without our wrappers (or reading copies of our
            buffers) gives zero. Run first, unconditionally, so every tensor-parallel rank runs the same
            collectives.
    eager   every target norm of the module tree the runner calls is wrapped by this worker's state, and, fed
            zeros (RMSNorm(0) = 0), returns exactly z = mu + sigma * NORMAL_TABLE[hash(seed, norm, h)] computed
            fresh on the CPU by `btrans_verl.latent` (not from the engine's device copies).

The canary's mind is written into its own slot of the worker's mind table by the code that writes every
request's (`LatentState.write_minds`, from the engine's table and salts), and row 0 of the batch reads it.

Each report names its worker (`rank`, `tp_rank`, `pp_rank`, `dp_rank`), says `ok`, lists `errors` and what
was checked, and says what the runner's model executes (`graph_source`: eager, traced, AOT-compiled here or
loaded from vLLM's AOT cache). `check_canary_reports` turns failed reports into one error naming the server
and the ranks. The buffers are left zeroed (the next step rewrites the rows it uses).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os

import torch

from btrans_verl.latent import (
    NORM_KINDS,
    element_salts,
    hypothesis_key,
    latent_from_keys,
    match_norm,
    norm_index,
    normal_table,
    target_norms,
)
from btrans_verl.vllm.counters import LatentNotAppliedError
from btrans_verl.vllm.requests import LatentRequest
from btrans_verl.vllm.worker import LatentState, is_missing_layer

logger = logging.getLogger("btrans_verl.vllm")

CANARY_SEED = 0x0B7A_5CA2_A121
CANARY_MU = 0.25
CANARY_SIGMA = 1.0

AOT_LOADED = "AOT artifact loaded from "  # graph_source of a model that vLLM loaded from its AOT compile cache

# relative tolerance per activation dtype: a few units in the last place of the shifted value
_RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


class LatentContentError(LatentNotAppliedError):
    """A worker's norms do not add the contract's z for the canary mind."""


def worker_ranks(worker) -> dict[str, int]:
    """Where a worker sits: its global rank and its tensor-, pipeline- and data-parallel ranks."""
    ranks = {"rank": int(getattr(worker, "rank", 0) or 0), "tp_rank": 0, "pp_rank": 0, "pp_last": 1, "dp_rank": 0}
    try:
        from vllm.distributed.parallel_state import get_pp_group, get_tp_group

        ranks["tp_rank"] = int(get_tp_group().rank_in_group)
        pp = get_pp_group()
        ranks["pp_rank"], ranks["pp_last"] = int(pp.rank_in_group), int(pp.is_last_rank)
    except (ImportError, AssertionError, AttributeError):  # groups not initialised (single-process tests)
        pass
    parallel = getattr(getattr(worker, "vllm_config", None), "parallel_config", None)
    # dense models' engine cores reset data_parallel_rank to 0; data_parallel_index keeps the engine's DP index
    index = getattr(parallel, "data_parallel_index", None)
    ranks["dp_rank"] = int(index if index is not None else getattr(parallel, "data_parallel_rank", 0) or 0)
    return ranks


def reference_latent(idx: int, hidden: int, seed: int = CANARY_SEED, mu: float = CANARY_MU,
                     sigma: float = CANARY_SIGMA) -> torch.Tensor:
    """The contract's z for one norm, computed on the CPU from `btrans_verl.latent`: float32 [hidden]."""
    keys = hypothesis_key(torch.tensor([seed]))  # [1]
    return latent_from_keys(keys, idx, hidden, mu, sigma, table=normal_table(), salts=element_salts(hidden))[0]


def _matches(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, scale: torch.Tensor | None = None) -> float:
    """Largest violation of |got - want| <= rtol * (|want| + scale) + 1e-6 (0.0 when it holds; inf for NaN)."""
    got, want = got.float().cpu(), want.to(dtype).float().cpu()
    bound = _RTOL.get(dtype, 1e-5) * (want.abs() + (scale.float().cpu().abs() if scale is not None else 0)) + 1e-6
    err = (got - want).abs() - bound
    if not torch.isfinite(got).all():
        return float("inf")
    return max(float(err.max()), 0.0)


def canary_mind(kinds) -> LatentRequest:
    """The canary's mind at the given norm kinds."""
    return LatentRequest(seed=CANARY_SEED, sigma=CANARY_SIGMA, mu=CANARY_MU, targets=tuple(kinds))


@contextlib.contextmanager
def _holding(state: LatentState):
    """The canary owns the rows while it runs (row 0 reads the mind it holds); zeroed afterwards (the next step
    rewrites the rows it uses)."""
    try:
        yield
    finally:
        state.release_canary()


def _dummy_forward(runner) -> torch.Tensor:
    """Final hidden states of a one-token dummy batch through the graph the runner executes: [hidden]."""
    params = inspect.signature(runner._dummy_run).parameters
    # force_attention: fresh attention metadata (slot mapping -1: no KV write; without it attention returns
    # an unwritten buffer and two dummy forwards differ)
    kwargs = {k: v for k, v in (("force_attention", True), ("skip_eplb", True), ("allow_microbatching", False),
                                ("remove_lora", True))
              if k in params}
    out = runner._dummy_run(1, **kwargs)
    hidden = out[0] if isinstance(out, tuple) else out
    return hidden[0].detach().clone()


def graph_check(runner, state: LatentState, ranks: dict[str, int]) -> tuple[list[str], str]:
    """(errors, what was done) of the graph check (see the module docstring)."""
    final = "final_norm" in state.kinds and any(match_norm(n, ("final_norm",)) for n in state.norms)
    config = getattr(runner, "vllm_config", None)
    dp = int(getattr(getattr(config, "parallel_config", None), "data_parallel_size", 1) or 1)
    if not hasattr(runner, "_dummy_run"):
        return [], f"skipped: {type(runner).__name__} has no _dummy_run"
    if dp > 1:
        return [], "skipped: data parallel (dummy forwards would have to be coordinated across DP ranks)"
    if not ranks.get("pp_last", 1) or not final:
        return [], "skipped: the final norm is not wrapped on this pipeline stage"
    with _holding(state):
        state.hold_canary(None)
        plain = _dummy_forward(runner)  # [hidden]
        state.hold_canary(canary_mind(["final_norm"]))
        shifted = _dummy_forward(runner)  # [hidden]
    want = reference_latent(norm_index(None, "final_norm"), plain.shape[-1])
    err = _matches(shifted.float() - plain.float(), want, plain.dtype, scale=plain)
    if err > 0:
        got = (shifted.float() - plain.float()).cpu()
        return [f"the graph this runner executes does not add the contract's latent at the final norm (max "
                f"|error| beyond tolerance {err:.3g}; it added {got[:4].tolist()}... for z {want[:4].tolist()}...): "
                f"a stale compiled graph, or one reading copies of the latent buffers"], "failed"
    return [], "ok"


def eager_check(model: torch.nn.Module, state: LatentState) -> tuple[list[str], int]:
    """(errors, norms checked) of the per-norm check (see the module docstring)."""
    errors = []
    live = {name: (kind, m) for name, kind, _, m in target_norms(model, state.kinds) if not is_missing_layer(m)}
    for name in sorted(set(state.norms) - set(live)):
        errors.append(f"{name} was wrapped at load time but is not in the model the runner calls")
    checked = 0
    with _holding(state):
        state.hold_canary(canary_mind(state.kinds))
        for name, (kind, module) in sorted(live.items()):
            if getattr(module.forward, "btrans_state", None) is not state:
                errors.append(f"{name}: its forward is not this worker's B-Trans wrapper (unwrapped or replaced)")
                continue
            idx, _ = state.norms.get(name, (None, None))
            hidden = int(module.weight.shape[-1])
            shape = (1, 1, hidden) if NORM_KINDS[kind].per_head else (1, hidden)
            x = torch.zeros(shape, dtype=module.weight.dtype, device=state.device)
            with torch.inference_mode():  # as vLLM runs the forward (the eager wrapper's in-place path)
                out = module(x)
            out = (out[0] if isinstance(out, tuple) else out).reshape(-1)  # [hidden]
            want = reference_latent(idx, hidden)
            err = _matches(out, want, x.dtype)
            if err > 0:
                errors.append(f"{name}: adds {out[:4].float().cpu().tolist()}... for the canary mind, the contract "
                              f"says {want[:4].tolist()}... (max |error| beyond tolerance {err:.3g}): its table, "
                              f"salts or buffers are not the contract's")
            checked += 1
    return errors, checked


def graph_source(runner) -> str:
    """What the runner's model executes: "eager" (vLLM may still capture it in CUDA graphs), "torch.compile
    (traced in this process)", "AOT-compiled in this process" or "AOT artifact loaded from <vLLM's AOT compile
    cache>" (`VLLM_USE_AOT_COMPILE`; the artifacts lie under torch_aot_compile/<key>/rank_<r>_<dp>/model)."""
    try:
        model = runner.get_model() if hasattr(runner, "get_model") else getattr(runner, "model", None)
    except Exception:  # noqa: BLE001 (no model loaded yet)
        return "no model loaded"
    compiled = [m for m in (model.modules() if isinstance(model, torch.nn.Module) else ())
                if hasattr(m, "do_not_compile") and not m.do_not_compile]  # vLLM's @support_torch_compile
    if not compiled:
        return "eager"
    if any(getattr(m, "was_aot_compile_fn_loaded_from_disk", False) for m in compiled):
        from vllm import envs  # the AOT cache's root (the config's local_cache_dir moves on after loading)

        return f"{AOT_LOADED}{os.path.join(envs.VLLM_CACHE_ROOT, 'torch_compile_cache', 'torch_aot_compile')}"
    if any(getattr(m, "aot_compiled_fn", None) is not None for m in compiled):
        return "AOT-compiled in this process"
    return "torch.compile (traced in this process)"


def run_canary(worker) -> dict:
    """One worker's canary report (installed as `Worker.btrans_canary`)."""
    runner = worker.model_runner
    report = {**worker_ranks(worker), "runner": f"{type(runner).__module__}.{type(runner).__name__}", "ok": False,
              "norms_checked": 0, "graph": "not run", "graph_source": graph_source(runner), "errors": []}
    state = getattr(runner, "_btrans", None)
    if state is None:
        from btrans_verl.vllm.settings import OPT_IN, engine_settings

        report["errors"].append(
            f"a stock engine, not configured for B-Trans: {OPT_IN}" if engine_settings(worker.vllm_config) is None
            else "no norm of this model carries latents (see the worker log)")
        return report
    model = runner.get_model() if hasattr(runner, "get_model") else runner.model
    graph_errors, report["graph"] = graph_check(runner, state, report)
    eager_errors, report["norms_checked"] = eager_check(model, state)
    report["errors"] = graph_errors + eager_errors
    if report["norms_checked"] != state.counters.norms_patched:
        report["errors"].append(f"{report['norms_checked']} norms checked, {state.counters.norms_patched} wrapped")
    report["ok"] = not report["errors"]
    if not report["ok"]:
        logger.error("B-Trans canary failed on rank %d: %s", report["rank"], report["errors"])
    return report


def startup_check(worker) -> None:
    """Run once per worker at the end of start-up (after compilation and graph capture, before the first
    request; `Worker.compile_or_warm_up_model`): an opted-in engine whose model does not add the contract's z
    (the graph check through the model the runner calls, the per-norm check) refuses to start. This is what
    makes vLLM's AOT compile cache safe for B-Trans engines: an artifact loaded from disk (its key covers our
    wrappers, `plugin._patch_config`) must read the live latent buffers, or the engine stops here, naming vLLM's
    AOT cache."""
    if getattr(worker.model_runner, "_btrans", None) is None:
        return  # a stock engine, or one whose refusal every latent request meets
    report = run_canary(worker)
    if report["ok"]:
        logger.info("B-Trans start-up canary ok on rank %d (%s): graph %s, %d norms", report["rank"],
                    report["graph_source"], report["graph"], report["norms_checked"])
        return
    hint = ""
    if report["graph_source"].startswith(AOT_LOADED):
        hint = (f" The model came from vLLM's AOT compile cache ({report['graph_source'][len(AOT_LOADED):]}): "
                f"delete its artifacts there, or start with VLLM_USE_AOT_COMPILE=0.")
    raise LatentContentError(f"B-Trans: the start-up canary failed on rank {report['rank']} "
                             f"({report['graph_source']}): {' | '.join(report['errors'])}.{hint}")


def check_canary_reports(server: str, reports) -> None:
    """Raise LatentContentError naming the server and every failing rank; also when no worker answered."""
    if not isinstance(reports, list) or not reports:
        raise LatentContentError(f"vLLM server {server}: btrans_canary returned {reports!r}, not one report per "
                                 f"worker")
    bad = [r for r in reports if not (isinstance(r, dict) and r.get("ok"))]
    if bad:
        lines = "; ".join(
            f"rank {r.get('rank')} (tp {r.get('tp_rank')}, pp {r.get('pp_rank')}, dp {r.get('dp_rank')}): "
            f"{' | '.join(r.get('errors') or ['no report'])}" if isinstance(r, dict) else repr(r) for r in bad)
        raise LatentContentError(f"B-Trans canary failed on vLLM server {server}: the latent its norms add is not "
                                 f"the contract's z. {lines}")
