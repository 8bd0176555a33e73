"""vLLM decode throughput with per-request latents on vs off, as a ratio taken in one engine, in one run.

    .venv/bin/python bench/vllm_decode_overhead.py --model tiny
    .venv/bin/python bench/vllm_decode_overhead.py --model smollm2 --batch 32 --new-tokens 128 --rounds 6

Rounds alternate off / on (order flipped every round, so drift hits both alike); each round generates
`batch` sequences of `new_tokens` tokens (ignore_eos) from short prompts, so the time is dominated by decode.
The figure is the median over rounds of (tokens/s with latents) / (tokens/s without) in the same round pair.
Also printed: the bytes of latent state per request and per scheduled token.

GPU (vllm 0.24, cluster users): the same script runs there unchanged, e.g.
    python bench/vllm_decode_overhead.py --model /path/to/Qwen2.5-7B --dtype bfloat16 --batch 256 \\
        --new-tokens 256 --rounds 6 --no-eager
and a 16k-token prefill: `--prompt-len 16384 --batch 1 --new-tokens 1`. Target: < 2 % decode overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="'tiny', 'smollm2', or an HF folder")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--sigma", type=float, default=0.01)
    ap.add_argument("--no-eager", action="store_true", help="let vLLM compile / capture graphs")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    if args.model == "tiny":
        from btrans_verl.tiny import tiny_model

        path = tempfile.mkdtemp(prefix="btrans_tiny_")
        tiny_model("qwen3").save_pretrained(path)
    elif args.model == "smollm2":
        from btrans_verl.models import smollm2_dir

        path = str(smollm2_dir())
    else:
        path = args.model

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from btrans_verl.latent import DEFAULT_TARGETS
    from btrans_verl.vllm.requests import latent_args

    llm = LLM(model=path, skip_tokenizer_init=True, enforce_eager=not args.no_eager, dtype=args.dtype,
              max_model_len=args.prompt_len + args.new_tokens + 16, max_num_seqs=max(args.batch, 1),
              seed=0, enable_prefix_caching=False)
    prompts = [TokensPrompt(prompt_token_ids=[(13 * i + 7 * j) % 200 + 10 for j in range(args.prompt_len)])
               for i in range(args.batch)]

    def run(latents: bool, round_: int) -> float:
        sps = [SamplingParams(temperature=0.0, max_tokens=args.new_tokens, ignore_eos=True, detokenize=False,
                              extra_args=latent_args(1000 * round_ + i, args.sigma) if latents else None)
               for i in range(args.batch)]
        t0 = time.perf_counter()
        outs = llm.generate(prompts, sps, use_tqdm=False)
        dt = time.perf_counter() - t0
        return sum(len(o.outputs[0].token_ids) for o in outs) / dt

    run(False, 0)  # warm-up
    run(True, 0)
    ratios, off_tps = [], []
    for r in range(1, args.rounds + 1):
        order = (False, True) if r % 2 else (True, False)
        tps = {lat: run(lat, r) for lat in order}
        ratios.append(tps[True] / tps[False])
        off_tps.append(tps[False])
    counters = llm.collective_rpc("btrans_counters")[0]
    result = {
        "model": args.model, "dtype": args.dtype, "batch": args.batch, "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens, "rounds": args.rounds, "sigma": args.sigma, "eager": not args.no_eager,
        "off_tokens_per_s_median": round(statistics.median(off_tps), 1),
        "on_over_off_throughput_median": round(statistics.median(ratios), 4),
        "on_over_off_min_max": [round(min(ratios), 4), round(max(ratios), 4)],
        # seed int64, mu f32, sigma f32, granularity flag, targets bitmask (the information a request carries)
        "latent_state_bytes_per_request": 8 + 4 + 4 + 1 + 1,
        # key int64 + (mu f32, sigma f32) per wrapped norm kind, in fixed buffers of max_num_batched_tokens rows
        "latent_buffer_bytes_per_token": 8 + (4 + 4) * len(DEFAULT_TARGETS),
        "norms_patched": counters["norms_patched"],
        "tokens_shifted": counters["tokens_shifted"],
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
