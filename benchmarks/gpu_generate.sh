#!/usr/bin/env bash
# Generation on one GPU, sized to end within about 9 minutes on an H200, the most wanted
# figures first (each step under its own timeout, so a slow one costs only itself; compiles,
# not timed, are most of each step: a program per slot count, prompt bucket and cache length):
#   1. the Llama-3 8B shape in bf16, 300-token prompts and 300 new tokens, 512 and 256 slots,
#      ragged and dense decode side by side;
#   2. the 70B shape with int8 weights (about 70 GB) on the one GPU, 64 slots;
#   3. the 8B shape on the job's real prompts at 512 slots: prompt tokens/s and the decode's
#      share of the memory-bandwidth bound.
# The real prompts are token ids written beforehand where synthjax's embedded packages are
# installed (the accelerator machine need not have them):
#   python benchmarks/generate_throughput.py --save_prompts prompts.json --real_prompts 512
#   bash benchmarks/gpu_generate.sh prompts.json [OUT_DIR] [PEAK_TFLOPS] [HBM_GBS]
# OUT_DIR gets each step's log and a copy of benchmarks/results/generate_throughput.jsonl.
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
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # synthjax from this checkout, installed or not
# JAX preallocates 75% of the GPU's memory by default (104 GiB of an H200's 139;
# https://docs.jax.dev/en/latest/gpu_memory_allocation.html); the 8B shape at 512 slots holds
# 15 GiB of weights and 40 GiB of cache, twice the cache while it grows a step
# (synthjax.training.memory.generator_bytes), so let it have nearly all. (jaxlib refuses the
# new name beside the deprecated XLA_PYTHON_CLIENT_MEM_FRACTION: a caller's setting wins.)
if [ -z "${XLA_PYTHON_CLIENT_MEM_FRACTION:-}" ]; then
  export XLA_CLIENT_MEM_FRACTION=${XLA_CLIENT_MEM_FRACTION:-0.95}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
gen="python3 benchmarks/generate_throughput.py --skip_torch --peak_tflops $peak --hbm_gbs $hbm"
timeout 240 $gen --random_preset llama3_8b --weights bfloat16 --workload synthetic \
  --prompt_len 300 --new_tokens 300 --batches 512 256 --decode_attention ragged dense \
  2>&1 | tee "$out/generate_llama3_8b_300.txt"
timeout 150 $gen --random_preset llama3_70b --weights int8 --workload synthetic \
  --prompt_len 256 --new_tokens 64 --batches 64 2>&1 | tee "$out/generate_llama3_70b_int8.txt"
timeout 150 $gen --random_preset llama3_8b --weights bfloat16 --workload real \
  --prompts_file "$prompts" --real_prompts 512 --real_batches 512 --real_new_tokens 300 \
  2>&1 | tee "$out/generate_llama3_8b_real.txt"
cp benchmarks/results/generate_throughput.jsonl "$out/"  # the records, where OUT_DIR travels back
