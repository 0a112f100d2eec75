"""The train binary: sharded, resumable pretraining with per-domain evaluation.

    python -m synthjax.train --gin_file=gin_configs/train/tiny_markov.gin \
        --gin.MODEL_DIR=/tmp/run --gin.TRAIN_TOKENS=200000

Outputs in MODEL_DIR (a local folder or an object-store URL such as gs://BUCKET/run):
metrics.jsonl, tensorboard/, checkpoints/ (orbax, with the data state), config.gin (operative
config), model.json, and run.json (the run record) at the end.
A rerun with the same MODEL_DIR resumes from the latest checkpoint; SIGTERM saves and exits
with 143 (not done: a launcher retries it).
--dry_run checks the mesh, the data (budgets against the tokenized copies' stats) and the
evaluation sets, prints what the run would do, and writes nothing.
"""

import contextlib
import functools
import json
import math
import signal
import sys
import time
from typing import Dict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from synthjax import gin_cli, sharding, storage
from synthjax.errors import UserError
from synthjax.lease import Lease
from synthjax.models.config import ModelConfig
from synthjax.models.llama import Transformer
from synthjax.training import branches as branch_lib
from synthjax.training import evaluation, failure, preflight
from synthjax.training import optimizer as optimizer_lib
from synthjax.training import record as record_lib
from synthjax.training.checkpointing import TrainCheckpointer
from synthjax.training.config import TrainConfig
from synthjax.training.metrics import MetricsWriter, Progress
from synthjax.training.step import make_eval_step, make_train_step

PREEMPTED_EXIT = 143  # 128 + SIGTERM, as a shell reports a process SIGTERM ended


class Preempted(Exception):
  pass


@functools.lru_cache(maxsize=4)
def programs(
    model_cfg: ModelConfig,
    opt_cfg: optimizer_lib.OptimizerConfig,
    mesh,
    rules,
    seq_len: int,
    grad_accum: int,
    z_loss: float,
):
  """A run's compiled pieces, shared by every run of one model shape in a process (a study
  trains dozens): jit caches by function, so building them once compiles them once."""
  model = Transformer(model_cfg)
  tx = optimizer_lib.make(opt_cfg)
  dummy = jnp.zeros((1, seq_len), jnp.int32)

  def init_state(rng):
    params = model.init(rng, dummy)["params"]
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}

  init, abstract, shardings = sharding.sharded_initializer(
      init_state, mesh, rules, jax.random.key(0)
  )
  batch_sharding = sharding.batch_sharding(mesh)
  train_step = make_train_step(
      model, tx, shardings, batch_sharding, rules, mesh, grad_accum, z_loss
  )
  eval_step = make_eval_step(model, shardings["params"], batch_sharding, rules, mesh)
  return abstract, shardings, init, train_step, eval_step


def train(cfg: TrainConfig, model_cfg: ModelConfig, opt_cfg: optimizer_lib.OptimizerConfig) -> dict:
  t_start = time.time()
  primary = jax.process_index() == 0
  preflight.check_seq_len(cfg, model_cfg)
  if storage.isfile(cfg.model_dir):
    raise UserError(f"MODEL_DIR {cfg.model_dir}: is a file, not a folder")
  mesh = preflight.mesh_for(cfg)
  source, eval_sets = preflight.data_sources(cfg, mesh)
  branches = branch_lib.branch_points(cfg, opt_cfg)  # cooldown start step -> (budget, its steps)
  changed = gin_cli.changed_settings(cfg.model_dir)
  if changed:  # its checkpoints and record belong to other settings
    more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
    raise UserError(
        f"MODEL_DIR {cfg.model_dir} holds a run with other settings: "
        f"{changed[0]}{more}; use a new MODEL_DIR"
    )
  record_path = storage.join(cfg.model_dir, "run.json")
  if storage.exists(record_path):  # finished already, with these settings
    return storage.read_json(record_path)
  preflight.memory_check(cfg, model_cfg, opt_cfg)
  storage.check_writable(cfg.model_dir)
  created = not storage.exists(cfg.model_dir)
  storage.makedirs(cfg.model_dir)
  with _hold_model_dir(cfg.model_dir, primary) as held:
    if storage.exists(record_path):  # finished by a holder that ended since the check above
      return storage.read_json(record_path)
    try:
      return _train(cfg, model_cfg, opt_cfg, mesh, source, eval_sets, branches, held, t_start)
    except Exception as e:  # a divergence or a full disk: clean up, then one line
      error = failure.after(e, cfg.model_dir) if primary else None
      if error is None:
        raise
      cause = e
  if created:  # a run that kept nothing leaves no folder either
    storage.remove_empty_folder(cfg.model_dir)
  raise error from cause


@contextlib.contextmanager
def _hold_model_dir(model_dir: str, primary: bool):
  """Process 0 holds MODEL_DIR's lease for the whole run (a second job on it is refused);
  every process learns whether it got it, so a refused job stops on all of them instead of
  waiting in a collective."""
  held = Lease(model_dir, "a training run") if primary else None
  refused = None
  if held:
    try:
      held.__enter__()
    except UserError as e:
      refused, held = e, None
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    if np.any(multihost_utils.process_allgather(np.asarray([refused is not None]))):
      raise refused or UserError(f"MODEL_DIR {model_dir}: process 0 found it in use")
  if refused:
    raise refused
  try:
    yield held
  finally:
    if held:
      held.__exit__(None, None, None)


def _train(
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    opt_cfg: optimizer_lib.OptimizerConfig,
    mesh,
    source,
    eval_sets,
    branches,
    held,
    t_start: float,
) -> dict:
  """The run itself, with MODEL_DIR held."""
  primary = jax.process_index() == 0
  record_path = storage.join(cfg.model_dir, "run.json")
  preflight.check_model_dir(cfg.model_dir, model_cfg)
  rules = sharding.logical_axis_rules()
  abstract, shardings, init, train_step, eval_step = programs(
      model_cfg, opt_cfg, mesh, rules, cfg.seq_len, cfg.grad_accum, cfg.z_loss
  )
  warmup = optimizer_lib.warmup_steps(opt_cfg, min([cfg.steps] + [s for _, s in branches.values()]))
  lrs = branch_lib.lr_table(opt_cfg, cfg.steps, warmup)

  failure.report_failed_saves_once()
  ckpt = TrainCheckpointer(
      cfg.model_dir, cfg.keep_checkpoints, cfg.milestones, cfg.checkpoint_ocdbt
  )
  start = ckpt.latest_step()
  target = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), nn.unbox(abstract), shardings
  )
  if start is None:
    state = init(jax.random.key(cfg.seed))
    start = 0
    if primary:  # the record of an earlier attempt that diverged
      storage.remove(storage.join(cfg.model_dir, failure.DIVERGED))
  else:
    state, data_state = ckpt.restore(start, target)
    source.set_state(data_state)
    if primary:
      print(f"resumed from step {start}", file=sys.stderr, flush=True)

  writer = MetricsWriter(cfg.model_dir, enabled=primary, resume_step=start)
  progress = Progress(cfg.steps, start, enabled=primary)
  if primary:
    gin_cli.write_operative_config(cfg.model_dir)

  preempted = []
  previous_handler = signal.signal(signal.SIGTERM, lambda *_: preempted.append(True))
  tokens_per_step = cfg.batch_size * cfg.seq_len
  pending = None  # (step, metrics on device): read one step behind
  timer = (time.time(), start)
  final_eval: Dict[str, float] = {}
  final_details: Dict[str, dict] = {}

  def read(step, metrics, extra=None):
    nonlocal timer
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if not math.isfinite(values["train/loss"]):
      raise failure.Diverged(
          f"training diverged: train/loss is {values['train/loss']} at "
          f"step {step} (a lower OptimizerConfig.peak_lr may help)",
          step,
          values["train/loss"],
      )
    if step % cfg.log_every == 0 or extra or step == cfg.steps:
      now = time.time()
      tps = (step - timer[1]) * tokens_per_step / max(now - timer[0], 1e-9)
      timer = (now, step)
      values.update(tokens=step * tokens_per_step, tokens_per_s=tps, **(extra or {}))
      writer.write(step, values)
      progress.line(step, values["train/loss"], tps)

  def branch(step, state):
    """The cooldown branch that starts at this (saved) step, unless its record exists; then
    back to the saved state and data position."""
    budget, steps = branches[step]
    path = branch_lib.branch_record_path(cfg.model_dir, budget)
    if storage.exists(path):
      return state
    branch_lrs = branch_lib.lr_table(opt_cfg, steps, warmup)
    t = time.time()
    for s in range(step + 1, steps + 1):
      if preempted and jax.process_count() == 1:
        raise Preempted(step)  # the branch point is saved: a rerun starts the branch anew
      batch = sharding.global_batch(source.next_batch(), mesh)
      state, metrics = train_step(state, batch, branch_lrs[s - 1])
    loss = float(jax.device_get(metrics["train/loss"]))
    if not math.isfinite(loss):
      raise failure.Diverged(
          f"training diverged: train/loss is {loss} at step {steps} of "
          f"the cooldown branch to {budget} tokens",
          steps,
          loss,
      )
    extra, details = evaluation.evaluate(eval_step, state["params"], eval_sets)
    record = record_lib.run_record(
        cfg,
        model_cfg,
        source,
        steps,
        extra,
        details,
        time.time() - t,
        branch={"from_step": step, "of_steps": cfg.steps},
    )
    if primary:
      storage.write_json(path, record)
      print(
          f"branch to {budget} tokens (steps {step + 1}-{steps}): eval loss {record['loss']}",
          file=sys.stderr,
          flush=True,
      )
    ckpt.wait()
    state, data_state = ckpt.restore(step, target)
    source.set_state(data_state)
    return state

  try:
    if start in branches:  # resumed at a branch point: the branch may not have finished
      state = branch(start, state)
    for step in range(start + 1, cfg.steps + 1):
      batch = sharding.global_batch(source.next_batch(), mesh)
      state, metrics = train_step(state, batch, lrs[step - 1])
      if pending is not None:
        read(*pending)
      pending = (step, metrics)
      is_eval = step == cfg.steps or (cfg.eval_every and step % cfg.eval_every == 0)
      stop = _should_stop(preempted, step, cfg.log_every)
      if (
          is_eval
          or step % cfg.checkpoint_every == 0
          or step == cfg.steps
          or stop
          or step in branches
      ):
        extra, details = (
            evaluation.evaluate(eval_step, state["params"], eval_sets) if is_eval else (None, None)
        )
        read(step, metrics, extra)
        pending = None
        if extra:
          final_eval, final_details = extra, details or {}
        if held:
          held.check()  # another process took MODEL_DIR over: stop before writing more
        ckpt.save(step, state, source.get_state())
        writer.sync()  # the metrics up to a committed step reach MODEL_DIR with it
      if stop:
        ckpt.close()
        raise Preempted(step)
      if step in branches:
        state = branch(step, state)
    if pending is not None:
      read(*pending)
    if not final_eval and eval_sets:  # killed after the last save, before the record
      final_eval, final_details = evaluation.evaluate(eval_step, state["params"], eval_sets)
  except BaseException:
    with contextlib.suppress(Exception):
      ckpt.close()  # no save is still writing when the caller cleans up after a failure
    raise
  finally:
    signal.signal(signal.SIGTERM, previous_handler)
    writer.close()
  ckpt.close()

  record = record_lib.run_record(
      cfg, model_cfg, source, cfg.steps, final_eval, final_details, time.time() - t_start
  )
  if primary:
    gin_cli.write_operative_config(cfg.model_dir)
    storage.write_json(record_path, record)
  return record


def _should_stop(preempted: list, step: int, every: int) -> bool:
  """One host alone decides on every step; many hosts must stop at the same step, so they
  compare flags (a collective all of them call) on a fixed schedule."""
  if jax.process_count() == 1:
    return bool(preempted)
  if step % every:
    return False
  from jax.experimental import multihost_utils

  return bool(np.any(multihost_utils.process_allgather(np.asarray([bool(preempted)]))))


def _run(rest):
  dry = "--dry_run" in rest
  rest = [a for a in rest if a != "--dry_run"]
  if rest:
    raise UserError(f"unknown arguments: {' '.join(rest)}")
  sharding.init_distributed()
  cfg = gin_cli.call_configured(TrainConfig)
  model_cfg = gin_cli.call_configured(ModelConfig)
  opt_cfg = gin_cli.call_configured(optimizer_lib.OptimizerConfig)
  if dry:
    plan = preflight.dry_run(cfg, model_cfg, opt_cfg)
    if jax.process_index() == 0:
      print(json.dumps(plan), flush=True)
    return
  try:
    record = train(cfg, model_cfg, opt_cfg)
  except Preempted as e:
    # Not a success: a launcher that reads the exit code must not record the run done.
    print(
        f"synthjax.train: preempted; saved step {e.args[0]}, rerun to resume",
        file=sys.stderr,
        flush=True,
    )
    sys.exit(PREEMPTED_EXIT)
  if jax.process_index() == 0:
    print(json.dumps({k: record[k] for k in ("params", "tokens", "loss", "wall_s")}), flush=True)


def main(argv=None):
  gin_cli.main("synthjax.train", _run, argv)


if __name__ == "__main__":
  main()
