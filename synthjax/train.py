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
from synthjax.models.flops import param_count, train_flops_per_token
from synthjax.models.llama import Transformer
from synthjax.training import failure, memory
from synthjax.training import optimizer as optimizer_lib
from synthjax.training.checkpointing import TrainCheckpointer
from synthjax.training.config import TrainConfig
from synthjax.training.metrics import MetricsWriter, Progress
from synthjax.training.step import make_eval_step, make_train_step

PREEMPTED_EXIT = 143  # 128 + SIGTERM, as a shell reports a process SIGTERM ended


class Preempted(Exception):
  pass


def _check_model_dir(model_dir: str, cfg: ModelConfig) -> None:
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


def _eval_sets(cfg: TrainConfig, mesh):
  """domain -> (source, [(global batch, document id per target or None)])."""
  out = {}
  for name, factory in (cfg.eval_sources or {}).items():
    source = factory(
        seq_len=cfg.seq_len,
        batch_size=cfg.eval_batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    if hasattr(source, "eval_batches"):  # an EvalSet: a fixed set of documents
      batches = [
          (sharding.global_batch(local, mesh), doc_ids) for local, doc_ids in source.eval_batches()
      ]
    else:  # a row source (e.g. MarkovSource): its first eval_batches batches
      batches = [
          (sharding.global_batch(source.next_batch(), mesh), None) for _ in range(cfg.eval_batches)
      ]
    out[name] = (source, batches)
  return out


def evaluate(eval_step, params, eval_sets):
  """Per domain: mean token loss, perplexity, and (for an EvalSet) bits per byte, the unigram
  baseline and per-document loss sums; plus the token-weighted average over domains.
  Returns (metrics to log, per-domain details for the run record)."""
  metrics, details = {}, {}
  total_loss = total_tokens = 0.0
  for name, (source, batches) in eval_sets.items():
    n_docs = getattr(source, "documents", 0)
    doc_sums, doc_tokens = np.zeros(n_docs), np.zeros(n_docs)
    loss_sum = tokens = 0.0
    for batch, doc_ids in batches:
      losses, weights = (
          np.asarray(x, np.float64) for x in jax.device_get(eval_step(params, batch))
      )
      loss_sum += losses.sum()
      tokens += weights.sum()
      if doc_ids is not None:
        real = doc_ids >= 0
        doc_sums += np.bincount(doc_ids[real], losses[real], minlength=n_docs)
        doc_tokens += np.bincount(doc_ids[real], weights[real], minlength=n_docs)
    loss = loss_sum / max(tokens, 1.0)
    metrics[f"eval/{name}/loss"] = loss
    metrics[f"eval/{name}/ppl"] = math.exp(min(loss, 50.0))
    d = {"loss": loss, "tokens": int(tokens)}
    if n_docs:
      d.update(
          bytes=source.bytes,
          doc_loss_sums=doc_sums.tolist(),
          doc_tokens=doc_tokens.astype(int).tolist(),
      )
      d["bits_per_byte"] = metrics[f"eval/{name}/bpb"] = (
          loss_sum / math.log(2) / max(source.bytes, 1)
      )
      if source.unigram_loss is not None:
        d["unigram_loss"] = source.unigram_loss
    details[name] = d
    total_loss, total_tokens = total_loss + loss_sum, total_tokens + tokens
  if eval_sets:
    metrics["eval/avg/loss"] = total_loss / max(total_tokens, 1.0)
    metrics["eval/avg/ppl"] = math.exp(min(metrics["eval/avg/loss"], 50.0))
  return metrics, details


@functools.lru_cache(maxsize=4)
def _programs(
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


def _data_sources(cfg: TrainConfig, mesh):
  """The training source and the evaluation sets: built (budgets checked against the
  tokenized copies, batches against the devices) before anything is written."""
  source = cfg.data_source(
      batch_size=cfg.batch_size,
      seq_len=cfg.seq_len,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
  )
  return source, _eval_sets(cfg, mesh)


def _mesh(cfg: TrainConfig):
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


def _memory_check(
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


def _check_seq_len(cfg: TrainConfig, model_cfg: ModelConfig) -> None:
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
  _check_seq_len(cfg, model_cfg)
  mesh = _mesh(cfg)
  source, eval_sets = _data_sources(cfg, mesh)
  branches = _branch_points(cfg, opt_cfg)
  n = param_count(model_cfg)
  tokens = cfg.steps * cfg.batch_size * cfg.seq_len
  flops = train_flops_per_token(model_cfg, cfg.seq_len) * tokens
  fit = _memory_check(cfg, model_cfg, opt_cfg)
  return {
      "memory": {
          k: fit[k]
          for k in ("verdict", "total_gib", "parts", "slice", "mesh", "remat", "attention")
      },
      "model_dir": storage.abspath(cfg.model_dir),
      "N": n,
      "D": tokens,
      "steps": cfg.steps,
      "mesh": dict(mesh.shape),
      "flops": flops,
      "mixture": getattr(source, "mixture", None),
      "repeats": getattr(source, "repeats", {}),
      "eval_domains": sorted(eval_sets),
      "branches": {b: {"from_step": p, "steps": s} for p, (b, s) in branches.items()},
  }


def train(cfg: TrainConfig, model_cfg: ModelConfig, opt_cfg: optimizer_lib.OptimizerConfig) -> dict:
  t_start = time.time()
  primary = jax.process_index() == 0
  _check_seq_len(cfg, model_cfg)
  if storage.isfile(cfg.model_dir):
    raise UserError(f"MODEL_DIR {cfg.model_dir}: is a file, not a folder")
  mesh = _mesh(cfg)
  source, eval_sets = _data_sources(cfg, mesh)
  branches = _branch_points(cfg, opt_cfg)  # cooldown start step -> (budget, its steps)
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
  _memory_check(cfg, model_cfg, opt_cfg)
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
  _check_model_dir(cfg.model_dir, model_cfg)
  rules = sharding.logical_axis_rules()
  abstract, shardings, init, train_step, eval_step = _programs(
      model_cfg, opt_cfg, mesh, rules, cfg.seq_len, cfg.grad_accum, cfg.z_loss
  )
  warmup = optimizer_lib.warmup_steps(opt_cfg, min([cfg.steps] + [s for _, s in branches.values()]))
  lrs = _lr_table(opt_cfg, cfg.steps, warmup)

  failure.report_full_disk_once()
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
    path = branch_record_path(cfg.model_dir, budget)
    if storage.exists(path):
      return state
    branch_lrs = _lr_table(opt_cfg, steps, warmup)
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
    extra, details = evaluate(eval_step, state["params"], eval_sets)
    record = _record(
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
            evaluate(eval_step, state["params"], eval_sets) if is_eval else (None, None)
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
      final_eval, final_details = evaluate(eval_step, state["params"], eval_sets)
  except BaseException:
    with contextlib.suppress(Exception):
      ckpt.close()  # no save is still writing when the caller cleans up after a failure
    raise
  finally:
    signal.signal(signal.SIGTERM, previous_handler)
    writer.close()
  ckpt.close()

  record = _record(
      cfg, model_cfg, source, cfg.steps, final_eval, final_details, time.time() - t_start
  )
  if primary:
    gin_cli.write_operative_config(cfg.model_dir)
    storage.write_json(record_path, record)
  return record


def branch_record_path(model_dir: str, budget: int) -> str:
  return storage.join(model_dir, "branches", str(budget), "run.json")


def _branch_points(cfg: TrainConfig, opt_cfg) -> Dict[int, tuple]:
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


def _lr_table(opt_cfg, steps: int, warmup: int) -> np.ndarray:
  return np.asarray(
      jax.vmap(optimizer_lib.schedule(opt_cfg, steps, warmup))(jnp.arange(steps)), np.float32
  )


def _record(
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    source,
    steps: int,
    final_eval: dict,
    details: dict,
    wall: float,
    **extra,
) -> dict:
  """The run record: what was trained on what, and its per-domain evaluation."""
  return {
      "model": model_cfg.name,
      "N": param_count(model_cfg),
      "D": steps * cfg.batch_size * cfg.seq_len,
      "steps": steps,
      "mixture": getattr(source, "mixture", "unknown"),
      "shares": getattr(source, "shares", {}),
      "seed": cfg.seed,
      "losses": {
          k.split("/")[1]: v
          for k, v in final_eval.items()
          if k.endswith("/loss") and not k.startswith("eval/avg")
      },
      "loss": final_eval.get("eval/avg/loss"),
      "eval": details,
      "repeats": getattr(source, "repeats", {}),
      "vocabulary": getattr(source, "vocabulary", ""),
      "seq_len": cfg.seq_len,
      "flops_per_token": train_flops_per_token(model_cfg, cfg.seq_len),
      "wall_s": wall,
      "hosts": jax.process_count(),
      "model_dir": storage.abspath(cfg.model_dir),
      **extra,
  }


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
    plan = dry_run(cfg, model_cfg, opt_cfg)
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
    print(json.dumps({k: record[k] for k in ("N", "D", "loss", "wall_s")}), flush=True)


def main(argv=None):
  gin_cli.main("synthjax.train", _run, argv)


if __name__ == "__main__":
  main()
