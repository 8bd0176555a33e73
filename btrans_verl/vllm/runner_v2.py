"""Model Runner V2 hooks (vllm/v1/worker/gpu/model_runner.py, the GPU default for Qwen3 / Llama in vllm 0.24).

V2 has no `_prepare_inputs` to hook. Instead it owns a per-model `ModelState` (built in `load_model` by
`init_model_state`) whose methods the runner calls at exactly the points we need:

    add_request(req_index, new_req_data)      a request joins (or is re-added after a streaming update);
                                              its SamplingParams.extra_args are parsed here, once
    remove_request(req_id)                    a request finishes or is preempted: forget it
    prepare_inputs(input_batch, req_states)   every step, right before the forward (eager, piecewise or
                                              full-graph replay): write this step's minds and slots from
                                              the batch's order (req_ids, num_scheduled_tokens,
                                              num_computed_tokens_np; all CPU arrays, per batch position)
    prepare_dummy_inputs(num_reqs, num_tokens) graph capture / warm-up (outside the captured region):
                                              zero latents

`patch_v2()` wraps the V2 runner's `load_model`: after the original, the target norms are wrapped
(`worker.install`, same buffers and forward as V1), the `LatentState` is stored as `runner._btrans`, and the
fresh `runner.model_state` instance gets the four methods above wrapped (each calls the original first or
last and returns its result unchanged). That patched `load_model` is what the plugin's Worker.execute_model
guard checks (`plugin.is_hooked_runner`). The CPU V2 runner subclasses it and inherits both.

Dummy batches (profiling, DP padding) carry random request ids that were never added: they, and requests
without a latent, get the zero latent. Padding rows beyond the scheduled tokens are always zero.

Signatures used are identical in vllm 0.24.0 and 0.27.1.
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from btrans_verl.patching import patch

logger = logging.getLogger("btrans_verl.vllm")

_RUNNER_MODULE = "vllm.v1.worker.gpu.model_runner"


class V2Feeder:
    """Feeds one LatentState from a V2 ModelState's calls."""

    def __init__(self, state):
        self.state = state

    def add(self, new_req_data) -> None:
        req_id = new_req_data.req_id
        self.state.forget([req_id])  # re-added (streaming input): parse again
        self.state.lookup(req_id, getattr(new_req_data, "sampling_params", None))

    def remove(self, req_id: str) -> None:
        self.state.forget([req_id])

    def fill(self, input_batch) -> None:
        n = int(input_batch.num_reqs)
        req_ids = list(input_batch.req_ids[:n])
        unknown = [r for r in req_ids if r not in self.state.requests]  # dummy batches' random ids
        num_sched = np.asarray(input_batch.num_scheduled_tokens[:n], dtype=np.int64)
        num_computed = np.asarray(input_batch.num_computed_tokens_np[:n], dtype=np.int64)
        self.state.fill(req_ids, [None] * n, num_sched, num_computed)  # unknown ids -> zero latent
        self.state.forget(unknown)  # never keep the dummy ids

    def zero(self) -> None:
        empty = np.zeros(0, dtype=np.int64)
        steps = self.state.counters.steps
        self.state.fill([], [], empty, empty)
        self.state.counters.steps = steps  # a capture / warm-up call is not a step


def hook_model_state(model_state, state) -> None:
    """Wrap one ModelState instance's methods so they feed `state`. Idempotent per instance."""
    if getattr(model_state, "_btrans_feeder", None) is not None:
        model_state._btrans_feeder.state = state
        return
    feeder = V2Feeder(state)
    add_orig = model_state.add_request
    remove_orig = model_state.remove_request
    prep_orig = model_state.prepare_inputs
    dummy_orig = model_state.prepare_dummy_inputs

    @functools.wraps(add_orig)
    def add_request(req_index, new_req_data, *args, **kwargs):
        result = add_orig(req_index, new_req_data, *args, **kwargs)
        feeder.add(new_req_data)
        return result

    @functools.wraps(remove_orig)
    def remove_request(req_id, *args, **kwargs):
        feeder.remove(req_id)
        return remove_orig(req_id, *args, **kwargs)

    @functools.wraps(prep_orig)
    def prepare_inputs(input_batch, req_states, *args, **kwargs):
        feeder.fill(input_batch)
        return prep_orig(input_batch, req_states, *args, **kwargs)

    @functools.wraps(dummy_orig)
    def prepare_dummy_inputs(num_reqs, num_tokens, *args, **kwargs):
        feeder.zero()
        return dummy_orig(num_reqs, num_tokens, *args, **kwargs)

    model_state.add_request = add_request
    model_state.remove_request = remove_request
    model_state.prepare_inputs = prepare_inputs
    model_state.prepare_dummy_inputs = prepare_dummy_inputs
    model_state._btrans_feeder = feeder


def _make_load(orig):
    from btrans_verl.vllm import worker as W

    def load_model(self, *args, **kwargs):
        result = orig(self, *args, **kwargs)
        model = self.model
        if getattr(self, "_btrans", None) is None or getattr(self, "_btrans_model", None) is not model:
            max_tokens = int(getattr(self, "max_num_tokens", None) or self.scheduler_config.max_num_batched_tokens)
            self._btrans = W.install_for_runner(self, model, max_tokens)
            self._btrans_model = model
        if self._btrans is not None:
            hook_model_state(self.model_state, self._btrans)
        return result

    return load_model


def patch_v2() -> bool:
    """Hook Model Runner V2. Idempotent. Returns False (and logs at debug) if this vLLM has no V2 runner."""
    try:
        import importlib

        mod = importlib.import_module(_RUNNER_MODULE)
        cls = mod.GPUModelRunner
    except Exception as e:  # noqa: BLE001 - absent or not importable in this build
        logger.debug("B-Trans: Model Runner V2 not hooked (%s: %s)", type(e).__name__, e)
        return False
    orig = cls.__dict__.get("load_model")
    if orig is None:
        logger.debug("B-Trans: %s.GPUModelRunner has no load_model; V2 not hooked", _RUNNER_MODULE)
        return False
    patch(cls, "load_model", _make_load, what="vllm: V2 GPUModelRunner.load_model")
    return True
