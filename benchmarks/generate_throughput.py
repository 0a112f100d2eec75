"""Generation throughput: synthjax's engine vs transformers generate, same SmolLM2-135M weights.

    python benchmarks/generate_throughput.py [--batches 1 8 32 64] [--new_tokens 128]

For each batch size: synthjax tokens/s (greedy, 64-token prompts, new tokens generated per
second, compile excluded), transformers `generate` tokens/s at 1 and 2 torch threads, and
synthjax's fraction of the compute roofline, 2 N tokens/s over the f32 matmul peak measured in
the same run. Nothing is asserted; compare ratios within one run.
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


def synthjax_tps(model_dir, batch, prompt_len, new_tokens):
  from synthjax.checkpoints import store
  from synthjax.generate.engine import Engine, Request, Sampling
  cfg = store.load_config(model_dir)
  engine = Engine(cfg, store.load_params(model_dir, cfg), eos_ids=[], slots=batch,
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
  args = p.parse_args()
  from synthjax import assets
  from synthjax.generate.job import resolve_generator
  from synthjax.models.flops import decode_flops_per_token
  model_dir = resolve_generator(assets.EMBEDDED_GENERATOR)
  peak = matmul_peak()
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); f32 matmul peak "
        f"{peak / 1e9:.1f} GFLOP/s")
  print(f"SmolLM2-135M-Instruct (f32), {args.prompt_len}-token prompts, {args.new_tokens} new "
        "tokens, greedy")
  for batch in args.batches:
    ours, cfg = synthjax_tps(model_dir, batch, args.prompt_len, args.new_tokens)
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
