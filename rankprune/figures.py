"""Figures of a report: pure functions from tables (pandas DataFrames of run-folder rows or trials) to
matplotlib Figures. No file names and no I/O except `save`; rankprune.report decides what is drawn where.

Figures are built with the object-oriented API (`matplotlib.figure.Figure`), never pyplot, so drawing
needs no display and leaves the caller's pyplot state alone; PNGs are rendered by Agg.
"""

from __future__ import annotations

import contextlib
import contextvars

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator, PercentFormatter
from matplotlib.transforms import Bbox, blended_transform_factory, offset_copy

from rankprune.runfolder import atomic_path
from rankprune.units import bound_side, sum_side

__all__ = [
    "save", "FORMATS", "DPI", "Metric", "ACCURACY", "R_SQUARED", "metric_of", "accuracy_curves",
    "widths_per_iteration", "ranks_across_epochs", "spectra_per_iteration", "rank_scatter", "optuna_figure",
    "replicates_per_iteration", "heatmap",
]

FORMATS = ("png", "svg", "pdf")  # what `save` writes: a raster for the Markdown, vectors for a paper
DPI = 110  # a 9.6-inch figure is 1,056 pixels wide: sharp on a screen; a paper asks for --dpi 300 or svg/pdf
# Creation dates make every re-render a different file; without them the same report gives the same bytes.
_NO_DATE = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}


def save(fig: Figure, path: Path, dpi: float = DPI) -> None:
    """Render in the format the suffix of `path` names (one of FORMATS) to a temporary file beside it, then
    rename it over the target. `dpi` sets a PNG's pixels per inch (its size) and the resolution of anything
    a vector format rasterises."""
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"cannot save a figure as {path.name}: formats are {', '.join(FORMATS)}")
    # Every figure but Optuna's places its own margins; Optuna's long tick labels would be cut without "tight",
    # and so would our legends placed outside the axes.
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=_NO_DATE.get(fmt))


@dataclass(frozen=True)
class Metric:
    """What a run's accuracy columns hold, for axis labels: the fraction correct of a classification, or
    R^2 for a regression task (the same columns: rankprune/regression.py), both drawn x 100."""

    text: str  # its name in prose: "accuracy", "R^2"
    name: str  # its name on an axis: "accuracy", "$R^2$" (mathtext)
    unit: str  # what the axis shows: "%" or "×100"
    floor: float | None  # the least the metric can be, x 100 (R^2 has none)
    suffix: str  # after a value printed in a figure ("92%")

    def label(self, split: str = "test") -> str:
        return f"{split} {self.name} ({self.unit})"


ACCURACY = Metric("accuracy", "accuracy", "%", 0.0, "%")
R_SQUARED = Metric("R^2", "$R^2$", "×100", None, "")


def metric_of(dataset: str) -> Metric:
    from rankprune.regression import is_regression

    return R_SQUARED if is_regression(dataset) else ACCURACY


def _colours(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# The names of the groups of units a report's figures are about (models.base.Group: "block 2 query-key"), where they
# are not plain hidden layers; set for the duration of one report by `group_names`.
_GROUP_NAMES: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("group_names", default=None)


@contextlib.contextmanager
def group_names(names: list[str] | None):
    """Within this block, figures name matrix `layer` by names[layer] (a transformer's groups) instead of
    "hidden N"; None keeps "hidden N" (an MLP's or CNN's layers)."""
    token = _GROUP_NAMES.set(names)
    try:
        yield
    finally:
        _GROUP_NAMES.reset(token)


def _layer_name(layer: int, n_matrices: int) -> str:
    if layer == n_matrices - 1:
        return "output"
    names = _GROUP_NAMES.get()
    return names[layer] if names and layer < len(names) else f"hidden {layer + 1}"


def _figure(width: float, height: float, margins: tuple[float, float, float, float]) -> Figure:
    """A Figure of width x height inches with an Agg canvas (so text can be measured before saving) and its
    axes' margins fixed in inches: left, right, bottom, top. Labels are placed against the final axes, so
    no layout engine may move them afterwards; what sticks out (an outside legend) is kept by `save`."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    left, right, bottom, top = margins
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height)
    return fig


# Offsets (points) and alignments to try, in order, for a label beside a marker.
ABOVE = ((0, 5, "center", "bottom"), (0, -5, "center", "top"), (6, 0, "left", "center"), (-6, 0, "right", "center"),
         (5, 5, "left", "bottom"), (-5, 5, "right", "bottom"), (5, -5, "left", "top"), (-5, -5, "right", "top"),
         (0, 14, "center", "bottom"), (0, -14, "center", "top"))
BESIDE_UP = ((6, 0, "left", "center"), (-6, 0, "right", "center"), (0, 6, "center", "bottom"),
             (5, 6, "left", "bottom"), (-5, 6, "right", "bottom"), (0, 15, "center", "bottom"))
BESIDE_DOWN = tuple((dx, -dy, ha, {"bottom": "top"}.get(va, va)) for dx, dy, ha, va in BESIDE_UP)


def _marker_box(ax, xy, width: float, height: float | None = None, transform=None) -> Bbox:
    """The display-space box, width x height points (square by default), of markers centred on xy, with a
    pixel to spare."""
    cx, cy = (transform or ax.transData).transform(xy)
    half_w = width / 2 * ax.figure.dpi / 72 + 1
    half_h = (width if height is None else height) / 2 * ax.figure.dpi / 72 + 1
    return Bbox.from_extents(cx - half_w, cy - half_h, cx + half_w, cy + half_h)


# Space (points) kept clear around a placed label: labels that merely touch read as one number ("6", "7" and
# "8" side by side read "678").
LABEL_GAP = 2.5


def _place_labels(ax, labels: list[dict], obstacles: list[Bbox]) -> int:
    """Annotate each label {xy, text, candidates, xycoords?, **text properties} at its first candidate
    (dx, dy points, ha, va) whose text stays inside the axes and at least LABEL_GAP points from every label
    placed before it, and clear of `obstacles` (markers, display space). A label with no free place is left
    out: a number missing beside a dot reads better than two numbers printed over each other. Returns how
    many were left out. Call it last: positions are computed in display space from the final limits and
    margins."""
    renderer = ax.figure.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    gap = LABEL_GAP * ax.figure.dpi / 72
    taken = list(obstacles)
    left_out = 0
    for label in labels:
        label = dict(label)
        xy, text, candidates = label.pop("xy"), label.pop("text"), label.pop("candidates")
        # a faint white ground keeps a number legible where a curve of its own colour runs through it
        label.setdefault("bbox", {"boxstyle": "square,pad=0.05", "fc": "white", "ec": "none", "alpha": 0.85})
        for dx, dy, ha, va in candidates:
            ann = ax.annotate(text, xy, xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, **label)
            box = ann.get_window_extent(renderer)
            if (inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
                    and not any(box.overlaps(other) for other in taken)):
                taken.append(box.padded(gap))
                break
            ann.remove()
        else:
            left_out += 1
    return left_out


def _grid(n: int, ncols: int = 3, size: tuple[float, float] = (4.2, 3.3), legend_room: float = 0.0) -> tuple[Figure, list]:
    """n panels of `size` inches in rows of ncols, each with `legend_room` inches to its right for a legend
    outside its axes. Margins are fixed in inches rather than solved by a layout engine: constrained layout
    doubled the time to render a 6-panel figure (0.4 s of 0.8 s)."""
    ncols = min(n, ncols)
    nrows = -(-n // ncols)
    width, height = (size[0] + legend_room) * ncols, size[1] * nrows
    left, right, gap = 0.75, 0.15 + legend_room, 0.85 + legend_room  # inches
    axes_width = (width - left - right - (ncols - 1) * gap) / ncols
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=0.55 / height, top=1 - 0.35 / height,
                        wspace=gap / axes_width, hspace=0.95 / (size[1] - 0.95))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _whole_numbers(axis) -> None:
    """Ticks at whole numbers only, on an axis of counts (epochs, iterations, indices): never an "epoch 2.5",
    also where the view holds a single whole number."""
    axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def _plain_log_y(ax) -> None:
    """Tick labels of a log y-axis as plain numbers ("0.3", "2"), not "3x10^-1": the long forms of the minor
    ticks were wider than the margin and ran into the axis label. Minor ticks are labelled only where the
    axis spans too few decades to show more than one labelled major tick; values within a tenth of a decade get
    a view a factor 3 either side; under half a decade, where even
    those may all fall outside the view (1.1 to 1.3, say, showed no number at all), the ticks are evenly spaced
    plain numbers instead. Call it once the limits are final."""
    lo, hi = ax.get_ylim()
    decades = np.log10(hi / lo) if lo > 0 else np.inf
    if decades < 0.1:  # values nearly equal: matplotlib zooms until every label reads the same; show a factor 3 around them
        mid = float(np.sqrt(lo * hi))
        lo, hi = mid / 3, mid * 3
        ax.set_ylim(lo, hi)
        decades = np.log10(hi / lo)
    if decades < 0.5:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        return
    minor = (2, 3, 5) if decades < 1 else (2, 5) if decades < 2 else ()
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.3g}" if _leading_digit(v) in minor else ""))


def _leading_digit(v: float) -> int:
    return int(f"{v:e}"[0]) if v > 0 else 0


def _outside_legend(ax, **kwargs):
    """A legend beside the axes, to their right, where it can cover no data (the caller leaves the room)."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, **kwargs)


def _anneal(rows: pd.DataFrame) -> pd.Series:
    """Which rows are anneal iterations (phase "anneal": the chosen network retrained at the low learning rate,
    the depth's result); none in runs from before phases were recorded."""
    return rows["phase"].eq("anneal") if "phase" in rows else pd.Series(False, index=rows.index)


def _anneal_stars(ax, x, y, colour, transform=None) -> None:
    ax.plot(x, y, "*", color=colour, ms=11, mec="black", mew=0.5, ls="none", zorder=4,
            transform=transform if transform is not None else ax.transData)


def _anneal_handle() -> Line2D:
    return Line2D([], [], ls="none", marker="*", color="grey", ms=11, mec="black", mew=0.5, label="anneal (the result)")


# A censored value is a bound, not a measurement (phases.censored; units.bound_side says which side): a width that
# never shrank below its start or equals its input's size is a lower bound, drawn as an open upward triangle (the
# direction the true value lies in); one still shrinking when its depth hit the iteration cap is an upper bound, an
# open downward triangle; a sum of bounds on both sides an open octagon. Each with its legend entry; in the figures
# of widths and network ranks these markers mean nothing else (no seed or depth marker is one of them).
CENSORED_MARKERS = {">=": "^", "<=": "v", "~": "8"}
CENSORED_LABELS = {">=": "censored (a bound, not a\nmeasurement): at least this",
                   "<=": "censored (a bound, not a\nmeasurement): at most this",
                   "~": "censored (a bound, not a\nmeasurement): either way"}


def _censored_marks(ax, x, y, colour, side: str = ">=", size: float = 9, transform=None) -> None:
    ax.plot(x, y, CENSORED_MARKERS[side], mfc="none", mec=colour, ms=size if side != "~" else 0.85 * size, mew=1.6,
            ls="none", zorder=5, transform=transform if transform is not None else ax.transData, label="_censored")


def _censored_handles(sides, size: float = 9) -> list[Line2D]:
    """Legend entries of the censored markers of `sides` (any of '>=', '<=', '~'), in that order."""
    return [Line2D([], [], ls="none", marker=CENSORED_MARKERS[side], mfc="none", mec="dimgrey",
                   ms=size if side != "~" else 0.85 * size, mew=1.4, label=CENSORED_LABELS[side])
            for side in CENSORED_MARKERS if side in set(sides)]


def _side_at(marks, layer: int) -> str | None:
    """The side a layer's width bounds (units.bound_side) from its per-layer censored entries; None where it is
    measured, or the entries are absent (runs from before censoring was recorded: unknown, drawn as measured)."""
    return bound_side(marks[layer]) if isinstance(marks, (list, tuple)) and layer < len(marks) else None


# --- a run ------------------------------------------------------------------------------------------
DEPTH_LINES = ("-", "--", "-.", ":")
DEPTH_MARKERS = ("o", "s", "D", "P", "X", "p", "h", "*")  # not "v" / "^": off-scale points, and "^" censored ones


def _accuracy_limits(*accuracies: pd.Series, floor: float | None = 0.0) -> tuple[float, float] | None:
    """y-limits (x 100) around trained accuracies with a margin: 8% of their span, at least 0.5 points; never
    below `floor` (an accuracy's 0; R^2 has none) nor far above 100."""
    values = 100 * pd.concat([a.astype(float) for a in accuracies if a is not None])
    values = values[np.isfinite(values)]
    if values.empty:
        return None
    lo, hi = float(values.min()), float(values.max())
    pad = max(0.08 * (hi - lo), 0.5)
    return lo - pad if floor is None else max(floor, lo - pad), min(100.0 + pad / 2, hi + pad)


def accuracy_curves(epochs: pd.DataFrame, iterations: pd.DataFrame, x: str, xlabel: str, scale: float = 1.0,
                    metric: Metric = ACCURACY) -> Figure:
    """Test accuracy (or `metric`, x 100) per epoch against a cumulative cost column `x` (times `scale`: 1e-12
    draws FLOPs as TFLOP), a colour, a line style and an end marker per depth, and one line per iteration (the
    network is rebuilt in between, so the line breaks); a marker labelled with the iteration number ends every
    finished iteration; a hollow marker at an iteration's start is the accuracy right after the rebuild, before
    retraining, drawn over the lines (under them it hid) and larger than an end marker, so that one on top of
    the other shows as a ring.

    The y-axis spans the trained accuracies (every epoch and every iteration end). A reinitialised network
    starts at chance (about 10%), and scaling the axis to it would squeeze the trained curves into a band
    at the top; such points are drawn as hollow triangles at the axis' edge, labelled with their value."""
    fig = _figure(9.6, 5.0, (0.75, 2.45, 0.6, 0.25))
    ax = fig.subplots()
    depths = sorted(epochs["depth"].unique())
    ends = iterations if not iterations.empty else None
    limits = _accuracy_limits(epochs["test_acc"], None if ends is None else ends["test_acc"], floor=metric.floor)
    edge = blended_transform_factory(ax.transData, ax.transAxes)  # x in data, y in axes fraction
    labels: list[dict] = []
    markers: list[tuple] = []  # (xy, size, transform): obstacles for the labels
    handles = []
    off_scale: set[str] = set()  # the edges ("v": bottom, "^": top) that hold off-scale points
    in_range = False  # whether any after-rebuild point is on the axis
    for k, (colour, depth) in enumerate(zip(_colours(len(depths)), depths)):
        line, marker = DEPTH_LINES[k % len(DEPTH_LINES)], DEPTH_MARKERS[k % len(DEPTH_MARKERS)]
        handles.append(Line2D([], [], color=colour, ls=line, marker=marker, mec="black", mew=0.6, ms=6,
                              label=f"depth {depth}"))
        for _, it in epochs[epochs["depth"] == depth].groupby("iteration"):
            it = it.sort_values(x)
            ax.plot(scale * it[x], 100 * it["test_acc"], color=colour, ls=line, lw=1.4)
        done = ends[ends["depth"] == depth].sort_values("iteration") if ends is not None else None
        if done is None or done.empty:
            continue
        ax.plot(scale * done[x], 100 * done["test_acc"], marker, color=colour, ms=6, mec="black", mew=0.6, zorder=3)
        for _, row in done.iterrows():
            xy = (scale * row[x], 100 * row["test_acc"])
            markers.append((xy, 6, None))
            labels.append({"xy": xy, "text": str(int(row["iteration"])), "candidates": ABOVE, "fontsize": 8,
                           "color": colour, "fontweight": "bold"})
        if "test_acc_after_rebuild" not in done:
            continue
        # iteration i starts where iteration i-1 ended
        starts = pd.DataFrame({"x": scale * done[x].to_numpy()[:-1],
                               "acc": 100 * done["test_acc_after_rebuild"].to_numpy(dtype=float)[1:]}).dropna()
        low = starts["acc"] < limits[0] if limits else np.zeros(len(starts), bool)
        high = starts["acc"] > limits[1] if limits else np.zeros(len(starts), bool)
        shown = starts[~(low | high)]
        in_range |= not shown.empty
        ax.plot(shown["x"], shown["acc"], marker, mfc="none", mec=colour, ms=9, mew=1.3, zorder=4)
        markers.extend(((xy, 9, None) for xy in zip(shown["x"], shown["acc"])))
        for side, at, symbol, candidates in ((low, 0.025, "v", BESIDE_UP), (high, 0.975, "^", BESIDE_DOWN)):
            for _, row in starts[side].iterrows():
                off_scale.add(symbol)
                ax.plot([row["x"]], [at], symbol, transform=edge, mfc="none", mec=colour, mew=1.1, ms=7, clip_on=False)
                markers.append(((row["x"], at), 7, edge))
                labels.append({"xy": (row["x"], at), "xycoords": edge, "text": f"{row['acc']:.0f}{metric.suffix}",
                               "candidates": candidates, "fontsize": 7, "color": colour})
    handles.append(Line2D([], [], ls="none", marker="o", color="grey", mec="black", mew=0.6,
                          label="end of iteration (number)"))
    if in_range:
        handles.append(Line2D([], [], ls="none", marker="o", mfc="none", mec="grey", ms=9, mew=1.3,
                              label="after rebuild,\nbefore retraining"))
    handles += [Line2D([], [], ls="none", marker=symbol, mfc="none", mec="grey", ms=7,
                       label=f"after rebuild, {where}\nthe axis (its value)")
                for symbol, where in (("v", "below"), ("^", "above")) if symbol in off_scale]
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric.label("test"))
    ax.grid(alpha=0.3)
    _outside_legend(ax, handles=handles, fontsize=8)
    if limits:
        ax.set_ylim(*limits)
    ax.autoscale_view()
    ax.set_xlim(left=0, right=ax.get_xlim()[1])  # costs are cumulative from 0; fixed before labels are placed
    _place_labels(ax, labels, [_marker_box(ax, xy, size, transform=transform) for xy, size, transform in markers])
    return fig


def widths_per_iteration(widths: pd.DataFrame, unit: str = "units") -> Figure:
    """One panel per depth: each hidden layer's width (solid) and, where the iteration finished, the rank
    measured at saturation that sets the next width (dotted), against the controller iteration. A censored
    width, a bound and not a measurement, has an open triangle instead of its dot: pointing up for a lower bound
    (it never shrank below its start, or equals its input's size), down for an upper one (still shrinking at the
    iteration cap). `widths` has columns depth, iteration, widths (list per hidden layer), ranks (list or None),
    and where recorded censored (per layer None or the reason, phases.censored, of that iteration's widths:
    report.gather.widths_censored; absent or None in runs from before it was recorded: nothing marked); `unit` is
    what a width counts (units of an MLP layer, channels of a conv block). Legends sit beside the panels, where
    they cover no line."""
    depths = sorted(widths["depth"].unique())
    fig, axes = _grid(len(depths), ncols=3, size=(3.6, 3.0), legend_room=1.95)
    marks = widths["censored"] if "censored" in widths else pd.Series([None] * len(widths), index=widths.index)
    for ax, depth in zip(axes, depths):
        part = widths[widths["depth"] == depth].sort_values("iteration")
        n_layers = max(len(w) for w in part["widths"])
        sides_here: set[str] = set()
        for layer, colour in zip(range(n_layers), _colours(n_layers)):
            # a dot on each measured width, an open triangle instead on each bound
            sides = np.array([_side_at(m, layer) for m in marks[part.index]], dtype=object)
            measured_at = [i for i, side in enumerate(sides) if side is None]
            ax.plot(part["iteration"], [w[layer] for w in part["widths"]], "o-", color=colour, markevery=measured_at,
                    label=f"{_layer_name(layer, -1)} width")
            for side in CENSORED_MARKERS:
                at = sides == side
                if at.any():
                    sides_here.add(side)
                    _censored_marks(ax, part["iteration"][at], [w[layer] for w in part["widths"][at]], colour, side)
            measured = part[part["ranks"].map(lambda r: isinstance(r, list))]
            if not measured.empty:
                ax.plot(measured["iteration"], [r[layer] for r in measured["ranks"]], "x:", color=colour,
                        label=f"{_layer_name(layer, -1)} rank")
        ax.set_title(f"depth {depth}")
        ax.set_xlabel("controller iteration")
        ax.set_ylabel(f"width / rank ({unit})")
        ax.set_xticks(sorted(part["iteration"].unique()))
        ax.set_ylim(bottom=0, top=1.08 * ax.get_ylim()[1])  # room for a triangle on the widest point
        ax.grid(alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        _outside_legend(ax, handles=handles + _censored_handles(sides_here), fontsize=7)
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
    widest = max((max(w) for w in epochs["widths"] if len(w)), default=0)
    for ax, spec in zip(axes, measures):
        values = epochs[f"rank_{spec}"]
        ranks = np.array([[v[layer] if v is not None and layer < len(v) and v[layer] is not None else np.nan
                           for layer in range(n_matrices)] for v in values], dtype=float)
        for layer, colour in enumerate(colours):
            ax.plot(step, ranks[:, layer], color=colour, label=_layer_name(layer, n_matrices))
            if layer < n_matrices - 1:
                ax.plot(step, [w[layer] for w in epochs["widths"]], "--", color=colour, lw=0.8, alpha=0.6,
                        drawstyle="steps-mid")  # the width changes between iterations, not across an epoch
        for s in starts:
            ax.axvline(s - 0.5, color="grey", ls=":", lw=0.8)
        ax.set_title(f"rank: {spec}" + (" (drives the widths)" if spec == drive else ""))
        ax.set_xlabel("epoch (counted across iterations)")
        _whole_numbers(ax.xaxis)
        ax.set_ylabel("rank (singular directions)")
        # Each measure on its own scale, from 0 (ranks are counts: a shared zero keeps layers comparable) to
        # just above its largest value. The widths join the scale only where they are within a third of it
        # (a measure that tracks the width, such as the numerical rank, is read against it); otherwise a
        # width of 800 would flatten a stable rank of 5 to 13 into a line, so they run off the top and a
        # note says so.
        top = np.nanmax(ranks) if np.isfinite(ranks).any() else np.nan
        if np.isfinite(top) and top > 0:
            if widest <= 4 / 3 * top:
                ax.set_ylim(0, 1.05 * max(top, widest))
            else:
                ax.set_ylim(0, 1.1 * top)
                ax.text(0.98, 0.97, f"dashed widths reach {widest}, off this scale", transform=ax.transAxes,
                        ha="right", va="top", fontsize=7, color="dimgrey",
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8})
        else:
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, title="solid: rank; dashed: width", title_fontsize=7)
    return fig


def spectra_per_iteration(spectra: pd.DataFrame, rtol: float | None, widths: dict[int, list] | None = None) -> Figure:
    """One depth: a panel per weight matrix, one line per iteration (dark to light), of sigma_i / sigma_1
    at saturation on a log scale; the horizontal line is the numerical rank's cut (rtol), if one drives.
    `widths` (iteration -> hidden widths) puts each hidden layer's width beside its count of singular values
    in the legend: a matrix has min(rows, columns) of them, so the first layer of a 128-wide network on
    digits' 64 pixels has 64, and a bare "(64)" read as its width. Legends sit beside the panels: inside,
    they covered the first iteration's curve, which starts at the top."""
    import matplotlib

    layers = sorted(spectra["layer"].unique())
    iterations = sorted(spectra["iteration"].unique())
    cmap = matplotlib.colormaps["viridis"]
    shade = {it: cmap(0.85 * k / max(1, len(iterations) - 1)) for k, it in enumerate(iterations)}
    fig, axes = _grid(len(layers), ncols=2, legend_room=1.75)
    for ax, layer in zip(axes, layers):
        part = spectra[spectra["layer"] == layer].sort_values("iteration")
        for _, row in part.iterrows():
            s = np.asarray(row["singular_values"], dtype=float)
            if s.size == 0 or s[0] <= 0:
                continue
            rel = s / s[0]
            rel[rel <= 0] = np.nan  # exact zeros have no place on a log axis
            ax.plot(np.arange(1, s.size + 1), rel, color=shade[row["iteration"]], lw=1.2,
                    marker="o" if s.size <= 2 else None, ms=4,  # a line of one value is a point
                    label=_spectrum_label(int(row["iteration"]), s.size, layer, len(layers), widths))
        if rtol is not None:
            ax.axhline(rtol, color="crimson", ls="--", lw=0.9, label=f"rtol {rtol:g} (the rank's cut)")
        ax.set_yscale("log")
        ax.set_title(_layer_name(layer, len(layers)))
        ax.set_xlabel("index i (largest first)")
        ax.set_ylabel(r"$\sigma_i\,/\,\sigma_1$ (ratio, log scale)")
        _whole_numbers(ax.xaxis)
        ax.grid(alpha=0.3, which="both")
        _outside_legend(ax, fontsize=7, title="iteration: singular values", title_fontsize=7)
    return fig


def _spectrum_label(iteration: int, count: int, layer: int, n_matrices: int, widths: dict[int, list] | None) -> str:
    """"3: 37 values, width 37": the count of singular values, and the hidden layer's width where it is known."""
    hidden = widths.get(iteration) if widths else None
    values = f"{iteration}: {count} value{'' if count == 1 else 's'}"
    if layer < n_matrices - 1 and isinstance(hidden, list) and layer < len(hidden):
        return f"{values}, width {hidden[layer]}"
    return values


# --- a study ----------------------------------------------------------------------------------------
def rank_scatter(trials: pd.DataFrame, classes: pd.Series, signatures: dict[int, str], y: str, ylabel: str,
                 scale: float = 100.0, class_title: str = "equivalence class: per-layer ranks",
                 censored: pd.Series | None = None) -> Figure:
    """Network rank (sum of hidden-layer ranks) against `y` * scale, a colour per equivalence class; each
    point is labelled with its trial number. Trials at the same (rank, y) share one label listing them all
    ("#3, #7") and their markers are spread sideways, so every class's colour shows; labels are placed clear
    of each other and of the markers, and one with no free place is left out. `censored` (per trial, aligned with
    `trials`: the side its network rank is bounded on, '>=', '<=' or '~' as units.sum_side gives it, True for
    '>=', None where measured) draws a trial whose network rank is a bound as an open triangle (up: at least this;
    down: at most this) in its class's colour instead of a dot, with a legend entry saying so."""
    fig = _figure(10.0, 4.8, (0.75, 3.1, 0.6, 0.25))
    ax = fig.subplots()
    ids = sorted(classes.unique())
    colour_of = dict(zip(ids, _colours(len(ids))))
    for cid in ids:  # legend entries, in class order
        ax.scatter([], [], color=colour_of[cid], s=40, edgecolor="black", lw=0.5,
                   label=f"class {cid}: {signatures.get(cid, '?')}")
    frame = pd.DataFrame({"x": trials["network_rank_sum"].to_numpy(dtype=float),
                          "y": scale * trials[y].to_numpy(dtype=float), "number": trials["number"].to_numpy(),
                          "class": classes.to_numpy(),
                          "censored": [None] * len(trials) if censored is None else [
                              ">=" if side is True else side if isinstance(side, str) else None for side in censored]})
    frame = frame.sort_values("number", kind="stable")
    at = frame.groupby(["x", "y"], sort=False)
    # coincident markers side by side, 5 points apart and centred on their value
    frame["dx"] = 5.0 * (at.cumcount() - (at["number"].transform("size") - 1) / 2)
    for (cid, dx, side), part in frame.fillna({"censored": ""}).groupby(["class", "dx", "censored"]):
        shifted = offset_copy(ax.transData, fig=fig, x=dx, units="points")
        if side:
            _censored_marks(ax, part["x"], part["y"], colour_of[cid], side, size=9, transform=shifted)
        else:
            ax.scatter(part["x"], part["y"], color=colour_of[cid], s=40, edgecolor="black", lw=0.5, zorder=3,
                       transform=shifted)
    labels, markers = [], []
    for (px, py), group in at:
        markers.append(((px, py), 7 + 5 * (len(group) - 1), 7))  # a row of markers: wide, one marker high
        if len(trials) <= 40:
            labels.append({"xy": (px, py), "text": ", ".join(f"#{int(n)}" for n in group["number"]),
                           "candidates": ABOVE, "fontsize": 7})
    ax.set_xlabel("network rank: sum of hidden-layer ranks (singular directions)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()[0] if len(ids) <= 15 else []  # too many classes to list
    handles += _censored_handles(frame["censored"].dropna())
    if handles:
        _outside_legend(ax, handles=handles, fontsize=7, title=class_title if len(ids) <= 15 else None, title_fontsize=7)
    ax.update_datalim(frame[["x", "y"]].dropna().to_numpy())  # markers drawn with an offset are not counted
    ax.margins(0.08)  # room for labels beside the outermost points
    ax.autoscale_view()
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    _place_labels(ax, labels, [_marker_box(ax, xy, width, height) for xy, width, height in markers])
    return fig


def optuna_figure(axes, xlabel: str | None = None, ylabel: str | None = None, integer_x: bool = False,
                  shares: bool = False, title: str | None = None) -> Figure:
    """The Figure behind what an optuna.visualization.matplotlib function returned (an Axes or an array),
    with its axis labels replaced by ones that carry units where given, in the report's own style (Optuna
    draws in ggplot's grey). `shares`: an importance plot, whose fractions of variance (bar labels and x-axis)
    read as percentages like every other share in the report; `title` replaces Optuna's."""
    first = np.ravel(axes)[0] if isinstance(axes, np.ndarray) else axes
    if xlabel is not None:
        first.set_xlabel(xlabel)
    if ylabel is not None:
        first.set_ylabel(ylabel)
    if integer_x:  # trial numbers
        _whole_numbers(first.xaxis)
    if shares:
        first.xaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
        for text in first.texts:
            text.set_text(_as_percent(text.get_text()))
        if first.get_legend() is not None:  # Optuna puts it inside, over the end of the longest bar and its label
            handles, labels = first.get_legend_handles_labels()
            first.legend(handles, labels, title="objective", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                         frameon=False)
    if title is not None:
        first.set_title(title, loc="left")
    fig = first.figure
    _plain_style(fig)
    fig.set_size_inches(max(fig.get_figwidth(), 7.5), max(fig.get_figheight(), 4.5))
    return fig


def _as_percent(label: str) -> str:
    """Optuna's importance label ("0.52", "<0.01") as a percentage ("52%", "<1%")."""
    bound = label[:1] if label[:1] in ("<", ">") else ""
    try:
        return f"{bound}{100 * float(label[len(bound):]):.0f}%"
    except ValueError:
        return label


def _plain_style(fig: Figure) -> None:
    """White ground, black text and frame, a faint grid: what our own figures look like, on a figure drawn
    under ggplot's style."""
    fig.set_facecolor("white")
    for ax in fig.axes:
        ax.set_facecolor("white")
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_edgecolor("black")
            spine.set_linewidth(0.8)
        ax.grid(True, color="0.5", alpha=0.3, linewidth=0.8)
        ax.set_axisbelow(True)
        ax.tick_params(which="both", colors="black", labelsize=10)
        for text in (ax.xaxis.label, ax.yaxis.label):
            text.set_color("black")
            text.set_fontsize(10)
        for loc in ("left", "center", "right"):
            if ax.get_title(loc):
                ax.set_title(ax.get_title(loc), loc=loc, color="black", fontsize=11)
        legend = ax.get_legend()
        if legend is not None:
            legend.get_frame().set_facecolor("white")
            legend.get_frame().set_edgecolor("0.8")


# --- replicates -------------------------------------------------------------------------------------
SEED_LINES = ("-", "--", ":", "-.")
SEED_MARKERS = ("o", "s", "D", "P", "X", "p", "h", "<", ">", "d")  # not "*": it marks an anneal


def _dodge(n: int, step: float, most: float) -> list[float]:
    """Shifts for n lines that may coincide, centred on 0, `step` apart and `most` across them all."""
    step = min(step, most / max(n - 1, 1))
    return [(k - (n - 1) / 2) * step for k in range(n)]


def replicates_per_iteration(iterations: pd.DataFrame, unit: str = "units", metric: Metric = ACCURACY) -> Figure:
    """Per depth (columns), every seed's total hidden width (top) and test accuracy (bottom) against the
    controller iteration, one line per seed: how far replicates of one configuration spread as they shrink.
    Seeds often end at equal widths, and their lines lay on top of each other with only the last visible: so
    each seed has its own line style and marker, is shifted sideways by a fraction of an iteration, and drawn
    a point or two higher or lower than the next (display space: at most 10 points across all seeds, so values
    read true to within a hair). The accuracy panels share one y-range, so that depths compare at a glance. A star marks an anneal iteration
    (phase "anneal": the chosen network retrained at the low learning rate, the depth's result); an open triangle
    replaces the seed's marker on a censored total width (any of its layers a bound, units.sum_side: up for a lower
    bound, down for an upper one), on an anneal's too, whose star then shows in the accuracy panel alone.
    `iterations` has columns seed, depth, iteration, widths (list), test_acc, and where recorded phase and
    widths_censored (per layer None or the reason, phases.censored, of that row's widths:
    report.gather.widths_censored)."""
    depths = sorted(iterations["depth"].unique())
    seeds = sorted(iterations["seed"].unique())
    ncols = len(depths)
    legend_columns = 2 if len(seeds) > 12 else 1
    legend_room = 1.3 * legend_columns
    width, height = 4.2 * ncols + legend_room, 6.4
    fig = Figure(figsize=(width, height))
    axes_width = (width - 0.8 - 0.2 - legend_room - (ncols - 1) * 0.9) / ncols
    fig.subplots_adjust(left=0.8 / width, right=1 - (0.2 + legend_room) / width, bottom=0.55 / height,
                        top=1 - 0.4 / height, wspace=0.9 / axes_width, hspace=0.4)
    axes = fig.subplots(2, ncols, squeeze=False)
    for bottom in axes[1][1:]:
        bottom.sharey(axes[1][0])
    colours = _colours(len(seeds))
    anneal = _anneal(iterations)
    # the side each row's total width is bounded on (units.sum_side), None where measured
    bound = (iterations["widths_censored"].map(sum_side) if "widths_censored" in iterations
             else pd.Series([None] * len(iterations), index=iterations.index, dtype=object))
    handles = []
    shifts = zip(_dodge(len(seeds), 0.08, 0.3), _dodge(len(seeds), 1.5, 10.0))  # (iterations, points)
    for k, (seed, colour, (shift, lift)) in enumerate(zip(seeds, colours, shifts)):
        style = {"color": colour, "ls": SEED_LINES[k % len(SEED_LINES)], "marker": SEED_MARKERS[k % len(SEED_MARKERS)],
                 "ms": 4, "lw": 1.1}
        handles.append(Line2D([], [], label=f"seed {seed}", **style))
        for col, depth in enumerate(depths):
            rows = iterations[(iterations["depth"] == depth) & (iterations["seed"] == seed)].sort_values("iteration")
            x = rows["iteration"] + shift
            sides = bound[rows.index].to_numpy(dtype=object)
            for ax, y, marked in ((axes[0][col], rows["widths"].map(sum), sides),
                                  (axes[1][col], 100 * rows["test_acc"], np.full(len(rows), None, dtype=object))):
                lifted = offset_copy(ax.transData, fig=fig, y=lift, units="points")
                # the seed's marker on each measured total, an open triangle instead on each censored one (a bound),
                # so that the two never sit one inside the other
                censored = np.array([isinstance(side, str) for side in marked], dtype=bool)  # None or NaN: measured
                ax.plot(x, y, transform=lifted, markevery=[int(i) for i in np.flatnonzero(~censored)], **style)
                ax.update_datalim(np.column_stack([x, y]))  # lines drawn with an offset are not counted
                for side in CENSORED_MARKERS:
                    at = marked == side
                    if at.any():
                        _censored_marks(ax, x[at], y[at], colour, side, size=8, transform=lifted)
                # a star would hide a triangle in its own colour: a censored anneal shows its star in the
                # accuracy panel below alone
                annealed = anneal[rows.index].to_numpy(dtype=bool) & ~censored
                _anneal_stars(ax, x[annealed], y[annealed], colour, lifted)
    if anneal.any():
        handles.append(_anneal_handle())
    handles += _censored_handles(bound.dropna(), 8)
    for col, depth in enumerate(depths):
        top, bottom = axes[0][col], axes[1][col]
        top.set_title(f"depth {depth}")
        top.set_ylabel(f"total hidden width ({unit})")
        bottom.set_ylabel(metric.label("test"))
        ticks = sorted(iterations.loc[iterations["depth"] == depth, "iteration"].unique())
        for ax in (top, bottom):
            ax.autoscale_view()
            ax.set_xlabel("controller iteration")
            ax.set_xticks(ticks)
            ax.grid(alpha=0.3)
        top.set_ylim(bottom=0)
    _outside_legend(axes[0][-1], handles=handles, fontsize=7, ncol=legend_columns)
    return fig


# --- a two-parameter grid ----------------------------------------------------------------------------
def _three_digits(v: float) -> str:
    """A value to 3 significant digits, zeros kept (96.0, 0.0500); a large one written out (1230, not 1.23e+03)."""
    rounded = float(f"{v:.3g}")
    return f"{rounded:.0f}" if abs(rounded) >= 100 else f"{rounded:#.3g}"  # 96.0, not 96; 0.0500


def _category(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def heatmap(table: pd.DataFrame, x: str, y: str, xlabel: str, ylabel: str, value_label: str, title: str,
            scale: float = 1.0, bounds: bool = False, note: str | None = None) -> Figure:
    """One cell per (x, y) pair of `table` (rankprune.report.study.heatmap_table: columns x, y, mean, n, censored,
    side), coloured by mean * scale on a colour bar labelled `value_label`; the axes hold the values of x and y as
    ordered categories (sorted), evenly spaced. Each cell is annotated with its mean (3 significant digits) and its
    trial count; a cell holding a censored trial is hatched and, `bounds` (the mean itself is a bound), its mean
    written with the side it is bounded on ('>= 48'). A pair without trials is grey. `note` is written under the
    axes."""
    xs, ys = _sorted_categories(table[x]), _sorted_categories(table[y])
    values = np.full((len(ys), len(xs)), np.nan)
    cells = table.to_dict("records")
    for c in cells:
        values[ys.index(c[y]), xs.index(c[x])] = scale * float(c["mean"])
    cell_w = max(1.0, 0.14 * max(len(_category(v)) for v in xs) + 0.3)
    axes_w, axes_h = max(3.2, cell_w * len(xs)), max(2.2, 0.75 * len(ys))
    ytick = max(len(_category(v)) for v in ys)
    left = 0.75 + 0.08 * ytick
    right = 1.45
    # characters across: of the 9.5-point title over the axes and colour bar, of the 7.5-point note over the figure
    title_lines = textwrap.wrap(title, int((axes_w + right - 0.2) / 0.075))
    top = 0.3 + 0.18 * len(title_lines)
    lines = textwrap.wrap(note, int((left + axes_w + right - 0.3) / 0.06)) if note else []
    bottom = 0.65 + (0.1 + 0.13 * len(lines) if lines else 0.0)
    fig = _figure(left + axes_w + right, bottom + axes_h + top, (left, right, bottom, top))
    ax = fig.subplots()
    import matplotlib

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi == lo:  # one value everywhere: a colour bar of some width around it
        lo, hi = lo - (abs(lo) * 0.05 or 0.5), hi + (abs(hi) * 0.05 or 0.5)
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=lo, vmax=hi, origin="lower", aspect="auto")
    ax.set_xticks(range(len(xs)), [_category(v) for v in xs])
    ax.set_yticks(range(len(ys)), [_category(v) for v in ys])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("\n".join(title_lines), loc="left", fontsize=9.5)
    ax.tick_params(length=0)
    for edge in ax.spines.values():
        edge.set_visible(False)
    # white lines between cells
    ax.set_xticks(np.arange(len(xs) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(ys) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=2)
    ax.tick_params(which="minor", length=0)
    fontsize = 9 if cell_w >= 1.0 and axes_h / len(ys) >= 0.7 else 7.5
    for c in cells:
        i, j = ys.index(c[y]), xs.index(c[x])
        v = values[i, j]
        if not np.isfinite(v):
            ax.text(j, i, f"no value\nn = {int(c['n'])}", ha="center", va="center", fontsize=fontsize, color="black")
            continue
        censored = bool(c["censored"])
        rgba = cmap((v - lo) / (hi - lo))
        dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.55
        if censored:  # hatched in the colour of the text: seen on a dark cell and a light one
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", lw=0, alpha=0.6,
                                   edgecolor="white" if dark else "black"))
        prefix = f"{c['side']} " if bounds and censored and c.get("side") else ""
        ax.text(j, i, f"{prefix}{_three_digits(v)}\nn = {int(c['n'])}", ha="center", va="center", fontsize=fontsize,
                color="white" if dark else "black", fontweight="bold" if censored else "normal", linespacing=1.3,
                bbox={"boxstyle": "round,pad=0.15", "fc": rgba, "ec": "none", "alpha": 0.85} if censored else None)
    for i in range(len(ys)):
        for j in range(len(xs)):
            if not any(ys.index(c[y]) == i and xs.index(c[x]) == j for c in cells):
                ax.text(j, i, "no trial", ha="center", va="center", fontsize=fontsize, color="dimgrey")
    width, height = fig.get_figwidth(), fig.get_figheight()
    cax = fig.add_axes((1 - (right - 0.2) / width, bottom / height, 0.18 / width, axes_h / height))
    bar = fig.colorbar(image, cax=cax)
    bar.set_label(value_label)
    if lines:
        fig.text(0.15 / width, 0.1 / height, "\n".join(lines), ha="left", va="bottom", fontsize=7.5)
    return fig


def _sorted_categories(values: pd.Series) -> list:
    """The distinct values, sorted (as text where they cannot be compared)."""
    distinct = list(dict.fromkeys(values.tolist()))
    try:
        return sorted(distinct)
    except TypeError:
        return sorted(distinct, key=str)
