"""The one mapping between Hugging Face Llama-family tensor names/layouts and synthjax params.

HF stores linear weights as (out, in); synthjax stores kernels as (in, ..., out) with heads
split out. GGUF import renames its tensors to HF names first and then comes through here too.
"""

from typing import Dict, List

import jax.numpy as jnp
import numpy as np

from synthjax.errors import UserError
from synthjax.models.config import ModelConfig


def expected_hf_shapes(cfg: ModelConfig) -> Dict[str, tuple]:
  shapes = {"model.embed_tokens.weight": (cfg.V, cfg.D), "model.norm.weight": (cfg.D,)}
  if not cfg.tie_embeddings:
    shapes["lm_head.weight"] = (cfg.V, cfg.D)
  for i in range(cfg.L):
    p = f"model.layers.{i}."
    shapes.update(
        {
            p + "input_layernorm.weight": (cfg.D,),
            p + "post_attention_layernorm.weight": (cfg.D,),
            p + "self_attn.q_proj.weight": (cfg.H * cfg.Dh, cfg.D),
            p + "self_attn.k_proj.weight": (cfg.K * cfg.Dh, cfg.D),
            p + "self_attn.v_proj.weight": (cfg.K * cfg.Dh, cfg.D),
            p + "self_attn.o_proj.weight": (cfg.D, cfg.H * cfg.Dh),
            p + "mlp.gate_proj.weight": (cfg.F, cfg.D),
            p + "mlp.up_proj.weight": (cfg.F, cfg.D),
            p + "mlp.down_proj.weight": (cfg.D, cfg.F),
        }
    )
    if cfg.qkv_bias:
      shapes.update(
          {
              p + "self_attn.q_proj.bias": (cfg.H * cfg.Dh,),
              p + "self_attn.k_proj.bias": (cfg.K * cfg.Dh,),
              p + "self_attn.v_proj.bias": (cfg.K * cfg.Dh,),
          }
      )
  return shapes


def check_tensors(cfg: ModelConfig, shapes: Dict[str, tuple], source: str) -> None:
  """Every expected tensor present with its expected shape, nothing unexplained left over."""
  expected = expected_hf_shapes(cfg)
  missing = sorted(set(expected) - set(shapes))
  if missing:
    raise UserError(
        f"{source}: missing tensor {missing[0]!r}"
        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    )
  for name, shape in expected.items():
    if tuple(shapes[name]) != shape:
      raise UserError(
          f"{source}: tensor {name!r} has shape {tuple(shapes[name])}, "
          f"expected {shape} for this config"
      )
  ignorable = ("rotary_emb.inv_freq",)
  extra = sorted(
      n
      for n in set(shapes) - set(expected)
      if not n.endswith(ignorable) and not (cfg.tie_embeddings and n == "lm_head.weight")
  )
  if extra:
    raise UserError(
        f"{source}: unexpected tensor {extra[0]!r} (not part of a {cfg.name} "
        f"Llama-family model)"
    )


def _layer_from_hf(cfg: ModelConfig, get, i: int) -> dict:
  p = f"model.layers.{i}."
  D, H, K, Dh = cfg.D, cfg.H, cfg.K, cfg.Dh
  attn = {
      "q": get(p + "self_attn.q_proj.weight").T.reshape(D, H, Dh),
      "k": get(p + "self_attn.k_proj.weight").T.reshape(D, K, Dh),
      "v": get(p + "self_attn.v_proj.weight").T.reshape(D, K, Dh),
      "o": get(p + "self_attn.o_proj.weight").T.reshape(H, Dh, D),
  }
  if cfg.qkv_bias:
    attn["q_bias"] = get(p + "self_attn.q_proj.bias").reshape(H, Dh)
    attn["k_bias"] = get(p + "self_attn.k_proj.bias").reshape(K, Dh)
    attn["v_bias"] = get(p + "self_attn.v_proj.bias").reshape(K, Dh)
  return {
      "attn_norm": {"scale": get(p + "input_layernorm.weight")},
      "attn": attn,
      "mlp_norm": {"scale": get(p + "post_attention_layernorm.weight")},
      "mlp": {
          "gate": get(p + "mlp.gate_proj.weight").T,
          "up": get(p + "mlp.up_proj.weight").T,
          "down": get(p + "mlp.down_proj.weight").T,
      },
  }


def params_from_hf(cfg: ModelConfig, get) -> dict:
  """Build the synthjax param tree; `get(name)` returns one HF tensor as a numpy array."""
  dtype = jnp.dtype(cfg.param_dtype)

  def fetch(name):
    return np.asarray(get(name)).astype(dtype)

  layers = [_layer_from_hf(cfg, fetch, i) for i in range(cfg.L)]
  params = {
      "embed": fetch("model.embed_tokens.weight"),
      "final_norm": {"scale": fetch("model.norm.weight")},
  }
  if not cfg.tie_embeddings:
    params["lm_head"] = fetch("lm_head.weight").T
  params.update(stack_layers(cfg, layers))
  return params


def stack_layers(cfg: ModelConfig, layers: List[dict]) -> dict:
  """Per-layer trees -> the model's layout (`layers_i`, or one stacked `layers` when scanned)."""
  if not cfg.scan_layers:
    return {f"layers_{i}": layer for i, layer in enumerate(layers)}
  import jax

  return {"layers": {"block": jax.tree.map(lambda *xs: np.stack(xs), *layers)}}


def unstack_layers(cfg: ModelConfig, params: dict) -> List[dict]:
  if not cfg.scan_layers:
    return [params[f"layers_{i}"] for i in range(cfg.L)]
  import jax

  stacked = params["layers"]["block"]
  return [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(cfg.L)]


def params_to_hf(cfg: ModelConfig, params: dict) -> Dict[str, np.ndarray]:
  """The inverse of params_from_hf: HF tensor names -> (out, in) arrays."""
  out = {
      "model.embed_tokens.weight": np.asarray(params["embed"]),
      "model.norm.weight": np.asarray(params["final_norm"]["scale"]),
  }
  if not cfg.tie_embeddings:
    out["lm_head.weight"] = np.asarray(params["lm_head"]).T
  D, H, K, Dh = cfg.D, cfg.H, cfg.K, cfg.Dh
  for i, layer in enumerate(unstack_layers(cfg, params)):
    p = f"model.layers.{i}."
    a, m = layer["attn"], layer["mlp"]
    out[p + "input_layernorm.weight"] = np.asarray(layer["attn_norm"]["scale"])
    out[p + "post_attention_layernorm.weight"] = np.asarray(layer["mlp_norm"]["scale"])
    out[p + "self_attn.q_proj.weight"] = np.asarray(a["q"]).reshape(D, H * Dh).T
    out[p + "self_attn.k_proj.weight"] = np.asarray(a["k"]).reshape(D, K * Dh).T
    out[p + "self_attn.v_proj.weight"] = np.asarray(a["v"]).reshape(D, K * Dh).T
    out[p + "self_attn.o_proj.weight"] = np.asarray(a["o"]).reshape(H * Dh, D).T
    if cfg.qkv_bias:
      for n in ("q", "k", "v"):
        out[p + f"self_attn.{n}_proj.bias"] = np.asarray(a[f"{n}_bias"]).reshape(-1)
    out[p + "mlp.gate_proj.weight"] = np.asarray(m["gate"]).T
    out[p + "mlp.up_proj.weight"] = np.asarray(m["up"]).T
    out[p + "mlp.down_proj.weight"] = np.asarray(m["down"]).T
  return {k: np.ascontiguousarray(v) for k, v in out.items()}
