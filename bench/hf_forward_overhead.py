"""HF forward overhead of B-Trans: modes mean / sample (sequence) / sample (token) vs off, as ratios in one run.

    .venv/bin/python bench/hf_forward_overhead.py                      # SmolLM2-135M shape, random weights
    .venv/bin/python bench/hf_forward_overhead.py --model tiny --reps 30

Each repetition runs every mode once, in rotating order (so drift hits all modes alike); the figure per mode
is the median over repetitions of (time of mode / time of off in the same repetition).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from btrans_verl.hf import attach
from btrans_verl.latent import LatentConfig

SHAPES = {
    # SmolLM2-135M: 30 layers, hidden 576, 61 target norms
    "smollm2-135m": dict(family="llama", hidden=576, layers=30, heads=9, kv_heads=3, intermediate=1536,
                         vocab=49152),
    "tiny": dict(family="qwen3", hidden=128, layers=2, heads=2, kv_heads=1, intermediate=256, vocab=256),
}


def build(shape: str):
    import transformers

    s = dict(SHAPES[shape])
    family = s.pop("family")
    cls = {"llama": transformers.LlamaConfig, "qwen3": transformers.Qwen3Config}[family]
    cfg = cls(vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["intermediate"],
              num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
              head_dim=s["hidden"] // s["heads"], tie_word_embeddings=True)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").float().eval(), cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(SHAPES), default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--sigma", type=float, default=0.05)
    ap.add_argument("--json", default=None, help="write the figures here too")
    args = ap.parse_args()

    model, cfg = build(args.model)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq))
    pops = {
        "sequence": attach(model, LatentConfig(sigma=args.sigma), mode="off"),
    }
    pop_seq = pops["sequence"]
    pop_tok = attach(model, LatentConfig(sigma=args.sigma, granularity="token"), mode="off")
    seeds = list(range(1, args.batch + 1))

    def run(mode: str) -> float:
        pop_seq.set_mode("off")
        pop_tok.set_mode("off")
        if mode == "mean":
            pop_seq.set_mode("mean")
        elif mode == "sample/sequence":
            pop_seq.set_seeds(seeds)
            pop_seq.set_mode("replay")  # replay == sample minus drawing seeds; z is recomputed each call
        elif mode == "sample/token":
            pop_tok.set_seeds(seeds)
            pop_tok.set_mode("replay")
        t0 = time.perf_counter()
        with torch.no_grad():
            model(ids)
        return time.perf_counter() - t0

    modes = ["off", "mean", "sample/sequence", "sample/token"]
    for m in modes:  # warm-up
        run(m)
    ratios = {m: [] for m in modes[1:]}
    base = []
    for r in range(args.reps):
        order = modes[r % len(modes):] + modes[: r % len(modes)]
        t = {m: run(m) for m in order}
        base.append(t["off"])
        for m in modes[1:]:
            ratios[m].append(t[m] / t["off"])
    result = {
        "model": args.model, "batch": args.batch, "seq": args.seq, "reps": args.reps, "sigma": args.sigma,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
        "off_ms_median": 1000 * statistics.median(base),
        "ratio_vs_off_median": {m: round(statistics.median(v), 4) for m, v in ratios.items()},
        "ratio_vs_off_min_max": {m: [round(min(v), 4), round(max(v), 4)] for m, v in ratios.items()},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
