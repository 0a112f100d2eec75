"""Parameter counts and training FLOPs per token for a ModelConfig (no model built)."""

from synthjax.models.config import ModelConfig


def layer_param_count(cfg: ModelConfig) -> int:
  attn = cfg.D * cfg.H * cfg.Dh + 2 * cfg.D * cfg.K * cfg.Dh + cfg.H * cfg.Dh * cfg.D
  if cfg.qkv_bias:
    attn += (cfg.H + 2 * cfg.K) * cfg.Dh
  return attn + 3 * cfg.D * cfg.F + 2 * cfg.D


def param_count(cfg: ModelConfig) -> int:
  """Every stored parameter (what `N` means in the run records and scaling fits)."""
  head = 0 if cfg.tie_embeddings else cfg.D * cfg.V
  return cfg.V * cfg.D + cfg.L * layer_param_count(cfg) + cfg.D + head


def matmul_param_count(cfg: ModelConfig) -> int:
  """Parameters that take part in a matmul per token: all but the embedding lookup (the
  output head is a matmul whether or not it shares the embedding's weights)."""
  return cfg.L * layer_param_count(cfg) + cfg.D + cfg.D * cfg.V


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  """Forward+backward FLOPs per token: 6 per matmul parameter plus attention scores and
  weighted values (2 matmuls of T*H*Dh each per layer, x2 for multiply-add, x3 for fwd+bwd)."""
  return 6.0 * matmul_param_count(cfg) + 12.0 * cfg.L * cfg.H * cfg.Dh * seq_len


def decode_flops_per_token(cfg: ModelConfig) -> float:
  """Forward FLOPs per generated token, weights only (the generation roofline's 2N)."""
  return 2.0 * matmul_param_count(cfg)
