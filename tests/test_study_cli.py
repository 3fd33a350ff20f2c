"""`rankprune study run | classes | trends` as a user runs them, and Optuna's own CLI on the result.

The 8-trial study and one error run are real subprocesses (exit status, one line on stderr); the
other error cases and the table commands call cli.main in-process, which is the same code minus
process start-up (about 2 s each here).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from rankprune.cli import main
from studyfiles import TINY_SPACE, tiny_study_toml

# A guard so a hung child fails the test instead of the suite; not a timing assertion.
GUARD_S = 300
N_TRIALS = 8
NAME = "cli_survey"

REQUIRED_ATTRS = {
    "initial_widths", "widths", "ranks", "layer_ranks", "network_rank_sum", "network_rank_normalized",
    "network_rank_min", "rank_parameters", "train_acc", "test_acc", "train_loss", "test_loss",
    "generalisation_gap", "epochs", "iterations", "cumulative_seconds", "cumulative_flops", "run_folder",
}


def study_text(name: str = NAME, sampler: str = "tpe", space: str | None = None, n_trials: int = N_TRIALS) -> str:
    return tiny_study_toml(name, sampler, n_trials, space=space or TINY_SPACE)


def child_env() -> dict[str, str]:
    # One OpenMP thread per child: see conftest.py (oversubscribed 2-core machine).
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def rankprune(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rankprune.cli", *args], cwd=cwd, env=child_env(),
                          capture_output=True, text=True, timeout=GUARD_S)


def trial_count(name: str, storage: str) -> int:
    return len(optuna.load_study(study_name=name, storage=storage).trials)


@pytest.fixture(scope="module")
def cli_study(tmp_path_factory):
    """The 8-trial survey, run once by `rankprune study run` with the file's n_trials and the default storage."""
    tmp = tmp_path_factory.mktemp("study_cli")
    (tmp / "survey.toml").write_text(study_text())
    root = tmp / "root"
    done = rankprune("study", "run", "survey.toml", "--root", str(root), cwd=tmp)
    return done, tmp, root, f"sqlite:///{root}/studies.sqlite3"


def test_study_run_exits_0_and_reports_each_trial(cli_study):
    done, _tmp, root, url = cli_study
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert f"storage: {url}" in done.stderr
    for n in range(N_TRIALS):
        assert f"trial {n}: [" in done.stderr
    assert f"study {NAME}: {N_TRIALS} complete, 0 failed, {N_TRIALS} trials in all" in done.stderr
    assert (root / "studies.sqlite3").is_file()
    assert sorted(p.name for p in (root / "studies" / NAME).iterdir()) == [f"trial-{n:04d}" for n in range(N_TRIALS)]


def test_optuna_trials_lists_every_trial_with_its_attributes(cli_study):
    _done, tmp, _root, url = cli_study
    optuna_cli = Path(sys.executable).parent / "optuna"
    listed = subprocess.run([str(optuna_cli), "trials", "--study-name", NAME, "--storage", url, "-f", "json"],
                            cwd=tmp, env=child_env(), capture_output=True, text=True, timeout=GUARD_S)
    assert listed.returncode == 0, listed.stderr
    trials = json.loads(listed.stdout)
    assert [t["number"] for t in trials] == list(range(N_TRIALS))
    for t in trials:
        assert t["state"] == "COMPLETE"
        assert REQUIRED_ATTRS <= set(t["user_attrs"]), REQUIRED_ATTRS - set(t["user_attrs"])
        assert t["value"] == {"test_acc": t["user_attrs"]["test_acc"]}  # the metric is named
        assert {"depth", "width", "width_profile", "train.lr"} == set(t["params"])
        assert len(t["user_attrs"]["ranks"]) == t["params"]["depth"]


# --- classes and trends ---------------------------------------------------------------------------------
def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_classes_partition_the_finished_trials(cli_study, tmp_path, capsys):
    _done, _tmp, root, _url = cli_study
    out = tmp_path / "classes.csv"
    assert main(["study", "classes", NAME, "--root", str(root), "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"equivalence classes of convergent rank in {NAME} (by vector, tol 0)" in printed
    rows = read_csv(out)
    assert [int(r["class"]) for r in rows] == list(range(1, len(rows) + 1))
    assert sum(int(r["n"]) for r in rows) == N_TRIALS
    members = [int(m) for r in rows for m in r["members"].split(", ")]
    assert sorted(members) == list(range(N_TRIALS))  # every trial in exactly one class

    # a tolerance wider than any difference of rank sums puts every trial in one class
    assert main(["study", "classes", NAME, "--root", str(root), "--by", "sum", "--tol", "1000", "--csv", str(out)]) == 0
    rows = read_csv(out)
    assert len(rows) == 1 and int(rows[0]["n"]) == N_TRIALS


def test_trends_correlate_the_chosen_rank_form(cli_study, tmp_path, capsys):
    _done, _tmp, root, _url = cli_study
    out = tmp_path / "trends.csv"
    assert main(["study", "trends", NAME, "--root", str(root), "--rank", "network_rank_normalized", "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"Spearman correlation of network_rank_normalized in {NAME} ({N_TRIALS} trials)" in printed
    rows = read_csv(out)
    assert [r["versus"] for r in rows] == ["test_acc", "generalisation_gap", "parameters"]
    assert all(r["rank"] == "network_rank_normalized" and int(r["n"]) == N_TRIALS for r in rows)


@pytest.mark.parametrize("args, names", [
    (["classes", "no_such_study"], "no study 'no_such_study'"),
    (["trends", "no_such_study"], f"it has: {NAME}"),
    (["classes", NAME, "--tol", "-1"], "--tol must be non-negative"),
])
def test_table_commands_reject_bad_input(cli_study, capsys, args, names):
    _done, _tmp, root, _url = cli_study
    assert main(["study", *args, "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rankprune study: error:") and names in err
    assert len(err.strip().splitlines()) == 1


# --- bad input touches no existing study ------------------------------------------------------------------
BAD_RUNS = {
    "malformed-toml": ("[study\nname = 'x'\n", [], "malformed TOML"),
    "unknown-parameter": (study_text() + '"train.lrr" = 0.1\n', [], "space.train.lrr"),
    "unknown-sampler": (study_text(sampler="annealing"), [], "unknown sampler 'annealing'"),
    "bad-storage-url": (study_text(), ["--storage", "notadb://nowhere/db"], "cannot open storage notadb://"),
    "unreachable-storage": (study_text(), ["--storage", "postgresql+psycopg2://u@127.0.0.1:1/db"], "cannot open storage"),
    "zero-trials": (study_text(), ["--n-trials", "0"], "--n-trials must be at least 1"),
    "zero-heartbeat": (study_text(), ["--heartbeat", "0"], "--heartbeat must be at least 1"),
    "bad-study-name": (study_text(), ["--study-name", "a b"], "study name 'a b'"),
}


@pytest.mark.parametrize("text, extra, names", BAD_RUNS.values(), ids=BAD_RUNS.keys())
def test_bad_input_is_exit_2_and_leaves_the_study_alone(cli_study, tmp_path, capsys, text, extra, names):
    _done, _tmp, root, url = cli_study
    before = trial_count(NAME, url)
    (tmp_path / "bad.toml").write_text(text)
    # the same root, hence the same default storage and study name, as the finished study
    assert main(["study", "run", str(tmp_path / "bad.toml"), "--root", str(root), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rankprune study: error:") and names in err
    assert len(err.strip().splitlines()) == 1
    assert trial_count(NAME, url) == before == N_TRIALS


def test_a_bad_file_in_a_real_process_is_exit_2_and_one_line(cli_study):
    _done, tmp, root, url = cli_study
    (tmp / "typo.toml").write_text(study_text() + '"train.lrr" = 0.1\n')
    done = rankprune("study", "run", "typo.toml", "--root", str(root), cwd=tmp)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("rankprune study: error: typo.toml: unknown parameter space.train.lrr")
    assert trial_count(NAME, url) == N_TRIALS


def test_argparse_errors_are_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["study", "run"])  # no file
    assert info.value.code == 2
    assert "the following arguments are required: file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["study", "classes", "x", "--by", "volume"])
    assert info.value.code == 2


# --- failed trials through the CLI --------------------------------------------------------------------------
def test_invalid_architectures_fail_their_trials_and_the_run_goes_on(tmp_path, capsys):
    # every sampled network is a funnel that halves 4 units over 4 layers: widths [4, 2, 1, 0]
    space = 'depth = 4\nwidth = 4\nwidth_profile = "funnel"\n"train.lr" = { low = 0.02, high = 0.1 }\n'
    (tmp_path / "funnel.toml").write_text(study_text(name="funnel", space=space))
    root = tmp_path / "root"
    assert main(["study", "run", str(tmp_path / "funnel.toml"), "--root", str(root), "--n-trials", "2"]) == 0
    err = capsys.readouterr().err
    assert "trial 0 fail: invalid architecture: depth 4, widths [4, 2, 1, 0]" in err
    assert "trial 1 fail: invalid architecture" in err
    assert "study funnel: 0 complete, 2 failed, 2 trials in all" in err

    # running the file again continues the same study
    assert main(["study", "run", str(tmp_path / "funnel.toml"), "--root", str(root), "--n-trials", "1"]) == 0
    assert "study funnel: 0 complete, 3 failed, 3 trials in all" in capsys.readouterr().err
    study = optuna.load_study(study_name="funnel", storage=f"sqlite:///{root}/studies.sqlite3")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 3
    assert all(t.user_attrs["fail_reason"].startswith("invalid architecture") for t in study.trials)

    # a study with no finished trial has no classes
    assert main(["study", "classes", "funnel", "--root", str(root)]) == 2
    assert "study 'funnel' has no finished trials yet" in capsys.readouterr().err
