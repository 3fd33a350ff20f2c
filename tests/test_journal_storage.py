"""Optuna's journal storage (--storage journal:PATH), the serverless alternative to PostgreSQL for a few workers that
share a filesystem: two workers run one grid study on one journal file at once, each cell once, and the read-only
commands (study classes, report) read it. Its limit, as the README says: no heartbeats, so a worker killed outright
leaves its trial RUNNING."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections import Counter

import optuna

from rankprune.cli import main

STUDY = """[study]
name = "journal"
mode = "survey"
sampler = "grid"
n_trials = 6

[base.data]
dataset = "digits"

[base.train]
max_epochs = 2

[space]
depth = 1
width = { choices = [8, 12, 16] }
seed = { choices = [0, 1] }
"""


def test_two_workers_share_one_journal_file_and_the_readers_read_it(tmp_path):
    spec = tmp_path / "journal.toml"
    spec.write_text(STUDY)
    journal = tmp_path / "shared" / "studies.log"
    url = f"journal:///{journal}" if not str(journal).startswith("/") else f"journal://{journal}"
    argv = [sys.executable, "-m", "rankprune.cli", "study", "run", str(spec), "--storage", url,
            "--root", str(tmp_path / "runs"), "--until", "6"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=240)
        assert w.returncode == 0, err
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="journal", storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal))))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    cells = Counter((t.params["width"], t.params["seed"]) for t in complete)
    assert len(cells) == 6  # every cell of the grid ran
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()):
        assert main(["study", "classes", "journal", "--storage", url]) == 0
        assert main(["report", "journal", "--storage", url, "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").is_file() and "journal" in out.getvalue()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(["study", "classes", "journal", "--storage", f"journal://{tmp_path / 'none.log'}"]) == 2
    assert "no study storage at" in err.getvalue()
