"""AdamW with warmup + cosine or warmup-stable-decay, clipping and a weight-decay mask."""

import dataclasses
from typing import Optional

import gin
import jax
import optax

from synthjax.errors import check_field_types


@gin.configurable
@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  peak_lr: float = 3e-3
  warmup_fraction: float = 0.05  # of total steps
  schedule: str = "cosine"  # "cosine" or "wsd" (warmup-stable-decay)
  decay_fraction: float = 0.2  # wsd: final fraction of steps that decays linearly
  final_lr_fraction: float = 0.1  # lr at the end, as a fraction of the peak
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.1
  clip_norm: float = 1.0

  def __post_init__(self):
    check_field_types(self)
    if self.schedule not in ("cosine", "wsd"):
      raise ValueError(f"OptimizerConfig.schedule must be 'cosine' or 'wsd', got {self.schedule!r}")


def warmup_steps(cfg: OptimizerConfig, total_steps: int) -> int:
  return max(1, int(round(cfg.warmup_fraction * total_steps)))


def decay_steps(cfg: OptimizerConfig, total_steps: int) -> int:
  """wsd: the cooldown's length in a run of total_steps."""
  return max(1, int(round(cfg.decay_fraction * total_steps)))


def schedule(
    cfg: OptimizerConfig, total_steps: int, warmup: Optional[int] = None
) -> optax.Schedule:
  """The lr per step; `warmup` (steps) overrides warmup_fraction, so runs of several lengths
  can share one warmup (a wsd run and its cooldown branches)."""
  warmup = warmup_steps(cfg, total_steps) if warmup is None else warmup
  final = cfg.peak_lr * cfg.final_lr_fraction
  if cfg.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, cfg.peak_lr, warmup, max(total_steps, warmup + 1), final
    )
  decay = decay_steps(cfg, total_steps)
  stable = max(0, total_steps - warmup - decay)
  return optax.join_schedules(
      [
          optax.linear_schedule(0.0, cfg.peak_lr, warmup),
          optax.constant_schedule(cfg.peak_lr),
          optax.linear_schedule(cfg.peak_lr, final, decay),
      ],
      [warmup, warmup + stable],
  )


def decay_mask(params):
  """Decay matrices only: norms' scales and biases are left alone."""
  return jax.tree.map(lambda x: x.ndim >= 2, params)


def make(cfg: OptimizerConfig) -> optax.GradientTransformation:
  """AdamW without its learning rate: the train step multiplies the update by the step's
  rate (an input), so one compiled step serves runs of every length."""
  return optax.chain(
      optax.clip_by_global_norm(cfg.clip_norm),
      optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
      optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
      optax.scale(-1.0),
  )
