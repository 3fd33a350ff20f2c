"""The command line, run as a user runs it: a subprocess, exit codes, the run folder, Ctrl-C and resume."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from pathlib import Path

import pytest
import torch

from rankprune.cli import main
from rankprune.config import RunConfig
from rankprune.evolve import DEPTH_STOP_REASONS
from rankprune.units import widths_text
from rankprune.runfolder import CONFIG, DEPTHS, ENVIRONMENT, EPOCHS, ITERATIONS, STATUS, RunFolder

# A guard so a hung child fails the test instead of the suite; not a timing assertion.
GUARD_S = 300
SMALL = ["--dataset", "digits", "--width", "16", "--max-epochs", "2", "--patience", "2", "--rank", "numerical:0.2"]


def child_env() -> dict[str, str]:
    # One OpenMP thread per child: see conftest.py (oversubscribed 2-core machine).
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def rankprune(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rankprune.cli", *args], cwd=cwd, env=child_env(),
        capture_output=True, text=True, timeout=GUARD_S,
    )


def reset_sigint() -> None:
    # A child started from a non-interactive shell's background job inherits SIGINT ignored, and
    # Python then never installs its KeyboardInterrupt handler; restore the default first.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# --- a successful run ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("cli")
    out = cwd / "run"
    done = rankprune("evolve", *SMALL, "--layers", "1..2", "--max-iterations", "2", "--seed", "3", "--out", str(out), cwd=cwd)
    return done, out


def test_evolve_exits_0_and_prints_the_summary(cli_run):
    done, out = cli_run
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "rank-pruning results per depth" in done.stdout
    depths = json.loads((out / DEPTHS).read_text())
    for summary in depths.values():
        # a censored width reads as its bound, '>= 16' or '<= 14' (units.widths_text)
        assert widths_text(summary["widths"], summary.get("censored")) in done.stdout
        assert summary["stop_reason"] in done.stdout
    assert f"results: {out}" in done.stderr


def test_evolve_writes_a_complete_run_folder(cli_run):
    _done, out = cli_run
    cfg = RunConfig.from_dict(json.loads((out / CONFIG).read_text()))
    assert (cfg.data.dataset, cfg.model.width, cfg.evolve.layers, cfg.evolve.max_iterations, cfg.seed) == ("digits", 16, (1, 2), 2, 3)
    assert cfg.rank.measure == "numerical:0.2"
    env = json.loads((out / ENVIRONMENT).read_text())
    assert env["seed"] == 3 and env["device"] == "cpu"
    assert env["versions"]["torch"] == torch.__version__
    assert {"python", "rankprune", "numpy", "torchvision"} <= set(env["versions"])
    assert json.loads((out / STATUS).read_text())["state"] == "finished"
    depths = json.loads((out / DEPTHS).read_text())
    assert sorted(depths) == ["1", "2"]
    assert all(d["stop_reason"] in DEPTH_STOP_REASONS for d in depths.values())
    run = RunFolder(out)
    assert {r["depth"] for r in run.rows(ITERATIONS)} == {1, 2}
    assert all(run.weights_path(int(d)).is_file() for d in depths)
    assert all(run.weights_path(r["depth"], r["iteration"]).is_file() for r in run.rows(ITERATIONS))


@pytest.mark.skipif(not (Path(sys.executable).parent / "rankprune").is_file(), reason="no rankprune console script beside this python")
def test_console_script_is_installed(tmp_path):
    done = subprocess.run([str(Path(sys.executable).parent / "rankprune"), "--version"], cwd=tmp_path,
                          env=child_env(), capture_output=True, text=True, timeout=GUARD_S)
    assert done.returncode == 0
    assert done.stdout.strip().startswith("rankprune ")


# --- bad input: exit 2, one line on stderr, nothing written ---------------------------------------
def _nonempty_out(tmp_path: Path) -> list[str]:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    return []


def _empty_data_dir(tmp_path: Path) -> list[str]:
    (tmp_path / "empty").mkdir()
    return ["--data-dir", str(tmp_path / "empty")]


BAD = {
    "layers-reversed": (["--layers", "5..2"], None),
    "layers-garbage": (["--layers", "x"], None),
    "layers-zero": (["--layers", "0"], None),
    "dataset": (["--dataset", "nope"], None),
    "rank": (["--rank", "bogus"], None),
    "rank-energy-without-q": (["--rank", "energy"], None),
    "width-zero": (["--width", "0"], None),
    "width-not-a-number": (["--width", "abc"], None),
    "weight-decay-negative": (["--weight-decay", "-1"], None),
    "unknown-flag": (["--widht", "3"], None),
    "missing-data": (["--dataset", "mnist", "--no-download"], _empty_data_dir),
    "existing-out": (["--dataset", "digits"], _nonempty_out),
    "resume-without-config": (["--resume"], None),
    "resume-with-a-flag": (["--resume", "--width", "8"], None),
    "model-unknown": (["--dataset", "digits", "--model", "nosuch"], None),
    "params-zero": (["--dataset", "digits", "--params", "0"], None),
    "params-with-width": (["--dataset", "digits", "--params", "5000", "--width", "8"], None),
}


# Cases that must fail in a real process (argparse's own exit, data and folder checks); the others run through
# main() in this process, which takes the same path to the same one line and exit status without importing torch
# afresh each time (17 children cost about 30 s of the suite on 2 cores).
IN_A_PROCESS = {"unknown-flag", "missing-data", "existing-out", "dataset"}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory):
    """case -> (folder it ran in, names in that folder before, the outcome: returncode, stdout, stderr), for
    every case of BAD.

    The children mostly import torch, so they run four at a time rather than one after another.
    """

    def prepare(case: str):
        args, setup = BAD[case]
        cwd = tmp_path_factory.mktemp(case)
        extra = setup(cwd) if setup else []
        return cwd, sorted(p.name for p in cwd.iterdir()), [*args, *extra, "--out", str(cwd / "out")]

    def child(case: str):
        cwd, before, argv = prepare(case)
        return cwd, before, rankprune("evolve", *argv, cwd=cwd)

    def here(case: str):  # one at a time: it changes this process's working folder
        cwd, before, argv = prepare(case)
        out, err, previous = io.StringIO(), io.StringIO(), os.getcwd()
        os.chdir(cwd)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(["evolve", *argv])
                except SystemExit as exc:  # argparse's own complaint exits, as it does in a real process
                    code = exc.code
        finally:
            os.chdir(previous)
        return cwd, before, SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())

    runs = {case: here(case) for case in sorted(set(BAD) - IN_A_PROCESS)}
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs.update(zip(sorted(IN_A_PROCESS), pool.map(child, sorted(IN_A_PROCESS))))
    return runs


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_exit_2(case, bad_runs):
    cwd, before, done = bad_runs[case]
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert re.match(r"rankprune( evolve)?: error: ", done.stderr)
    assert done.stdout == ""
    assert sorted(p.name for p in cwd.iterdir()) == before  # no --out, no runs/ folder
    if case == "existing-out":
        assert [p.name for p in (cwd / "out").iterdir()] == ["precious.txt"]
        assert (cwd / "out" / "precious.txt").read_text() == "keep me"
    if case == "missing-data":
        assert str(cwd / "empty") in done.stderr and "--dataset digits" in done.stderr
        assert "train-images-idx3-ubyte" in done.stderr
        assert list((cwd / "empty").iterdir()) == []


def test_resume_of_a_folder_without_config_leaves_it_alone(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("not a run")
    done = rankprune("evolve", "--resume", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert CONFIG in done.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_device_cuda_without_cuda_is_exit_2(tmp_path):
    done = rankprune("evolve", *SMALL, "--device", "cuda", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert "cuda" in done.stderr.lower()
    assert not (tmp_path / "out").exists()


def test_resume_and_overwrite_together_are_exit_2(cli_run, tmp_path):
    _done, out = cli_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    done = rankprune("evolve", "--resume", "--overwrite", "--out", str(copy), cwd=tmp_path)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1


# --- Ctrl-C and resume ----------------------------------------------------------------------------
def test_ctrl_c_leaves_a_resumable_folder(tmp_path):
    out = tmp_path / "run"
    # Batch size 1 makes each epoch about 320 steps: long enough to interrupt after the first epoch
    # with three still to go, short enough to finish on resume.
    args = ["evolve", "--dataset", "digits", "--layers", "1", "--width", "16", "--batch-size", "1", "--lr", "0.005",
            "--train-fraction", "0.25", "--samples-per-epoch", "pass", "--max-epochs", "2", "--patience", "2",
            "--max-iterations", "2", "--rank", "numerical:0.2", "--out", str(out)]
    child = subprocess.Popen([sys.executable, "-m", "rankprune.cli", *args], cwd=tmp_path, env=child_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=reset_sigint)
    try:
        deadline = time.monotonic() + GUARD_S
        while not RunFolder(out).rows(EPOCHS):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "no epoch row appeared"
            time.sleep(0.02)
        seen = RunFolder(out).rows(EPOCHS)
        child.send_signal(signal.SIGINT)
        _stdout, stderr = child.communicate(timeout=GUARD_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "--resume" in stderr
    status = json.loads((out / STATUS).read_text())
    assert status["state"] == "interrupted"
    assert status["depth"] == 1 and "iteration" in status
    rows = RunFolder(out).rows(EPOCHS)
    assert rows[: len(seen)] == seen  # every epoch row written before Ctrl-C is still there
    assert not (out / DEPTHS).exists()  # it really was cut short

    # the resume in this process: the process start is what the first half tested, and it costs seconds
    from rankprune.cli import main

    assert main(["evolve", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / STATUS).read_text())["state"] == "finished"
    run = RunFolder(out)
    iterations = run.rows(ITERATIONS)
    assert [r["iteration"] for r in iterations] == list(range(len(iterations)))
    assert len(run.rows(EPOCHS)) == sum(r["epochs"] for r in iterations)
    assert json.loads((out / DEPTHS).read_text())["1"]["stop_reason"] in DEPTH_STOP_REASONS
