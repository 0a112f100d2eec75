#!/usr/bin/env bash
# The GPU training figures the docs report, in one go: the cuDNN and blocked
# attention forms against the reference on the GPU; training tokens/s and MFU of
# paper_100m and paper_1b in bf16 (datasheet peak: H200/H100 SXM dense bf16, 989 TFLOP/s).
# Generation's figures: benchmarks/gpu_generate.sh. Each benchmark appends its record to
# benchmarks/results/.
#   benchmarks/gpu_check.sh [OUT_DIR] [PEAK_TFLOPS]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/synthjax_gpu_check}
peak=${2:-989}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # synthjax from this checkout, installed or not
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
python3 -m pytest -q -p no:cacheprovider tests/test_attention.py -k "cudnn or blocked_matches" \
  2>&1 | tail -5 | tee "$out/attention_tests.txt"
python3 benchmarks/train_throughput.py --model paper_100m --dtype bfloat16 --batch 16 \
  --seq 2048 --attention auto,blocked,xla --peak_tflops "$peak" --skip_torch --steps 10 \
  2>&1 | tee "$out/train_paper_100m.txt"
python3 benchmarks/train_throughput.py --model paper_1b --dtype bfloat16 --batch 8 --seq 2048 \
  --attention auto --peak_tflops "$peak" --skip_torch --steps 10 2>&1 | tee "$out/train_paper_1b.txt"
