"""A batched worker killed outright (SIGKILL, as a scheduler's time limit ends a job) leaves trials whose heartbeats
stop: the next worker fails them (Optuna's fail_stale_trials) and retries each exactly once, recording the retry, and
no grid cell completes twice. Before batched trials sent heartbeats, such trials stayed RUNNING for ever."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import optuna

from rankprune.cli import main

GUARD_S = 240  # a hung child fails the test instead of the suite; not a timing assertion
STUDY = """[study]
name = "killed"
mode = "survey"
sampler = "grid"
n_trials = 8

[base.data]
dataset = "digits"

[base.train]
max_epochs = 12
saturate = "accuracy"
patience = 12

[storage]
heartbeat_interval = 1
grace_period = 2

[space]
depth = 2
width = { choices = [24, 32, 40, 48] }
seed = { choices = [0, 1] }
"""


def _trials(url: str) -> list:
    return optuna.load_study(study_name="killed", storage=url).get_trials(deepcopy=False)


def test_a_killed_batched_worker_leaves_trials_another_worker_fails_and_retries_once(tmp_path):
    spec = tmp_path / "killed.toml"
    spec.write_text(STUDY)
    root = tmp_path / "runs"
    url = f"sqlite:///{root}/studies.sqlite3"
    argv = ["study", "run", str(spec), "--root", str(root), "--batch", "4"]
    child = subprocess.Popen([sys.executable, "-m", "rankprune.cli", *argv], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + GUARD_S
        while True:  # until a batch is training: its trials RUNNING, their run folders writing epochs
            assert child.poll() is None, "the worker ended before it could be killed"
            assert time.monotonic() < deadline
            if (root / "studies.sqlite3").is_file() and any((root / "studies" / "killed").glob("trial-*/epochs.jsonl")):
                break
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=GUARD_S)
    running = [t.number for t in _trials(url) if t.state == optuna.trial.TrialState.RUNNING]
    assert running, "the kill should leave trials RUNNING"
    time.sleep(3)  # past the grace period (2 s) since their last heartbeat

    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        assert main(["study", "run", str(spec), "--root", str(root), "--until", "8"]) == 0
    trials = _trials(url)
    state = {t.number: t.state for t in trials}
    assert all(state[n] == optuna.trial.TrialState.FAIL for n in running)  # the stale ones, failed
    retries = Counter(t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs)
    assert set(retries) == set(running) and set(retries.values()) == {1}  # each retried exactly once, recorded
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    cells = Counter((t.params["width"], t.params["seed"]) for t in complete)
    assert len(cells) == 8 and set(cells.values()) == {1}  # every cell complete, none twice
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
