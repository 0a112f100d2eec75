"""The train stage on Ray: each run gang-scheduled on every host of one slice, retried until
its records are in the study folder."""

import concurrent.futures
import threading
import time
from typing import Dict, Sequence

from synthjax import grid, lease, plan, ray_cluster, storage
from synthjax.errors import UserError
from synthjax.progress import Rate
from synthjax.ray_study.context import Context, last_line, log


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
      log(
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
    log(f"train {job.name}: attempt {attempt + 1} failed: {why}")
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
    return f"no slice: {last_line(str(e))}"
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
            lease.WAIT_ENV: str(lease.RETRY_WAIT_S if retry else 0),
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
      + ("was lost" if r is None else f"exited {r['code']}: {last_line(r['tail'])}")
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


def train_stage(ctx: Context, study: plan.Study, slices: int) -> None:
  cfg = ctx.cfg
  runs = cfg.train_runs()
  jobs = plan.train_jobs(study)
  todo = [
      (j, r["budget"]) for j, r in zip(jobs, runs) if not all(storage.exists(p) for p in j.records)
  ]
  log(
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
