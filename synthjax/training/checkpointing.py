"""Train-state checkpoints: one orbax CheckpointManager (async) per run, local or on an object
store.

MODEL_DIR/checkpoints/<step>/state    params, optimizer state, step (sharded arrays)
MODEL_DIR/checkpoints/<step>/data     the data iterator's state (JSON; the global batch index,
                                      the same on every host), committed with the arrays, so
                                      a job resumed on another number of hosts replays the
                                      same stream
Keeps the last `keep` checkpoints plus the `milestones` steps.
"""

from typing import Optional, Sequence

import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from synthjax import storage


class TrainCheckpointer:

  def __init__(
      self, model_dir: str, keep: int = 2, milestones: Sequence[int] = (), ocdbt: bool = True
  ):
    policies = [pp.LatestN(keep)]
    if milestones:
      policies.append(pp.CustomSteps(list(milestones)))
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for args in (ocp.args.StandardSave, ocp.args.StandardRestore):
      registry.add("state", args, ocp.StandardCheckpointHandler(use_ocdbt=ocdbt))
    self.manager = ocp.CheckpointManager(
        storage.join(storage.abspath(model_dir), "checkpoints"),
        options=ocp.CheckpointManagerOptions(
            preservation_policy=pp.AnyPreservationPolicy(policies),
            enable_async_checkpointing=True,
            create=True,
        ),
        handler_registry=registry,
    )

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict) -> None:
    self.manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)
        ),
    )

  def restore(self, step: int, abstract_state):
    """abstract_state: ShapeDtypeStructs carrying the target shardings."""
    out = self.manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
        ),
    )
    return out["state"], dict(out["data"])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    try:
      self.manager.wait_until_finished()  # raises a failed background save's error
    finally:
      self.manager.close()
