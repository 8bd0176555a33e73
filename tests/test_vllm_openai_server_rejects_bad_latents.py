"""Latents through vLLM's real OpenAI-compatible server (a subprocess, driven with the `openai` client): valid
minds replay and differ, every malformed latent is an HTTP 400 whose message names the key and the rule (before
a stream starts, too), and the server keeps serving afterwards. One server for the whole module."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.slow  # starts vLLM's OpenAI server: skipped by `make test-fast`

openai = pytest.importorskip("openai")
pytest.importorskip("vllm")

START_TIMEOUT_S = 240  # a busy 2-core box needs ~2 minutes: three processes import torch and vLLM
REQUEST_TIMEOUT_S = 60
SIGMA = 1.0  # a tiny random model needs a large latent to change its greedy text
PROMPT = "The quick brown fox"
MESSAGES = [{"role": "user", "content": PROMPT}]

# (vllm_xargs, what the 400's message must contain)
BAD_LATENTS = {
    "negative sigma": ({"btrans_seed": 1, "btrans_sigma": -1.0}, "sigma must be >= 0"),
    "non-numeric sigma": ({"btrans_seed": 1, "btrans_sigma": "abc"}, "sigma must be a finite number"),
    "fractional seed": ({"btrans_seed": 1.5, "btrans_sigma": 0.1}, "seed must be an integer"),
    "string seed": ({"btrans_seed": "abc", "btrans_sigma": 0.1}, "seed must be an integer"),
    "unknown granularity": ({"btrans_seed": 1, "btrans_granularity": "weird"}, "granularity must be one of"),
    "sigma without seed": ({"btrans_sigma": 0.1}, "lack the required 'seed'"),
    "unknown key": ({"btrans_seed": 1, "btrans_foo": 1}, "btrans_foo"),
    # valid on its own, but this engine does not wrap q_norm (checked when the request is added)
    "unwrapped target": ({"btrans_seed": 1, "btrans_targets": "input_layernorm,q_norm"},
                         "['q_norm'] are not wrapped by this engine"),
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(path, chars=12000) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-chars:]
    except OSError as exc:
        return f"<no server log: {exc}>"


def _stop(proc) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the server, its EngineCore and any worker
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from btrans_verl.tiny import tiny_model, write_tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny_qwen3_served")
    tok = write_tiny_tokenizer(path)
    tiny_model("qwen3", vocab=64 * ((len(tok) + 63) // 64)).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    port = _free_port()
    log_path = tmp_path_factory.mktemp("server_log") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           # with --distributed-executor-backend uni: the worker runs inside the EngineCore process, one
           # process (one torch + vLLM import) less to start; the front end, what this file tests, is as usual
           "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1"}
    env.pop("BTRANS_VLLM_DISABLE", None)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
           "--max-model-len", "512", "--max-num-seqs", "8", "--seed", "0",
           "--distributed-executor-backend", "uni",
           "--additional-config", json.dumps({"btrans": True})]  # opted in, default targets: q_norm is not wrapped
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the vLLM server exited with {proc.returncode} before it was healthy; its log:\n"
                            f"{_log_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM server was not healthy within {START_TIMEOUT_S} s; its log:\n"
                            f"{_log_tail(log_path)}")
            time.sleep(1.0)
        yield {"base": base, "model": model_dir, "log": log_path}
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server['base']}/v1", api_key="unused", max_retries=0,
                         timeout=REQUEST_TIMEOUT_S)


def _complete(client, server, xargs=None, **extra):
    body = {"ignore_eos": True, **extra}
    if xargs is not None:
        body["vllm_xargs"] = xargs
    out = client.completions.create(model=server["model"], prompt=PROMPT, max_tokens=16, temperature=0.0,
                                    extra_body=body)
    return out.choices[0].text


def _chat(client, server, xargs=None, **extra):
    body = {"ignore_eos": True, **extra}
    if xargs is not None:
        body["vllm_xargs"] = xargs
    out = client.chat.completions.create(model=server["model"], messages=MESSAGES, max_tokens=16,
                                         temperature=0.0, extra_body=body)
    return out.choices[0].message.content


ENDPOINTS = {"completions": _complete, "chat": _chat}


def _mind(seed):
    return {"btrans_seed": seed, "btrans_sigma": SIGMA}


def _refusal(call, *args, **kwargs):
    """The APIStatusError a refused request raises (failing the test if it was served)."""
    with pytest.raises(openai.APIStatusError) as info:
        call(*args, **kwargs)
    err = info.value
    message = err.body.get("message", "") if isinstance(err.body, dict) else str(err.body)
    return err.status_code, message


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_same_seed_replays_its_mind_and_different_seeds_differ(client, server, endpoint):
    call = ENDPOINTS[endpoint]
    first, again, other = call(client, server, _mind(11)), call(client, server, _mind(11)), \
        call(client, server, _mind(12))
    assert first, "the model produced no text"
    assert first == again
    assert first != other
    assert call(client, server) != first  # the mean mind (no latent) is yet another text


@pytest.mark.parametrize("case", sorted(BAD_LATENTS))
@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_malformed_latent_is_a_400_naming_the_key_and_rule(client, server, endpoint, case):
    xargs, expected = BAD_LATENTS[case]
    status, message = _refusal(ENDPOINTS[endpoint], client, server, xargs)
    assert status == 400, message
    assert expected in message


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_malformed_latent_is_refused_before_a_stream_starts(client, server, endpoint):
    status, message = _refusal(ENDPOINTS[endpoint], client, server, BAD_LATENTS["negative sigma"][0],
                               stream=True)
    assert status == 400, message
    assert "sigma must be >= 0" in message


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_latent_with_beam_search_is_refused_not_dropped(client, server, endpoint):
    status, message = _refusal(ENDPOINTS[endpoint], client, server, _mind(11), use_beam_search=True)
    assert status == 400, message
    assert "beam search" in message


def test_server_keeps_serving_after_bad_requests(client, server):
    before = _complete(client, server, _mind(21))
    for xargs, _ in BAD_LATENTS.values():
        assert _refusal(_complete, client, server, xargs)[0] == 400
        assert _refusal(_chat, client, server, xargs)[0] == 400
    assert _complete(client, server, _mind(21)) == before
    assert _chat(client, server, _mind(21))
    with urllib.request.urlopen(f"{server['base']}/health", timeout=10) as resp:
        assert resp.status == 200


def test_patch_serving_is_idempotent_and_wraps_only_once():
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest
    from vllm.v1.engine.async_llm import AsyncLLM

    from btrans_verl.patching import patched
    from btrans_verl.vllm.serving import BadLatentRequest, patch_serving

    patch_serving()
    wrapped = [CompletionRequest.to_sampling_params, ChatCompletionRequest.to_sampling_params,
               CompletionRequest.to_beam_search_params, AsyncLLM.add_request]
    patch_serving()
    again = [CompletionRequest.to_sampling_params, ChatCompletionRequest.to_sampling_params,
             CompletionRequest.to_beam_search_params, AsyncLLM.add_request]
    assert again == wrapped
    assert all(patched(f) and patched(f.__wrapped__) is None for f in again)
    request = CompletionRequest(model="m", prompt="hi", vllm_xargs={"btrans_seed": 3, "btrans_sigma": -2})
    with pytest.raises(BadLatentRequest, match="sigma must be >= 0") as info:
        request.to_sampling_params(4)
    assert isinstance(info.value, ValueError)  # callers that catch ValueError (LLM-style) still do
    plain = CompletionRequest(model="m", prompt="hi", vllm_xargs={"other": 1}).to_sampling_params(4)
    assert plain.extra_args == {"other": 1}  # requests without a latent are untouched
