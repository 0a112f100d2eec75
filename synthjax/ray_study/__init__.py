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

import os
import time
from typing import Sequence

from synthjax import lease, plan, ray_cluster, storage
from synthjax.errors import UserError
from synthjax.ray_study.context import Context, last_line, log, study_args
from synthjax.ray_study.generation import generate_stage
from synthjax.ray_study.training import train_stage
from synthjax.study_config import EMBEDDED


def _on_head(fn):
  """CPU work: on the head node, never on an accelerator host."""
  return fn.options(num_cpus=1, resources={"node:__internal_head__": 0.001})


def cpu_stage(ctx: Context, stage: str) -> None:
  import ray

  task = _on_head(ray.remote(ray_cluster.run_binary))
  log_path = storage.join(ctx.logs, f"{stage}.log")
  res = ray.get(task.remote(study_args(ctx, stage), {}, log_path))
  if res["code"] != 0:
    raise UserError(
        f"stage {stage} failed on {res['node']} (exit {res['code']}; log: {log_path}): "
        f"{last_line(res['tail'])}"
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
    log(f"ray: {len(nodes)} nodes at {address}; {slices} slices of {shape.describe()}")
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
      study = plan.Study(cfg)  # built after the stages before it: their outputs are its data
      plan.check_budgets(study)  # the tokenized copies' stats
      train_stage(ctx, study, slices)
    else:
      cpu_stage(ctx, stage)
    print(f"stage {stage} done in {time.time() - t:.0f}s", flush=True)
  if "analyze" in stages:
    print(f"report: {storage.join(plan.study_paths(cfg)['report'], 'report.md')}", flush=True)
