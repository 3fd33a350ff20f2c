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
import pandas as pd
import pytest

from rankprune.cli import main
from studyfiles import TINY_SPACE, tiny_study_toml
from cli_checks import one_line_error

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
        assert t["value"] == {"val_acc": t["user_attrs"]["val_acc"]}  # the metric is named: the default, validation
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
    assert f"equivalence classes of measured rank (a survey: each network trained once) in {NAME} (by vector, tol 0)" in printed
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
    # censored trials (a width at its bound) are left out of the trends and listed
    from rankprune.analysis import is_censored
    from rankprune.classes import trials_frame
    from rankprune.study import default_storage, load_study

    from rankprune.study import censored_layers

    # a survey's result is its rank, a bound where a layer's rank reached its width (study.censored_layers)
    frame = trials_frame(load_study(NAME, default_storage(root), read_only=True))
    n_censored = int(is_censored(pd.Series([censored_layers(r, "survey") for r in frame.to_dict("records")])).sum())
    assert all(r["rank"] == "network_rank_normalized" and int(r["n"]) == N_TRIALS - n_censored for r in rows)
    assert ("left out as censored" in printed) == (n_censored > 0)


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
def test_diverging_trials_fail_alone_and_the_run_goes_on(tmp_path, capsys):
    # every sampled learning rate makes the loss NaN in the first epoch
    space = 'depth = 1\nwidth = 8\n"train.lr" = { low = 1e5, high = 1e6, log = true }\n'
    (tmp_path / "nan.toml").write_text(study_text(name="nan", space=space))
    root = tmp_path / "root"
    assert main(["study", "run", str(tmp_path / "nan.toml"), "--root", str(root), "--n-trials", "2"]) == 0
    err = capsys.readouterr().err
    assert "trial 0 fail: diverged" in err and "trial 1 fail: diverged" in err
    assert "study nan: 0 complete, 2 failed, 2 trials in all" in err

    # running the file again continues the same study; a trial that failed on its own is not retried
    assert main(["study", "run", str(tmp_path / "nan.toml"), "--root", str(root), "--n-trials", "1"]) == 0
    err = capsys.readouterr().err
    assert "retrying" not in err and "study nan: 0 complete, 3 failed, 3 trials in all" in err
    study = optuna.load_study(study_name="nan", storage=f"sqlite:///{root}/studies.sqlite3")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 3
    assert all(t.user_attrs["fail_reason"].startswith("diverged") and "retry_of" not in t.user_attrs for t in study.trials)

    # a study with no finished trial has no classes
    assert main(["study", "classes", "nan", "--root", str(root)]) == 2
    assert "study 'nan' has no finished trials yet" in capsys.readouterr().err

    # --until with trials that keep failing stops after 10 in a row, exit 1, rather than running forever
    assert main(["study", "run", str(tmp_path / "nan.toml"), "--root", str(root), "--until", "1"]) == 1
    err = capsys.readouterr().err
    assert "stopped: the last 10 trials all failed (the last: diverged" in err
    assert "the study holds 0 of the 1 complete trials asked for" in err
    assert len(optuna.load_study(study_name="nan", storage=f"sqlite:///{root}/studies.sqlite3").trials) == 13


# --- issue 18: a bad file or flag is refused before anything is created ----------------------------------------


REFUSED_FILES = {
    "no-study-table": ('[base.data]\ndataset = "digits"\n[space]\ndepth = 1\n', "no [study] table"),
    "empty-name": (study_text().replace(f'name = "{NAME}"', 'name = ""'), "study.name is empty"),
    "zero-depth": (study_text(space="depth = 0\nwidth = 8\n"), "space.depth must be at least 1, got 0"),
    "text-width": (study_text(space='depth = 1\nwidth = "wide"\n'), "space.width must be a whole number"),
    "funnel-to-zero": (study_text(space='depth = 10\nwidth = 256\nwidth_profile = "funnel"\n'),
                       "a funnel of depth 10 from width 256 halves to 0 units"),
    "bad-range-end": (study_text(space='depth = 1\nwidth = 8\n"train.lr" = { low = 0.0, high = 0.1 }\n'),
                      "space.train.lr = 0.0 makes an invalid run"),
}


@pytest.mark.parametrize("text, names", REFUSED_FILES.values(), ids=REFUSED_FILES.keys())
def test_a_file_that_could_only_make_invalid_trials_is_refused_before_anything_is_created(tmp_path, capsys, text, names):
    (tmp_path / "s.toml").write_text(text)
    line = one_line_error(capsys, main(["study", "run", str(tmp_path / "s.toml"), "--root", str(tmp_path / "runs")]))
    assert line.startswith("rankprune study: error:") and names in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]  # no storage, no runs folder, no data


@pytest.mark.parametrize("flags, names", [
    (["--seed", "-1"], "--seed must be an integer from 0 to 4294967295, got -1"),
    (["--seed", "4294967296"], "--seed must be an integer from 0"),
    (["--until", "0"], "--until must be at least 1"),
    (["--study-name", ""], "study name ''"),
], ids=["seed-negative", "seed-huge", "until-zero", "empty-study-name"])
def test_a_bad_flag_is_refused_before_anything_is_created(tmp_path, capsys, flags, names):
    (tmp_path / "s.toml").write_text(study_text())
    line = one_line_error(capsys, main(["study", "run", str(tmp_path / "s.toml"), "--root", str(tmp_path / "runs"), *flags]))
    assert names in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


# --- issue 18: a database of someone else's tables ---------------------------------------------------------------
@pytest.fixture
def users_db(tmp_path) -> Path:
    """A user's own SQLite file: one table of theirs, one row."""
    import sqlite3

    path = tmp_path / "my.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO customers (name) VALUES ('ada')")
    return path


def schema(path: Path) -> list[tuple]:
    import sqlite3

    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        db.close()


@pytest.mark.parametrize("command", [["study", "classes", "x"], ["study", "trends", "x"], ["report", "x"]],
                         ids=["classes", "trends", "report"])
def test_reading_a_database_without_optuna_tables_changes_nothing(users_db, tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    before = users_db.read_bytes()
    line = one_line_error(capsys, main([*command, "--storage", f"sqlite:///{users_db}"]))
    assert f"no study 'x' in sqlite:///{users_db} (it holds no Optuna tables)" in line
    assert users_db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my.db"]  # no report folder, no journal left


def test_study_run_refuses_a_database_of_other_tables_unless_allowed(users_db, tmp_path, capsys):
    (tmp_path / "s.toml").write_text(study_text(space="depth = 1\nwidth = 8\n"))
    url = f"sqlite:///{users_db}"
    before = users_db.read_bytes()
    line = one_line_error(capsys, main(["study", "run", str(tmp_path / "s.toml"), "--storage", url,
                                        "--root", str(tmp_path / "runs"), "--n-trials", "1"]))
    assert "holds tables that are not Optuna's (customers)" in line and "--allow-other-tables" in line
    assert users_db.read_bytes() == before and not (tmp_path / "runs").exists()

    assert main(["study", "run", str(tmp_path / "s.toml"), "--storage", url, "--root", str(tmp_path / "runs"),
                 "--n-trials", "1", "--allow-other-tables"]) == 0, capsys.readouterr().err
    assert [t.state for t in optuna.load_study(study_name=NAME, storage=url).trials] == [optuna.trial.TrialState.COMPLETE]
    tables = {name for kind, name, _sql in schema(users_db) if kind == "table"}
    assert "customers" in tables and "trials" in tables
    # reading the study now works, and leaves the file as it is
    after_run = schema(users_db), users_db.read_bytes()
    capsys.readouterr()
    assert main(["study", "classes", NAME, "--storage", url]) == 0, capsys.readouterr().err
    assert (schema(users_db), users_db.read_bytes()) == after_run


# --- issue 18: interrupted studies continue where they stopped ---------------------------------------------------
def interrupt_trials(monkeypatch, numbers: set[int]) -> None:
    """Ctrl-C (a KeyboardInterrupt, as SIGTERM becomes one) in the first epoch of the given trials."""
    from rankprune.runfolder import EPOCHS, RunFolder

    append = RunFolder.append
    folders = {f"trial-{n:04d}" for n in numbers}

    def interrupted(self, table, row):
        if table == EPOCHS and self.path.name in folders:
            raise KeyboardInterrupt
        return append(self, table, row)

    monkeypatch.setattr(RunFolder, "append", interrupted)


def continue_command(err: str) -> list[str]:
    import shlex

    [line] = [line for line in err.splitlines() if "Continue with: " in line]
    argv = shlex.split(line.split("Continue with: ", 1)[1])
    assert argv[:3] == ["rankprune", "study", "run"]
    return argv[1:]


@pytest.mark.parametrize("batch", [1, 3])
def test_an_interrupted_study_retries_its_interrupted_trials_and_runs_what_was_asked(tmp_path, capsys, monkeypatch, batch):
    (tmp_path / "s.toml").write_text(study_text(name="cut", sampler="random"))
    root = tmp_path / "runs"
    url = f"sqlite:///{root}/studies.sqlite3"
    # one at a time: trial 0 finishes, trial 1 is interrupted; by threes: the first batch (0-2) is
    interrupt_trials(monkeypatch, {1} if batch == 1 else {0, 1, 2})
    argv = ["study", "run", str(tmp_path / "s.toml"), "--root", str(root), "--n-trials", "6", "--batch", str(batch)]
    assert main(argv) == 130
    monkeypatch.undo()
    first = optuna.load_study(study_name="cut", storage=url).trials
    interrupted = [t for t in first if t.state == optuna.trial.TrialState.FAIL]
    assert [t.number for t in interrupted] == ([1] if batch == 1 else [0, 1, 2])
    assert all(t.user_attrs["fail_reason"].startswith("interrupted") for t in interrupted)
    finished = len(first) - len(interrupted)

    # the continue command repeats every flag, with the trials not yet run
    command = continue_command(capsys.readouterr().err)
    assert command == ["study", "run", str(tmp_path / "s.toml"), "--n-trials", str(6 - finished), "--root", str(root),
                       *(["--batch", "3"] if batch == 3 else [])]
    assert main(command) == 0
    err = capsys.readouterr().err
    assert f"retrying {len(interrupted)} interrupted trial(s) first, with the same parameters: " \
           + ", ".join(f"#{t.number}" for t in interrupted) in err
    trials = optuna.load_study(study_name="cut", storage=url).trials
    new = trials[len(first):]
    assert len(new) == 6 - finished  # exactly what the command asked for, retries included
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in new)
    retries = new[:len(interrupted)]
    assert [t.user_attrs["retry_of"] for t in retries] == [t.number for t in interrupted]
    assert [t.params for t in retries] == [t.params for t in interrupted]
    assert all("retry_of" not in t.user_attrs for t in new[len(interrupted):])
    for t in retries:  # a run folder of its own
        assert Path(t.user_attrs["run_folder"]).name == f"trial-{t.number:04d}"
        assert f"trial {t.number} (retry of #{t.user_attrs['retry_of']}): " in err
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 6  # the 6 first asked for

    # each interrupted trial is retried once: continuing again retries nothing
    assert main(["study", "run", str(tmp_path / "s.toml"), "--root", str(root), "--n-trials", "1"]) == 0
    assert "retrying" not in capsys.readouterr().err
    assert sum("retry_of" in t.user_attrs for t in optuna.load_study(study_name="cut", storage=url).trials) == len(interrupted)
    assert main(["study", "classes", "cut", "--root", str(root), "--by", "sum", "--tol", "1000", "--csv", str(tmp_path / "c.csv")]) == 0
    assert int(read_csv(tmp_path / "c.csv")[0]["n"]) == 7  # every complete trial once; the interrupted ones not at all


@pytest.mark.parametrize("batch, cut", [(1, {1}), (3, {0, 1, 2})], ids=["one-at-a-time", "batch-3"])
def test_an_interrupted_grid_study_ends_with_every_cell_complete_once(tmp_path, capsys, monkeypatch, batch, cut):
    space = 'depth = { choices = [1, 2] }\nwidth = 8\n"train.lr" = { choices = [0.05, 0.1] }\n'  # 4 cells
    (tmp_path / "s.toml").write_text(study_text(name="grid", sampler="grid", space=space, n_trials=4))
    root = tmp_path / "runs"
    interrupt_trials(monkeypatch, cut)
    assert main(["study", "run", str(tmp_path / "s.toml"), "--root", str(root), "--batch", str(batch)]) == 130
    monkeypatch.undo()
    assert main(continue_command(capsys.readouterr().err)) == 0, capsys.readouterr().err
    trials = optuna.load_study(study_name="grid", storage=f"sqlite:///{root}/studies.sqlite3").trials
    complete = [tuple(sorted(t.params.items())) for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(complete) == sorted({(("depth", d), ("train.lr", lr)) for d in (1, 2) for lr in (0.05, 0.1)})
    assert len(trials) == 4 + len(cut)


@pytest.mark.parametrize("batch", [1, 4])
def test_until_runs_to_a_total_of_complete_trials(tmp_path, capsys, batch):
    (tmp_path / "s.toml").write_text(study_text(name="total", sampler="random", space="depth = 1\nwidth = { low = 8, high = 16 }\n"))
    root = tmp_path / "runs"
    url = f"sqlite:///{root}/studies.sqlite3"
    run = ["study", "run", str(tmp_path / "s.toml"), "--root", str(root), "--batch", str(batch)]
    assert main([*run, "--n-trials", "2"]) == 0
    assert main([*run, "--until", "5"]) == 0
    assert len(optuna.load_study(study_name="total", storage=url).trials) == 5  # 3 more, not 5 (nor a batch of 4)
    capsys.readouterr()
    assert main([*run, "--until", "5"]) == 0
    assert "already holds 5 complete trials or more (--until 5)" in capsys.readouterr().err
    # with --n-trials too, at most that many here
    assert main([*run, "--until", "9", "--n-trials", "1"]) == 0
    assert len(optuna.load_study(study_name="total", storage=url).trials) == 6


def test_the_continue_command_repeats_every_option(tmp_path):
    import shlex

    from rankprune.cli import _study_resume_command, build_parser

    given = ["study", "run", "s.toml", "--n-trials", "12", "--until", "40", "--storage", "sqlite:///x.db",
             "--allow-other-tables", "--study-name", "other", "--seed", "3", "--root", "elsewhere", "--heartbeat", "5",
             "--data-dir", "/data", "--no-download", "--batch", "4", "--batch-members", "2",
             "--artifact-store", "s3://lab/rank"]
    args = build_parser().parse_args(given)
    again = build_parser().parse_args(shlex.split(_study_resume_command(args, 8))[1:])
    expected = {**vars(args), "n_trials": 8}
    assert {k: v for k, v in vars(again).items() if k != "handler"} == {k: v for k, v in expected.items() if k != "handler"}
    # a new option of `study run` must be added to the continue command (and here)
    assert set(vars(args)) == {"command", "study_command", "handler", "file", "n_trials", "until", "storage",
                               "allow_other_tables", "study_name", "seed", "root", "heartbeat", "data_dir",
                               "no_download", "batch", "batch_members", "artifact_store"}


def test_a_short_trial_shows_its_seconds_to_3_significant_figures(tmp_path, capsys):
    from rankprune.units import seconds

    (tmp_path / "s.toml").write_text(study_text(name="quick", space="depth = 1\nwidth = 8\n"))
    root = tmp_path / "runs"
    assert main(["study", "run", str(tmp_path / "s.toml"), "--root", str(root), "--n-trials", "1"]) == 0
    [trial] = optuna.load_study(study_name="quick", storage=f"sqlite:///{root}/studies.sqlite3").trials
    took = trial.user_attrs["cumulative_seconds"]
    assert f"  {seconds(took)} s" in capsys.readouterr().err
    assert seconds(0.0342) == "0.0342" and seconds(1.5) == "1.50" and seconds(99.96) == "100" and seconds(4567.8) == "4,570"


@pytest.mark.parametrize("metric", ["test_acc", "val_acc"])
def test_a_study_optimising_a_test_split_metric_warns_once_at_start_in_one_line(tmp_path, capsys, metric):
    (tmp_path / "s.toml").write_text(tiny_study_toml("warned", n_trials=1, objectives=[(metric, "maximize")],
                                                     space="depth = 1\nwidth = 8\n"))
    assert main(["study", "run", str(tmp_path / "s.toml"), "--root", str(tmp_path / "runs")]) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "test split" in line]
    if metric == "val_acc":
        assert warned == []
        return
    [line] = warned
    assert line.startswith("warning: objective test_acc is measured on the test split") and "val_acc" in line
    assert err.index(line) < err.index("trial 0:")  # at the start, before any trial


def test_study_classes_lists_censored_members_with_their_widths_as_bounds(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'censored.sqlite3'}"
    study = optuna.create_study(study_name="bounds", storage=url)
    study.set_user_attr("mode", "evolve")
    for number, (widths, censored) in enumerate([([10], [None]), ([64], ["input"]), ([12], [None])]):
        attrs = {"initial_widths": [96], "widths": widths, "censored": censored, "ranks": [10 if number < 2 else 12],
                 "network_rank_sum": 10, "network_rank_normalized": 0.5, "train_acc": 0.97, "val_acc": 0.95,
                 "test_acc": 0.94, "generalisation_gap": 0.03, "parameters": 1000}
        study.add_trial(optuna.trial.create_trial(params={"n": number}, value=0.95, user_attrs=attrs,
                                                  distributions={"n": optuna.distributions.IntDistribution(0, 9)}))
    out = tmp_path / "classes.csv"
    assert main(["study", "classes", "bounds", "--storage", url, "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "#1 [>= 64]" in printed and "'>= N', a lower bound" in printed
    assert [r["censored"] for r in read_csv(out)] == ["#1 [>= 64]", ""]
