"""A study on a Ray cluster: every stage as Ray work, the cluster's own scheduler placing it.

    ray up launch/ray/tpu_v4.yaml          # or gpu_hosts.yaml; then, on the head node:
    RAY_ADDRESS=... python -m synthjax.study --gin_file=study/paper.gin --launcher=ray \\
        --tpu_version=v4 --tpu_topology=2x2x4

Where each stage runs:
- corpus, vocab, tokenize and analyze: one Ray task on the head node (a CPU machine in the
  launch/ray configs), never on an accelerator host;
- generate: one actor per accelerator host (GenerationHost), holding its generator's weights
  across parts; the corpus is split into parts (`--generate_parts`, a few per host) handed
  from one queue to actors as they free up. A part lost with its host goes back to the queue
  and is run again elsewhere, where it skips the shards already written (a shard is written
  whole, once: every chunk ends up exactly once);
- train: every run of the grid gang-scheduled on all hosts of one slice (a TPU slice through
  ray.util.tpu's slice placement group; GPU hosts through a placement group of one bundle per
  host), each host a fresh `python -m synthjax.train` process of the run's gin job
  (plan.train_job), process 0's node the jax.distributed coordinator on a free port.

A run is done only when its records are in the study folder. A run that fails (a non-zero
exit, a preempted process: SIGTERM makes train save and exit 143, a lost node) is tried again
after a growing pause, on whichever slice Ray gives, and resumes from its checkpoint; a run
that fails `--retries` more times stops the study before analyze, naming its log. The study
folder must be a store every node reads (gs://) once the cluster has more than one node.
"""

import collections
import concurrent.futures
import dataclasses
import os
import sys
import threading
import time
from typing import Any, Dict, List, Sequence

from synthjax import grid, lease, plan, ray_cluster, storage
from synthjax.errors import UserError
from synthjax.progress import Rate
from synthjax.study_config import EMBEDDED, StudyConfig


def _log(msg: str) -> None:
  print(f"study: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- stages


@dataclasses.dataclass
class Context:
  cfg: StudyConfig
  gin_files: Sequence[str]
  bindings: Sequence[str]
  shape: ray_cluster.SliceShape
  retries: int
  backoff_s: float
  logs: str  # where each unit of work appends its output (on the study's store)
  generate_parts: int
  hosts: int  # accelerator hosts in the cluster's whole slices: one generation actor each


def _study_args(ctx: Context, stage: str) -> List[str]:
  return (
      ["python3", "-m", "synthjax.study"]
      + [f"--gin_file={f}" for f in ctx.gin_files]
      + [f"--gin_bindings={b}" for b in ctx.bindings]
      + [f'--gin_bindings=StudyConfig.stages = ["{stage}"]']
  )


def _on_head(fn):
  """CPU work: on the head node, never on an accelerator host."""
  return fn.options(num_cpus=1, resources={"node:__internal_head__": 0.001})


def cpu_stage(ctx: Context, stage: str) -> None:
  import ray

  task = _on_head(ray.remote(ray_cluster.run_binary))
  log = storage.join(ctx.logs, f"{stage}.log")
  res = ray.get(task.remote(_study_args(ctx, stage), {}, log))
  if res["code"] != 0:
    raise UserError(
        f"stage {stage} failed on {res['node']} (exit {res['code']}; log: {log}): "
        f"{_last_line(res['tail'])}"
    )


class GenerationHost:
  """One accelerator host's generation worker (a Ray actor). It runs the study's generate
  stage for each part it is handed, in its own process, so the generator's weights loaded for
  its first part serve every later one (generate/job.py keeps them)."""

  def __init__(self, args: List[str]):
    self.args = args

  def ready(self) -> bool:
    return True

  def part(self, index: int, parts: int, log: str, lease_wait_s: float) -> dict:
    from synthjax import study

    env = {
        "SYNTHJAX_PROCESS_ID": str(index),
        "SYNTHJAX_NUM_PROCESSES": str(parts),
        lease.WAIT_ENV: str(lease_wait_s),
    }
    return ray_cluster.run_in_process(study.main, self.args[3:], env, log)


def generate_stage(ctx: Context) -> None:
  """The corpus in parts, handed from one queue to one GenerationHost actor per accelerator
  host as each frees up. A part whose actor is lost (its node died) goes back to the queue; the
  next actor to take it skips the shards already written (each is written whole, once) and
  waits out the lost holder's lease. A lost actor is replaced; Ray places the new one where a
  host is free."""
  import ray

  parts = ctx.generate_parts
  host: Any = ray.remote(GenerationHost).options(
      num_cpus=0, resources=ctx.shape.host_resources(), max_restarts=0
  )
  args = _study_args(ctx, "generate")
  starting = {}  # actor's ready ref -> actor
  for _ in range(min(ctx.hosts, parts)):
    actor = host.remote(args)
    starting[actor.ready.remote()] = actor
  idle: List = []
  running: Dict = {}  # part's ref -> (actor, part)
  queue = collections.deque(range(parts))
  lost: collections.Counter = collections.Counter()  # part -> times its actor was lost
  failed: List[str] = []
  done = 0
  try:
    while queue or running:
      while queue and idle:
        actor, i = idle.pop(), queue.popleft()
        wait_s = lease.TTL_S + 15 if lost[i] else 0.0
        log = storage.join(ctx.logs, f"generate-{i}-of-{parts}.log")
        running[actor.part.remote(i, parts, log, wait_s)] = (actor, i)
      (ref,), _ = ray.wait([*starting, *running], num_returns=1)
      if ref in starting:
        actor = starting.pop(ref)
        try:
          ray.get(ref)
          idle.append(actor)
        except ray.exceptions.RayError:  # it could not start: another takes its place
          actor = host.remote(args)
          starting[actor.ready.remote()] = actor
        continue
      actor, i = running.pop(ref)
      try:
        res = ray.get(ref)
      except ray.exceptions.RayError as e:  # the actor died with its node
        lost[i] += 1
        if lost[i] > ctx.retries:
          failed.append(f"part {i}: lost {lost[i]} times ({type(e).__name__})")
        else:
          _log(f"generate: part {i} lost with its host ({type(e).__name__}); queued again")
          queue.append(i)
        actor = host.remote(args)
        starting[actor.ready.remote()] = actor
        continue
      idle.append(actor)
      if res["code"] != 0:
        failed.append(f"part {i} on {res['node']}: {_last_line(res['tail'])}")
      else:
        done += 1
        _log(f"generate: part {i} done on {res['node']} ({done} of {parts} parts)")
  finally:  # the accelerators go back to Ray for training
    for actor in [*starting.values(), *idle, *(a for a, _ in running.values())]:
      ray.kill(actor)
  if failed:
    raise UserError(
        f"stage generate: {len(failed)} of {parts} parts failed ({failed[0]}; logs "
        f"in {ctx.logs}); rerun the command to resume"
    )


class _Slice:
  """One slice held for one attempt of a run: a placement group with a bundle per host."""

  def __init__(self, shape: ray_cluster.SliceShape):
    from ray.util.placement_group import PlacementGroup, placement_group

    self._tpu = None
    self.pg: PlacementGroup
    if shape.is_tpu:
      from ray.util.tpu import SlicePlacementGroup

      self._tpu = SlicePlacementGroup(
          topology=shape.tpu_topology,
          accelerator_version=shape.tpu_version,
          head_reservation_timeout_s=None,
      )
      pg = self._tpu.placement_group
      if pg is None:
        raise RuntimeError(f"Ray made no placement group for a {shape.tpu_topology} slice")
      self.pg = pg
    else:
      self.pg = placement_group(
          [dict(shape.host_resources()) for _ in range(shape.hosts)], strategy="STRICT_SPREAD"
      )
    self.hosts = shape.hosts

  def ready(self) -> None:
    import ray

    ray.get(self.pg.ready())

  def on_host(self, fn, i: int):
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return fn.options(
        num_cpus=0,
        scheduling_strategy=PlacementGroupSchedulingStrategy(
            placement_group=self.pg, placement_group_bundle_index=i
        ),
    )

  def release(self) -> None:
    from ray.util.placement_group import remove_placement_group

    try:
      if self._tpu is not None:
        self._tpu.shutdown()
      else:
        remove_placement_group(self.pg)
    except Exception:  # the cluster may be gone already
      pass


class Progress:
  """One line as runs end: done / running / retried / failed, tokens a second, ETA."""

  def __init__(self, jobs: Sequence[grid.Job], tokens: Dict[str, int]):
    self.total = len(jobs)
    self.tokens = Rate(sum(tokens.values()))
    self.done = self.running = self.retried = self.failed = 0
    self._lock = threading.Lock()

  def update(self, trained: int = 0, **delta) -> None:
    """The counts moved by delta, and `trained` tokens more (runs done before are not here)."""
    with self._lock:
      for k, v in delta.items():
        setattr(self, k, getattr(self, k) + v)
      self.tokens.add(trained)
      _log(
          f"train: {self.done} of {self.total} done, {self.running} running, "
          f"{self.retried} retried, {self.failed} failed; "
          f"{self.tokens.per_second():,.0f} tokens/s; ETA {self.tokens.eta()}"
      )


def train_run(ctx: Context, job: grid.Job, budget: int, progress: Progress) -> str:
  """One run of the grid until its records are in the study folder, each attempt on a slice
  Ray gives; a failed attempt is retried after a doubling pause."""
  logs = storage.join(ctx.logs, "train", job.name)  # a log a host: they write at once
  why = ""
  for attempt in range(ctx.retries + 1):
    if attempt:
      progress.update(retried=1)
      time.sleep(min(ctx.backoff_s * 2 ** (attempt - 1), 300))
    why = _attempt(ctx, job, logs, progress, retry=attempt > 0)
    if not why and all(storage.exists(p) for p in job.records):
      progress.update(done=1, trained=budget)
      return "done"
    why = why or "it ended without its run record"
    _log(f"train {job.name}: attempt {attempt + 1} failed: {why}")
  progress.update(failed=1)
  return f"failed after {ctx.retries + 1} attempts (logs: {logs}/): {why}"


def _attempt(ctx: Context, job: grid.Job, logs: str, progress: Progress, retry: bool) -> str:
  """Hold a slice, start the run's binary on every host at once, let the slice go when they
  end. Returns why the attempt failed, or '' when every host exited 0. A retry waits out the
  lease of an attempt lost with its machine."""
  import ray

  try:
    held = _Slice(ctx.shape)
  except Exception as e:  # Ray could not reserve a slice (a timeout, a slice gone)
    return f"no slice: {_last_line(str(e))}"
  try:
    held.ready()
    progress.update(running=1)
    try:
      ip, port = ray.get(held.on_host(ray.remote(ray_cluster.free_port), 0).remote())
      refs = []
      for i in range(held.hosts):
        env = {
            "SYNTHJAX_COORDINATOR": f"{ip}:{port}",
            "SYNTHJAX_NUM_PROCESSES": str(held.hosts),
            "SYNTHJAX_PROCESS_ID": str(i),
            lease.WAIT_ENV: str(lease.TTL_S + 15 if retry else 0),
        }
        refs.append(
            held.on_host(ray.remote(ray_cluster.run_binary), i).remote(
                job.args(), env, storage.join(logs, f"host{i}.log")
            )
        )
      results = _all_or_none(refs)
    except ray.exceptions.RayError as e:  # the coordinator's node was lost
      return f"a host was lost ({type(e).__name__})"
    finally:
      progress.update(running=-1)
  finally:
    held.release()
  failed = [(i, r) for i, r in enumerate(results) if r is None or r["code"] != 0]
  if not failed:
    return ""
  i, r = failed[0]
  codes = ", ".join("lost" if r is None else str(r["code"]) for r in results)
  return (
      f"host {i} "
      + ("was lost" if r is None else f"exited {r['code']}: {_last_line(r['tail'])}")
      + f" (exit codes {codes})"
  )


def _all_or_none(refs) -> list:
  """Every host's result; when one host fails or is lost the others are stopped (a run's
  hosts wait on each other in jax.distributed), their results None."""
  import ray

  results: Dict = {r: None for r in refs}
  pending = list(refs)
  while pending:
    ready, pending = ray.wait(pending, num_returns=1)
    try:
      results[ready[0]] = ray.get(ready[0])
      ok = results[ready[0]]["code"] == 0
    except ray.exceptions.RayError:
      ok = False
    if not ok:
      for r in pending:
        ray.cancel(r, force=True)
      for r in pending:
        try:
          results[r] = ray.get(r)
        except ray.exceptions.RayError:
          pass
      break
  return [results[r] for r in refs]


def _last_line(text: str) -> str:
  lines = [l for l in text.splitlines() if l.strip()]
  return lines[-1][:300] if lines else "(no output)"


def train_stage(ctx: Context, slices: int) -> None:
  cfg = ctx.cfg
  runs = cfg.train_runs()
  jobs = plan.train_jobs(cfg, plan.study_paths(cfg))
  todo = [
      (j, r["budget"]) for j, r in zip(jobs, runs) if not all(storage.exists(p) for p in j.records)
  ]
  _log(
      f"train: {len(jobs) - len(todo)} of {len(jobs)} runs done already; {len(todo)} to go "
      f"on {slices} slices of {ctx.shape.describe()}"
  )
  progress = Progress([j for j, _ in todo], {j.name: b for j, b in todo})
  # Each thread waits on Ray for one run: Ray's placement groups decide which runs hold
  # slices now; the rest wait in Ray's queue.
  with concurrent.futures.ThreadPoolExecutor(max(1, min(len(todo), 4 * slices))) as pool:
    outcomes = dict(
        zip(
            [j.name for j, _ in todo],
            pool.map(lambda jb: train_run(ctx, jb[0], jb[1], progress), todo),
        )
    )
  failed = {n: o for n, o in outcomes.items() if o != "done"}
  if failed:
    name, why = sorted(failed.items())[0]
    raise UserError(
        f"stage train: {len(failed)} of {len(todo)} runs failed ({name}: {why}); "
        "later stages need them, so the study stops here; rerun the command to "
        "resume"
    )


def run(
    cfg, args, shape: ray_cluster.SliceShape, gin_files: Sequence[str], bindings: Sequence[str]
) -> None:
  """Every stage of the study on the cluster at RAY_ADDRESS, in order; a dry run names the
  stages and the runs and reaches no cluster."""
  ray_cluster.require_tfds_data_dir(cfg)
  stages = [s for s in cfg.stages if s != "corpus" or cfg.natural == EMBEDDED]
  if args.dry_run:
    for stage in stages:
      where = {"generate": "accelerator hosts", "train": f"slices of {shape.describe()}"}
      print(
          f"stage {stage}: on {where.get(stage, 'the head node')}"
          + (f", {len(cfg.train_runs())} runs" if stage == "train" else ""),
          flush=True,
      )
    return
  import ray

  address = args.ray_address or os.environ.get("RAY_ADDRESS", "")
  # What every process of this study needs to see of the environment (an emulated store).
  env = {
      k: os.environ[k]
      for k in (
          "STORAGE_EMULATOR_HOST",
          "TENSORSTORE_GCS_HTTP_URL",
          "JAX_PLATFORMS",
          "XLA_FLAGS",
          "SYNTHJAX_COMPILE_CACHE",
          "TF_CPP_MIN_LOG_LEVEL",
          "PYTHONPATH",
      )
      if k in os.environ
  }
  if cfg.tfds_data_dir:
    env["TFDS_DATA_DIR"] = cfg.tfds_data_dir
  # The study folder's lease is this driver's; the stages it runs as jobs hold it through it.
  held = lease.Lease(cfg.study_dir, "a study on Ray")
  env[plan.LEASE_ENV] = held.mine["owner"]
  ray_cluster.connect(address, env)
  try:
    nodes = ray_cluster.alive_nodes()
    ray_cluster.require_shared_store(cfg.study_dir, nodes)
    slices = ray_cluster.require_slices(shape, nodes)
    _log(f"ray: {len(nodes)} nodes at {address}; {slices} slices of {shape.describe()}")
    ctx = Context(
        cfg,
        gin_files,
        bindings,
        shape,
        args.retries,
        args.backoff_s,
        storage.join(cfg.study_dir, "logs"),
        args.generate_parts or 2 * slices * shape.hosts,
        slices * shape.hosts,
    )
    storage.makedirs(cfg.study_dir)
    with held:
      _stages(ctx, cfg, stages, slices)
  finally:
    ray.shutdown()


def _stages(ctx, cfg, stages, slices) -> None:
  """Each stage in turn: CPU stages on the head node, generation on accelerator hosts, the
  training runs on slices."""
  for stage in stages:
    t = time.time()
    print(f"stage {stage} ...", flush=True)
    if stage == "generate":
      generate_stage(ctx)
    elif stage == "train":
      plan.check_budgets(cfg, plan.study_paths(cfg))  # the tokenized copies' stats
      train_stage(ctx, slices)
    else:
      cpu_stage(ctx, stage)
    print(f"stage {stage} done in {time.time() - t:.0f}s", flush=True)
  if "analyze" in stages:
    print(f"report: {storage.join(plan.study_paths(cfg)['report'], 'report.md')}", flush=True)
