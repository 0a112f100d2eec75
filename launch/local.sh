#!/usr/bin/env bash
# Run a study on this machine as a cluster would: every stage as jobs, N jobs at a time, each
# job as P processes joined over loopback. Add --dry_run to print the jobs' scripts only.
#   launch/local.sh study/smoke.gin N [P] [--dry_run] [--gin.STUDY_DIR=...]
set -euo pipefail
if [ "$#" -lt 2 ]; then
  echo "usage: launch/local.sh GIN_FILE PARALLEL [PROCESSES] [--dry_run] [--gin.NAME=VALUE ...]" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
gin_file=$1; parallel=$2; shift 2
processes=1
if [ "$#" -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then processes=$1; shift; fi
exec python3 -m synthjax.study --gin_file="$gin_file" --launcher=local \
  --parallel="$parallel" --processes="$processes" "$@"
