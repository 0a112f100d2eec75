"""From run records to the study's answers: fits, speedups, best shares, domain gaps, report.

`analyze(records)` computes everything into one JSON-able dict; `write(results, out_dir)`
renders report.md, report.html, analysis.json and PNG plots. A partial grid still renders:
what could not be computed is listed under "Missing" with the reason.
"""
import html
import math
import os
from typing import Dict, List

import numpy as np

from synthjax import atomic
from synthjax.analyze import diagnostics, records as records_lib, scaling, share as share_lib
from synthjax.analyze.speedup import speedup_table
from synthjax.errors import UserError


def _fmt(x, digits=4) -> str:
  if isinstance(x, str):
    return x
  if x is None:
    return "-"
  if isinstance(x, (bool, np.bool_)):
    return "yes" if x else "no"
  if isinstance(x, (int, np.integer)) or (isinstance(x, float) and x.is_integer() and abs(x) >= 1e3):
    return f"{x:.3g}" if abs(x) >= 1e6 else f"{int(x)}"
  if not math.isfinite(x):
    return "inf"
  return f"{x:.{digits}g}"


def analyze(records: List[dict], n_boot: int = 50, seed: int = 0) -> dict:
  missing: List[str] = []
  Ns = sorted({r["N"] for r in records})
  Ds = sorted({r["D"] for r in records})
  mixtures = sorted({r["mixture"] for r in records}, key=lambda m: (m != "natural", m))
  present = {(r["mixture"], r["N"], r["D"]) for r in records}
  for m in mixtures:
    for N in Ns:
      for D in Ds:
        if (m, N, D) not in present:
          missing.append(f"run {m} at N={_fmt(N)}, D={_fmt(D)}")
  if not any(r["share"] == 0 for r in records):
    missing.append("natural baseline (share 0): no speedups or domain gaps without it")

  budget_fits = []
  for (mixture, N), rs in sorted(records_lib.group(records, "mixture", "N").items()):
    D = np.array([r["D"] for r in rs])
    L = np.array([r["loss"] for r in rs])
    if len(np.unique(D)) < 3:
      missing.append(f"L(D) fit for {mixture} at N={_fmt(N)}: needs 3 budgets, has "
                     f"{len(np.unique(D))}")
      continue
    fit = scaling.fit({"D": D}, L, what=f"{mixture} N={_fmt(N)}")
    if len(L) > 3 and n_boot:
      fit = scaling.bootstrap({"D": D}, L, fit, n_boot=n_boot, seed=seed)
    budget_fits.append({"mixture": mixture, "N": N, "kind": rs[0]["kind"],
                        "share": rs[0]["share"], "D_range": [float(D.min()), float(D.max())],
                        **fit.to_json()})

  joint_fits = []
  for (mixture,), rs in sorted(records_lib.group(records, "mixture").items()):
    N = np.array([r["N"] for r in rs])
    D = np.array([r["D"] for r in rs])
    L = np.array([r["loss"] for r in rs])
    if len(rs) < 5 or len(np.unique(N)) < 2 or len(np.unique(D)) < 2:
      missing.append(f"L(N, D) fit for {mixture}: needs 5 runs over 2+ sizes and 2+ budgets")
      continue
    fit = scaling.fit({"N": N, "D": D}, L, what=f"{mixture} L(N, D)")
    pred = fit.predict(N=N, D=D)
    joint_fits.append({"mixture": mixture, **fit.to_json(),
                       "residuals": [{"N": float(n), "D": float(d),
                                      "log_residual": float(np.log(l) - np.log(p))}
                                     for n, d, l, p in zip(N, D, L, pred)]})

  speedups = []
  by_key = {(f["mixture"], f["N"]): f for f in budget_fits}
  for f in budget_fits:
    if f["share"] == 0:
      continue
    base = next((b for (m, n), b in by_key.items() if n == f["N"] and b["share"] == 0), None)
    if base is None:
      missing.append(f"speedup of {f['mixture']} at N={_fmt(f['N'])}: no natural fit")
      continue
    budgets = sorted(set(Ds) | {max(Ds) * 3, max(Ds) * 10})  # measured, then extrapolated
    rows = speedup_table(base, f, budgets, tuple(base["D_range"]), tuple(f["D_range"]))
    speedups.append({"mixture": f["mixture"], "N": f["N"], "rows": rows})

  best_shares = []
  kinds = sorted({r["kind"] for r in records if r["share"] > 0})
  for kind in kinds:
    for (N, D), rs in sorted(records_lib.group(records, "N", "D").items()):
      pts = [r for r in rs if r["kind"] == kind or r["share"] == 0]
      if len({r["share"] for r in pts}) < 3:
        continue
      out = share_lib.best_share([r["share"] for r in pts], [r["loss"] for r in pts],
                                 seed=seed)
      best_shares.append({"kind": kind, "N": N, "D": D,
                          "points": sorted((r["share"], r["loss"]) for r in pts), **out})
  if kinds and not best_shares:
    missing.append("best share: no (size, budget) has losses at 3 or more shares of one kind")

  return {"grid": {"N": Ns, "D": Ds, "mixtures": mixtures, "runs": len(records)},
          "budget_fits": budget_fits, "joint_fits": joint_fits, "speedups": speedups,
          "best_shares": best_shares, "domain_gaps": diagnostics.domain_gaps(records),
          "records": [{k: v for k, v in r.items()} for r in records], "missing": missing}


# ----------------------------------------------------------------------------- plots

def _plots(results: dict, out_dir: str) -> Dict[str, str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  records = results["records"]
  Ns = results["grid"]["N"]
  colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(results["grid"]["mixtures"])}
  made = {}

  def save(fig, name):
    path = os.path.join(out_dir, name)
    tmp = path + ".tmp.png"
    # Axis labels and scales go into the PNG's text chunk, so a reader (or test) can tell
    # what each image plots without looking at it.
    ax = fig.axes[0]
    axes_desc = (f"x: {ax.get_xlabel()} ({ax.get_xscale()}); "
                 f"y: {ax.get_ylabel()} ({ax.get_yscale()})")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", metadata={"Description": axes_desc})
    plt.close(fig)
    os.replace(tmp, path)
    made[name] = path

  fig, axes = plt.subplots(1, len(Ns), figsize=(5 * len(Ns), 4), squeeze=False)
  for ax, N in zip(axes[0], Ns):
    for m in results["grid"]["mixtures"]:
      pts = sorted((r["D"], r["loss"]) for r in records if r["N"] == N and r["mixture"] == m)
      if pts:
        ax.scatter(*zip(*pts), color=colors[m], s=18)
      fit = next((f for f in results["budget_fits"] if f["N"] == N and f["mixture"] == m), None)
      if fit:
        D = np.geomspace(fit["D_range"][0], fit["D_range"][1] * 10, 50)
        ax.plot(D, fit["E"] + fit["B"] / D ** fit["beta"], color=colors[m], label=m)
    ax.set(xscale="log", yscale="log", xlabel="training tokens D", ylabel="validation loss",
           title=f"N = {_fmt(N)} params")
    ax.legend(fontsize=7)
  save(fig, "loss_vs_budget.png")

  if results["speedups"]:
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in results["speedups"]:
      D = [r["D"] for r in s["rows"]]
      sp = [min(r["speedup"], 1e6) for r in s["rows"]]
      line, = ax.plot(D, sp, "--", color=colors[s["mixture"]], alpha=0.5)
      inside = [(d, v) for d, v, r in zip(D, sp, s["rows"]) if not r["extrapolated"]]
      if inside:
        ax.plot(*zip(*inside), "o-", color=line.get_color(),
                label=f"{s['mixture']}, N={_fmt(s['N'])}")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="mixture tokens D",
           ylabel="speedup D_natural / D_mixture", title="speedup over natural (dashed: extrapolated)")
    ax.legend(fontsize=7)
    save(fig, "speedup.png")

  if results["best_shares"]:
    fig, axes = plt.subplots(1, len(Ns), figsize=(5 * len(Ns), 4), squeeze=False)
    for ax, N in zip(axes[0], Ns):
      for b in (b for b in results["best_shares"] if b["N"] == N):
        r, y = zip(*b["points"])
        line, = ax.plot(r, y, "o", label=f"{b['kind']}, D={_fmt(b['D'])}")
        grid = np.linspace(0, 1, 50)
        ax.plot(grid, np.polyval(b["coef"], grid), color=line.get_color(), lw=0.8)
        ax.plot([b["best_share"]], [b["best_loss"]], "*", ms=12, color=line.get_color())
      ax.set(xlabel="synthetic token share", ylabel="validation loss",
             title=f"N = {_fmt(N)}: loss vs share (* best)")
      ax.legend(fontsize=7)
    save(fig, "loss_vs_share.png")

  gaps = results["domain_gaps"]
  if gaps:
    top = max((g["N"], g["D"]) for g in gaps)
    sel = [g for g in gaps if (g["N"], g["D"]) == top]
    mixtures = sorted({g["mixture"] for g in sel})
    domains = sorted({g["domain"] for g in sel})
    grid = np.full((len(mixtures), len(domains)), np.nan)
    for g in sel:
      grid[mixtures.index(g["mixture"]), domains.index(g["domain"])] = g["gap"]
    fig, ax = plt.subplots(figsize=(1 + 0.7 * len(domains), 1 + 0.5 * len(mixtures)))
    lim = np.nanmax(np.abs(grid)) or 1.0
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(domains)), domains, rotation=45, ha="right")
    ax.set_yticks(range(len(mixtures)), mixtures)
    ax.set_title(f"loss minus natural's, N={_fmt(top[0])}, D={_fmt(top[1])}")
    fig.colorbar(im, ax=ax, label="loss gap (nats/token)")
    save(fig, "domain_heatmap.png")

  if results["joint_fits"]:
    fig, ax = plt.subplots(figsize=(6, 4))
    for f in results["joint_fits"]:
      ax.scatter([r["D"] for r in f["residuals"]], [r["log_residual"] for r in f["residuals"]],
                 color=colors[f["mixture"]], label=f["mixture"], s=18)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set(xscale="log", xlabel="training tokens D", ylabel="log L - log L_fit",
           title="L(N, D) fit residuals")
    ax.legend(fontsize=7)
    save(fig, "residuals.png")
  return made


# ----------------------------------------------------------------------------- document

def _blocks(results: dict, images: Dict[str, str], out_dir: str):
  g = results["grid"]
  yield ("h1", "synthjax study report")
  yield ("p", f"{g['runs']} runs; model sizes N = {', '.join(_fmt(n) for n in g['N'])}; "
              f"budgets D = {', '.join(_fmt(d) for d in g['D'])}; mixtures: "
              f"{', '.join(g['mixtures'])}.")
  if results["missing"]:
    yield ("h2", "Missing")
    yield ("list", results["missing"])
  yield ("h2", "Loss against data budget: L(D) = E + B / D^beta")
  rows = [[f["mixture"], _fmt(f["N"]), _fmt(f["E"]), _fmt(f["B"]), _fmt(f["beta"]),
           _ci(f, "beta"), _fmt(f["objective"], 3), f["n_points"]] for f in results["budget_fits"]]
  yield ("table", ["mixture", "N", "E", "B", "beta", "beta 5-95%", "objective", "points"], rows)
  if "loss_vs_budget.png" in images:
    yield ("img", "loss_vs_budget.png", "loss against budget, fitted curves over points")
  if results["joint_fits"]:
    yield ("h2", "L(N, D) = E + A / N^alpha + B / D^beta (Approach 3)")
    rows = [[f["mixture"], _fmt(f["E"]), _fmt(f["A"]), _fmt(f["alpha"]), _fmt(f["B"]),
             _fmt(f["beta"]), _fmt(f["objective"], 3), f["n_points"]]
            for f in results["joint_fits"]]
    yield ("table", ["mixture", "E", "A", "alpha", "B", "beta", "objective", "points"], rows)
    if "residuals.png" in images:
      yield ("img", "residuals.png", "fit residuals")
  if results["speedups"]:
    yield ("h2", "Speedup over natural data")
    yield ("p", "speedup = D_natural(L*) / D_mixture at the loss L* the mixture reaches with "
                "D_mixture tokens; * marks extrapolation beyond the measured budgets.")
    rows = []
    for s in results["speedups"]:
      for r in s["rows"]:
        rows.append([s["mixture"], _fmt(s["N"]), _fmt(r["D"]), _fmt(r["loss"]),
                     _fmt(r["D_natural"]), _fmt(r["speedup"], 3) + ("*" if r["extrapolated"]
                                                                      else "")])
    yield ("table", ["mixture", "N", "D mixture", "loss", "D natural", "speedup"], rows)
    if "speedup.png" in images:
      yield ("img", "speedup.png", "speedup against budget")
  if results["best_shares"]:
    yield ("h2", "Best synthetic share")
    rows = [[b["kind"], _fmt(b["N"]), _fmt(b["D"]), _fmt(b["best_share"], 3),
             f"{_fmt(b['interval'][0], 3)} - {_fmt(b['interval'][1], 3)}",
             _fmt(b["best_loss"])] for b in results["best_shares"]]
    yield ("table", ["kind", "N", "D", "best share", "5-95%", "loss at best"], rows)
    if "loss_vs_share.png" in images:
      yield ("img", "loss_vs_share.png", "loss against share")
  if results["domain_gaps"]:
    yield ("h2", "Per-domain loss gap to natural data (positive: mixture is worse)")
    domains = sorted({x["domain"] for x in results["domain_gaps"]})
    table: Dict[tuple, Dict[str, float]] = {}
    for x in results["domain_gaps"]:
      table.setdefault((x["mixture"], x["N"], x["D"]), {})[x["domain"]] = x["gap"]
    rows = [[m, _fmt(n), _fmt(d)] + [_fmt(v.get(dom), 3) for dom in domains]
            for (m, n, d), v in sorted(table.items())]
    yield ("table", ["mixture", "N", "D"] + domains, rows)
    if "domain_heatmap.png" in images:
      yield ("img", "domain_heatmap.png", "per-domain loss gaps")
  yield ("h2", "Runs")
  rows = [[r["mixture"], _fmt(r["N"]), _fmt(r["D"]), _fmt(r["share"], 3), _fmt(r["loss"]),
           _record_link(r["path"], out_dir)]
          for r in sorted(results["records"], key=lambda r: (r["N"], r["D"], r["mixture"]))]
  yield ("table", ["mixture", "N", "D", "share", "loss", "record"], rows)


def _record_link(path: str, out_dir: str):
  """A run.json becomes a link relative to the report; a line of a JSONL/CSV stays text."""
  if os.path.isfile(path):
    return ("link", path, os.path.relpath(path, out_dir))
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


def _markdown(blocks) -> str:
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


def _html(blocks) -> str:
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


def write(results: dict, out_dir: str) -> str:
  """Render the report into out_dir; returns the Markdown path."""
  os.makedirs(out_dir, exist_ok=True)
  images = _plots(results, out_dir)
  blocks = list(_blocks(results, images, out_dir))
  atomic.write_json(os.path.join(out_dir, "analysis.json"), _jsonable(results))
  atomic.write_text(os.path.join(out_dir, "report.html"), _html(blocks))
  path = os.path.join(out_dir, "report.md")
  atomic.write_text(path, _markdown(blocks))
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


def report(paths, out_dir: str, n_boot: int = 50) -> str:
  recs = records_lib.load(paths)
  if not recs:
    raise UserError("no run records")
  return write(analyze(recs, n_boot=n_boot), out_dir)
