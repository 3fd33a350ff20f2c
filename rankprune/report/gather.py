"""Read what a report shows, before any of it is drawn: a run folder -> RunData, a study -> StudyData.

Every read of a run folder or a study's storage happens here, so the section functions are formatting
only. A run folder is read as it stands (running, interrupted, or holding only its config): what is
absent is None or an empty table, and the run report says so.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rankprune.config import ConfigError, RunConfig
from rankprune.figures import Metric, metric_of
from rankprune.runfolder import CONFIG, DATA, DEPTHS, ENVIRONMENT, EPOCHS, HESSIAN, ITERATIONS, SPECTRA, STATUS, RunFolder


# --- a run -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunData:
    """A run folder's files, read once."""

    path: Path
    config: dict  # config.json with defaults filled in for settings added since the run was made
    status: dict | None  # status.json; None before the controller started
    environment: dict | None  # environment.json: versions, git revision, device
    depths: dict | None  # depths.json ("1" -> the depth's summary); None until a depth finishes
    described: dict | None  # data.json: split sizes as trained on; None for runs from before it existed
    epochs: pd.DataFrame  # one row per epoch; empty when there are none
    iterations: pd.DataFrame  # one row per finished iteration
    spectra: pd.DataFrame  # one row per (depth, iteration, layer)
    hessian: pd.DataFrame  # one row per (depth, iteration) with --hessian-top; empty otherwise
    torn: dict[str, int]  # table file name -> its lines that are not JSON (a write killed midway)

    @property
    def data(self) -> dict:
        """The config's data section."""
        return self.config.get("data", {})

    @property
    def metric(self) -> Metric:
        """What the accuracy columns hold: accuracy, or R^2 for a regression task."""
        return metric_of(self.data.get("dataset", ""))

    @property
    def measure(self) -> str:
        """The rank measure that sets the next widths (a spec such as "numerical:0.2")."""
        return self.config.get("rank", {}).get("measure", "?")


def _read_config(run: RunFolder) -> dict:
    try:
        raw = run.read(CONFIG)
    except ValueError as exc:  # json.JSONDecodeError
        raise ConfigError(f"{run.path / CONFIG} is not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{run.path / CONFIG} is not a rankprune config (not a JSON object)")
    try:  # defaults filled in for settings added since the run was made
        return RunConfig.from_stored(raw).to_dict()
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{run.path / CONFIG} is not a rankprune config ({exc})") from None


def _torn(run: RunFolder, table: str, parsed: int) -> int:
    """Lines of a table that are not JSON (a write killed midway); RunFolder.rows skips them."""
    p = run.path / table
    if not p.is_file():
        return 0
    return sum(1 for line in p.read_text().splitlines() if line.strip()) - parsed


def widths_censored(iterations: pd.DataFrame, depths: dict | None = None) -> pd.Series:
    """Per row of one run's iterations table, the censored marks (per layer None, "initial", "input" or
    "unconverged") of the widths that row trained at. An iteration row records "censored" for its next_widths, which
    the depth's next shrink iteration trains at, so such a row takes its predecessor's; a finished depth's result,
    its chosen iteration and the anneal that retrains the chosen network at the same widths, takes depths.json's (so
    a depth whose result is its first iteration, a no-shrink without an anneal, is marked too); a depth's first
    iteration is otherwise its start, not a result: None. Runs from before censoring was recorded hold no such key:
    None everywhere (unknown, shown as measured)."""
    marks = pd.Series([None] * len(iterations), index=iterations.index, dtype=object)
    if iterations.empty:
        return marks
    previous: dict = {}
    for index, row in iterations.sort_values(["depth", "iteration"]).iterrows():
        depth, iteration, widths = int(row["depth"]), int(row["iteration"]), list(row["widths"])
        summary = (depths or {}).get(str(depth)) or {}
        result = summary.get("chosen_iteration") == iteration or row.get("phase") == "anneal"
        before = previous.get((depth, iteration - 1))
        if result and isinstance(summary.get("censored"), list) and list(summary.get("widths") or []) == widths:
            marks.at[index] = summary["censored"]
        elif before is not None and before[0] == widths:
            marks.at[index] = before[1]
        recorded, upcoming = row.get("censored"), row.get("next_widths")
        previous[(depth, iteration)] = (list(upcoming) if isinstance(upcoming, list) else None,
                                        recorded if isinstance(recorded, list) else None)
    return marks


def read_run(run: RunFolder) -> RunData:
    """Everything a run report shows; a config.json that is not a rankprune config is a ConfigError."""
    config = _read_config(run)
    status, env = run.read(STATUS), run.read(ENVIRONMENT)
    if status is not None and status.get("state") == "running":
        status = {**status, "writer": run.writer()}  # None: killed before it could say so
    try:
        depths = run.read(DEPTHS)
    except ValueError:  # written atomically, so only a hand-edit breaks it
        depths = None
    raw = {t: run.rows(t) for t in (EPOCHS, ITERATIONS, SPECTRA, HESSIAN)}
    try:
        described = run.read(DATA)
    except ValueError:
        described = None
    return RunData(
        path=run.path, config=config, status=status, environment=env, depths=depths,
        described=described if isinstance(described, dict) else None,
        epochs=pd.DataFrame(raw[EPOCHS]), iterations=pd.DataFrame(raw[ITERATIONS]), spectra=pd.DataFrame(raw[SPECTRA]),
        hessian=pd.DataFrame(raw[HESSIAN]),
        torn={t: _torn(run, t, len(rows)) for t, rows in raw.items()},
    )


# --- a study ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudyData:
    """An Optuna study's trials, their equivalence classes, and the best trial's training data."""

    study: Any  # the optuna.Study: Optuna's own plots draw from it
    storage: str  # the storage URL as given (shown redacted)
    names: list[str]  # objective names, "objective I" where the study did not name them
    mode: str  # the study's mode user attribute ("survey", ...), "?" if absent
    trials: list  # every FrozenTrial, in any state
    states: Counter  # trial state name (lower case) -> count
    complete: list  # the COMPLETE trials
    failed: list  # the FAIL trials
    frame: pd.DataFrame  # one row per finished trial with rank attributes (classes.trials_frame); may be empty
    repeats: dict  # trial number -> the earlier trial whose parameters it repeats (left out of frame)
    by: str  # what equal classes share: "vector" (per-layer ranks), "sum" or "normalized" (classes.BY)
    tol: float  # the largest difference inside a class
    classes: pd.Series | None  # equivalence class of each row of frame (classes.equivalence_classes by, tol)
    class_table: pd.DataFrame | None  # one row per class; None when frame is empty
    best: pd.Series | None  # the row of frame with the highest validation accuracy
    best_data: dict | None  # its run folder's data section; None when that folder is not here
    best_described: Any  # its run folder's data.json
    best_missing: str  # why best_data is None although best is not ("" otherwise)
    fetcher: Any = None  # artifacts.Fetcher: where a trial's run folder is, here or fetched from an artifact store

    @property
    def metric(self) -> Metric:
        """What the trials' accuracies hold, as the best trial's run folder says (R^2 for a regression task)."""
        return metric_of((self.best_data or {}).get("dataset", ""))


def _best_trial(frame: pd.DataFrame, fetcher) -> tuple[pd.Series | None, dict | None, Any, str]:
    """The finished trial with the highest validation accuracy (every decision is made on validation), and
    its run folder's data section and data.json."""
    from rankprune.artifacts import ArtifactUnavailable
    from rankprune.classes import best_trial

    r = best_trial(frame)  # the highest validation accuracy, ties to the lowest trial number; never on test
    if r is None:
        return None, None, None, ""
    try:
        folder = RunFolder(fetcher.folder(r, r.get("run_folder", "")))
    except ArtifactUnavailable as exc:
        return r, None, None, f"the trial's run folder could not be fetched ({exc}), so its training data cannot be checked"
    try:
        config, described = folder.read(CONFIG), folder.read(DATA)
    except ValueError:
        config, described = None, None
    if not isinstance(config, dict):
        return r, None, None, f"the trial's run folder {folder.path} is not here, so its training data cannot be checked"
    return r, config.get("data", {}), described, ""


def read_study(study, storage: str, by: str = "vector", tol: float = 0.0, root=None, fetcher=None) -> StudyData:
    """Everything a study report shows; equivalence classes as `rankprune study classes --by BY --tol TOL` makes
    them. Run folders under `root`, or fetched by `fetcher` (artifacts.Fetcher; default: from the artifact store each
    trial recorded, where its worker uploaded it)."""
    import optuna

    from rankprune.artifacts import Fetcher

    from rankprune.classes import class_table, equivalence_classes, trials_frame

    from rankprune.study import censored_layers

    trials = study.get_trials(deepcopy=False)
    frame = trials_frame(study, root)  # run folders under the reader's --root
    mode = study.user_attrs.get("mode", "?")
    if not frame.empty:  # what is a bound, as the CLI's classes and trends read it (study.censored_layers)
        frame["censored"] = [censored_layers(r, mode) for r in frame.to_dict("records")]
    fetcher = fetcher if fetcher is not None else Fetcher(root=None if root is None else Path(root))
    best, data, described, why = _best_trial(frame, fetcher)
    return StudyData(
        study=study, storage=storage,
        names=list(study.metric_names or [f"objective {i}" for i in range(len(study.directions))]),
        mode=mode,
        trials=trials, states=Counter(t.state.name.lower() for t in trials),
        complete=[t for t in trials if t.state == optuna.trial.TrialState.COMPLETE],
        failed=[t for t in trials if t.state == optuna.trial.TrialState.FAIL],
        frame=frame, repeats=frame.attrs.get("repeats", {}),
        by=by, tol=tol,
        classes=None if frame.empty else equivalence_classes(frame, by, tol),
        class_table=None if frame.empty else class_table(frame, by, tol),
        best=best, best_data=data, best_described=described, best_missing=why, fetcher=fetcher,
    )
