"""The best synthetic share for one (model size, budget): a smooth fit of loss against share.

A quadratic in the share r is the smallest smooth curve with an interior minimum; its argmin
on [0, 1] is the best share. The interval comes from a parametric bootstrap: refit after
adding Gaussian noise at the size of the fit's own residuals.
"""
from typing import Sequence

import numpy as np

from synthjax.errors import UserError


def _argmin_on_unit(coef) -> float:
  c2, c1, c0 = coef
  candidates = [0.0, 1.0]
  if c2 > 0:
    candidates.append(float(np.clip(-c1 / (2 * c2), 0.0, 1.0)))
  values = [np.polyval(coef, r) for r in candidates]
  return candidates[int(np.argmin(values))]


def best_share(shares: Sequence[float], losses: Sequence[float], n_boot: int = 200,
               seed: int = 0) -> dict:
  r = np.asarray(shares, np.float64)
  y = np.asarray(losses, np.float64)
  if len(np.unique(r)) < 3:
    raise UserError(f"best share needs losses at 3 or more distinct shares, got "
                    f"{sorted(set(r.tolist()))}")
  coef = np.polyfit(r, y, 2)
  best = _argmin_on_unit(coef)
  residuals = y - np.polyval(coef, r)
  dof = len(r) - 3
  sigma = float(np.sqrt((residuals ** 2).sum() / dof)) if dof > 0 else 0.0
  rng = np.random.default_rng(seed)
  boots = [_argmin_on_unit(np.polyfit(r, np.polyval(coef, r) + rng.normal(0, sigma, len(r)), 2))
           for _ in range(n_boot if sigma > 0 else 0)]
  interval = (float(np.percentile(boots, 5)), float(np.percentile(boots, 95))) if boots else (
      best, best)
  return {"best_share": best, "interval": interval, "coef": coef.tolist(),
          "best_loss": float(np.polyval(coef, best)), "residual_std": sigma}
