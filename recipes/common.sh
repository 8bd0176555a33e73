# Shared by every recipe in recipes/ (sourced, not run). A recipe builds its Hydra overrides in the array
# OVERRIDES (btrans_common_overrides starts it) and calls `btrans_launch "${OVERRIDES[@]}" "$@"`; this file turns
# the environment into the command:
#
#   MODE=btrans|baseline   +btrans=on (default) or +btrans=off: the same run with the latent off
#   DRY_RUN=1              python -m btrans_verl.verl.dry_run <the same overrides>: compose + validate, no GPU, no Ray
#   PRINT_OVERRIDES=1      print the overrides, one per line, and exit (what the tests read)
#   NNODES, GPUS_PER_NODE  cluster shape (defaults 1 and 8): trainer.nnodes / trainer.n_gpus_per_node
#   RAY_ADDRESS            a running Ray cluster's dashboard, e.g. http://10.0.0.1:8265: submit the run to it with
#                          `ray job submit` (required when NNODES > 1; start the cluster with recipes/multinode.sh)
#   DATA_DIR               where `python -m data_prep all --out DATA_DIR` wrote its parquet files (default <repo>/data)
#   MODEL_PATH             Hugging Face id or local folder of the model (each recipe has the paper's model)
#   SIGMA                  B-Trans latent std (default 0.05, conf/btrans/on.yaml); ignored by MODE=baseline
#   LORA_RANK, LORA_ALPHA  LoRA rank (0 = full-parameter training) and alpha (default: the rank)
#   LR, EPOCHS             learning rate, trainer.total_epochs (recipe defaults)
#   SEED                   data order and latent seeds (default 42)
#   THINKING               Qwen3 recipes: 0 (default) chat template with thinking off, 1 on
#   RUN_NAME, CKPT_ROOT    experiment name (default: the recipe's name; "-btrans" / "-baseline" is appended) and
#                          checkpoint root (default <repo>/checkpoints): checkpoints in CKPT_ROOT/<name>-<mode>,
#                          resumed automatically by a rerun
#   LOGGER, PROJECT        verl loggers (default [console]; e.g. "[console,wandb]"), project (default btrans)
#   PYTHON                 interpreter (default python)
#
# Extra arguments to a recipe are appended as Hydra overrides, so they win over the recipe's own.

BTRANS_RECIPES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BTRANS_REPO_DIR="$(dirname "$BTRANS_RECIPES_DIR")"

btrans_die() {
  echo "recipe error: $*" >&2
  exit 2
}

# btrans_init NAME: read the environment shared by every recipe. Sets BTRANS_GROUP (+btrans=on|off), EXPERIMENT.
btrans_init() {
  local name="$1"
  MODE="${MODE:-btrans}"
  case "$MODE" in
    btrans) BTRANS_GROUP="+btrans=on" ;;
    baseline) BTRANS_GROUP="+btrans=off" ;;
    *) btrans_die "MODE must be 'btrans' or 'baseline', got '$MODE'" ;;
  esac
  NNODES="${NNODES:-1}"
  GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
  [[ "$NNODES" =~ ^[1-9][0-9]*$ ]] || btrans_die "NNODES must be a positive integer, got '$NNODES'"
  [[ "$GPUS_PER_NODE" =~ ^[1-9][0-9]*$ ]] || btrans_die "GPUS_PER_NODE must be a positive integer, got '$GPUS_PER_NODE'"
  DATA_DIR="${DATA_DIR:-$BTRANS_REPO_DIR/data}"
  SIGMA="${SIGMA:-0.05}"
  SEED="${SEED:-42}"
  PROJECT="${PROJECT:-btrans}"
  LOGGER="${LOGGER:-[console]}"
  # the mode is always part of the name: a baseline never resumes from a B-Trans checkpoint or vice versa
  EXPERIMENT="${RUN_NAME:-$name}-$MODE"
  CKPT_DIR="${CKPT_ROOT:-$BTRANS_REPO_DIR/checkpoints}/$EXPERIMENT"
  PYTHON="${PYTHON:-python}"
}

# btrans_common_overrides: starts the array OVERRIDES with what every recipe shares (B-Trans group, seeds,
# cluster shape, bookkeeping).
btrans_common_overrides() {
  OVERRIDES=("$BTRANS_GROUP")
  if [[ "$MODE" == btrans ]]; then OVERRIDES+=("btrans.sigma=$SIGMA"); fi
  OVERRIDES+=(
    "data.seed=$SEED"
    "actor_rollout_ref.rollout.seed=$SEED"
    "trainer.nnodes=$NNODES"
    "trainer.n_gpus_per_node=$GPUS_PER_NODE"
    "trainer.project_name=$PROJECT"
    "trainer.experiment_name=$EXPERIMENT"
    "trainer.default_local_dir=$CKPT_DIR"
    "trainer.logger=$LOGGER"
    "trainer.resume_mode=auto"
  )
}

# btrans_lora_rank DEFAULT: sets LORA_RANK (env or DEFAULT) and LORA_ALPHA (env or the rank), checked.
btrans_lora_rank() {
  LORA_RANK="${LORA_RANK:-$1}"
  [[ "$LORA_RANK" =~ ^[0-9]+$ ]] || btrans_die "LORA_RANK must be a non-negative integer, got '$LORA_RANK'"
  LORA_ALPHA="${LORA_ALPHA:-$LORA_RANK}"
}

# btrans_lora_overrides: appends the LoRA group and its rank / alpha when LORA_RANK > 0.
btrans_lora_overrides() {
  if (( LORA_RANK > 0 )); then
    OVERRIDES+=("btrans/lora=on" "actor_rollout_ref.model.lora_rank=$LORA_RANK"
                "actor_rollout_ref.model.lora_alpha=$LORA_ALPHA")
  fi
}

# btrans_require_files FILE...: before a real launch, every data file must exist here (DRY_RUN only reports).
btrans_require_files() {
  local f missing=0
  for f in "$@"; do
    if [[ ! -f "$f" ]]; then
      echo "recipe error: data file not found: $f" >&2
      missing=1
    fi
  done
  if (( missing )); then
    echo "  make the data first (see recipes/README.md), e.g.:" >&2
    echo "  python -m data_prep all --src /path/to/shared/data --out $DATA_DIR --skip-bad" >&2
    exit 2
  fi
}

# btrans_launch OVERRIDE...: print, dry-run, run locally, or submit to a Ray cluster.
btrans_launch() {
  if [[ "${PRINT_OVERRIDES:-0}" == 1 ]]; then
    printf '%s\n' "$@"
    return 0
  fi
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    exec "$PYTHON" -m btrans_verl.verl.dry_run "$@"
  fi
  btrans_require_files "${BTRANS_DATA_FILES[@]}"
  if (( NNODES > 1 )) || [[ -n "${RAY_ADDRESS:-}" ]]; then
    [[ -n "${RAY_ADDRESS:-}" ]] || btrans_die "NNODES=$NNODES needs a running Ray cluster: start it with
  recipes/multinode.sh head            (on the head node; it prints the next two commands)
  recipes/multinode.sh worker HEAD_IP  (on each of the other $((NNODES - 1)) node(s))
then export RAY_ADDRESS=http://HEAD_IP:8265 and run this recipe again on the head node"
    echo "+ ray job submit --address $RAY_ADDRESS -- $PYTHON -m verl.trainer.main_ppo $*" >&2
    exec ray job submit --address "$RAY_ADDRESS" --entrypoint-num-cpus=1 -- \
      "$PYTHON" -m verl.trainer.main_ppo "$@"
  fi
  echo "+ $PYTHON -m verl.trainer.main_ppo $*" >&2
  exec "$PYTHON" -m verl.trainer.main_ppo "$@"
}

# qwen3_thinking_override: Qwen3's chat template thinks by default, and its traces rarely end within the
# recipes' 3072 response tokens. THINKING=0 (the Qwen3 recipes' default) renders prompts with thinking off;
# THINKING=1 keeps the template's default. The paper does not say which it used (as far as we could read).
qwen3_thinking_override() {
  THINKING="${THINKING:-0}"
  case "$THINKING" in
    0) OVERRIDES+=("+data.apply_chat_template_kwargs.enable_thinking=false") ;;
    1) ;;
    *) btrans_die "THINKING must be 0 or 1, got '$THINKING'" ;;
  esac
}
