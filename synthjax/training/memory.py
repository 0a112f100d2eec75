"""Will a training job fit in accelerator memory? Per-device bytes from abstract shapes, before
anything is allocated: parameters, gradients and optimizer state from the real model and
optimizer (jax.eval_shape, split by the mesh's sharding rules), activations from the layer's
shapes under the configured remat policy and attention form, and the output logits.

The activation figures count what the backward pass keeps (per layer, per token) plus one
layer's recompute and the logits; XLA's own temporaries and fragmentation are what the
`usable` fraction leaves room for. It is an estimate: a job near the line should be tried on
one slice before a sweep.
"""

import dataclasses
import math
from typing import Dict, Optional

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from synthjax import sharding
from synthjax.errors import UserError
from synthjax.models import attention
from synthjax.models.config import ModelConfig
from synthjax.models.llama import Transformer, abstract_params
from synthjax.training import optimizer as optimizer_lib

GIB = 2**30


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Slice:
  """The accelerators a job is meant for: e.g. a v4-64 is 32 chips of 32 GiB."""

  name: str = "this host"
  devices: int = 0  # 0: the devices of this process
  device_gib: float = 0.0  # 0: no limit known (CPU): report, never refuse
  platform: str = ""  # '', 'cpu', 'gpu' or 'tpu': which fused attention 'auto' means
  usable: float = 0.9  # of device_gib, the rest for XLA's temporaries


def _dtype_bytes(name: str) -> int:
  return jnp.dtype(name).itemsize


def _shard_bytes(abstract_tree, mesh_shape: Dict[str, int], rules) -> int:
  """Bytes one device holds of a boxed abstract tree laid out by the logical rules."""
  specs = nn.logical_to_mesh(nn.get_partition_spec(abstract_tree), rules)
  leaves = jax.tree.leaves(nn.unbox(abstract_tree))
  total = 0
  for spec, leaf in zip(
      jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)), leaves
  ):
    fitted = sharding.fit_spec(spec, leaf.shape, mesh_shape)
    split = math.prod(
        math.prod(mesh_shape[a] for a in ((ax,) if isinstance(ax, str) else ax))
        for ax in fitted
        if ax
    )
    total += leaf.size * leaf.dtype.itemsize // split
  return total


def _per_token_layer_bytes(
    cfg: ModelConfig, policy: str, form: str, seq_len: int, tensor: int
) -> tuple:
  """(bytes one layer keeps per token for the backward pass, bytes of one layer's full set of
  activations per token: what a recomputed layer holds while its gradient is taken)."""
  e = _dtype_bytes(cfg.dtype)
  heads, kv, mlp = cfg.H * cfg.Dh / tensor, cfg.K * cfg.Dh / tensor, cfg.F / tensor
  if form == "xla":  # f32 scores and probabilities, T of each per head and token
    scores = cfg.H / tensor * seq_len * (4 + e)
  else:  # fused or blocked: the log-sum-exp per head and token
    scores = cfg.H / tensor * 4
  everything = (7 * cfg.D + 3 * heads + 3 * kv + 4 * mlp) * e + scores
  kept = {
      "none": everything,
      "save_dots": (3 * cfg.D + heads + 2 * kv + 2 * mlp) * e,
      "save_attention": (cfg.D + 2 * heads + 2 * kv) * e,
      "full": cfg.D * e,
  }[policy]
  return kept, (0 if policy == "none" else everything)


def estimate(
    model_cfg: ModelConfig,
    opt_cfg: optimizer_lib.OptimizerConfig,
    batch_size: int,
    seq_len: int,
    grad_accum: int,
    mesh_shape: Dict[str, int],
    platform: str,
) -> dict:
  """Per-device bytes of each part of a training step (see the module's note)."""
  rules = sharding.logical_axis_rules()
  model = Transformer(model_cfg)
  tx = optimizer_lib.make(opt_cfg)

  def init_state(rng):
    params = model.init(rng, jnp.zeros((1, seq_len), jnp.int32))["params"]
    return params, tx.init(params)

  params, opt_state = jax.eval_shape(init_state, jax.random.key(0))
  param_bytes = _shard_bytes(params, mesh_shape, rules)
  data_parallel = mesh_shape.get("data", 1) * mesh_shape.get("fsdp", 1)
  tensor = mesh_shape.get("tensor", 1)
  rows = batch_size / data_parallel / grad_accum  # per device, per microbatch
  tokens = rows * seq_len
  form = attention.resolve(model_cfg.attention, platform or jax.default_backend(), model_cfg.dtype)
  kept, recompute = _per_token_layer_bytes(model_cfg, model_cfg.remat, form, seq_len, tensor)
  parts = {
      "parameters": param_bytes,
      # in the parameters' dtype; with microbatches, the accumulator too
      "gradients": param_bytes * (2 if grad_accum > 1 else 1),
      "optimizer state": _shard_bytes(opt_state, mesh_shape, rules),
      "activations": tokens * (model_cfg.L * kept + recompute),
      # f32 logits, their softmax and their gradient
      "logits": tokens * 3 * 4 * model_cfg.V / tensor,
  }
  return {
      "parts": {k: int(v) for k, v in parts.items()},
      "total": int(sum(parts.values())),
      "rows_per_device": rows,
      "attention": form,
      "remat": model_cfg.remat,
      "mesh": dict(mesh_shape),
  }


def check(
    model_cfg: ModelConfig,
    opt_cfg: optimizer_lib.OptimizerConfig,
    batch_size: int,
    seq_len: int,
    grad_accum: int,
    mesh_axes,
    target: Optional[Slice] = None,
) -> dict:
  """The estimate on the configured slice with its verdict: 'fits', 'too large' (with the
  cause named in 'reason') or 'unknown' (no device memory given)."""
  target = target or Slice()
  devices = target.devices or jax.device_count()
  mesh_shape = sharding.mesh_shape(mesh_axes, devices)
  plan = estimate(model_cfg, opt_cfg, batch_size, seq_len, grad_accum, mesh_shape, target.platform)
  plan.update(
      slice=target.name, device_gib=target.device_gib, total_gib=round(plan["total"] / GIB, 2)
  )
  if not target.device_gib:
    return dict(plan, verdict="unknown")
  limit = target.device_gib * target.usable * GIB
  if plan["total"] <= limit:
    return dict(plan, verdict="fits")
  largest, size = max(plan["parts"].items(), key=lambda kv: kv[1])
  hint = {
      "activations": "a remat policy that keeps less, or grad_accum",
      "logits": "grad_accum (fewer rows per microbatch)",
      "optimizer state": "more fsdp shards",
      "parameters": "more fsdp shards",
      "gradients": "more fsdp shards",
  }[largest]
  reason = (
      f"{model_cfg.name} needs {plan['total'] / GIB:.1f} GiB per device on {target.name} "
      f"(mesh {plan['mesh']}), more than {target.usable:.0%} of its {target.device_gib:g} "
      f"GiB; the largest part is {largest}, {size / GIB:.1f} GiB: try {hint}"
  )
  return dict(plan, verdict="too large", reason=reason)


def generator_bytes(cfg: ModelConfig, slots: int, max_len: int, mesh_shape: Dict[str, int]) -> dict:
  """Per-device bytes of a generator (from abstract shapes, split by the sharding rules) and its
  KV cache (slots over the data axes, kv heads over "tensor")."""
  rules = sharding.logical_axis_rules()
  params = abstract_params(cfg)
  kv_spec = nn.logical_to_mesh_axes(("batch", "kv_heads", "length", "head_dim"), rules)
  kv_shape = (slots, cfg.K, max_len, cfg.Dh)
  split = 1  # how many devices share the cache: the product of its mesh axes' sizes
  for ax in sharding.fit_spec(kv_spec or P(), kv_shape, mesh_shape):
    for a in (ax,) if isinstance(ax, str) else (ax or ()):
      split *= mesh_shape[a]
  cache = 2 * cfg.L * math.prod(kv_shape) * _dtype_bytes(cfg.dtype) // split
  weights = _shard_bytes(params, mesh_shape, rules)
  return {"weights": weights, "kv cache": cache, "total": weights + cache}


def require_fit(plan: dict) -> None:
  if plan["verdict"] == "too large":
    raise UserError(plan["reason"])
