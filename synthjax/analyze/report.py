"""From run records to the study's answers: fits, speedups, best shares, domain gaps, report.

`analyze(records)` computes everything into one JSON-able dict; `write(results, out_dir)`
renders report.md, report.html, analysis.json and PNG plots. A partial grid still renders:
what could not be computed is listed under "Missing" with the reason.
"""

import math
from typing import Dict, List, Optional

import numpy as np

from synthjax import storage
from synthjax.analyze import (
    compute,
    decision,
    document,
    laws,
    noise,
    plots,
    render,
    speedup,
    tables,
)
from synthjax.analyze import records as records_lib
from synthjax.analyze import share as share_lib
from synthjax.analyze.numbers import fmt
from synthjax.errors import UserError


def analyze(
    records: List[dict],
    n_boot: int = 1000,
    n_fit_boot: int = 100,
    seed: int = 0,
    generation: Optional[Dict[str, dict]] = None,
) -> dict:
  """Everything the report shows, from run records: cell means with intervals, findings,
  fits, speedups, best shares, per-domain gaps and baselines."""
  records_lib.check_comparable(records)
  cells = noise.bootstrap_cells(records, n_boot, seed)
  missing: List[str] = []
  Ns = sorted({r["N"] for r in records})
  Ds = sorted({r["D"] for r in records})
  mixtures = sorted({r["mixture"] for r in records}, key=lambda m: (m != "natural", m))
  kind_of = {r["mixture"]: (r["kind"], r["share"]) for r in records}
  for m in mixtures:
    for N in Ns:
      for D in Ds:
        if not cells.has((m, N, D)):
          missing.append(f"run {m} at N={fmt(N)}, D={fmt(D)}")
  natural = [m for m in mixtures if kind_of[m][1] == 0]
  if not natural:
    missing.append("natural baseline (share 0): no speedups or domain gaps without it")
  if not cells.measured:
    missing.append(
        "noise estimate: one seed per cell and no per-document losses, so no "
        "interval and no difference is called (run 2+ seeds)"
    )

  table = []
  for c, (m, N, D) in enumerate(cells.keys):
    q = cells.quantities
    bpb = [
        np.mean(list(r["bits_per_byte"].values()))
        for r in records
        if (r["mixture"], r["N"], r["D"]) == (m, N, D) and r["bits_per_byte"]
    ]
    table.append(
        {
            "mixture": m,
            "N": N,
            "D": D,
            "kind": kind_of[m][0],
            "share": kind_of[m][1],
            "seeds": int(cells.seeds[c]),
            "loss": float(cells.point[c, 0]),
            "interval": (noise.interval(cells.reps[:, c, 0]) if cells.measured else None),
            "bits_per_byte": float(np.mean(bpb)) if bpb else None,
            "domains": {d: float(cells.point[c, i]) for i, d in enumerate(q) if i},
        }
    )

  axis = {"N": 1, "D": 2}  # where each resource sits in a cell key (mixture, N, D)

  def law_points(mixture, free, fixed_name, fixed):
    keys = [
        k
        for k in cells.keys
        if k[0] == mixture and (fixed_name is None or k[axis[fixed_name]] == fixed)
    ]
    idx = [cells.index(k) for k in keys]
    res = {name: np.array([k[axis[name]] for k in keys], np.float64) for name in free}
    return res, cells.point[idx, 0], cells.reps[:, idx, 0]

  def fit_family(free, fixed_name, label, holdout_on):
    out, too_few, no_holdout, rejected = [], [], [], []
    groups = sorted(
        {(k[0], None if fixed_name is None else k[axis[fixed_name]]) for k in cells.keys},
        key=lambda g: (g[0] != "natural", g[0], g[1] or 0),
    )
    todo = []
    for mixture, fixed in groups:
      res, point, reps = law_points(mixture, free, fixed_name, fixed)
      where = f"{mixture}" + (f" at {fixed_name}={fmt(fixed)}" if fixed_name else "")
      if len(point) < laws.min_points(free):
        too_few.append(f"{where} ({len(point)})")
        continue
      todo.append((mixture, fixed, where, (res, point, reps)))
    fitted = laws.fit_laws([t[3] for t in todo], holdout_on, n_fit_boot)  # all at once
    for (mixture, fixed, where, (res, point, _)), f in zip(todo, fitted):
      if "rejected" in f:
        rejected.append(f"{where}: {f['rejected']}")
        continue
      if f["holdout"] is None and holdout_on:
        no_holdout.append(where)
      pred = laws.predict(free, f["theta"], **res)
      out.append(
          {
              "mixture": mixture,
              "kind": kind_of[mixture][0],
              "share": kind_of[mixture][1],
              fixed_name or "all": fixed,
              **{f"{k}_range": [float(v.min()), float(v.max())] for k, v in res.items()},
              **f,
              "residuals": [
                  {
                      **{k: float(v[i]) for k, v in res.items()},
                      "log_residual": float(np.log(point[i] / pred[i])),
                  }
                  for i in range(len(point))
              ],
          }
      )
    if too_few:
      missing.append(
          f"{label} fit: needs {laws.min_points(free)} points (parameters + 2), "
          f"not shown for {_listing(too_few)}"
      )
    if rejected:
      missing.append(f"{label} fit does not apply to {_listing(rejected)}")
    if no_holdout:
      missing.append(
          f"{label} holdout error: needs {laws.min_points(free) + 1} points, "
          f"not computed for {_listing(no_holdout)}"
      )
    return out

  if not cells.measured:
    n_fit_boot = 0  # refits of replicates that hold no noise would give zero-width intervals
  budget_fits = fit_family(["D"], "N", "L(D)", "D")
  model_fits = fit_family(["N"], "D", "L(N)", "N")
  joint_fits = fit_family(["N", "D"], None, "L(N, D)", "D")
  _floors_against_natural(joint_fits)

  speedups = []
  for f in budget_fits:
    if f["share"] == 0:
      continue
    base = next((b for b in budget_fits if b["N"] == f["N"] and b["share"] == 0), None)
    if base is None:
      missing.append(f"speedup of {f['mixture']} at N={fmt(f['N'])}: no natural L(D) fit")
      continue
    budgets = sorted(set(Ds) | {max(Ds) * 3, max(Ds) * 10})
    rows = speedup.speedup_rows(base, f, budgets)
    if generation and f["kind"] in generation:
      compute.net_rows(rows, f["N"], f["share"], generation[f["kind"]])
    speedups.append({"mixture": f["mixture"], "N": f["N"], "rows": rows})
  uncosted = sorted({s["kind"] for s in budget_fits if s["share"] > 0} - set(generation or {}))
  if speedups and uncosted:
    missing.append(
        f"speedup net of generation compute: no generator cost for "
        f"{', '.join(uncosted)} (CSV input: --generation KIND=PARAMS:TOKENS)"
    )

  best_shares = []
  kinds = sorted({kind_of[m][0] for m in mixtures if kind_of[m][1] > 0})
  for kind in kinds:
    sweep = [m for m in mixtures if kind_of[m][0] in (kind, "natural")]
    for N in Ns:
      for D in Ds:
        here = [m for m in sweep if cells.has((m, N, D))]
        if len({kind_of[m][1] for m in here}) < 3:
          continue
        idx = [cells.index((m, N, D)) for m in here]
        out = share_lib.best_share(
            [kind_of[m][1] for m in here],
            cells.point[idx, 0],
            cells.reps[:, idx, 0],
            cells.measured,
        )
        best_shares.append({"kind": kind, "N": N, "D": D, **out})
  if kinds and not best_shares:
    missing.append("best share: no (size, budget) has losses at 3 or more shares of one kind")

  gaps: List[dict] = []
  findings: List[dict] = []
  for m, N, D in cells.keys:
    base = next((b for b in natural if cells.has((b, N, D))), None)
    if base is None or m == base:
      continue
    per_domain = {
        d: noise.difference(cells, (m, N, D), (base, N, D), d) for d in cells.quantities[1:]
    }
    gaps.extend(
        {
            "mixture": m,
            "N": N,
            "D": D,
            "domain": d,
            "gap": g["diff"],
            "interval": g["interval"],
            "verdict": g["verdict"],
        }
        for d, g in per_domain.items()
    )
    if D == max(k[2] for k in cells.keys if k[1] == N and k[0] in (m, base)):
      overall = noise.difference(cells, (m, N, D), (base, N, D))
      findings.append(
          {
              "mixture": m,
              "N": N,
              "D": D,
              **overall,
              "domains_higher": sorted(
                  d for d, g in per_domain.items() if g["verdict"] == "higher"
              ),
              "domains_lower": sorted(d for d, g in per_domain.items() if g["verdict"] == "lower"),
              "domains": len(per_domain),
          }
      )

  return {
      "grid": {
          "N": Ns,
          "D": Ds,
          "mixtures": mixtures,
          "runs": len(records),
          "seeds": sorted({int(s) for s in cells.seeds}),
          "noise": cells.noise,
          "level": noise.LEVEL,
      },
      "cells": table,
      "findings": findings,
      "baselines": _baselines(records, table),
      "budget_fits": budget_fits,
      "model_fits": model_fits,
      "joint_fits": joint_fits,
      "speedups": speedups,
      "best_shares": best_shares,
      "domain_gaps": gaps,
      "decision_accuracy": decision.accuracy(cells),
      "generation": generation or {},
      "records": records,
      "missing": missing,
  }


def _floors_against_natural(fits: List[dict]) -> None:
  """Each L(N, D) fit's floor E minus natural data's, with its interval over the paired
  bootstrap refits (replicate b of every fit refits the same resampled evaluation documents)."""
  base = next((f for f in fits if f["share"] == 0), None)
  for f in fits:
    if base is None or f is base:
      f["E_minus_natural"] = None
      continue
    if "E" not in f["intervals"] or "E" not in base["intervals"]:
      # A floor the losses do not show yet (laws.py) sits at the fit's bound: two of them
      # differ by rounding, and an interval over them would claim what the data cannot hold.
      f["E_minus_natural"] = {"diff": None, "interval": None, "resolved": False}
      continue
    pairs = min(len(f["replicate_thetas"]), len(base["replicate_thetas"]))
    reps = np.exp([t[0] for t in f["replicate_thetas"][:pairs]]) - np.exp(
        [t[0] for t in base["replicate_thetas"][:pairs]]
    )
    iv = noise.interval(reps) if pairs else None
    f["E_minus_natural"] = {
        "diff": f["E"] - base["E"],
        "interval": iv,
        "resolved": bool(iv and (iv[0] > 0 or iv[1] < 0)),
    }


def _listing(items: List[str], show: int = 4) -> str:
  more = len(items) - show
  return "; ".join(items[:show]) + (f"; and {more} more" if more > 0 else "")


def _baselines(records: List[dict], table: List[dict]) -> List[dict]:
  """Per domain: the unigram loss of the natural training data (a model that learned only
  token frequencies) beside the best cell mean and the natural runs at the largest (N, D)."""
  domains = sorted({d for r in records for d in r["baselines"]})
  if not domains:
    return []
  top = max((c["N"], c["D"]) for c in table)
  out = []
  for d in domains:
    base = float(np.mean([r["baselines"][d] for r in records if d in r["baselines"]]))
    best = min((c for c in table if d in c["domains"]), key=lambda c: c["domains"][d])
    nat = next((c for c in table if (c["N"], c["D"]) == top and c["share"] == 0), None)
    out.append(
        {
            "domain": d,
            "unigram": base,
            "best": best["domains"][d],
            "best_cell": f"{best['mixture']}, N={fmt(best['N'])}, D={fmt(best['D'])}",
            "natural_at_largest": nat["domains"].get(d) if nat else None,
        }
    )
  avg = float(np.mean([b["unigram"] for b in out]))
  out.append(
      {
          "domain": "mean",
          "unigram": avg,
          "best": float(np.mean([b["best"] for b in out])),
          "best_cell": "per domain",
          "natural_at_largest": (
              float(np.mean([b["natural_at_largest"] for b in out]))
              if all(b["natural_at_largest"] is not None for b in out)
              else None
          ),
      }
  )
  return out


def write(results: dict, out_dir: str) -> str:
  """Render the report into out_dir: report.md and report.html (the first page, then the
  rest), the long tables as CSV files, analysis.json and PNG plots; returns the Markdown path.
  (analysis.json leaves out the per-document losses: they are in the run records.)"""
  storage.check_writable(out_dir)
  storage.makedirs(out_dir)
  images = plots.render(results, out_dir)
  blocks = list(document.blocks(results, images))
  for name, (header, rows) in tables.csv_tables(results, out_dir).items():
    storage.write_text(storage.join(out_dir, name), tables.csv_text(header, rows))
  slim = dict(
      results, records=[{k: v for k, v in r.items() if k != "docs"} for r in results["records"]]
  )
  storage.write_json(storage.join(out_dir, "analysis.json"), _jsonable(slim))
  storage.write_text(storage.join(out_dir, "report.html"), render.to_html(blocks))
  path = storage.join(out_dir, "report.md")
  storage.write_text(path, render.markdown(blocks))
  return path


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.floating, float)):
    return float(x) if math.isfinite(x) else str(float(x))
  if isinstance(x, np.integer):
    return int(x)
  return x


def report(
    paths,
    out_dir: str,
    n_boot: int = 1000,
    n_fit_boot: int = 100,
    synthetic: Optional[Dict[str, str]] = None,
    generation: Optional[Dict[str, dict]] = None,
) -> str:
  """The report of run records (files, folders or object-store prefixes) into out_dir (local
  or an object store); `synthetic` (kind -> generation output dir) adds what the synthetic
  data was; `generation` (kind -> compute.py's cost) the speedups net of generation compute."""
  from synthjax.analyze import synthetic as synthetic_lib

  storage.check_writable(out_dir)  # before the bootstraps, not after
  recs = records_lib.load(paths)
  if not recs:
    raise UserError("no run records")
  results = analyze(recs, n_boot=n_boot, n_fit_boot=n_fit_boot, generation=generation)
  results["synthetic"] = [synthetic_lib.summarize(k, d) for k, d in (synthetic or {}).items()]
  return write(results, out_dir)
