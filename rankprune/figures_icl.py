"""Figures of the in-context learning grid (rankprune.report.icl): pure functions from its cells table to matplotlib
Figures. The accuracy map is the experiment's 2 x 2 (family x seen / unseen tasks) over task count and width, on one
colour scale from chance to 1 so that the four panels read against each other."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from rankprune.figures import _colours, _figure, _three_digits

__all__ = ["accuracy_map", "width_map", "position_curves", "FAMILY_NAMES"]

FAMILY_NAMES = {"mlp": "MLP", "transformer": "transformer"}


def _panel(ax, table: pd.DataFrame, value: str, lo: float, hi: float, cmap, bound: str | None = None,
           digits=_three_digits):
    """One heatmap panel: rows task counts (log2 spaced), columns widths; each cell its mean over seeds and n; a cell
    whose value is a bound (`bound`, a column of '>=' / '<=' / '') is hatched and written with its side."""
    xs, ys = sorted(table["width"].unique()), sorted(table["tasks"].unique())
    grid = np.full((len(ys), len(xs)), np.nan)
    for _, c in table.iterrows():
        grid[ys.index(c["tasks"]), xs.index(c["width"])] = c[value]
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=lo, vmax=hi, origin="lower", aspect="auto")
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_yticks(range(len(ys)), [f"{v:,}" for v in ys])
    ax.tick_params(length=0)
    for edge in ax.spines.values():
        edge.set_visible(False)
    for _, c in table.iterrows():
        i, j = ys.index(c["tasks"]), xs.index(c["width"])
        v = grid[i, j]
        if not np.isfinite(v):
            continue
        rgba = cmap((v - lo) / (hi - lo) if hi > lo else 0.5)
        dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.55
        side = (c.get(bound) or "") if bound else ""
        if side:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", lw=0, alpha=0.5,
                                   edgecolor="white" if dark else "black"))
        ax.text(j, i, f"{side + ' ' if side else ''}{digits(v)}\nn = {int(c['n'])}", ha="center", va="center",
                fontsize=8.5, color="white" if dark else "black", linespacing=1.3,
                bbox={"boxstyle": "round,pad=0.15", "fc": rgba, "ec": "none", "alpha": 0.9} if side else None)
    return image


def accuracy_map(cells: pd.DataFrame, chance: float) -> Figure:
    """2 x 2: rows MLP and transformer, columns test accuracy on seen and on unseen tasks; each cell the mean over
    seeds (n) of one (task count, initial width), the network the controller chose."""
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    families = [f for f in FAMILY_NAMES if f in set(cells["family"])]
    n_w, n_t = cells["width"].nunique(), cells["tasks"].nunique()
    axes_w, axes_h = max(2.4, 1.05 * n_w), max(2.2, 0.62 * n_t)
    left, gap, right, bottom, top, vgap = 1.05, 0.45, 1.3, 0.75, 0.45, 0.7
    fig = _figure(left + 2 * axes_w + gap + right, bottom + len(families) * axes_h + (len(families) - 1) * vgap + top,
                  (left, right, bottom, top))
    width, height = fig.get_figwidth(), fig.get_figheight()
    image = None
    for r, family in enumerate(families):
        mine = cells[cells["family"] == family]
        for k, (value, label) in enumerate((("seen_mean", "seen tasks"), ("unseen_mean", "unseen tasks"))):
            x0 = left + k * (axes_w + gap)
            y0 = bottom + (len(families) - 1 - r) * (axes_h + vgap)
            ax = fig.add_axes((x0 / width, y0 / height, axes_w / width, axes_h / height))
            image = _panel(ax, mine, value, chance, 1.0, cmap)
            ax.set_title(f"{FAMILY_NAMES[family]}, {label}", fontsize=9.5, loc="left")
            if k == 0:
                ax.set_ylabel("tasks N")
            else:
                ax.set_yticklabels([])
            if r == len(families) - 1:
                ax.set_xlabel("initial width (units; model width d)")
    cax = fig.add_axes((1 - (right - 0.25) / width, bottom / height, 0.16 / width,
                        (height - bottom - top) / height))
    bar = fig.colorbar(image, cax=cax)
    bar.set_label(f"test accuracy (chance {chance:g})")
    return fig


def width_map(cells: pd.DataFrame) -> Figure:
    """Per family (columns), top: the convergent width of the group the size axis sets (an MLP's mean hidden width; a
    transformer's residual width), mean over seeds, a cell where a seed's width stayed at a bound hatched and marked;
    bottom: the share of all units (every group's width summed) the chosen network kept."""
    import matplotlib

    cmap = matplotlib.colormaps["cividis"]
    families = [f for f in FAMILY_NAMES if f in set(cells["family"])]
    n_w, n_t = cells["width"].nunique(), cells["tasks"].nunique()
    axes_w, axes_h = max(2.4, 1.05 * n_w), max(2.2, 0.62 * n_t)
    left, gap, right, bottom, top, vgap = 1.05, 1.75, 0.35, 0.75, 0.45, 0.75  # the gap holds a colour bar and its label
    fig = _figure(left + len(families) * axes_w + (len(families) - 1) * gap + right, bottom + 2 * axes_h + vgap + top,
                  (left, right, bottom, top))
    width, height = fig.get_figwidth(), fig.get_figheight()
    for k, family in enumerate(families):
        mine = cells[cells["family"] == family]
        x0 = left + k * (axes_w + gap)
        for row, (value, lo, hi, label, title, digits, bound) in enumerate((
                ("width_mean", 0.0, float(mine["width"].max()), "convergent width",
                 f"{FAMILY_NAMES[family]}: {'residual width' if family == 'transformer' else 'mean hidden width'}",
                 lambda v: f"{v:.3g}", "width_side"),
                ("kept_mean", 0.0, 1.0, "share of units kept", f"{FAMILY_NAMES[family]}: units kept, all groups",
                 lambda v: f"{v:.0%}", None))):
            y0 = bottom + (1 - row) * (axes_h + vgap)
            ax = fig.add_axes((x0 / width, y0 / height, axes_w / width, axes_h / height))
            image = _panel(ax, mine, value, lo, hi, cmap, bound=bound, digits=digits)
            ax.set_title(title, fontsize=9.5, loc="left")
            ax.set_xlabel("initial width" if row == 1 else "")
            ax.set_ylabel("tasks N")
            cax = fig.add_axes(((x0 + axes_w + 0.08) / width, y0 / height, 0.13 / width, axes_h / height))
            bar = fig.colorbar(image, cax=cax)
            bar.set_label(label)
            if row == 1:
                bar.formatter = matplotlib.ticker.PercentFormatter(1.0)
                bar.update_ticks()
    return fig


def position_curves(curves: list[dict], chance: float) -> Figure:
    """Accuracy by sequence position (the in-context learning curve) of chosen cells: one panel per width, a line per
    task count, seen tasks solid and unseen dashed; each line the mean over seeds."""
    widths = sorted({c["width"] for c in curves})
    tasks = sorted({c["tasks"] for c in curves})
    colours = dict(zip(tasks, _colours(len(tasks))))
    axes_w, axes_h, gap, left, right, bottom, top = 3.6, 2.6, 0.5, 0.8, 0.2, 0.95, 0.4
    fig = _figure(left + len(widths) * axes_w + (len(widths) - 1) * gap + right, bottom + axes_h + top,
                  (left, right, bottom, top))
    width, height = fig.get_figwidth(), fig.get_figheight()
    handles = []
    # every panel on one scale, down to the lowest curve (a memorised task can score far below chance on an unseen one)
    lowest = min(float(np.min(np.concatenate([c["seen"], c["unseen"]]))) for c in curves)
    floor = max(0.0, min(chance - 0.1, lowest - 0.03))
    for k, w in enumerate(widths):
        ax = fig.add_axes(((left + k * (axes_w + gap)) / width, bottom / height, axes_w / width, axes_h / height))
        for c in (c for c in curves if c["width"] == w):
            x = np.arange(len(c["seen"]))
            line, = ax.plot(x, c["seen"], color=colours[c["tasks"]], lw=1.4, label=f"N = {c['tasks']:,}")
            ax.plot(x, c["unseen"], color=colours[c["tasks"]], lw=1.4, ls="--")
            if k == 0:
                handles.append(line)
        ax.axhline(chance, color="grey", lw=0.8, ls=":")
        ax.set_ylim(floor, 1.02)
        ax.set_xlabel("position t (labelled examples seen before it)")
        if k == 0:
            ax.set_ylabel("test accuracy at position t")
        else:
            ax.set_yticklabels([])
        ax.set_title(f"transformer, initial width {w}", fontsize=9.5, loc="left")
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    handles += [Line2D([], [], color="black", lw=1.4, label="seen tasks"),
                Line2D([], [], color="black", lw=1.4, ls="--", label="unseen tasks"),
                Line2D([], [], color="grey", lw=0.8, ls=":", label="chance")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    return fig
