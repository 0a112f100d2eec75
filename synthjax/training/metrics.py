"""Metrics to MODEL_DIR/metrics.jsonl and TensorBoard event files, and a progress line."""

import json
import math
import os
import shutil
import sys
import tempfile
from typing import Any, Dict, Optional

from synthjax import storage
from synthjax.progress import Rate


class MetricsWriter:
  """Written by host 0 only. On resume, lines past the restored step are dropped first, so
  the file reads as if the run had never been interrupted.

  With MODEL_DIR on an object store (no appends there) both files are written in a local
  staging folder and uploaded whole by `sync()` (at every checkpoint, and at close); what a
  kill loses is only what the resumed run rewrites anyway."""

  def __init__(self, model_dir: str, enabled: bool = True, resume_step: Optional[int] = None):
    self.enabled, self.model_dir = enabled, model_dir
    self._tb: Any = None  # TensorBoard's writer, made only where metrics are written
    if not enabled:
      return
    self.remote = storage.is_remote(model_dir)
    self.local_dir = tempfile.mkdtemp(prefix="synthjax-metrics-") if self.remote else model_dir
    self.path = os.path.join(self.local_dir, "metrics.jsonl")
    target = storage.join(model_dir, "metrics.jsonl")
    if storage.exists(target):
      keep = []
      for line in storage.read_text(target).splitlines():
        try:
          rec = json.loads(line)
        except json.JSONDecodeError:
          continue  # a line cut by a kill
        if resume_step is not None and rec.get("step", 0) <= resume_step:
          keep.append(line + "\n")
      storage.write_text(self.path, "".join(keep))
    from clu import metric_writers  # TensorBoard event files, through TensorFlow's writer

    self._tb_dir = os.path.join(self.local_dir, "tensorboard")
    self._tb = metric_writers.SummaryWriter(self._tb_dir)

  def write(self, step: int, values: Dict[str, float]) -> None:
    if not self.enabled:
      return
    rec = {**{k: _plain(v) for k, v in values.items()}, "step": int(step)}
    with open(self.path, "a") as f:
      f.write(json.dumps(rec, sort_keys=True) + "\n")
    scalars = {k: v for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    self._tb.write_scalars(int(step), scalars)
    self._tb.flush()

  def sync(self) -> None:
    """Upload the staged files (a no-op for a local MODEL_DIR)."""
    if not (self.enabled and self.remote):
      return
    if os.path.exists(self.path):
      storage.upload(self.path, storage.join(self.model_dir, "metrics.jsonl"))
    for name in os.listdir(self._tb_dir):
      storage.upload(
          os.path.join(self._tb_dir, name), storage.join(self.model_dir, "tensorboard", name)
      )

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self.sync()
      if self.remote:
        shutil.rmtree(self.local_dir, ignore_errors=True)
        self._tb = None


def _plain(v):
  try:
    return float(v)
  except (TypeError, ValueError):
    return v


class Progress:
  """`step 40/100 | loss 3.21 | 12.3k tok/s | ETA 1m20s` on stderr."""

  def __init__(self, total_steps: int, start_step: int, enabled: bool = True):
    self.enabled = enabled
    self.steps = Rate(total_steps, start_step)  # a resumed run's steps are not this run's rate

  def line(self, step: int, loss: float, tokens_per_s: float) -> None:
    if not self.enabled:
      return
    self.steps.done = step
    print(
        f"step {step}/{self.steps.total:.0f} | loss {loss:.4f} | {tokens_per_s / 1e3:.2f}k "
        f"tok/s | ETA {self.steps.eta()}",
        file=sys.stderr,
        flush=True,
    )
