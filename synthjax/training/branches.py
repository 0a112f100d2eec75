"""Cooldown branches of a wsd run: where each budget's branch starts, where its record goes, and
the learning-rate table a run or a branch follows."""

from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from synthjax import storage
from synthjax.errors import UserError
from synthjax.training import optimizer as optimizer_lib
from synthjax.training.config import TrainConfig


def branch_record_path(model_dir: str, budget: int) -> str:
  return storage.join(model_dir, "branches", str(budget), "run.json")


def branch_points(cfg: TrainConfig, opt_cfg) -> Dict[int, tuple]:
  """Cooldown start step -> (budget, steps) of each branch; a branch cools down over the last
  decay_fraction of its own steps, as a wsd run of its length would."""
  if cfg.branch_budgets and opt_cfg.schedule != "wsd":
    raise UserError(
        "TrainConfig.branch_budgets needs OptimizerConfig.schedule = 'wsd' "
        f"(got {opt_cfg.schedule!r}): only a stable phase can be branched from"
    )
  out = {}
  for budget in sorted(set(cfg.branch_budgets)):
    steps = cfg.steps_for(budget)
    start = steps - optimizer_lib.decay_steps(opt_cfg, steps)
    if start in out or start < 1:
      raise UserError(
          f"TrainConfig.branch_budgets: {budget} tokens ({steps} steps) leaves "
          f"no stable phase of its own to branch from; drop it or pick budgets "
          "further apart"
      )
    out[start] = (budget, steps)
  return out


def lr_table(opt_cfg, steps: int, warmup: int) -> np.ndarray:
  return np.asarray(
      jax.vmap(optimizer_lib.schedule(opt_cfg, steps, warmup))(jnp.arange(steps)), np.float32
  )
