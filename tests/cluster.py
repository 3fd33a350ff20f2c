"""Issue 23's acceptance, on any storage (tests/test_postgres.py: the loopback PostgreSQL server;
tests/test_journal_storage.py: a journal file): three `rankprune worker`s in three working directories (as if on
three machines) share one storage, one artifact root and one 12-cell grid study, two trials at a time; one is killed
with SIGKILL mid-batch (a node lost), one with SIGTERM (a scheduler's limit). The study must end with every cell
COMPLETE exactly once, the stopped trials FAIL and told apart (no reason: killed; "interrupted": terminated), each
retried exactly once with the retry recorded, no run folder shared, and a report from a fifth directory finding
every trial's folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna

from rankprune.runfolder import EPOCHS, RunFolder
from rankprune.study import open_storage, trial_folder

GUARD_S = 300  # a hung child fails the test instead of the suite; not a timing assertion
GRACE_S = 2  # the study's [storage] grace_period below
COMPLETE, FAIL, RUNNING = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.RUNNING

STUDY = """[study]
name = "cluster"
mode = "survey"
sampler = "grid"
n_trials = 12

[base.data]
dataset = "digits"

[base.train]
max_epochs = 30
saturate = "accuracy"
patience = 30

[storage]
heartbeat_interval = 1
grace_period = 2

[space]
depth = 1
width = { choices = [8, 12, 16, 20, 24, 28] }
seed = { choices = [0, 1] }
"""


def child_env() -> dict[str, str]:
    # One OpenMP thread per child: see conftest.py (oversubscribed 2-core machine).
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def load(url: str) -> optuna.Study:
    return optuna.load_study(study_name="cluster", storage=open_storage(url))


def worker(file: Path, url: str, artifacts: Path, cwd: Path) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "rankprune.cli", "worker", "--storage", url, "--study", str(file),
                             "--artifacts", str(artifacts), "--batch", "2"], cwd=cwd, env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def held(url: str, pid: int) -> list:
    """The RUNNING trials worker `pid` holds whose run folders have begun writing epochs."""
    try:
        trials = load(url).get_trials(states=(RUNNING,))
    except KeyError:
        return []
    # a worker names a trial as it asks for it (study.mark_asked), its run folder only once it has sampled it
    return [t for t in trials if str(t.user_attrs.get("worker", "")).endswith(f":{pid}") and "run_folder" in t.user_attrs
            and RunFolder(trial_folder(t.user_attrs["run_folder"], t.user_attrs["artifact_root"])).rows(EPOCHS)]


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def three_workers_one_killed_one_terminated(url: str, tmp_path: Path) -> None:
    file = tmp_path / "cluster.toml"
    file.write_text(STUDY)
    artifacts = tmp_path / "shared-artifacts"
    workers = [worker(file, url, artifacts, tmp_path / f"machine-{i}") for i in (1, 2, 3)]
    try:
        deadline = time.monotonic() + GUARD_S
        for w in workers[:2]:  # the first two, once each holds a batch in training
            while not held(url, w.pid):
                assert w.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        workers[0].send_signal(signal.SIGKILL)  # a node lost
        workers[1].send_signal(signal.SIGTERM)  # a scheduler's time limit
        assert workers[1].wait(timeout=GUARD_S) == 143
        workers[0].wait(timeout=GUARD_S)
        _, err = workers[2].communicate(timeout=GUARD_S)
        assert workers[2].returncode == 0, err
    finally:
        stop(workers)
    time.sleep(GRACE_S + 1)  # the killed worker's heartbeats are stale by now
    last = worker(file, url, artifacts, tmp_path / "machine-4")
    _, err = last.communicate(timeout=GUARD_S)
    assert last.returncode == 0, err

    trials = load(url).trials
    complete = [t for t in trials if t.state == COMPLETE]
    cells = Counter((t.params["width"], t.params["seed"]) for t in complete)
    assert len(cells) == 12 and set(cells.values()) == {1}  # every cell COMPLETE exactly once
    gone = {f":{w.pid}" for w in workers[:2]}
    stopped = {t.number for t in trials if t.state != COMPLETE and str(t.user_attrs.get("worker", "")).endswith(
        tuple(gone))}
    assert stopped and all(trials[n].state == FAIL for n in stopped)  # killed and terminated trials: failed
    reasons = {trials[n].user_attrs.get("fail_reason") for n in stopped}
    assert None in reasons and any(str(r).startswith("interrupted") for r in reasons)  # one of each, told apart
    retries = Counter(t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs)
    assert set(retries) == stopped and set(retries.values()) == {1}  # each retried exactly once, recorded
    # no run folder written by two trials (one killed before it sampled its parameters has none)
    folders = [trial_folder(t.user_attrs["run_folder"], artifacts) for t in trials if "run_folder" in t.user_attrs]
    assert len(set(folders)) == len(folders)
    assert not [t for t in trials if t.state == RUNNING]
    report = tmp_path / "machine-5" / "report"
    report.parent.mkdir()
    code = subprocess.run([sys.executable, "-m", "rankprune.cli", "report", "cluster", "--storage", url, "--root",
                           str(artifacts), "--out", str(report)], cwd=report.parent, env=child_env(),
                          capture_output=True, text=True, timeout=GUARD_S)
    assert code.returncode == 0, code.stderr
    text = (report / "report.md").read_text()
    assert "is not here" not in text and "12 finished" in text.replace("12 complete", "12 finished")
