"""The generate stage on Ray: one resident actor per accelerator host, parts from one queue."""

import collections
from typing import Any, Dict, List

from synthjax import lease, ray_cluster, storage
from synthjax.errors import UserError
from synthjax.ray_study.context import Context, last_line, log, study_args


class GenerationHost:
  """One accelerator host's generation worker (a Ray actor). It runs the study's generate
  stage for each part it is handed, in its own process, so the generator's weights loaded for
  its first part serve every later one (generate/job.py keeps them)."""

  def __init__(self, args: List[str]):
    self.args = args

  def ready(self) -> bool:
    return True

  def part(self, index: int, parts: int, log_path: str, lease_wait_s: float) -> dict:
    env = {
        "SYNTHJAX_PROCESS_ID": str(index),
        "SYNTHJAX_NUM_PROCESSES": str(parts),
        lease.WAIT_ENV: str(lease_wait_s),
    }
    return ray_cluster.run_in_process(self.args, env, log_path)


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
  args = study_args(ctx, "generate")
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
        wait_s = lease.RETRY_WAIT_S if lost[i] else 0.0
        log_path = storage.join(ctx.logs, f"generate-{i}-of-{parts}.log")
        running[actor.part.remote(i, parts, log_path, wait_s)] = (actor, i)
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
          log(f"generate: part {i} lost with its host ({type(e).__name__}); queued again")
          queue.append(i)
        actor = host.remote(args)
        starting[actor.ready.remote()] = actor
        continue
      idle.append(actor)
      if res["code"] != 0:
        failed.append(f"part {i} on {res['node']}: {last_line(res['tail'])}")
      else:
        done += 1
        log(f"generate: part {i} done on {res['node']} ({done} of {parts} parts)")
  finally:  # the accelerators go back to Ray for training
    for actor in [*starting.values(), *idle, *(a for a, _ in running.values())]:
      ray.kill(actor)
  if failed:
    raise UserError(
        f"stage generate: {len(failed)} of {parts} parts failed ({failed[0]}; logs "
        f"in {ctx.logs}); rerun the command to resume"
    )
