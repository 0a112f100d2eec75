"""One decode step of the generation engine, timed alone: the embedded generator (SmolLM2-135M),
every slot busy, over a cache of each given length, with the job's sampling.

    python benchmarks/decode_step.py [--slots 64] [--lengths 128 384 640] [--weights float32]
        [--kv_cache float32] [--steps 25]

Prints the median milliseconds a step over the given steps (the first two, which may compile
or warm caches, are dropped). Nothing is asserted; compare figures within one run or in
alternating runs on one machine.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from synthjax.generate.config import KV_CACHE_DTYPES
from synthjax.models.quantize import PRECISIONS


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--slots", type=int, default=64)
  p.add_argument("--lengths", type=int, nargs="+", default=[128, 384, 640])
  p.add_argument("--weights", choices=PRECISIONS, default="float32")
  p.add_argument("--kv_cache", choices=KV_CACHE_DTYPES, default=None)
  p.add_argument("--steps", type=int, default=25)
  args = p.parse_args()
  import results  # this folder is on the path
  from generate_throughput import job_sampling

  from synthjax import assets
  from synthjax.checkpoints import store
  from synthjax.generate.engine import Engine
  from synthjax.generate.job import resolve_generator
  from synthjax.models import quantize

  model_dir = resolve_generator(assets.EMBEDDED_GENERATOR)
  cfg = store.load_config(model_dir)
  params = store.load_params(model_dir, cfg)
  if args.weights != "float32":
    cfg, params = quantize.convert(cfg, params, args.weights)
  B = args.slots
  engine = Engine(
      cfg, params, eos_ids=[], slots=B, max_len=max(args.lengths), cache_dtype=args.kv_cache
  )
  s = job_sampling()
  sampling = (
      jnp.full((B,), s["temperature"]),
      jnp.zeros((B,), jnp.int32),
      jnp.full((B,), s["top_p"]),
      jnp.full((B,), s["repetition_penalty"]),
  )
  steps = {}  # "slots x positions" -> ms a step
  for length in args.lengths:
    engine.cache = engine._on_mesh(engine._resize, engine.cache, length)
    times = []
    for _ in range(args.steps + 2):
      t = time.perf_counter()
      engine.cache, engine.seen, out = engine._on_mesh(
          engine._decode,
          engine.params,
          engine.cache,
          engine.seen,
          jnp.zeros(B, jnp.int32),
          jnp.full(B, length - 10, jnp.int32),
          jnp.ones(B, bool),
          sampling,
          jnp.arange(B, dtype=jnp.uint32),
          jnp.zeros(B, jnp.int32),
          jnp.full(B, 100, jnp.int32),
      )
      jax.block_until_ready(out)
      times.append(time.perf_counter() - t)
    ms = 1000 * statistics.median(times[2:])
    steps[f"{B} slots x {length}"] = ms
    print(
        f"{args.weights} weights, {engine.cache[0]['k'].dtype} cache, {B} slots, {length} "
        f"positions: {ms:.1f} ms a step",
        flush=True,
    )

  results.append(
      "decode_step",
      {"weights": args.weights, "cache": str(engine.cache[0]["k"].dtype), "ms_a_step": steps},
  )


if __name__ == "__main__":
  main()
