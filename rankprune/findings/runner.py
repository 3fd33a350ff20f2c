"""Top every study of a suite up to its grid: the logic of `rankprune findings run` (the CLI only prints).

Running again is how a suite resumes. Each study holds its finished trials in the storage, and the grid sampler
gives a new trial a cell no finished trial holds, so a finished trial is never run again, however the last run
ended: a trial that Ctrl-C or SIGTERM interrupted is retried once with its parameters (study.retry_interrupted);
one whose worker was killed outright stays RUNNING until Optuna's heartbeat rule fails it, and is retried then
(retry_killed), never before: a RUNNING trial may belong to a live worker on another machine, and running its cell
as well ran cells two or three times (tests/test_postgres.py). Only a trial that failed
for a reason of its own (diverged, an error) is not retried: it would fail alike, and progress.Progress says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import optuna

from rankprune.config import ConfigError, RunConfig
from rankprune.findings.progress import Progress, cell_key, grid_progress
from rankprune.findings.suite import Experiment
from rankprune.heartbeats import fail_stale_trials
from rankprune.study import _journal_path, _sqlite_path, load_study, open_storage, run_study

__all__ = ["progress_of", "retry_killed", "top_up", "check_data", "PASSES"]

# Runs of run_study one top-up makes at most: the first, then (with cells still missing that a pass can run, and
# progress made) one at a time, which reaches the cells whose trials went stale meanwhile.
PASSES = 3


def progress_of(experiment: Experiment, url: str) -> Progress | ConfigError:
    """What of the experiment's grid is done, read only (nothing is created): the grid's cells all "not run" where
    the storage or the study does not exist yet; the ConfigError where the storage cannot be read."""
    path = _sqlite_path(url) or _journal_path(url)
    if path is not None and not path.is_file():
        return grid_progress(experiment.spec, [])
    try:
        study = load_study(experiment.name, url, read_only=True)
    except ConfigError as exc:  # "no study NAME in URL; it has: ..." or "(it holds no Optuna tables)": not run yet
        text = str(exc)
        if text.startswith(f"no study {experiment.name!r} in") and ("; it has: " in text or "holds no Optuna tables" in text):
            return grid_progress(experiment.spec, [])
        return exc
    return grid_progress(experiment.spec, study.get_trials(deepcopy=False))


def retry_killed(study: optuna.Study, experiment: Experiment) -> list[int]:
    """Enqueue a retry (the same parameters; user attribute retry_of) of each trial that failed without a reason,
    which is how Optuna fails a trial whose heartbeat stopped (its worker killed outright), where its cell has no
    trial complete, running or waiting. Returns the retried trials' numbers."""
    trials = study.get_trials(deepcopy=False)
    progress = grid_progress(experiment.spec, trials)
    killed = {cell_key(c.params) for c in progress.cells if c.state == "killed"}
    numbers = []
    for t in trials:
        key = cell_key(t.params)
        if t.state == optuna.trial.TrialState.FAIL and key in killed and "fail_reason" not in t.user_attrs:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            killed.discard(key)  # one retry per cell
            numbers.append(t.number)
    return numbers


def _open(experiment: Experiment, url: str) -> tuple[optuna.Study | None, list, optuna.storages.BaseStorage]:
    spec = experiment.spec
    storage = open_storage(url, spec.heartbeat_interval, spec.grace_period)
    if spec.name not in optuna.study.get_all_study_names(storage):
        return None, [], storage
    study = optuna.load_study(study_name=spec.name, storage=storage)
    return study, study.get_trials(deepcopy=False), storage


def top_up(experiment: Experiment, url: str, root: Path, batch: int = 1, max_members: int | None = None,
           callbacks: list | None = None, on_retry: Callable[[str, list[int]], None] | None = None,
           artifact_store: str | None = None) -> Progress:
    """Run the experiment's study until every cell of its grid it can run has a COMPLETE trial; returns what is
    done then. `callbacks` are Optuna's (study, trial), called after each trial; `on_retry(why, numbers)` gets the
    numbers of the trials retried first, "killed" (retry_killed) or "interrupted" (study.retry_interrupted). StudyStalled if its trials keep failing; KeyboardInterrupt (Ctrl-C, SIGTERM) as
    run_study leaves it: finished trials kept, interrupted ones marked for a retry."""
    study, trials, storage = _open(experiment, url)
    if study is not None:
        fail_stale_trials(study, storage)  # heartbeats older than the grace period: failed, no reason
        retried = retry_killed(study, experiment)
        if retried and on_retry is not None:
            on_retry("killed", retried)
        trials = study.get_trials(deepcopy=False)
    progress = grid_progress(experiment.spec, trials)

    def started(_planned: int, interrupted: list[int]) -> None:
        if interrupted and on_retry is not None:
            on_retry("interrupted", interrupted)

    for attempt in range(PASSES):
        if not progress.runnable:
            break
        # Every run asks only for cells no trial holds (study.optimize_batched): a cell held by a trial still marked
        # RUNNING is left to it, live worker or dead; a dead worker's trial goes stale once its heartbeats stop, and
        # the next pass (or run) fails it and retries it once (retry_killed, study.retry_interrupted).
        one_at_a_time = attempt > 0 or batch == 1
        # `until` counts every COMPLETE trial in the study: those it holds now, and one per cell still to run
        until = progress.complete_trials + len(progress.runnable)
        run_study(experiment.spec, url, root, until=until, batch=1 if one_at_a_time else batch,
                  max_members=max_members, callbacks=callbacks, on_start=started, artifact_store=artifact_store)
        before, progress = progress, grid_progress(experiment.spec, _open(experiment, url)[1])
        if one_at_a_time and progress.done == before.done:
            break
    return progress


def check_data(experiments: list[Experiment]) -> None:
    """Load each distinct dataset the experiments train on, before any study is touched: missing data (with
    --no-download) is a one-line ConfigError here rather than every trial failing."""
    from rankprune import data as data_mod

    seen = set()
    for e in experiments:
        cfg = RunConfig.from_dict(e.spec.base).data
        if cfg in seen:
            continue
        seen.add(cfg)
        try:
            data_mod.load(cfg, seed=0)
        except data_mod.DataError as exc:
            raise ConfigError(f"{e.file}: {exc}; give --data-dir DIR") from None
