#!/usr/bin/env bash
# RLVR (GRPO, SimpleRL-Zoo 400-example sample, LoRA) on Llama-3.1-8B: B-Trans vs the baseline.
#
#   MODE=btrans   bash recipes/rlvr_llama3.1_8b.sh           # B-Trans  (+btrans=on)
#   MODE=baseline bash recipes/rlvr_llama3.1_8b.sh           # baseline (+btrans=off), everything else equal
#   DRY_RUN=1     bash recipes/rlvr_llama3.1_8b.sh           # compose + validate the full config, no GPU
#   NNODES=2 RAY_ADDRESS=http://HEAD_IP:8265 bash recipes/rlvr_llama3.1_8b.sh  # 2 nodes (recipes/multinode.sh)
#   bash recipes/rlvr_llama3.1_8b.sh trainer.total_epochs=5  # extra args: Hydra overrides, applied last
#
# Data, shared settings and their sources: recipes/rlvr_common.sh. Environment: recipes/common.sh.
#
# GPUs expected: 1 node x 8 GPUs with 80 GB (H100 / A100-80GB); NNODES=2 roughly halves the time.
# Compute: ESTIMATE, not measured (no GPU run of this recipe yet): ~10-20 h per run on 8 x H100 (100 steps of
# 80 prompts x 8 responses of <= 3072 tokens), ~80-160 GPU-hours; the B-Trans / baseline pair twice that.
#
# Model-specific settings: vLLM tensor parallel 2; micro-batches 2 (update) / 4 (log-probs) per GPU.
# Model: the paper names Llama-3.1-8B; which checkpoint is this repository's choice. The default is the Instruct
# checkpoint because verl renders every prompt with the tokenizer's chat template, which the base model was not
# trained on. For the base checkpoint set MODEL_PATH=meta-llama/Llama-3.1-8B (and, if its tokenizer has no
# template, actor_rollout_ref.model.custom_chat_template=...; the dry run checks it for a local folder).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/rlvr_common.sh"
btrans_init rlvr_llama3.1_8b

MODEL_PATH="${MODEL_PATH:-meta-llama/Llama-3.1-8B-Instruct}"
ROLLOUT_TP=2
PPO_MICRO=2
LOGPROB_MICRO=4
rlvr_overrides

btrans_launch "${OVERRIDES[@]}" "$@"
