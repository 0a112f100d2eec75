"""The report's plots, as PNG files whose text chunk says what each axis shows.

They scale to a paper-sized grid: one row of panels per synthetic kind and one column per
model size, natural data in black in every panel and a kind's mixtures coloured by their share
on a sequential colormap, legends outside the axes.
"""

import io
from typing import Dict, List

import numpy as np

from synthjax import storage
from synthjax.analyze import laws, share
from synthjax.analyze.numbers import fmt as _fmt
from synthjax.analyze.numbers import short as _short

NATURAL = "black"
PANEL = (3.4, 2.7)  # inches a panel


def render(results: dict, out_dir: str) -> Dict[str, str]:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib import ticker

  cells = results["cells"]
  Ns = results["grid"]["N"]
  Ds = results["grid"]["D"]
  share_of = {c["mixture"]: c["share"] for c in cells}
  kind_of = {c["mixture"]: c["kind"] for c in cells}
  kinds = sorted({k for m, k in kind_of.items() if share_of[m] > 0}) or ["natural"]
  natural = [m for m in results["grid"]["mixtures"] if share_of[m] == 0]
  made: Dict[str, str] = {}

  def color(m):
    return NATURAL if share_of[m] == 0 else plt.cm.viridis(0.9 * (1 - share_of[m]))

  def members(kind) -> List[str]:
    """natural, then the kind's mixtures by share."""
    return natural + sorted(
        (m for m in results["grid"]["mixtures"] if kind_of[m] == kind and share_of[m] > 0),
        key=lambda m: share_of[m],
    )

  def label(m):
    return "natural" if share_of[m] == 0 else f"share {share_of[m]:.2g}"

  def budget_axis(ax):
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.FixedLocator(Ds))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: _short(x)))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.tick_params(axis="x", labelsize=7, rotation=45)

  def panels(rows, cols):
    fig, axes = plt.subplots(
        len(rows),
        len(cols),
        squeeze=False,
        sharey="row",
        figsize=(PANEL[0] * len(cols) + 2.4, PANEL[1] * len(rows) + 0.8),
    )
    margins(fig)
    for i, row in enumerate(rows):
      for j, col in enumerate(cols):
        axes[i, j].set_title(f"{row}, N = {_fmt(col)}", fontsize=8)
    return fig, axes

  def margins(fig):
    """Fixed margins in inches (a layout engine took most of the report's time at 18
    panels): room for the labels, and on the right for the legends."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(
        left=0.8 / w, right=1 - 1.6 / w, bottom=0.8 / h, top=1 - 0.45 / h, hspace=0.55, wspace=0.12
    )

  def legend_outside(ax, title=None):
    handles, labels = ax.get_legend_handles_labels()
    if handles:
      ax.legend(
          handles,
          labels,
          fontsize=7,
          title=title,
          title_fontsize=7,
          loc="upper left",
          bbox_to_anchor=(1.02, 1.0),
          borderaxespad=0,
      )

  def save(fig, name, xlabel, ylabel, xscale, yscale):
    # Axis labels and scales go into the PNG's text chunk, so a reader (or test) can tell
    # what each image plots without looking at it.
    fig.supxlabel(xlabel, fontsize=9)
    fig.supylabel(ylabel, fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(
        buffer,
        format="png",
        dpi=100,
        metadata={"Description": f"x: {xlabel} ({xscale}); y: {ylabel} ({yscale})"},
    )
    plt.close(fig)
    path = storage.join(out_dir, name)
    storage.write_bytes(path, buffer.getvalue())
    made[name] = path

  def with_bars(ax, here, x, **kw):
    y = np.array([c["loss"] for c in here])
    if all(c["interval"] for c in here):
      lo = np.array([c["interval"][0] for c in here])
      hi = np.array([c["interval"][1] for c in here])
      ax.errorbar(x, y, yerr=[y - lo, hi - y], capsize=1.5, lw=0.8, **kw)
    else:
      ax.plot(x, y, **kw)

  generated = [x for x in results.get("synthetic", []) if x["faithfulness"]]
  if generated:
    fig, ax = plt.subplots(figsize=(6, 3.6), layout="constrained")
    for x in generated:
      ax.hist(
          x["faithfulness"],
          bins=list(np.linspace(0, 1, 21)),
          histtype="step",
          linewidth=1.5,
          label=f"{x['kind']} ({x['kept']} kept)",
      )
    ax.legend(fontsize=8)
    save(
        fig,
        "faithfulness.png",
        "faithfulness: share of content words from the source",
        "kept outputs",
        "linear",
        "linear",
    )

  fig, axes = panels(kinds, Ns)
  grid_D = np.geomspace(min(Ds), max(Ds), 60)
  for i, kind in enumerate(kinds):
    for j, N in enumerate(Ns):
      ax = axes[i, j]
      for m in members(kind):
        here = sorted((c for c in cells if c["N"] == N and c["mixture"] == m), key=lambda c: c["D"])
        if not here:
          continue
        fit = next((f for f in results["budget_fits"] if f["N"] == N and f["mixture"] == m), None)
        with_bars(
            ax,
            here,
            [c["D"] for c in here],
            marker="o",
            ms=2.5,
            color=color(m),
            label=label(m),
            ls="none" if fit else "-",
        )
        if fit:
          ax.plot(grid_D, laws.predict(["D"], fit["theta"], D=grid_D), color=color(m), lw=0.8)
      _baseline_line(ax, results)
      budget_axis(ax)
    legend_outside(axes[i, -1])
  save(
      fig,
      "loss_vs_budget.png",
      "training tokens D",
      "validation loss (nats/token)",
      "log",
      "linear",
  )

  if results["speedups"]:
    fig, axes = panels(kinds, Ns)
    for i, kind in enumerate(kinds):
      for j, N in enumerate(Ns):
        ax = axes[i, j]
        for s in (s for s in results["speedups"] if s["N"] == N and kind_of[s["mixture"]] == kind):
          rows = [r for r in s["rows"] if r["natural_reach"] == "within"]
          if not rows:
            continue
          D = np.array([r["D"] for r in rows])
          sp = np.array([r["speedup"] for r in rows])
          inside = np.array([not r["extrapolated"] for r in rows])
          c = color(s["mixture"])
          if all(r["interval"] for r in rows):
            ax.fill_between(
                D,
                [r["interval"][0] for r in rows],
                np.minimum([r["interval"][1] for r in rows], 1e3),
                color=c,
                alpha=0.15,
            )
          ax.plot(D, sp, color=c, lw=0.6, alpha=0.5)
          ax.plot(D[inside], sp[inside], "o-", ms=2.5, color=c, label=label(s["mixture"]))
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: _short(x)))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f"{y:g}"))
        ax.tick_params(axis="x", labelsize=7, rotation=45)
      legend_outside(axes[i, -1])
    save(fig, "speedup.png", "mixture tokens D", "speedup D_natural / D_mixture", "log", "log")

  if results["best_shares"]:
    share_kinds = sorted({b["kind"] for b in results["best_shares"]})
    fig, axes = panels(share_kinds, Ns)
    budget_color = {D: plt.cm.plasma(0.85 * k / max(len(Ds) - 1, 1)) for k, D in enumerate(Ds)}
    for i, kind in enumerate(share_kinds):
      for j, N in enumerate(Ns):
        ax = axes[i, j]
        for b in (b for b in results["best_shares"] if b["N"] == N and b["kind"] == kind):
          here = sorted(
              (
                  c
                  for c in cells
                  if c["N"] == N and c["D"] == b["D"] and c["mixture"] in members(kind)
              ),
              key=lambda c: c["share"],
          )
          with_bars(
              ax,
              here,
              [c["share"] for c in here],
              marker="o",
              ms=2,
              ls="-",
              color=budget_color[b["D"]],
              label=f"D = {_short(b['D'])}",
          )
          best = next(c for c in here if c["share"] == b["grid_argmin"])
          ax.plot([best["share"]], [best["loss"]], "*", ms=8, color=budget_color[b["D"]])
      legend_outside(axes[i, -1], title="* grid argmin")
    save(
        fig,
        "loss_vs_share.png",
        "synthetic token share",
        "validation loss (nats/token)",
        "linear",
        "linear",
    )
    _best_share_map(plt, results, share_kinds, save)

  gaps = results["domain_gaps"]
  if gaps:
    top = max((g["N"], g["D"]) for g in gaps)
    sel = [g for g in gaps if (g["N"], g["D"]) == top]
    mixtures = sorted({g["mixture"] for g in sel}, key=lambda m: (kind_of[m], share_of[m]))
    domains = sorted({g["domain"] for g in sel})
    grid = np.full((len(mixtures), len(domains)), np.nan)
    for g in sel:
      grid[mixtures.index(g["mixture"]), domains.index(g["domain"])] = g["gap"]
    fig, ax = plt.subplots(
        figsize=(3.5 + 0.8 * len(domains), 1.8 + 0.3 * len(mixtures)), layout="constrained"
    )
    lim = np.nanmax(np.abs(grid)) or 1.0
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for g in sel:  # the value; faint where its interval includes 0, white on dark cells
      ax.text(
          domains.index(g["domain"]),
          mixtures.index(g["mixture"]),
          f"{g['gap']:+.2f}",
          ha="center",
          va="center",
          fontsize=7,
          color="white" if abs(g["gap"]) > 0.6 * lim else "black",
          alpha=1.0 if g["verdict"] != "not resolved" else 0.35,
      )
    ax.set_xticks(range(len(domains)), domains, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(mixtures)), mixtures, fontsize=7)
    ax.set_title(
        f"loss minus natural's, N={_fmt(top[0])}, D={_fmt(top[1])} (faint: within noise)",
        fontsize=9,
    )
    fig.colorbar(im, ax=ax, label="loss gap (nats/token)")
    save(fig, "domain_heatmap.png", "evaluation domain", "mixture", "linear", "linear")

  if results["joint_fits"]:
    fig, axes = plt.subplots(
        1,
        len(kinds),
        squeeze=False,
        sharey=True,
        figsize=(PANEL[0] * len(kinds) + 2.4, PANEL[1] + 0.8),
    )
    margins(fig)
    for ax, kind in zip(axes[0], kinds):
      for f in (f for f in results["joint_fits"] if f["mixture"] in members(kind)):
        pts = sorted((r["D"], r["log_residual"]) for r in f["residuals"])
        ax.plot(*zip(*pts), "o", ms=2, color=color(f["mixture"]), label=label(f["mixture"]))
      ax.axhline(0, color="gray", lw=0.8)
      ax.set_title(kind, fontsize=8)
      budget_axis(ax)
    legend_outside(axes[0, -1])
    save(fig, "residuals.png", "training tokens D", "log L - log L_fit", "log", "linear")
  return made


def _best_share_map(plt, results, share_kinds, save):
  """Per kind: the grid argmin share per (N, D) as colour; its verdict as text, faint where
  it is not resolved."""
  Ns, Ds = results["grid"]["N"], results["grid"]["D"]
  fig, axes = plt.subplots(
      1,
      len(share_kinds),
      squeeze=False,
      layout="constrained",
      figsize=((0.55 * len(Ds) + 1.2) * len(share_kinds) + 1, 0.4 * len(Ns) + 1.3),
  )
  for ax, kind in zip(axes[0], share_kinds):
    grid = np.full((len(Ns), len(Ds)), np.nan)
    for b in (b for b in results["best_shares"] if b["kind"] == kind):
      i, j = Ns.index(b["N"]), Ds.index(b["D"])
      grid[i, j] = b["grid_argmin"]
      ax.text(
          j,
          i,
          share.label(b).replace(" (", "\n("),
          ha="center",
          va="center",
          fontsize=6,
          alpha=1.0 if b["verdict"] != "not resolved" else 0.4,
      )
    im = ax.imshow(grid, cmap="YlGnBu", vmin=0, vmax=1, aspect="auto", origin="lower")
    ax.set_xticks(range(len(Ds)), [_short(D) for D in Ds], rotation=45, fontsize=7)
    ax.set_yticks(range(len(Ns)), [_short(N) for N in Ns], fontsize=7)
    ax.set_title(kind, fontsize=8)
  fig.colorbar(im, ax=list(axes[0]), label="grid argmin share")
  save(fig, "best_share.png", "training tokens D", "model size N", "linear", "linear")


def _baseline_line(ax, results):
  mean = next((b for b in results["baselines"] if b["domain"] == "mean"), None)
  if mean:
    ax.axhline(mean["unigram"], color="gray", ls=":", lw=1)
    ax.annotate(
        "unigram",
        (0.01, mean["unigram"]),
        xycoords=("axes fraction", "data"),
        fontsize=6,
        color="gray",
        va="bottom",
    )
