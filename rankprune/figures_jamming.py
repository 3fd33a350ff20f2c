"""Figures of the jamming experiment (dynamics/jamming.py), as Geiger, Spigler et al. draw them: pure functions
from tables to matplotlib Figures.

Tables: `checkpoints` has a row per network and measured step (depth, seed, N, h, P, step, train_loss, n_delta,
test_loss); `finals` a row per network at its last step; `stars` a row per depth and seed (n_star, side).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from rankprune.figures import _colours, _grid, _outside_legend, _plain_log_y

__all__ = ["delta_against_loss", "end_of_training", "phase_diagram", "hessian_density"]

STEP_CMAP = "viridis"


def delta_against_loss(checkpoints: pd.DataFrame, per: str) -> Figure:
    """Training loss against N_Delta / N (per = "N") or N_Delta / h (per = "h"), one point per network and measured
    step coloured by the step (log colour scale), a panel per depth; the dotted line is N_Delta = N (or h). Rows with
    zero loss or N_Delta = 0 have no place on log axes and are left out (the caption counts them)."""
    depths = sorted(checkpoints["depth"].unique())
    fig, axes = _grid(len(depths), ncols=min(2, len(depths)), size=(5.4, 4.2), legend_room=0.9)
    drawable = checkpoints[(checkpoints["train_loss"] > 0) & (checkpoints["n_delta"] > 0)]
    steps = drawable["step"].clip(lower=1)
    norm = LogNorm(vmin=max(1, steps.min()), vmax=max(2, steps.max()))
    for ax, depth in zip(axes, depths):
        part = drawable[drawable["depth"] == depth]
        x = part["n_delta"] / part[per]
        sc = ax.scatter(x, part["train_loss"], c=part["step"].clip(lower=1), cmap=STEP_CMAP, norm=norm, s=9,
                        alpha=0.75, linewidths=0)
        ax.axvline(1.0, color="black", ls=":", lw=1.0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(r"$N_\Delta / N$ (unsatisfied constraints per weight)" if per == "N"
                      else r"$N_\Delta / h$ (unsatisfied constraints per hidden unit)")
        ax.set_ylabel("training loss (quadratic hinge)")
        ax.set_title(f"depth {depth}: {part.groupby(['seed', 'N']).ngroups} networks", fontsize=10)
        ax.grid(alpha=0.3, which="major")
        fig.colorbar(sc, ax=ax, label="training step (0 drawn at 1)", pad=0.02)
    return fig


def _zero_floor(values: pd.Series) -> float:
    positive = values[values > 0]
    return float(positive.min()) / 10 if len(positive) else 1e-12


def end_of_training(finals: pd.DataFrame, stars: pd.DataFrame) -> Figure:
    """At the step budget, against N (log): N_Delta / N, the training loss and the test loss, a line per depth
    and seed (colour: depth); a loss of exactly zero is drawn as a downward triangle on the panel's floor. The
    vertical lines are each depth's N* (the median over seeds of the crossings that were measured)."""
    fig, axes = _grid(3, ncols=3, size=(4.6, 3.8), legend_room=0.0)
    depths = sorted(finals["depth"].unique())
    colours = dict(zip(depths, _colours(len(depths))))
    panels = (("n_delta_per_N", r"$N_\Delta / N$ at the step budget"), ("train_loss", "training loss at the step budget"),
              ("test_loss", "test loss at the step budget"))
    for ax, (column, ylabel) in zip(axes, panels):
        floor = _zero_floor(finals[column])
        for (depth, seed), run in finals.groupby(["depth", "seed"]):
            run = run.sort_values("N")
            y = run[column].where(run[column] > 0, floor)
            ax.plot(run["N"], y, color=colours[depth], lw=1.0, alpha=0.8, marker="o", ms=3)
            zero = run[run[column] <= 0]
            if len(zero):
                ax.scatter(zero["N"], [floor] * len(zero), marker="v", s=30, color=colours[depth], zorder=4)
        for depth in depths:
            measured = stars[(stars["depth"] == depth) & (stars["side"] == "=")]["n_star"]
            if len(measured):
                ax.axvline(float(np.median(measured)), color=colours[depth], ls="--", lw=1.0)
        if column == "n_delta_per_N":
            ax.axhline(1.0, color="black", ls=":", lw=1.0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log_y(ax)
        ax.set_xlabel("N (weights)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="major")
    handles = [Line2D([], [], color=colours[d], marker="o", ms=3, label=f"depth {d} (a line per seed)") for d in depths]
    handles += [Line2D([], [], color="grey", ls="--", label="N* (median over seeds)"),
                Line2D([], [], color="grey", marker="v", ls="none", label="exactly zero (on the floor)")]
    axes[1].legend(handles=handles, fontsize=7.5, loc="lower left")
    return fig


def phase_diagram(finals: pd.DataFrame, stars: pd.DataFrame, intervals: pd.DataFrame) -> Figure:
    """P / N against depth: every network at the step budget, filled where N_Delta >= N (jammed: the constraints
    outnumber the weights) and open where N_Delta < N; the jamming line joins each depth's P / N* (geometric mean
    over seeds) with its interval; seeds whose crossing lies outside the grid are not on the line (the caption
    says which)."""
    fig, axes = _grid(1, ncols=1, size=(6.4, 4.6), legend_room=2.3)
    ax = axes[0]
    rng = np.random.default_rng(0)
    for jammed, style in ((True, dict(facecolors="tab:red", edgecolors="tab:red")),
                          (False, dict(facecolors="none", edgecolors="tab:blue"))):
        part = finals[(finals["n_delta_per_N"] >= 1) == jammed]
        jitter = rng.uniform(-0.12, 0.12, len(part))  # seeds share an N: spread them sideways
        ax.scatter(part["depth"] + jitter, part["P"] / part["N"], s=22, linewidths=1.0, zorder=3,
                   label=r"$N_\Delta \geq N$ at the budget (jammed)" if jammed else r"$N_\Delta < N$ (unjammed)", **style)
    if len(intervals):
        line = intervals.sort_values("depth")
        y = line["P"] / line["n_star"]
        lower = y - line["P"] / line["n_star_high"]
        upper = line["P"] / line["n_star_low"] - y
        ax.errorbar(line["depth"], y, yerr=[lower, upper], color="black", lw=1.6, capsize=4, marker="s", ms=5,
                    zorder=4, label=r"jamming line $P/N^*$ (95% interval over seeds)")
    ax.set_yscale("log")
    ax.set_xticks(sorted(finals["depth"].unique()))
    ax.set_xlabel("depth L (hidden layers)")
    ax.set_ylabel("P / N (training patterns per weight)")
    ax.grid(alpha=0.3, which="major")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8)
    return fig


def hessian_density(spectra: pd.DataFrame) -> Figure:
    """The spectrum of the full Hessian as the jamming notebook draws it: per network, a histogram (Sturges' bins)
    of ln sqrt(lambda) over the positive eigenvalues, as a density, drawn against sqrt(lambda) on a log axis. A row
    per depth, at initialisation (left) and at the step budget (right); a line per network, coloured by N, solid
    below the jamming point N* and dashed above it. Columns of `spectra`: depth, N, ratio (N / N*), when ("init" |
    "end"), eigenvalues; a network whose Hessian is exactly zero (zero loss) is named in the legend."""
    import matplotlib

    depths = sorted(spectra["depth"].unique())
    fig, axes = _grid(2 * len(depths), ncols=2, size=(4.8, 3.9), legend_room=2.1)
    cmap = matplotlib.colormaps["viridis"]
    sizes = sorted(spectra["N"].unique())
    shade = {n: cmap(0.9 * i / max(len(sizes) - 1, 1)) for i, n in enumerate(sizes)}
    for row, depth in enumerate(depths):
        for col, when in enumerate(("init", "end")):
            ax = axes[2 * row + col]
            part = spectra[(spectra["depth"] == depth) & (spectra["when"] == when)].sort_values("N")
            zero_nets = []
            for _, net in part.iterrows():
                lam = np.asarray(net["eigenvalues"], dtype=float)
                if lam.size == 0:
                    zero_nets.append(int(net["N"]))
                    continue
                # Eigenvalues within float64 rounding of zero are the flat directions, not a density at 1e-10.
                positive = lam[lam > 1e-10 * np.abs(lam).max()]
                if positive.size < 2:
                    continue
                log_root = np.log(np.sqrt(positive))
                density, edges = np.histogram(log_root, bins="sturges", density=True)
                centres = np.exp((edges[:-1] + edges[1:]) / 2)
                below = np.isfinite(net["ratio"]) and net["ratio"] < 1
                side = "" if not np.isfinite(net["ratio"]) else (" < N*" if below else " > N*")
                ax.plot(centres, density, color=shade[net["N"]], lw=1.4, ls="-" if below or not side else "--",
                        marker="o", ms=2.5, label=f"N = {int(net['N']):,}{side}: {positive.size:,} of {lam.size:,} > 0")
            if zero_nets:
                ax.plot([], [], color="none", label="H = 0 (zero loss): N = " + ", ".join(f"{n:,}" for n in zero_nets))
            ax.set_xscale("log")
            ax.set_ylim(bottom=0)
            ax.set_xlabel(r"$\sqrt{\lambda}$ (square root of a Hessian eigenvalue)")
            ax.set_ylabel(r"density of $\ln\sqrt{\lambda}$")
            ax.set_title(f"depth {depth}, " + ("at initialisation" if when == "init" else "at the step budget"), fontsize=10)
            ax.grid(alpha=0.3, which="major")
            _outside_legend(ax, fontsize=6.5)  # beside the panel: the spectra fill the axes
    return fig
