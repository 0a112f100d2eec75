"""What every stage of a study on Ray shares: the study's settings and the cluster's shape,
how a stage's binary is called, the driver's log lines."""

import dataclasses
import sys
from typing import List, Sequence

from synthjax import ray_cluster
from synthjax.study_config import StudyConfig


def log(msg: str) -> None:
  print(f"study: {msg}", file=sys.stderr, flush=True)


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


def study_args(ctx: Context, stage: str) -> List[str]:
  return (
      ["python3", "-m", "synthjax.study"]
      + [f"--gin_file={f}" for f in ctx.gin_files]
      + [f"--gin_bindings={b}" for b in ctx.bindings]
      + [f'--gin_bindings=StudyConfig.stages = ["{stage}"]']
  )


def last_line(text: str) -> str:
  lines = [l for l in text.splitlines() if l.strip()]
  return lines[-1][:300] if lines else "(no output)"
