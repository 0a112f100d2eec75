"""The report's scaling laws, fitted to cell means, with what each can and cannot say.

- L(D) = E + B / D^beta per mixture at fixed N (the paper's data law),
- L(N) = E + A / N^alpha per mixture at fixed D (its model law),
- L(N, D) = E + A / N^alpha + B / D^beta per mixture (Hoffmann et al.'s Approach 3).

A law is fitted only with at least (parameters + 2) distinct design points (seeds of one point
are one point); otherwise the caller lists it as missing. A single-resource law is not fitted when the
replicates do not resolve a decrease from the smallest to the largest resource (noise only
fits some curve too), and a fit whose exponent is not positive (loss that rises with the
resource: e.g. a small synthetic set read many times) is rejected: the law does not describe
such data. A floor E far below every measured loss, or an exponent
above 3 (a term that is flat over the data), is flagged as not identified. Its holdout error follows the paper:
refit without the largest budget (or size), predict that point, report the relative error;
computed only when the refit itself has parameters + 2 points. Parameter intervals come from
refitting the bootstrap replicates of the cell means (noise.py), started at the full fit.
"""
from typing import Dict, List, Optional

import numpy as np

from synthjax.analyze import scaling
from synthjax.analyze.noise import interval

SLACK = 2  # points beyond the parameter count a fit needs


def n_params(names: List[str]) -> int:
  return 1 + 2 * len(names)


def min_points(names: List[str]) -> int:
  return n_params(names) + SLACK


def fit_law(resources: Dict[str, np.ndarray], point: np.ndarray, reps: np.ndarray,
            holdout_on: Optional[str], n_fit_boot: int = 100) -> dict:
  """resources: name -> [points]; point: [points] mean losses; reps: [replicates, points].
  Returns the fit's parameters with intervals, replicate thetas (for derived quantities such
  as speedups) and the holdout error."""
  names = list(resources)
  if len(names) == 1 and len(reps) > 1:
    # Noise only also fits some curve: ask first whether the loss falls at all between the
    # smallest and the largest resource, beyond the replicates' spread.
    x = resources[names[0]]
    drop = reps[:, np.argmin(x)] - reps[:, np.argmax(x)]
    if np.quantile(drop, 0.05) <= 0:
      return {"rejected": f"no decrease resolved from the smallest to the largest {names[0]} "
                          f"({float(np.mean(drop)):+.3g}, within noise or rising)"}
  base = scaling.fit(resources, point)
  exponents = {k: v for k, v in base.params.items() if k in ("alpha", "beta")}
  if min(exponents.values()) <= 0:
    return {"rejected": "loss does not fall with " + " and ".join(names) + " (fitted exponent "
                        + ", ".join(f"{k} = {v:.3g}" for k, v in exponents.items()) + ")"}
  thetas = []
  for b in range(min(n_fit_boot, len(reps))):
    thetas.append(scaling.fit(resources, reps[b], starts=base.theta, polish=1).theta)
  samples = [scaling.Fit(names, t, 0.0, len(point)).params for t in thetas]
  intervals = {k: interval([s[k] for s in samples]) for k in base.params} if samples else {}
  # A floor far below every loss means the losses show no flattening yet: E is then not
  # determined by the data (the refits, started at the fit, stay at the bound).
  notes = []
  if base.params["E"] < 0.01 * float(np.min(point)):
    notes.append("E not identified: the losses show no floor yet")
    intervals.pop("E", None)
  notes += [f"{k} = {v:.3g} not identified: the term is flat over the measured range"
            for k, v in exponents.items() if v > 3]
  out = {**base.params, "objective": base.objective, "n_points": len(point),
         "intervals": intervals, "theta": base.theta.tolist(),
         "replicate_thetas": [t.tolist() for t in thetas],
         "holdout": None, "note": "; ".join(notes) or None}
  if holdout_on is not None:
    x = resources[holdout_on]
    keep = x < x.max()
    distinct = len({tuple(resources[k][i] for k in names) for i in np.flatnonzero(keep)})
    if distinct >= min_points(names):
      held = scaling.fit({k: v[keep] for k, v in resources.items()}, point[keep],
                         starts=base.theta, polish=1)
      far = ~keep
      pred = held.predict(**{k: v[far] for k, v in resources.items()})
      out["holdout"] = {"on": holdout_on, "at": float(x.max()),
                        "relative_error": float(np.mean(np.abs(pred - point[far]) / point[far])),
                        "points": int(keep.sum())}
  return out


def predict(names: List[str], theta, **resources) -> np.ndarray:
  return scaling.Fit(names, np.asarray(theta), 0.0, 0).predict(**resources)


def tokens_for_loss(theta, target: float) -> float:
  """Invert L(D) = E + B / D^beta (theta of a D-only law); inf when the law never gets there."""
  params = scaling.Fit(["D"], np.asarray(theta), 0.0, 0).params
  return scaling.tokens_for_loss(params, target)
