"""Figures of the lazy-training experiments (rankprune/dynamics/lazy.py and landscape.py): pure functions from
units (the dicts lazy.units' computations return) or landscape panels to matplotlib Figures, as figures.py
draws the rest of a report. No I/O; rankprune.report.lazy decides what is drawn where."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator, NullFormatter

from rankprune.figures import _colours, _grid, _plain_log_y

__all__ = ["setting_label", "ordered_settings", "dynamics", "fits", "landscape", "movement_exponent"]

_NAMES = {"width": "width", "alpha": "α", "feature_dim": "features", "init": "initialisation"}


def setting_label(name: str, value) -> str:
    """How a setting reads in a legend: "width 100", "α = 1000", "8 features", "bad initialisation"."""
    if name == "width":
        return f"width {value:,}"
    if name == "alpha":
        return f"α = {value:g}"
    if name == "feature_dim":
        return f"{value} features"
    if name == "init":
        return f"{value} initialisation"
    return f"{name} {value}"


def ordered_settings(units: list[dict]) -> list:
    """The values of the units' varied setting, in order (numbers ascending; the good initialisation first)."""
    values = {u[u["setting"]] for u in units}
    return sorted(values, key=lambda v: (0, {"good": 0, "bad": 1}.get(v, 2), "") if isinstance(v, str) else (1, 0, v))


def _name(units: list[dict]) -> str:
    return units[0]["setting"]


def _series(unit: dict, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of a unit's rows from step 1 on (a log axis has no step 0), finite and positive only."""
    steps, values = [], []
    for row in unit["rows"]:
        v = row.get(column)
        if column == "movement_last":
            v = (row.get("movement") or [None])[-1]
        if row["step"] >= 1 and v is not None and math.isfinite(v) and v > 0:
            steps.append(row["step"])
            values.append(v)
    return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def _median(runs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The median over runs at each step that every run reached (steps come from the same log_steps)."""
    if not runs:
        return np.array([]), np.array([])
    common = set(runs[0][0].tolist())
    for s, _ in runs[1:]:
        common &= set(s.tolist())
    steps = np.array(sorted(common))
    if steps.size == 0:
        return steps, steps
    stacked = np.array([[dict(zip(s.tolist(), v.tolist()))[t] for t in steps] for s, v in runs])
    return steps, np.median(stacked, axis=0)


def _legend_below(fig: Figure, handles: list, ncol: int) -> None:
    """A figure legend under the panels (save's tight box keeps it), where it covers no data."""
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=max(1, ncol), fontsize=8.5,
               frameon=False)


def _log_axes(ax) -> None:
    """Log-log axes, y tick labels readable at any span: plain numbers at a decade or two (figures._plain_log_y),
    powers of ten every decade or so beyond. Call it once everything is drawn."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    if lo > 0 and np.log10(hi / lo) < 2:
        _plain_log_y(ax)
    else:
        ax.yaxis.set_major_locator(LogLocator(base=10, numticks=8))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3, which="major")


_PANELS = (("loss", "training loss (MSE, all points)", "Training loss"),
           ("movement_last", "relative movement ‖W−W₀‖/‖W₀‖", "Last weight matrix: movement"),
           ("movement_network", "relative movement ‖θ−θ₀‖/‖θ₀‖", "Whole network: movement"))


def dynamics(units: list[dict], title: str | None = None) -> Figure:
    """Training loss and relative movement (of the last weight matrix, and of all parameters together) against
    the SGD step, both axes logarithmic, from step 1: a colour per setting, each seed a thin line of its colour
    and the median over seeds bold."""
    values = ordered_settings(units)
    colours = dict(zip(values, _colours(len(values))))
    name = _name(units)
    fig, axes = _grid(3, ncols=3, size=(4.3, 3.5))
    for ax, (column, ylabel, panel_title) in zip(axes, _PANELS):
        for v in values:
            runs = [_series(u, column) for u in units if u[name] == v]
            runs = [r for r in runs if r[0].size]
            for s, y in runs:
                ax.plot(s, y, color=colours[v], lw=0.7, alpha=0.4)
            s, y = _median(runs)
            if s.size:
                ax.plot(s, y, color=colours[v], lw=2.0)
        _log_axes(ax)
        ax.set_xlabel("SGD step")
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11, y=1.0)
    handles = [Line2D([], [], color=colours[v], lw=2.0, label=setting_label(name, v)) for v in values]
    handles.append(Line2D([], [], color="grey", lw=0.7, alpha=0.6, label="one seed (thin), median (bold)"))
    _legend_below(fig, handles, len(handles))
    return fig


def _limits(target: np.ndarray, y_train: np.ndarray, curves: list[np.ndarray]) -> tuple[float, float]:
    """y limits that always show the target and the points, and the fits as far as a span beyond them (a bad
    initialisation's function can leave the picture; the axes then cut it rather than squash the rest)."""
    base_lo, base_hi = float(min(target.min(), y_train.min())), float(max(target.max(), y_train.max()))
    span = max(base_hi - base_lo, 1e-9)
    finite = [c[np.isfinite(c)] for c in curves]
    lo = min([base_lo] + [float(c.min()) for c in finite if c.size])
    hi = max([base_hi] + [float(c.max()) for c in finite if c.size])
    lo, hi = max(lo, base_lo - span), min(hi, base_hi + span)
    pad = 0.06 * (hi - lo)
    return lo - pad, hi + pad


def fits(units: list[dict], show_start: bool = False) -> Figure:
    """One panel per seed: the target function (dashed black), that seed's training points (black dots) and the
    function each setting's network computes after training (a colour per setting); with `show_start` also the
    function where training started (dotted, same colour)."""
    values = ordered_settings(units)
    colours = dict(zip(values, _colours(len(values))))
    name = _name(units)
    seeds = sorted({u["seed"] for u in units})
    fig, axes = _grid(len(seeds), ncols=3, size=(4.3, 3.4))
    for ax, seed in zip(axes, seeds):
        mine = {u[name]: u for u in units if u["seed"] == seed}
        first = next(iter(mine.values()))
        xs, target = np.asarray(first["fit_x"]), np.asarray(first["target_y"])
        x_train, y_train = np.asarray(first["x_train"]), np.asarray(first["y_train"])
        curves, drawn = [], {}
        ax.plot(xs, target, color="black", lw=1.2, ls="--", zorder=2)
        for v in values:
            if v not in mine:
                continue
            own = np.asarray(mine[v]["fit_x"], dtype=float)  # a unit's own grid (200 features have a finer one)
            fit = np.asarray(mine[v]["fit_y"], dtype=float)
            curves.append(fit)
            drawn[v] = fit
            ax.plot(own, fit, color=colours[v], lw=1.3, zorder=3)
            if show_start:
                start = np.asarray(mine[v]["start_y"], dtype=float)
                curves.append(start)
                ax.plot(own, start, color=colours[v], lw=1.1, ls=":", zorder=3)
        ax.scatter(x_train, y_train, color="black", s=18, zorder=4)
        lo, hi = _limits(target, y_train, curves)
        ax.set_ylim(lo, hi)
        ax.set_xlim(-1.02, 1.02)
        ax.set_xlabel("input x")
        ax.set_ylabel("output")
        # a trained function wholly outside the cut axes is named in the title, not silently absent
        outside = [setting_label(name, v) for v, fit in drawn.items()
                   if not np.any((fit >= lo) & (fit <= hi))]
        title = f"seed {seed} ({len(x_train)} training points)"
        if outside:
            title += f"\nnot in view: {', '.join(outside)} (trained)"
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color="black", lw=1.2, ls="--", label="target function"),
               Line2D([], [], color="black", marker="o", ls="none", markersize=4, label="training points")]
    handles += [Line2D([], [], color=colours[v], lw=1.3, label=f"{setting_label(name, v)}, trained") for v in values]
    if show_start:
        handles.append(Line2D([], [], color="grey", lw=1.1, ls=":", label="where training started (same colour)"))
    _legend_below(fig, handles, min(len(handles), 6))
    return fig


def landscape(panels: list[dict], ncols: int = 4) -> Figure:
    """One small panel per alpha (landscape.landscape's output): the scaled model's loss (solid) and its
    linearisation's (dashed) against w - w_0 over the window w_0 +- 2 / alpha^(3/4)."""
    fig, axes = _grid(len(panels), ncols=ncols, size=(3.3, 2.9))
    for ax, p in zip(axes, panels):
        dw = p["w"] - p["w0"]
        # each axis in a power of ten named in its label, so that no tick label is long and no offset text
        # ("1e-5") lands on the panel's title
        dx = _power(float(np.max(np.abs(dw))))
        dy = _power(float(np.nanmax(np.concatenate([p["loss"], p["linear_loss"]]))))
        ax.plot(dw / 10.0 ** dx, p["loss"] / 10.0 ** dy, color="C0", lw=1.4)
        ax.plot(dw / 10.0 ** dx, p["linear_loss"] / 10.0 ** dy, color="C3", lw=1.4, ls="--")
        ax.set_title(f"α = {p['alpha']:g}", fontsize=10)
        ax.set_xlabel("w − w₀" + _times(dx))
        ax.set_ylabel("loss l(w, α)" + _times(dy))
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color="C0", lw=1.4, label="scaled model α·h(x, w)"),
               Line2D([], [], color="C3", lw=1.4, ls="--", label="its linearisation at w₀")]
    _legend_below(fig, handles, 2)
    return fig


def _power(v: float) -> int:
    """The power of ten (a multiple of 3) to divide an axis by so that its largest magnitude v lies in [1, 1000):
    0 for v in [0.1, 1000), where plain tick labels stay short ("-0.010" beside "-0.005" ran together)."""
    if not (v > 0 and math.isfinite(v)) or 0.1 <= v < 1000:
        return 0
    return 3 * math.floor(math.log10(v) / 3)


def _times(power: int) -> str:
    return "" if power == 0 else f" (×10$^{{{power}}}$)"


def movement_exponent(units: list[dict], fit: dict) -> Figure:
    """Final relative movement against the varied setting (`fit["by"]`: width or alpha), log-log, for the last
    weight matrix and for the whole network: each seed's networks as points (nudged sideways a little so seeds
    do not hide each other) with its least-squares line, and the mean slope over seeds with its interval in the
    panel's title. `fit` is lazy.exponent(units, by)."""
    by = fit["by"]
    seeds = sorted({u["seed"] for u in units if by in u})
    colours = dict(zip(seeds, _colours(len(seeds))))
    fig, axes = _grid(2, ncols=2, size=(4.6, 3.6))
    for ax, (key, what, pick) in zip(axes, (
            ("last_layer", "last weight matrix", lambda f: (f.get("movement") or [math.nan])[-1]),
            ("network", "whole network", lambda f: f.get("movement_network", math.nan)))):
        lines = {p["seed"]: p for p in fit[key]["per_seed"]}
        for i, seed in enumerate(seeds):
            pts = sorted((float(u[by]), pick(u["final"])) for u in units if by in u and u["seed"] == seed)
            pts = [(a, m) for a, m in pts if m is not None and math.isfinite(m) and m > 0]
            if not pts:
                continue
            nudge = 10 ** (0.025 * (i - (len(seeds) - 1) / 2))
            xs = np.array([a for a, _ in pts])
            ax.scatter(xs * nudge, [m for _, m in pts], color=colours[seed], s=22, zorder=3)
            if seed in lines:
                grid = np.geomspace(xs.min(), xs.max(), 20)
                ax.plot(grid, np.exp(lines[seed]["intercept"]) * grid ** lines[seed]["slope"], color=colours[seed],
                        lw=0.9, alpha=0.7)
        _log_axes(ax)
        ax.set_xlabel("width (hidden units)" if by == "width" else "output scale α")
        ax.set_ylabel(f"final relative movement, {what}")
        f = fit[key]
        if math.isfinite(f["slope"]):
            interval = (f"95% interval [{f['low']:.3g}, {f['high']:.3g}]" if math.isfinite(f["low"])
                        else "no interval")
            ax.set_title(f"{what}\nmean slope over {f['seeds']} seeds {f['slope']:.3g}, {interval}", fontsize=9.5)
        else:
            ax.set_title(f"{what}: no slope (too few settings)", fontsize=9.5)
    handles = [Line2D([], [], color=colours[s], marker="o", lw=0.9, label=f"seed {s}: networks and fitted line")
               for s in seeds]
    _legend_below(fig, handles, min(len(handles), 3))
    return fig
