"""Train-state checkpoints: orbax CheckpointManager (async) + each host's data-iterator state.

MODEL_DIR/checkpoints/<step>/state     params, optimizer state, step (orbax, sharded)
MODEL_DIR/data_state/<step>/process_<i>.json
                                       host i's iterator state at that step, written before
                                       the orbax save starts, so every committed step has it.
Keeps the last `keep` checkpoints plus the `milestones` steps.
"""
import json
import os
import shutil
from typing import Optional, Sequence

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from synthjax import atomic


class TrainCheckpointer:

  def __init__(self, model_dir: str, keep: int = 2, milestones: Sequence[int] = ()):
    self.model_dir = os.path.abspath(model_dir)
    policies = [pp.LatestN(keep)]
    if milestones:
      policies.append(pp.CustomSteps(list(milestones)))
    self.manager = ocp.CheckpointManager(
        os.path.join(self.model_dir, "checkpoints"),
        options=ocp.CheckpointManagerOptions(
            preservation_policy=pp.AnyPreservationPolicy(policies),
            enable_async_checkpointing=True, create=True))

  def _data_path(self, step: int, process: Optional[int] = None) -> str:
    process = jax.process_index() if process is None else process
    return os.path.join(self.model_dir, "data_state", str(step), f"process_{process}.json")

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict) -> None:
    atomic.write_json(self._data_path(step), data_state)
    self.manager.save(step, args=ocp.args.StandardSave(state))
    self._drop_stale_data_states()

  def restore(self, step: int, abstract_state):
    """abstract_state: ShapeDtypeStructs carrying the target shardings."""
    state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    with open(self._data_path(step)) as f:
      return state, json.load(f)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

  def _drop_stale_data_states(self) -> None:
    if jax.process_index() != 0:
      return
    root = os.path.join(self.model_dir, "data_state")
    kept = set(self.manager.all_steps())
    newest = max(kept, default=0)
    for name in os.listdir(root):
      # Steps newer than the newest committed one may still be saving: keep those too.
      if name.isdigit() and int(name) not in kept and int(name) < newest:
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
