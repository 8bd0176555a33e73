# The RLVR experiment of the paper (arXiv 2512.25063), shared by recipes/rlvr_*.sh (sourced, not run): GRPO on the
# 400-example difficulty-stratified SimpleRL-Zoo sample, LoRA, validation on GSM8K / MATH-500 / Minerva Math.
# Every model runs the same settings so that B-Trans vs baseline and model vs model stay comparable; a model
# recipe sets only its model, vLLM tensor parallelism and micro-batch sizes (memory and speed, not the algorithm).
#
# Data (once):  python -m data_prep all --src /path/to/shared/data --out data --skip-bad
#   -> data/simplerl_zoo/train_n400_seed0.parquet (train), data/{gsm8k,math500,minerva_math}/test.parquet (val)
#
# Overrides that matter (env var -> key). Values are this repository's choices unless a source is named; we could
# not read the paper's own values for these, so treat them as a starting point, not the paper's exact setup:
#   group size 8              actor_rollout_ref.rollout.n (conf/btrans/task/rlvr.yaml; SimpleRL-Zoo: 8)
#   SIGMA=0.05                btrans.sigma (conf/btrans/on.yaml default); MODE=baseline ignores it
#   LORA_RANK=32, LORA_ALPHA  btrans/lora=on + actor_rollout_ref.model.lora_rank / lora_alpha (alpha defaults to
#                             the rank: scale 1); LORA_RANK=0 trains all parameters
#   LR=1e-5 (LoRA) / 1e-6     actor_rollout_ref.actor.optim.lr (rlvr.yaml: 1e-6 full-parameter, ~10x for LoRA)
#   lengths 1024 + 3072       data.max_prompt_length / data.max_response_length (SimpleRL-Zoo's verl script,
#                             github.com/hkust-nlp/simpleRL-reason train_grpo_math_tune_ray.sh: 1024 / 3072;
#                             Qwen2.5-Math-7B's context is 4096 tokens)
#   batch 80, mini-batch 40   data.train_batch_size / actor_rollout_ref.actor.ppo_mini_batch_size: 5 steps per
#                             epoch of the 400 examples, 2 updates per step
#   EPOCHS=20                 trainer.total_epochs: 100 steps; validation before training and every 10 steps
#   KL 1e-4 (k3), T = 1.0     conf/btrans/task/rlvr.yaml (SimpleRL-Zoo style); greedy validation (verl default)
#   MODEL_PATH                the paper names model families; the checkpoints (base or post-trained) are this
#                             repository's choice, set in each model recipe

# rlvr_overrides: fills OVERRIDES and BTRANS_DATA_FILES from MODEL_PATH, ROLLOUT_TP, PPO_MICRO, LOGPROB_MICRO (set
# by the model recipe) and the env vars above.
rlvr_overrides() {
  btrans_lora_rank 32
  local lr
  if (( LORA_RANK > 0 )); then lr="${LR:-1e-5}"; else lr="${LR:-1e-6}"; fi
  local train="$DATA_DIR/simplerl_zoo/train_n400_seed0.parquet"
  local vals=("$DATA_DIR/gsm8k/test.parquet" "$DATA_DIR/math500/test.parquet" "$DATA_DIR/minerva_math/test.parquet")
  BTRANS_DATA_FILES=("$train" "${vals[@]}")
  btrans_common_overrides
  OVERRIDES+=(
    "btrans/task=rlvr"
    "data.train_files='$train'"
    "data.val_files=['${vals[0]}','${vals[1]}','${vals[2]}']"
    "data.max_prompt_length=1024"
    "data.max_response_length=3072"
    "data.filter_overlong_prompts=true"
    "data.train_batch_size=80"
    "actor_rollout_ref.model.path=$MODEL_PATH"
    "actor_rollout_ref.actor.optim.lr=$lr"
    "actor_rollout_ref.actor.ppo_mini_batch_size=40"
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=$PPO_MICRO"
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=$LOGPROB_MICRO"
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=$LOGPROB_MICRO"
    "actor_rollout_ref.rollout.n=8"
    "actor_rollout_ref.rollout.tensor_model_parallel_size=$ROLLOUT_TP"
    "actor_rollout_ref.rollout.gpu_memory_utilization=0.6"
    "trainer.total_epochs=${EPOCHS:-20}"
    "trainer.test_freq=10"
    "trainer.save_freq=50"
    "trainer.val_before_train=true"
  )
  btrans_lora_overrides
}
