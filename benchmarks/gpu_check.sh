#!/usr/bin/env bash
# The GPU figures the docs report, in one go (at most about 20 minutes on one H200): the cuDNN
# and blocked attention forms against the reference on the GPU; training tokens/s and MFU of
# paper_100m and paper_1b in bf16 (datasheet peak: H200/H100 SXM dense bf16, 989 TFLOP/s);
# generation tokens/s of the Llama-3 8B and 70B shapes with random weights. Each benchmark
# appends its record to benchmarks/results/.
#   benchmarks/gpu_check.sh [OUT_DIR] [PEAK_TFLOPS]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/synthjax_gpu_check}
peak=${2:-989}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
python3 -m pytest -q -p no:cacheprovider tests/test_attention.py -k "cudnn or blocked_matches" \
  2>&1 | tail -5 | tee "$out/attention_tests.txt"
python3 benchmarks/train_throughput.py --model paper_100m --dtype bfloat16 --batch 16 \
  --seq 2048 --attention auto,blocked,xla --peak_tflops "$peak" --skip_torch --steps 10 \
  2>&1 | tee "$out/train_paper_100m.txt"
python3 benchmarks/train_throughput.py --model paper_1b --dtype bfloat16 --batch 8 --seq 2048 \
  --attention auto --peak_tflops "$peak" --skip_torch --steps 10 2>&1 | tee "$out/train_paper_1b.txt"
# Generation (issue 38's lines): the 8B shape in bf16 at 300-token prompts and 300 new tokens,
# dense and ragged decode side by side; the job's real prompts with the bandwidth share; the
# 70B shape with int8 weights on the one GPU. H200 SXM memory bandwidth: 4.8 TB/s (NVIDIA's
# figure, as listed at https://www.aiminingco.com/gpu/h200/specs).
gen="python3 benchmarks/generate_throughput.py --skip_torch --peak_tflops $peak --hbm_gbs 4800"
timeout 300 $gen --random_preset llama3_8b --weights bfloat16 --workload synthetic \
  --prompt_len 300 --new_tokens 300 --batches 64 256 512 --decode_attention dense ragged \
  2>&1 | tee "$out/generate_llama3_8b_300.txt"
timeout 300 $gen --random_preset llama3_8b --weights bfloat16 --workload real \
  --real_prompts 512 --real_batches 128 512 --real_new_tokens 300 --decode_attention ragged \
  2>&1 | tee "$out/generate_llama3_8b_real.txt"
timeout 240 $gen --random_preset llama3_70b --weights int8 --workload real \
  --real_prompts 64 --real_batches 64 --real_new_tokens 64 \
  2>&1 | tee "$out/generate_llama3_70b_int8.txt"
