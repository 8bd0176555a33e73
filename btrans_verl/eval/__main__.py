"""``python -m btrans_verl.eval``: population evaluation of a model on a benchmark (see :mod:`.run`).

    python -m btrans_verl.eval --model smollm2 --benchmark gsm8k --data-src vendor --limit 8 --n 8 \\
        --sigma 0.01 --temperature 0.7 --seed 0 --out runs/eval_smollm2_gsm8k

The guard matters: vLLM starts its engine processes with spawn, which re-imports the main module.
"""

import sys

from btrans_verl.eval.run import main

if __name__ == "__main__":
    sys.exit(main())
