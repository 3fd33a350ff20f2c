"""Reports: a run folder or an Optuna study -> a Markdown file with PNG figures.

    DIR/report.md          the report; every figure is linked by its relative path
    DIR/figures/*.png      the figures (matplotlib, rendered headless by Agg)

A run folder (a folder holding config.json) is read as it stands: a run still being written, one
that was interrupted, or one that never got past its config renders what is there, and the report
says what is missing. A study is read from its storage; each finished trial's own run folder can
be reported on its own.

The package gathers first, then writes one section at a time:

    gather.py      a run folder -> RunData, a study -> StudyData (every read happens here)
    run.py         the sections of a run report, and render_run
    study.py       the sections of a study report, and render_study
    replicates.py  a replicates folder (evolve --seeds): the spread over seeds, and render_replicates
    reference.py   published MNIST networks and the training-data caveat (both reports)
    document.py    the Markdown document: cell formatting, figure links, stale figures, the out folder
    __init__.py    render: a run or a study, and where the report goes

The figures themselves are pure functions in rankprune.figures. Never imports rankprune.train (imports
point one way: report -> runfolder/classes/study/config/figures/units).
"""

from __future__ import annotations

import re
from pathlib import Path

from rankprune.config import ConfigError
from rankprune.report.document import FIGURES, REPORT, _check_out
# DIGITS_IMAGES and _best_of_run are not public API: re-exported because tests import them from here.
from rankprune.report.reference import DIGITS_IMAGES, PUBLISHED, Published, TrainingData, training_data
from rankprune.replicates import is_replicates_folder
from rankprune.report.replicates import render_replicates
from rankprune.report.run import _best_of_run, render_run
from rankprune.report.study import render_study
from rankprune.runfolder import CONFIG, RunFolder

__all__ = [
    "REPORT", "FIGURES", "PUBLISHED", "Published", "TrainingData", "render", "render_run", "render_study",
    "training_data",
]


def render(target: str | Path, out: str | Path | None = None, *, storage: str | None = None,
           root: str | Path = "runs") -> Path:
    """Report on `target`: a run folder if it is a folder holding config.json, else a study of that name in
    `storage` (default: the SQLite file under `root`). Default out: TARGET/report for a run, ROOT/reports/NAME
    for a study. Returns the path of report.md; anything that is neither is a one-line ConfigError."""
    if out is not None:
        _check_out(Path(out))
    path = Path(target)
    if is_replicates_folder(path):  # evolve --seeds: the spread over seeds
        if storage is not None:
            raise ConfigError(f"{path} is a replicates folder; --storage applies to a study name")
        out = Path(out) if out is not None else path / "report"
        _check_out(out)
        return render_replicates(path, out)
    if (path / CONFIG).is_file():
        if storage is not None:
            raise ConfigError(f"{path} is a run folder; --storage applies to a study name")
        out = Path(out) if out is not None else path / "report"
        _check_out(out)
        return render_run(RunFolder(path), out)

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
    return render_study(study, out, url)
