"""Checks that the environment works: `python -m btrans_verl.doctor` (run at the end of `make setup`).

Imports vllm, verl and transformers, and runs a tiny Qwen3 forward with and without a latent.
Exits non-zero, naming what failed.
"""

from __future__ import annotations

import sys


def main() -> int:
    problems = []
    versions = {}
    for mod in ("torch", "transformers", "vllm", "verl"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", "?")
        except Exception as e:  # noqa: BLE001 - report every failure
            problems.append(f"import {mod}: {type(e).__name__}: {e}")
    if not problems:
        try:
            import torch

            from btrans_verl.hf import attach
            from btrans_verl.latent import LatentConfig
            from btrans_verl.tiny import tiny_model

            model = tiny_model("qwen3")
            ids = torch.arange(8).unsqueeze(0)
            base = model(ids).logits
            pop = attach(model, LatentConfig(sigma=0.5), mode="mean")
            with pop.replay([1]):
                shifted = model(ids).logits
            if torch.equal(base, shifted) or pop.counters.norm_calls_shifted == 0:
                problems.append("Qwen3 forward: the latent did not change the logits")
        except Exception as e:  # noqa: BLE001
            problems.append(f"Qwen3 forward: {type(e).__name__}: {e}")
    for k, v in versions.items():
        print(f"  {k:13s} {v}")
    if problems:
        print("btrans-verl doctor: FAILED\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("btrans-verl doctor: ok (imports, Qwen3 forward with a latent)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
