#!/usr/bin/env bash
# Run a study's training grid on TPU VMs, one VM per job (create, copy code, install, run on
# every worker, collect run.json, delete). Add --dry_run to print the gcloud commands only.
#   launch/tpu_vm.sh study/paper.gin us-central2-b v4-64 gs://BUCKET/synthjax [--dry_run]
set -euo pipefail
if [ "$#" -lt 4 ]; then
  echo "usage: launch/tpu_vm.sh GIN_FILE ZONE TPU_TYPE gs://BUCKET/PATH [--dry_run]" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
gin_file=$1; zone=$2; tpu_type=$3; bucket=$4; shift 4
exec python3 -m synthjax.launchers --gin_file="$gin_file" --launcher=tpu_vm \
  --tpu_zone="$zone" --tpu_type="$tpu_type" --bucket="$bucket" "$@"
