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

from typing import Dict, List, Optional, Tuple

import numpy as np

from synthjax.analyze import scaling
from synthjax.analyze.noise import interval

SLACK = 2  # points beyond the parameter count a fit needs


def n_params(names: List[str]) -> int:
  return 1 + 2 * len(names)


def min_points(names: List[str]) -> int:
  return n_params(names) + SLACK


def fit_law(
    resources: Dict[str, np.ndarray],
    point: np.ndarray,
    reps: np.ndarray,
    holdout_on: Optional[str],
    n_fit_boot: int = 100,
) -> dict:
  """One law; see fit_laws."""
  return fit_laws([(resources, point, reps)], holdout_on, n_fit_boot)[0]


def fit_laws(
    groups: List[Tuple[Dict[str, np.ndarray], np.ndarray, np.ndarray]],
    holdout_on: Optional[str],
    n_fit_boot: int = 100,
) -> List[dict]:
  """Laws of one form (the same resource names) fitted together, as a few batched programs.
  A group is (resources: name -> [points], point: [points] mean losses, reps: [replicates,
  points]). Each result has the fit's parameters with intervals, replicate thetas (for derived
  quantities such as speedups) and the holdout error; or "rejected" with the reason."""
  out: List[dict] = [{} for _ in groups]
  names = list(groups[0][0]) if groups else []
  todo = []
  for i, (res, _, reps) in enumerate(groups):
    if len(names) == 1 and len(reps) > 1:
      # Noise only also fits some curve: ask first whether the loss falls at all between the
      # smallest and the largest resource, beyond the replicates' spread.
      x = res[names[0]]
      drop = reps[:, np.argmin(x)] - reps[:, np.argmax(x)]
      if np.quantile(drop, 0.05) <= 0:
        out[i] = {
            "rejected": f"no decrease resolved from the smallest to the largest "
            f"{names[0]} ({float(np.mean(drop)):+.3g}, within noise or rising)"
        }
        continue
    todo.append(i)
  if not todo:
    return out
  thetas, objectives = scaling.minimize_many(
      [scaling.problem(groups[i][0], groups[i][1]) for i in todo], scaling.grid_starts(len(names))
  )
  base = {
      i: scaling.Fit(names, t, float(o), len(groups[i][1]))
      for i, t, o in zip(todo, thetas, objectives)
  }
  for i in list(todo):
    exponents = {k: v for k, v in base[i].params.items() if k in ("alpha", "beta")}
    if min(exponents.values()) <= 0:
      out[i] = {
          "rejected": "loss does not fall with " + " and ".join(names) + " (fitted "
          "exponent " + ", ".join(f"{k} = {v:.3g}" for k, v in exponents.items()) + ")"
      }
      todo.remove(i)
  # Bootstrap refits, each started at its fit: every (fit, replicate) is one row.
  refit = [(i, b) for i in todo for b in range(min(n_fit_boot, len(groups[i][2])))]
  rep_thetas: Dict[int, list] = {i: [] for i in todo}
  if refit:
    got, _ = scaling.minimize_many(
        [scaling.problem(groups[i][0], groups[i][2][b]) for i, b in refit],
        np.stack([base[i].theta[None] for i, _ in refit]),
        polish=1,
    )
    for (i, _), t in zip(refit, got):
      rep_thetas[i].append(t)
  holdout = {i: _holdout_mask(groups[i][0], holdout_on) for i in todo} if holdout_on else {}
  held_ids = [i for i, keep in holdout.items() if keep is not None]
  held = {}
  if held_ids:
    got, _ = scaling.minimize_many(
        [scaling.problem(groups[i][0], groups[i][1], holdout[i]) for i in held_ids],
        np.stack([base[i].theta[None] for i in held_ids]),
        polish=1,
    )
    held = dict(zip(held_ids, got))
  for i in todo:
    res, point, _ = groups[i]
    fit = base[i]
    samples = [scaling.Fit(names, t, 0.0, len(point)).params for t in rep_thetas[i]]
    intervals = {k: interval([s[k] for s in samples]) for k in fit.params} if samples else {}
    # A floor far below every loss means the losses show no flattening yet: E is then not
    # determined by the data (the refits, started at the fit, stay at the bound).
    notes = []
    if fit.params["E"] < 0.01 * float(np.min(point)):
      notes.append("E not identified: the losses show no floor yet")
      intervals.pop("E", None)
    notes += [
        f"{k} = {v:.3g} not identified: the term is flat over the measured range"
        for k, v in fit.params.items()
        if k in ("alpha", "beta") and v > 3
    ]
    out[i] = {
        **fit.params,
        "objective": fit.objective,
        "n_points": len(point),
        "intervals": intervals,
        "theta": fit.theta.tolist(),
        "replicate_thetas": [t.tolist() for t in rep_thetas[i]],
        "holdout": None,
        "note": "; ".join(notes) or None,
    }
    if i in held and holdout_on:  # held is empty without holdout_on
      x = res[holdout_on]
      far = x == x.max()
      pred = scaling.Fit(names, held[i], 0.0, 0).predict(**{k: v[far] for k, v in res.items()})
      out[i]["holdout"] = {
          "on": holdout_on,
          "at": float(x.max()),
          "relative_error": float(np.mean(np.abs(pred - point[far]) / point[far])),
          "points": int((~far).sum()),
      }
  return out


def _holdout_mask(resources: Dict[str, np.ndarray], on: str) -> Optional[np.ndarray]:
  """The points a holdout refit keeps (all but the largest `on`), or None when they are too
  few distinct points for the law."""
  keep = resources[on] < resources[on].max()
  names = list(resources)
  distinct = len({tuple(resources[k][i] for k in names) for i in np.flatnonzero(keep)})
  return keep if distinct >= min_points(names) else None


def predict(names: List[str], theta, **resources) -> np.ndarray:
  return scaling.Fit(names, np.asarray(theta), 0.0, 0).predict(**resources)


def tokens_for_loss(theta, target: float) -> float:
  """Invert L(D) = E + B / D^beta (theta of a D-only law); inf when the law never gets there."""
  params = scaling.Fit(["D"], np.asarray(theta), 0.0, 0).params
  return scaling.tokens_for_loss(params, target)
