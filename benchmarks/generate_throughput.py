"""Generation throughput: synthjax's engine vs transformers generate, same SmolLM2-135M weights.

    python benchmarks/generate_throughput.py [--batches 1 8 32 64] [--new_tokens 128]
    python benchmarks/generate_throughput.py --random_preset llama3_8b --skip_torch  # a GPU

For each batch size: synthjax tokens/s (greedy, 64-token prompts, new tokens generated per
second, compile excluded), transformers `generate` tokens/s at 1 and 2 torch threads, and
synthjax's fraction of the compute roofline, 2 N tokens/s over the f32 matmul peak measured in
the same run (or over --peak_tflops). --random_preset times a model preset's shape with random
weights (no download; speed does not depend on the weights' values). Nothing is asserted;
compare ratios within one run.
"""
import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def matmul_peak(n=2048, repeats=5):
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n ** 3 / statistics.median(times)


def prompts(batch, length, vocab, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(100, vocab - 100, (batch, length)).tolist()


def random_model(preset):
  """A preset's shape with random weights, made on the device."""
  import flax.linen as nn
  from synthjax import gin_cli
  from synthjax.models.config import ModelConfig
  from synthjax.models.llama import Transformer
  gin_cli.parse([f"models/{preset}.gin"])
  cfg = ModelConfig().replace(max_len=4096)
  params = jax.jit(lambda: nn.unbox(Transformer(cfg).init(
      jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))["params"])()
  return cfg, params


def synthjax_tps(model, batch, prompt_len, new_tokens):
  from synthjax.generate.engine import Engine, Request, Sampling
  cfg, params = model
  engine = Engine(cfg, params, eos_ids=[], slots=batch,
                  max_len=prompt_len + new_tokens + 8, buckets=(prompt_len,))
  reqs = [Request(p, Sampling(max_new_tokens=new_tokens)) for p in prompts(batch, prompt_len,
                                                                           cfg.V)]
  engine.generate(reqs[:1] + [Request(r.prompt, Sampling(max_new_tokens=2)) for r in reqs[1:]])
  t = time.perf_counter()
  engine.generate(reqs)
  return batch * new_tokens / (time.perf_counter() - t), cfg


def transformers_tps(gguf, batch, prompt_len, new_tokens, threads, vocab):
  import torch
  import transformers
  torch.set_num_threads(threads)
  model = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(gguf), gguf_file=os.path.basename(gguf), dtype=torch.float32)
  x = torch.tensor(prompts(batch, prompt_len, vocab))
  kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
            pad_token_id=0)
  with torch.no_grad():
    model.generate(x[:, :8], max_new_tokens=2, do_sample=False, pad_token_id=0)
    t = time.perf_counter()
    model.generate(x, **kw)
  return batch * new_tokens / (time.perf_counter() - t)


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64])
  p.add_argument("--new_tokens", type=int, default=128)
  p.add_argument("--prompt_len", type=int, default=64)
  p.add_argument("--skip_torch", action="store_true")
  p.add_argument("--random_preset", default="",
                 help="time this gin_configs/models preset with random weights instead")
  p.add_argument("--peak_tflops", type=float, default=0.0,
                 help="the device's datasheet peak; 0: measure an f32 matmul")
  args = p.parse_args()
  from synthjax import assets
  from synthjax.models.flops import decode_flops_per_token
  if args.random_preset:
    model = random_model(args.random_preset)
    name = f"{args.random_preset} (random weights, {model[0].param_dtype})"
  else:
    from synthjax.checkpoints import store
    from synthjax.generate.job import resolve_generator
    model_dir = resolve_generator(assets.EMBEDDED_GENERATOR)
    cfg = store.load_config(model_dir)
    model = (cfg, store.load_params(model_dir, cfg))
    name = "SmolLM2-135M-Instruct (f32)"
  peak = args.peak_tflops * 1e12 or matmul_peak()
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); peak "
        f"{peak / 1e9:.1f} GFLOP/s ({'datasheet' if args.peak_tflops else 'f32 matmul'})")
  print(f"{name}, {args.prompt_len}-token prompts, {args.new_tokens} new tokens, greedy")
  for batch in args.batches:
    ours, cfg = synthjax_tps(model, batch, args.prompt_len, args.new_tokens)
    roof = ours * decode_flops_per_token(cfg) / peak
    line = f"batch {batch:3d}: synthjax {ours:7.1f} tok/s ({roof:.1%} of roofline)"
    if not args.skip_torch:
      for threads in (1, 2):
        theirs = transformers_tps(assets.smollm2_gguf(), batch, args.prompt_len,
                                  args.new_tokens, threads, cfg.V)
        line += f" | transformers {threads}t {theirs:7.1f} tok/s (x{ours / theirs:.2f})"
    print(line, flush=True)


if __name__ == "__main__":
  main()
