"""Whether a trial's worker is still alive, on every storage a study can use: heartbeats and the rule that fails the
trials whose heartbeats stopped (a worker killed outright: SIGKILL, a node lost, a scheduler's hard limit).

Optuna keeps heartbeats in its RDB storage only (RDBStorage(heartbeat_interval=...), read by fail_stale_trials, with
the database server's clock). Its journal storage keeps none, so a worker killed outright left its trials RUNNING for
ever there. For a journal, rankprune keeps them itself through the public storage API: a heartbeat is the trial's
system attribute `rankprune_heartbeat` (the worker's Unix time), and a trial RUNNING whose last one is older than the
grace period is failed with no reason, as Optuna fails a stale trial, so the same retry rule (study.retry_interrupted,
findings.runner.retry_killed) picks it up. Two workers that fail one trial at once are ordered by the journal: the
second one's change is refused, and ignored here.

The journal's rule compares one machine's clock with another's, so the machines' clocks must agree to well within
the grace period (NTP does: milliseconds against a grace of minutes).
"""

from __future__ import annotations

import time
import warnings

import optuna

__all__ = ["HeartbeatJournal", "HEARTBEAT_ATTR", "heartbeat_interval", "record_heartbeat", "fail_stale_trials",
           "fail_unstarted", "grace_period"]

HEARTBEAT_ATTR = "rankprune_heartbeat"


class HeartbeatJournal(optuna.storages.JournalStorage):
    """Optuna's JournalStorage that knows the study's heartbeat interval and grace period (seconds), which
    record_heartbeat and fail_stale_trials below read; the storage itself is Optuna's, unchanged."""

    def __init__(self, backend, heartbeat_interval: int | None = None, grace_period: int | None = None):
        super().__init__(backend)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period if grace_period is not None else (
            2 * heartbeat_interval if heartbeat_interval else None)


def heartbeat_interval(storage: optuna.storages.BaseStorage | None) -> int | None:
    """Seconds between a trial's heartbeats on this storage; None where it keeps none."""
    if isinstance(storage, HeartbeatJournal):
        return storage.heartbeat_interval
    get = getattr(storage, "get_heartbeat_interval", None)  # RDBStorage's public method
    return get() if get is not None else None


def record_heartbeat(storage: optuna.storages.BaseStorage, trial_id: int) -> None:
    """One heartbeat of a RUNNING trial."""
    if isinstance(storage, HeartbeatJournal):
        storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
    else:
        storage.record_heartbeat(trial_id)


def fail_stale_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Fail (with no reason) every RUNNING trial of `study` whose heartbeats stopped more than the grace period ago,
    and every one its worker never got to start (fail_unstarted); returns the numbers this call failed (for the RDB
    storage's stale trials Optuna's fail_stale_trials, which does not say, so only the unstarted ones)."""
    if not isinstance(storage, HeartbeatJournal):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fail_stale_trials is experimental in Optuna 5
            optuna.storages.fail_stale_trials(study)
        return fail_unstarted(study, storage)
    if not storage.heartbeat_interval or not storage.grace_period:
        return []
    now, failed = time.time(), fail_unstarted(study, storage)
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        beat = t.system_attrs.get(HEARTBEAT_ATTR)
        # A trial that never beat is not judged: Optuna's rule too (the first beat goes out as the trial is asked).
        if beat is None or now - float(beat) <= storage.grace_period:
            continue
        try:
            storage.set_trial_state_values(storage.get_trial_id_from_study_id_trial_number(study_id, t.number),
                                           optuna.trial.TrialState.FAIL)
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker failed it first, or it finished after all
        failed.append(t.number)
    return failed


def grace_period(storage: optuna.storages.BaseStorage | None) -> float | None:
    """Seconds after a trial's last heartbeat that it is judged dead (Optuna's default: two intervals); None where the
    storage keeps no heartbeats."""
    interval = heartbeat_interval(storage)
    if not interval:
        return None
    grace = getattr(storage, "grace_period", None)  # RDBStorage's and HeartbeatJournal's public attribute
    return float(grace) if grace else 2.0 * interval


def fail_unstarted(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Fail (no reason) every RUNNING trial that started more than the grace period ago and holds neither a parameter
    nor a user attribute: its worker was killed inside Optuna's ask(), after the trial was made and before its first
    heartbeat, so no heartbeat rule ever judges it (Optuna's included) and it stayed RUNNING for ever. A live worker
    gives every trial it asks a user attribute ("worker") at once, before anything slow. datetime_start is the
    asking machine's clock, so the machines' clocks must agree, as for the heartbeats. Returns the numbers failed;
    a grid trial among them is retried on its cell (study.retry_interrupted carries its grid number)."""
    import datetime

    grace = grace_period(storage)
    if grace is None:
        return []
    now, failed = datetime.datetime.now(), []
    study_id = None
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.params or t.user_attrs or t.datetime_start is None:
            continue
        if (now - t.datetime_start.replace(tzinfo=None)).total_seconds() <= grace:
            continue
        study_id = study_id if study_id is not None else storage.get_study_id_from_name(study.study_name)
        try:
            storage.set_trial_state_values(storage.get_trial_id_from_study_id_trial_number(study_id, t.number),
                                           optuna.trial.TrialState.FAIL)
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker failed it first
        failed.append(t.number)
    return failed
