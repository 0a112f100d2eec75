"""A Flax Linen decoder of the Llama family (Llama 2/3, Mistral, Qwen2, SmolLM2).

RMSNorm, rotate-half RoPE (optionally Llama-3 scaled), grouped-query attention, SwiGLU MLP,
tied or untied embeddings, optional q/k/v bias. Every parameter carries logical axis names
and key activations are constrained by logical name, so `synthjax.sharding` alone decides
how they are laid out on a mesh.

Shape suffixes: B batch, T sequence, S cached sequence, D model, H query heads,
K kv heads, G = H // K query heads per kv head, Dh head dim, F mlp, V vocab.

Decoding uses an explicit KV cache (a dict of arrays per layer the caller owns; its layout,
writes and attention in kv_cache.py) so the generation engine keeps static shapes and can
refill batch slots independently.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from synthjax.models import attention, kv_cache, remat
from synthjax.models.config import ModelConfig
from synthjax.models.matmul import dot

constrain = nn.with_logical_constraint


def _dtype(name: str):
  return jnp.dtype(name)


def rope_frequencies(cfg: ModelConfig) -> jax.Array:
  """Inverse frequencies of rotate-half RoPE, with Llama-3 scaling when configured."""
  inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, cfg.Dh, 2, dtype=jnp.float32) / cfg.Dh))
  if cfg.rope_scaling_factor is None:
    return inv_freq
  # Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, a smooth ramp between.
  factor = cfg.rope_scaling_factor
  low_wavelen = cfg.rope_original_max_len / cfg.rope_low_freq_factor
  high_wavelen = cfg.rope_original_max_len / cfg.rope_high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  scaled = jnp.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
  ramp = (cfg.rope_original_max_len / wavelen - cfg.rope_low_freq_factor) / (
      cfg.rope_high_freq_factor - cfg.rope_low_freq_factor
  )
  smoothed = (1 - ramp) * scaled / factor + ramp * scaled
  medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
  return jnp.where(medium, smoothed, scaled)


def apply_rope(x_BxTxNxDh: jax.Array, positions_BxT: jax.Array, inv_freq: jax.Array) -> jax.Array:
  angles_BxTxHalf = positions_BxT[..., None].astype(jnp.float32) * inv_freq
  cos = jnp.cos(angles_BxTxHalf)[:, :, None, :]
  sin = jnp.sin(angles_BxTxHalf)[:, :, None, :]
  x = x_BxTxNxDh.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxTxNxDh.dtype)


class RMSNorm(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD):
    scale_D = self.param(
        "scale",
        nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
        (self.cfg.D,),
        _dtype(self.cfg.param_dtype),
    )
    x = x_BxTxD.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.cfg.rms_eps)
    return (x * scale_D.astype(jnp.float32)).astype(_dtype(self.cfg.dtype))


def _kernel(module: nn.Module, name: str, shape, axes, fan_in: int):
  """A weight in the compute dtype. With int8 weights (generation) it is stored as int8 with one
  f32 scale per output channel (`<name>_scale`, over the dims after the fan-in ones) and
  dequantized here, one layer at a time."""
  cfg = module.cfg
  if cfg.weights == "int8":
    n_in = next(n for n in range(1, len(shape) + 1) if math.prod(shape[:n]) == fan_in)
    w = module.param(
        name, nn.with_logical_partitioning(nn.initializers.zeros, axes), shape, jnp.int8
    )
    scale = module.param(
        f"{name}_scale",
        nn.with_logical_partitioning(nn.initializers.ones, axes[n_in:]),
        shape[n_in:],
        jnp.float32,
    )
    # flax types a param by its boxed initializer; under nn.unbox-ing apply it is the array
    return w.astype(_dtype(cfg.dtype)) * scale.astype(_dtype(cfg.dtype))  # type: ignore[attr-defined]
  init = nn.initializers.normal(stddev=1.0 / math.sqrt(fan_in))
  w = module.param(name, nn.with_logical_partitioning(init, axes), shape, _dtype(cfg.param_dtype))
  return w.astype(_dtype(cfg.dtype))  # type: ignore[attr-defined]


class Attention(nn.Module):
  """Self-attention. Without a cache it attends within the row's segments (positions and
  segment ids); with one it writes this step's keys/values at each row's offset and attends
  over the cache under `mask_BxTxS`."""

  cfg: ModelConfig

  @nn.compact
  def __call__(
      self, x_BxTxD, positions_BxT, segment_ids_BxT, mask_BxTxS=None, cache=None, cache_index_B=None
  ):
    cfg = self.cfg
    q_DxHxDh = _kernel(self, "q", (cfg.D, cfg.H, cfg.Dh), ("embed", "heads", "head_dim"), cfg.D)
    k_DxKxDh = _kernel(self, "k", (cfg.D, cfg.K, cfg.Dh), ("embed", "kv_heads", "head_dim"), cfg.D)
    v_DxKxDh = _kernel(self, "v", (cfg.D, cfg.K, cfg.Dh), ("embed", "kv_heads", "head_dim"), cfg.D)
    o_HxDhxD = _kernel(
        self, "o", (cfg.H, cfg.Dh, cfg.D), ("heads", "head_dim", "embed"), cfg.H * cfg.Dh
    )
    q = checkpoint_name(dot("btd,dhk->bthk", x_BxTxD, q_DxHxDh), "query_proj")
    k = checkpoint_name(dot("btd,dhk->bthk", x_BxTxD, k_DxKxDh), "key_proj")
    v = checkpoint_name(dot("btd,dhk->bthk", x_BxTxD, v_DxKxDh), "value_proj")
    if cfg.qkv_bias:
      zeros = nn.initializers.zeros
      dt = _dtype(cfg.param_dtype)
      q += self.param(
          "q_bias", nn.with_logical_partitioning(zeros, ("heads", "head_dim")), (cfg.H, cfg.Dh), dt
      ).astype(q.dtype)
      k += self.param(
          "k_bias",
          nn.with_logical_partitioning(zeros, ("kv_heads", "head_dim")),
          (cfg.K, cfg.Dh),
          dt,
      ).astype(k.dtype)
      v += self.param(
          "v_bias",
          nn.with_logical_partitioning(zeros, ("kv_heads", "head_dim")),
          (cfg.K, cfg.Dh),
          dt,
      ).astype(v.dtype)
    inv_freq = rope_frequencies(cfg)
    q_BxTxHxDh = constrain(
        apply_rope(q, positions_BxT, inv_freq), ("batch", "length", "heads", "head_dim")
    )
    k_BxTxKxDh = constrain(
        apply_rope(k, positions_BxT, inv_freq), ("batch", "length", "kv_heads", "head_dim")
    )
    v_BxTxKxDh = constrain(v, ("batch", "length", "kv_heads", "head_dim"))

    new_cache = None
    if cache is not None:
      axis = kv_cache.length_axis(cfg)
      new_cache = {
          "k": kv_cache.write(cache["k"], k_BxTxKxDh, cache_index_B, axis["k"]),
          "v": kv_cache.write(cache["v"], v_BxTxKxDh, cache_index_B, axis["v"]),
      }
      out = kv_cache.attend(q_BxTxHxDh, new_cache["k"], new_cache["v"], mask_BxTxS, cfg)
    else:
      out = attention.self_attention(
          q_BxTxHxDh,
          k_BxTxKxDh.astype(q_BxTxHxDh.dtype),
          v_BxTxKxDh,
          positions_BxT,
          segment_ids_BxT,
          cfg.attention,
          cfg.attention_block,
      )
    out = checkpoint_name(out, "attention_out")
    out_BxTxD = dot("bthk,hkd->btd", out.astype(o_HxDhxD.dtype), o_HxDhxD)
    return constrain(out_BxTxD, ("batch", "length", "embed")), new_cache


class Mlp(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD):
    cfg = self.cfg
    gate_DxF = _kernel(self, "gate", (cfg.D, cfg.F), ("embed", "mlp"), cfg.D)
    up_DxF = _kernel(self, "up", (cfg.D, cfg.F), ("embed", "mlp"), cfg.D)
    down_FxD = _kernel(self, "down", (cfg.F, cfg.D), ("mlp", "embed"), cfg.F)
    h_BxTxF = nn.silu(dot("btd,df->btf", x_BxTxD, gate_DxF)) * dot("btd,df->btf", x_BxTxD, up_DxF)
    h_BxTxF = constrain(h_BxTxF, ("batch", "length", "mlp"))
    return constrain(dot("btf,fd->btd", h_BxTxF, down_FxD), ("batch", "length", "embed"))


class Block(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(
      self, x_BxTxD, positions_BxT, segment_ids_BxT, mask_BxTxS=None, cache=None, cache_index_B=None
  ):
    h, new_cache = Attention(self.cfg, name="attn")(
        RMSNorm(self.cfg, name="attn_norm")(x_BxTxD),
        positions_BxT,
        segment_ids_BxT,
        mask_BxTxS,
        cache,
        cache_index_B,
    )
    x_BxTxD = x_BxTxD + h
    x_BxTxD = x_BxTxD + Mlp(self.cfg, name="mlp")(RMSNorm(self.cfg, name="mlp_norm")(x_BxTxD))
    return constrain(x_BxTxD, ("batch", "length", "embed")), new_cache


class ScannedBlock(nn.Module):
  """Block with the (carry, per-layer) signature nn.scan needs; training path only."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, segment_ids_BxT):
    x_BxTxD, _ = _remat(Block, self.cfg, scanned=True)(self.cfg, name="block")(
        x_BxTxD, positions_BxT, segment_ids_BxT
    )
    return x_BxTxD, None


def _remat(block, cfg: ModelConfig, scanned: bool):
  """The block under the configured remat policy (the block itself for 'none')."""
  if cfg.remat == "none":
    return block
  # Inside a scan XLA cannot merge the recompute into the forward pass, so CSE may stay off.
  return nn.remat(block, policy=remat.policy(cfg.remat), prevent_cse=not scanned)


def attention_mask(positions_BxT, segment_ids_BxT, kv_positions_BxS=None, kv_segment_ids_BxS=None):
  """Causal mask within segments; segment id 0 marks padding and is never attended to."""
  if kv_positions_BxS is None:
    kv_positions_BxS, kv_segment_ids_BxS = positions_BxT, segment_ids_BxT
  return attention.mask(positions_BxT, segment_ids_BxT, kv_positions_BxS, kv_segment_ids_BxS)


class Transformer(nn.Module):
  """tokens -> logits. positions default to 0..T-1; segment ids default to one segment."""

  cfg: ModelConfig

  @nn.compact
  def __call__(
      self,
      tokens_BxT,
      positions_BxT=None,
      segment_ids_BxT=None,
      cache=None,
      cache_index_B=None,
      kv_positions_BxS=None,
      kv_segment_ids_BxS=None,
      logits_at_B=None,
  ):
    """`logits_at_B`: logits at one position per row only (a prefill needs just the last
    prompt token's; the head over every position is a fifth of a small model's prefill)."""
    cfg = self.cfg
    B, T = tokens_BxT.shape
    if positions_BxT is None:
      positions_BxT = jnp.broadcast_to(jnp.arange(T), (B, T))
    if segment_ids_BxT is None:
      segment_ids_BxT = jnp.ones((B, T), jnp.int32)
    mask_BxTxS = None  # without a cache, each attention form builds its own
    if cache is not None:
      mask_BxTxS = attention_mask(
          positions_BxT, segment_ids_BxT, kv_positions_BxS, kv_segment_ids_BxS
      )

    embed = self.param(
        "embed",
        nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), ("vocab", "embed")),
        (cfg.V, cfg.D),
        _dtype(cfg.param_dtype),
    )
    # Gather from a table split only by vocab: a gather across an fsdp-split width would make
    # XLA replicate the whole table first.
    table_VxD = constrain(embed, ("vocab", None))
    x_BxTxD = jnp.take(table_VxD, tokens_BxT, axis=0).astype(_dtype(cfg.dtype))
    x_BxTxD = constrain(x_BxTxD, ("batch", "length", "embed"))

    new_cache = None
    if cfg.scan_layers and cache is None:
      x_BxTxD, _ = nn.scan(
          ScannedBlock,
          variable_axes={"params": 0},
          split_rngs={"params": True},
          in_axes=(nn.broadcast, nn.broadcast),
          length=cfg.L,
          metadata_params={nn.PARTITION_NAME: "layers"},
      )(cfg, name="layers")(x_BxTxD, positions_BxT, segment_ids_BxT)
    elif cfg.scan_layers:
      raise ValueError(
          "decoding with a KV cache needs scan_layers=False "
          "(convert the checkpoint with unstacked layers)"
      )
    else:
      block = _remat(Block, cfg, scanned=False) if cache is None else Block
      new_cache = [] if cache is not None else None
      for i in range(cfg.L):
        layer_cache = cache[i] if cache is not None else None
        x_BxTxD, c = block(cfg, name=f"layers_{i}")(
            x_BxTxD, positions_BxT, segment_ids_BxT, mask_BxTxS, layer_cache, cache_index_B
        )
        if cache is not None:
          new_cache.append(c)

    if logits_at_B is not None:
      x_BxTxD = jnp.take_along_axis(x_BxTxD, logits_at_B[:, None, None], axis=1)
    x_BxTxD = RMSNorm(cfg, name="final_norm")(x_BxTxD)
    if cfg.tie_embeddings:
      head_DxV = embed.T
    else:
      head_DxV = self.param(
          "lm_head",
          nn.with_logical_partitioning(
              nn.initializers.normal(stddev=1.0 / math.sqrt(cfg.D)), ("embed", "vocab")
          ),
          (cfg.D, cfg.V),
          _dtype(cfg.param_dtype),
      )
    logits_BxTxV = dot("btd,dv->btv", x_BxTxD, head_DxV.astype(x_BxTxD.dtype), jnp.float32)
    logits_BxTxV = constrain(logits_BxTxV, ("batch", "length", "vocab"))
    if cache is not None:
      return logits_BxTxV, new_cache
    return logits_BxTxV


def abstract_params(cfg: ModelConfig):
  """The parameters' shapes, dtypes and logical axes (boxed), computed without allocating them."""
  return jax.eval_shape(
      lambda: Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
  )["params"]
