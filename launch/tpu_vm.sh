#!/usr/bin/env bash
# One gin training job on a Cloud TPU VM, the t5x way: create the VM (every host of the slice),
# copy this checkout, install it with its own Python (uv: the TPU images ship Python 3.10) from
# the lock with jax[tpu], run `python -m synthjax.train` on every host at once (each joins
# jax.distributed, which finds the slice's hosts itself), and delete the VM on every path:
# success, failure or interrupt. A study of many runs goes through Ray (launch/ray/tpu.yaml).
#   launch/tpu_vm.sh NAME ZONE TPU_TYPE GIN_FILE --gin.MODEL_DIR=gs://BUCKET/run [--gin.X=Y ...]
# TPU_TYPE: v4-16, v5litepod-16, v5p-16, v6e-16, ...; RUNTIME_VERSION=... overrides the runtime
# version picked for it; DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail
if [ "$#" -lt 4 ]; then
  echo "usage: launch/tpu_vm.sh NAME ZONE TPU_TYPE GIN_FILE --gin.MODEL_DIR=gs://... [--gin.X=Y ...]" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
name=$1; zone=$2; tpu_type=$3; gin_file=$4; shift 4
case " $* " in
  *" --gin.MODEL_DIR=gs://"*) ;;
  *) echo "launch/tpu_vm.sh: --gin.MODEL_DIR=gs://... is needed (the VM's disk goes with it)" >&2
     exit 2;;
esac
# Google's TPU software versions for JAX: v4 and older tpu-ubuntu2204-base, v5e
# v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5, v6e (Trillium) v2-alpha-tpuv6e.
case "$tpu_type" in
  v2-*|v3-*|v4-*) runtime=tpu-ubuntu2204-base;;
  v5litepod-*|v5e-*) runtime=v2-alpha-tpuv5-lite;;
  v5p-*) runtime=v2-alpha-tpuv5;;
  v6e-*) runtime=v2-alpha-tpuv6e;;
  *) echo "launch/tpu_vm.sh: unknown TPU type $tpu_type (set RUNTIME_VERSION)" >&2; exit 2;;
esac
runtime=${RUNTIME_VERSION:-$runtime}
run() { if [ -n "${DRY_RUN:-}" ]; then printf '+'; printf ' %q' "$@"; echo; else "$@"; fi; }
delete_vm() { run gcloud compute tpus tpu-vm delete "$name" --zone="$zone" --quiet || true; }
trap delete_vm EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
run gcloud compute tpus tpu-vm create "$name" --zone="$zone" --accelerator-type="$tpu_type" \
  --version="$runtime"
run gcloud compute tpus tpu-vm scp --recurse --worker=all --zone="$zone" . "$name:~/synthjax"
args=$(printf ' %q' --gin_file="$gin_file" "$@")
remote="set -e; python3 -m pip install -q --user uv; ~/.local/bin/uv venv -q --python 3.11 ~/venv
~/.local/bin/uv pip install -q --python ~/venv/bin/python -c ~/synthjax/requirements/lock.txt \"\$HOME/synthjax[tpu]\"
cd ~/synthjax && ~/venv/bin/python -m synthjax.train$args"
run gcloud compute tpus tpu-vm ssh "$name" --worker=all --zone="$zone" --command="$remote"
