"""What a failed run leaves in MODEL_DIR: its completed checkpoints (a rerun resumes from them)
and, for a divergence, diverged.json saying why; never a half-written checkpoint, and nothing
else from a run that had saved no checkpoint yet."""

import errno
import logging
import sys
from typing import Optional

import gin
import orbax.checkpoint as ocp

from synthjax import storage
from synthjax.errors import UserError

# Everything a run writes in MODEL_DIR besides its record and its lease.
RUN_FILES = ("model.json", "config.gin", "metrics.jsonl", "tensorboard", "checkpoints", "branches")
DIVERGED = "diverged.json"


class Diverged(UserError):
  """The training loss is no longer finite."""

  def __init__(self, message: str, step: int, loss: float):
    super().__init__(message)
    self.step, self.loss = step, loss


NO_SPACE = "No space left on device"  # the text tensorstore's errors carry (through orbax)


def no_space(e: BaseException) -> bool:
  """A write failed for want of room: an OSError, or tensorstore's error text (orbax)."""
  return (isinstance(e, OSError) and e.errno == errno.ENOSPC) or NO_SPACE in str(e)


class _ReportedByTrain(logging.Filter):
  """Orbax logs a failed background save with its traceback before the error reaches the
  training loop; a full disk is reported there in one line, so its log record is dropped."""

  def filter(self, record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return not (NO_SPACE in record.getMessage() or (error is not None and no_space(error)))


def _is_cancelled_write(unraisable) -> bool:
  """When a save fails, orbax ends its event loop while tensorstore still completes the other
  writes of that save; each completion then fails to reach the closed loop and tensorstore hands
  the RuntimeError to sys.unraisablehook, which would print its traceback amid the error line."""
  error = unraisable.exc_value
  return isinstance(error, RuntimeError) and str(error) == "Event loop is closed"


def report_failed_saves_once() -> None:
  """A failed save is reported by the training loop in one line: drop orbax's log of it and
  tensorstore's tracebacks of the writes it cancelled."""
  logger = logging.getLogger("absl")
  if not any(isinstance(f, _ReportedByTrain) for f in logger.filters):
    logger.addFilter(_ReportedByTrain())
  previous = sys.unraisablehook
  if getattr(previous, "drops_cancelled_writes", False):
    return

  def hook(unraisable) -> None:
    if not _is_cancelled_write(unraisable):
      previous(unraisable)

  hook.drops_cancelled_writes = True  # type: ignore[attr-defined]
  sys.unraisablehook = hook


def committed_steps(model_dir: str) -> list:
  """The checkpoints orbax finalized (a half-written one is not among them)."""
  return sorted(ocp.step.checkpoint_steps(storage.join(storage.abspath(model_dir), "checkpoints")))


def clear(model_dir: str) -> list:
  """Remove half-written checkpoints; with no checkpoint committed, every run file too.
  Returns the committed steps (what a rerun resumes from)."""
  steps = committed_steps(model_dir)
  if steps:
    folder = storage.join(model_dir, "checkpoints")
    for name in storage.listdir(folder):
      if not (name.isdigit() and int(name) in steps):
        storage.remove_tree(storage.join(folder, name))
  else:
    for name in RUN_FILES:
      storage.remove_tree(storage.join(model_dir, name))
  return steps


def after(e: BaseException, model_dir: str) -> Optional[UserError]:
  """Clean MODEL_DIR after a divergence or a full disk and say what is left; any other error
  is the caller's to raise as it is (None)."""
  if isinstance(e, Diverged):
    steps = clear(model_dir)
    kept = (
        f"the checkpoint of step {steps[-1]} is kept"
        if steps
        else "nothing else of the run is kept"
    )
    storage.write_json(
        storage.join(model_dir, DIVERGED),
        {
            "error": str(e),
            "step": e.step,
            "loss": e.loss,
            "checkpoints": steps,
            "config": gin.operative_config_str(),
        },
    )
    return UserError(f"{e}; {storage.join(model_dir, DIVERGED)} records it, {kept}")
  if no_space(e):
    steps = clear(model_dir)
    kept = (
        f"the checkpoint of step {steps[-1]} is kept: rerun to resume once there is room"
        if steps
        else "nothing was saved and the run's files are removed"
    )
    return UserError(f"no space left on device writing MODEL_DIR {model_dir}; {kept}")
  return None
