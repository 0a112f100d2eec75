#!/usr/bin/env bash
# Run a study on TPU VMs: every stage as jobs, one VM per job (create, copy code, install, run
# on the workers, delete on every path); the study's folder (STUDY_DIR) must be a gs:// bucket.
# Add --dry_run to print the gcloud commands only.
#   launch/tpu_vm.sh study/paper.gin us-central2-b v4-64 [--dry_run] [--parallel=16]
set -euo pipefail
if [ "$#" -lt 3 ]; then
  echo "usage: launch/tpu_vm.sh GIN_FILE ZONE TPU_TYPE [--dry_run] [--parallel=N] [--tpu_queued]" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
gin_file=$1; zone=$2; tpu_type=$3; shift 3
exec python3 -m synthjax.study --gin_file="$gin_file" --launcher=tpu_vm \
  --tpu_zone="$zone" --tpu_type="$tpu_type" "$@"
