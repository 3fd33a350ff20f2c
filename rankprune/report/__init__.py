"""Reports: a run folder or an Optuna study -> a Markdown file with PNG (or SVG, PDF) figures.

    DIR/report.md          the report; every figure is linked by its relative path
    DIR/figures/*.png      the figures (matplotlib, rendered headless by Agg; svg or pdf with fmt=)

A run folder (a folder holding rankprune's config.json) is read as it stands: a run still being written, one
that was interrupted, or one that never got past its config renders what is there, and the report
says what is missing. A study is read from its storage; each finished trial's own run folder can
be reported on its own.

The package gathers first, then writes one section at a time:

    gather.py      a run folder -> RunData, a study -> StudyData (every read happens here)
    run.py         the sections of a run report, and render_run
    dynamics.py    a run's training dynamics: weight movement, the Hessian, a regression's fitted function
    tasks.py       what a task knob adds: memorisation (label noise), unseen tasks, N_Delta (hinge loss)
    study.py       the sections of a study report, and render_study
    replicates.py  a replicates folder (evolve --seeds): the spread over seeds, and render_replicates
    reference.py   published MNIST networks and the training-data caveat (both reports)
    document.py    the Markdown document: cell formatting, figure links, stale figures, the out folder
    __init__.py    render: a run or a study, and where the report goes

The figures themselves are pure functions in rankprune.figures and rankprune.figures_dynamics. Never imports
rankprune.train (imports point one way: report -> runfolder/classes/study/config/figures/units).
"""

from __future__ import annotations

import re
from pathlib import Path

from rankprune.config import ConfigError
from rankprune.figures import DPI
from rankprune.report.document import FIGURES, REPORT, _check_figure_options, _check_out
# DIGITS_IMAGES and _best_of_run are not public API: re-exported because tests import them from here.
from rankprune.report.reference import DIGITS_IMAGES, PUBLISHED, Published, TrainingData, training_data
from rankprune.replicates import is_replicates_folder
from rankprune.report.replicates import render_replicates
from rankprune.report.run import _best_of_run, render_run
from rankprune.report.study import CLASSES_BY, render_study
from rankprune.runfolder import CONFIG, RunFolder, is_run_folder

__all__ = [
    "REPORT", "FIGURES", "PUBLISHED", "Published", "TrainingData", "render", "render_run", "render_study",
    "training_data",
]


def render(target: str | Path, out: str | Path | None = None, *, storage: str | None = None,
           root: str | Path = "runs", fmt: str = "png", dpi: float = DPI, by: str | None = None,
           tol: float | None = None, fetcher=None) -> Path:
    """Report on `target`: a run folder if it is a folder holding rankprune's config.json, else a study of that
    name in `storage` (default: the SQLite file under `root`). Default out: TARGET/report for a run,
    ROOT/reports/NAME for a study. Figures are `fmt` files (png, svg, pdf) at `dpi`. A study's equivalence
    classes group trials `by` "vector" (default), "sum" or "normalized" within `tol` (default 0), as
    `rankprune study classes` does. Returns the path of report.md; anything that is neither a run nor a study,
    or a bad option, is a one-line ConfigError raised before anything is written."""
    _check_figure_options(fmt, dpi)
    _check_classes(by, tol)
    if out is not None:
        _check_out(Path(out))
    path = Path(target)
    figure_options = {"fmt": fmt, "dpi": dpi}
    if is_replicates_folder(path):  # evolve --seeds: the spread over seeds
        _study_only(path, "a replicates folder", storage, by, tol)
        out = Path(out) if out is not None else path / "report"
        _check_out(out)
        return render_replicates(path, out, **figure_options)
    if (path / CONFIG).is_file():
        if not is_run_folder(path):  # a user's folder with a config.json of its own: not ours to write into
            raise ConfigError(f"{path} is not a rankprune run folder: its {CONFIG} is not a rankprune config "
                              f"({_config_problem(path)}); nothing written")
        _study_only(path, "a run folder", storage, by, tol)
        out = Path(out) if out is not None else path / "report"
        _check_out(out)
        return render_run(RunFolder(path), out, **figure_options)

    name = str(target)
    not_run = f"{name} is not a run folder (" + (f"it holds no {CONFIG})" if path.is_dir() else
                                                  "not a folder)" if path.exists() else "no such folder)")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(not_run)
    from rankprune.study import default_storage, load_study

    url = storage or default_storage(root)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        # open_storage would create an empty database; a report must not
        raise ConfigError(f"{not_run} and no study storage is at {url.removeprefix('sqlite:///')}; "
                          "for a study pass --storage URL or --root")
    try:
        study = load_study(name, url, read_only=True)
    except ConfigError as exc:
        raise ConfigError(f"{not_run} nor a study: {exc}") from None
    out = Path(out) if out is not None else Path(root) / "reports" / name
    _check_out(out)
    return render_study(study, out, url, by=by or "vector", tol=0.0 if tol is None else tol, root=root, fetcher=fetcher,
                        **figure_options)


def _check_classes(by: str | None, tol: float | None) -> None:
    if by is not None and by not in CLASSES_BY:
        raise ConfigError(f"--by must be one of {', '.join(CLASSES_BY)}, got {by!r}")
    if tol is not None and not tol >= 0:
        raise ConfigError(f"--tol must be non-negative, got {tol:g}")


def _study_only(path: Path, what: str, storage: str | None, by: str | None, tol: float | None) -> None:
    """--storage, --by and --tol say how to read a study; given with a folder they are a mistake, not ignored."""
    given = [flag for flag, value in (("--storage", storage), ("--by", by), ("--tol", tol)) if value is not None]
    if given:
        raise ConfigError(f"{path} is {what}; {' and '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to a study name")


def _config_problem(path: Path) -> str:
    """Why a config.json is not rankprune's, in a few words."""
    import json

    try:
        doc = json.loads((path / CONFIG).read_text())
    except (OSError, ValueError) as exc:
        return f"not valid JSON: {exc}"
    if not isinstance(doc, dict):
        return "not a JSON object"
    if not doc:
        return "an empty object"
    return "its keys: " + ", ".join(sorted(map(str, doc)))
