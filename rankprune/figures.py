"""Figures of a report: pure functions from tables (pandas DataFrames of run-folder rows or trials) to
matplotlib Figures. No file names and no I/O except `save`; report.py decides what is drawn where.

Figures are built with the object-oriented API (`matplotlib.figure.Figure`), never pyplot, so drawing
needs no display and leaves the caller's pyplot state alone; PNGs are rendered by Agg.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rankprune.runfolder import atomic_path

__all__ = [
    "save", "accuracy_curves", "widths_per_iteration", "ranks_across_epochs", "spectra_per_iteration",
    "rank_scatter", "optuna_figure",
]

DPI = 110


def save(fig: Figure, path: Path) -> None:
    """Render a PNG to a temporary file beside `path`, then rename it over the target."""
    # Our figures lay themselves out (constrained); Optuna's do not, and their long tick labels get cut.
    tight = "tight" if fig.get_layout_engine() is None else None
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches=tight)


def _colours(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _layer_name(layer: int, n_matrices: int) -> str:
    return "output" if layer == n_matrices - 1 else f"hidden {layer + 1}"


def _grid(n: int, ncols: int = 3, size: tuple[float, float] = (4.2, 3.3)) -> tuple[Figure, list]:
    """n panels of `size` inches in rows of ncols. Margins are fixed in inches rather than solved by a
    layout engine: constrained layout doubled the time to render a 6-panel figure (0.4 s of 0.8 s)."""
    ncols = min(n, ncols)
    nrows = -(-n // ncols)
    width, height = size[0] * ncols, size[1] * nrows
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.15 / width, bottom=0.55 / height, top=1 - 0.35 / height,
                        wspace=0.85 / (size[0] - 0.85), hspace=0.95 / (size[1] - 0.95))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


# --- a run ------------------------------------------------------------------------------------------
def accuracy_curves(epochs: pd.DataFrame, iterations: pd.DataFrame, x: str, xlabel: str) -> Figure:
    """Test accuracy (%) per epoch against a cumulative cost column `x`, one colour per depth and one line
    per iteration (the network is rebuilt in between, so the line breaks); a dot, labelled with the
    iteration number, ends every finished iteration; a hollow dot at an iteration's start is the accuracy
    right after the rebuild, before retraining."""
    fig = Figure(figsize=(8, 4.8), layout="constrained")
    ax = fig.subplots()
    depths = sorted(epochs["depth"].unique())
    for colour, depth in zip(_colours(len(depths)), depths):
        part = epochs[epochs["depth"] == depth]
        for k, (_, it) in enumerate(part.groupby("iteration")):
            it = it.sort_values(x)
            ax.plot(it[x], 100 * it["test_acc"], color=colour, lw=1.4, label=f"depth {depth}" if k == 0 else None)
        ends = iterations[iterations["depth"] == depth].sort_values("iteration") if not iterations.empty else iterations
        if ends.empty:
            continue
        ax.plot(ends[x], 100 * ends["test_acc"], "o", color=colour, ms=6, mec="black", mew=0.6)
        for _, row in ends.iterrows():
            ax.annotate(str(int(row["iteration"])), (row[x], 100 * row["test_acc"]), xytext=(0, 6),
                        textcoords="offset points", fontsize=8, color=colour, ha="center")
        if "test_acc_after_rebuild" in ends:
            # iteration i starts where iteration i-1 ended
            starts = pd.DataFrame({"x": ends[x].to_numpy()[:-1], "acc": ends["test_acc_after_rebuild"].to_numpy()[1:]})
            starts = starts.dropna()
            ax.plot(starts["x"], 100 * starts["acc"].astype(float), "o", mfc="none", mec=colour, ms=6)
    ax.plot([], [], "o", color="grey", mec="black", mew=0.6, label="end of iteration (number)")
    ax.plot([], [], "o", mfc="none", mec="grey", label="after rebuild, before retraining")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def widths_per_iteration(widths: pd.DataFrame) -> Figure:
    """One panel per depth: each hidden layer's width (solid) and, where the iteration finished, the rank
    measured at saturation that sets the next width (dotted), against the controller iteration.
    `widths` has columns depth, iteration, widths (list per hidden layer), ranks (list or None)."""
    depths = sorted(widths["depth"].unique())
    fig, axes = _grid(len(depths), ncols=4, size=(3.6, 3.0))
    for ax, depth in zip(axes, depths):
        part = widths[widths["depth"] == depth].sort_values("iteration")
        n_layers = max(len(w) for w in part["widths"])
        for layer, colour in zip(range(n_layers), _colours(n_layers)):
            ax.plot(part["iteration"], [w[layer] for w in part["widths"]], "o-", color=colour, label=f"hidden {layer + 1} width")
            measured = part[part["ranks"].map(lambda r: isinstance(r, list))]
            if not measured.empty:
                ax.plot(measured["iteration"], [r[layer] for r in measured["ranks"]], "x:", color=colour,
                        label=f"hidden {layer + 1} rank")
        ax.set_title(f"depth {depth}")
        ax.set_xlabel("controller iteration")
        ax.set_ylabel("width / rank (units)")
        ax.set_xticks(sorted(part["iteration"].unique()))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def ranks_across_epochs(epochs: pd.DataFrame, measures: list[str], drive: str | None = None) -> Figure:
    """One depth: a panel per rank measure, a line per weight matrix (hidden layers, then the output),
    against epochs counted across the depth's iterations; dashed: the hidden layer's width (the most
    its incoming matrix's rank can be); dotted verticals: where an iteration begins."""
    epochs = epochs.sort_values(["iteration", "epoch"]).reset_index(drop=True)
    step = np.arange(1, len(epochs) + 1)
    starts = step[(epochs["iteration"].diff().fillna(0) != 0).to_numpy()]
    n_matrices = max(len(v) for v in epochs[f"rank_{measures[0]}"])
    fig, axes = _grid(len(measures))
    colours = _colours(n_matrices)
    for ax, spec in zip(axes, measures):
        values = epochs[f"rank_{spec}"]
        for layer, colour in enumerate(colours):
            ax.plot(step, [v[layer] if v is not None and layer < len(v) else np.nan for v in values], color=colour,
                    label=_layer_name(layer, n_matrices))
            if layer < n_matrices - 1:
                ax.plot(step, [w[layer] for w in epochs["widths"]], "--", color=colour, lw=0.8, alpha=0.6,
                        drawstyle="steps-mid")  # the width changes between iterations, not across an epoch
        for s in starts:
            ax.axvline(s - 0.5, color="grey", ls=":", lw=0.8)
        ax.set_title(f"rank: {spec}" + (" (drives the widths)" if spec == drive else ""))
        ax.set_xlabel("epoch (counted across iterations)")
        ax.set_ylabel("rank (singular directions)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, title="solid: rank; dashed: width", title_fontsize=7)
    return fig


def spectra_per_iteration(spectra: pd.DataFrame, rtol: float | None) -> Figure:
    """One depth: a panel per weight matrix, one line per iteration (dark to light), of sigma_i / sigma_1
    at saturation on a log scale; the horizontal line is the numerical rank's cut (rtol), if one drives."""
    import matplotlib

    layers = sorted(spectra["layer"].unique())
    iterations = sorted(spectra["iteration"].unique())
    cmap = matplotlib.colormaps["viridis"]
    shade = {it: cmap(0.85 * k / max(1, len(iterations) - 1)) for k, it in enumerate(iterations)}
    fig, axes = _grid(len(layers))
    for ax, layer in zip(axes, layers):
        part = spectra[spectra["layer"] == layer].sort_values("iteration")
        for _, row in part.iterrows():
            s = np.asarray(row["singular_values"], dtype=float)
            if s.size == 0 or s[0] <= 0:
                continue
            rel = s / s[0]
            rel[rel <= 0] = np.nan  # exact zeros have no place on a log axis
            ax.plot(np.arange(1, s.size + 1), rel, color=shade[row["iteration"]], lw=1.2,
                    label=f"iteration {int(row['iteration'])} ({s.size})")
        if rtol is not None:
            ax.axhline(rtol, color="crimson", ls="--", lw=0.9, label=f"rtol {rtol:g}")
        ax.set_yscale("log")
        ax.set_title(_layer_name(layer, len(layers)))
        ax.set_xlabel("index i (largest first)")
        ax.set_ylabel(r"$\sigma_i\,/\,\sigma_1$ (ratio, log scale)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, title="(singular values)", title_fontsize=7)
    return fig


# --- a study ----------------------------------------------------------------------------------------
def rank_scatter(trials: pd.DataFrame, classes: pd.Series, signatures: dict[int, str], y: str, ylabel: str,
                 scale: float = 100.0) -> Figure:
    """Network rank (sum of hidden-layer ranks) against `y` * scale, a colour per equivalence class;
    each point is labelled with its trial number."""
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    ids = sorted(classes.unique())
    for colour, cid in zip(_colours(len(ids)), ids):
        part = trials[classes == cid]
        ax.scatter(part["network_rank_sum"], scale * part[y], color=colour, s=40, edgecolor="black", lw=0.5,
                   label=f"class {cid}: {signatures.get(cid, '?')}", zorder=3)
    if len(trials) <= 40:
        for _, row in trials.iterrows():
            ax.annotate(f"#{int(row['number'])}", (row["network_rank_sum"], scale * row[y]), xytext=(4, 3),
                        textcoords="offset points", fontsize=7)
    ax.set_xlabel("network rank: sum of hidden-layer ranks (singular directions)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(ids) <= 15:
        ax.legend(fontsize=7, title="equivalence class: per-layer ranks", title_fontsize=7,
                  loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def optuna_figure(axes, xlabel: str | None = None, ylabel: str | None = None, integer_x: bool = False) -> Figure:
    """The Figure behind what an optuna.visualization.matplotlib function returned (an Axes or an array),
    with its axis labels replaced by ones that carry units where given."""
    first = np.ravel(axes)[0] if isinstance(axes, np.ndarray) else axes
    if xlabel is not None:
        first.set_xlabel(xlabel)
    if ylabel is not None:
        first.set_ylabel(ylabel)
    if integer_x:  # trial numbers
        from matplotlib.ticker import MaxNLocator

        first.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig = first.figure
    fig.set_size_inches(max(fig.get_figwidth(), 7.5), max(fig.get_figheight(), 4.5))
    return fig
