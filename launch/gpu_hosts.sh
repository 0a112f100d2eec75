#!/usr/bin/env bash
# Run a study's training grid on GPU hosts over ssh; host 0 coordinates jax.distributed.
#   launch/gpu_hosts.sh study/paper.gin host0,host1 OUT_DIR [--dry_run]
set -euo pipefail
if [ "$#" -lt 3 ]; then
  echo "usage: launch/gpu_hosts.sh GIN_FILE HOST0,HOST1,... OUT_DIR [--dry_run]" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
gin_file=$1; hosts=$2; out=$3; shift 3
exec python3 -m synthjax.launchers --gin_file="$gin_file" --launcher=gpu --hosts="$hosts" \
  --out="$out" "$@"
