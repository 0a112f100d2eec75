#!/usr/bin/env bash
# Run a study's training grid on this machine, N jobs at a time (data must be registered by
# the study's train_gin files). Add --dry_run to print the commands only.
#   launch/local.sh study/paper.gin N OUT_DIR [--dry_run]
set -euo pipefail
if [ "$#" -lt 3 ]; then
  echo "usage: launch/local.sh GIN_FILE PARALLEL OUT_DIR [--dry_run]" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
gin_file=$1; parallel=$2; out=$3; shift 3
exec python3 -m synthjax.launchers --gin_file="$gin_file" --launcher=local \
  --parallel="$parallel" --out="$out" "$@"
