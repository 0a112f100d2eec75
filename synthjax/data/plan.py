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
  lengths = [np.asarray(x) for x in lengths]
  for lens in lengths:
    if len(lens) >= 2**31:  # document ids are int32
      raise UserError(
          f"a component of {len(lens):,} documents is beyond the planner's 2^31; "
          "split it into several tasks"
      )
  for c, (lens, n_need) in enumerate(zip(lengths, need)):
    if n_need:
      parts.append((c, *_plan_component(lens, n_need, np.random.default_rng((seed, c)))))
  return _merge_by_key(parts, lengths)


def _plan_component(lengths: np.ndarray, n_need: int, rng):
  """(documents, their segments' midpoint keys, the last segment's length: the one cut)."""
  docs, lens, ends, taken = [], [], [], 0
  while taken < n_need:
    perm = np.arange(len(lengths), dtype=np.int32)  # rng.permutation's order, without its
    rng.shuffle(perm)  # int64 copy
    length = lengths[perm].astype(np.int32, copy=False)
    end = np.cumsum(length, dtype=np.int64)  # where each segment ends in the component
    end += taken
    last = int(np.searchsorted(end, n_need))  # the document that reaches n_need
    if last < len(perm):
      perm, length, end = perm[: last + 1], length[: last + 1], end[: last + 1]
      length[-1] -= end[-1] - n_need
      end[-1] = n_need
    docs.append(perm)
    lens.append(length)
    ends.append(end)
    taken = int(end[-1])
  all_docs, all_lens, all_ends = (
      x[0] if len(x) == 1 else np.concatenate(x) for x in (docs, lens, ends)
  )
  del docs, lens, ends  # the pieces: only the joined arrays stay
  keys = all_ends.astype(np.float64)  # (end - length / 2) / n_need, exactly, computed in place
  del all_ends
  keys *= 2
  np.subtract(keys, all_lens, out=keys)
  keys /= 2
  keys /= n_need
  return all_docs, keys, int(all_lens[-1])


def _merge_by_key(parts, lengths, chunk: int = 1 << 22):
  """A stable merge of the components' key-sorted segments (ties: lower component first),
  by counting where each lands, a chunk at a time, instead of sorting the concatenation.
  A segment's length is its document's, but for each component's last segment (cut)."""
  n = sum(len(p[1]) for p in parts)
  comp, doc, length = np.empty(n, np.int16), np.empty(n, np.int32), np.empty(n, np.int32)
  for i in range(len(parts)):
    c, d, keys, last_length = parts[i]
    parts[i] = (c, None, keys, None)  # once placed, its documents are freed
    for start in range(0, len(keys), chunk):
      k = keys[start : start + chunk]
      pos = np.arange(start, start + len(k), dtype=np.int64)
      for j, other in enumerate(p[2] for p in parts):
        if j != i:
          pos += np.searchsorted(other, k, side="right" if j < i else "left")
      docs = d[start : start + chunk]
      comp[pos], doc[pos], length[pos] = c, docs, lengths[c][docs]
    length[pos[-1]] = last_length
    del d
  return comp, doc, length
