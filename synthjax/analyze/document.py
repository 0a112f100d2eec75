"""The report as a document: blocks (headings, paragraphs, lists, tables, images) rendered to
Markdown and HTML."""
import html
import os
import posixpath
from typing import Dict

from synthjax import storage
from synthjax.analyze.numbers import fmt as _fmt


def _iv(iv, digits=3) -> str:
  return f"[{_fmt(iv[0], digits)}, {_fmt(iv[1], digits)}]" if iv else "-"


def _law_rows(fits, coef, expo, var, fixed):
  rows = []
  for f in fits:
    iv = f["intervals"]
    hold = f["holdout"]
    rows.append([f["mixture"], _fmt(f[fixed]) if fixed else "all", _fmt(f["E"]),
                 _iv(iv.get("E")), _fmt(f[coef]), _fmt(f[expo]), _iv(iv.get(expo)),
                 f["n_points"],
                 f"{hold['relative_error']:.2%} at {var}={_fmt(hold['at'])}" if hold else "-",
                 f["note"] or ""])
  return rows


def blocks(results: dict, images: Dict[str, str], out_dir: str):
  g = results["grid"]
  level = f"{g['level']:.0%}"
  yield ("h1", "synthjax study report")
  sources = [name for name, measured in g["noise"].items() if measured]
  yield ("p", f"{g['runs']} runs; model sizes N = {', '.join(_fmt(n) for n in g['N'])}; "
              f"budgets D = {', '.join(_fmt(d) for d in g['D'])}; mixtures: "
              f"{', '.join(g['mixtures'])}; seeds per cell: "
              f"{', '.join(str(s) for s in g['seeds'])}. Intervals are {level}, from a "
              f"bootstrap over {' and '.join(sources) or 'nothing (no noise measured)'}; a "
              "difference is called only when its interval excludes 0.")
  if results["missing"]:
    yield ("h2", "Missing")
    yield ("list", results["missing"])
  if results["findings"]:
    yield ("h2", "Findings: each mixture against natural data at its largest budget")
    yield ("p", "Mean validation loss of the mixture minus natural's at equal tokens "
                f"(negative: the mixture is better), with its {level} interval; per domain, "
                "how many domains are resolved higher or lower.")
    rows = [[f["mixture"], _fmt(f["N"]), _fmt(f["D"]), f"{f['diff']:+.4f}",
             _iv(f["interval"], 3), _finding(f),
             f"{len(f['domains_higher'])} higher, {len(f['domains_lower'])} lower, "
             f"{f['domains'] - len(f['domains_higher']) - len(f['domains_lower'])} within noise"]
            for f in results["findings"]]
    yield ("table", ["mixture", "N", "D", "loss - natural", level, "verdict", "domains"], rows)
  if results["baselines"]:
    yield ("h2", "How far the models got: unigram baseline per domain")
    yield ("p", "unigram = cross-entropy of the domain's evaluation tokens under the natural "
                "training data's token frequencies: a model that learned nothing beyond them.")
    rows = [[b["domain"], _fmt(b["unigram"]), _fmt(b["natural_at_largest"]), _fmt(b["best"]),
             _fmt(b["best"] - b["unigram"], 3), b["best_cell"]] for b in results["baselines"]]
    yield ("table", ["domain", "unigram", "natural, largest N and D", "best cell",
                     "best - unigram", "best cell is"], rows)
  if results.get("synthetic"):
    yield ("h2", "What the models were trained on: the synthetic data")
    yield ("p", "Per generated kind: the outputs kept, why the others were dropped, how many "
                "kept outputs had commentary cut off their ends, and faithfulness: the share "
                "of an output's content words (4+ letters) found in its source chunk.")
    rows = [[x["kind"], x["outputs"], f"{x['kept_share']:.0%}",
             ", ".join(f"{k} {v}" for k, v in x["rejected"].items()) or "-", x["trimmed"],
             " / ".join(f"{v:.2f}" for v in x["faithfulness_quantiles"].values()) or "-"]
            for x in results["synthetic"]]
    yield ("table", ["kind", "outputs", "kept", "dropped (reason count)", "trimmed",
                     "faithfulness p10 / p50 / p90"], rows)
    if "faithfulness.png" in images:
      yield ("img", "faithfulness.png", "faithfulness of the kept outputs per kind")
    for x in results["synthetic"]:
      yield ("list", [f"{x['kind']} {e['id']} (faithfulness {e['faithfulness']:.2f}): "
                      f"{_excerpt(e['text'])}" for e in x["examples"]]
             + [f"{x['kind']} {e['id']} (dropped: {e['reason']}): {_excerpt(e['text'])}"
                for e in x["rejected_examples"]])
  yield ("h2", "Mean validation loss per cell")
  yield ("p", "loss in nats per token (token-weighted over domains); bits/byte: the mean over "
              "domains of each domain's bits per byte of text, comparable across vocabularies.")
  rows = [[c["mixture"], _fmt(c["N"]), _fmt(c["D"]), c["seeds"], _fmt(c["loss"]),
           _iv(c["interval"], 4), _fmt(c["bits_per_byte"])] for c in results["cells"]]
  yield ("table", ["mixture", "N", "D", "seeds", "loss", level, "bits/byte"], rows)
  if "loss_vs_budget.png" in images:
    yield ("img", "loss_vs_budget.png", "loss against budget: cell means with intervals")
  if results["budget_fits"]:
    yield ("h2", "Data law L(D) = E + B / D^beta per mixture at fixed N")
    yield ("table", ["mixture", "N", "E", f"E {level}", "B", "beta", f"beta {level}",
                     "points", "holdout error", "note"],
           _law_rows(results["budget_fits"], "B", "beta", "D", "N"))
  if results["model_fits"]:
    yield ("h2", "Model law L(N) = E + A / N^alpha per mixture at fixed D")
    yield ("table", ["mixture", "D", "E", f"E {level}", "A", "alpha", f"alpha {level}",
                     "points", "holdout error", "note"],
           _law_rows(results["model_fits"], "A", "alpha", "N", "D"))
  if results["joint_fits"]:
    yield ("h2", "L(N, D) = E + A / N^alpha + B / D^beta (Approach 3)")
    rows = [[f["mixture"], _fmt(f["E"]), _fmt(f["A"]), _fmt(f["alpha"]), _fmt(f["B"]),
             _fmt(f["beta"]), _fmt(f["objective"], 3), f["n_points"],
             f"{f['holdout']['relative_error']:.2%}" if f["holdout"] else "-", f["note"] or ""]
            for f in results["joint_fits"]]
    yield ("table", ["mixture", "E", "A", "alpha", "B", "beta", "objective", "points",
                     "holdout error (largest D)", "note"], rows)
    if "residuals.png" in images:
      yield ("img", "residuals.png", "fit residuals")
  if results["speedups"]:
    yield ("h2", "Speedup over natural data")
    yield ("p", "speedup = D_natural(L*) / D_mixture at the loss L* the mixture's L(D) reaches "
                "with D_mixture tokens; * marks extrapolation beyond the measured budgets.")
    rows = []
    for s in results["speedups"]:
      for r in s["rows"]:
        rows.append([s["mixture"], _fmt(s["N"]), _fmt(r["D"]), _fmt(r["loss"]),
                     _fmt(r["D_natural"]), _fmt(r["speedup"], 3) + ("*" if r["extrapolated"]
                                                                    else ""),
                     _iv(r["interval"])])
    yield ("table", ["mixture", "N", "D mixture", "loss", "D natural", "speedup", level], rows)
    if "speedup.png" in images:
      yield ("img", "speedup.png", "speedup against budget")
  if results["best_shares"]:
    yield ("h2", "Best synthetic share")
    yield ("p", "From the measured means, no fitted curve: the confidence set holds the shares "
                "within noise of the lowest loss (95%, simultaneous); an interior optimum's "
                "interval runs between the grid shares around that set. The grid argmin is the "
                f"paper's grid search, with the {level} interval of the argmin over replicates.")
    rows = [[b["kind"], _fmt(b["N"]), _fmt(b["D"]), b["verdict"], _iv(b["interval"] or b["bound"]),
             _fmt(b["grid_argmin"], 3), _iv(b["grid_argmin_interval"]),
             ", ".join(_fmt(x, 3) for x in b["confidence_set"])]
            for b in results["best_shares"]]
    yield ("table", ["kind", "N", "D", "verdict", "interval", "grid argmin", level,
                     "confidence set"], rows)
    if "loss_vs_share.png" in images:
      yield ("img", "loss_vs_share.png", "loss against share")
  if results["domain_gaps"]:
    yield ("h2", "Per-domain loss gap to natural data at each size's largest budget")
    yield ("p", f"mixture's loss minus natural's (positive: worse) [{level} interval]; "
                "(~) marks a gap within noise.")
    domains = sorted({x["domain"] for x in results["domain_gaps"]})
    largest = {f["N"]: f["D"] for f in results["findings"]}
    table: Dict[tuple, Dict[str, dict]] = {}
    for x in results["domain_gaps"]:
      if largest.get(x["N"]) == x["D"]:
        table.setdefault((x["mixture"], x["N"], x["D"]), {})[x["domain"]] = x
    rows = [[m, _fmt(n), _fmt(d)] + [_gap(v.get(dom)) for dom in domains]
            for (m, n, d), v in sorted(table.items())]
    yield ("table", ["mixture", "N", "D"] + domains, rows)
    if "domain_heatmap.png" in images:
      yield ("img", "domain_heatmap.png", "per-domain loss gaps")
  yield ("h2", "Runs")
  rows = [[r["mixture"], _fmt(r["N"]), _fmt(r["D"]), r["seed"], _fmt(r["share"], 3),
           _fmt(r["loss"]), ", ".join(f"{k} x{v:.3g}" for k, v in r["repeats"].items()
                                      if v > 1) or "-",
           _record_link(r["path"], out_dir)]
          for r in sorted(results["records"],
                          key=lambda r: (r["N"], r["D"], r["mixture"], r["seed"]))]
  yield ("table", ["mixture", "N", "D", "seed", "share", "loss", "repeated", "record"], rows)


def _excerpt(text: str, chars: int = 300) -> str:
  text = " ".join(text.split())
  return text if len(text) <= chars else text[:chars].rsplit(" ", 1)[0] + " ..."


def _finding(f: dict) -> str:
  if f["verdict"] == "not resolved":
    return "no difference resolved"
  return "mixture worse" if f["verdict"] == "higher" else "mixture better"


def _gap(x) -> str:
  if x is None:
    return "-"
  return (f"{x['gap']:+.3f} {_iv(x['interval'], 2)}"
          + (" (~)" if x["verdict"] == "not resolved" else ""))


def _record_link(path: str, out_dir: str):
  """A run.json becomes a link relative to the report; a line of a JSONL/CSV stays text."""
  if storage.is_remote(path) != storage.is_remote(out_dir):
    return ("link", path, path) if storage.isfile(path) else path
  if storage.isfile(path):
    rel = (posixpath.relpath(path.split("://", 1)[1], out_dir.split("://", 1)[1])
           if storage.is_remote(path) else os.path.relpath(path, out_dir))
    return ("link", path, rel)
  return path


def _cell_md(c) -> str:
  return f"[{c[1]}]({c[2]})" if isinstance(c, tuple) else str(c)


def _cell_html(c) -> str:
  if isinstance(c, tuple):
    return f"<a href='{html.escape(c[2])}'>{html.escape(c[1])}</a>"
  return html.escape(str(c))


def _ci(fit: dict, key: str) -> str:
  iv = (fit.get("intervals") or {}).get(key)
  return f"{_fmt(iv[0], 3)} - {_fmt(iv[1], 3)}" if iv else "-"


def markdown(blocks) -> str:
  out = []
  for b in blocks:
    if b[0] == "h1":
      out.append(f"# {b[1]}\n")
    elif b[0] == "h2":
      out.append(f"## {b[1]}\n")
    elif b[0] == "p":
      out.append(b[1] + "\n")
    elif b[0] == "list":
      out.append("\n".join(f"- {x}" for x in b[1]) + "\n")
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
  out = ["<!doctype html><meta charset='utf-8'><title>synthjax report</title>",
         "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style>"]
  for b in blocks:
    if b[0] in ("h1", "h2"):
      out.append(f"<{b[0]}>{e(b[1])}</{b[0]}>")
    elif b[0] == "p":
      out.append(f"<p>{e(b[1])}</p>")
    elif b[0] == "list":
      out.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in b[1]) + "</ul>")
    elif b[0] == "table":
      out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in b[1]) + "</tr>"
                 + "".join("<tr>" + "".join(f"<td>{_cell_html(c)}</td>" for c in row) + "</tr>"
                           for row in b[2]) + "</table>")
    elif b[0] == "img":
      out.append(f"<p><img src='{e(b[1])}' alt='{e(b[2])}'></p>")
  return "\n".join(out) + "\n"
