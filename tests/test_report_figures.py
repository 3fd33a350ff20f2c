"""What the reports draw for the task knobs, in which file format, and what they refuse (issue 18).

One real run on digits with label noise, augmented tasks and the quadratic hinge (width 8, depth 1, 2
iterations of 2 epochs) is made once and reported once, through the CLI, as SVG: the tests read that report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from rankprune.cli import main
from rankprune.config import ConfigError
from rankprune.report import FIGURES, REPORT, render
from rankprune.runfolder import CONFIG, DEPTHS, RunFolder
from rankprune.units import seconds
from test_report import links, section, started_run, table_rows


@pytest.fixture(scope="module")
def knobs(tmp_path_factory, tiny_config, run_controller) -> tuple[RunFolder, Path]:
    cfg = tiny_config(data={"dataset": "digits", "label_noise": 0.2, "tasks": 2}, train={"loss": "hinge", "max_epochs": 2},
                      model={"width": 8}, evolve={"layers": (1,), "max_iterations": 2})
    run = run_controller(cfg, tmp_path_factory.mktemp("knobs") / "run")
    assert main(["report", str(run.path), "--format", "svg", "--dpi", "150"]) == 0
    return run, run.path / "report" / REPORT


def test_a_run_with_label_noise_tasks_and_the_hinge_gets_a_section_and_figure_for_each(knobs):
    _, report = knobs
    names = {Path(link).stem for link in links(report)}
    assert {"memorisation", "unseen-tasks", "n-delta"} <= names
    assert "relabelled rows" in section(report, "Memorisation of random labels")
    assert "unseen tasks" in section(report, "Accuracy on unseen tasks")
    assert "N_Delta = N" in section(report, "Unsatisfied margins (N_Delta)")
    assert "Figure not drawn" not in report.read_text()


def test_format_svg_links_and_writes_svg_files_only(knobs):
    _, report = knobs
    linked = links(report)
    assert linked and all(link.startswith(f"{FIGURES}/") and link.endswith(".svg") for link in linked)
    on_disk = sorted(p.name for p in (report.parent / FIGURES).iterdir())
    assert on_disk == sorted(Path(link).name for link in linked)
    for link in linked:
        head = (report.parent / link).read_text()[:400]
        assert "<svg" in head


def test_seconds_are_given_in_significant_digits_not_a_column_of_zeros(knobs):
    run, report = knobs
    depths = run.read(DEPTHS)
    text = section(report, "Depths")
    header = [c.strip() for c in next(line for line in text.splitlines() if line.startswith("|")).strip("|").split("|")]
    column = header.index("cumulative train time (s)")
    assert [r[column] for r in table_rows(text)] == [seconds(depths[d]["cumulative_seconds"]) for d in sorted(depths, key=int)]


def test_dpi_sets_the_png_size_and_is_recorded_in_it(tmp_path):
    from matplotlib.figure import Figure

    from rankprune.report.document import _Document

    def draw():
        fig = Figure(figsize=(4, 3))
        fig.add_subplot().plot([0, 1], [0, 1])
        return fig

    sizes = {}
    for dpi in (100, 300):
        doc = _Document(tmp_path / str(dpi), "png", dpi)
        assert doc.figure("line", draw, "a line", "A line.")
        with Image.open(tmp_path / str(dpi) / FIGURES / "line.png") as im:
            sizes[dpi] = im.size
            assert im.info["dpi"] == pytest.approx((dpi, dpi), abs=0.5)
    assert sizes[300][0] == pytest.approx(3 * sizes[100][0], rel=0.03)


def report_cli(*argv: str) -> int:
    """`rankprune report ARGV`'s exit status; argparse exits by itself on a value outside its choices."""
    try:
        return main(["report", *argv])
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("argv, names", [
    (["--format", "tiff"], "--format"),
    (["--dpi", "0"], "--dpi must be between"),
    (["--dpi", "5000"], "--dpi must be between"),
    (["--by", "sum"], "--by applies to a study"),
    (["--tol", "2"], "--tol applies to a study"),
])
def test_bad_report_options_are_one_line_exit_2_and_write_nothing(tmp_path, tiny_config, capsys, argv, names):
    run = started_run(tmp_path / "run", tiny_config())
    before = sorted(p.name for p in run.path.iterdir())
    assert report_cli(str(run.path), *argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rankprune report: error:") and names in err[0], err
    assert sorted(p.name for p in run.path.iterdir()) == before


@pytest.mark.parametrize("config", ["{}", '{"learning_rate": 0.1, "layers": [3]}', "[1, 2]"])
def test_a_folder_whose_config_json_is_not_rankprunes_is_refused_and_left_untouched(tmp_path, capsys, config):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / CONFIG).write_text(config)
    with pytest.raises(ConfigError, match="not a rankprune") as info:
        render(folder)
    assert "\n" not in str(info.value)
    assert report_cli(str(folder)) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG]
    assert (folder / CONFIG).read_text() == config


def test_a_regression_run_folder_reports_r_squared(tmp_path, tiny_config):
    from rankprune import figures
    from rankprune.report.gather import read_run

    run = started_run(tmp_path / "run", tiny_config(data={"dataset": "regression:simple"}, train={"loss": "mse"}))
    assert read_run(run).metric is figures.R_SQUARED
    assert read_run(started_run(tmp_path / "digits", tiny_config())).metric is figures.ACCURACY


def test_a_replicates_report_gives_seconds_in_significant_digits(tmp_path, tiny_config):
    from rankprune.replicates import run_replicates

    base = tiny_config(data={"dataset": "digits", "seed": 0}, model={"width": 8}, train={"max_epochs": 2},
                       evolve={"layers": (1,), "max_iterations": 1})
    run_replicates(base, [0, 1], tmp_path / "reps")
    report = render(tmp_path / "reps")
    per_seed = {int(r[0]): r for r in table_rows(section(report, "Every seed"))}
    header = [c.strip() for c in next(line for line in section(report, "Every seed").splitlines()
                                      if line.startswith("|")).strip("|").split("|")]
    column = header.index("cumulative train s")
    for seed, row in per_seed.items():
        depths = json.loads((tmp_path / "reps" / f"seed-{seed}" / DEPTHS).read_text())
        assert row[column] == seconds(depths["1"]["cumulative_seconds"])
    spread = table_rows(section(report, "The chosen networks over seeds"))[0]
    assert not any(cell.startswith("0.0 ") for cell in spread)  # never "0.0 ± 0.0 (0.0-0.0)"


def test_the_cli_offers_the_formats_and_default_dpi_the_figures_have():
    """cli.py writes them out (importing matplotlib would slow every command's start): they must agree."""
    from rankprune import figures
    from rankprune.cli import build_parser

    args = build_parser().parse_args(["report", "x"])
    assert (args.format, args.dpi, args.by, args.tol) == ("png", figures.DPI, None, None)
    for fmt in figures.FORMATS:
        assert build_parser().parse_args(["report", "x", "--format", fmt]).format == fmt
