"""The report as a document: blocks (headings, paragraphs, lists, tables, images) rendered to
Markdown and HTML."""

import csv
import html
import io
import os
from typing import Dict, List, Optional

from synthjax import storage
from synthjax.analyze import share
from synthjax.analyze.numbers import fmt as _fmt
from synthjax.analyze.numbers import short as _short


def _iv(iv, digits=3) -> str:
  return f"[{_fmt(iv[0], digits)}, {_fmt(iv[1], digits)}]" if iv else "-"


def blocks(results: dict, images: Dict[str, str]):
  """The report: a first page that answers the study's questions, then what is missing, the
  tables beside it (CSV) and the plots."""
  g = results["grid"]
  level = f"{g['level']:.0%}"
  measured = any(g["noise"].values())
  yield ("h1", "synthjax study report")
  sources = [name for name, m in g["noise"].items() if m]
  yield (
      "p",
      f"{g['runs']} runs; model sizes N = {', '.join(_fmt(n) for n in g['N'])}; "
      f"budgets D = {', '.join(_fmt(d) for d in g['D'])}; {len(g['mixtures'])} "
      f"mixtures; seeds per cell: {', '.join(str(s) for s in g['seeds'])}. "
      + (
          f"Intervals are {level}, from a bootstrap over {' and '.join(sources)}; a "
          "difference is called only when its interval excludes 0."
          if measured
          else "No noise estimate (one seed per cell and no per-document losses): no "
          "interval is shown and no difference is called."
      ),
  )
  yield from _answers(results, images, level)
  if results["missing"]:
    yield ("h2", "Missing")
    yield ("list", results["missing"])
  yield ("h2", "Tables beside this report")
  yield ("list", [("link", name, name) for name in csv_tables(results)])
  if results["baselines"]:
    yield ("h2", "How far the models got: unigram baseline per domain")
    yield (
        "p",
        "unigram = cross-entropy of the domain's evaluation tokens under the natural "
        "training data's token frequencies: a model that learned nothing beyond them.",
    )
    rows = [
        [
            b["domain"],
            _fmt(b["unigram"]),
            _fmt(b["natural_at_largest"]),
            _fmt(b["best"]),
            _fmt(b["best"] - b["unigram"], 3),
            b["best_cell"],
        ]
        for b in results["baselines"]
    ]
    yield (
        "table",
        [
            "domain",
            "unigram",
            "natural, largest N and D",
            "best cell",
            "best - unigram",
            "best cell is",
        ],
        rows,
    )
  if results.get("synthetic"):
    yield ("h2", "What the models were trained on: the synthetic data")
    yield (
        "p",
        "Per generated kind: the outputs kept, why the others were dropped, how many "
        "kept outputs had commentary cut off their ends, and faithfulness: the share "
        "of an output's content words (4+ letters) found in its source chunk.",
    )
    rows = [
        [
            x["kind"],
            x["outputs"],
            f"{x['kept_share']:.0%}",
            ", ".join(f"{k} {v}" for k, v in x["rejected"].items()) or "-",
            x["trimmed"],
            " / ".join(f"{v:.2f}" for v in x["faithfulness_quantiles"].values()) or "-",
        ]
        for x in results["synthetic"]
    ]
    yield (
        "table",
        [
            "kind",
            "outputs",
            "kept",
            "dropped (reason count)",
            "trimmed",
            "faithfulness p10 / p50 / p90",
        ],
        rows,
    )
    if "faithfulness.png" in images:
      yield ("img", "faithfulness.png", "faithfulness of the kept outputs per kind")
    for x in results["synthetic"]:
      yield (
          "list",
          [
              f"{x['kind']} {e['id']} (faithfulness {e['faithfulness']:.2f}): "
              f"{_excerpt(e['text'])}"
              for e in x["examples"]
          ]
          + [
              f"{x['kind']} {e['id']} (dropped: {e['reason']}): {_excerpt(e['text'])}"
              for e in x["rejected_examples"]
          ],
      )
  if results["joint_fits"]:
    yield ("h2", "L(N, D) = E + A / N^alpha + B / D^beta (Approach 3)")
    rows = [
        [
            f["mixture"],
            _fmt(f["E"]),
            _iv(f["intervals"].get("E"), 4),
            _fmt(f["A"]),
            _fmt(f["alpha"]),
            _fmt(f["B"]),
            _fmt(f["beta"]),
            f["n_points"],
            f"{f['holdout']['relative_error']:.2%}" if f["holdout"] else "-",
            f["note"] or "",
        ]
        for f in results["joint_fits"]
    ]
    yield (
        "table",
        [
            "mixture",
            "E",
            f"E {level}",
            "A",
            "alpha",
            "B",
            "beta",
            "points",
            "holdout error (largest D)",
            "note",
        ],
        rows,
    )
  for name, caption in (
      ("loss_vs_budget.png", f"loss against budget ({level} intervals)"),
      (
          "speedup.png",
          "speedup over natural data against budget (faint: extrapolated; band: interval)",
      ),
      ("loss_vs_share.png", "loss against synthetic share"),
      ("domain_heatmap.png", "per-domain loss gaps to natural data"),
      ("residuals.png", "L(N, D) fit residuals, every size"),
  ):
    if name in images:
      yield ("img", name, caption)


def _answers(results: dict, images: Dict[str, str], level: str):
  """The first page: speedups, best shares, the lowest floor, collapse signs."""
  yield ("h2", "Answers")
  if results["speedups"]:
    yield ("h3", "How much sooner each mixture reaches natural data's loss")
    yield (
        "p",
        "speedup = D_natural(L*) / D: the natural tokens needed for the loss L* the "
        f"mixture's L(D) fit reaches with D tokens, with its {level} interval, at the "
        "measured budgets. '> x': natural data's fit does not reach L* within its "
        "measured budgets, so only the bound x is supported.",
    )
    for N in sorted({s["N"] for s in results["speedups"]}):
      here = [s for s in results["speedups"] if s["N"] == N]
      budgets = sorted(
          {r["D"] for s in here for r in s["rows"] if r["D"] <= max(results["grid"]["D"])}
      )
      rows = [
          [s["mixture"]]
          + [_speedup_cell(next((r for r in s["rows"] if r["D"] == D), None)) for D in budgets]
          for s in here
      ]
      yield ("p", f"N = {_fmt(N)}")
      yield ("table", ["mixture"] + [f"D = {_short(D)}" for D in budgets], rows)
  if results["best_shares"]:
    yield ("h3", "Best synthetic share per model size and budget")
    yield (
        "p",
        "From the measured means, no fitted curve. A share: every other share is "
        "resolved worse. 'a (b-c)': an interior best at grid share a, lying between b "
        "and c. '<= c' or '>= b': an end and its neighbours are within noise, the best "
        "lies on that side of c (b). '~': not resolved.",
    )
    for kind in sorted({b["kind"] for b in results["best_shares"]}):
      here = [b for b in results["best_shares"] if b["kind"] == kind]
      Ds = sorted({b["D"] for b in here})
      rows = [
          [_fmt(N)]
          + [share.label(next((b for b in here if (b["N"], b["D"]) == (N, D)), None)) for D in Ds]
          for N in sorted({b["N"] for b in here})
      ]
      yield ("p", kind)
      yield ("table", ["N"] + [f"D = {_short(D)}" for D in Ds], rows)
    if "best_share.png" in images:
      yield ("img", "best_share.png", "best synthetic share per model size and budget")
  fits = results["joint_fits"] or []
  if fits:
    yield ("h3", "The lowest fitted floor E (L(N, D) per mixture)")
    identified = lambda f: "E" in f["intervals"]
    # identified floors first, lowest first; a floor the data do not show is not ranked
    ranked = sorted(fits, key=lambda f: (not identified(f), f["E"]))
    shown = ranked[:5] + [f for f in ranked[5:] if f["share"] == 0]
    lower = [
        f["mixture"]
        for f in fits
        if f.get("E_minus_natural")
        and f["E_minus_natural"]["resolved"]
        and f["E_minus_natural"]["diff"] < 0
    ]
    natural = next((f for f in fits if f["share"] == 0), None)
    if natural and not identified(natural):
      summary = (
          "Natural data's floor E is not identified (its losses show no floor yet), so "
          "no floor is compared with it."
      )
    else:
      summary = (
          f"Resolved below natural data's floor: {', '.join(lower)}."
          if lower
          else "No mixture's floor is resolved below natural data's."
      )
    diff = lambda f: (f.get("E_minus_natural") or {}).get("diff")
    yield ("p", summary + " The lowest floors (identified ones first), and natural's:")
    yield (
        "table",
        ["mixture", "E", f"E {level}", "E - natural's", level, "note"],
        [
            [
                f["mixture"],
                _fmt(f["E"]) if identified(f) else "-",
                _iv(f["intervals"].get("E"), 4),
                _signed(diff(f)),
                _iv(f["E_minus_natural"]["interval"]) if diff(f) is not None else "-",
                f["note"] or "",
            ]
            for f in shown
        ],
    )
  net = [
      (s, r)
      for s in results["speedups"]
      for r in s["rows"]
      if r.get("compute_speedup") is not None and not r["extrapolated"]
  ]
  if net:
    yield ("h3", "Net of generation compute")
    yield (
        "p",
        "compute speedup: natural data's training FLOPs for the same loss over the "
        "mixture's training FLOPs plus the generator's FLOPs for the synthetic tokens "
        "it used (2 x generator parameters per prompt and output token); break-even: "
        "how many training runs must share one synthetic set before it pays. At each "
        "size's largest budget that natural data's fit reaches.",
    )
    rows = []
    for N in sorted({s["N"] for s, _ in net}):
      for mixture in sorted({s["mixture"] for s, _ in net if s["N"] == N}):
        s, r = max(
            ((s, r) for s, r in net if s["N"] == N and s["mixture"] == mixture),
            key=lambda x: x[1]["D"],
        )
        rows.append(
            [
                mixture,
                _fmt(N),
                _short(r["D"]),
                _fmt(r["speedup"], 3),
                _fmt(r["compute_speedup"], 3)
                + (f" {_iv(r['compute_interval'])}" if r["compute_interval"] else ""),
                _runs(r["break_even_runs"])
                + (
                    f" [{_runs(r['break_even_interval'][0])}, "
                    f"{_runs(r['break_even_interval'][1])}]"
                    if r["break_even_interval"]
                    else ""
                ),
            ]
        )
    yield (
        "table",
        ["mixture", "N", "D", "token speedup", "compute speedup", "break-even runs"],
        rows,
    )
  accuracy = results.get("decision_accuracy") or []
  if accuracy:
    target = accuracy[0]["target"]
    yield ("h3", "Decision accuracy: can the smaller scales be trusted?")
    yield (
        "p",
        f"The share of mixture pairs ordered at each (N, D) as at N = "
        f"{_fmt(target['N'])}, D = {_fmt(target['D'])} (DataDecide's measure), with "
        f"its {level} interval.",
    )
    Ds = sorted({a["D"] for a in accuracy})
    rows = [
        [_fmt(N)]
        + [
            next(
                (
                    f"{a['accuracy']:.2f}" + (f" {_iv(a['interval'], 2)}" if a["interval"] else "")
                    for a in accuracy
                    if (a["N"], a["D"]) == (N, D)
                ),
                "target" if (N, D) == (target["N"], target["D"]) else "-",
            )
            for D in Ds
        ]
        for N in sorted({a["N"] for a in accuracy} | {target["N"]})
    ]
    yield ("table", ["N"] + [f"D = {_short(D)}" for D in Ds], rows)
  collapse = _collapse_rows(results)
  if collapse:
    yield ("h3", "Signs of collapse: mixtures worse than natural data on every domain")
    yield (
        "p",
        "Per mixture, the (N, D) cells at which its loss is resolved higher than "
        "natural data's on every evaluation domain, and those resolved lower on every "
        "domain, of the cells compared.",
    )
    yield (
        "table",
        ["mixture", "worse on every domain", "better on every domain", "cells"],
        collapse,
    )


def _runs(k: float) -> str:
  return "never" if k == float("inf") else f"{max(k, 0):.3g}"


def _signed(x: Optional[float]) -> str:
  return "-" if x is None else f"{x:+.3g}"


def _speedup_cell(r) -> str:
  if r is None:
    return "-"
  if r["natural_reach"] == "beyond":
    return f"> {_fmt(r['bound'], 3)}"
  if r["natural_reach"] == "below":
    return f"< {_fmt(r['bound'], 3)}"
  return _fmt(r["speedup"], 3) + (f" {_iv(r['interval'])}" if r["interval"] else "")


def _collapse_rows(results: dict):
  cells: Dict[tuple, List[str]] = {}
  for x in results["domain_gaps"]:
    cells.setdefault((x["mixture"], x["N"], x["D"]), []).append(x["verdict"])
  per_mixture: Dict[str, List[int]] = {}
  for (m, _, _), verdicts in cells.items():
    count = per_mixture.setdefault(m, [0, 0, 0])
    count[0] += all(v == "higher" for v in verdicts)
    count[1] += all(v == "lower" for v in verdicts)
    count[2] += 1
  return [[m, worse, better, total] for m, (worse, better, total) in sorted(per_mixture.items())]


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


def _excerpt(text: str, chars: int = 300) -> str:
  text = " ".join(text.split())
  return text if len(text) <= chars else text[:chars].rsplit(" ", 1)[0] + " ..."


def _cell_md(c) -> str:
  return f"[{c[1]}]({c[2]})" if isinstance(c, tuple) else str(c)


def _cell_html(c) -> str:
  if isinstance(c, tuple):
    return f"<a href='{html.escape(c[2])}'>{html.escape(c[1])}</a>"
  return html.escape(str(c))


def markdown(blocks) -> str:
  out = []
  for b in blocks:
    if b[0] == "h1":
      out.append(f"# {b[1]}\n")
    elif b[0] in ("h2", "h3"):
      out.append(f"{'#' * int(b[0][1])} {b[1]}\n")
    elif b[0] == "p":
      out.append(b[1] + "\n")
    elif b[0] == "list":
      out.append("\n".join(f"- {_cell_md(x)}" for x in b[1]) + "\n")
    elif b[0] == "table":
      head, rows = b[1], b[2]
      out.append("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
      out.extend("| " + " | ".join(_cell_md(c) for c in row) + " |" for row in rows)
      out.append("")
    elif b[0] == "img":
      out.append(f"![{b[2]}]({b[1]})\n")
  return "\n".join(out) + "\n"


def to_html(blocks) -> str:
  e = html.escape
  out = [
      "<!doctype html><meta charset='utf-8'><title>synthjax report</title>",
      "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
      "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style>",
  ]
  for b in blocks:
    if b[0] in ("h1", "h2", "h3"):
      out.append(f"<{b[0]}>{e(b[1])}</{b[0]}>")
    elif b[0] == "p":
      out.append(f"<p>{e(b[1])}</p>")
    elif b[0] == "list":
      out.append("<ul>" + "".join(f"<li>{_cell_html(x)}</li>" for x in b[1]) + "</ul>")
    elif b[0] == "table":
      out.append(
          "<table><tr>"
          + "".join(f"<th>{e(h)}</th>" for h in b[1])
          + "</tr>"
          + "".join(
              "<tr>" + "".join(f"<td>{_cell_html(c)}</td>" for c in row) + "</tr>" for row in b[2]
          )
          + "</table>"
      )
    elif b[0] == "img":
      out.append(f"<p><img src='{e(b[1])}' alt='{e(b[2])}'></p>")
  return "\n".join(out) + "\n"


def csv_text(header, rows) -> str:
  buffer = io.StringIO()
  out = csv.writer(buffer, lineterminator="\n")
  out.writerow(header)
  out.writerows(rows)
  return buffer.getvalue()
