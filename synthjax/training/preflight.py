"""Everything a training run checks before its first write (the mesh against the batch, the
data and its budgets, the evaluation sets, memory on the slice, the model against MODEL_DIR),
and the dry run that checks it all and writes nothing."""

import jax

from synthjax import sharding, storage
from synthjax.errors import UserError
from synthjax.models.config import ModelConfig
from synthjax.models.flops import param_count, train_flops_per_token
from synthjax.training import branches as branch_lib
from synthjax.training import evaluation, memory
from synthjax.training import optimizer as optimizer_lib
from synthjax.training.config import TrainConfig


def check_model_dir(model_dir: str, cfg: ModelConfig) -> None:
  """A MODEL_DIR belongs to one model shape: refuse to resume another model's checkpoint."""
  path = storage.join(model_dir, "model.json")
  shape_fields = ("V", "D", "L", "H", "K", "Dh", "F", "tie_embeddings", "qkv_bias", "scan_layers")
  if storage.exists(path):
    old = storage.read_json(path)
    diff = [
        f"{k}={old.get(k)} vs {getattr(cfg, k)}"
        for k in shape_fields
        if old.get(k) != getattr(cfg, k)
    ]
    if diff:
      raise UserError(
          f"{model_dir} holds a checkpoint of another model shape "
          f"({', '.join(diff)}); use a new MODEL_DIR"
      )
  elif jax.process_index() == 0:
    storage.write_text(path, cfg.to_json())


def data_sources(cfg: TrainConfig, mesh):
  """The training source and the evaluation sets: built (budgets checked against the
  tokenized copies, batches against the devices) before anything is written."""
  source = cfg.data_source(
      batch_size=cfg.batch_size,
      seq_len=cfg.seq_len,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
  )
  return source, evaluation.eval_sets(cfg, mesh)


def mesh_for(cfg: TrainConfig):
  """The mesh, and the batches checked against its data-parallel devices."""
  mesh = sharding.make_mesh()
  dp = mesh.shape.get("data", 1) * mesh.shape.get("fsdp", 1)
  if cfg.batch_size % dp:
    raise UserError(
        f"TrainConfig.batch_size={cfg.batch_size} does not split over the {dp} "
        f"data-parallel devices of the mesh {dict(mesh.shape)}; use a multiple of "
        f"{dp}"
    )
  if (cfg.batch_size // dp) % cfg.grad_accum:
    raise UserError(
        f"TrainConfig.grad_accum={cfg.grad_accum} does not split the "
        f"{cfg.batch_size // dp} rows each of the {dp} data-parallel devices holds "
        f"(batch_size={cfg.batch_size}); each device's rows feed every microbatch"
    )
  if cfg.eval_sources and cfg.eval_batch_size % dp:
    raise UserError(
        f"TrainConfig.eval_batch_size={cfg.eval_batch_size} does not split over "
        f"the {dp} data-parallel devices of the mesh {dict(mesh.shape)}; use a "
        f"multiple of {dp}"
    )
  return mesh


def memory_check(
    cfg: TrainConfig, model_cfg: ModelConfig, opt_cfg: optimizer_lib.OptimizerConfig
) -> dict:
  """Per-device memory of this job on the slice gin names (memory.Slice), or on this
  process's devices; a job that would not fit stops before anything is written."""
  fit = memory.check(
      model_cfg,
      opt_cfg,
      cfg.batch_size,
      cfg.seq_len,
      cfg.grad_accum,
      sharding.configured_axes(),
      memory.Slice(),
  )
  memory.require_fit(fit)
  return fit


def check_seq_len(cfg: TrainConfig, model_cfg: ModelConfig) -> None:
  if cfg.seq_len > model_cfg.max_len:
    raise UserError(
        f"TrainConfig.seq_len={cfg.seq_len} is longer than ModelConfig.max_len="
        f"{model_cfg.max_len}, the longest sequence the model is built for; lower "
        "SEQ_LEN or raise ModelConfig.max_len"
    )


def dry_run(
    cfg: TrainConfig, model_cfg: ModelConfig, opt_cfg: optimizer_lib.OptimizerConfig
) -> dict:
  """Everything a run checks before its first write (mesh, data, budgets against the
  tokenized copies' stats, evaluation sets), and what it would do; writes nothing."""
  check_seq_len(cfg, model_cfg)
  mesh = mesh_for(cfg)
  source, eval_sets = data_sources(cfg, mesh)
  branches = branch_lib.branch_points(cfg, opt_cfg)
  n = param_count(model_cfg)
  tokens = cfg.steps * cfg.batch_size * cfg.seq_len
  flops = train_flops_per_token(model_cfg, cfg.seq_len) * tokens
  fit = memory_check(cfg, model_cfg, opt_cfg)
  return {
      "memory": {
          k: fit[k]
          for k in ("verdict", "total_gib", "parts", "slice", "mesh", "remat", "attention")
      },
      "model_dir": storage.abspath(cfg.model_dir),
      "params": n,
      "tokens": tokens,
      "steps": cfg.steps,
      "mesh": dict(mesh.shape),
      "flops": flops,
      "mixture": getattr(source, "mixture", None),
      "repeats": getattr(source, "repeats", {}),
      "eval_domains": sorted(eval_sets),
      "branches": {b: {"from_step": p, "steps": s} for p, (b, s) in branches.items()},
  }
