"""The eager forward's latent adds alone: a decode step's rows gathered once into the block (kept while no row is
written) against gathered norm by norm, on a real `LatentState` with every request carrying its own mind.

    .venv/bin/python bench/eager_rows_overhead.py                          # SmolLM2-135M: 61 norms, hidden 576
    .venv/bin/python bench/eager_rows_overhead.py --layers 2 --hidden 128  # the tiny model's 5 norms

Each repeat times `--steps` decode steps of each path, in alternating order; the figure per path is the median
ms per step over repeats (the norms' own work is not in it: `LatentState.add_rows_` on fixed [batch, hidden]
outputs). The norm-by-norm path is the one the block replaced, and the one prefills and CUDA graph captures take.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch

from btrans_verl.latent import norm_index
from btrans_verl.vllm.requests import latent_args
from btrans_verl.vllm.settings import EngineSettings
from btrans_verl.vllm.worker import LatentState

PATHS = ("block", "per_norm")


def _state(layers: int, hidden: int, batch: int) -> LatentState:
    norms = [(f"model.layers.{i}.{k}", norm_index(i, k), k, hidden, torch.float32)
             for i in range(layers) for k in ("input_layernorm", "post_attention_layernorm")]
    norms.append(("model.norm", norm_index(None, "final_norm"), "final_norm", hidden, torch.float32))
    state = LatentState(max_tokens=2048, max_minds=batch, device=torch.device("cpu"), norms=norms,
                        settings=EngineSettings())
    ids = [f"r{i}" for i in range(batch)]
    reqs = [SimpleNamespace(extra_args=latent_args(i, 0.01)) for i in range(batch)]
    state.fill(ids, reqs, np.ones(batch, dtype=np.int64), np.zeros(batch, dtype=np.int64))  # one decode step
    return state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=576)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20, help="decode steps per path per repeat")
    ap.add_argument("--repeats", type=int, default=40)
    args = ap.parse_args()
    state = _state(args.layers, args.hidden, args.batch)
    norms = len(state.groups[0].norm_list)
    outs = [torch.randn(args.batch, args.hidden) for _ in range(norms)]  # each norm's output [batch, hidden]
    ms: dict[str, list[float]] = {p: [] for p in PATHS}
    with torch.inference_mode():  # as vLLM runs forwards
        for r in range(args.repeats):
            for path in PATHS if r % 2 else PATHS[::-1]:
                state._shortcut = path == "block"  # off: the path a CUDA graph capture takes, norm by norm
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    for j in range(norms):
                        state.add_rows_(outs[j], 0, j)
                ms[path].append(1e3 * (time.perf_counter() - t0) / args.steps)
    print(json.dumps({"norms": norms, "hidden": args.hidden, "batch": args.batch,
                      "ms_per_step_median": {p: round(statistics.median(v), 3) for p, v in ms.items()},
                      "ms_per_step_min": {p: round(min(v), 3) for p, v in ms.items()}}, indent=2))


if __name__ == "__main__":
    main()
