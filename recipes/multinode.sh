#!/usr/bin/env bash
# Start or stop the Ray cluster a multi-node recipe is submitted to.
#
#   bash recipes/multinode.sh head              # on the head node: ray start --head, prints the next commands
#   bash recipes/multinode.sh worker HEAD_IP    # on every other node: ray start --address=HEAD_IP:6379
#   bash recipes/multinode.sh status            # ray status: every node and GPU should be listed
#   bash recipes/multinode.sh stop              # ray stop, on each node
#
# Then, on the head node:
#   export RAY_ADDRESS=http://HEAD_IP:8265      # the dashboard's job API
#   NNODES=2 GPUS_PER_NODE=8 MODE=btrans bash recipes/rlvr_qwen3_8b.sh
# which runs  ray job submit --address $RAY_ADDRESS -- python -m verl.trainer.main_ppo <the recipe's overrides>
# (recipes/common.sh, btrans_launch). Check the same command first with DRY_RUN=1 (no GPU needed).
#
# Every node needs: the same Python environment with btrans-verl installed (`pip install -e '.[gpu,eval]'` in
# verl's environment), the same model (Hugging Face cache or a shared folder) and the data at the same path, on a
# shared file system (verl's workers read data.train_files / data.val_files, and write trainer.default_local_dir,
# from whichever node they run on). Environment variables the workers need (NCCL_SOCKET_IFNAME, HF_HOME, ...) must
# be set before `ray start` on each node. Ports: RAY_PORT (default 6379), RAY_DASHBOARD_PORT (default 8265).
set -euo pipefail

GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
RAY_PORT="${RAY_PORT:-6379}"
RAY_DASHBOARD_PORT="${RAY_DASHBOARD_PORT:-8265}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() {
  sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

case "${1:-}" in
  head)
    ip="${HEAD_IP:-$(hostname -I 2>/dev/null | awk '{print $1}')}"
    [[ -n "$ip" ]] || { echo "cannot find this node's IP: set HEAD_IP" >&2; exit 2; }
    ray start --head --node-ip-address="$ip" --port="$RAY_PORT" --num-gpus="$GPUS_PER_NODE" \
      --dashboard-host=0.0.0.0 --dashboard-port="$RAY_DASHBOARD_PORT" --disable-usage-stats
    cat <<EOF

Ray head started on $ip. Next:
  on every other node:   GPUS_PER_NODE=$GPUS_PER_NODE bash $HERE/multinode.sh worker $ip
  then, here:            export RAY_ADDRESS=http://$ip:$RAY_DASHBOARD_PORT
                         NNODES=<nodes> GPUS_PER_NODE=$GPUS_PER_NODE bash $HERE/<recipe>.sh
EOF
    ;;
  worker)
    [[ -n "${2:-}" ]] || usage
    ray start --address="$2:$RAY_PORT" --num-gpus="$GPUS_PER_NODE" --disable-usage-stats
    ;;
  status) ray status ;;
  stop) ray stop ;;
  *) usage ;;
esac
