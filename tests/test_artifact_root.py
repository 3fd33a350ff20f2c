"""A trial records its run folder relative to the artifact root (--root), so a study and its run folders read from
any machine that mounts the root, wherever it mounts it: here the root is moved, and the report read from the new
place finds every trial's folder. Studies made before record absolute paths, which are read as they are."""

from __future__ import annotations

import contextlib
import io
import shutil

import optuna

from rankprune.cli import main
from rankprune.study import trial_folder

STUDY = """[study]
name = "moved"
mode = "survey"
sampler = "grid"
n_trials = 2

[base.data]
dataset = "digits"

[base.train]
max_epochs = 2

[space]
depth = 1
width = { choices = [8, 12] }
"""


def test_a_study_and_its_run_folders_read_from_another_mount_of_the_root(tmp_path):
    spec = tmp_path / "moved.toml"
    spec.write_text(STUDY)
    first, moved = tmp_path / "machine-a" / "artifacts", tmp_path / "machine-b" / "mnt" / "artifacts"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["study", "run", str(spec), "--root", str(first)]) == 0
    moved.parent.mkdir(parents=True)
    shutil.move(str(first), str(moved))
    url = f"sqlite:///{moved}/studies.sqlite3"
    trials = optuna.load_study(study_name="moved", storage=url).trials
    assert sorted(t.user_attrs["run_folder"] for t in trials) == ["studies/moved/trial-0000", "studies/moved/trial-0001"]
    assert all((trial_folder(t.user_attrs["run_folder"], moved) / "config.json").is_file() for t in trials)
    out = tmp_path / "report"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["report", "moved", "--root", str(moved), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "is not here" not in text  # the best trial's run folder was found at the new mount
    assert trial_folder("/old/absolute/trial-0003", moved).as_posix() == "/old/absolute/trial-0003"
