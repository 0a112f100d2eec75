"""The report as a document: its blocks (headings, paragraphs, lists, tables, images), which
synthjax.analyze.render writes as Markdown and HTML."""

from typing import Dict, List, Optional

from synthjax.analyze import share, tables
from synthjax.analyze.numbers import break_even_runs
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
  yield ("list", [("link", name, name) for name in tables.csv_tables(results)])
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
              f"{tables.excerpt(e['text'])}"
              for e in x["examples"]
          ]
          + [
              f"{x['kind']} {e['id']} (dropped: {e['reason']}): {tables.excerpt(e['text'])}"
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
                break_even_runs(r["break_even_runs"])
                + (
                    f" [{break_even_runs(r['break_even_interval'][0])}, "
                    f"{break_even_runs(r['break_even_interval'][1])}]"
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
