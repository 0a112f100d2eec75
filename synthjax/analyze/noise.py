"""How much of a measured loss is noise: a bootstrap over training seeds and evaluation
documents, so every number of the report can carry an interval from the data's own noise.

A cell is one (mixture, N, D); its runs differ only in their seed. Each bootstrap replicate
  - draws the cell's seed noise: the mean of n seeds varies by s / sqrt(n), with s the
    seed-to-seed spread pooled over the budgets of one (mixture, N) (2 seeds a cell leave one
    degree of freedom each; pooling gives a usable s), drawn from Student's t with the pooled
    degrees of freedom (independently per cell); and
  - resamples each domain's evaluation documents with replacement, the SAME draw for every
    cell, since every run is evaluated on the same documents: differences between cells are
    paired, as they are in the measurement.
The two deviations are added (seed noise and evaluation-sample noise are independent).
A cell with one seed has no measured seed noise; records without per-document losses (CSV
input) have no measured evaluation noise. `Cells.noise` says which were measured.
"""

import dataclasses
from typing import Dict, List, Sequence, Tuple

import numpy as np

LEVEL = 0.90  # the report's intervals


@dataclasses.dataclass
class Cells:
  keys: List[Tuple[str, float, float]]  # (mixture, N, D)
  quantities: List[str]  # "loss", then one entry per domain
  point: np.ndarray  # [cells, quantities]: mean over seeds
  reps: np.ndarray  # [replicates, cells, quantities]
  seeds: np.ndarray  # [cells]: runs per cell
  noise: Dict[str, bool]  # {"seeds": measured?, "documents": measured?}

  def index(self, key) -> int:
    return self.keys.index(key)

  def has(self, key) -> bool:
    return key in self.keys

  @property
  def measured(self) -> bool:
    return any(self.noise.values())


def interval(samples, level: float = LEVEL) -> Tuple[float, float]:
  """Central percentile interval; an order statistic, so infinities stay meaningful."""
  x = np.asarray(samples, np.float64)
  lo, hi = np.quantile(x, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
  return float(lo), float(hi)


def _doc_table(records: List[dict], domains: Sequence[str]):
  """Per domain: [docs, records] loss sums and token counts, when every record has them for
  the same documents; else None (no evaluation-noise estimate)."""
  out = {}
  for d in domains:
    docs = [r.get("docs", {}).get(d) for r in records]
    if any(x is None for x in docs) or len({len(x[0]) for x in docs}) != 1:
      return None
    out[d] = (
        np.stack([np.asarray(x[0], np.float64) for x in docs], 1),
        np.stack([np.asarray(x[1], np.float64) for x in docs], 1),
    )
  return out


def bootstrap_cells(records: List[dict], n_boot: int = 1000, seed: int = 0) -> Cells:
  rng = np.random.default_rng(seed)
  keys = sorted(
      {(r["mixture"], r["N"], r["D"]) for r in records},
      key=lambda k: (k[1], k[2], k[0] != "natural", k[0]),
  )
  domains = sorted(set.intersection(*(set(r["domains"]) for r in records))) if records else []
  quantities = ["loss"] + domains
  values = np.asarray([[r["loss"]] + [r["domains"][d] for d in domains] for r in records])
  cell_of = np.asarray([keys.index((r["mixture"], r["N"], r["D"])) for r in records])
  C, Q = len(keys), len(quantities)
  point = np.zeros((C, Q))
  seeds = np.zeros(C, np.int64)
  for c in range(C):
    v = values[cell_of == c]
    seeds[c], point[c] = len(v), v.mean(0)

  # Seed noise: the within-cell variance pooled over the budgets of one (mixture, N), so that
  # 2 seeds a cell still give a usable estimate while a mixture whose runs scatter more (a
  # small synthetic set read many times) keeps its own; drawn from Student's t with the pooled
  # degrees of freedom, which widens the interval when few seeds back it.
  # A (mixture, N) with one seed a cell borrows the spread pooled over the whole grid.
  def pooled(members):
    squares = sum(((values[cell_of == c] - point[c]) ** 2).sum(0) for c in members)
    return squares, int(sum(seeds[c] - 1 for c in members))

  seed_dev = np.zeros((n_boot, C, Q))
  everywhere = pooled(range(C))
  for group in sorted({k[:2] for k in keys}):
    members = [c for c, k in enumerate(keys) if k[:2] == group]
    squares, dof = pooled(members)
    if dof == 0:
      squares, dof = everywhere
    if dof == 0:
      continue
    for c in members:
      seed_dev[:, c] = np.sqrt(squares / dof / seeds[c]) * rng.standard_t(dof, (n_boot, 1))

  doc_dev = np.zeros((n_boot, C, Q))
  table = _doc_table(records, domains)
  if table is not None and domains:
    total_rep_sum = total_rep_tok = 0.0
    total_sum = total_tok = 0.0
    for q, d in enumerate(domains, start=1):
      sums, toks = table[d]  # [docs, records]
      counts = rng.multinomial(len(sums), np.full(len(sums), 1 / len(sums)), n_boot)
      rep_sum, rep_tok = counts @ sums, counts @ toks  # [replicates, records]
      dev = rep_sum / np.maximum(rep_tok, 1) - sums.sum(0) / np.maximum(toks.sum(0), 1)
      total_rep_sum, total_rep_tok = total_rep_sum + rep_sum, total_rep_tok + rep_tok
      total_sum, total_tok = total_sum + sums.sum(0), total_tok + toks.sum(0)
      for c in range(C):
        doc_dev[:, c, q] = dev[:, cell_of == c].mean(1)
    dev = total_rep_sum / np.maximum(total_rep_tok, 1) - total_sum / np.maximum(total_tok, 1)
    for c in range(C):
      doc_dev[:, c, 0] = dev[:, cell_of == c].mean(1)

  noise = {"seeds": bool((seeds > 1).any()), "documents": table is not None and bool(domains)}
  return Cells(keys, quantities, point, point[None] + seed_dev + doc_dev, seeds, noise)


def difference(cells: Cells, a, b, quantity: str = "loss") -> dict:
  """Loss of cell a minus cell b, with its interval and whether the interval excludes 0."""
  q = cells.quantities.index(quantity)
  ia, ib = cells.index(a), cells.index(b)
  diff = cells.point[ia, q] - cells.point[ib, q]
  if not cells.measured:  # no noise estimate: no interval, nothing called
    return {"diff": float(diff), "interval": None, "resolved": False, "verdict": "not resolved"}
  lo, hi = interval(cells.reps[:, ia, q] - cells.reps[:, ib, q])
  resolved = lo > 0 or hi < 0
  return {
      "diff": float(diff),
      "interval": (lo, hi),
      "resolved": bool(resolved),
      "verdict": ("higher" if diff > 0 else "lower") if resolved else "not resolved",
  }
