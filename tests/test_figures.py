"""Figures a researcher can read: axes fitted to what matters, nothing printed over anything else.

Drawn from hand-made tables, so each test states the data it draws; the checks measure the rendered
text with the figure's own renderer (display space), as a reader's eye would see it.
"""

from __future__ import annotations

import itertools

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
