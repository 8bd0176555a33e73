"""The OpenAI-compatible server: a malformed latent is the client's fault, answered with HTTP 400 and a message
that names the key and the rule, and the server keeps serving.

Why this is needed. Our front-end check (`InputProcessor.process_inputs`, btrans_verl.vllm.plugin) raises a
plain ValueError. Offline (`LLM.generate`) the caller sees it. Behind the server it runs inside
`AsyncLLM.generate()`, and vllm 0.27.1 turns every exception there that is not a `VLLMClientError` into a bare
`EngineGenerateError()` (vllm/v1/engine/async_llm.py:639-652): the app maps that to HTTP 500 with an empty
message. vllm 0.24.x re-raises ValueErrors from `generate()` (async_llm.py:605: a 400 with the message), but
only once the request is added, i.e. after a streaming response has already sent HTTP 200 (then the error
arrives as a `data:` event).

What `patch_serving()` wraps (each wrapper calls the original; requests without a latent are untouched):

    CompletionRequest / ChatCompletionRequest / ResponsesRequest .to_sampling_params
        the earliest seam: the serving layer turns the JSON request (its `vllm_xargs`) into SamplingParams,
        before any generator is started. A latent that `parse_latent_request` rejects raises
        `BadLatentRequest` there; it propagates to the app's exception handlers, which answer 400, streaming
        or not, on 0.24.x and 0.27.1 alike.
    CompletionRequest / ChatCompletionRequest .to_beam_search_params
        beam search builds its own SamplingParams without `extra_args`: a latent would silently vanish, so a
        request carrying one (or a malformed one) is refused instead.
    AsyncLLM.add_request
        backstop for what the request alone cannot tell (e.g. targets this engine does not wrap, checked in
        process_inputs) and for any front end that builds SamplingParams itself: a ValueError raised by
        btrans-verl code while a request is added is re-raised as `BadLatentRequest`, which `generate()`
        passes through on both versions (0.27.1: a VLLMClientError; 0.24.x: a ValueError), hence a 400.

`BadLatentRequest` is a `vllm.exceptions.VLLMValidationError` (parameter "vllm_xargs") and a ValueError. The
two versions differ here: in 0.24.x VLLMValidationError is itself a ValueError; in 0.27.1 it is a
VLLMClientError only, so ValueError is added as a second base (callers that catch ValueError still do).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from btrans_verl.vllm.plugin import UnsupportedVLLMVersion, _wrap
from btrans_verl.vllm.requests import parse_latent_request

logger = logging.getLogger("btrans_verl.vllm")

PARAMETER = "vllm_xargs"

# (module, class, required): the request models whose to_sampling_params read `vllm_xargs`
REQUEST_MODELS = (
    ("vllm.entrypoints.openai.completion.protocol", "CompletionRequest", True),
    ("vllm.entrypoints.openai.chat_completion.protocol", "ChatCompletionRequest", True),
    ("vllm.entrypoints.openai.responses.protocol", "ResponsesRequest", False),
)


def _error_class() -> type[ValueError]:
    from vllm.exceptions import VLLMValidationError

    bases = (VLLMValidationError,) if issubclass(VLLMValidationError, ValueError) else \
        (VLLMValidationError, ValueError)
    return type("BadLatentRequest", bases, {"__doc__": "A malformed btrans latent in a request (HTTP 400).",
                                             "__module__": __name__})


BadLatentRequest = _error_class()


def _bad_request(message: str) -> ValueError:
    return BadLatentRequest(message, parameter=PARAMETER)


def _is_vllm_error(exc: BaseException) -> bool:
    return any(c.__module__ == "vllm.exceptions" for c in type(exc).__mro__)


def check_request_latent(extra_args: Mapping[str, Any] | None):
    """The request's mind (or None), as `parse_latent_request` reads it; its ValueError as a client error."""
    try:
        return parse_latent_request(extra_args)
    except ValueError as exc:
        if isinstance(exc, BadLatentRequest):
            raise
        raise _bad_request(f"invalid btrans latent: {exc}") from exc


def _raised_by_btrans(exc: BaseException) -> bool:
    """Whether the innermost Python frame that raised `exc` belongs to btrans-verl."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", "")).startswith("btrans_verl.")


def _patch_request_models() -> None:
    import importlib

    def make_sampling(orig):
        def to_sampling_params(self, *args, **kwargs):
            params = orig(self, *args, **kwargs)
            check_request_latent(getattr(params, "extra_args", None))
            return params

        return to_sampling_params

    def make_beam(orig):
        def to_beam_search_params(self, *args, **kwargs):
            if check_request_latent(getattr(self, "vllm_xargs", None)) is not None:
                raise _bad_request("btrans latents are not supported with beam search (use_beam_search): "
                                   "the latent would be silently dropped")
            return orig(self, *args, **kwargs)

        return to_beam_search_params

    for module, name, required in REQUEST_MODELS:
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            if required:
                raise UnsupportedVLLMVersion(f"B-Trans: {module}.{name} not found ({exc})") from exc
            logger.debug("B-Trans: %s.%s not found; its requests are checked only when added", module, name)
            continue
        _wrap(cls, "to_sampling_params", make_sampling)
        if "to_beam_search_params" in cls.__dict__:
            _wrap(cls, "to_beam_search_params", make_beam)


def _patch_async_llm() -> None:
    from vllm.v1.engine.async_llm import AsyncLLM

    def make(orig):
        async def add_request(self, *args, **kwargs):
            try:
                return await orig(self, *args, **kwargs)
            except ValueError as exc:
                if _is_vllm_error(exc) or not _raised_by_btrans(exc):
                    raise
                raise _bad_request(f"invalid btrans latent: {exc}") from exc

        return add_request

    _wrap(AsyncLLM, "add_request", make)


def patch_serving() -> None:
    """Make malformed latents a 400 in vLLM's OpenAI-compatible server. Idempotent; call from register()."""
    _patch_request_models()
    _patch_async_llm()
