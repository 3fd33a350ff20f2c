"""A study report's heatmaps of a grid over two parameters besides the seed: one per metric, each cell the mean over
the cell's trials with its count, a censored cell marked; no heatmap where one, or three, parameters vary.

Trials are written straight into a SQLite storage (shaped as study.trial_attributes records them): no training.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
from PIL import Image

from rankprune.classes import trials_frame
from rankprune.report import FIGURES, render
from rankprune.report.study import grid_parameters, heatmap_table
from test_report import attributes, check_figures, links, section

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

HEATMAPS = {"heatmap-test_acc", "heatmap-test_loss", "heatmap-val_acc", "heatmap-total_width"}
SPACE = {"width": optuna.distributions.IntDistribution(16, 32, step=16),
         "train.lr": optuna.distributions.CategoricalDistribution([0.05, 0.1]),
         "seed": optuna.distributions.CategoricalDistribution([0, 1]),
         "train.batch_size": optuna.distributions.CategoricalDistribution([64])}  # held at one value: not varied


def grid_trials() -> list[dict]:
    """width x train.lr x seed, 8 trials; trial (32, 0.1, seed 1) kept its initial width: censored."""
    trials = []
    for width in (16, 32):
        for lr in (0.05, 0.1):
            for seed in (0, 1):
                number = len(trials)
                acc = 0.80 + width / 1000 + lr / 10 + seed / 100
                chosen = [width // 2 + seed]
                censored = [None]
                if (width, lr, seed) == (32, 0.1, 1):
                    chosen, censored = [32], ["initial"]
                attrs = {**attributes(number, [chosen[0] - 2], chosen, acc, Path("gone") / f"trial-{number}"),
                         "initial_widths": [width], "val_acc": acc - 0.01, "test_loss": 1.0 - acc + seed / 50,
                         "censored": censored}
                trials.append({"params": {"width": width, "train.lr": lr, "seed": seed, "train.batch_size": 64},
                               "value": acc, "attrs": attrs})
    return trials


def write_study(url: str, name: str, trials: list[dict], mode: str = "evolve") -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    study.set_metric_names(["test_acc"])
    study.set_user_attr("mode", mode)
    for t in trials:
        study.add_trial(optuna.trial.create_trial(params=t["params"], distributions={k: SPACE[k] for k in t["params"]},
                                                  value=t["value"], user_attrs=t["attrs"]))
    return study


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> tuple[optuna.Study, Path]:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    root = tmp_path_factory.mktemp("grid")
    url = f"sqlite:///{root / 'grid.sqlite3'}"
    study = write_study(url, "grid", grid_trials())
    return study, render("grid", root / "out", storage=url)


def test_a_two_parameter_grid_gets_a_linked_png_heatmap_per_metric(grid):
    _, report = grid
    names = check_figures(report)  # every figure a valid PNG, linked once, nothing unlinked
    assert HEATMAPS <= names
    for name in HEATMAPS:
        assert f"({FIGURES}/{name}.png)" in report.read_text()
        with Image.open(report.parent / FIGURES / f"{name}.png") as im:
            im.verify()
    text = section(report, "The grid: width by train.lr")
    assert "Figure not drawn" not in report.read_text()
    assert "censored, bounds not measurements" in text  # the note under a figure with a censored cell


def test_the_heatmap_cells_are_the_means_of_the_trials_at_each_pair(grid):
    study, _ = grid
    frame = trials_frame(study)
    assert grid_parameters(frame) == ["width", "train.lr"]
    rows = pd.DataFrame([{**t["params"], **t["attrs"]} for t in grid_trials()])
    for metric in ("test_acc", "test_loss", "val_acc"):
        table = heatmap_table(frame, "width", "train.lr", metric)
        assert list(zip(table["width"], table["train.lr"])) == [(16, 0.05), (16, 0.1), (32, 0.05), (32, 0.1)]
        for cell in table.to_dict("records"):
            at = rows[(rows["width"] == cell["width"]) & (rows["train.lr"] == cell["train.lr"])]
            assert cell["n"] == 2
            assert cell["mean"] == pytest.approx(at[metric].mean())
    widths = heatmap_table(frame, "width", "train.lr", "total_width")
    assert widths["mean"].tolist() == pytest.approx([8.5, 8.5, 16.5, 24.0])  # (16 + 32) / 2 where one kept its width
    assert widths["censored"].tolist() == [0, 0, 0, 1]
    assert widths["side"].tolist() == [None, None, None, ">="]


def test_a_survey_cell_is_censored_where_a_rank_reached_its_width():
    frame = pd.DataFrame([{"number": 0, "param_width": 8, "param_depth": 1, "widths": [8], "ranks": [8],
                           "censored": ["initial"], "network_rank_sum": 8},
                          {"number": 1, "param_width": 8, "param_depth": 2, "widths": [8, 8], "ranks": [5, 4],
                           "censored": ["initial", "initial"], "network_rank_sum": 9}])
    table = heatmap_table(frame, "width", "depth", "network_rank_sum", mode="survey")
    assert table[["depth", "mean", "n", "censored", "side"]].values.tolist() == [[1, 8.0, 1, 1, ">="], [2, 9.0, 1, 0, None]]


def test_one_or_three_varied_parameters_get_no_heatmap(tmp_path):
    trials = grid_trials()
    one = [t for t in trials if t["params"]["train.lr"] == 0.05]  # width and the seed
    three = [{**t, "params": {**t["params"], "train.batch_size": 64 if t["params"]["seed"] else 32}} for t in trials]
    SPACE["train.batch_size"] = optuna.distributions.CategoricalDistribution([32, 64])
    try:
        for name, chosen in (("one", one), ("three", three)):
            url = f"sqlite:///{tmp_path / f'{name}.sqlite3'}"
            study = write_study(url, name, chosen)
            assert grid_parameters(trials_frame(study)) is None
            report = render(name, tmp_path / name, storage=url)
            assert not any(Path(link).stem.startswith("heatmap-") for link in links(report))
            assert "## The grid" not in report.read_text()
    finally:
        SPACE["train.batch_size"] = optuna.distributions.CategoricalDistribution([64])
