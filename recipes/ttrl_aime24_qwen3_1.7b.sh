#!/usr/bin/env bash
# Label-free test-time RL (TTRL) on AIME 2024 with Qwen3-1.7B: B-Trans vs the baseline (paper arXiv 2512.25063).
# Every prompt gets n_votes = 64 samples; their majority answer is the pseudo-label; the first n_samples = 32 are
# rewarded against it and trained on (GRPO). AIME's ground truth is used for metrics only (ttrl/label_accuracy,
# validation accuracy).
#
#   MODE=btrans   bash recipes/ttrl_aime24_qwen3_1.7b.sh     # B-Trans  (+btrans=on)
#   MODE=baseline bash recipes/ttrl_aime24_qwen3_1.7b.sh     # baseline (+btrans=off), everything else equal
#   DRY_RUN=1     bash recipes/ttrl_aime24_qwen3_1.7b.sh     # compose + validate the full config, no GPU
#   NNODES=2 RAY_ADDRESS=http://HEAD_IP:8265 bash recipes/ttrl_aime24_qwen3_1.7b.sh   # 2 nodes (multinode.sh)
#   bash recipes/ttrl_aime24_qwen3_1.7b.sh trainer.total_epochs=10   # extra args: Hydra overrides, applied last
#
# Data (once):  python -m data_prep all --src /path/to/shared/data --out data --skip-bad
#   -> data/aime24_ttrl/test.parquet: the 30 AIME 2024 problems, train and validation alike (test-time training)
#   (or just this file, shipped with the package: python -m data_prep aime24_ttrl --src vendor --out data/aime24_ttrl)
#
# GPUs expected: 1 node x 8 GPUs with 80 GB (H100 / A100-80GB).
# Compute: ESTIMATE, not measured (no GPU run of this recipe yet): ~6-12 h per run on 8 x H100 (240 steps of
# 8 prompts x 64 samples of <= 3072 tokens, plus 25 validations of 30 x 16 samples), ~50-100 GPU-hours; the
# B-Trans / baseline pair twice that.
#
# Overrides that matter (env var -> key). Sources: TTRL (arXiv 2504.16084) and its verl example script
# (github.com/PRIME-RL/TTRL, verl/examples/ttrl/Qwen2.5/aime.sh); otherwise this repository's choices:
#   n_votes 64, n_samples 32  btrans.ttrl.n_votes / n_samples (TTRL); rollout.n follows n_votes
#   temperature 1.0           actor_rollout_ref.rollout.temperature (conf/btrans/task/ttrl.yaml, B-Trans' 1.0;
#                             TTRL's verl example samples at 0.6)
#   lengths 512 + 3072        data.max_prompt_length / max_response_length (TTRL example, "Len@3k")
#   batch 8, mini-batch 1     data.train_batch_size (TTRL: 8) / actor_rollout_ref.actor.ppo_mini_batch_size: in
#                             verl a mini-batch counts rollout.n = 64 trajectories per prompt, so 1 prompt = 64 of
#                             the 8 x 32 = 256 trained trajectories: 4 updates per step (TTRL: 8 of 32)
#   EPOCHS=80                 trainer.total_epochs (TTRL: 80 episodes): 3 steps per epoch of 30 prompts, 240 steps
#   LORA_RANK=0, LR=5e-7      full-parameter training at TTRL's learning rate (conf/btrans/task/ttrl.yaml);
#                             LORA_RANK=32 trains LoRA at LR=5e-6 instead
#   warmup 3%, cosine         actor_rollout_ref.actor.optim.lr_warmup_steps_ratio / lr_scheduler_type (TTRL)
#   KL 1e-4 (k3)              conf/btrans/task/ttrl.yaml
#   SIGMA=0.05                btrans.sigma (conf/btrans/on.yaml default); MODE=baseline ignores it
#   validation avg@16         val_kwargs: 16 samples, temperature 0.6, top_p 0.95 (TTRL); every 10 steps (TTRL: 2)
#   THINKING=0                Qwen3 chat template with thinking off (recipes/common.sh, qwen3_thinking_override)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
btrans_init ttrl_aime24_qwen3_1.7b

MODEL_PATH="${MODEL_PATH:-Qwen/Qwen3-1.7B}"
btrans_lora_rank 0
if (( LORA_RANK > 0 )); then LR="${LR:-5e-6}"; else LR="${LR:-5e-7}"; fi
AIME="$DATA_DIR/aime24_ttrl/test.parquet"
BTRANS_DATA_FILES=("$AIME")

btrans_common_overrides
OVERRIDES+=(
  "btrans/task=ttrl"
  "btrans.ttrl.n_votes=64"
  "btrans.ttrl.n_samples=32"
  "data.train_files='$AIME'"
  "data.val_files='$AIME'"
  "data.max_prompt_length=512"
  "data.max_response_length=3072"
  "data.filter_overlong_prompts=true"
  "data.train_batch_size=8"
  "actor_rollout_ref.model.path=$MODEL_PATH"
  "actor_rollout_ref.actor.optim.lr=$LR"
  "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.03"
  "actor_rollout_ref.actor.optim.lr_scheduler_type=cosine"
  "actor_rollout_ref.actor.ppo_mini_batch_size=1"
  "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4"
  "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8"
  "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8"
  "actor_rollout_ref.rollout.temperature=1.0"
  "actor_rollout_ref.rollout.tensor_model_parallel_size=1"
  "actor_rollout_ref.rollout.gpu_memory_utilization=0.6"
  "actor_rollout_ref.rollout.val_kwargs.do_sample=true"
  "actor_rollout_ref.rollout.val_kwargs.n=16"
  "actor_rollout_ref.rollout.val_kwargs.temperature=0.6"
  "actor_rollout_ref.rollout.val_kwargs.top_p=0.95"
  "trainer.total_epochs=${EPOCHS:-80}"
  "trainer.test_freq=10"
  "trainer.save_freq=60"
  "trainer.val_before_train=true"
)
btrans_lora_overrides
qwen3_thinking_override

btrans_launch "${OVERRIDES[@]}" "$@"
