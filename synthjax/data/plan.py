"""The order in which a training run reads its documents, planned without Python work per
document: a corpus of 100M documents plans in seconds within a few GB
(benchmarks/data_scale.py), so every host can plan at every start.

Component c contributes exactly need[c] tokens: its documents in seeded passes (each pass a
fresh permutation), the last one cut to fit. Segments are interleaved by the midpoint of each
within its own component's tokens, so every stretch of the stream sees the shares; ties go to
the lower component. The result is identical to placing documents one at a time
(tests/test_data.py checks it against that definition).
"""
from typing import Sequence

import numpy as np

from synthjax.errors import UserError


def plan_segments(lengths: Sequence[np.ndarray], need: Sequence[int], seed: int):
  """Component c contributes need[c] tokens: its documents in seeded passes (each pass a
  fresh permutation), the last one cut to fit. Segments are interleaved by the midpoint of
  each within its own component's tokens, so every stretch of the stream sees the shares.
  Returns (component int16, document int32, length int32) arrays in stream order."""
  parts = []
  for lens in lengths:
    if len(lens) >= 2 ** 31:  # document ids are int32
      raise UserError(f"a component of {len(lens):,} documents is beyond the planner's 2^31; "
                      "split it into several tasks")
  for c, (lens, n_need) in enumerate(zip(lengths, need)):
    if n_need:
      parts.append((c, *_plan_component(np.asarray(lens), n_need,
                                        np.random.default_rng((seed, c)))))
  return _merge_by_key(parts)


def _plan_component(lengths: np.ndarray, n_need: int, rng):
  docs, lens, taken = [], [], 0
  while taken < n_need:
    perm = rng.permutation(len(lengths)).astype(np.int32)
    length = lengths[perm].astype(np.int32)
    ends = np.cumsum(length, dtype=np.int64)
    ends += taken
    last = int(np.searchsorted(ends, n_need))  # the document that reaches n_need
    if last < len(perm):
      perm, length = perm[:last + 1], length[:last + 1]
      length[-1] = n_need - (ends[last] - length[-1])
    del ends
    docs.append(perm)
    lens.append(length)
    taken += int(length.sum(dtype=np.int64))
  docs, lens = (x[0] if len(x) == 1 else np.concatenate(x) for x in (docs, lens))
  keys = lens.astype(np.float64)  # (start + length / 2) / n_need, computed in place
  keys /= 2
  starts = np.cumsum(lens, dtype=np.int64)
  starts -= lens
  keys += starts
  del starts
  keys /= n_need
  return docs, lens, keys


def _merge_by_key(parts, chunk: int = 1 << 22):
  """A stable merge of the components' key-sorted segments (ties: lower component first),
  by counting where each lands, a chunk at a time, instead of sorting the concatenation."""
  n = sum(len(p[1]) for p in parts)
  comp, doc, length = np.empty(n, np.int16), np.empty(n, np.int32), np.empty(n, np.int32)
  for i, (c, d, lens, keys) in enumerate(parts):
    for start in range(0, len(keys), chunk):
      k = keys[start:start + chunk]
      pos = np.arange(start, start + len(k), dtype=np.int64)
      for j, other in enumerate(p[3] for p in parts):
        if j != i:
          pos += np.searchsorted(other, k, side="right" if j < i else "left")
      comp[pos], doc[pos], length[pos] = c, d[start:start + chunk], lens[start:start + chunk]
  return comp, doc, length
