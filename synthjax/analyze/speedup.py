"""How many times fewer tokens a mixture needs than natural data to reach the same loss."""
from typing import List, Sequence

from synthjax.analyze import laws, noise


def speedup_rows(natural: dict, mixture: dict, budgets: Sequence[float]) -> List[dict]:
  """For each mixture budget D: the loss L* the mixture's L(D) gives there, the natural tokens
  D_natural(L*) for the same loss, speedup = D_natural / D (inf when natural data never gets
  there), and its interval over the paired bootstrap refits. A row outside the measured
  budgets of either curve is marked as extrapolation.

  natural, mixture: L(D) fits from laws.fit_law (theta, replicate_thetas, D_range)."""
  rows = []
  pairs = list(zip(natural["replicate_thetas"], mixture["replicate_thetas"]))
  for D in budgets:
    target = float(laws.predict(["D"], mixture["theta"], D=D))
    d_nat = laws.tokens_for_loss(natural["theta"], target)
    reps = [laws.tokens_for_loss(tn, float(laws.predict(["D"], tm, D=D))) / D
            for tn, tm in pairs]
    inside = (mixture["D_range"][0] <= D <= mixture["D_range"][1]
              and natural["D_range"][0] <= d_nat <= natural["D_range"][1])
    rows.append({"D": float(D), "loss": target, "D_natural": d_nat, "speedup": d_nat / D,
                 "interval": noise.interval(reps) if reps else None,
                 "extrapolated": not inside})
  return rows
