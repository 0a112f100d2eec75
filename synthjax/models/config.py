"""The Llama-family model configuration: one frozen dataclass, gin-configurable, JSON round-trip.

Short dimension names follow the shape-suffix convention used in the model code:
V vocab, D d_model, L n_layers, H query heads, K kv heads, Dh head_dim, F d_ff.
"""

import dataclasses
import json
from typing import Optional

import gin

from synthjax.errors import check_field_types

DECODE_ATTENTION = ("dense", "ragged")  # synthjax.models.kv_cache lays the cache out for each


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ModelConfig:
  name: str = "custom"
  V: int = 256  # vocabulary size
  D: int = 64  # model width
  L: int = 2  # layers
  H: int = 4  # query heads
  K: int = 2  # key/value heads (grouped-query attention when K < H)
  Dh: int = 16  # head dimension
  F: int = 128  # SwiGLU hidden width
  max_len: int = 2048  # longest sequence the rope tables and caches are built for
  rope_theta: float = 10000.0
  # Llama-3 style frequency scaling; all four set or none.
  rope_scaling_factor: Optional[float] = None
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_len: int = 8192
  rms_eps: float = 1e-5
  tie_embeddings: bool = False
  qkv_bias: bool = False  # Qwen2 puts a bias on q, k and v
  dtype: str = "float32"  # compute dtype of activations
  param_dtype: str = "float32"  # storage dtype of master weights
  # What the backward pass recomputes instead of keeping (synthjax.models.remat.POLICIES):
  # 'none', 'full' (each layer from its input), 'save_dots' (keep the weight matmuls' outputs),
  # 'save_attention' (keep attention's output and its projections).
  remat: str = "none"
  # Self-attention without a cache (synthjax.models.attention): 'auto' (cudnn on GPU, splash on
  # TPU, xla on CPU), 'xla', 'blocked', 'cudnn' or 'splash'; tiles of attention_block tokens.
  attention: str = "xla"
  attention_block: int = 512
  # 'float' (param_dtype) or 'int8': layer matmul weights stored as int8 with a scale per output
  # channel (synthjax.models.quantize makes them from float weights; for generation).
  weights: str = "float"
  scan_layers: bool = False  # one scanned layer body: faster compiles, stacked params
  # How a decode step attends over the KV cache (synthjax.models.kv_cache, which also lays the
  # cache out for it): 'dense' (every cached position, masked) or 'ragged' (each row up to its
  # own length, by a GPU kernel). The generation engine sets it; training never reads it.
  decode_attention: str = "dense"

  def __post_init__(self):
    check_field_types(self)
    for field in ("V", "D", "L", "H", "K", "Dh", "F", "max_len", "attention_block"):
      if getattr(self, field) <= 0:
        raise ValueError(f"ModelConfig.{field} must be positive, got {getattr(self, field)}")
    if self.H % self.K:
      raise ValueError(f"ModelConfig.H={self.H} must be a multiple of ModelConfig.K={self.K}")
    from synthjax.models import attention, remat

    if self.remat not in remat.POLICIES:
      raise ValueError(
          f"ModelConfig.remat must be one of {sorted(remat.POLICIES)}, got {self.remat!r}"
      )
    if self.attention not in attention.IMPLEMENTATIONS:
      raise ValueError(
          f"ModelConfig.attention must be one of {attention.IMPLEMENTATIONS}, "
          f"got {self.attention!r}"
      )
    if self.decode_attention not in DECODE_ATTENTION:
      raise ValueError(
          f"ModelConfig.decode_attention must be one of {DECODE_ATTENTION}, "
          f"got {self.decode_attention!r}"
      )
    if self.weights not in ("float", "int8"):
      raise ValueError(f"ModelConfig.weights must be 'float' or 'int8', got {self.weights!r}")
    for field in ("dtype", "param_dtype"):
      if getattr(self, field) not in ("float32", "bfloat16", "float16"):
        raise ValueError(
            f"ModelConfig.{field} must be float32, bfloat16 or float16, "
            f"got {getattr(self, field)!r}"
        )

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> "ModelConfig":
    fields = json.loads(text)
    known = {f.name for f in dataclasses.fields(cls)}
    if isinstance(fields.get("remat"), bool):  # written before remat took a policy name
      fields["remat"] = "full" if fields["remat"] else "none"
    unknown = sorted(set(fields) - known)
    if unknown:
      raise ValueError(f"unknown ModelConfig fields {unknown}")
    return cls(**fields)

  def to_gin(self) -> str:
    """Gin bindings that rebuild this config (what `convert` writes beside a checkpoint)."""
    lines = []
    for f in dataclasses.fields(self):
      lines.append(f"ModelConfig.{f.name} = {getattr(self, f.name)!r}")
    return "\n".join(lines) + "\n"
