"""From run records to the study's answers: fits, speedups, best shares, domain gaps, report.

`analyze(records)` computes everything into one JSON-able dict; `write(results, out_dir)`
renders report.md, report.html, analysis.json and PNG plots. A partial grid still renders:
what could not be computed is listed under "Missing" with the reason.
"""
import html
import io
import math
import os
import posixpath
from typing import Dict, List, Optional

import numpy as np

from synthjax import storage
from synthjax.analyze import laws, noise, records as records_lib, share as share_lib, speedup
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


def analyze(records: List[dict], n_boot: int = 1000, n_fit_boot: int = 100,
            seed: int = 0) -> dict:
  """Everything the report shows, from run records: cell means with intervals, findings,
  fits, speedups, best shares, per-domain gaps and baselines."""
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
          missing.append(f"run {m} at N={_fmt(N)}, D={_fmt(D)}")
  natural = [m for m in mixtures if kind_of[m][1] == 0]
  if not natural:
    missing.append("natural baseline (share 0): no speedups or domain gaps without it")
  if not cells.measured:
    missing.append("noise estimate: one seed per cell and no per-document losses, so no "
                   "interval and no difference is called (run 2+ seeds)")

  table = []
  for c, (m, N, D) in enumerate(cells.keys):
    q = cells.quantities
    bpb = [np.mean(list(r["bits_per_byte"].values())) for r in records
           if (r["mixture"], r["N"], r["D"]) == (m, N, D) and r["bits_per_byte"]]
    table.append({"mixture": m, "N": N, "D": D, "kind": kind_of[m][0],
                  "share": kind_of[m][1], "seeds": int(cells.seeds[c]),
                  "loss": float(cells.point[c, 0]),
                  "interval": noise.interval(cells.reps[:, c, 0]),
                  "bits_per_byte": float(np.mean(bpb)) if bpb else None,
                  "domains": {d: float(cells.point[c, i]) for i, d in enumerate(q) if i}})

  axis = {"N": 1, "D": 2}  # where each resource sits in a cell key (mixture, N, D)

  def law_points(mixture, free, fixed_name, fixed):
    keys = [k for k in cells.keys
            if k[0] == mixture and (fixed_name is None or k[axis[fixed_name]] == fixed)]
    idx = [cells.index(k) for k in keys]
    res = {name: np.array([k[axis[name]] for k in keys], np.float64) for name in free}
    return res, cells.point[idx, 0], cells.reps[:, idx, 0]

  def fit_family(free, fixed_name, label, holdout_on):
    out, too_few, no_holdout, rejected = [], [], [], []
    groups = sorted({(k[0], None if fixed_name is None else k[axis[fixed_name]])
                     for k in cells.keys}, key=lambda g: (g[0] != "natural", g[0], g[1] or 0))
    todo = []
    for mixture, fixed in groups:
      res, point, reps = law_points(mixture, free, fixed_name, fixed)
      where = f"{mixture}" + (f" at {fixed_name}={_fmt(fixed)}" if fixed_name else "")
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
      out.append({"mixture": mixture, "kind": kind_of[mixture][0],
                  "share": kind_of[mixture][1], fixed_name or "all": fixed,
                  **{f"{k}_range": [float(v.min()), float(v.max())] for k, v in res.items()},
                  **f, "residuals": [{**{k: float(v[i]) for k, v in res.items()},
                                      "log_residual": float(np.log(point[i] / pred[i]))}
                                     for i in range(len(point))]})
    if too_few:
      missing.append(f"{label} fit: needs {laws.min_points(free)} points (parameters + 2), "
                     f"not shown for {_listing(too_few)}")
    if rejected:
      missing.append(f"{label} fit does not apply to {_listing(rejected)}")
    if no_holdout:
      missing.append(f"{label} holdout error: needs {laws.min_points(free) + 1} points, "
                     f"not computed for {_listing(no_holdout)}")
    return out

  budget_fits = fit_family(["D"], "N", "L(D)", "D")
  model_fits = fit_family(["N"], "D", "L(N)", "N")
  joint_fits = fit_family(["N", "D"], None, "L(N, D)", "D")

  speedups = []
  for f in budget_fits:
    if f["share"] == 0:
      continue
    base = next((b for b in budget_fits if b["N"] == f["N"] and b["share"] == 0), None)
    if base is None:
      missing.append(f"speedup of {f['mixture']} at N={_fmt(f['N'])}: no natural L(D) fit")
      continue
    budgets = sorted(set(Ds) | {max(Ds) * 3, max(Ds) * 10})
    speedups.append({"mixture": f["mixture"], "N": f["N"],
                     "rows": speedup.speedup_rows(base, f, budgets)})

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
        out = share_lib.best_share([kind_of[m][1] for m in here], cells.point[idx, 0],
                                   cells.reps[:, idx, 0], cells.measured)
        best_shares.append({"kind": kind, "N": N, "D": D, **out})
  if kinds and not best_shares:
    missing.append("best share: no (size, budget) has losses at 3 or more shares of one kind")

  gaps, findings = [], []
  for (m, N, D) in cells.keys:
    base = next((b for b in natural if cells.has((b, N, D))), None)
    if base is None or m == base:
      continue
    per_domain = {d: noise.difference(cells, (m, N, D), (base, N, D), d)
                  for d in cells.quantities[1:]}
    gaps.extend({"mixture": m, "N": N, "D": D, "domain": d, "gap": g["diff"],
                 "interval": g["interval"], "verdict": g["verdict"]}
                for d, g in per_domain.items())
    if D == max(k[2] for k in cells.keys if k[1] == N and k[0] in (m, base)):
      overall = noise.difference(cells, (m, N, D), (base, N, D))
      findings.append({"mixture": m, "N": N, "D": D, **overall,
                       "domains_higher": sorted(d for d, g in per_domain.items()
                                                if g["verdict"] == "higher"),
                       "domains_lower": sorted(d for d, g in per_domain.items()
                                               if g["verdict"] == "lower"),
                       "domains": len(per_domain)})

  return {"grid": {"N": Ns, "D": Ds, "mixtures": mixtures, "runs": len(records),
                   "seeds": sorted({int(s) for s in cells.seeds}), "noise": cells.noise,
                   "level": noise.LEVEL},
          "cells": table, "findings": findings, "baselines": _baselines(records, table),
          "budget_fits": budget_fits, "model_fits": model_fits, "joint_fits": joint_fits,
          "speedups": speedups, "best_shares": best_shares, "domain_gaps": gaps,
          "records": records, "missing": missing}


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
    out.append({"domain": d, "unigram": base, "best": best["domains"][d],
                "best_cell": f"{best['mixture']}, N={_fmt(best['N'])}, D={_fmt(best['D'])}",
                "natural_at_largest": nat["domains"].get(d) if nat else None})
  avg = float(np.mean([b["unigram"] for b in out]))
  out.append({"domain": "mean", "unigram": avg,
              "best": float(np.mean([b["best"] for b in out])), "best_cell": "per domain",
              "natural_at_largest": (float(np.mean([b["natural_at_largest"] for b in out]))
                                     if all(b["natural_at_largest"] is not None for b in out)
                                     else None)})
  return out


# ----------------------------------------------------------------------------- plots

def _plots(results: dict, out_dir: str) -> Dict[str, str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib import ticker

  cells = results["cells"]
  Ns = results["grid"]["N"]
  colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(results["grid"]["mixtures"])}
  markers = dict(zip(Ns, "osD^v<>p*h"))
  styles = dict(zip(Ns, ["-", "--", ":", "-."] * 3))
  made = {}

  def budget_axis(ax):
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.FixedLocator(results["grid"]["D"]))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: _short(x)))
    ax.xaxis.set_minor_locator(ticker.NullLocator())

  def save(fig, name):
    path = storage.join(out_dir, name)
    # Axis labels and scales go into the PNG's text chunk, so a reader (or test) can tell
    # what each image plots without looking at it.
    ax = fig.axes[0]
    axes_desc = (f"x: {ax.get_xlabel()} ({ax.get_xscale()}); "
                 f"y: {ax.get_ylabel()} ({ax.get_yscale()})")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight",
                metadata={"Description": axes_desc})
    plt.close(fig)
    storage.write_bytes(path, buffer.getvalue())
    made[name] = path

  def errorbar(ax, x, c, **kw):
    lo, hi = c["interval"]
    ax.errorbar([x], [c["loss"]], yerr=[[c["loss"] - lo], [hi - c["loss"]]], capsize=2, **kw)

  kinds = [x for x in results.get("synthetic", []) if x["faithfulness"]]
  if kinds:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for x in kinds:
      ax.hist(x["faithfulness"], bins=np.linspace(0, 1, 21), histtype="step", linewidth=1.5,
              label=f"{x['kind']} ({x['kept']} kept)")
    ax.set_xlabel("faithfulness: share of content words from the source")
    ax.set_ylabel("kept outputs")
    ax.legend(fontsize=8)
    save(fig, "faithfulness.png")

  fig, axes = plt.subplots(1, len(Ns), figsize=(5.5 * len(Ns), 4.2), squeeze=False)
  for ax, N in zip(axes[0], Ns):
    for m in results["grid"]["mixtures"]:
      for c in (c for c in cells if c["N"] == N and c["mixture"] == m):
        errorbar(ax, c["D"], c, fmt=markers[N], color=colors[m], ms=4)
      fit = next((f for f in results["budget_fits"] if f["N"] == N and f["mixture"] == m), None)
      D = np.geomspace(min(results["grid"]["D"]), max(results["grid"]["D"]), 60)
      if fit:
        ax.plot(D, laws.predict(["D"], fit["theta"], D=D), color=colors[m], lw=1, label=m)
      else:
        pts = sorted((c["D"], c["loss"]) for c in cells if c["N"] == N and c["mixture"] == m)
        if pts:
          ax.plot(*zip(*pts), color=colors[m], lw=0.8, alpha=0.6, label=m)
    _baseline_line(ax, results)
    budget_axis(ax)
    ax.set(xlabel="training tokens D", ylabel="validation loss (nats/token)",
           title=f"N = {_fmt(N)} params ({results['grid']['level']:.0%} intervals)")
    ax.legend(fontsize=7)
  save(fig, "loss_vs_budget.png")

  if results["speedups"]:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for s in results["speedups"]:
      D = np.array([r["D"] for r in s["rows"]])
      sp = np.array([min(r["speedup"], 1e3) for r in s["rows"]])
      lo = np.array([min(r["interval"][0], 1e3) if r["interval"] else v
                     for r, v in zip(s["rows"], sp)])
      hi = np.array([min(r["interval"][1], 1e3) if r["interval"] else v
                     for r, v in zip(s["rows"], sp)])
      inside = np.array([not r["extrapolated"] for r in s["rows"]])
      color = colors[s["mixture"]]
      ax.plot(D, sp, styles[s["N"]], color=color, alpha=0.4, lw=0.8)
      ax.fill_between(D, lo, hi, color=color, alpha=0.12)
      if inside.any():
        ax.plot(D[inside], sp[inside], styles[s["N"]], marker=markers[s["N"]], color=color,
                label=f"{s['mixture']}, N={_fmt(s['N'])}")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: _short(x)))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f"{y:g}"))
    ax.set(xlabel="mixture tokens D", ylabel="speedup D_natural / D_mixture",
           title="speedup over natural (faint: extrapolated; band: interval)")
    ax.legend(fontsize=7)
    save(fig, "speedup.png")

  if results["best_shares"]:
    fig, axes = plt.subplots(1, len(Ns), figsize=(5.5 * len(Ns), 4.2), squeeze=False)
    for ax, N in zip(axes[0], Ns):
      for b in (b for b in results["best_shares"] if b["N"] == N):
        here = [c for c in cells if c["N"] == N and c["D"] == b["D"]
                and (c["kind"] == b["kind"] or c["share"] == 0)]
        here.sort(key=lambda c: c["share"])
        line, = ax.plot([c["share"] for c in here], [c["loss"] for c in here], "-",
                        marker=markers[N], ms=4,
                        label=f"{b['kind']}, D={_short(b['D'])}: {b['verdict']}")
        for c in here:
          errorbar(ax, c["share"], c, fmt="none", color=line.get_color())
        best = next(c for c in here if c["share"] == b["grid_argmin"])
        ax.plot([best["share"]], [best["loss"]], "*", ms=11, color=line.get_color())
      ax.set(xlabel="synthetic token share", ylabel="validation loss (nats/token)",
             title=f"N = {_fmt(N)}: loss vs share (* grid argmin)")
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
    fig, ax = plt.subplots(figsize=(2 + 0.9 * len(domains), 1.5 + 0.5 * len(mixtures)))
    lim = np.nanmax(np.abs(grid)) or 1.0
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for g in sel:  # the value; faint where its interval includes 0, white on dark cells
      ax.text(domains.index(g["domain"]), mixtures.index(g["mixture"]), f"{g['gap']:+.2f}",
              ha="center", va="center", fontsize=7,
              color="white" if abs(g["gap"]) > 0.6 * lim else "black",
              alpha=1.0 if g["verdict"] != "not resolved" else 0.35)
    ax.set_xticks(range(len(domains)), domains, rotation=45, ha="right")
    ax.set_yticks(range(len(mixtures)), mixtures)
    ax.set_title(f"loss minus natural's, N={_fmt(top[0])}, D={_fmt(top[1])} "
                 "(faint: within noise)")
    fig.colorbar(im, ax=ax, label="loss gap (nats/token)")
    save(fig, "domain_heatmap.png")

  if results["joint_fits"]:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for f in results["joint_fits"]:
      for N in Ns:
        pts = [(r["D"], r["log_residual"]) for r in f["residuals"] if r["N"] == N]
        if pts:
          ax.plot(*zip(*pts), markers[N], color=colors[f["mixture"]], ms=4,
                  label=f"{f['mixture']}, N={_fmt(N)}")
    ax.axhline(0, color="gray", lw=0.8)
    budget_axis(ax)
    ax.set(xlabel="training tokens D", ylabel="log L - log L_fit", title="L(N, D) fit residuals")
    ax.legend(fontsize=6, ncol=2)
    save(fig, "residuals.png")
  return made


def _baseline_line(ax, results):
  mean = next((b for b in results["baselines"] if b["domain"] == "mean"), None)
  if mean:
    ax.axhline(mean["unigram"], color="gray", ls=":", lw=1)
    ax.annotate("unigram baseline", (0.01, mean["unigram"]), xycoords=("axes fraction", "data"),
                fontsize=7, color="gray", va="bottom")


def _short(x: float) -> str:
  for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
    if abs(x) >= div:
      return f"{x / div:.3g}{unit}"
  return f"{x:.3g}"


# ----------------------------------------------------------------------------- document

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


def _blocks(results: dict, images: Dict[str, str], out_dir: str):
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
    rows = [[b["kind"], _fmt(b["N"]), _fmt(b["D"]), b["verdict"], _iv(b["interval"]),
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
  """Render the report into out_dir; returns the Markdown path. (analysis.json leaves out the
  per-document losses: they are in the run records.)"""
  storage.check_writable(out_dir)
  storage.makedirs(out_dir)
  images = _plots(results, out_dir)
  blocks = list(_blocks(results, images, out_dir))
  slim = dict(results, records=[{k: v for k, v in r.items() if k != "docs"}
                                for r in results["records"]])
  storage.write_json(storage.join(out_dir, "analysis.json"), _jsonable(slim))
  storage.write_text(storage.join(out_dir, "report.html"), _html(blocks))
  path = storage.join(out_dir, "report.md")
  storage.write_text(path, _markdown(blocks))
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


def report(paths, out_dir: str, n_boot: int = 1000, n_fit_boot: int = 100,
           synthetic: Optional[Dict[str, str]] = None) -> str:
  """The report of run records (files, folders or object-store prefixes) into out_dir (local
  or an object store); `synthetic` (kind -> generation output dir) adds what the synthetic
  data was."""
  from synthjax.analyze import synthetic as synthetic_lib
  storage.check_writable(out_dir)  # before the bootstraps, not after
  recs = records_lib.load(paths)
  if not recs:
    raise UserError("no run records")
  results = analyze(recs, n_boot=n_boot, n_fit_boot=n_fit_boot)
  results["synthetic"] = [synthetic_lib.summarize(k, d) for k, d in (synthetic or {}).items()]
  return write(results, out_dir)
