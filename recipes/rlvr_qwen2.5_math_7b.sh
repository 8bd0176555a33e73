#!/usr/bin/env bash
# RLVR (GRPO, SimpleRL-Zoo 400-example sample, LoRA) on Qwen2.5-Math-7B: B-Trans vs the baseline.
#
#   MODE=btrans   bash recipes/rlvr_qwen2.5_math_7b.sh       # B-Trans  (+btrans=on)
#   MODE=baseline bash recipes/rlvr_qwen2.5_math_7b.sh       # baseline (+btrans=off), everything else equal
#   DRY_RUN=1     bash recipes/rlvr_qwen2.5_math_7b.sh       # compose + validate the full config, no GPU
#   NNODES=2 RAY_ADDRESS=http://HEAD_IP:8265 bash recipes/rlvr_qwen2.5_math_7b.sh   # 2 nodes (multinode.sh)
#   bash recipes/rlvr_qwen2.5_math_7b.sh trainer.total_epochs=5   # extra args: Hydra overrides, applied last
#
# Data, shared settings and their sources: recipes/rlvr_common.sh. Environment: recipes/common.sh.
#
# GPUs expected: 1 node x 8 GPUs with 80 GB (H100 / A100-80GB); NNODES=2 roughly halves the time.
# Compute: ESTIMATE, not measured (no GPU run of this recipe yet): ~10-20 h per run on 8 x H100 (100 steps of
# 80 prompts x 8 responses of <= 3072 tokens), ~80-160 GPU-hours; the B-Trans / baseline pair twice that.
#
# Model-specific settings: vLLM tensor parallel 2; micro-batches 2 (update) / 4 (log-probs) per GPU. The model's
# context is 4096 tokens, which the shared 1024 + 3072 lengths fill exactly: do not raise them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/rlvr_common.sh"
btrans_init rlvr_qwen2.5_math_7b

MODEL_PATH="${MODEL_PATH:-Qwen/Qwen2.5-Math-7B}"
ROLLOUT_TP=2
PPO_MICRO=2
LOGPROB_MICRO=4
rlvr_overrides

btrans_launch "${OVERRIDES[@]}" "$@"
