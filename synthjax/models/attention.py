"""Self-attention over a whole (packed) sequence, behind one switch: ModelConfig.attention.

  xla      scores materialized in f32 (B x H x T x T per layer); the reference
  blocked  flash-style blocks in plain JAX with a hand-written backward pass: never holds more
           than one block x block score tile, skips tiles above the causal diagonal, saves only
           the output and the log-sum-exp for the backward pass; runs anywhere
  cudnn    jax.nn.dot_product_attention's fused cuDNN kernel (GPU)
  splash   the Pallas splash-attention kernel (TPU; elsewhere interpreted, for tests only)
  auto     cudnn on GPU (bf16/f16; blocked for f32, which cuDNN does not take), splash on TPU,
           xla on CPU

Every form takes the layer's queries [B, T, H, Dh] and keys/values [B, T, K, Dh] (grouped
query attention when K < H) with the tokens' positions and segment ids [B, T]: a token sees the
tokens of its own segment at positions up to its own; segment id 0 is padding and is seen by
none. Queries and keys are the same tokens (training and prefill without a cache), so a key
after its query in the row is never seen: tiles above the diagonal can be skipped.
"""

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "xla", "blocked", "cudnn", "splash")
_MASKED = -1e30  # not -inf: a row with nothing to see must not make NaNs


def resolve(implementation: str, platform: Optional[str] = None, dtype: str = "bfloat16") -> str:
  """The form `auto` stands for on a platform (the default backend's when not given) for
  activations of `dtype`."""
  if implementation != "auto":
    return implementation
  platform = platform or jax.default_backend()
  if platform in ("gpu", "cuda"):
    return "cudnn" if dtype in ("bfloat16", "float16") else "blocked"
  return {"tpu": "splash"}.get(platform, "xla")


def self_attention(
    q_BxTxHxDh,
    k_BxTxKxDh,
    v_BxTxKxDh,
    positions_BxT,
    segment_ids_BxT,
    implementation: str = "xla",
    block: int = 512,
):
  implementation = resolve(implementation, dtype=jnp.dtype(q_BxTxHxDh.dtype).name)
  if implementation == "xla":
    return _xla(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, positions_BxT, segment_ids_BxT)
  if implementation == "blocked":
    return _blocked(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, positions_BxT, segment_ids_BxT, block)
  if implementation == "cudnn":
    return _cudnn(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, positions_BxT, segment_ids_BxT)
  if implementation == "splash":
    return _splash(q_BxTxHxDh, k_BxTxKxDh, v_BxTxKxDh, segment_ids_BxT, block)
  raise ValueError(
      f"ModelConfig.attention must be one of {IMPLEMENTATIONS}, got {implementation!r}"
  )


def mask(q_positions, q_segments, kv_positions, kv_segments):
  """[..., Tq, Tk]: causal within a segment, padding (segment 0) never seen."""
  causal = q_positions[..., :, None] >= kv_positions[..., None, :]
  same = q_segments[..., :, None] == kv_segments[..., None, :]
  return causal & same & (kv_segments[..., None, :] != 0)


def _xla(q, k, v, positions, segments):
  B, T, H, Dh = q.shape
  K = k.shape[2]
  q_BxTxKxGxDh = q.reshape(B, T, K, H // K, Dh)
  scores = jnp.einsum("btkgd,bskd->bkgts", q_BxTxKxGxDh, k.astype(q.dtype))
  scores = scores.astype(jnp.float32) / math.sqrt(Dh)
  visible_BxTxS = mask(positions, segments, positions, segments)
  scores = jnp.where(visible_BxTxS[:, None, None], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  return jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(B, T, H, Dh)


# --- blocked ---------------------------------------------------------------------------------
# Inside: q [B, K, G, T, Dh], k and v [B, K, T, Dh], per-token positions and segments [B, T].


def _blocked(q, k, v, positions, segments, block):
  B, T, H, Dh = q.shape
  K = k.shape[2]
  size = math.gcd(T, block)  # tiles must divide the row
  q_in = q.reshape(B, T, K, H // K, Dh).transpose(0, 2, 3, 1, 4)
  out = _flash(q_in, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), positions, segments, size)
  return out.transpose(0, 3, 1, 2, 4).reshape(B, T, H, Dh)


def _tile(x, i, size, axis):
  return jax.lax.dynamic_slice_in_dim(x, i * size, size, axis)


def _tile_scores(q_i, k_j, pos, seg, i, j, size):
  """Scaled f32 scores of query tile i against key tile j and which of them are visible."""
  s = jnp.einsum("bkgtd,bksd->bkgts", q_i, k_j, preferred_element_type=jnp.float32)
  s = s / math.sqrt(q_i.shape[-1])
  visible = mask(
      _tile(pos, i, size, 1), _tile(seg, i, size, 1), _tile(pos, j, size, 1), _tile(seg, j, size, 1)
  )[:, None, None]
  return s, visible


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _flash(q, k, v, positions, segments, size):
  return _flash_forward(q, k, v, positions, segments, size)[0]


def _flash_forward(q, k, v, positions, segments, size):
  B, K, G, T, Dh = q.shape
  tiles = T // size

  def query_tile(i):
    q_i = _tile(q, i, size, 3)

    def key_tile(j, carry):
      m, l, acc = carry
      s, visible = _tile_scores(q_i, _tile(k, j, size, 2), positions, segments, i, j, size)
      m_new = jnp.maximum(m, jnp.max(jnp.where(visible, s, _MASKED), axis=-1))
      p = jnp.where(visible, jnp.exp(s - m_new[..., None]), 0.0)
      correction = jnp.exp(m - m_new)
      pv = jnp.einsum(
          "bkgts,bksd->bkgtd",
          p.astype(v.dtype),
          _tile(v, j, size, 2),
          preferred_element_type=jnp.float32,
      )
      return m_new, l * correction + p.sum(-1), acc * correction[..., None] + pv

    init = (
        jnp.full((B, K, G, size), _MASKED, jnp.float32),
        jnp.zeros((B, K, G, size), jnp.float32),
        jnp.zeros((B, K, G, size, Dh), jnp.float32),
    )
    m, l, acc = jax.lax.fori_loop(0, i + 1, key_tile, init)  # tiles past i: all causal-masked
    seen = l > 0
    out = jnp.where(seen[..., None], acc / jnp.where(seen, l, 1.0)[..., None], 0.0)
    lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), 0.0)
    return out.astype(q.dtype), lse

  out, lse = jax.lax.map(query_tile, jnp.arange(tiles))  # [tiles, B, K, G, size, ...]
  out = jnp.moveaxis(out, 0, 3).reshape(B, K, G, T, Dh)
  lse = jnp.moveaxis(lse, 0, 3).reshape(B, K, G, T)
  return out, (q, k, v, positions, segments, out, lse)


def _flash_backward(size, residuals, d_out):
  q, k, v, positions, segments, out, lse = residuals
  B, K, G, T, Dh = q.shape
  tiles = T // size
  scale = 1.0 / math.sqrt(Dh)
  delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)  # [B,K,G,T]

  def key_tile(j, grads):
    dq, dk, dv = grads
    k_j, v_j = _tile(k, j, size, 2), _tile(v, j, size, 2)

    def query_tile(i, carry):
      dq, dk_j, dv_j = carry
      q_i, do_i = _tile(q, i, size, 3), _tile(d_out, i, size, 3)
      s, visible = _tile_scores(q_i, k_j, positions, segments, i, j, size)
      p = jnp.where(visible, jnp.exp(s - _tile(lse, i, size, 3)[..., None]), 0.0)
      dv_j += jnp.einsum(
          "bkgts,bkgtd->bksd", p.astype(do_i.dtype), do_i, preferred_element_type=jnp.float32
      )
      dp = jnp.einsum("bkgtd,bksd->bkgts", do_i, v_j, preferred_element_type=jnp.float32)
      ds = (p * (dp - _tile(delta, i, size, 3)[..., None]) * scale).astype(q.dtype)
      dq_i = _tile(dq, i, size, 3) + jnp.einsum(
          "bkgts,bksd->bkgtd", ds, k_j, preferred_element_type=jnp.float32
      )
      dq = jax.lax.dynamic_update_slice_in_dim(dq, dq_i, i * size, 3)
      dk_j += jnp.einsum("bkgts,bkgtd->bksd", ds, q_i, preferred_element_type=jnp.float32)
      return dq, dk_j, dv_j

    zeros = jnp.zeros((B, K, size, Dh), jnp.float32)
    dq, dk_j, dv_j = jax.lax.fori_loop(j, tiles, query_tile, (dq, zeros, zeros))
    dk = jax.lax.dynamic_update_slice_in_dim(dk, dk_j, j * size, 2)
    dv = jax.lax.dynamic_update_slice_in_dim(dv, dv_j, j * size, 2)
    return dq, dk, dv

  init = (
      jnp.zeros(q.shape, jnp.float32),
      jnp.zeros(k.shape, jnp.float32),
      jnp.zeros(v.shape, jnp.float32),
  )
  dq, dk, dv = jax.lax.fori_loop(0, tiles, key_tile, init)
  return (dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None, None)


_flash.defvjp(_flash_forward, _flash_backward)


# --- fused kernels ---------------------------------------------------------------------------


def _cudnn(q, k, v, positions, segments):
  visible_Bx1xTxS = mask(positions, segments, positions, segments)[:, None]
  return jax.nn.dot_product_attention(q, k, v, mask=visible_Bx1xTxS, implementation="cudnn")


def _splash(q, k, v, segments, block):
  """The TPU kernel, run per shard: batch over the data axes, heads over "tensor"."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
  from jax.sharding import PartitionSpec as P

  B, T, H, Dh = q.shape
  G = H // k.shape[2]
  size = math.gcd(T, block)
  interpret = jax.default_backend() != "tpu"  # elsewhere Pallas interprets it (tests, slowly)
  sizes = sk.BlockSizes(
      block_q=size,
      block_kv=size,
      block_kv_compute=size,
      block_q_dkv=size,
      block_kv_dkv=size,
      block_kv_dkv_compute=size,
      block_q_dq=size,
      block_kv_dq=size,
  )

  def per_shard(q, k, v, segments):
    heads = q.shape[2]
    kernel = sk.make_splash_mha(
        sm.MultiHeadMask([sm.CausalMask((T, T))] * heads),
        block_sizes=sizes,
        head_shards=1,
        q_seq_shards=1,
        interpret=interpret,
    )
    # The kernel takes [H, T, Dh] per row, queries pre-scaled, one key head per query head.
    qs = (q / math.sqrt(Dh)).transpose(0, 2, 1, 3)
    ks = jnp.repeat(k, G, axis=2).transpose(0, 2, 1, 3)
    vs = jnp.repeat(v, G, axis=2).transpose(0, 2, 1, 3)
    out = jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=sk.SegmentIds(s, s)))(
        qs, ks, vs, segments
    )
    return out.transpose(0, 2, 1, 3)

  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return per_shard(q, k, v, segments)
  batch = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names) or None
  heads = "tensor" if "tensor" in mesh.axis_names else None
  return jax.shard_map(
      per_shard,
      mesh=mesh,
      in_specs=(P(batch, None, heads), P(batch, None, heads), P(batch, None, heads), P(batch)),
      out_specs=P(batch, None, heads),
      check_vma=False,
  )(q, k, v, segments)
