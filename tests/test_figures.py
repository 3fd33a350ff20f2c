"""Figures a researcher can read: axes fitted to what matters, nothing printed over anything else.

Drawn from hand-made tables, so each test states the data it draws; the checks measure the rendered
text with the figure's own renderer (display space), as a reader's eye would see it.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from rankprune import figures


def overlapping(texts) -> list[tuple[str, str]]:
    """Pairs of visible texts whose rendered boxes intersect."""
    fig = texts[0].figure
    if not hasattr(fig.canvas, "get_renderer"):  # a bare Figure: measure as Agg renders it
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_visible() and t.get_text()]
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]


def run_tables(depths=(1, 2, 3), iterations=4, epochs=6, step=1e9, after_rebuild=0.10):
    """Epoch and iteration rows of a run whose depths all start at cost 0: trained test accuracy climbs from
    90% to about 97% in each iteration; a reinit rebuild leaves the network at `after_rebuild`."""
    epoch_rows, iteration_rows = [], []
    for depth in depths:
        cost = 0.0
        for it in range(iterations):
            for e in range(1, epochs + 1):
                cost += step * depth
                acc = 0.90 + 0.07 * e / epochs + 0.002 * depth
                epoch_rows.append({"depth": depth, "iteration": it, "epoch": e, "test_acc": acc,
                                   "cumulative_seconds": cost / 1e9, "cumulative_flops": cost})
            iteration_rows.append({"depth": depth, "iteration": it, "test_acc": acc, "cumulative_seconds": cost / 1e9,
                                   "cumulative_flops": cost,
                                   "test_acc_after_rebuild": None if it == 0 else after_rebuild})
    return pd.DataFrame(epoch_rows), pd.DataFrame(iteration_rows)


def test_the_accuracy_axis_spans_trained_accuracies_and_marks_chance_level_points_at_the_edge():
    epochs, iterations = run_tables()
    fig = figures.accuracy_curves(epochs, iterations, "cumulative_flops", "cumulative training compute (TFLOP)", 1e-12)
    ax = fig.axes[0]
    bottom, top = ax.get_ylim()
    trained = 100 * pd.concat([epochs["test_acc"], iterations["test_acc"]])
    assert bottom <= trained.min() and top >= trained.max()
    assert bottom > 10 + 50  # not squeezed down to the 10% after-rebuild points
    assert top - bottom < 2 * (trained.max() - trained.min()) + 2
    # every after-rebuild point (3 depths x 3 rebuilds) is a triangle at the bottom edge, labelled with its value
    triangles = [line for line in ax.lines if line.get_marker() == "v" and line.get_xdata().size]
    assert len(triangles) == 9
    values = [t.get_text() for t in ax.texts if t.get_text().endswith("%")]
    assert values and set(values) == {"10%"}


def test_iteration_labels_never_overprint_and_depths_starting_at_zero_differ_in_style():
    # ends of iterations crowd together: 3 depths x 6 iterations over a short cost range
    epochs, iterations = run_tables(iterations=6, epochs=3, step=1e8)
    fig = figures.accuracy_curves(epochs, iterations, "cumulative_seconds", "cumulative training time (s)")
    ax = fig.axes[0]
    numbers = [t for t in ax.texts if t.get_text().isdigit()]
    assert len(numbers) >= 6  # most iterations keep their number
    assert overlapping(ax.texts) == []
    inside = ax.get_window_extent()
    for text in ax.texts:
        box = text.get_window_extent()
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
    handles = {h.get_label(): h for h in ax.get_legend().legend_handles}
    depth_handles = [handles[f"depth {d}"] for d in (1, 2, 3)]
    assert len({h.get_linestyle() for h in depth_handles}) == 3
    assert len({h.get_marker() for h in depth_handles}) == 3


def test_accuracy_against_flops_reads_in_tflop():
    epochs, iterations = run_tables(step=1e9)  # a digits-sized run: about 1e10 FLOPs
    fig = figures.accuracy_curves(epochs, iterations, "cumulative_flops", "cumulative training compute (TFLOP)", 1e-12)
    ax = fig.axes[0]
    assert ax.get_xlim()[1] == pytest.approx(1e-12 * epochs["cumulative_flops"].max(), rel=0.2)
    assert "TFLOP" in ax.get_xlabel()


def test_each_rank_panel_has_its_own_scale():
    """Stable rank at 5-13 in layers 800 wide must not be a flat line on a 0-800 axis."""
    n = 12
    epochs = pd.DataFrame({
        "depth": 1, "iteration": [0] * 6 + [1] * 6, "epoch": list(range(1, 7)) * 2, "widths": [[800]] * 6 + [[700]] * 6,
        "rank_numerical": [[800.0 - 10 * i, 10.0] for i in range(n)],
        "rank_stable": [[5.0 + 8 * i / (n - 1), 3.0] for i in range(n)],
    })
    fig = figures.ranks_across_epochs(epochs, ["numerical", "stable"], "numerical")
    numerical, stable = fig.axes[:2]
    low, high = stable.get_ylim()
    assert low >= 0 and high <= 1.5 * 13  # the data span 3-13: the axis within a small factor of it
    assert any("off this scale" in t.get_text() for t in stable.texts)  # the widths run off the top, and it says so
    assert numerical.get_ylim()[1] >= 800  # a measure that tracks the width keeps the width in view
    assert not any("off this scale" in t.get_text() for t in numerical.texts)


def scatter_trials(points: dict[int, tuple[float, float, int]]) -> tuple[pd.DataFrame, pd.Series]:
    """{trial number: (network rank sum, test accuracy, class)}"""
    trials = pd.DataFrame([{"number": k, "network_rank_sum": x, "test_acc": y} for k, (x, y, _) in points.items()])
    return trials, pd.Series([c for _, _, c in points.values()])


def test_trials_at_the_same_point_share_one_label_and_show_every_class():
    trials, classes = scatter_trials({1: (100, 0.95, 1), 3: (60, 0.97, 1), 7: (60, 0.97, 2), 8: (61, 0.97, 3),
                                      9: (60, 0.965, 1)})
    fig = figures.rank_scatter(trials, classes, {1: "[60]", 2: "[30, 30]", 3: "[61]"}, "test_acc", "test accuracy (%)")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert "#3, #7" in texts and sum("#3" in t for t in texts) == 1
    assert overlapping(ax.texts) == []
    # the two coincident markers are drawn side by side, not on top of each other
    fig.canvas.draw()
    centres = [tuple(np.round(xy, 1)) for c in ax.collections if len(c.get_offsets())
               for xy in c.get_offset_transform().transform(c.get_offsets())]
    assert len(centres) == len(trials) and len(set(centres)) == len(trials)


# --- what each figure names and where its parts sit (issue 18) ---------------------------------------
def display_points(line) -> np.ndarray:
    """A line's vertices as drawn (display space), whatever transform it was drawn with."""
    return line.get_transform().transform(np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float))


def test_a_regression_run_names_r_squared_on_its_accuracy_axes():
    r_squared = figures.metric_of("regression:middle")
    epochs, iterations = run_tables(depths=(1,))
    curves = figures.accuracy_curves(epochs, iterations, "cumulative_seconds", "cumulative training time (s)",
                                     metric=r_squared)
    assert "R^2" in curves.axes[0].get_ylabel() and "accuracy" not in curves.axes[0].get_ylabel()
    replicates = figures.replicates_per_iteration(iterations.assign(seed=0, widths=[[8]] * len(iterations)),
                                                  metric=r_squared)
    assert "R^2" in replicates.axes[1].get_ylabel() and "accuracy" not in replicates.axes[1].get_ylabel()
    assert figures.metric_of("digits").label("test") == "test accuracy (%)"


def test_iteration_labels_keep_a_gap_so_that_neighbours_never_read_as_one_number():
    """"6", "7" and "8" placed edge to edge read "678"."""
    epochs, iterations = run_tables(iterations=9, epochs=2, step=1e8)
    fig = figures.accuracy_curves(epochs, iterations, "cumulative_seconds", "cumulative training time (s)")
    ax = fig.axes[0]
    FigureCanvasAgg(fig).draw()
    gap = 2 * fig.dpi / 72  # two points, in pixels
    boxes = [t.get_window_extent() for t in ax.texts if t.get_text().isdigit()]
    assert len(boxes) >= 9
    for a, b in itertools.combinations(boxes, 2):
        assert not a.padded(gap / 2).overlaps(b.padded(gap / 2))


def test_after_rebuild_markers_are_drawn_over_the_lines():
    epochs, iterations = run_tables(depths=(1, 2), after_rebuild=0.93)  # within the axis: hollow markers
    ax = figures.accuracy_curves(epochs, iterations, "cumulative_flops", "cumulative training compute (TFLOP)", 1e-12).axes[0]
    hollow = [line for line in ax.lines if line.get_markerfacecolor() == "none" and line.get_xdata().size]
    curves = [line for line in ax.lines if line.get_marker() in ("None", None, "") and line.get_xdata().size]
    assert hollow and curves
    assert min(h.get_zorder() for h in hollow) > max(c.get_zorder() for c in curves)
    ends = [line for line in ax.lines if line.get_markerfacecolor() != "none" and line.get_marker() in figures.DEPTH_MARKERS]
    assert min(h.get_zorder() for h in hollow) > max(e.get_zorder() for e in ends)  # a ring round an end marker


def test_spectra_legends_sit_beside_the_panels_and_name_counts_and_widths():
    """Hidden 1 of a 128-wide layer on 64 inputs has 64 singular values; the legend says which is which."""
    rng = np.random.default_rng(0)
    spectra = pd.DataFrame([{"depth": 1, "iteration": it, "layer": layer,
                             "singular_values": sorted(rng.random(n), reverse=True)}
                            for it, (w, n_out) in enumerate(((128, 64), (60, 60))) for layer, n in ((0, n_out), (1, 10))])
    fig = figures.spectra_per_iteration(spectra, rtol=0.02, widths={0: [128], 1: [60]})
    FigureCanvasAgg(fig).draw()
    hidden, output = fig.axes[:2]
    for ax in (hidden, output):
        legend = ax.get_legend()
        assert not legend.get_window_extent().overlaps(ax.get_window_extent())  # outside: covers no curve
    labels = [t.get_text() for t in hidden.get_legend().get_texts()]
    assert "0: 64 values, width 128" in labels and "1: 60 values, width 60" in labels
    assert "singular values" in hidden.get_legend().get_title().get_text()
    assert [t.get_text() for t in output.get_legend().get_texts()][:2] == ["0: 10 values", "1: 10 values"]
    assert overlapping(fig.texts + [t for ax in fig.axes for t in ax.get_legend().get_texts()]) == []


def whole_number_ticks(axis) -> bool:
    lo, hi = sorted(axis.get_view_interval())
    ticks = [t for t in axis.get_ticklocs() if lo <= t <= hi]
    return len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)


def movement_epochs() -> pd.DataFrame:
    """Two iterations of 2 epochs (4 epochs: a default locator ticks 1.5, 2.5); movement from the first
    initialisation between 0.5 and 1.4 (under one decade: a log axis labels its minor ticks there)."""
    rows = []
    for it in (0, 1):
        for e in (1, 2):
            step = 2 * it + e
            rows.append({"depth": 1, "iteration": it, "epoch": e, "widths": [8],
                         "movement": [0.3 * e, 0.2 * e], "movement_from_init": [0.25 + 0.27 * step, 0.3 + 0.2 * step],
                         "change_rank_numerical:0.02": [float(e + 2), float(e)]})
    return pd.DataFrame(rows)


def test_movement_panels_count_whole_epochs_label_log_ticks_plainly_and_print_no_markdown():
    """Log ticks labelled "6x10^-1" were wider than the margin: in the saved figure the middle panel's y-label
    ran over them."""
    from rankprune import figures_dynamics

    fig = figures_dynamics.movement_across_epochs(movement_epochs(), "numerical:0.02")
    FigureCanvasAgg(fig).draw()
    for ax in fig.axes[:3]:
        assert "`" not in ax.get_title()
        assert whole_number_ticks(ax.xaxis)
        ticks = [t for t in ax.get_yticklabels(minor=True) + ax.get_yticklabels() if t.get_visible() and t.get_text()]
        assert ticks and all(re.fullmatch(r"[0-9.]+", t.get_text()) for t in ticks), [t.get_text() for t in ticks]
        label = ax.yaxis.label.get_window_extent()
        assert not any(label.overlaps(t.get_window_extent()) for t in ticks), ax.get_ylabel()


def test_rank_traces_count_whole_epochs():
    epochs = pd.DataFrame({"depth": 1, "iteration": [0, 0, 1, 1], "epoch": [1, 2, 1, 2], "widths": [[8]] * 4,
                           "rank_numerical": [[8.0, 3.0], [7.0, 3.0], [6.0, 3.0], [6.0, 3.0]]})
    fig = figures.ranks_across_epochs(epochs, ["numerical"], "numerical")
    FigureCanvasAgg(fig).draw()
    assert whole_number_ticks(fig.axes[0].xaxis)


def replicate_rows(widths: dict[int, int], accuracies: dict[int, list[float]]) -> pd.DataFrame:
    """Iterations of seeds 0-2 at depth 1 and 2, every seed at the same total width per depth; the last
    iteration is the anneal."""
    rows = []
    for seed in (0, 1, 2):
        for depth, width in widths.items():
            for it, acc in enumerate(accuracies[depth]):
                rows.append({"seed": seed, "depth": depth, "iteration": it, "widths": [width] * depth,
                             "test_acc": acc, "phase": "anneal" if it == len(accuracies[depth]) - 1 else "shrink"})
    return pd.DataFrame(rows)


def test_replicates_with_equal_widths_stay_visible_share_an_accuracy_scale_and_mark_the_anneal():
    rows = replicate_rows({1: 32, 2: 24}, {1: [0.95, 0.955, 0.96], 2: [0.90, 0.93, 0.97]})
    fig = figures.replicates_per_iteration(rows)
    FigureCanvasAgg(fig).draw()
    top_left, top_right, bottom_left, bottom_right = fig.axes[:4]
    seed_lines = [line for line in top_left.lines if line.get_marker() != "*"]
    assert len(seed_lines) == 3
    assert len({line.get_linestyle() for line in seed_lines}) == 3
    drawn = [display_points(line) for line in seed_lines]
    for a, b in itertools.combinations(drawn, 2):  # equal widths, yet no two seeds on the same pixels
        assert np.abs(a - b).max() >= 1.0
    assert bottom_left.get_ylim() == bottom_right.get_ylim()
    stars = [line for line in top_left.lines + bottom_left.lines if line.get_marker() == "*" and line.get_xdata().size]
    assert len(stars) == 6  # each seed's anneal, in both panels
    assert np.allclose(sorted(np.round(np.concatenate([s.get_xdata() for s in stars]))), [2] * 6)
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert any("anneal" in text for text in legend)
