"""The floor of a decode step: the generator's weight products alone, for a batch of rows.

    python benchmarks/products_floor.py [--model smollm2_135m] [--rows 32 64] [--repeats 3]

One jitted program holds every layer's q, k, v, output and MLP products and the output layer,
in f32, with random weights of the preset's shape and nothing else (no attention, norms or
sampling). Prints its median time, its GFLOP/s and that as a fraction of the f32 matmul peak
measured just after it (2048^3, as generate_throughput.py measures it): no decode step of this
model on this device can be a larger fraction of the peak. Nothing is asserted; the peak itself
moves by 10% between runs here, so each row's fraction uses the peak measured beside it.
"""

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results  # noqa: E402
from train_throughput import matmul_peak_flops  # noqa: E402


def weights(cfg, seed=0):
  rng = np.random.default_rng(seed)
  w = lambda *shape: jnp.asarray(rng.normal(size=shape) * 0.02, jnp.float32)
  layers = [
      dict(
          q=w(cfg.D, cfg.H * cfg.Dh),
          k=w(cfg.D, cfg.K * cfg.Dh),
          v=w(cfg.D, cfg.K * cfg.Dh),
          o=w(cfg.H * cfg.Dh, cfg.D),
          gate=w(cfg.D, cfg.F),
          up=w(cfg.D, cfg.F),
          down=w(cfg.F, cfg.D),
      )
      for _ in range(cfg.L)
  ]
  return layers, w(cfg.V, cfg.D)


@jax.jit
def products(x, layers, embedding):
  for p in layers:
    q, k, v = x @ p["q"], x @ p["k"], x @ p["v"]
    mlp = ((x @ p["gate"]) * (x @ p["up"])) @ p["down"]
    # k and v feed the next layer's input so that XLA keeps their products
    x = x + q @ p["o"] + mlp + 1e-6 * (k.sum() + v.sum())
  return x @ embedding.T


def main():
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--model", default="smollm2_135m", help="a gin_configs/models preset")
  p.add_argument("--rows", type=int, nargs="+", default=[32, 64])
  p.add_argument("--repeats", type=int, default=15)
  args = p.parse_args()
  from synthjax import gin_cli
  from synthjax.models.config import ModelConfig
  from synthjax.models.flops import decode_flops_per_token

  gin_cli.parse([f"models/{args.model}.gin"])
  cfg = ModelConfig()
  layers, embedding = weights(cfg)
  floors = {}
  for rows in args.rows:
    x = jnp.ones((rows, cfg.D), jnp.float32)
    products(x, layers, embedding).block_until_ready()
    times = []
    for _ in range(args.repeats):
      t = time.perf_counter()
      products(x, layers, embedding).block_until_ready()
      times.append(time.perf_counter() - t)
    seconds, peak = statistics.median(times), matmul_peak_flops()
    flops = rows * decode_flops_per_token(cfg)
    floors[f"{rows} rows"] = {"ms": 1000 * seconds, "of_peak": flops / seconds / peak}
    print(
        f"{args.model}, {rows} rows: weight products {1000 * seconds:.1f} ms, "
        f"{flops / seconds / 1e9:.0f} GFLOP/s; f32 peak {peak / 1e9:.0f} GFLOP/s (2N of "
        f"{rows} tokens at the peak: {1000 * flops / peak:.1f} ms); the products run at "
        f"{flops / seconds / peak:.1%} of the peak",
        flush=True,
    )

  results.append("products_floor", {"model": args.model, **floors})


if __name__ == "__main__":
  main()
