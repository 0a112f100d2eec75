"""The report at the paper's scale: a made-up grid of run records with a known truth, timed.

    python benchmarks/report_scale.py [--seeds 3] [--out DIR]

Grid: 6 sizes (100M-3B) x 8 budgets (1B-200B) x 22 mixtures (natural, and HQ, QA and textbook
at 7 shares each) x --seeds seeds x 6 domains; 3,168 records at 3 seeds. Truth: natural data
follows L = E + A / N^alpha + B / D^beta; a mixture at share s of a kind sees its D scaled by
exp(a s - b s^2) (an optimum at s = a / 2b: 0.3 for HQ, 0.25 for QA; textbook's optimum is at
0.1 and its floor rises with s), with seed noise of 0.007 nats. Printed: records, the seconds
each stage of the report took (the analysis, then the rendering) and how many best-share
verdicts contradict the truth.
"""

import argparse
import csv
import json
import os
import sys
import tempfile
import time

import numpy as np

SIZES = (1e8, 2e8, 4e8, 8e8, 1.5e9, 3e9)
BUDGETS = (1e9, 2e9, 5e9, 1e10, 2e10, 5e10, 1e11, 2e11)
SHARES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.67, 1.0)
DOMAINS = {"web": 0.0, "wiki": -0.15, "books": 0.1, "code": 0.35, "news": -0.05, "qa": 0.2}
# kind: (a, b, floor rise per unit share): D_eff = D exp(a s - b s^2), E + rise * s.
KINDS = {
    "rephrased_hq": (3.0, 5.0, 0.0),
    "rephrased_qa": (2.0, 4.0, 0.0),
    "textbook": (0.6, 3.0, 0.08),
}
E, A, ALPHA, B, BETA = 1.8, 400.0, 0.34, 410.0, 0.28
NOISE = 0.007


def true_loss(N, D, kind="natural", share=0.0):
  a, b, rise = KINDS.get(kind, (0.0, 0.0, 0.0))
  D_eff = D * np.exp(a * share - b * share**2)
  return E + rise * share + A / N**ALPHA + B / D_eff**BETA


def true_best_share(kind):
  a, b, rise = KINDS[kind]
  return a / (2 * b) if rise == 0 else None


def write_grid(path, seeds=3, seed=0):
  rng = np.random.default_rng(seed)
  mixtures = [("natural", "natural", 0.0)] + [
      (f"natural+{k}@{s:g}" if s < 1 else k, k, s) for k in KINDS for s in SHARES
  ]
  with open(path, "w", newline="") as f:
    out = csv.writer(f)
    out.writerow(
        ["N", "D", "mixture", "kind", "share", "seed", "loss"] + [f"loss/{d}" for d in DOMAINS]
    )
    for N in SIZES:
      for D in BUDGETS:
        for name, kind, share in mixtures:
          for s in range(seeds):
            base = true_loss(N, D, kind, share)
            domains = [base + offset + rng.normal(0, NOISE) for offset in DOMAINS.values()]
            out.writerow([N, D, name, kind, share, s, float(np.mean(domains))] + domains)
  return len(SIZES) * len(BUDGETS) * len(mixtures) * seeds


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--out", default=None, help="report folder (default: a temporary one)")
  args = p.parse_args(argv)
  from synthjax.analyze import records, report

  out = args.out or tempfile.mkdtemp(prefix="report_scale_")
  path = os.path.join(out, "grid.csv")
  os.makedirs(out, exist_ok=True)
  n = write_grid(path, args.seeds)
  t0 = time.perf_counter()
  recs = records.load(path)
  results = report.analyze(recs)
  t1 = time.perf_counter()
  report.write(results, out)
  t2 = time.perf_counter()
  wrong = [
      b
      for b in results["best_shares"]
      if b["verdict"].startswith("best at") and true_best_share(b["kind"]) is not None
  ]
  figures = {
      "records": n,
      "analyze_s": round(t1 - t0, 1),
      "render_s": round(t2 - t1, 1),
      "total_s": round(t2 - t0, 1),
      "best_share_cells": len(results["best_shares"]),
      "end_verdicts_where_truth_is_interior": len(wrong),
  }
  print(
      json.dumps(
          {
              "records": n,
              "analyze_s": round(t1 - t0, 1),
              "render_s": round(t2 - t1, 1),
              "total_s": round(t2 - t0, 1),
              "best_share_cells": len(results["best_shares"]),
              "end_verdicts_where_truth_is_interior": len(wrong),
              "report_md_bytes": os.path.getsize(os.path.join(out, "report.md")),
              "out": out,
          }
      ),
      flush=True,
  )
  from results import append  # benchmarks/ is on the path when this runs as a script

  append("report_scale", figures)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main()
