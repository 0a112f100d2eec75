"""How many times fewer tokens a mixture needs than natural data to reach the same loss."""

from typing import List, Sequence

import numpy as np

from synthjax.analyze import noise


def _law(theta):
  """E, B, beta of L(D) = E + B / D^beta from thetas [..., 3] = (log E, log B, beta)."""
  theta = np.asarray(theta, np.float64)
  return np.exp(theta[..., 0]), np.exp(theta[..., 1]), theta[..., 2]


def _tokens_for_loss(E, B, beta, target):
  """D with E + B / D^beta = target; inf where the law never gets there (target <= E)."""
  with np.errstate(divide="ignore", invalid="ignore"):
    D = (B / (target - E)) ** (1.0 / beta)
  return np.where(target > E, D, np.inf)


def speedup_rows(natural: dict, mixture: dict, budgets: Sequence[float]) -> List[dict]:
  """For each mixture budget D: the loss L* the mixture's L(D) gives there, the natural tokens
  D_natural(L*) for the same loss, speedup = D_natural / D (inf when natural data never gets
  there), and its interval over the paired bootstrap refits. A row outside the measured
  budgets of either curve is marked as extrapolation; where natural data's fit reaches L* only
  beyond (or below) its measured budgets, `natural_reach` says so and `bound` is the speedup
  its range still supports (natural needs more than its largest budget: speedup > bound).

  natural, mixture: L(D) fits from laws.fit_laws (theta, replicate_thetas, D_range)."""
  D = np.asarray(budgets, np.float64)
  E, B, beta = _law(mixture["theta"])
  target = E + B / D**beta
  E_nat, B_nat, beta_nat = _law(natural["theta"])
  d_nat = _tokens_for_loss(E_nat, B_nat, beta_nat, target)
  pairs = min(len(natural["replicate_thetas"]), len(mixture["replicate_thetas"]))
  reps = None
  if pairs:
    Em, Bm, bm = _law(np.asarray(mixture["replicate_thetas"][:pairs])[:, None])  # [reps, 1]
    En, Bn, bn = _law(np.asarray(natural["replicate_thetas"][:pairs])[:, None])
    reps = _tokens_for_loss(En, Bn, bn, Em + Bm / D**bm) / D  # [reps, D]
  rows = []
  for j, d in enumerate(D):
    low, high = natural["D_range"]
    reach = "beyond" if d_nat[j] > high else "below" if d_nat[j] < low else "within"
    rows.append(
        {
            "D": float(d),
            "loss": float(target[j]),
            "D_natural": float(d_nat[j]),
            "speedup": float(d_nat[j] / d),
            "interval": noise.interval(reps[:, j]) if reps is not None else None,
            "extrapolated": not (
                mixture["D_range"][0] <= d <= mixture["D_range"][1] and reach == "within"
            ),
            "natural_reach": reach,
            "bound": {"beyond": high / d, "below": low / d}.get(reach),
        }
    )
  return rows
