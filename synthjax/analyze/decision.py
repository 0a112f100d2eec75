"""Decision accuracy (DataDecide's measure, AI2 2025): how often the order of two mixtures at a
smaller (N, D) is their order at the study's largest scale, so a user sees the smallest scale
at which the study's comparisons can be trusted.

The target is the largest N and, at it, the largest D where every mixture was run. At each
other (N, D), over every pair of mixtures run at both: the share of pairs ordered alike. Its
interval comes from the bootstrap replicates of the cell means (noise.py), the same replicate
at both scales, so the target's own noise counts too.
"""

from typing import List

import numpy as np

from synthjax.analyze.noise import Cells, interval


def _agreement(small: np.ndarray, target: np.ndarray) -> np.ndarray:
  """[..., m] losses at a scale and at the target -> [...] share of pairs ordered alike."""
  m = small.shape[-1]
  upper = np.triu(np.ones((m, m), bool), 1)
  a = np.sign(small[..., :, None] - small[..., None, :])[..., upper]
  b = np.sign(target[..., :, None] - target[..., None, :])[..., upper]
  return (a == b).mean(-1)


def accuracy(cells: Cells) -> List[dict]:
  mixtures = sorted({k[0] for k in cells.keys})
  if len(mixtures) < 2:
    return []
  scales = sorted({k[1:] for k in cells.keys})
  complete = [s for s in scales if all(cells.has((m,) + s) for m in mixtures)]
  if not complete:
    return []
  target = max(complete)
  out = []
  for scale in scales:
    if scale == target:
      continue
    here = [m for m in mixtures if cells.has((m,) + scale)]
    if len(here) < 2:
      continue
    small = [cells.index((m,) + scale) for m in here]
    large = [cells.index((m,) + target) for m in here]
    point = float(_agreement(cells.point[small, 0], cells.point[large, 0]))
    reps = _agreement(cells.reps[:, small, 0], cells.reps[:, large, 0])
    out.append(
        {
            "N": scale[0],
            "D": scale[1],
            "target": {"N": target[0], "D": target[1]},
            "pairs": len(here) * (len(here) - 1) // 2,
            "accuracy": point,
            "interval": interval(reps) if cells.measured else None,
        }
    )
  return out
