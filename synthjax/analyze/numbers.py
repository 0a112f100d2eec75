"""How the report writes numbers: shared by its document and its plots."""

import math
from typing import Any

import numpy as np


def fmt(x: Any, digits: int = 4) -> str:
  if isinstance(x, str):
    return x
  if x is None:
    return "-"
  if isinstance(x, (bool, np.bool_)):
    return "yes" if x else "no"
  if isinstance(x, (int, np.integer)) or (
      isinstance(x, float) and x.is_integer() and abs(x) >= 1e3
  ):
    return f"{x:.3g}" if abs(float(x)) >= 1e6 else f"{int(x)}"
  if not math.isfinite(x):
    return "inf"
  return f"{x:.{digits}g}"


def short(x: float) -> str:
  for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
    if abs(x) >= div:
      return f"{x / div:.3g}{unit}"
  return f"{x:.3g}"


def break_even_runs(k: float) -> str:
  return "never" if k == float("inf") else f"{max(k, 0):.3g}"
