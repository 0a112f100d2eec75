"""The tables beside the report, as CSV files: every cell, fit, speedup, best share, domain gap
and run, with their intervals."""

import csv
import io
import os
from typing import Dict

from synthjax import storage


def csv_tables(results: dict, out_dir: str = "") -> Dict[str, tuple]:
  """The long tables, one CSV each beside the report: name -> (header, rows). Numbers are
  written in full; an interval is two columns (lo, hi), empty where there is none. Run
  records on local disk are named relative to out_dir, so a moved study folder still links."""

  def iv(x):
    return list(x) if x else ["", ""]

  def law(fits, fixed):
    return (
        [
            "mixture",
            fixed,
            "E",
            "E_lo",
            "E_hi",
            "coefficient",
            "exponent",
            "exponent_lo",
            "exponent_hi",
            "points",
            "holdout_relative_error",
            "note",
        ],
        [
            [
                f["mixture"],
                f[fixed],
                f["E"],
                *iv(f["intervals"].get("E")),
                f.get("B", f.get("A")),
                f.get("beta", f.get("alpha")),
                *iv(f["intervals"].get("beta", f["intervals"].get("alpha"))),
                f["n_points"],
                f["holdout"]["relative_error"] if f["holdout"] else "",
                f["note"] or "",
            ]
            for f in fits
        ],
    )

  return {
      "cells.csv": (
          ["mixture", "N", "D", "seeds", "loss", "loss_lo", "loss_hi", "bits_per_byte"],
          [
              [
                  c["mixture"],
                  c["N"],
                  c["D"],
                  c["seeds"],
                  c["loss"],
                  *iv(c["interval"]),
                  _blank(c["bits_per_byte"]),
              ]
              for c in results["cells"]
          ],
      ),
      "findings.csv": (
          [
              "mixture",
              "N",
              "D",
              "loss_minus_natural",
              "lo",
              "hi",
              "verdict",
              "domains_higher",
              "domains_lower",
              "domains",
          ],
          [
              [
                  f["mixture"],
                  f["N"],
                  f["D"],
                  f["diff"],
                  *iv(f["interval"]),
                  f["verdict"],
                  " ".join(f["domains_higher"]),
                  " ".join(f["domains_lower"]),
                  f["domains"],
              ]
              for f in results["findings"]
          ],
      ),
      "fits_budget.csv": law(results["budget_fits"], "N"),
      "fits_model.csv": law(results["model_fits"], "D"),
      "speedups.csv": (
          [
              "mixture",
              "N",
              "D",
              "loss",
              "D_natural",
              "speedup",
              "lo",
              "hi",
              "extrapolated",
              "natural_reach",
              "bound",
              "compute_speedup",
              "compute_lo",
              "compute_hi",
              "break_even_runs",
              "break_even_lo",
              "break_even_hi",
          ],
          [
              [
                  s["mixture"],
                  s["N"],
                  r["D"],
                  r["loss"],
                  r["D_natural"] if r["natural_reach"] == "within" else "",
                  r["speedup"] if r["natural_reach"] == "within" else "",
                  *iv(r["interval"]),
                  r["extrapolated"],
                  r["natural_reach"],
                  _blank(r["bound"]),
                  _blank(r.get("compute_speedup")),
                  *iv(r.get("compute_interval")),
                  _never(r.get("break_even_runs")),
                  *[_never(x) for x in iv(r.get("break_even_interval"))],
              ]
              for s in results["speedups"]
              for r in s["rows"]
          ],
      ),
      "decision_accuracy.csv": (
          ["N", "D", "target_N", "target_D", "pairs", "accuracy", "lo", "hi"],
          [
              [
                  a["N"],
                  a["D"],
                  a["target"]["N"],
                  a["target"]["D"],
                  a["pairs"],
                  a["accuracy"],
                  *iv(a["interval"]),
              ]
              for a in results.get("decision_accuracy") or []
          ],
      ),
      "best_shares.csv": (
          [
              "kind",
              "N",
              "D",
              "verdict",
              "lo",
              "hi",
              "bound_lo",
              "bound_hi",
              "grid_argmin",
              "argmin_lo",
              "argmin_hi",
              "confidence_set",
              "why",
          ],
          [
              [
                  b["kind"],
                  b["N"],
                  b["D"],
                  b["verdict"],
                  *iv(b["interval"]),
                  *iv(b["bound"]),
                  b["grid_argmin"],
                  *iv(b["grid_argmin_interval"]),
                  " ".join(f"{x:g}" for x in b["confidence_set"]),
                  b["why"],
              ]
              for b in results["best_shares"]
          ],
      ),
      "domain_gaps.csv": (
          ["mixture", "N", "D", "domain", "gap", "lo", "hi", "verdict"],
          [
              [
                  x["mixture"],
                  x["N"],
                  x["D"],
                  x["domain"],
                  x["gap"],
                  *iv(x["interval"]),
                  x["verdict"],
              ]
              for x in results["domain_gaps"]
          ],
      ),
      "runs.csv": (
          ["mixture", "N", "D", "seed", "share", "loss", "repeated", "record"],
          [
              [
                  r["mixture"],
                  r["N"],
                  r["D"],
                  r["seed"],
                  r["share"],
                  r["loss"],
                  " ".join(f"{k}x{v:.3g}" for k, v in r["repeats"].items() if v > 1),
                  _relative(r["path"], out_dir),
              ]
              for r in sorted(
                  results["records"], key=lambda r: (r["N"], r["D"], r["mixture"], r["seed"])
              )
          ],
      ),
  }


def _relative(path: str, out_dir: str) -> str:
  if not out_dir or storage.is_remote(path) or storage.is_remote(out_dir):
    return path
  return os.path.relpath(path, out_dir)


def _blank(x):
  return "" if x is None else x


def _never(runs):
  """Break-even runs in a table: 'never' where the mixture does not pay at any count."""
  return "never" if runs == float("inf") else _blank(runs)


def excerpt(text: str, chars: int = 300) -> str:
  text = " ".join(text.split())
  return text if len(text) <= chars else text[:chars].rsplit(" ", 1)[0] + " ..."


def csv_text(header, rows) -> str:
  buffer = io.StringIO()
  out = csv.writer(buffer, lineterminator="\n")
  out.writerow(header)
  out.writerows(rows)
  return buffer.getvalue()
