"""`rankprune report`: Markdown and PNG figures from real run folders (finished, interrupted, empty) and
from a real tiny study; what cannot be reported on is a one-line ConfigError.

Runs and the study are made by the real controller on digits (width 32, 2-3 epochs); each is rendered
once per module and shared by the tests that read it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from PIL import Image

from rankprune.classes import trials_frame
from rankprune.config import ConfigError
from rankprune.report import DIGITS_IMAGES, FIGURES, PUBLISHED, REPORT, render, training_data
from rankprune.runfolder import CONFIG, DEPTHS, EPOCHS, ITERATIONS, STATUS, RunFolder
from rankprune.study import default_storage, parse_spec, run_study
from studyfiles import tiny_study_toml

# study.py filters these at import; pytest restores the filters for every test.
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def links(report: Path) -> list[str]:
    return LINK.findall(report.read_text())


def check_figures(report: Path) -> set[str]:
    """Every figure is a readable, non-empty PNG; the report links each one, and each link exists.
    Returns the figure names (file stems)."""
    out = report.parent
    linked = links(report)
    assert len(linked) == len(set(linked)), "a figure is linked twice"
    assert all(not Path(link).is_absolute() and link.startswith(f"{FIGURES}/") for link in linked)
    on_disk = {p.relative_to(out).as_posix() for p in (out / FIGURES).glob("*")} if (out / FIGURES).is_dir() else set()
    assert set(linked) == on_disk
    for link in linked:
        path = out / link
        assert path.read_bytes()[:8] == PNG_MAGIC
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 100 and im.height > 100
    return {Path(link).stem for link in linked}


def section(report: Path, heading: str) -> str:
    """The text of one '## heading' section."""
    text = report.read_text()
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start: end if end != -1 else None]


def table_rows(text: str) -> list[list[str]]:
    """Body rows of the first Markdown table in `text`, as stripped cells."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


# --- a finished run ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_config, run_controller) -> tuple[RunFolder, Path]:
    run = run_controller(tiny_config(), tmp_path_factory.mktemp("finished") / "run")
    return run, render(run.path)


def test_a_run_report_draws_every_figure_as_a_linked_png(finished):
    run, report = finished
    assert report == run.path / "report" / REPORT
    names = check_figures(report)
    assert names == {"accuracy-seconds", "accuracy-flops", "widths", "ranks-depth-1", "ranks-depth-2",
                     "spectra-depth-1", "spectra-depth-2", "rebuild-error"}
    text = report.read_text()
    assert "Figure not drawn" not in text
    assert "## What is missing" not in text  # a finished run lacks nothing
    for knob_section in ("Memorisation", "unseen tasks", "N_Delta"):  # nothing for knobs the run did not turn
        assert knob_section not in text
    # every figure has a one-line caption right after it
    for link in links(report):
        after = text.split(f"({link})", 1)[1].lstrip("\n").splitlines()[0]
        assert after.startswith("*") and after.endswith("*") and "Look for" in after


def test_a_run_report_tables_every_iteration_and_depth(finished):
    run, report = finished
    iterations = run.rows(ITERATIONS)
    rows = table_rows(section(report, "Iterations"))
    assert [(int(r[0]), int(r[1])) for r in rows] == [(r["depth"], r["iteration"]) for r in iterations]
    depths = run.read(DEPTHS)
    rows = table_rows(section(report, "Depths"))
    assert [r[0] for r in rows] == sorted(depths, key=int)
    assert [r[3] for r in rows] == [str(depths[d]["chosen_iteration"]) for d in sorted(depths, key=int)]


def test_the_depth_table_gives_cumulative_compute_in_tflop_as_the_cli_does(finished):
    from rankprune.units import tflop

    run, report = finished
    depths = run.read(DEPTHS)
    text = section(report, "Depths")
    header = [c.strip() for c in next(line for line in text.splitlines() if line.startswith("|")).strip("|").split("|")]
    assert "cumulative train time (s)" in header and not any("GFLOP" in c for c in header)
    column = header.index("cumulative compute (TFLOP)")
    cells = [r[column] for r in table_rows(text)]
    assert cells == [tflop(depths[d]["cumulative_flops"]) for d in sorted(depths, key=int)]
    assert all(float(c) > 0 for c in cells)  # a digits run (about 1e9 FLOPs) is not rounded to 0.00


def test_the_reference_puts_the_best_chosen_network_beside_lenet(finished):
    run, report = finished
    best = max(run.read(DEPTHS).values(), key=lambda s: s["val_acc"])  # chosen on validation, never on test
    text = section(report, "Reference")
    rows = table_rows(text)
    assert [r[1] for r in rows[: len(PUBLISHED)]] == ["266,610", "about 22,000"]
    assert [r[2] for r in rows[: len(PUBLISHED)]] == ["1.64", "1.59"]
    ours = rows[len(PUBLISHED)]
    assert f"depth {best['depth']}" in ours[0]
    assert ours[1] == f"{best['parameters']:,}"
    assert ours[2] == f"{100 * (1 - best['test_acc']):.2f}"
    assert "**Caveat:**" in text and "not MNIST: not directly comparable" in text


# --- a run that stopped partway, and one that never started --------------------------------------
def started_run(path: Path, cfg) -> RunFolder:
    """A run folder as the CLI leaves it before the first epoch: config.json and nothing else."""
    run = RunFolder(path)
    run.create(overwrite=False)
    run.write(CONFIG, cfg.to_dict())
    return run


class InterruptAt:
    """A reporter that raises KeyboardInterrupt (Ctrl-C) after the given epoch, as the CLI would see it."""

    def __init__(self, depth: int, iteration: int, epoch: int):
        self.at = (depth, iteration, epoch)

    def depth_started(self, *a): pass
    def iteration_started(self, *a): pass
    def iteration_done(self, *a): pass
    def depth_done(self, *a): pass

    def epoch_done(self, depth, iteration, row):
        if (depth, iteration, row["epoch"]) == self.at:
            raise KeyboardInterrupt


def test_an_interrupted_run_renders_what_it_has_and_names_what_is_missing(tmp_path, tiny_config, run_controller):
    path = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_controller(tiny_config(evolve={"max_iterations": 2}), path, InterruptAt(depth=2, iteration=1, epoch=2))
    run = RunFolder(path)
    where = run.read(STATUS)
    where.pop("state")
    run.set_status("interrupted", **where)  # as cli._run_evolve records a Ctrl-C
    with (path / EPOCHS).open("a") as fh:
        fh.write('{"depth": 2, "iteration": 1, "epo')  # killed mid-write

    report = render(path)
    names = check_figures(report)
    # depth 2's unfinished iteration 1 has epochs (curves, rank traces, a width) but no spectra: those of
    # its iteration 0 are drawn
    assert {"accuracy-seconds", "accuracy-flops", "widths", "ranks-depth-1", "ranks-depth-2", "spectra-depth-1",
            "spectra-depth-2", "rebuild-error"} == names  # depth 1's iteration 1 began from a warm rebuild
    missing = section(report, "What is missing")
    assert "interrupted at depth 2, iteration 1" in missing and "--resume" in missing
    assert "depth 2 has not finished (finished iterations: 0)" in missing
    assert "depth 2, iteration 1: 2 epoch(s) recorded but the iteration did not finish" in missing
    assert f"{EPOCHS} ends in 1 torn line(s)" in missing
    assert list(run.read(DEPTHS)) == ["1"]
    rows = table_rows(section(report, "Iterations"))
    assert [(r[0], r[1]) for r in rows] == [("1", "0"), ("1", "1"), ("2", "0")]


def test_a_run_folder_holding_only_its_config_renders_a_report_of_what_is_missing(tmp_path, tiny_config):
    run = started_run(tmp_path / "run", tiny_config())
    report = render(run.path)
    assert check_figures(report) == set()
    missing = section(report, "What is missing")
    for expected in (f"no {STATUS}", "no epochs yet", "no finished iteration yet", "no spectra yet",
                     f"no {DEPTHS} yet", "depth 1 has not finished (no iteration finished)", "depth 2 has not finished"):
        assert expected in missing
    assert "No finished network yet" in section(report, "Reference")
    assert "data.dataset" in section(report, "Configuration")


def test_a_running_run_is_reported_as_a_snapshot(tmp_path, tiny_config):
    run = started_run(tmp_path / "run", tiny_config())
    run.set_status("running", depth=1, iteration=0)
    assert "says running at depth 1, iteration 0" in section(render(run.path), "What is missing")


def test_rendering_into_a_used_folder_drops_stale_figures_and_leaves_no_temporary_files(tmp_path, tiny_config):
    run = started_run(tmp_path / "run", tiny_config())
    out = tmp_path / "elsewhere"
    (out / FIGURES).mkdir(parents=True)
    (out / FIGURES / "old-figure.png").write_bytes(PNG_MAGIC)
    (out / FIGURES / "my-own-plot.png").write_bytes(PNG_MAGIC)  # the user's, never linked by a report
    (out / REPORT).write_text("an old report\n\n![old](figures/old-figure.png)\n")
    report = render(run.path, out)
    assert report == out / REPORT and report.read_text().startswith("# Run report")
    assert not (out / FIGURES / "old-figure.png").exists()
    assert (out / FIGURES / "my-own-plot.png").read_bytes() == PNG_MAGIC
    assert not list(out.rglob("*.tmp"))


def test_report_out_refuses_a_folder_of_other_files_and_touches_nothing(tmp_path, tiny_config):
    run = started_run(tmp_path / "run", tiny_config())
    out = tmp_path / "papers"
    (out / FIGURES).mkdir(parents=True)
    (out / FIGURES / "fig1.png").write_bytes(PNG_MAGIC)
    (out / "draft.md").write_text("mine")
    with pytest.raises(ConfigError, match="holds other files"):
        render(run.path, out)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["draft.md", FIGURES, f"{FIGURES}/fig1.png"]


def test_a_diverged_iteration_stored_as_nulls_still_draws(tmp_path):
    """A diverged network measures as NaN, which a run folder stores as null (JSON has no NaN)."""
    from rankprune import figures

    epochs = pd.DataFrame([
        {"depth": 1, "iteration": 0, "epoch": 1, "widths": [8], "rank_numerical": [8.0, 4.0]},
        {"depth": 1, "iteration": 1, "epoch": 1, "widths": [8], "rank_numerical": [None, None]},
    ])
    spectra = pd.DataFrame([
        {"depth": 1, "iteration": 0, "layer": 0, "singular_values": [2.0, 1.0, 0.0]},
        {"depth": 1, "iteration": 1, "layer": 0, "singular_values": [None, None, None]},
    ])
    for name, fig in (("ranks", figures.ranks_across_epochs(epochs, ["numerical"], "numerical")),
                      ("spectra", figures.spectra_per_iteration(spectra, rtol=0.1))):
        figures.save(fig, tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG_MAGIC


# --- what is not a run or a study -------------------------------------------------------------------
def test_a_path_that_is_neither_a_run_nor_a_study_is_a_one_line_config_error(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / CONFIG).write_text("{not json")
    cases = {
        str(tmp_path / "nowhere"): "no such folder",
        str(tmp_path / "folder"): f"holds no {CONFIG}",
        str(tmp_path / "file.txt"): "not a folder",
        "no_such_study": "no study storage",
        str(tmp_path / "broken"): "not valid JSON",
    }
    for target, names in cases.items():
        with pytest.raises(ConfigError) as info:
            render(target, root=tmp_path)
        assert names in str(info.value) and "\n" not in str(info.value), target
    assert not (tmp_path / "studies.sqlite3").exists()  # looking for a study created no database
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        render(tmp_path / "broken", tmp_path / "file.txt")


# --- a study ----------------------------------------------------------------------------------------
STUDY = tiny_study_toml("tiny", n_trials=4, objectives=[("test_acc", "maximize"), ("network_rank_normalized", "minimize")])


@pytest.fixture(scope="module")
def study_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    (root / "tiny.toml").write_text(STUDY)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    run_study(parse_spec(root / "tiny.toml"), default_storage(root), root, n_trials=4)
    return root


@pytest.fixture(scope="module")
def study_report(study_root) -> Path:
    """The study's report, through the CLI, its classes formed as `study classes tiny --by sum --tol 8` forms
    them (the default, by vector within 0, is what the single-objective study below is reported with)."""
    from rankprune.cli import main

    # found in the default storage under --root
    assert main(["report", "tiny", "--root", str(study_root), "--by", "sum", "--tol", "8"]) == 0
    return study_root / "reports" / "tiny" / REPORT


def test_a_study_report_draws_rank_figures_optuna_plots_and_the_class_table(study_root, study_report):
    report = study_report
    names = check_figures(report)
    assert {"rank-vs-test-acc", "rank-vs-gap", "optuna-history-test_acc", "optuna-history-network_rank_normalized",
            "optuna-pareto", "optuna-importances"} <= names
    assert "Figure not drawn" not in report.read_text()

    df = trials_frame(optuna.load_study(study_name="tiny", storage=default_storage(study_root)))
    classes = table_rows(section(report, "Equivalence classes"))
    assert sum(int(r[2]) for r in classes) == len(df)  # every finished trial is in one class
    assert sorted(int(m) for r in classes for m in r[3].split(", ")) == sorted(df["number"])
    trials = table_rows(section(report, "Trials"))
    assert sorted(int(r[0]) for r in trials) == sorted(df["number"])
    best = df.loc[df["val_acc"].idxmax()]
    assert f"trial #{best['number']}" in section(report, "Reference")
    # a survey trains each network once: nothing in its report may call it shrunk or convergent
    text = report.read_text().lower()
    assert "rank-pruned" not in text and "convergent" not in text
    assert "not shrunk" in section(report, "Reference")


def test_a_study_report_forms_its_classes_as_study_classes_does_with_the_same_by_and_tol(study_root, study_report):
    from rankprune.classes import BY, class_table
    from rankprune.report.study import CLASSES_BY

    assert tuple(CLASSES_BY) == tuple(BY)
    df = trials_frame(optuna.load_study(study_name="tiny", storage=default_storage(study_root)))
    expected = class_table(df, "sum", 8.0)
    assert len(expected) < len(class_table(df))  # the tolerance merges classes: the default would not pass
    text = section(study_report, "Equivalence classes")
    assert "--by sum --tol 8" in text
    assert [(r[1], r[3]) for r in table_rows(text)] == list(zip(expected["signature"], expected["members"]))
    with pytest.raises(ConfigError, match="--tol must be non-negative"):
        render("tiny", root=study_root, by="sum", tol=-1)
    with pytest.raises(ConfigError, match="--by must be one of"):
        render("tiny", root=study_root, by="product")


def test_optunas_plots_draw_accuracies_in_percent_in_the_reports_own_style(study_root):
    import matplotlib
    import matplotlib.pyplot as plt

    from rankprune.report.gather import read_study
    from rankprune.report.study import _history, _pareto

    study = optuna.load_study(study_name="tiny", storage=default_storage(study_root))
    accuracies = 100 * trials_frame(study)["test_acc"]
    s = read_study(study, default_storage(study_root))
    before = set(plt.get_fignums())
    with matplotlib.rc_context():  # Optuna switches pyplot's style to ggplot: keep it from the other tests
        history, pareto = _history(s, 0), _pareto(s)
        for fig, ax, values in ((history, history.axes[0], "y"), (pareto, pareto.axes[0], "x")):
            label = ax.get_ylabel() if values == "y" else ax.get_xlabel()
            low, high = ax.get_ylim() if values == "y" else ax.get_xlim()
            assert "%" in label and low <= accuracies.min() and high >= accuracies.max() > 1, label
            assert matplotlib.colors.same_color(ax.get_facecolor(), "white")
            assert matplotlib.colors.same_color(fig.get_facecolor(), "white")
    for number in set(plt.get_fignums()) - before:
        plt.close(number)


def test_importances_from_few_trials_carry_a_sample_size_caveat(study_report):
    text = section(study_report, "Optuna's plots")
    caption = text.split("(figures/optuna-importances.png)", 1)[1].strip().splitlines()[0]
    assert "Caveat: 4 completed trials for 4 sampled parameters" in caption and "noise" in caption


def test_the_best_network_is_chosen_on_validation_and_reported_on_test():
    from rankprune.report import _best_of_run

    depths = {
        "1": {"depth": 1, "widths": [30], "chosen_iteration": 2, "parameters": 2000, "initial_parameters": 4000,
              "iterations": 3, "val_acc": 0.95, "test_acc": 0.93},
        "2": {"depth": 2, "widths": [30, 20], "chosen_iteration": 1, "parameters": 3000, "initial_parameters": 6000,
              "iterations": 2, "val_acc": 0.94, "test_acc": 0.97},  # the test set would pick this one
    }
    best = _best_of_run(depths, pd.DataFrame())
    assert "depth 1" in best["network"] and best["test_acc"] == 0.93
    assert best["pruning"].startswith("rank-pruned")
    once = {"1": {**depths["1"], "iterations": 1, "parameters": 4000}}
    assert "not shrunk" in _best_of_run(once, pd.DataFrame())["pruning"]


def test_training_data_reads_the_sizes_the_run_recorded(tmp_path):
    described = {"n_train": 7_200, "n_val": 800, "n_test": 2_000, "n_train_pool": 8_000}
    td = training_data({"dataset": "mnist", "data_dir": str(tmp_path / "gone")}, described)  # files not here
    assert td.images == 7_200 and td.test_images == 2_000 and not td.comparable
    assert "7,200 images of a 10k MNIST subset" in td.note


def attributes(number: int, ranks: list[int], widths: list[int], test_acc: float, run_folder: Path) -> dict:
    """A finished trial's user attributes, shaped as study.trial_attributes records them."""
    return {
        "initial_widths": widths, "widths": widths, "depth": len(widths), "rank_measure": "numerical:0.2",
        "ranks": ranks, "layer_ranks": {}, "network_rank_sum": sum(ranks),
        "network_rank_normalized": sum(ranks) / sum(widths), "network_rank_min": min(ranks),
        "rank_parameters": 1000 + number, "parameters": 64 * widths[0] + 100 * number, "train_acc": test_acc + 0.02,
        "val_acc": test_acc, "test_acc": test_acc, "train_loss": 0.2, "test_loss": 0.3, "generalisation_gap": 0.02,
        "epochs": 4, "iterations": 2, "stop_reason": "fixed-point", "cumulative_seconds": 1.5,
        "cumulative_flops": 1e8, "run_folder": str(run_folder),
    }


def test_a_single_objective_study_draws_its_history_and_importances(tmp_path):
    """Trials written straight into the storage: no run folders, so the data caveat says it cannot check."""
    url = f"sqlite:///{tmp_path / 'elsewhere.sqlite3'}"
    study = optuna.create_study(study_name="single", storage=url, direction="maximize")
    study.set_metric_names(["test_acc"])
    space = {"width": optuna.distributions.IntDistribution(8, 32), "train.lr": optuna.distributions.FloatDistribution(0.01, 0.1)}
    for number, (width, lr, ranks, acc) in enumerate([(16, 0.02, [9], 0.90), (32, 0.05, [9], 0.93), (24, 0.08, [12], 0.91)]):
        study.add_trial(optuna.trial.create_trial(
            params={"width": width, "train.lr": lr}, distributions=space, value=acc,
            user_attrs=attributes(number, ranks, [width], acc, tmp_path / "gone" / f"trial-{number}")))
    report = render("single", tmp_path / "out", storage=url)
    assert report == tmp_path / "out" / REPORT
    # width and train.lr vary (no seed): a heatmap per metric of the grid of their values (test_report_heatmaps.py)
    heatmaps = {f"heatmap-{m}" for m in ("test_acc", "test_loss", "val_acc", "total_width")}
    assert check_figures(report) == {"rank-vs-test-acc", "rank-vs-gap", "optuna-history", "optuna-importances"} | heatmaps
    classes = table_rows(section(report, "Equivalence classes"))
    assert [(r[1], r[3]) for r in classes] == [("[9]", "0, 1"), ("[12]", "2")]
    reference = section(report, "Reference")
    assert "trial #1" in reference and "cannot be checked" in reference


def test_a_study_optimising_test_accuracy_carries_a_visible_warning(study_report):
    header = study_report.read_text().split("\n## ", 1)[0]  # above every section
    assert "> **Warning: objective test_acc is measured on the test split" in header


# Four trials of a study that optimised test accuracy and the rank sum: on test, #0 dominates every other trial;
# on validation, #1 and #2 form the front. (number, rank sum, val acc, test acc, chosen widths, censored)
FRONT_TRIALS = [(0, 10, 0.90, 0.97, [10], [None]), (1, 10, 0.95, 0.92, [64], ["input"]),
                (2, 20, 0.97, 0.93, [20], [None]), (3, 20, 0.93, 0.96, [20], [None])]


def front_study(url: str, name: str, first: str) -> None:
    study = optuna.create_study(study_name=name, storage=url, directions=["maximize", "minimize"])
    study.set_metric_names([first, "network_rank_sum"])
    study.set_user_attr("mode", "evolve")
    space = {"width": optuna.distributions.IntDistribution(8, 64)}
    for number, rank, val, test, widths, censored in FRONT_TRIALS:
        attrs = {**attributes(number, [rank], widths, test, Path("gone") / f"trial-{number}"), "val_acc": val,
                 "censored": censored, "initial_widths": [64]}
        study.add_trial(optuna.trial.create_trial(params={"width": 8 + number}, distributions=space,
                                                  values=[attrs[first], rank], user_attrs=attrs))


@pytest.mark.parametrize("first", ["test_acc", "val_acc"])
def test_the_pareto_front_and_the_best_trial_are_chosen_on_validation_and_shown_with_test(tmp_path, first):
    url = f"sqlite:///{tmp_path / 'front.sqlite3'}"
    front_study(url, "front", first)
    report = render("front", tmp_path / "out", storage=url)
    header = report.read_text().split("\n## ", 1)[0]
    assert ("Warning: objective test_acc" in header) == (first == "test_acc")
    text = section(report, "Pareto front, chosen on validation")
    assert ("replaces test_acc by val_acc" in text) == (first == "test_acc")
    rows = table_rows(text)
    assert [r[0] for r in rows] == ["2", "1"]  # not #0, which test accuracy would put alone on the front
    header_cells = [c.strip() for c in text.splitlines()[[i for i, line in enumerate(text.splitlines())
                                                         if line.startswith("|")][0]].strip("|").split("|")]
    test_acc, widths = header_cells.index("test acc %"), header_cells.index("widths")
    assert [r[test_acc] for r in rows] == ["93.00", "92.00"]
    assert [r[widths] for r in rows] == ["[20]", "[>= 64]"]  # a censored width as a bound
    assert "trial #2" in section(report, "Reference")  # the best on validation, not #0
    trials = {r[0]: r for r in table_rows(section(report, "Trials"))}
    assert "[>= 64]" in trials["1"] and "[10]" in trials["0"]
    classes = section(report, "Equivalence classes")
    assert "#1 [>= 64]" in classes


def test_a_study_without_finished_trials_renders_and_says_so(tmp_path):
    url = default_storage(tmp_path)
    study = optuna.create_study(study_name="failing", storage=url)

    def objective(trial):
        trial.set_user_attr("fail_reason", "invalid architecture: depth 2, widths [4, 0]")
        raise ValueError("invalid")

    study.optimize(objective, n_trials=1, catch=(ValueError,))
    optuna.create_study(study_name="empty", storage=url)
    failing = render("failing", root=tmp_path)
    assert check_figures(failing) == set()
    assert "no finished trial yet" in section(failing, "What is missing")
    assert "widths [4, 0]" in section(failing, "Failed trials")
    assert "No completed trial" in section(failing, "Optuna")
    assert "no trials yet" in section(render("empty", root=tmp_path), "What is missing")


def test_an_unknown_study_names_the_studies_the_storage_has(study_root):
    with pytest.raises(ConfigError, match=r"no study 'nope'.*it has: tiny"):
        render("nope", root=study_root)


def test_storage_with_a_run_folder_is_an_error(finished, study_root):
    run, _ = finished
    with pytest.raises(ConfigError, match="--storage applies to a study"):
        render(run.path, storage=default_storage(study_root))


# --- training data against the published MNIST figures ----------------------------------------------
def fake_mnist(root: Path, train: int, test: int) -> Path:
    """IDX headers only: what training_data reads to count images."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, n in (("train-images-idx3-ubyte", train), ("t10k-images-idx3-ubyte", test)):
        (raw / name).write_bytes((2051).to_bytes(4, "big") + n.to_bytes(4, "big"))
    return root


def test_training_data_names_what_is_not_full_mnist(tmp_path):
    subset = fake_mnist(tmp_path / "subset", 8_000, 2_000)
    full = fake_mnist(tmp_path / "full", 60_000, 10_000)
    td = training_data({"dataset": "mnist", "data_dir": str(subset)})
    assert not td.comparable and td.images == 7_200
    assert "7,200 images of a 10k MNIST subset, not the 60k training set: not directly comparable" in td.note
    td = training_data({"dataset": "mnist", "data_dir": str(full), "train_fraction": 0.5})
    assert not td.comparable and td.images == 27_000 and "0.5 fraction of the 60k" in td.note
    td = training_data({"dataset": "mnist", "data_dir": str(full)})
    assert td.comparable and td.images == 54_000 and td.test_images == 10_000
    assert not training_data({"dataset": "mnist", "data_dir": str(tmp_path / "none")}).comparable
    assert "not MNIST" in training_data({"dataset": "fashion-mnist", "data_dir": str(full)}).note


def test_the_digits_count_matches_scikit_learn():
    from sklearn.datasets import load_digits

    assert len(load_digits().target) == DIGITS_IMAGES


# --- the import direction ---------------------------------------------------------------------------
def test_report_never_imports_train(tmp_path, tiny_config):
    run = started_run(tmp_path / "run", tiny_config())
    code = ("import sys; from rankprune.report import render; render(sys.argv[1]); "
            "assert 'rankprune.train' not in sys.modules, 'report imported train'")
    done = subprocess.run([sys.executable, "-c", code, str(run.path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_report_cli_is_one_line_and_exit_2_for_a_path_that_is_neither_run_nor_study(tmp_path, capsys):
    from rankprune.cli import main

    assert main(["report", str(tmp_path / "nope"), "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rankprune report: error:")


def test_a_warm_run_reports_its_annealed_full_width_reference(tmp_path, tiny_config, run_controller):
    """Iteration 0 of a warm run stops at its first plateau: the depth table puts the annealed copy beside it."""
    run = run_controller(tiny_config(evolve={"layers": (1,), "rebuild": "warm"}, train={"lr_drops": 1}), tmp_path / "run")
    summary = run.read(DEPTHS)["1"]
    report = render(run.path)
    text = section(report, "Depths")
    header = [c.strip() for c in next(line for line in text.splitlines() if line.startswith("|")).strip("|").split("|")]
    cell = table_rows(text)[0][header.index("test acc %: initial -> chosen")]
    assert f"(annealed {100 * summary['reference_test_acc']:.2f})" in cell, cell


def test_the_importances_leave_the_seed_out(tmp_path, monkeypatch):
    """The seed is the unit of replication: fANOVA is asked about the sampled settings only."""
    import optuna.visualization.matplotlib as om

    asked = []
    real = om.plot_param_importances
    monkeypatch.setattr(om, "plot_param_importances", lambda study, **kw: asked.append(kw.get("params")) or real(study, **kw))
    url = f"sqlite:///{tmp_path / 'seeded.sqlite3'}"
    study = optuna.create_study(study_name="seeded", storage=url, direction="maximize")
    study.set_metric_names(["test_acc"])
    space = {"width": optuna.distributions.IntDistribution(8, 32), "seed": optuna.distributions.IntDistribution(0, 2)}
    for number, (width, seed, acc) in enumerate([(16, 0, 0.90), (32, 1, 0.93), (24, 2, 0.91), (8, 0, 0.85)]):
        study.add_trial(optuna.trial.create_trial(
            params={"width": width, "seed": seed}, distributions=space, value=acc,
            user_attrs=attributes(number, [9], [width], acc, tmp_path / "gone" / f"trial-{number}")))
    report = render("seeded", tmp_path / "out", storage=url)
    assert asked == [["width"]]
    assert "optuna-importances" in check_figures(report) and "The seed, the unit of replication, is left out" in report.read_text()
