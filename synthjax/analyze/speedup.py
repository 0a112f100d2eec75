"""How many times fewer tokens a mixture needs than natural data to reach the same loss."""
import math
from typing import Dict, List, Sequence, Tuple

from synthjax.analyze.scaling import tokens_for_loss


def loss_at(params: Dict[str, float], D: float) -> float:
  return params["E"] + params["B"] / D ** params["beta"]


def speedup_table(natural: Dict[str, float], mixture: Dict[str, float],
                  budgets: Sequence[float], natural_range: Tuple[float, float],
                  mixture_range: Tuple[float, float]) -> List[dict]:
  """For each mixture budget D: the loss L* the mixture reaches there, the natural tokens
  D_nat(L*) for the same loss, and speedup = D_nat / D. Rows outside the measured budgets of
  either curve are marked as extrapolation (inf when natural data never reaches L*)."""
  rows = []
  for D in budgets:
    target = loss_at(mixture, D)
    d_nat = tokens_for_loss(natural, target)
    inside = (mixture_range[0] <= D <= mixture_range[1]
              and natural_range[0] <= d_nat <= natural_range[1])
    rows.append({"D": float(D), "loss": target, "D_natural": d_nat,
                 "speedup": d_nat / D if math.isfinite(d_nat) else math.inf,
                 "extrapolated": not inside})
  return rows
