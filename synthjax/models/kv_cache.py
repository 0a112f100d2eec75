"""The KV cache decoding writes and attends over: one {"k", "v"} dict of arrays per layer,
[batch, kv heads, ...] with the cached positions along the "length" axis.

Its layout follows ModelConfig.decode_attention:
  dense   keys BxKxDhxS, values BxKxSxDh. Both attention products then take their cached
          operand as a plain [contracted, kept] matrix; on XLA:CPU the f32 scores product over
          keys stored BxKxSxDh ran 2-3x slower (measured: 30 layers, 32 rows, 960 positions,
          104-146 ms against 35-38 ms; bf16 about the same either way). A decode step attends
          over every cached position, the ones past a row's length masked.
  ragged  keys and values BxKxSxDh, as JAX's Pallas GPU decode-attention kernel reads them: a
          decode step reads each row's keys and values only up to that row's own length, so
          short rows do not pay for the longest (serving engines' ragged attention). Elsewhere
          Pallas interprets the kernel (tests only, slowly). Prefill and draft checks (more
          than one new token a row) attend as `dense` does.
"""

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from synthjax.models.config import ModelConfig
from synthjax.models.matmul import dot

RAGGED_MULTIPLE = 16  # the kernel reads a ragged cache in blocks of 16 positions or more


def axes(cfg: ModelConfig) -> dict:
  """The logical axes of a layer's keys and values."""
  positions_last = ("batch", "kv_heads", "head_dim", "length")
  positions_third = ("batch", "kv_heads", "length", "head_dim")
  return {
      "k": positions_last if cfg.decode_attention == "dense" else positions_third,
      "v": positions_third,
  }


def length_axis(cfg: ModelConfig) -> dict:
  """The axis of the keys ("k") and values ("v") that holds the cached positions."""
  return {name: names.index("length") for name, names in axes(cfg).items()}


def init(cfg: ModelConfig, batch: int, length: int, dtype=None):
  """An empty cache of `length` positions (dtype: the model's compute dtype by default)."""
  dtype = dtype or jnp.dtype(cfg.dtype)
  sizes = {"batch": batch, "kv_heads": cfg.K, "head_dim": cfg.Dh, "length": length}
  layer = axes(cfg)
  return [
      {name: jnp.zeros(tuple(sizes[a] for a in layer[name]), dtype) for name in ("k", "v")}
      for _ in range(cfg.L)
  ]


def length(cache) -> int:
  """Positions a cache holds (values keep them on axis 2 in every layout)."""
  return cache[0]["v"].shape[2]


def write(c, new_BxTxKxDh, start_B, axis: int):
  """The cache array `c` with each row's T new keys or values written from its offset on
  (`axis`: where `c` keeps the positions). A decode step's one entry goes into a 16-bit cache
  as a select over the cache: XLA:CPU runs a scatter into a bf16 cache by converting the whole
  cache to f32 and back, most of a bf16 decode step (measured). Into an f32 cache the scatter
  is the faster."""
  new = new_BxTxKxDh.astype(c.dtype)
  new = new.transpose(0, 2, 3, 1) if axis == 3 else new.swapaxes(1, 2)  # the cache's layout
  if new.shape[axis] == 1 and c.dtype.itemsize == 2:
    hit = jnp.arange(c.shape[axis])[None] == start_B[:, None]
    hit = hit[:, None, None, :] if axis == 3 else hit[:, None, :, None]
    return jnp.where(hit, new, c)

  def write_row(c_row, new_row, start):
    return jax.lax.dynamic_update_slice_in_dim(c_row, new_row, start, axis=axis - 1)

  return jax.vmap(write_row)(c, new, start_B)


def attend(q_BxTxHxDh, k, v, mask_BxTxS, cfg: ModelConfig):
  """Attention of T new queries per row over the cache (after this step's keys and values were
  written), under `mask_BxTxS`. A decode step (T = 1) is written without the unit T dimension
  and masks by adding a bias: on XLA:CPU either one alone makes a step's attention several
  times slower."""
  B, T, H, Dh = q_BxTxHxDh.shape
  K = k.shape[1]
  keys = "bkds" if cfg.decode_attention == "dense" else "bksd"
  q = q_BxTxHxDh.astype(k.dtype)  # in the cache's dtype: converting a cache costs a pass over it
  if T == 1:
    q_BxKxGxDh = q.reshape(B, K, H // K, Dh)
    if cfg.decode_attention == "ragged":
      # a decode step's mask is each row's first `length` positions (none for an idle row)
      out = _ragged_decode(q_BxKxGxDh, k, v, jnp.sum(mask_BxTxS[:, 0], axis=-1, dtype=jnp.int32))
      return out.reshape(B, 1, H, Dh).astype(q_BxTxHxDh.dtype)
    bias_Bx1x1xS = jnp.where(mask_BxTxS[:, 0], 0.0, -1e30).astype(jnp.float32)[:, None, None]
    scores = dot(f"{keys},bkgd->bkgs", k, q_BxKxGxDh, jnp.float32)
    probs = jax.nn.softmax(scores / math.sqrt(Dh) + bias_Bx1x1xS, axis=-1).astype(v.dtype)
    out = dot("bkgs,bksd->bkgd", probs, v).reshape(B, 1, H, Dh)
    return out.astype(q_BxTxHxDh.dtype)
  q_BxKxGxTxDh = q.reshape(B, T, K, H // K, Dh).transpose(0, 2, 3, 1, 4)
  scores = dot(f"bkgtd,{keys}->bkgts", q_BxKxGxTxDh, k, jnp.float32)
  scores = jnp.where(mask_BxTxS[:, None, None], scores / math.sqrt(Dh), jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = dot("bkgts,bksd->bkgtd", probs, v)
  return out.transpose(0, 3, 1, 2, 4).reshape(B, T, H, Dh).astype(q_BxTxHxDh.dtype)


def _ragged_decode(q_BxKxGxDh, k_BxKxSxDh, v_BxKxSxDh, lengths_B):
  """One query group per (row, kv head) over that row's first lengths_B[b] cached positions,
  by the Pallas GPU decode kernel. Rows and kv heads are flattened into the kernel's batch
  (a free reshape of this layout; `decode_attention.gqa` takes BxSxKxDh and would copy the
  whole cache every step). Run per shard: rows over the data axes, kv heads over "tensor"."""
  from jax.experimental.pallas.ops.gpu import decode_attention

  S, Dh = k_BxKxSxDh.shape[2:]
  block = next(b for b in (128, 64, 32, RAGGED_MULTIPLE) if S % b == 0)
  kernel = functools.partial(
      decode_attention.mqa,
      sm_scale=1 / math.sqrt(Dh),
      block_k=block,
      k_splits=math.gcd(S // block, 16),  # stretches of the positions run in parallel
      interpret=jax.default_backend() != "gpu",
  )

  def per_shard(q, k, v, lengths):
    B, K, G, _ = q.shape
    flat = lambda x: x.reshape(B * K, *x.shape[2:])
    out = kernel(flat(q), flat(k), flat(v), kv_seq_len=jnp.repeat(lengths, K))
    return out.reshape(B, K, G, Dh)

  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return per_shard(q_BxKxGxDh, k_BxKxSxDh, v_BxKxSxDh, lengths_B)
  B, K = k_BxKxSxDh.shape[:2]
  rows = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names)
  rows_split = rows if B % math.prod(mesh.shape[a] for a in rows) == 0 else ()
  heads = "tensor" if "tensor" in mesh.axis_names and K % mesh.shape["tensor"] == 0 else None
  spec = P(rows_split or None, heads)
  return jax.shard_map(
      per_shard,
      mesh=mesh,
      in_specs=(spec, spec, spec, P(rows_split or None)),
      out_specs=spec,
      check_vma=False,
  )(q_BxKxGxDh, k_BxKxSxDh, v_BxKxSxDh, lengths_B)
