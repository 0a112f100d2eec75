#!/usr/bin/env bash
# Local GPU smoke test: a tiny model for a few steps on synthetic (Markov) data and on real
# text (this repository's README as bytes), with jax[cuda12] installed. Prints the device.
#   launch/gpu_smoke.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/synthjax_gpu_smoke}
python3 -c "import jax; print('devices:', jax.devices())"
python3 -m synthjax.train --gin_file=train/tiny_markov.gin --gin.MODEL_DIR="$out/markov" \
  --gin.TRAIN_TOKENS=65536
python3 -m synthjax.train --gin_file=train/tiny_markov.gin --gin.MODEL_DIR="$out/bytes" \
  --gin.TRAIN_TOKENS=65536 --gin.ModelConfig.V=257 \
  --gin.TrainConfig.data_source=@ByteFileSource --gin.ByteFileSource.path=README.md \
  --gin.TrainConfig.eval_sources=None
