"""A study's grid as jobs, and what it costs: a training job is one binary invocation
(`python -m synthjax.train`: gin files plus gin statements, the same in this process and on a
cluster), its cost in FLOPs and chip-hours, and each size's memory on the slice it runs on.
"""

import dataclasses
from typing import Dict, List, Sequence

import gin

from synthjax import gin_cli


@dataclasses.dataclass(frozen=True)
class Job:
  name: str
  module: str  # the binary: synthjax.train, or synthjax.study (a stage)
  gin_files: Sequence[str]
  bindings: Sequence[str]  # gin statements, e.g. "TRAIN_TOKENS = 4096"
  records: Sequence[str] = ()  # the run records a finished job leaves: it is done

  def args(self) -> List[str]:
    return (
        ["python3", "-m", self.module]
        + [f"--gin_file={f}" for f in self.gin_files]
        + [f"--gin_bindings={b}" for b in self.bindings]
    )


def grid_cost(cfg, train_gin: Sequence[str] = ()) -> dict:
  """Training FLOPs of the whole grid, from each size preset's model config (and the study's
  extra train gin files and bindings: vocabulary, dtype, schedule): with one full run per
  budget (`flops`), and with one run per (size, mixture, seed) at the largest budget plus a
  cooldown branch per smaller budget (`flops_branched`: each branch trains decay_fraction of
  its budget beyond the shared run)."""
  from synthjax import train  # noqa: F401  (registers what train gin files bind)
  from synthjax.data import loader  # noqa: F401
  from synthjax.models.config import ModelConfig
  from synthjax.models.flops import train_flops_per_token
  from synthjax.training.optimizer import OptimizerConfig

  per_token = {}
  for size in cfg.model_sizes:
    gin_cli.parse(
        [f"models/{size}.gin", *train_gin],
        [f"ModelConfig.V = {cfg.vocab_size}", *cfg.train_bindings],
    )
    per_token[size] = train_flops_per_token(ModelConfig(), cfg.seq_len)
  decay = OptimizerConfig().decay_fraction
  jobs = cfg.jobs()
  top = max(cfg.budgets)
  branched = sum(
      per_token[j["size"]] * (j["budget"] if j["budget"] == top else decay * j["budget"])
      for j in jobs
  )
  return {
      "jobs": len(jobs),
      "tokens": sum(j["budget"] for j in jobs),
      "flops": sum(per_token[j["size"]] * j["budget"] for j in jobs),
      "runs_branched": sum(j["budget"] == top for j in jobs),
      "flops_branched": branched,
      "decay_fraction": decay,
  }


def grid_memory(cfg, train_gin: Sequence[str] = (), slice_=None) -> Dict[str, dict]:
  """Each size preset's training job against the memory of the slice it runs on (`slice_`,
  else the one the train gin files name: memory.Slice): the per-device estimate and its
  verdict, by size."""
  from synthjax import sharding, train  # noqa: F401  (registers what train gin files bind)
  from synthjax.data import loader  # noqa: F401
  from synthjax.models.config import ModelConfig
  from synthjax.training import memory
  from synthjax.training.optimizer import OptimizerConfig

  plans = {}
  for size in cfg.model_sizes:
    gin_cli.parse(
        [f"models/{size}.gin", *train_gin],
        [f"ModelConfig.V = {cfg.vocab_size}", *cfg.train_bindings],
    )
    try:
      grad_accum = gin.query_parameter("TrainConfig.grad_accum")
    except ValueError:  # not bound: TrainConfig's default
      grad_accum = 1
    plans[size] = memory.check(
        ModelConfig(),
        OptimizerConfig(),
        cfg.batch_size,
        cfg.seq_len,
        grad_accum,
        sharding.configured_axes(),
        slice_ or memory.Slice(),
    )
  return plans


def memory_line(size: str, plan: dict) -> str:
  parts = ", ".join(f"{k} {v / 2 ** 30:.1f}" for k, v in plan["parts"].items())
  return (
      f"memory: {size} on {plan['slice']} (mesh {plan['mesh']}, {plan['remat']} remat, "
      f"{plan['attention']} attention): {plan['total_gib']:.1f} GiB per device ({parts}); "
      f"{plan['verdict']}"
  )


def cost_line(cost: dict, chip_tflops: float, mfu: float) -> str:
  def hours(flops):
    return flops / (chip_tflops * 1e12 * mfu) / 3600

  return (
      f"cost: {cost['jobs']} runs, one per budget: {cost['tokens']:.3g} training tokens, "
      f"{cost['flops']:.3g} FLOPs = {hours(cost['flops']):.3g} chip-hours; "
      f"{cost['runs_branched']} runs with a cooldown branch per smaller budget "
      f"({cost['decay_fraction']:g} of its tokens): {cost['flops_branched']:.3g} FLOPs = "
      f"{hours(cost['flops_branched']):.3g} chip-hours "
      f"({1 - cost['flops_branched'] / cost['flops']:.0%} less); at {mfu:.0%} MFU of "
      f"{chip_tflops:g} TFLOP/s per chip"
  )
