"""The figures of a findings report: pure functions from a hypothesis's points and summary to a Figure.

Every figure shows each seed (or trial) as its own point beside the mean and its interval, since with 3 seeds
the spread is the finding as much as the mean is. A censored run is drawn at its bound with the package's
censored marker (figures.CENSORED_MARKERS: an open upward triangle for '>= w'), never as a measurement.
Settings sit at evenly spaced positions labelled with their values: the grids of a suite are few and often
log-spaced (widths 128-2048), where a linear axis would pile the small ones together.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from rankprune.figures import _censored_handles, _censored_marks, _colours, _figure, _outside_legend

__all__ = ["LABELS", "PERCENT", "label_of", "by_setting", "paired_lines", "scatter", "law_predictions"]

# Axis labels with their units; a name not here is shown as it is.
LABELS = {
    "total_width": "total hidden width (units)", "first_width": "first hidden layer's width (units)",
    "last_width": "last hidden layer's width (units)", "initial_total_width": "initial total hidden width (units)",
    "initial_width": "initial width of the first hidden layer (units)", "width": "initial width (units; a CNN's channels; a transformer's model width)",
    "depth": "depth (hidden layers)", "network_rank_sum": "network rank (singular directions)",
    "network_rank_min": "smallest layer rank (singular directions)",
    "network_rank_normalized": "network rank / hidden width", "rank_parameters": "parameters at the ranks (count)",
    "parameters": "parameters (count)", "test_acc": "test accuracy (%)", "val_acc": "validation accuracy (%)",
    "train_acc": "training accuracy (%)", "generalisation_gap": "generalisation gap: train - test accuracy (pp)",
    "test_loss": "test loss (nats)", "train_loss": "training loss (nats)", "epochs": "epochs (count)",
    "iterations": "controller iterations (count)", "cumulative_seconds": "training time (s)",
    "cumulative_flops": "training compute (FLOPs)", "data.label_noise": "label noise (share of training labels)",
    "data.train_fraction": "share of the training set used", "data.classes": "classes (count)",
    "data.tasks": "augmented tasks (count)", "memorisation": "memorisation: changed rows fitted above chance (pp)",
    "test_acc_unseen_tasks": "accuracy on unseen tasks (%)", "train_acc_clean": "training accuracy, unchanged rows (%)", "train.loss": "training loss function", "train.batch_size": "batch size",
    "train.lr": "learning rate", "train.weight_decay": "weight decay", "evolve.rebuild": "rebuild method",
    "evolve.wd_decay": "weight-decay multiplier per iteration", "rank.measure": "rank measure",
}
# Fractions drawn as percentages (their labels say %).
PERCENT = ("test_acc", "val_acc", "train_acc", "generalisation_gap", "memorisation", "test_acc_unseen_tasks",
           "train_acc_clean")
TITLE_CHARS = 70  # a title wraps at this many characters, so a long claim never runs past the figure


def label_of(name: str) -> str:
    return LABELS.get(name, name)


def scale_of(name: str) -> float:
    return 100.0 if name in PERCENT else 1.0


def _tick(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _title(ax, text: str) -> None:
    ax.set_title("\n".join(textwrap.wrap(text, TITLE_CHARS)), loc="left", fontsize=9.5)


def _panels(n: int, title: str, groups: list, group: str | None):
    """A figure of n panels side by side sharing y (a lone one 5.2 inches wide, else 3.8 each) with room for a legend
    at the right: the claim as the title of a lone panel, or above all of them with each panel titled by its
    group's value."""
    lines = textwrap.wrap(title, TITLE_CHARS + 10)
    top = 0.5 + (0.2 * len(lines) if group is not None else 0.0)
    panel = 5.2 if n == 1 else 3.8
    fig = _figure(panel * n + 2.4, 4.2 + top, (0.85, 2.4, 0.7, top))
    axes = fig.subplots(1, n, squeeze=False, sharey=True).ravel()
    if group is None:
        _title(axes[0], title)
    else:
        fig.suptitle("\n".join(lines), x=0.85 / fig.get_figwidth(), y=1 - 0.08 / fig.get_figheight(), ha="left",
                     va="top", fontsize=9.5)
        for ax, g in zip(axes, groups):
            ax.set_title(f"{group} = {_tick(g)}", fontsize=9)
    return fig, axes


def _dodge(n: int, width: float) -> np.ndarray:
    """n offsets centred on 0 spanning `width` (0 for one)."""
    return np.zeros(1) if n <= 1 else np.linspace(-width / 2, width / 2, n)


MEAN_STYLE = {"marker": "D", "ms": 7, "mec": "black", "mew": 0.8, "capsize": 4, "elinewidth": 1.4, "zorder": 4}
SEED_STYLE = {"marker": "o", "ms": 4.5, "alpha": 0.75, "ls": "none", "zorder": 3}


def _mean_handle() -> Line2D:
    return Line2D([], [], color="black", marker="D", ms=6, label="mean and its 95% interval")


def _seed_handle(what: str) -> Line2D:
    return Line2D([], [], color="grey", marker="o", ms=4.5, ls="none", alpha=0.75, label=what)


def by_setting(points: pd.DataFrame, summary: pd.DataFrame, setting: str, value: str, title: str,
               group: str | None = None, predicted: tuple[list, list, str] | None = None) -> Figure:
    """`value` at each `setting` (x): per group (a colour; `group` names its column in both tables, None for one)
    the mean with its interval, a thin line joining the means, and each seed's value as a small dot beside it (a
    seed's measured runs averaged) or, censored, its censored marker at the bound. `points`: group, setting, seed,
    value, side (None, or '>=' / '<=' / '~'); `summary`: group, setting, mean, ci_low, ci_high, in setting order."""
    settings = list(dict.fromkeys(summary["setting"]))
    try:  # groups of `by` may hold different settings: one axis in their order
        settings = sorted(settings)
    except TypeError:
        pass
    groups = list(dict.fromkeys(summary["group"]))
    scale = scale_of(value)
    width = 3.2 + 0.75 * len(settings) * max(1, len(groups) / 2)
    fig = _figure(width + 2.9, 4.4, (0.85, 2.9, 0.7, 0.75))
    ax = fig.subplots()
    colours = _colours(len(groups)) if len(groups) > 1 else ["tab:blue"]
    offsets = _dodge(len(groups), 0.45)
    handles = []
    for g, colour, dx in zip(groups, colours, offsets):
        rows = summary[summary["group"] == g]
        pos = np.array([settings.index(s) for s in rows["setting"]], dtype=float) + dx
        mean = scale * rows["mean"].to_numpy(dtype=float)
        lo, hi = scale * rows["ci_low"].to_numpy(dtype=float), scale * rows["ci_high"].to_numpy(dtype=float)
        err = np.vstack([mean - lo, hi - mean])
        err = np.where(np.isnan(err), 0.0, err)  # one seed: no interval, the mean alone
        ax.errorbar(pos, mean, yerr=err, color=colour, mfc=colour, ls="none", **MEAN_STYLE)
        ax.plot(pos, mean, color=colour, lw=1.0, alpha=0.6, zorder=2)
        if group is not None:
            handles.append(Line2D([], [], color=colour, marker="D", ms=6, label=f"{group} = {_tick(g)}"))
        _seed_points(ax, points[points["group"] == g], settings, dx, colour, scale, spread=0.24 / len(groups))
    if predicted is not None:  # (settings, predicted values, what predicts them): a theory's line to compare with
        xs, ys, name = predicted
        pairs = sorted({(settings.index(x), scale * y) for x, y in zip(xs, ys) if x in settings})
        ax.plot([p[0] for p in pairs], [p[1] for p in pairs], color="0.35", ls="--", lw=1.2, zorder=1)
        handles.append(Line2D([], [], color="0.35", ls="--", lw=1.2, label=f"predicted: {name}"))
    handles += [_mean_handle(), _seed_handle("one seed (its runs averaged)")]
    handles += _censored_handles(points["side"].dropna())
    ax.set_xticks(range(len(settings)), [_tick(s) for s in settings])
    ax.set_xlim(-0.6, len(settings) - 0.4)
    ax.set_xlabel(label_of(setting))
    ax.set_ylabel(label_of(value))
    ax.grid(alpha=0.3)
    _title(ax, title)
    _outside_legend(ax, handles=handles, fontsize=7.5)
    return fig


def _seed_points(ax, points: pd.DataFrame, settings: list, dx: float, colour, scale: float, spread: float) -> None:
    """Each seed's dot (or censored marker) at its setting, to the right of the mean's marker (never under it) and
    side by side `spread` wide in seed order, so that equal values do not hide each other."""
    seeds = sorted(points["seed"].unique())
    shift = dict(zip(seeds, 0.09 + spread / 2 + _dodge(len(seeds), spread)))
    for (s, seed), part in points.groupby(["setting", "seed"], sort=False):
        x = settings.index(s) + dx + shift[seed]
        for _, r in part.iterrows():
            if isinstance(r["side"], str):
                _censored_marks(ax, [x], [scale * r["value"]], colour, r["side"], size=7)
            else:
                ax.plot([x], [scale * r["value"]], color=colour, **SEED_STYLE)


def paired_lines(points: pd.DataFrame, summary: pd.DataFrame, condition: str, a, b, value: str, title: str,
                 group: str | None = None) -> Figure:
    """`value` under condition a and b, one panel per group: one line per seed joining its a and its b (a seed's
    runs averaged), dashed and grey where either end is censored (the pair is left out of the test); the mean of
    each condition with its interval beside them. `points` and `summary` as by_setting's, `setting` holding a or b."""
    groups = list(dict.fromkeys(summary["group"]))
    scale = scale_of(value)
    fig, axes = _panels(len(groups), title, groups, group)
    seeds = sorted(points["seed"].unique())
    colours = dict(zip(seeds, _colours(len(seeds))))
    shift = dict(zip(seeds, _dodge(len(seeds), 0.16)))  # equal values side by side, not on top of each other
    for ax, g in zip(axes, groups):
        mine = points[points["group"] == g]
        for seed in seeds:
            ends = {c: mine[(mine["seed"] == seed) & (mine["setting"] == c)] for c in (a, b)}
            if any(e.empty for e in ends.values()):
                continue
            ya, yb = (scale * ends[c]["value"].iloc[0] for c in (a, b))
            sides = [ends[c]["side"].iloc[0] for c in (a, b)]
            bound = any(isinstance(s, str) for s in sides)
            xs = (shift[seed], 1 + shift[seed])
            ax.plot(xs, [ya, yb], color="grey" if bound else colours[seed], ls="--" if bound else "-", lw=1.2,
                    alpha=0.8, zorder=2)
            for x, y, side in zip(xs, (ya, yb), sides):
                if isinstance(side, str):
                    _censored_marks(ax, [x], [y], "grey", side, size=7)
                else:
                    ax.plot([x], [y], color=colours[seed], **SEED_STYLE)
        rows = summary[summary["group"] == g]
        for x, c in ((-0.3, a), (1.3, b)):
            r = rows[rows["setting"] == c]
            if r.empty:
                continue
            m, lo, hi = (scale * float(r[k].iloc[0]) for k in ("mean", "ci_low", "ci_high"))
            err = [[0.0 if np.isnan(lo) else m - lo], [0.0 if np.isnan(hi) else hi - m]]
            ax.errorbar([x], [m], yerr=err, color="black", mfc="white", ls="none", **MEAN_STYLE)
        ax.set_xticks([0, 1], [_tick(a), _tick(b)])
        ax.set_xlim(-0.6, 1.6)
        ax.set_xlabel(label_of(condition))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(label_of(value))
    handles = [Line2D([], [], color=colours[s], marker="o", ms=4.5, label=f"seed {s}") for s in seeds[:10]]
    handles += [Line2D([], [], color="black", marker="D", ms=6, mfc="white", label="mean and its 95% interval")]
    if points["side"].map(lambda s: isinstance(s, str)).any():
        handles.append(Line2D([], [], color="grey", ls="--", label="a pair with a censored end\n(left out of the test)"))
        handles += _censored_handles(points["side"].dropna())
    _outside_legend(axes[-1], handles=handles, fontsize=7.5)
    return fig


def scatter(points: pd.DataFrame, x: str, y: str, title: str, group: str | None = None) -> Figure:
    """Each trial's y against its x, one panel per group, a colour per seed (the test correlates within seeds, so
    the reader sees each seed's own trend); a censored trial as its censored marker (left out of the test, drawn at
    its bound). `points`: group, x, y, side, and seed where known."""
    groups = list(dict.fromkeys(points["group"])) or [""]
    sx, sy = scale_of(x), scale_of(y)
    fig, axes = _panels(len(groups), title, groups, group)
    seeds = sorted(points["seed"].dropna().unique()) if "seed" in points else []
    colour = {s: f"C{i % 10}" for i, s in enumerate(seeds)}
    for ax, g in zip(axes, groups):
        mine = points[points["group"] == g]
        bound = mine["side"].map(lambda s: isinstance(s, str))
        for seed, part in (mine.groupby("seed") if seeds else [(None, mine)]):
            c = colour.get(seed, "tab:blue")
            measured = part[~bound.loc[part.index]]
            ax.plot(sx * measured["x"], sy * measured["y"], color=c, **SEED_STYLE)
            for side, cens in part[bound.loc[part.index]].groupby("side"):
                _censored_marks(ax, sx * cens["x"], sy * cens["y"], c, side, size=7)
        ax.set_xlabel(label_of(x))
        ax.grid(alpha=0.3)
        ax.margins(0.08)
    axes[0].set_ylabel(label_of(y))
    handles = ([Line2D([], [], color=colour[s], marker="o", ms=4.5, ls="none", alpha=0.75, label=f"seed {int(s)}")
                for s in seeds] if seeds else [_seed_handle("one trial")]) + _censored_handles(points["side"].dropna())
    _outside_legend(axes[-1], handles=handles, fontsize=7.5)
    return fig


def _plain_log(axis) -> None:
    """Tick labels of a log axis as plain numbers ("30", "200"), the 2s and 5s between decades labelled too."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def law_predictions(points: pd.DataFrame, tolerance: float, y: str, title: str) -> Figure:
    """A law's prediction against the observed mean at each held-out setting, on log axes: the diagonal (a perfect
    prediction) inside its band of +-tolerance, each setting's observed mean with its across-seed SD as a
    horizontal bar, a colour per knob held out (a square for a combination of knobs), open where the setting lies
    outside the range the law was fitted on (an extrapolation), and a setting whose every run is censored as an
    open right-pointing triangle at its largest bound (the observed width is at least that). Each point is labelled
    with `label` where there is room (the knob's value: its colour names the knob). `points`: label, group,
    observed, sd, predicted, extrapolated, limit (NaN unless only bounded)."""
    from matplotlib.transforms import Bbox

    from rankprune.figures import ABOVE, _marker_box, _place_labels

    fig = _figure(8.4, 5.6, (0.95, 2.9, 0.75, 0.75))
    ax = fig.subplots()
    ax.set_xscale("log")
    ax.set_yscale("log")
    measured = points[points["limit"].isna()]
    xs = np.concatenate([measured["observed"] - measured["sd"].fillna(0), measured["observed"] + measured["sd"].fillna(0),
                         points["limit"].dropna(), points["predicted"]])
    xs = xs[np.isfinite(xs) & (xs > 0)]
    lo, hi = (xs.min() / 1.3, xs.max() * 1.3) if len(xs) else (1.0, 10.0)
    line = np.geomspace(lo, hi, 50)
    ax.fill_between(line, line * (1 - tolerance), line * (1 + tolerance), color="0.88", zorder=1, lw=0)
    ax.plot(line, line, color="0.45", lw=1.0, zorder=2)
    groups = list(dict.fromkeys(points["group"]))
    knobs = [g for g in groups if g != "combination"]
    colour = dict(zip(knobs, _colours(len(knobs))))
    colour["combination"] = "black"
    labels, bars = [], []
    for _, r in points.iterrows():
        c, marker = colour[r["group"]], "s" if r["group"] == "combination" else "o"
        face = "white" if r["extrapolated"] else c
        if np.isnan(r["limit"]):
            x = r["observed"]
            err = None if np.isnan(r["sd"]) else [[min(r["sd"], 0.95 * x)], [r["sd"]]]
            ax.errorbar([x], [r["predicted"]], xerr=err, color=c, marker=marker, ms=7, mfc=face, mec=c, mew=1.4,
                        ls="none", capsize=3, elinewidth=1.1, zorder=4)
            if err is not None:
                bars.append(((x - err[0][0], r["predicted"]), (x + err[1][0], r["predicted"])))
        else:
            x = r["limit"]
            ax.plot([x], [r["predicted"]], ">", ms=9, mfc="none", mec=c, mew=1.6, ls="none", zorder=5)
        labels.append({"xy": (x, r["predicted"]), "text": r["label"], "candidates": ABOVE, "fontsize": 7.5, "color": c})
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    _plain_log(ax.xaxis)
    _plain_log(ax.yaxis)
    what = label_of(y).replace(" (units)", "")
    ax.set_xlabel(f"observed {what}, mean over seeds (hidden units)")
    ax.set_ylabel(f"predicted {what} (hidden units)")
    ax.grid(alpha=0.3, which="major")
    _title(ax, title)
    handles = [Line2D([], [], color=colour[g], marker="o", ms=6, ls="none", label=f"{g} held out") for g in knobs]
    if "combination" in colour and "combination" in groups:
        handles.append(Line2D([], [], color="black", marker="s", ms=6, ls="none", label="a held-out combination"))
    handles += [Line2D([], [], color="grey", marker="o", ms=6, mfc="white", ls="none",
                       label="open: extrapolated (a knob outside\nthe fitted range)"),
                Line2D([], [], color="grey", marker="o", ms=5, ls="-", lw=1.1,
                       label="bar: SD across seeds"),
                Line2D([], [], color="0.45", lw=1.0, label="predicted = observed"),
                Line2D([], [], color="0.88", lw=7, label=f"within ±{tolerance:.0%}")]
    if points["limit"].notna().any():
        handles.append(Line2D([], [], color="grey", marker=">", ms=7, mfc="none", ls="none",
                              label="every run censored: observed\nat least this (a bound)"))
    _outside_legend(ax, handles=handles, fontsize=7.5)
    fig.canvas.draw()  # final limits, aspect and margins before the labels are placed
    boxes = [_marker_box(ax, label["xy"], 10) for label in labels]
    for left, right in bars:  # a label on an SD bar would hide where it ends
        boxes.append(Bbox.union([_marker_box(ax, left, 2, 8), _marker_box(ax, right, 2, 8)]))
    _place_labels(ax, labels, boxes)
    return fig
