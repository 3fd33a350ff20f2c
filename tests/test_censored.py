"""Censored widths (issue 19) as every table and figure shows them: a width that never shrank below its start, or
that equals its input's size, is a lower bound, written '>= N' and drawn as an open upward triangle; one still
shrinking when its depth hit the iteration cap ("unconverged") an upper bound, '<= N' and an open downward
triangle; each with its legend entry "censored (a bound, not a measurement): at least / at most this". Runs made
before censoring was recorded show nothing special.

The real run here is digits at width 96, one hidden layer, two iterations: its first shrink goes to the 64 pixels
of digits' 8x8 images, the most rank the first layer's matrix can have, so the chosen width [64] is censored
("input"). Everything else is built by hand.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from rich.console import Console

from rankprune import figures
from rankprune.config import RunConfig
from rankprune.report import REPORT, render
from rankprune.runfolder import DEPTHS, ITERATIONS, RunFolder

OLD = Path(__file__).parent / "data" / "run-format-1"
CENSORED_LEGEND = figures.CENSORED_LABELS[">="]
UPPER_LEGEND = figures.CENSORED_LABELS["<="]


def rendered(table, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(table)
    return console.file.getvalue()


def section(report: Path, heading: str) -> str:
    text = report.read_text()
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def table_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def censored_markers(ax, marker: str = "^") -> list:
    """The open upward (or `marker`) triangles an axes holds, with data."""
    return [line for line in ax.lines if line.get_marker() == marker and line.get_xdata().size
            and line.get_markerfacecolor() == "none"]


def legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


# --- a real censored run ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def censored_run(tmp_path_factory, tiny_config, run_controller) -> tuple[RunFolder, Path]:
    cfg = tiny_config(model={"width": 96}, rank={"measure": "numerical:0.02", "min_width": 1},
                      evolve={"layers": (1,), "max_iterations": 2, "max_drop": 1.0, "width_tol": 0.0})
    run = run_controller(cfg, tmp_path_factory.mktemp("censored") / "run")
    depth = run.read(DEPTHS)["1"]
    assert depth["widths"] == [64] and depth["censored"] == ["input"]  # what the tests below rely on
    return run, render(run.path)


def test_the_summary_table_shows_a_censored_width_as_a_bound_and_says_what_that_is(censored_run):
    from rankprune.live import summary_table

    run, _ = censored_run
    text = rendered(summary_table(run.read(DEPTHS)))
    assert "-> [>= 64]" in text
    assert ">= N: a lower bound (never shrank, or at its input's size)" in text and "<= N" not in text
    # the same depth as recorded before censoring existed: nothing special
    old = {k: {key: v for key, v in d.items() if key != "censored"} for k, d in run.read(DEPTHS).items()}
    text = rendered(summary_table(old))
    assert "-> [64]" in text and ">=" not in text


def test_the_live_iteration_and_depth_lines_mark_a_censored_width(censored_run):
    from rankprune.live import LiveReporter

    run, _ = censored_run
    out = io.StringIO()
    live = LiveReporter(RunConfig.from_dict(run.read("config.json")), Console(file=out, width=200, color_system=None))
    rows = run.rows(ITERATIONS)
    with live:
        live.depth_started(1, rows[0]["widths"], 0)
        for row in rows:
            live.iteration_done(1, row)
        live.depth_done(1, run.read(DEPTHS)["1"])
    text = out.getvalue()
    assert "iteration 0: widths [96] -> [>= 64]" in text
    assert "done: max-iterations after 2 iterations, widths [>= 64]" in text


def test_the_run_report_marks_censored_widths_in_its_tables(censored_run):
    _, report = censored_run
    [depth] = table_rows(section(report, "Depths"))
    assert "[96] -> [>= 64]" in depth
    assert "'>= N', a lower bound: the width never shrank below its start, or it equals its input's size" in section(report, "Depths")
    header = [line for line in section(report, "Iterations").splitlines() if line.startswith("|")][0]
    columns = [c.strip() for c in header.strip("|").split("|")]
    first, second = table_rows(section(report, "Iterations"))
    widths, upcoming = columns.index("widths"), columns.index("next widths")
    assert (first[widths], first[upcoming]) == ("[96]", "[>= 64]")  # iteration 0 trains at its start
    assert second[widths] == "[>= 64]"  # and iteration 1 at the bound
    assert "this run: depth 1, widths [>= 64]" in section(report, "Reference")


def test_the_widths_figure_draws_a_censored_width_as_an_open_triangle_with_its_legend_entry(censored_run):
    from rankprune.report.gather import read_run
    from rankprune.report.run import _widths_frame

    run, report = censored_run
    data = read_run(run)
    fig = figures.widths_per_iteration(_widths_frame(data.epochs, data.iterations, data.depths))
    FigureCanvasAgg(fig).draw()
    [ax] = [ax for ax in fig.axes if ax.get_visible()]
    [marks] = censored_markers(ax)
    assert list(marks.get_xdata()) == [1] and list(marks.get_ydata()) == [64]  # iteration 1, at the bound
    assert matplotlib.colors.same_color(marks.get_markeredgecolor(), ax.lines[0].get_color())  # in its layer's colour
    [width_line] = [line for line in ax.lines if line.get_label() == "hidden 1 width"]
    assert width_line.get_markevery() == [0]  # the dot only where the width is measured: no dot inside the triangle
    assert CENSORED_LEGEND in legend_texts(fig)
    assert "an open upward triangle, a lower bound" in section(report, "Widths per iteration")


# --- runs made before censoring was recorded ---------------------------------------------------------
def test_a_format_1_run_reads_as_unknown_and_shows_no_bound(tmp_path):
    from rankprune.live import summary_table
    from rankprune.report.gather import read_run
    from rankprune.report.run import _widths_frame

    old = tmp_path / "old"
    shutil.copytree(OLD, old)
    run = RunFolder(old)
    assert all("censored" not in d for d in run.read(DEPTHS).values())
    assert ">=" not in rendered(summary_table(run.read(DEPTHS)))
    report = render(old, tmp_path / "report")
    text = report.read_text()
    assert ">=" not in text and "censored" not in text.lower()
    data = read_run(run)
    fig = figures.widths_per_iteration(_widths_frame(data.epochs, data.iterations, data.depths))
    assert not any(censored_markers(ax) for ax in fig.axes)
    assert CENSORED_LEGEND not in legend_texts(fig)


# --- replicates ---------------------------------------------------------------------------------------
def make_replicates(root: Path, chosen: dict[int, tuple[list[int], list]]) -> None:
    """A replicates folder written by hand: seeds 0-2 at depth 2, each with two iterations (a shrink and its
    anneal); `chosen` maps a seed to its chosen widths and their censored marks (None: not recorded)."""
    config = RunConfig().replace(data={"dataset": "digits"}, evolve={"layers": (2,)}).to_dict()
    root.mkdir()
    (root / "replicates.json").write_text(json.dumps({"seeds": [0, 1, 2], "data_seed": 0, "config": config}))
    for seed, (widths, marks) in chosen.items():
        folder = root / f"seed-{seed}"
        folder.mkdir()
        summary = {"depth": 2, "widths": widths, "initial_widths": [128, 128], "parameters": 5000 + seed,
                   "test_acc": 0.95, "val_acc": 0.96, "iterations": 2, "chosen_iteration": 1,
                   "cumulative_seconds": 1.0, "cumulative_flops": 1e9, "stop_reason": "max-iterations"}
        if marks is not None:
            summary["censored"] = marks
        (folder / DEPTHS).write_text(json.dumps({"2": summary}))
        rows = [{"depth": 2, "iteration": 0, "phase": "shrink", "widths": [128, 128], "next_widths": widths,
                 "test_acc": 0.94, "val_acc": 0.95, "seed": seed},
                {"depth": 2, "iteration": 1, "phase": "anneal", "widths": widths, "next_widths": widths,
                 "test_acc": 0.95, "val_acc": 0.96, "seed": seed}]
        if marks is not None:
            for row in rows:
                row["censored"] = marks
        (folder / ITERATIONS).write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_replicates_summarise_censored_widths_over_measured_seeds_and_count_the_bounds(tmp_path):
    from rankprune.live import replicates_table
    from rankprune.replicates import summarise

    root = tmp_path / "reps"
    make_replicates(root, {0: ([40, 20], [None, None]), 1: ([44, 22], [None, None]), 2: ([64, 21], ["input", None])})
    summary = summarise(root, [0, 1, 2])
    censoring = summary["2"]["censoring"]
    first, second = censoring["widths"]
    assert first["measured"]["n"] == 2 and first["measured"]["mean"] == pytest.approx(42.0) and first["bounds"] == [[">=", 64.0]]
    assert second["measured"]["n"] == 3 and second["bounds"] == []
    total = censoring["total_width"]  # a total is a bound where any of its layers is
    assert total["measured"]["mean"] == pytest.approx(63.0) and total["bounds"] == [[">=", 85.0]]
    assert summary["2"]["per_seed"]["2"]["censored"] == ["input", None]
    text = rendered(replicates_table(summary), width=200)
    assert "42.0 ± 2.8 (n = 2); 1 censored (>= 64)" in text and "63.0 ± 4.2 (n = 2); 1 censored (>= 85)" in text
    assert "counted with their bounds, not averaged" in text and ">= N: a lower bound" in text

    report = render(root, tmp_path / "report")
    [row] = table_rows(section(report, "The chosen networks over seeds"))
    assert "[42.0 ± 2.8 (n = 2); 1 censored (>= 64), 21.0 ± 1.0]" in row
    assert "63.0 ± 4.2 (60.0-66.0) (n = 2); 1 censored (>= 85)" in row
    seeds = {r[0]: r[2] for r in table_rows(section(report, "Every seed"))}
    assert seeds == {"0": "[40, 20]", "1": "[44, 22]", "2": "[>= 64, 21]"}
    assert "an open triangle replaces the seed's marker on a censored total" in section(report, "Per iteration")


def test_replicates_made_before_censoring_show_plain_spreads(tmp_path):
    from rankprune.live import replicates_table
    from rankprune.replicates import summarise

    root = tmp_path / "reps"
    make_replicates(root, {0: ([40, 20], None), 1: ([44, 22], None), 2: ([64, 21], None)})
    summary = summarise(root, [0, 1, 2])
    text = rendered(replicates_table(summary), width=200)
    assert "[49.3 ± 12.9, 21.0 ± 1.0]" in text and "70.3 ± 13.1" in text and ">=" not in text and "censored" not in text
    report = render(root, tmp_path / "report")
    assert ">=" not in report.read_text() and "censored" not in report.read_text()


def test_the_replicates_figure_draws_a_censored_total_as_an_open_triangle(tmp_path):
    rows = pd.DataFrame([
        {"seed": seed, "depth": 2, "iteration": it, "widths": widths, "test_acc": 0.95, "phase": phase,
         "widths_censored": marks}
        for seed, censored in ((0, False), (1, True))
        for it, widths, phase, marks in ((0, [128, 128], "shrink", None),
                                         (1, [64 if censored else 40, 20], "anneal", ["input", None] if censored else [None, None]))])
    fig = figures.replicates_per_iteration(rows)
    FigureCanvasAgg(fig).draw()
    top, bottom = fig.axes[0], fig.axes[1]
    [marks] = censored_markers(top)
    assert list(marks.get_ydata()) == [84]  # seed 1's total at iteration 1
    assert not censored_markers(bottom)  # accuracies are measurements
    seed_lines = [line for line in top.lines if line.get_marker() in figures.SEED_MARKERS]
    # every measured total keeps its seed's marker: iteration 0 of both, iteration 1 of seed 0 only
    assert sorted(list(line.get_markevery()) for line in seed_lines) == [[0], [0, 1]]
    assert CENSORED_LEGEND in legend_texts(fig)


def test_spread_text_and_widths_text_write_bounds_alike_everywhere():
    from rankprune.replicates import censored_spread
    from rankprune.units import spread_text, widths_text

    assert widths_text([64, 38], ["input", None]) == "[>= 64, 38]"
    assert widths_text([64, 38]) == widths_text([64, 38], None) == widths_text([64, 38], [float("nan")]) == "[64, 38]"
    assert widths_text([64, 37], ["input", "unconverged"]) == "[>= 64, <= 37]"
    assert widths_text([9], ["a reason added later"]) == "[~ 9]"  # a bound whose side is not known here
    assert spread_text(censored_spread([64, 64, 64], [">="] * 3)) == "3 censored (>= 64)"
    assert spread_text(censored_spread([40, 44], [None, None])) == "42.0 ± 2.8"
    assert (spread_text(censored_spread([40, 44, 64, 70, 37], [None, None, ">=", ">=", "<="]))
            == "42.0 ± 2.8 (n = 2); 2 censored (>= 64-70); 1 censored (<= 37)")


# --- studies ------------------------------------------------------------------------------------------
def test_the_rank_scatter_draws_censored_trials_as_open_triangles_with_a_legend_entry():
    trials = pd.DataFrame({"number": [0, 1, 2], "network_rank_sum": [40, 50, 64], "test_acc": [0.95, 0.96, 0.97]})
    classes = pd.Series([1, 2, 3])
    fig = figures.rank_scatter(trials, classes, {1: "[40]", 2: "[50]", 3: "[64]"}, "test_acc", "test accuracy (%)",
                               censored=pd.Series([False, False, True]))
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    [marks] = censored_markers(ax)
    assert list(marks.get_xdata()) == [64] and list(marks.get_ydata()) == pytest.approx([97.0])
    dots = [c for c in ax.collections if len(c.get_offsets())]
    assert sum(len(c.get_offsets()) for c in dots) == 2  # the measured trials stay dots
    assert CENSORED_LEGEND in legend_texts(fig)
    plain = figures.rank_scatter(trials, classes, {}, "test_acc", "test accuracy (%)")
    assert not censored_markers(plain.axes[0]) and CENSORED_LEGEND not in legend_texts(plain)


def test_a_trials_censored_layers_follow_its_mode():
    from rankprune.study import censored_layers

    evolved = {"widths": [64, 30], "ranks": [60, 28], "censored": ["input", None]}
    assert censored_layers(evolved, "evolve") == ["input", None]
    assert censored_layers({"widths": [64, 30], "ranks": [60, 28]}, "evolve") == [None, None]  # before it was recorded
    assert censored_layers({**evolved, "censored": float("nan")}, "evolve") == [None, None]  # a frame's missing cell
    # a survey never shrinks, so every width is "initial"; its result is the rank, a bound where it used every unit
    surveyed = {"widths": [16, 32], "ranks": [16, 9], "censored": ["initial", "initial"]}
    assert censored_layers(surveyed, "survey") == ["initial", None]
    # a rank pinned at what its incoming matrix allows (digits' 64 pixels under a 128-wide first layer): "input"
    wide = {"widths": [128, 32], "ranks": [64, 9], "censored": ["initial", "initial"], "rank_bounds": [64, 128]}
    assert censored_layers(wide, "survey") == ["input", None]
    assert censored_layers({**wide, "rank_bounds": None}, "survey") == [None, None]  # trials from before it was recorded


def test_a_width_still_shrinking_at_the_iteration_cap_is_an_upper_bound_everywhere():
    """'unconverged': the depth hit its iteration cap still shrinking, so its fixed point lies below: '<= N', an
    open downward triangle, and a total that mixes it with a lower bound is a bound on neither side."""
    from rankprune.live import summary_table
    from rankprune.units import sum_side

    depth = {"depth": 2, "stop_reason": "max-iterations", "iterations": 20, "initial_widths": [128, 128],
             "widths": [64, 37], "censored": ["input", "unconverged"], "initial_parameters": 26122, "parameters": 7000,
             "initial_test_acc": 0.97, "test_acc": 0.97, "cumulative_seconds": 3.0, "cumulative_flops": 1e10}
    text = rendered(summary_table({"2": depth}))
    assert "-> [>= 64, <= 37]" in text and "<= N: an upper bound" in text and ">= N: a lower bound" in text
    assert sum_side(depth["censored"]) == "~" and sum_side(["unconverged", None]) == "<=" and sum_side([None]) is None

    frame = pd.DataFrame([{"depth": 2, "iteration": i, "widths": w, "ranks": None, "censored": c}
                          for i, (w, c) in enumerate([([128, 128], None), ([64, 50], ["input", None]),
                                                      ([64, 37], ["input", "unconverged"])])])
    fig = figures.widths_per_iteration(frame)
    FigureCanvasAgg(fig).draw()
    [ax] = [ax for ax in fig.axes if ax.get_visible()]
    [up] = censored_markers(ax, "^")
    [down] = censored_markers(ax, "v")
    assert list(up.get_xdata()) == [1, 2] and list(up.get_ydata()) == [64, 64]
    assert list(down.get_xdata()) == [2] and list(down.get_ydata()) == [37]
    assert {CENSORED_LEGEND, UPPER_LEGEND} <= set(legend_texts(fig))

    rows = pd.DataFrame([{"seed": 0, "depth": 2, "iteration": 1, "widths": [64, 37], "test_acc": 0.95,
                          "phase": "shrink", "widths_censored": ["input", "unconverged"]}])
    fig = figures.replicates_per_iteration(rows)
    [either] = censored_markers(fig.axes[0], figures.CENSORED_MARKERS["~"])  # a total of a lower and an upper bound: neither side
    assert list(either.get_ydata()) == [101] and figures.CENSORED_LABELS["~"] in legend_texts(fig)
