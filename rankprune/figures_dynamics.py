"""Figures of training dynamics (probes/movement.py, probes/hessian.py, regression.py): pure functions from
run-folder tables to matplotlib Figures, as figures.py draws the rest of a report."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rankprune.figures import (
    ABOVE, DEPTH_LINES, DEPTH_MARKERS, _anneal, _anneal_handle, _anneal_stars, _colours, _figure, _grid, _layer_name,
    _outside_legend, _place_labels, _plain_log_y, _whole_numbers,
)

# An eigenvalue below this fraction of the largest magnitude counts as zero (float64 Hessians of small networks
# put their flat directions at 1e-20 or so of the top).
ZERO_RTOL = 1e-10

__all__ = ["movement_across_epochs", "hessian_top_per_iteration", "hessian_density", "fitted_function", "jamming",
           "accuracies_per_iteration", "n_delta_across_training"]


def _per_layer(values: pd.Series, n: int) -> np.ndarray:
    return np.array([[v[i] if isinstance(v, list) and i < len(v) and v[i] is not None else np.nan for i in range(n)]
                     for v in values], dtype=float)


def movement_across_epochs(epochs: pd.DataFrame, drive: str) -> Figure:
    """One depth: relative movement of each weight matrix from its iteration's start (log scale) and from the
    first initialisation, and the driving rank measure of the change W_t - W_start, against epochs counted
    across the depth's iterations (dotted verticals: an iteration begins)."""
    epochs = epochs.sort_values(["iteration", "epoch"]).reset_index(drop=True)
    step = np.arange(1, len(epochs) + 1)
    starts = step[(epochs["iteration"].diff().fillna(0) != 0).to_numpy()]
    n = max(len(v) for v in epochs["movement"])
    fig, axes = _grid(3, ncols=3, size=(4.4, 3.4))
    colours = _colours(n)
    panels = (("movement", "from the iteration's start", "||W - W_start|| / ||W_start||", True),
              ("movement_from_init", "from the first initialisation", "||W - W_init|| / ||W_init||", True),
              (f"change_rank_{drive}", f"rank ({drive}) of W - W_start", "rank of the change (directions)", False))
    for ax, (column, title, ylabel, log) in zip(axes, panels):
        values = _per_layer(epochs[column], n) if column in epochs else np.full((len(epochs), n), np.nan)
        for layer, colour in enumerate(colours):
            ax.plot(step, values[:, layer], color=colour, label=_layer_name(layer, n))
        for s in starts:
            ax.axvline(s - 0.5, color="grey", ls=":", lw=0.8)
        if log and np.isfinite(values).any() and np.nanmax(values) > 0:
            ax.set_yscale("log")
            _plain_log_y(ax)
        elif not log:
            ax.set_ylim(bottom=0)
        if not np.isfinite(values).any():
            ax.text(0.5, 0.5, "no layer kept its shape", transform=ax.transAxes, ha="center", va="center",
                    color="dimgrey")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch (counted across iterations)")
        _whole_numbers(ax.xaxis)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return fig


def hessian_top_per_iteration(iterations: pd.DataFrame) -> Figure:
    """The top Hessian eigenvalues at each iteration's end, a panel per depth: one point per eigenvalue (the
    largest darkest), log scale where they are all positive."""
    depths = sorted(iterations["depth"].unique())
    fig, axes = _grid(len(depths), ncols=min(3, len(depths)), size=(4.4, 3.4))
    for ax, depth in zip(axes, depths):
        part = iterations[iterations["depth"] == depth].sort_values("iteration")
        values = [v for v in part["hessian_top"] if isinstance(v, list)]
        k = max((len(v) for v in values), default=0)
        shades = [(0.1 + 0.7 * i / max(k - 1, 1),) * 3 for i in range(k)]
        positive = True
        for _, row in part.iterrows():
            top = row["hessian_top"]
            if not isinstance(top, list):
                continue
            positive &= min(top) > 0
            ax.scatter([row["iteration"]] * len(top), top, c=shades[: len(top)], s=14, zorder=3)
        if positive and values:
            ax.set_yscale("log")
        ax.set_title(f"depth {depth}: top {k} Hessian eigenvalues", fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel("eigenvalue of the training-loss Hessian")
        ax.set_xticks(sorted(part["iteration"].unique()))
        ax.grid(alpha=0.3)
    return fig


def hessian_density(hessian: pd.DataFrame) -> Figure:
    """Full spectra: the density of sqrt(lambda) over the positive eigenvalues on a log axis, as the jamming
    experiments draw it; a line per iteration (dark: early), a panel per depth. Eigenvalues at or below
    ZERO_RTOL of the largest are counted in the legend, not drawn."""
    full = hessian[hessian["full"]]
    depths = sorted(full["depth"].unique())
    fig, axes = _grid(len(depths), ncols=min(3, len(depths)), size=(4.6, 3.4))
    for ax, depth in zip(axes, depths):
        part = full[full["depth"] == depth].sort_values("iteration")
        lo, hi = np.inf, -np.inf
        roots = []
        for _, row in part.iterrows():
            lam = np.asarray(row["eigenvalues"], dtype=float)
            # Eigenvalues within float64 rounding of zero (the flat directions) are zeros, not a density at 1e-10.
            floor = ZERO_RTOL * max(float(np.abs(lam).max()), 1e-300)
            r = np.sqrt(lam[lam > floor])
            roots.append((row["iteration"], r, int((lam <= floor).sum()), len(lam)))
            if r.size:
                lo, hi = min(lo, r.min()), max(hi, r.max())
        if not np.isfinite(lo):
            continue
        bins = np.logspace(np.log10(max(lo, hi * 1e-12)), np.log10(hi), 50)
        n_lines = len(roots)
        for i, (iteration, r, non_positive, total) in enumerate(roots):
            shade = (0.15 + 0.65 * i / max(n_lines - 1, 1),) * 3
            density, edges = np.histogram(r, bins=bins, density=True)
            centres = np.sqrt(edges[:-1] * edges[1:])
            ax.plot(centres, density, color=shade, drawstyle="steps-mid",
                    label=f"iteration {iteration}: {total:,} eigenvalues, {non_positive:,} <= 0 or ~0")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"depth {depth}: Hessian spectrum", fontsize=10)
        ax.set_xlabel("sqrt(eigenvalue)")
        ax.set_ylabel("density")
        ax.legend(fontsize=6.5, loc="best", framealpha=0.85)
        ax.grid(alpha=0.3)
    return fig


def fitted_function(x_train: np.ndarray, y_train: np.ndarray, xs: np.ndarray, truth: np.ndarray,
                    fits: dict[str, np.ndarray]) -> Figure:
    """A 1-D regression: the training points, the target function, and each fitted network over [-1, 1]."""
    fig, axes = _grid(1, ncols=1, size=(6.4, 4.2))
    ax = axes[0]
    ax.plot(xs, truth, color="black", lw=1.2, ls="--", label="target function")
    for (name, fit), colour in zip(fits.items(), _colours(len(fits))):
        ax.plot(xs, fit, color=colour, lw=1.6, label=name)
    ax.scatter(x_train, y_train, color="black", s=22, zorder=4, label=f"training points ({len(x_train)})")
    ax.set_xlabel("input x")
    ax.set_ylabel("output")
    ax.set_xlim(-1.02, 1.02)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def jamming(points: pd.DataFrame) -> Figure:
    """The jamming transition: training loss against N_Delta / N (unsatisfied margins per parameter), one point
    per epoch coloured by the epoch, a grey line per network (`run`), each network's last epoch labelled with its
    `label` (its parameter count) where it has room (labels that would print over one another are left out);
    the dashed line is N_Delta = N. Columns: run, label, epoch, x, train_loss."""
    fig = _figure(7.0, 4.6, (0.85, 0.3, 0.6, 0.3))
    ax = fig.add_subplot()
    sc = None
    for _, run in points.groupby("run"):
        run = run.sort_values("epoch")
        ax.plot(run.x, run.train_loss, color="grey", lw=0.6, alpha=0.6)
        sc = ax.scatter(run.x, run.train_loss, c=run.epoch, cmap="viridis", s=10, zorder=3,
                        vmin=points.epoch.min(), vmax=points.epoch.max())
    labels = []
    for label, g in points.groupby("label"):
        last = g.sort_values("epoch").groupby("run").tail(1)
        labels.append({"xy": (float(last.x.median()), float(last.train_loss.median())), "text": str(label),
                       "candidates": ABOVE, "fontsize": 7})
    ax.axvline(1.0, color="red", ls="--", lw=0.8)
    _log_or_symlog(ax.set_xscale, points.x)
    ax.set_yscale("log")
    _plain_log_y(ax)
    ax.set_xlabel("N_Delta / N (unsatisfied constraints per parameter)")
    ax.set_ylabel("training loss (quadratic hinge)")
    ax.grid(alpha=0.3)
    if sc is not None:
        cbar = fig.colorbar(sc, ax=ax, fraction=0.05, pad=0.02)
        cbar.set_label("epoch")
    _place_labels(ax, labels, [])  # last: placed against the final limits
    return fig


def _log_or_symlog(set_scale, values: pd.Series) -> None:
    """A log scale for counts per parameter; where some are 0 (a network that fits every margin), linear
    around 0 and logarithmic beyond."""
    positive = values[values > 0]
    if len(positive) == len(values):
        set_scale("log")
    else:
        set_scale("symlog", linthresh=float(positive.min()) / 2 if len(positive) else 1e-3)


SERIES_STYLES = tuple(zip(DEPTH_LINES, DEPTH_MARKERS))  # a line style and marker per series, beside its colour


def accuracies_per_iteration(iterations: pd.DataFrame, series: list[tuple[str, str]], chance: float | None = None) -> Figure:
    """A panel per depth: accuracies (fractions, drawn as %) of the columns in `series` ((column, legend label),
    ...) at the end of each controller iteration, a colour, line style and marker per column; a star marks an
    anneal; the dashed grey line is chance level (`chance`, a fraction: 1 / classes) where given. The panels
    share the y-range 0-100%, so that depths and subsets compare at a glance. Columns a row lacks are gaps."""
    depths = sorted(iterations["depth"].unique())
    fig, axes = _grid(len(depths), ncols=3, size=(3.8, 3.3))
    colours = _colours(len(series))
    for ax, depth in zip(axes, depths):
        rows = iterations[iterations["depth"] == depth].sort_values("iteration")
        annealed = _anneal(rows)
        for (column, label), colour, (line, marker) in zip(series, colours, SERIES_STYLES):
            if column not in rows:
                continue
            y = 100 * rows[column].astype(float)
            ax.plot(rows["iteration"], y, color=colour, ls=line, marker=marker, ms=5, lw=1.3, label=label)
            _anneal_stars(ax, rows["iteration"][annealed], y[annealed], colour)
        if chance is not None:
            ax.axhline(100 * chance, color="grey", ls="--", lw=0.9, label=f"chance (1/{round(1 / chance)})")
        ax.set_title(f"depth {depth}", fontsize=10)
        ax.set_xlabel("controller iteration")
        ax.set_xticks(sorted(rows["iteration"].unique()))
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 102)
        ax.grid(alpha=0.3)
    handles, _ = axes[0].get_legend_handles_labels()
    if _anneal(iterations).any():
        handles.append(_anneal_handle())
    # beside the first row's last panel, past the figure's right edge: `save` keeps what sticks out
    _outside_legend(axes[min(len(axes), 3) - 1], handles=handles, fontsize=7)
    return fig


def n_delta_across_training(epochs: pd.DataFrame, iterations: pd.DataFrame, n_train: int | None) -> Figure:
    """The quadratic hinge's N_Delta (unsatisfied constraints, one per training sample and output): per epoch as a
    share of the `n_train` constraints (samples x outputs; a count where that is unknown), against epochs counted across
    each depth's iterations, an iteration's last epoch marked; and per iteration N_Delta / N (N: the network's
    parameters) at saturation, log scale, the dashed line N_Delta = N where the jamming experiments put the
    transition (below it a network can fit every margin). A colour, line style and marker per depth."""
    fig, (per_epoch, per_iteration) = _grid(2, ncols=2, size=(4.8, 3.6))
    depths = sorted(epochs["depth"].unique())
    scale = 100 / n_train if n_train else 1.0
    for k, (depth, colour) in enumerate(zip(depths, _colours(len(depths)))):
        line, marker = DEPTH_LINES[k % len(DEPTH_LINES)], DEPTH_MARKERS[k % len(DEPTH_MARKERS)]
        rows = epochs[(epochs["depth"] == depth) & epochs["n_delta"].notna()].sort_values(["iteration", "epoch"])
        step = np.arange(1, len(rows) + 1)
        ends = (rows["iteration"] != rows["iteration"].shift(-1)).to_numpy()
        per_epoch.plot(step, scale * rows["n_delta"], color=colour, ls=line, lw=1.3, label=f"depth {depth}")
        per_epoch.plot(step[ends], scale * rows["n_delta"][ends], marker, color=colour, mec="black", mew=0.5, ms=5,
                       ls="none")
        done = iterations[(iterations["depth"] == depth)].dropna(subset=["n_delta_per_parameter"]).sort_values("iteration")
        per_iteration.plot(done["iteration"], done["n_delta_per_parameter"], color=colour, ls=line, marker=marker,
                           mec="black", mew=0.5, ms=5, lw=1.3, label=f"depth {depth}")
        annealed = _anneal(done)
        _anneal_stars(per_iteration, done["iteration"][annealed], done["n_delta_per_parameter"][annealed], colour)
    per_epoch.set_xlabel("epoch (counted across a depth's iterations)")
    per_epoch.set_ylabel(r"$N_\Delta$ (% of constraints)" if n_train else r"$N_\Delta$ (constraints)")
    per_epoch.set_ylim(bottom=0, top=102 if n_train else None)
    per_epoch.set_title("unsatisfied constraints (sample x output), per epoch", fontsize=10)
    _whole_numbers(per_epoch.xaxis)
    per_iteration.axhline(1.0, color="red", ls="--", lw=0.9, label=r"$N_\Delta = N$")
    _log_or_symlog(per_iteration.set_yscale, iterations["n_delta_per_parameter"].dropna())
    if per_iteration.get_yscale() == "log":
        _plain_log_y(per_iteration)
    per_iteration.set_xlabel("controller iteration")
    per_iteration.set_ylabel(r"$N_\Delta\,/\,N$ (per parameter)")
    per_iteration.set_title("per parameter, at each iteration's end", fontsize=10)
    _whole_numbers(per_iteration.xaxis)
    handles, _ = per_iteration.get_legend_handles_labels()
    if _anneal(iterations).any():
        handles.append(_anneal_handle())
    _outside_legend(per_iteration, handles=handles, fontsize=7)  # past the right edge: `save` keeps it
    for ax in (per_epoch, per_iteration):
        ax.grid(alpha=0.3, which="both")
    return fig
