"""The report's plots, as PNG files whose text chunk says what each axis shows."""
import io
from typing import Dict

import numpy as np

from synthjax import storage
from synthjax.analyze import laws
from synthjax.analyze.numbers import fmt as _fmt, short as _short


def render(results: dict, out_dir: str) -> Dict[str, str]:
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
