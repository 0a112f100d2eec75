"""The training loader: exact token shares, packed rows, host shards, a one-integer state.

A run with budget D and shares r_i draws exactly r_i * D tokens from component i: its
documents in a seeded random order, each seen once (unless repetition is allowed), the last one
cut to fit. The components' documents are interleaved by where they fall in their own stream,
so every stretch of training sees the shares, and the result is one token stream. Row r of the
stream is tokens [r T, r T + T + 1): inputs are the first T, targets the last T. Global batch b
is rows [b B, (b + 1) B) and host h of H reads its contiguous B / H of them.

Batches carry "inputs", "targets", "weights", "segment_ids" and "positions" (segment ids
restart per document within a row when `segment_ids=True`, else one segment per row) and
"source_ids" (index of the component each input token came from).
The iterator is a Grain MapDataset over batch indices; its state is {"next_index": b}.
"""
import math
from typing import Dict, List

import gin
import grain
import numpy as np

from synthjax.data import tasks as tasks_lib
from synthjax.data.materialize import TokenizedTask
from synthjax.errors import UserError


class TokenStream:
  """The planned stream: segments (component, document, start, length) and their offsets."""

  def __init__(self, components: Dict[str, float], total_tokens: int, seed: int,
               allow_repeat: bool = False):
    self.names = list(components)
    self.tasks = [TokenizedTask(n) for n in self.names]
    need = _split_exactly(total_tokens, [components[n] for n in self.names])
    segs, keys = [], []
    for c, (task, n_need) in enumerate(zip(self.tasks, need)):
      if n_need == 0:
        continue
      available = int(task.lengths.sum())
      if n_need > available and not allow_repeat:
        raise UserError(f"task {task.name!r} has {available} unique tokens, but this budget "
                        f"needs {n_need} from it (share {components[task.name]:.3g} of "
                        f"{total_tokens}); lower the budget or allow repetition")
      rng = np.random.default_rng((seed, c))
      taken = 0
      while taken < n_need:
        for doc in rng.permutation(len(task)):
          length = min(int(task.lengths[doc]), n_need - taken)
          segs.append((c, int(doc), length))
          keys.append((taken + length / 2) / n_need)  # midpoint within this component
          taken += length
          if taken == n_need:
            break
    order = np.argsort(np.asarray(keys), kind="stable")
    self.segments = np.asarray(segs, np.int64)[order]        # (component, doc, length)
    self.offsets = np.concatenate([[0], np.cumsum(self.segments[:, 2])])
    self.total = int(self.offsets[-1])

  def read(self, start: int, count: int):
    """Tokens [start, start + count) with their component, segment and position."""
    first = int(np.searchsorted(self.offsets, start, side="right")) - 1
    tokens, comps, segs, pos = [], [], [], []
    i, at, seg_no = first, start, 0
    while at < start + count:
      c, doc, length = self.segments[i]
      within = at - self.offsets[i]
      take = min(length - within, start + count - at)
      doc_tokens = self.tasks[c].tokens(doc)
      tokens.append(doc_tokens[within:within + take])
      comps.append(np.full(take, c))
      seg_no += 1
      segs.append(np.full(take, seg_no))
      pos.append(np.arange(within, within + take))
      at += take
      i += 1
    return (np.concatenate(tokens), np.concatenate(comps), np.concatenate(segs),
            np.concatenate(pos))


def _split_exactly(total: int, shares: List[float]) -> List[int]:
  """Integer token counts proportional to shares that add up to exactly `total`."""
  raw = [total * s for s in shares]
  counts = [int(math.floor(x)) for x in raw]
  for i in np.argsort([c - x for c, x in zip(counts, raw)])[:total - sum(counts)]:
    counts[i] += 1
  return counts


@gin.configurable
class MixtureLoader:
  """The trainer's data source for a seqio task or mixture name at a token budget."""

  def __init__(self, batch_size: int, seq_len: int, mixture: str = gin.REQUIRED,
               budget: int = gin.REQUIRED, seed: int = 0, segment_ids: bool = True,
               allow_repeat: bool = False, process_index: int = 0, process_count: int = 1,
               threads: int = 2, register=None):
    if register is not None:  # e.g. @register_study_data: a launched job registers its tasks
      register()
    if budget <= 0:
      raise UserError(f"budget must be positive, got {budget}")
    if batch_size % process_count:
      raise UserError(f"batch size {batch_size} is not divisible by {process_count} hosts")
    self.shares = tasks_lib.get_components(mixture)
    self.mixture = mixture
    self.batch_size, self.seq_len, self.segment_ids = batch_size, seq_len, segment_ids
    self.local = batch_size // process_count
    self.offset = process_index * self.local
    self.steps = math.ceil(budget / (batch_size * seq_len))
    self.stream = TokenStream(self.shares, self.steps * batch_size * seq_len + 1, seed,
                              allow_repeat)
    dataset = grain.MapDataset.range(self.steps).map(self._batch)
    self._iter = iter(dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=threads, prefetch_buffer_size=4)))

  def _row(self, r: int):
    tokens, comps, segs, pos = self.stream.read(r * self.seq_len, self.seq_len + 1)
    T = self.seq_len
    if not self.segment_ids:
      segs, pos = np.ones_like(segs), np.arange(T + 1)
    return tokens[:T], tokens[1:], comps[:T], segs[:T], pos[:T]

  def _batch(self, b: int) -> Dict[str, np.ndarray]:
    rows = [self._row(b * self.batch_size + self.offset + i) for i in range(self.local)]
    inputs, targets, comps, segs, pos = (np.stack(x).astype(np.int32) for x in zip(*rows))
    return {"inputs": inputs, "targets": targets, "weights": np.ones_like(inputs),
            "segment_ids": segs, "positions": pos, "source_ids": comps}

  def next_batch(self) -> Dict[str, np.ndarray]:
    try:
      return next(self._iter)
    except StopIteration:
      raise UserError(f"mixture {self.mixture!r}: the {self.steps} planned batches are "
                      "used up") from None

  def get_state(self) -> dict:
    return dict(self._iter.get_state())

  def set_state(self, state: dict) -> None:
    self._iter.set_state(state)


@gin.configurable
class EvalSet:
  """A validation domain: its task's documents in order, packed, the same for every run."""

  def __init__(self, batch_size: int, seq_len: int, task: str = gin.REQUIRED,
               process_index: int = 0, process_count: int = 1):
    self.task = TokenizedTask(task)
    self.stream = TokenStream({task: 1.0}, int(self.task.lengths.sum()), seed=0)
    self.stream.segments = self.stream.segments[np.argsort(self.stream.segments[:, 1])]
    self.stream.offsets = np.concatenate([[0], np.cumsum(self.stream.segments[:, 2])])
    self.batch_size, self.seq_len = batch_size, seq_len
    self.local = batch_size // process_count
    self.offset = process_index * self.local
    self.rows = (self.stream.total - 1) // seq_len
    self.next_index = 0

  def next_batch(self) -> Dict[str, np.ndarray]:
    """Batch b of the domain; rows past its end wrap around (weights 0 there)."""
    out = {k: [] for k in ("inputs", "targets", "weights", "segment_ids", "positions")}
    for i in range(self.local):
      r = self.next_index * self.batch_size + self.offset + i
      tokens, _, segs, pos = self.stream.read((r % self.rows) * self.seq_len, self.seq_len + 1)
      T = self.seq_len
      out["inputs"].append(tokens[:T])
      out["targets"].append(tokens[1:])
      out["weights"].append(np.full(T, 1 if r < self.rows else 0))
      out["segment_ids"].append(segs[:T])
      out["positions"].append(pos[:T])
    self.next_index += 1
    return {k: np.stack(v).astype(np.int32) for k, v in out.items()}
