"""A study on a cluster: what it costs and whether each size fits the slice it will run on,
then every stage on the Ray cluster at RAY_ADDRESS (ray_study/).

    python -m synthjax.study --gin_file=study/paper.gin --launcher=ray \
        --tpu_version=v4 --tpu_topology=2x2x4 [--retries=3] [--dry_run]

A dry run prints the cost, the memory plan and the stages, and reaches no cluster.
"""

import argparse
import dataclasses
from typing import Sequence

from synthjax import grid
from synthjax.errors import ArgumentParser, UserError
from synthjax.training import memory

# HBM per chip, in GB, from Google's TPU pages (v5e 16 GB, v5p 95 GB, v6e 32 GB; v4 32 GiB).
TPU_HBM_GIB = {
    "v4": 32.0,
    "v5litepod": 16e9 / 2**30,
    "v5e": 16e9 / 2**30,
    "v5p": 95e9 / 2**30,
    "v6e": 32e9 / 2**30,
}


def parser() -> argparse.ArgumentParser:
  p = ArgumentParser(
      prog="python -m synthjax.study",
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("--launcher", choices=("ray",), required=True)
  p.add_argument(
      "--dry_run",
      action="store_true",
      help="print the cost, memory plan and stages; reach no cluster",
  )
  p.add_argument(
      "--retries", type=int, default=3, help="further attempts of a failed or preempted run"
  )
  p.add_argument("--ray_address", default="", help="instead of RAY_ADDRESS")
  p.add_argument("--tpu_version", default="", help="a run's TPU slice: v4, v5p, v6e, ...")
  p.add_argument("--tpu_topology", default="", help="a run's TPU slice: 2x2x2, 4x4, ...")
  p.add_argument("--slice_hosts", type=int, default=1, help="without TPUs: hosts per run")
  p.add_argument("--gpus_per_host", type=int, default=0, help="without TPUs: GPUs per host")
  p.add_argument(
      "--generate_parts",
      type=int,
      default=0,
      help="parts the corpus is generated in (default: 2 per accelerator host)",
  )
  p.add_argument(
      "--backoff_s",
      type=float,
      default=30.0,
      help="pause before a failed run's first retry, doubled each time",
  )
  p.add_argument(
      "--chip_tflops",
      type=float,
      default=275.0,
      help="peak bf16 TFLOP/s of one chip, for the cost line (TPU v4: 275)",
  )
  p.add_argument("--mfu", type=float, default=0.4, help="assumed MFU, for the cost line")
  return p


def memory_slice(shape) -> memory.Slice:
  """The slice a run holds, for the memory check: a TPU slice's chips and their HBM; for GPU
  hosts, the gin-bound Slice (its device memory) over the hosts' GPUs."""
  if shape.is_tpu:
    version = shape.tpu_version.lower()
    if version not in TPU_HBM_GIB:
      raise UserError(f"--tpu_version={shape.tpu_version}: one of {', '.join(TPU_HBM_GIB)}")
    chips = shape.hosts * int(shape.host_resources()["TPU"])
    return memory.Slice(
        name=f"{version} {shape.tpu_topology}",
        devices=chips,
        device_gib=TPU_HBM_GIB[version],
        platform="tpu",
    )
  base = memory.Slice()
  if shape.gpus:
    return dataclasses.replace(
        base,
        name=f"{shape.hosts} x {shape.gpus} GPUs",
        devices=shape.hosts * shape.gpus,
        platform="gpu",
    )
  return base


def run(cfg, args, gin_files: Sequence[str], bindings: Sequence[str]) -> None:
  from synthjax import ray_cluster, ray_study

  if not (0 < args.mfu <= 1 and args.chip_tflops > 0):
    raise UserError(
        f"--mfu must be in (0, 1] and --chip_tflops positive, got {args.mfu} and "
        f"{args.chip_tflops}"
    )
  if args.retries < 0 or args.backoff_s < 0 or args.generate_parts < 0:
    raise UserError(
        f"--retries, --backoff_s and --generate_parts must not be negative, got "
        f"{args.retries}, {args.backoff_s} and {args.generate_parts}"
    )
  shape = ray_cluster.slice_shape(args)
  cfg.validate(dry_run=args.dry_run)
  print(grid.cost_line(grid.grid_cost(cfg, cfg.train_gin), args.chip_tflops, args.mfu), flush=True)
  plans = grid.grid_memory(cfg, cfg.train_gin, memory_slice(shape))
  for size, plan in plans.items():
    print(grid.memory_line(size, plan), flush=True)
  for plan in plans.values():
    memory.require_fit(plan)  # before anything is started
  ray_study.run(cfg, args, shape, gin_files, bindings)
