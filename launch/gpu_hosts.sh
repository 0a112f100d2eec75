#!/usr/bin/env bash
# Run a study on GPU hosts over ssh: every stage as jobs; generation and training on every
# host at once (host 0 coordinates jax.distributed), the other stages on host 0. The study's
# folder (STUDY_DIR) must be one every host reads: a bucket or a shared file system.
#   launch/gpu_hosts.sh study/paper.gin host0,host1 [--dry_run] [--parallel=N]
set -euo pipefail
if [ "$#" -lt 2 ]; then
  echo "usage: launch/gpu_hosts.sh GIN_FILE HOST0,HOST1,... [--dry_run] [--parallel=N]" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
gin_file=$1; hosts=$2; shift 2
exec python3 -m synthjax.study --gin_file="$gin_file" --launcher=gpu --hosts="$hosts" "$@"
