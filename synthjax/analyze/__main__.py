"""python -m synthjax.analyze {fit,report,corpus}

fit     --csv FILE --n_col NAME (--d_col NAME | --flop_col NAME) --loss_col NAME
        [--drop_highest K]: Approach-3 fit of L(N, D), printed as JSON.
report  --runs PATH [PATH ...] --out DIR [--n_boot B --n_fit_boot F]
        [--generation KIND=PARAMS:TOKENS ...]: cell means with intervals, findings, fits,
        speedups (net of generation compute where a kind's cost is given), best shares,
        decision accuracy, plots, report.md and CSV tables.
corpus  --natural FILE --synthetic FILE: distribution / collapse diagnostics as JSON
        (files: JSONL with a "text" field, or plain text with one document per line).
"""

import argparse
import csv
import json

import numpy as np

from synthjax.analyze import compute, diagnostics, report, scaling
from synthjax.errors import ArgumentParser, UserError, exit_on_user_error


def _column(rows, name, path):
  if not rows:
    raise UserError(f"{path}: no data rows")
  if name not in rows[0]:
    raise UserError(f"{path}: missing column {name!r} (columns: {', '.join(rows[0])})")
  out = []
  for i, row in enumerate(rows, start=2):
    try:
      x = float(row[name])
    except (TypeError, ValueError):
      raise UserError(f"{path}:{i}: column {name!r} is not a number: {row[name]!r}") from None
    if np.isnan(x):
      raise UserError(f"{path}:{i}: column {name!r} is NaN")
    out.append(x)
  return np.asarray(out)


def fit_csv(path, n_col, loss_col, d_col=None, flop_col=None, drop_highest=0) -> dict:
  try:
    with open(path, newline="") as f:
      rows = list(csv.DictReader(f))
  except FileNotFoundError:
    raise UserError(f"{path}: no such file") from None
  N = _column(rows, n_col, path)
  L = _column(rows, loss_col, path)
  if d_col:
    D = _column(rows, d_col, path)
  else:
    C = _column(rows, flop_col, path)
    if (N <= 0).any():
      raise UserError(f"{path}: column {n_col!r} must be positive")
    D = C / (6 * N)  # training FLOPs C = 6 N D
  if drop_highest:
    keep = np.argsort(L, kind="stable")[: len(L) - drop_highest]
    N, D, L = N[keep], D[keep], L[keep]
  fit = scaling.fit({"N": N, "D": D}, L, what=path)
  return fit.to_json()


def _texts(path):
  try:
    with open(path, encoding="utf-8") as f:
      lines = [l for l in f.read().splitlines() if l.strip()]
  except FileNotFoundError:
    raise UserError(f"{path}: no such file") from None
  except UnicodeDecodeError as e:
    raise UserError(f"{path}: invalid UTF-8 at byte {e.start}") from None
  if not lines:
    raise UserError(f"{path}: no text (empty file)")
  if not lines[0].lstrip().startswith("{"):
    return lines
  texts = []
  for i, line in enumerate(lines, start=1):  # blank lines are not counted
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise UserError(f"{path}: record {i}: not valid JSON ({e.msg})") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
      raise UserError(f"{path}: record {i}: no 'text' string field")
    texts.append(record["text"])
  return texts


@exit_on_user_error("synthjax.analyze")
def main(argv=None):
  parser = ArgumentParser(
      prog="python -m synthjax.analyze",
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("fit")
  p.add_argument("--csv", required=True)
  p.add_argument("--n_col", required=True)
  p.add_argument("--loss_col", required=True)
  cols = p.add_mutually_exclusive_group(required=True)
  cols.add_argument("--d_col")
  cols.add_argument("--flop_col")
  p.add_argument(
      "--drop_highest",
      type=int,
      default=0,
      help="drop the K highest-loss points first (Besiroglu et al. drop 5)",
  )
  r = sub.add_parser("report")
  r.add_argument("--runs", nargs="+", required=True)
  r.add_argument("--out", required=True)
  r.add_argument(
      "--n_boot",
      type=int,
      default=1000,
      help="bootstrap replicates over seeds and evaluation documents",
  )
  r.add_argument(
      "--n_fit_boot",
      type=int,
      default=100,
      help="replicates refitted for the laws' intervals and the speedups",
  )
  r.add_argument(
      "--generation",
      action="append",
      default=[],
      metavar="KIND=PARAMS:TOKENS",
      help="a synthetic kind's generator parameters and generator tokens (prompt "
      "and output) per synthetic training token: the speedup net of "
      "generation compute (repeatable)",
  )
  c = sub.add_parser("corpus")
  c.add_argument("--natural", required=True)
  c.add_argument("--synthetic", required=True)
  args = parser.parse_args(argv)
  if args.command == "fit":
    print(
        json.dumps(
            fit_csv(
                args.csv, args.n_col, args.loss_col, args.d_col, args.flop_col, args.drop_highest
            ),
            indent=2,
        )
    )
  elif args.command == "report":
    for flag in ("n_boot", "n_fit_boot"):
      if getattr(args, flag) < 1:
        raise UserError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    generation = dict(compute.parse_option(x) for x in args.generation)
    path = report.report(args.runs, args.out, args.n_boot, args.n_fit_boot, generation=generation)
    print(f"report: {path}")
  else:
    print(json.dumps(diagnostics.compare(_texts(args.natural), _texts(args.synthetic)), indent=2))


if __name__ == "__main__":
  main()
