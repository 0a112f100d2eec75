#!/usr/bin/env bash
# Generation on one GPU, sized to end within about 9 minutes on an H200, the most wanted
# figures first (each step under its own timeout, so a slow one costs only itself):
#   1. the Llama-3 8B shape in bf16, 300-token prompts and 300 new tokens, 256 and 512 slots,
#      dense and ragged decode side by side;
#   2. the 70B shape with int8 weights (about 70 GB) on the one GPU, the job's real prompts;
#   3. the 8B shape on the job's real prompts at 512 slots: prompt tokens/s, the decode's share
#      of the memory-bandwidth bound, prefill batches of 8 and 32 side by side, and the cost of
#      prompt-lookup speculation's passes (random weights accept almost no draft, so this times
#      the passes, not the gain).
# The real prompts are token ids written beforehand where synthjax's embedded packages are
# installed (the accelerator machine need not have them):
#   python benchmarks/generate_throughput.py --save_prompts prompts.json --real_prompts 512
#   bash benchmarks/gpu_generate.sh prompts.json [OUT_DIR] [PEAK_TFLOPS] [HBM_GBS]
# Imports jax with its GPU plugin, flax and gin-config, nothing else of synthjax's dependencies.
# Datasheet figures (H200 SXM): 989 dense bf16 TFLOP/s; memory bandwidth 4.8 TB/s (NVIDIA's
# figure, as listed at https://www.aiminingco.com/gpu/h200/specs). Each benchmark appends its
# record to benchmarks/results/ (set BENCHMARK_COMMIT where the checkout has no git).
set -uo pipefail
cd "$(dirname "$0")/.."
prompts=${1:?the prompts file written by --save_prompts}
out=${2:-/tmp/synthjax_gpu_generate}
peak=${3:-989}
hbm=${4:-4800}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
gen="python3 benchmarks/generate_throughput.py --skip_torch --peak_tflops $peak --hbm_gbs $hbm"
timeout 210 $gen --random_preset llama3_8b --weights bfloat16 --workload synthetic \
  --prompt_len 300 --new_tokens 300 --batches 256 512 --decode_attention dense ragged \
  2>&1 | tee "$out/generate_llama3_8b_300.txt"
timeout 180 $gen --random_preset llama3_70b --weights int8 --workload real \
  --prompts_file "$prompts" --real_prompts 64 --real_batches 64 --real_new_tokens 64 \
  2>&1 | tee "$out/generate_llama3_70b_int8.txt"
timeout 150 $gen --random_preset llama3_8b --weights bfloat16 --workload real \
  --prompts_file "$prompts" --real_prompts 512 --real_batches 512 --real_new_tokens 300 \
  --prefill_batch 8 32 --draft_tokens 4 2>&1 | tee "$out/generate_llama3_8b_real.txt"
