"""The train binary's configuration (its own module, so gin registers it once under one
name whether synthjax.train runs as __main__ or is imported by the study)."""

import dataclasses
import math
from typing import Callable, Dict, Optional, Sequence

import gin

from synthjax.errors import UserError, check_field_types


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TrainConfig:
  model_dir: str
  train_tokens: int  # the data budget D; steps = ceil(D / (batch * seq_len))
  data_source: Callable  # e.g. @MarkovSource, @grain_loader
  batch_size: int = 8  # global sequences per step
  seq_len: int = 128
  grad_accum: int = 1
  eval_sources: Optional[Dict[str, Callable]] = None  # domain -> source factory (@EvalSet)
  eval_batch_size: int = 16  # rows per evaluation step; fixed, not the training batch
  eval_batches: int = 2  # batches read from a row source (an EvalSet has its own)
  eval_every: int = 0  # steps; 0 = only at the end
  log_every: int = 10
  checkpoint_every: int = 100
  keep_checkpoints: int = 2
  milestones: Sequence[int] = ()
  # Smaller budgets (tokens) served by this run: with the wsd schedule, at each one's cooldown
  # start the run branches, cools down to that budget, evaluates and writes its own record
  # (MODEL_DIR/branches/<tokens>/run.json), then goes on from the branch point.
  branch_budgets: Sequence[int] = ()
  # Arrays in OCDBT databases (orbax's default: few files). False: one zarr folder per array,
  # for stores without OCDBT's conditional writes (the loopback GCS emulator of the tests).
  checkpoint_ocdbt: bool = True
  z_loss: float = 0.0
  seed: int = 0

  def __post_init__(self):
    check_field_types(self)
    if not self.model_dir.strip():
      raise UserError("TrainConfig.model_dir (MODEL_DIR) is empty: give the run's folder")
    if not callable(self.data_source):
      raise UserError(
          f"TrainConfig.data_source must be a source factory such as "
          f"@MarkovSource, got {self.data_source!r}"
      )
    for field in (
        "train_tokens",
        "batch_size",
        "seq_len",
        "grad_accum",
        "eval_batch_size",
        "eval_batches",
        "log_every",
        "checkpoint_every",
        "keep_checkpoints",
    ):
      if getattr(self, field) <= 0:
        raise UserError(f"TrainConfig.{field} must be positive, got {getattr(self, field)}")
    bad = [
        b
        for b in self.branch_budgets
        if isinstance(b, bool) or not isinstance(b, int) or not 0 < self.steps_for(b) < self.steps
    ]
    if bad:
      raise UserError(
          f"TrainConfig.branch_budgets: {bad[0]!r} is not a budget of fewer steps "
          f"than the run's {self.steps} (train_tokens={self.train_tokens})"
      )
    if self.batch_size % self.grad_accum:
      raise UserError(
          f"TrainConfig.batch_size={self.batch_size} is not divisible by "
          f"grad_accum={self.grad_accum}"
      )

  def steps_for(self, tokens: int) -> int:
    return math.ceil(tokens / (self.batch_size * self.seq_len))

  @property
  def steps(self) -> int:
    return self.steps_for(self.train_tokens)
