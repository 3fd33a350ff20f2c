"""`rankprune worker`: workers on one storage and one artifact root run the named studies until each holds its declared
trials, then exit 0; SIGTERM (what a scheduler sends first) starts nothing new, fails the trial a worker holds with
the reason, and exits 143, and the next worker retries that trial once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import optuna

GUARD_S = 240  # a hung child fails the test instead of the suite; not a timing assertion


def _study(path, name: str, epochs: int, widths: str) -> str:
    path.write_text(f"""[study]
name = "{name}"
mode = "survey"
sampler = "grid"
n_trials = 1

[base.data]
dataset = "digits"

[base.train]
max_epochs = {epochs}
saturate = "accuracy"
patience = {epochs}

[space]
depth = 1
width = {{ choices = [{widths}] }}
""")
    return str(path)


def _worker(files: list[str], storage: str, root, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rankprune.cli", "worker", "--storage", storage, "--study", *files,
                             "--artifacts", str(root)], cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _trials(storage_file, name: str) -> list:
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(storage_file)))
    return optuna.load_study(study_name=name, storage=storage).trials


def test_two_workers_run_every_named_study_to_its_declared_trials(tmp_path):
    files = [_study(tmp_path / "a.toml", "a", 2, "6, 8, 10"), _study(tmp_path / "b.toml", "b", 2, "5, 7")]
    journal = tmp_path / "shared" / "studies.log"
    workers = [_worker(files, f"journal:{journal}", tmp_path / "artifacts", tmp_path) for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=GUARD_S)
        assert w.returncode == 0, err
    for name, cells in (("a", 3), ("b", 2)):  # n_trials = 1 in each file: a grid declares its cells
        complete = [t for t in _trials(journal, name) if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(Counter(t.params["width"] for t in complete)) == cells


def test_sigterm_fails_the_held_trial_with_its_reason_exits_143_and_the_next_worker_retries_it(tmp_path):
    file = _study(tmp_path / "slow.toml", "slow", 400, "64")
    journal = tmp_path / "studies.log"
    worker = _worker([file], f"journal:{journal}", tmp_path / "artifacts", tmp_path)
    try:
        deadline = time.monotonic() + GUARD_S
        while not list((tmp_path / "artifacts" / "studies" / "slow").glob("trial-*/epochs.jsonl")):
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=GUARD_S)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 143
    [held] = _trials(journal, "slow")
    assert held.state == optuna.trial.TrialState.FAIL and held.user_attrs["fail_reason"].startswith("interrupted")
    _study(tmp_path / "slow.toml", "slow", 2, "64")  # the same cell, trained briefly this time
    again = _worker([file], f"journal:{journal}", tmp_path / "artifacts", tmp_path)
    _, err = again.communicate(timeout=GUARD_S)
    assert again.returncode == 0, err
    trials = _trials(journal, "slow")
    assert [t.user_attrs.get("retry_of") for t in trials] == [None, 0]  # retried once, the retry recorded
    assert trials[1].state == optuna.trial.TrialState.COMPLETE
