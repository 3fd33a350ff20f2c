"""The live view: its closing table in an 80-column terminal, and the progress bars between depths."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from rankprune.config import RunConfig
from rankprune.live import LiveReporter, summary_table

STOP_REASONS = ("fixed-point", "converged", "max-iterations", "accuracy-drop", "diverged")


def depth_summary(depth: int, stop_reason: str, **fields) -> dict:
    return {"depth": depth, "stop_reason": stop_reason, "iterations": 3, "chosen_iteration": 2, "widths": [30] * depth,
            "initial_widths": [64] * depth, "parameters": 4321, "initial_parameters": 12345, "initial_test_acc": 0.9,
            "test_acc": 0.875, "cumulative_seconds": 3.5, "cumulative_flops": 1.36e10, **fields}


def render(table, width: int) -> str:
    console = Console(record=True, width=width)
    console.print(table)
    return console.export_text()


def test_summary_table_shows_every_depth_first_and_chosen():
    depths = {
        "10": depth_summary(10, "max-iterations", iterations=8, widths=[9] * 10, cumulative_flops=2e12),
        "2": depth_summary(2, "fixed-point", widths=[30, 20]),
    }
    text = render(summary_table(depths), 200)
    assert "fixed-point" in text and "max-iterations" in text
    assert "[64, 64]" in text and "-> [30, 20]" in text and "12,345" in text and "-> 4,321" in text
    assert "0.9000" in text and "-> 0.8750" in text
    assert "3.5 s" in text and "8 iterations" in text
    assert text.index("fixed-point") < text.index("max-iterations")  # depths in numeric order: 2 before 10


def test_summary_table_shows_compute_in_tflop_to_three_significant_figures():
    text = render(summary_table({"1": depth_summary(1, "converged", cumulative_flops=1.36e10),
                                 "2": depth_summary(2, "converged", cumulative_flops=4.56e13)}), 120)
    assert "0.0136 TFLOP" in text  # a digits run: not 0.00
    assert "45.6 TFLOP" in text
    assert "cumulative" in text


@pytest.mark.parametrize("depth", [1, 3, 10])
def test_an_80_column_summary_table_keeps_every_stop_reason_whole(depth):
    depths = {str(d): depth_summary(d, reason, widths=[123] * d, initial_widths=[1024] * d, parameters=1_234_567,
                                    initial_parameters=12_345_678, cumulative_seconds=12345.6, cumulative_flops=4.56e14)
              for d, reason in zip(range(depth, depth + len(STOP_REASONS)), STOP_REASONS)}
    text = render(summary_table(depths), 80)
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80
    for reason in STOP_REASONS:
        assert any(line.split()[1:2] == [reason] for line in lines if line.split()), f"{reason} is cut or wrapped"
    for cell in ("12,345,678", "-> 1,234,567", "12345.6 s", "456 TFLOP", "-> 0.8750"):
        assert cell in text


def iteration_row(iteration: int, widths: list[int], stop: str | None = None) -> dict:
    return {"iteration": iteration, "widths": widths, "next_widths": [w - 1 for w in widths], "val_acc": 0.9,
            "test_acc": 0.9, "epochs": 2, "train_stop": "saturated", "cumulative_seconds": 1.0, "stop": stop}


def screen(stream: str) -> list[str]:
    """The lines a terminal shows after `stream`: replays the few controls rich's live view writes (newline,
    carriage return, erase line, cursor up), dropping colours and cursor visibility."""
    lines, row = [""], 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\n|\r|[^\x1b\n\r]+", stream):
        if token == "\n":
            row += 1
            lines += [""] * (row + 1 - len(lines))
        elif token == "\x1b[2K":
            lines[row] = ""
        elif token == "\x1b[1A":
            row -= 1
        elif token == "\r" or token.startswith("\x1b"):
            continue  # writes after \r follow an erase here; colours and cursor visibility
        else:
            lines[row] += token
    return [line for line in lines if line.strip()]


def test_a_finished_depth_leaves_a_line_and_no_progress_bar():
    cfg = RunConfig().replace(evolve={"max_iterations": 4}, train={"max_epochs": 5})
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80)
    with LiveReporter(cfg, console) as live:
        for depth in (1, 2):
            widths = [64] * depth
            live.depth_started(depth, widths, 0)
            for iteration in range(2):
                live.iteration_started(depth, iteration, widths)
                for epoch in (1, 2):
                    live.epoch_done(depth, iteration, {"epoch": epoch, "val_acc": 0.9, "train_loss": 0.1,
                                                       "cumulative_seconds": 1.0})
                live.iteration_done(depth, iteration_row(iteration, widths, "fixed-point" if iteration == 1 else None))
            if depth == 1:
                live.depth_done(depth, depth_summary(depth, "converged", iterations=2))
                assert live.progress.tasks == []
                after_depth_1 = screen(out.getvalue())
        # while depth 2 runs: depth 1's bar is gone, depth 2 has its own and one for epochs
        assert [t.description for t in live.progress.tasks] == ["depth 2 iterations", "  epochs"]
        live.depth_done(2, depth_summary(2, "fixed-point", iterations=2))
    assert after_depth_1[-1].startswith("depth 1 done: converged after 2 iterations")
    assert not any("depth 1 iterations" in line or "epochs  " in line for line in after_depth_1)
    final = screen(out.getvalue())
    assert final[2].endswith("[fixed-point]")  # the stop is printed as text, not read as a rich style tag
    assert [line.split(":")[0] for line in final] == [
        "task", "depth 1 iteration 0", "depth 1 iteration 1", "depth 1 done",
        "depth 2 iteration 0", "depth 2 iteration 1", "depth 2 done",
    ]  # no bar, finished or not, stands between or after the depths' lines


def test_the_task_knobs_and_their_columns_show_in_the_live_view():
    cfg = RunConfig().replace(data={"label_noise": 0.25, "tasks": 4, "classes": 5}, model={"width": 32},
                              train={"loss": "hinge", "saturate": "both", "rank_tol": 3, "max_epochs": 5})
    out = io.StringIO()
    with LiveReporter(cfg, Console(file=out, force_terminal=True, width=400)) as live:
        live.depth_started(1, [32], 0)
        live.iteration_started(1, 0, [32])
        live.epoch_done(1, 0, {"epoch": 1, "val_acc": 0.5, "train_loss": 0.3, "cumulative_seconds": 1.0, "n_delta": 417,
                               "rank_numerical:0.02": [19.0, 9.0]})
        live.progress.refresh()  # draw now rather than at the next auto-refresh
        epoch_line = screen(out.getvalue())[-1]
        live.iteration_done(1, {**iteration_row(0, [32]), "train_acc_relabelled": 0.125, "train_acc_clean": 0.75,
                                "test_acc_unseen_tasks": 0.0625, "n_delta": 400})
        live.depth_done(1, depth_summary(1, "converged"))
    lines = screen(out.getvalue())
    task = lines[0]
    for knob in ("label noise 0.25", "4 augmented tasks", "5 classes", "hinge loss",
                 "no driving rank moves by more than 3 units"):
        assert knob in task
    assert "N_Delta 417" in epoch_line and "rank [19]" in epoch_line  # hidden layers only
    iteration = next(line for line in lines if line.startswith("depth 1 iteration 0"))
    for cell in ("train relabelled 0.1250 clean 0.7500", "unseen tasks 0.0625", "N_Delta 400"):
        assert cell in iteration


def test_the_epoch_line_shows_the_ranks_that_drive_the_widths():
    """Under --rank-source activations the widths follow the held-out activations' rank, so that is what the epoch
    line shows, not the weights' (which a CNN's conv blocks can leave far above it)."""
    cfg = RunConfig().replace(model={"width": 32}, rank={"source": "activations"}, train={"max_epochs": 5})
    out = io.StringIO()
    with LiveReporter(cfg, Console(file=out, force_terminal=True, width=400)) as live:
        live.depth_started(1, [32], 0)
        live.iteration_started(1, 0, [32])
        live.epoch_done(1, 0, {"epoch": 1, "val_acc": 0.5, "train_loss": 0.3, "cumulative_seconds": 1.0,
                               "rank_numerical:0.02": [19.0, 9.0], "heldout_activation_rank_numerical:0.02": [7.0]})
        live.progress.refresh()
        epoch_line = screen(out.getvalue())[-1]
    assert "rank [7]" in epoch_line and "rank [19]" not in epoch_line
