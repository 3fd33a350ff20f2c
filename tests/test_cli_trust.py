"""What a researcher relies on from the command line: nothing of theirs deleted, one writer per run folder,
one-line errors that write nothing, SIGTERM handled as Ctrl-C, resume without friction.

Most cases call cli.main in-process (the same code minus process start-up); the ones about signals and
a second process are real subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from rankprune.cli import main
from rankprune.runfolder import CONFIG, DATA, DEPTHS, EPOCHS, ITERATIONS, STATUS, RunFolder
from studyfiles import tiny_study_toml
from cli_checks import one_line_error, tree

GUARD_S = 300  # a hung child fails its test instead of the suite; not a timing assertion
TINY = ["--dataset", "digits", "--width", "16", "--max-epochs", "2", "--patience", "2", "--lr-drops", "0",
        "--rank", "numerical:0.2", "--layers", "1"]
# Batch size 1 makes an epoch about 650 steps on half of digits: long enough to act on a run mid-way.
# One pass per epoch: at batch size 1 an epoch of half of digits is about 650 steps (the default would cycle it
# to the full split's 1,294).
SLOW = ["--dataset", "digits", "--layers", "1", "--width", "16", "--batch-size", "1", "--lr", "0.005",
        "--train-fraction", "0.25", "--samples-per-epoch", "pass", "--max-epochs", "2", "--patience", "2",
        "--max-iterations", "2", "--rank", "numerical:0.2"]


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}






def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rankprune.cli", *args], cwd=cwd, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(predicate, child: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + GUARD_S
    while not predicate():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.02)


def stop(child: subprocess.Popen, sig: int) -> str:
    """Send `sig` to a running child and return its stderr once it has exited (killed if it hangs)."""
    try:
        if child.poll() is None:
            child.send_signal(sig)
        return child.communicate(timeout=GUARD_S)[1]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# --- nothing a user owns is deleted -------------------------------------------------------------------
def test_overwrite_refuses_a_folder_of_the_users_files(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("years of work")
    (out / "figures").mkdir()
    (out / "figures" / "plot.png").write_bytes(b"\x89PNG")
    before = tree(tmp_path)
    line = one_line_error(capsys, main(["evolve", *TINY, "--out", str(out), "--overwrite"]))
    assert "only a rankprune run" in line
    assert tree(tmp_path) == before


# --- one writer per run folder; SIGTERM as Ctrl-C -----------------------------------------------------
def test_a_second_writer_is_refused_and_sigterm_keeps_the_finished_work(tmp_path, capsys):
    out = tmp_path / "run"
    child = start(["evolve", *SLOW, "--out", str(out)], tmp_path)
    try:
        wait_for(lambda: RunFolder(out).rows(EPOCHS), child, "an epoch row")
        # a resume while the first process still writes: refused, naming the writer
        line = one_line_error(capsys, main(["evolve", "--out", str(out), "--resume"]))
        assert f"being written by process {child.pid}" in line
        line = one_line_error(capsys, main(["evolve", *SLOW, "--out", str(out), "--overwrite"]))
        assert f"being written by process {child.pid}" in line
        seen = RunFolder(out).rows(EPOCHS)
    finally:
        stderr = stop(child, signal.SIGTERM)
    assert child.returncode == 143, stderr  # 128 + SIGTERM
    assert "Traceback" not in stderr and "--resume" in stderr
    assert json.loads((out / STATUS).read_text())["state"] == "interrupted"
    assert RunFolder(out).rows(EPOCHS)[: len(seen)] == seen

    # the same command plus --resume is accepted (its flags agree with the stored config)
    assert main(["evolve", *SLOW, "--out", str(out), "--resume"]) == 0, capsys.readouterr().err
    run = RunFolder(out)
    keys = [(r["depth"], r["iteration"], r["epoch"]) for r in run.rows(EPOCHS)]
    assert len(keys) == len(set(keys))  # no row written twice
    assert [r["iteration"] for r in run.rows(ITERATIONS)] == list(range(len(run.rows(ITERATIONS))))
    assert json.loads((out / STATUS).read_text())["state"] == "finished"


# --- errors: one line, exit 2, nothing written ----------------------------------------------------------
def _truncated(run: Path) -> None:
    run.mkdir()
    (run / CONFIG).write_text('{"data": {"dataset": "dig')


def _mistyped(run: Path) -> None:
    run.mkdir()
    (run / CONFIG).write_text(json.dumps({"data": {"dataset": "digits"}, "train": {"lr": "fast"}}))


def _foreign(run: Path) -> None:
    run.mkdir()
    (run / CONFIG).write_text(json.dumps({"name": "my-app", "version": 3}))


def _a_file(path: Path) -> None:
    path.write_text("not a folder\n")


ERRORS = {
    "seed-negative": (["evolve", *TINY, "--seed", "-1", "--out", "{tmp}/run"], None, "seed"),
    "seed-huge": (["evolve", *TINY, "--seed", "99999999999999999999", "--out", "{tmp}/run"], None, "seed"),
    "config-mistyped": (["evolve", "--config", "{tmp}/cfg.toml", "--out", "{tmp}/run"], "cfg", "train.lr"),
    "resume-truncated-config": (["evolve", "--resume", "--out", "{tmp}/run"], _truncated, "not valid JSON"),
    "resume-mistyped-config": (["evolve", "--resume", "--out", "{tmp}/run"], _mistyped, "train.lr"),
    "resume-missing-folder": (["evolve", "--resume", "--out", "{tmp}/nowhere"], None, "no such folder"),
    "report-foreign-config": (["report", "{tmp}/run"], _foreign, "not a rankprune config"),
    "classes-csv-folder": (["study", "classes", "s", "--root", "{tmp}", "--csv", "{tmp}"], None, "is a folder"),
    "trends-train-tol": (["study", "trends", "s", "--root", "{tmp}", "--train-tol", "-1"], None, "--train-tol"),
    "classes-no-storage": (["study", "classes", "s", "--root", "{tmp}/nothing"], None, "no study storage"),
    "trends-no-storage": (["study", "trends", "s", "--root", "{tmp}/nothing"], None, "no study storage"),
    "report-no-storage": (["report", "s", "--root", "{tmp}/nothing"], None, "no study storage"),
    # --data-dir naming a file: refused also for datasets that never read the folder (digits, regression)
    "data-dir-file-digits": (["evolve", *TINY, "--data-dir", "{tmp}/run", "--out", "{tmp}/out"], _a_file, "is a file, not a folder"),
    "data-dir-file-regression": (["evolve", "--dataset", "regression:simple", "--width", "8", "--max-epochs", "1",
                                  "--layers", "1", "--data-dir", "{tmp}/run", "--out", "{tmp}/out"], _a_file,
                                 "is a file, not a folder"),
    "data-dir-file-mnist": (["evolve", "--dataset", "mnist", "--no-download", "--data-dir", "{tmp}/run", "--out", "{tmp}/out"],
                            _a_file, "is a file, not a folder"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, setup, expected = ERRORS[case]
    if setup == "cfg":
        (tmp_path / "cfg.toml").write_text('[data]\ndataset = "digits"\n[train]\nlr = "fast"\n')
    elif setup is not None:
        setup(tmp_path / "run")
    before = tree(tmp_path)
    line = one_line_error(capsys, main([a.replace("{tmp}", str(tmp_path)) for a in args]))
    assert expected in line
    assert tree(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({Path(k).parts[0] for k in before} | (
        {"run"} if (tmp_path / "run").is_dir() and not any((tmp_path / "run").iterdir()) else set()))


def test_study_run_without_its_data_suggests_what_study_run_takes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = tiny_study_toml("offline").replace('dataset = "digits"', 'dataset = "mnist"')
    (tmp_path / "s.toml").write_text(text)
    (tmp_path / "empty").mkdir()
    line = one_line_error(capsys, main(["study", "run", "s.toml", "--data-dir", str(tmp_path / "empty"), "--no-download",
                                        "--root", str(tmp_path / "runs")]))
    assert "--dataset" not in line  # `study run` has no such flag
    assert "--data-dir" in line and "[base.data]" in line
    assert not (tmp_path / "runs").exists()


# --- resume without friction ----------------------------------------------------------------------------
def test_resume_accepts_agreeing_flags_names_every_conflict_and_finds_the_default_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command = ["evolve", *TINY, "--max-iterations", "1", "--seed", "5"]
    assert main(command) == 0
    [out] = (tmp_path / "runs").iterdir()
    assert json.loads((out / DEPTHS).read_text())["1"]["stop_reason"] == "max-iterations"
    capsys.readouterr()

    # conflicting flags: every one named at once, nothing written
    before = tree(out)
    line = one_line_error(capsys, main([*command, "--lr", "0.2", "--weight-decay", "0.1", "--resume"]))
    assert "no run with these settings" in line and "--out" in line  # other settings: another default folder
    line = one_line_error(capsys, main([*command, "--lr", "0.2", "--weight-decay", "0.1", "--resume", "--out", str(out)]))
    assert "--lr 0.2" in line and "--weight-decay 0.1" in line
    line = one_line_error(capsys, main([*command, "--max-iterations", "0", "--resume", "--out", str(out)]))
    assert "--max-iterations" in line
    assert tree(out) == before

    # --resume without --out finds the default folder; a larger --max-iterations extends the finished depth
    assert main([*command[:-4], "--max-iterations", "3", "--seed", "5", "--resume"]) == 0, capsys.readouterr().err
    assert list((tmp_path / "runs").iterdir()) == [out]
    iterations = RunFolder(out).rows(ITERATIONS)
    assert len(iterations) > 1
    assert [r["iteration"] for r in iterations] == list(range(len(iterations)))
    assert json.loads((out / CONFIG).read_text())["evolve"]["max_iterations"] == 3
    assert json.loads((out / DEPTHS).read_text())["1"]["iterations"] == len(iterations)


def test_extending_a_warm_run_replaces_its_anneal(tmp_path, capsys):
    out = tmp_path / "run"
    command = ["evolve", *TINY, "--lr-drops", "1", "--rebuild", "warm", "--out", str(out)]
    assert main([*command, "--max-iterations", "1"]) == 0
    assert [r["phase"] for r in RunFolder(out).rows(ITERATIONS)] == ["shrink", "anneal"]
    assert main([*command, "--max-iterations", "2", "--resume"]) == 0, capsys.readouterr().err
    rows = RunFolder(out).rows(ITERATIONS)
    assert [r["phase"] for r in rows] == ["shrink"] * (len(rows) - 1) + ["anneal"]
    assert len(rows) == 3 and [r["iteration"] for r in rows] == [0, 1, 2]
    epochs = RunFolder(out).rows(EPOCHS)
    assert {r["iteration"] for r in epochs} == {0, 1, 2}


def test_a_tiny_validation_split_is_warned_about_once(tmp_path, capsys):
    assert main(["evolve", *TINY, "--max-iterations", "1", "--val-fraction", "0.05", "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert err.count("validation split has only") == 1
    described = json.loads((tmp_path / "r" / DATA).read_text())
    assert described["n_val"] < 100 and str(described["n_val"]) in err


# --- studies ------------------------------------------------------------------------------------------------
def test_a_continued_study_draws_new_points_and_repeats_count_once(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(tiny_study_toml("cont", sampler="random", max_epochs=1))
    for _ in range(2):  # two processes' worth: each builds its sampler anew
        assert main(["study", "run", "s.toml", "--n-trials", "3", "--root", "runs"]) == 0
    trials = optuna.load_study(study_name="cont", storage="sqlite:///runs/studies.sqlite3").trials
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(params) == 6 and len(set(params)) == 6, params

    # a space with nothing to sample: every trial is the same experiment, counted once
    fixed = tiny_study_toml("fixed", sampler="random", max_epochs=1, space="depth = 1\nwidth = 8\n")
    (tmp_path / "f.toml").write_text(fixed)
    assert main(["study", "run", "f.toml", "--n-trials", "2", "--root", "runs"]) == 0
    capsys.readouterr()
    assert main(["study", "classes", "fixed", "--root", "runs", "--csv", "classes.csv"]) == 0
    assert "counted once: #1 (= #0)" in capsys.readouterr().err
    import pandas as pd

    table = pd.read_csv("classes.csv")
    assert table["n"].tolist() == [1] and str(table["members"][0]) == "0"


def test_ctrl_c_in_a_study_fails_the_trial_with_a_reason_and_repeats_every_flag(tmp_path):
    space = 'depth = 1\nwidth = { low = 8, high = 16 }\n"train.batch_size" = 1\n'
    (tmp_path / "s.toml").write_text(tiny_study_toml("stop", max_epochs=2, space=space))
    root, storage = tmp_path / "r", f"sqlite:///{tmp_path}/db.sqlite3"
    flags = ["--root", str(root), "--storage", storage, "--data-dir", str(tmp_path), "--no-download", "--study-name", "stop2"]
    child = start(["study", "run", "s.toml", "--n-trials", "2", *flags], tmp_path)
    folder = root / "studies" / "stop2" / "trial-0000"
    try:
        wait_for(lambda: RunFolder(folder).rows(EPOCHS), child, "a trial's first epoch")
    finally:
        stderr = stop(child, signal.SIGINT)
    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr
    for flag in flags:
        assert flag in stderr, (flag, stderr)
    [trial] = optuna.load_study(study_name="stop2", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.FAIL
    assert "interrupted" in trial.user_attrs["fail_reason"]
    assert json.loads((folder / STATUS).read_text())["state"] == "interrupted"


# --- model families (issue 9) ------------------------------------------------------------------------------
def test_a_cnn_runs_on_digits_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "cnn"
    assert main(["evolve", "--dataset", "digits", "--model", "cnn", "--width", "12", "--layers", "1..2",
                 "--max-epochs", "3", "--patience", "2", "--max-iterations", "2", "--out", str(out)]) == 0, capsys.readouterr().err
    assert "TFLOP" in capsys.readouterr().out
    config = json.loads((out / CONFIG).read_text())
    assert config["model"] == {"family": "cnn", "width": 12, "params": None, "alpha": None}
    assert config["evolve"]["rebuild"] == "warm"  # the default now
    depths = json.loads((out / DEPTHS).read_text())
    assert [depths[d]["initial_widths"] for d in ("1", "2")] == [[12], [12, 12]]
    assert all(depths[d]["family"] == "cnn" and max(depths[d]["widths"]) <= 12 for d in depths)
    rows = RunFolder(out).rows(EPOCHS)
    # a conv weight (out, in, 3, 3) is measured as an (out, in*9) matrix: rank at most its channels
    assert all(r["rank_numerical"][0] <= r["widths"][0] for r in rows)
    assert json.loads((out / DATA).read_text())["input_shape"] == [1, 8, 8]


def test_params_starts_every_depth_at_about_that_many_parameters(tmp_path, capsys):
    out = tmp_path / "matched"
    assert main(["evolve", *TINY[:-2], "--layers", "1..3", "--params", "6000", "--max-iterations", "1",
                 "--width", "16", "--out", str(out)]) == 2  # --width and --params exclude each other
    capsys.readouterr()
    flags = [f for f in TINY if f not in ("--width", "16")][:-2]
    assert main(["evolve", *flags, "--layers", "1..3", "--params", "6000", "--max-iterations", "1", "--out", str(out)]) == 0
    depths = json.loads((out / DEPTHS).read_text())
    for d in ("1", "2", "3"):
        assert depths[d]["params_requested"] == 6000
        assert abs(depths[d]["initial_parameters"] - 6000) < 0.1 * 6000  # one width step at most
    assert len({tuple(depths[d]["initial_widths"]) for d in depths}) == 3  # deeper: narrower


def test_a_cnn_on_inputs_without_an_image_shape_is_refused(tmp_path, tiny_config):
    import torch

    import rankprune as rp

    x, y = torch.randn(300, 20), torch.randint(0, 3, (300,))
    with pytest.raises(rp.ConfigError, match="needs images"):
        rp.run_tensors(tiny_config(model={"family": "cnn", "width": 8}), train=(x[:200], y[:200]),
                       val=(x[200:250], y[200:250]), test=(x[250:], y[250:]), out=tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_a_study_samples_the_family_and_a_parameter_budget(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = 'depth = { low = 1, high = 2 }\n"model.family" = { choices = ["mlp", "cnn"] }\n"model.params" = { choices = [3000, 6000] }\n'
    (tmp_path / "s.toml").write_text(tiny_study_toml("fam", sampler="random", max_epochs=1, space=space))
    assert main(["study", "run", "s.toml", "--n-trials", "4", "--root", "runs"]) == 0, capsys.readouterr().err
    trials = optuna.load_study(study_name="fam", storage="sqlite:///runs/studies.sqlite3").trials
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    from rankprune.models import get_family

    for t in trials:
        family, params = t.params["model.family"], t.params["model.params"]
        assert t.user_attrs["family"] == family
        count = get_family(family).parameter_count((1, 8, 8), t.user_attrs["initial_widths"], 10)
        assert abs(count - params) < 0.25 * params  # the width the budget implies, for that family and depth
    # a width beside a parameter budget is a contradiction in the file: refused before any trial
    (tmp_path / "bad.toml").write_text(tiny_study_toml("bad", space=space + "width = 8\n"))
    capsys.readouterr()
    line = one_line_error(capsys, main(["study", "run", "bad.toml", "--root", "runs"]))
    assert "model.params sets the initial width" in line
