"""The best synthetic share for one (model size, budget), from the measured points alone.

No curve is fitted: a smooth fit through few noisy points can put a minimum where the data
has none. Instead, from the bootstrap replicates of the measured mean losses (noise.py):

- The confidence set: every measured share whose loss is within c of the lowest measured
  loss, where c is the `level` quantile of the largest centred difference between any two
  shares in a replicate. It holds the truly best grid share with probability about `level`
  (simultaneously over all pairs, so flat data rarely excludes anything by chance).
- Verdict: "best at <lowest share>" only when the set is that share alone (it is the argmin
  and every other share is resolved worse); "best at <highest share>" in the mirror case;
  "interior" when the set holds neither end; otherwise "not resolved": the differences are
  within noise (the set holds both ends), or the set holds one end and shares beside it (the
  best share is then bounded, and `bound` says by what), or no noise was measured.
- An interior optimum's interval runs from the grid share below the set to the one above it:
  if loss is convex in the share, its minimum lies there.
- The grid argmin (the paper's grid search per (N, D)) is reported too, with the interval of
  the argmin over the replicates.
"""

from typing import Optional, Sequence, Union

import numpy as np

from synthjax.analyze.noise import interval
from synthjax.errors import UserError

SET_LEVEL = 0.95


def best_share(
    shares: Sequence[float],
    point: Union[Sequence[float], np.ndarray],
    reps: np.ndarray,
    noise_measured: bool = True,
    level: float = SET_LEVEL,
) -> dict:
  """shares [k], point [k] mean losses, reps [replicates, k] bootstrap replicates of them."""
  r = np.asarray(shares, np.float64)
  m = np.asarray(point, np.float64)
  R = np.asarray(reps, np.float64).reshape(-1, len(r))
  if len(np.unique(r)) != len(r) or len(r) < 3:
    raise UserError(
        f"best share needs losses at 3 or more distinct shares, got {sorted(r.tolist())}"
    )
  order = np.argsort(r)
  r, m, R = r[order], m[order], R[:, order]
  dev = R - m
  critical = float(np.quantile(dev.max(1) - dev.min(1), level)) if len(R) else 0.0
  inside = (m - m.min()) <= critical
  in_set = r[inside]
  boot_argmin = r[np.argmin(R, axis=1)] if len(R) else r[[np.argmin(m)]]
  out = {
      "shares": r.tolist(),
      "losses": m.tolist(),
      "confidence_set": in_set.tolist(),
      "critical_gap": critical,
      "grid_argmin": float(r[np.argmin(m)]),
      "grid_argmin_interval": interval(boot_argmin) if noise_measured else None,
      "interval": None,
  }
  low, high = bool(inside[0]), bool(inside[-1])
  first, last = np.flatnonzero(inside)[[0, -1]]
  out["bound"] = None
  if not noise_measured or critical == 0.0:
    out.update(
        verdict="not resolved",
        why="no noise estimate (one seed per cell and no per-document losses)",
    )
  elif low and high:
    out.update(
        verdict="not resolved",
        why="the lowest and the highest share are both within noise of the best",
    )
  elif inside.sum() == 1 and (low or high):
    end = r[0] if low else r[-1]
    out.update(verdict=f"best at {_share(end)}", why="every other share is resolved worse")
  elif low or high:
    # One end and its neighbours within noise: the best share lies between that end and the
    # first share resolved worse, but whether it is the end itself is not resolved.
    out.update(
        verdict="not resolved",
        bound=(float(r[0]), float(r[last + 1])) if low else (float(r[first - 1]), float(r[-1])),
        why=f"the {'lowest' if low else 'highest'} share and shares beside it are "
        "within noise of the best",
    )
  else:
    out.update(
        verdict="interior",
        interval=(float(r[first - 1]), float(r[last + 1])),
        why="both ends are worse than the best share",
    )
  return out


def label(b: Optional[dict]) -> str:
  """A verdict in a few characters: the best share; 'a (b-c)', an interior best at grid share a
  lying between b and c; '<= c' or '>= b', the side the best is bounded to; '~', not resolved."""
  if b is None:
    return "-"
  if b["verdict"].startswith("best at"):
    return b["verdict"].split()[-1]
  if b["verdict"] == "interior":
    lo, hi = b["interval"]
    return f"{b['grid_argmin']:.2g} ({lo:.2g}-{hi:.2g})"
  if b["bound"]:
    lo, hi = b["bound"]
    return f"<= {hi:.2g}" if lo == b["shares"][0] else f">= {lo:.2g}"
  return "~"


def _share(x: float) -> str:
  return f"{x:.3g}"
