"""Weights for generation in another precision: bf16, or int8 with one scale per output channel
(symmetric, round to nearest), the layout `ModelConfig.weights = 'int8'` reads."""

import jax.numpy as jnp

from synthjax.models.config import ModelConfig

# Layer matmul weights by name, and how many leading dims each contracts over (the rest are
# its output channels).
FAN_IN_DIMS = {"q": 1, "k": 1, "v": 1, "o": 2, "gate": 1, "up": 1, "down": 1}
PRECISIONS = ("float32", "bfloat16", "int8")


def quantize_int8(w, fan_in_dims: int):
  """(int8 weights, f32 scale per output channel) with w ~ int8 * scale."""
  w = jnp.asarray(w, jnp.float32)
  absmax = jnp.max(jnp.abs(w), axis=tuple(range(fan_in_dims)))
  scale = jnp.where(absmax > 0, absmax / 127.0, 1.0)
  return jnp.clip(jnp.round(w / scale), -127, 127).astype(jnp.int8), scale


def convert(cfg: ModelConfig, params, precision: str):
  """(config, params) for generation in `precision`: float32; bfloat16 (weights and compute,
  so the KV cache too); or int8 (layer matmul weights int8, everything else bf16)."""
  if precision not in PRECISIONS:
    raise ValueError(f"weights precision must be one of {PRECISIONS}, got {precision!r}")
  if cfg.weights == "int8":
    raise ValueError("these weights are int8 already")
  dtype = "float32" if precision == "float32" else "bfloat16"
  new_cfg = cfg.replace(
      dtype=dtype, param_dtype=dtype, weights="int8" if precision == "int8" else "float"
  )

  def walk(tree):
    out = {}
    for name, value in tree.items():
      if isinstance(value, dict):
        out[name] = walk(value)
      elif precision == "int8" and name in FAN_IN_DIMS:
        out[name], out[f"{name}_scale"] = quantize_int8(value, FAN_IN_DIMS[name])
      else:
        out[name] = jnp.asarray(value).astype(dtype)
    return out

  return new_cfg, walk(params)
