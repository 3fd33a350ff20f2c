"""The one run lifecycle (rankprune/job.py): exact resumes of replicates at any interruption point, what
--overwrite removes and keeps, disk errors, absurd sizes, and the same checks on every path (CLI, API,
replicates, studies)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rankprune.evolve.loop as loop
from rankprune.cli import main
from rankprune.runfolder import DEPTHS, EPOCHS, ITERATIONS, LOCK, SPECTRA, STATUS, RunFolder
from cli_checks import last_line_error as last_line, one_line_error as one_line, tree

GUARD_S = 300  # a hung child fails its test instead of the suite; not a timing assertion
SEEDS = ["--dataset", "digits", "--layers", "1..2", "--width", "24", "--max-epochs", "4", "--patience", "2",
         "--max-iterations", "2", "--seeds", "0..2"]


def comparable(rows: list[dict]) -> list[dict]:
    """Rows without what depends on the clock: the same computation gives these exactly."""
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]


def results(root: Path) -> dict:
    return {s: {t: comparable(RunFolder(root / f"seed-{s}").rows(t)) for t in (ITERATIONS, EPOCHS, SPECTRA)}
            | {DEPTHS: {d: comparable([v])[0] for d, v in json.loads((root / f"seed-{s}" / DEPTHS).read_text()).items()}}
            for s in (0, 1, 2)}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference") / "reps"
    assert main(["evolve", *SEEDS, "--out", str(root)]) == 0
    rows = {s: RunFolder(root / f"seed-{s}").rows(ITERATIONS) for s in (0, 1, 2)}
    return root, results(root), rows


def _interrupt_after(monkeypatch, n: int) -> None:
    real, calls = loop._record, {"n": 0}

    def record_then_interrupt(*args):
        real(*args)
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_record", record_then_interrupt)


@pytest.mark.parametrize("point", ["first-row", "two-of-three", "mid-round", "depth-boundary", "first-row-of-depth-2"])
def test_an_interrupted_replicates_run_resumes_to_exactly_the_uninterrupted_result(point, uninterrupted, tmp_path, monkeypatch):
    """Interrupted inside a round, some seeds have finished that iteration and some not; resumed as they stand the
    late ones would train in a smaller batch and give other numbers. Every row must equal the uninterrupted run's."""
    reference_root, reference, rows = uninterrupted
    depth_one = sum(1 for s in rows for r in rows[s] if r["depth"] == 1)
    n = {"first-row": 1, "two-of-three": 2, "mid-round": 5, "depth-boundary": depth_one, "first-row-of-depth-2": depth_one + 1}[point]
    _interrupt_after(monkeypatch, n)
    root = tmp_path / "reps"
    assert main(["evolve", *SEEDS, "--out", str(root)]) == 130
    assert sum(len(RunFolder(root / f"seed-{s}").rows(ITERATIONS)) for s in (0, 1, 2)) == n  # every finished row kept
    monkeypatch.undo()
    assert main(["evolve", "--out", str(root), "--resume"]) == 0
    assert results(root) == reference


def test_a_replicates_run_killed_by_sigkill_resumes_to_exactly_the_uninterrupted_result(uninterrupted, tmp_path):
    """A real process killed (no handler runs, a row may be torn) once two seeds have finished depth 1's second round."""
    _root, reference, _rows = uninterrupted
    root = tmp_path / "reps"
    child = subprocess.Popen([sys.executable, "-m", "rankprune.cli", "evolve", *SEEDS, "--out", str(root)],
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + GUARD_S
    try:
        while sum(len(RunFolder(root / f"seed-{s}").rows(ITERATIONS)) for s in (0, 1, 2)) < 5:
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=GUARD_S)
    finally:
        if child.poll() is None:
            child.kill()
    assert json.loads((root / "seed-0" / STATUS).read_text())["state"] == "running"  # nothing ran to say otherwise
    assert main(["evolve", "--out", str(root), "--resume"]) == 0
    assert results(root) == reference


def test_with_one_member_per_batch_each_seed_is_exactly_its_single_run(tmp_path):
    """What the README promises: `--batch-members 1` trains every seed alone, so seed-S/ is exactly the single run
    `--seed S --data-seed D`; batched, it is the same computation with sums in another order."""
    flags = [a for a in SEEDS if a not in ("--seeds", "0..2")]
    assert main(["evolve", *flags, "--seeds", "0,2", "--batch-members", "1", "--out", str(tmp_path / "reps")]) == 0
    for seed in (0, 2):
        assert main(["evolve", *flags, "--seed", str(seed), "--data-seed", "0", "--out", str(tmp_path / f"single-{seed}")]) == 0
        alone = comparable(RunFolder(tmp_path / f"single-{seed}").rows(ITERATIONS))
        replicate = comparable(RunFolder(tmp_path / f"reps/seed-{seed}").rows(ITERATIONS))
        assert [{k: v for k, v in r.items() if k != "seed"} for r in replicate] == alone


def test_a_resume_keeps_the_batch_size_it_was_run_with(tmp_path, monkeypatch, capsys):
    _interrupt_after(monkeypatch, 2)
    root = tmp_path / "reps"
    assert main(["evolve", *SEEDS, "--batch-members", "2", "--out", str(root)]) == 130
    monkeypatch.undo()
    assert json.loads((root / "replicates.json").read_text())["batch_members"] == 2
    capsys.readouterr()
    assert main(["evolve", "--out", str(root), "--resume", "--batch-members", "3"]) == 2
    assert "--batch-members 3" in capsys.readouterr().err
    assert main(["evolve", "--out", str(root), "--resume"]) == 0  # continues with 2


# --- --overwrite replaces a rankprune result completely, and keeps what is the user's -------------------------


def test_overwrite_of_replicates_removes_the_old_seeds_and_report_and_keeps_the_users_files(uninterrupted, tmp_path, capsys):
    import shutil

    root = tmp_path / "reps"
    shutil.copytree(uninterrupted[0], root)
    (root / "report").mkdir()
    (root / "report" / "report.md").write_text("# old report")
    (root / "notes.md").write_text("what I saw")
    (root / "seed-2" / "my-plot.png").write_bytes(b"\x89PNG mine")
    capsys.readouterr()
    flags = [a for a in SEEDS if a not in ("--seeds", "0..2")]
    assert main(["evolve", *flags, "--seeds", "0,1", "--out", str(root), "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert "removed the earlier result" in err and "notes.md" in err and "seed-2/my-plot.png" in err
    assert sorted(p.name for p in root.iterdir()) == [LOCK, "notes.md", "replicates.json", "seed-0", "seed-1", "seed-2"]
    assert [p.name for p in (root / "seed-2").iterdir()] == ["my-plot.png"]  # only the user's file is left of seed 2
    assert json.loads((root / "replicates.json").read_text())["seeds"] == [0, 1]
    assert set(json.loads((root / "replicates.json").read_text())["summary"]["1"]["seeds"]) == {0, 1}


def test_a_single_run_overwrites_a_replicates_folder_and_the_other_way_round(uninterrupted, tmp_path, capsys):
    import shutil

    root = tmp_path / "reps"
    shutil.copytree(uninterrupted[0], root)
    flags = [a for a in SEEDS if a not in ("--seeds", "0..2")]
    assert main(["evolve", *flags, "--out", str(root), "--overwrite"]) == 0
    assert "removed the earlier result" in capsys.readouterr().err
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == sorted(
        ["config.json", "data.json", "depths.json", "environment.json", "epochs.jsonl", "iterations.jsonl",
         "spectra.jsonl", "status.json", "weights"])
    assert main(["evolve", *flags, "--seeds", "3", "--out", str(root), "--overwrite"]) == 0
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["replicates.json", "seed-3"]


def test_overwrite_still_refuses_a_folder_that_holds_no_rankprune_result(tmp_path, capsys):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "replicates.txt").write_text("mine")
    (out / "seed-1").mkdir()
    (out / "seed-1" / "data.csv").write_text("1,2")
    before = tree(tmp_path)
    assert main(["evolve", *SEEDS, "--out", str(out), "--overwrite"]) == 2
    assert "nothing was touched" in capsys.readouterr().err
    assert tree(tmp_path) == before


# --- errors: one line, exit 2, nothing half-made --------------------------------------------------------------




TINY = ["--dataset", "digits", "--width", "16", "--layers", "1", "--max-epochs", "2", "--patience", "2",
        "--max-iterations", "2", "--rank", "numerical:0.2"]


@pytest.mark.parametrize("args, expected", [
    (["--config", "{tmp}"], "is a folder"),
    (["--config", "{tmp}/latin1.toml"], "not UTF-8"),
    (["--width", "10000000"], "of memory to train"),
    (["--layers", "1..100000"], "depths go up to 1,000"),
    (["--layers", "1..1000000000000"], "spans more than"),
    (["--params", "1"], "below the smallest mlp of depth 1"),
    (["--hessian-top", "100000"], "more eigenvalues than the starting network"),
    (["--batch-members", "4"], "applies to replicates"),
])
def test_bad_input_is_one_line_and_writes_nothing(args, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "latin1.toml").write_bytes('[data]\ndataset = "digits"\n# Größe\n'.encode("latin-1"))
    before = tree(tmp_path)
    argv = ["evolve", *TINY, *[a.replace("{tmp}", str(tmp_path)) for a in args], "--out", str(tmp_path / "run")]
    if args[0] in ("--width", "--params"):
        argv.remove("16"), argv.remove("--width")
    line = one_line(capsys, main(argv))
    assert expected in line
    assert tree(tmp_path) == before and not (tmp_path / "run").exists()


def test_a_run_shows_its_networks_parameters_and_memory_before_it_starts(tmp_path, capsys):
    assert main(["evolve", *TINY, "--layers", "1..2", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "depth 1 [16] 1,210 parameters; depth 2 [16, 16] 1,482 parameters" in err
    assert "of memory to train the largest" in err and "of saved weights" in err


def test_the_api_and_studies_make_the_same_checks_as_the_cli(tmp_path, tiny_config):
    """The probes' check ran only on the CLI's path: the API and study trials started runs it refuses."""
    import rankprune as rp
    from rankprune.study import StudySpec, Objective, _Trials, TrialFailed

    cfg = tiny_config(probes={"hessian_top": 10**6})
    with pytest.raises(rp.ConfigError, match="more eigenvalues"):
        rp.run(cfg, out=tmp_path / "api", progress=False)
    assert not (tmp_path / "api").exists()

    import optuna

    spec = StudySpec(name="s", mode="survey", objectives=(Objective("val_acc", "maximize"),),
                     base={"data": {"dataset": "digits"}, "probes": {"hessian_top": 10**6}}, space={"depth": 1, "width": 8})
    study = optuna.create_study()
    trial = study.ask()
    with pytest.raises(TrialFailed, match="more eigenvalues"):
        _Trials(spec, tmp_path, "s").prepare(trial)
    assert "more eigenvalues" in trial.user_attrs["fail_reason"]
    assert not (tmp_path / "studies").exists()


def test_the_api_resumes_by_the_clis_rule(tmp_path, tiny_config):
    import rankprune as rp

    cfg = tiny_config(evolve={"layers": (1,), "max_iterations": 1})
    rp.run(cfg, out=tmp_path / "r", progress=False)
    with pytest.raises(rp.ConfigError, match=r"train\.lr 0\.3 \(the run has 0\.05\)"):
        rp.run(cfg.replace(train={"lr": 0.3}), out=tmp_path / "r", resume=True, progress=False)
    # a larger iteration cap continues the depth, as `evolve --resume --max-iterations 2` does
    run = rp.run(cfg.replace(evolve={"max_iterations": 2}), out=tmp_path / "r", resume=True, progress=False)
    assert run.config.evolve.max_iterations == 2 and len(run.iterations) >= 2


# --- disks that refuse: read-only, full at the start, full mid-run ------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """make(size, read_only=False) -> a real file system of that size (tmpfs) mounted in tmp_path for the test;
    skipped where mounting is not allowed (not root, no mount namespace)."""
    mounts: list[Path] = []

    def make(size: str, read_only: bool = False) -> Path:
        where = tmp_path / f"disk{len(mounts)}"
        where.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounts.append(where)
        return where

    yield make
    for where in reversed(mounts):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_out_on_a_read_only_file_system_is_one_line_and_writes_nothing(small_disk, capsys, monkeypatch):
    disk = small_disk("1M", read_only=True)
    line = one_line(capsys, main(["evolve", *TINY, "--out", str(disk / "run")]))
    assert "read-only file system" in line
    monkeypatch.chdir(disk)  # the default --out, runs/evolve-..., under a read-only current folder
    line = one_line(capsys, main(["evolve", *TINY]))
    assert "runs/evolve-digits-" in line and "read-only file system" in line and "--out" in line
    assert list(disk.iterdir()) == []


def test_out_on_a_full_disk_is_one_line_and_leaves_the_disk_as_it_was(small_disk, capsys):
    disk = small_disk("2M")
    (disk / "users-data.bin").write_bytes(b"\0" * (2 * 1024 * 1024 - 64 * 1024))
    before = tree(disk)
    line = one_line(capsys, main(["evolve", *TINY, "--out", str(disk / "run")]))
    assert "is full" in line
    assert tree(disk) == before and not (disk / "run").exists()


def test_a_disk_that_fills_mid_run_marks_it_failed_unlocks_it_and_resume_finishes_it(small_disk, capsys):
    """Another process fills the disk once the first epoch is written: the run's next write fails."""
    import errno
    import threading

    disk = small_disk("4M")
    out, filler = disk / "run", disk / "someone-elses.bin"

    def fill_when_the_run_writes():
        deadline = time.monotonic() + GUARD_S
        while not (out / EPOCHS).is_file() and time.monotonic() < deadline:
            time.sleep(0.001)
        with open(filler, "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC

    filling = threading.Thread(target=fill_when_the_run_writes)
    filling.start()
    code = main(["evolve", *TINY, "--layers", "1..2", "--out", str(out)])
    filling.join()
    line = last_line(capsys, code)
    assert "No space left on device" in line and "--resume" in line
    status = json.loads((out / STATUS).read_text())
    assert status["state"] == "failed" and "No space left" in status["error"]
    with RunFolder(out) as run:
        run.acquire()  # the lock was released: another process may take the folder
    filler.unlink()  # space again
    assert main(["evolve", *TINY, "--layers", "1..2", "--out", str(out), "--resume"]) == 0, capsys.readouterr().err
    assert json.loads((out / STATUS).read_text())["state"] == "finished"
    assert set(json.loads((out / DEPTHS).read_text())) == {"1", "2"}


def test_a_start_the_disk_refuses_leaves_nothing_and_a_leftover_lock_does_not_block(tmp_path, capsys, monkeypatch):
    import errno

    import rankprune.runfolder as runfolder

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "config.json"))

    monkeypatch.setattr(runfolder, "write_json_atomic", full)
    line = last_line(capsys, main(["evolve", *TINY, "--out", str(tmp_path / "run")]))
    assert "No space left on device" in line and "nothing was kept" in line
    assert not (tmp_path / "run").exists()  # nothing half-made
    monkeypatch.undo()

    # what an earlier version left: a folder holding only a 0-byte lock file
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK).write_bytes(b"")
    line = one_line(capsys, main(["evolve", *TINY, "--out", str(tmp_path / "run"), "--resume"]))
    assert "without --resume" in line
    assert main(["evolve", *TINY, "--out", str(tmp_path / "run")]) == 0
    (tmp_path / "run2").mkdir()
    (tmp_path / "run2" / LOCK).write_bytes(b"")
    assert main(["evolve", *TINY, "--out", str(tmp_path / "run2"), "--overwrite"]) == 0


def test_sigterm_to_a_python_script_running_the_api_keeps_the_work_and_marks_it_interrupted(tmp_path):
    """The lifecycle's signal handling is the API's too: a scheduler's SIGTERM to `python script.py` used to kill
    the run with status `running` left behind."""
    out = tmp_path / "run"
    script = (
        "import rankprune as rp\n"
        "cfg = rp.RunConfig().replace(data={'dataset': 'digits', 'train_fraction': 0.5}, model={'width': 16},\n"
        "    train={'batch_size': 1, 'lr': 0.005, 'samples_per_epoch': 'pass', 'max_epochs': 3, 'patience': 3},\n"
        "    evolve={'layers': (1,), 'max_iterations': 2})\n"
        f"rp.run(cfg, out={str(out)!r}, progress=False)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + GUARD_S
    try:
        while not RunFolder(out).rows(EPOCHS):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        child.send_signal(signal.SIGTERM)
        _out, err = child.communicate(timeout=GUARD_S)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode != 0 and "Terminated" in err
    assert json.loads((out / STATUS).read_text())["state"] == "interrupted"
    with RunFolder(out) as run:
        run.acquire()  # unlocked


def test_a_resume_under_another_thread_count_says_it_will_not_be_bit_identical(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["evolve", *TINY, "--max-iterations", "1", "--out", str(out)]) == 0
    env = json.loads((out / "environment.json").read_text())
    env["torch_threads"] = 7  # as if it had started on a machine with 7 threads
    (out / "environment.json").write_text(json.dumps(env))
    capsys.readouterr()
    assert main(["evolve", "--out", str(out), "--resume", "--max-iterations", "2"]) == 0
    err = capsys.readouterr().err
    assert "started with 7 torch threads" in err and "OMP_NUM_THREADS=7" in err


def test_sizes_count_parameters_exactly_and_lockstep_members_hold_their_state_at_once(monkeypatch):
    import rankprune.sizing as sizing
    from rankprune.config import ConfigError, RunConfig
    from rankprune.models import get_family

    cfg = RunConfig().resolved()
    size = sizing.network_size(cfg, (1, 28, 28), 10, [784, 784])
    assert size.parameters == get_family("mlp").parameter_count((1, 28, 28), [784, 784], 10) == 1_238_730
    assert size.held >= 3 * 4 * size.parameters  # weights, gradient and momentum in float32 at least
    monkeypatch.setattr(sizing, "available_memory", lambda device: size.memory + 1)
    assert sizing.check_fits([size], 1, "cpu") == size.memory + 1
    with pytest.raises(ConfigError, match=r"16 networks of depth 2 at widths \[784, 784\] \(1,238,730 parameters each\)"):
        sizing.check_fits([size], 16, "cpu")
    assert sizing.human_bytes(999) == "999 B" and sizing.human_bytes(2.1e9) == "2.1 GB"


def test_a_replicates_folder_made_before_batch_sizes_were_recorded_resumes(uninterrupted, tmp_path):
    import shutil

    root = tmp_path / "reps"
    shutil.copytree(uninterrupted[0], root)
    doc = json.loads((root / "replicates.json").read_text())
    del doc["batch_members"]  # as replicates.json was written before this change
    (root / "replicates.json").write_text(json.dumps(doc))
    assert main(["evolve", "--out", str(root), "--resume", "--max-iterations", "3"]) == 0
    assert json.loads((root / "replicates.json").read_text())["batch_members"] is None
    assert all(json.loads((root / f"seed-{s}/config.json").read_text())["evolve"]["max_iterations"] == 3 for s in (0, 1, 2))


@pytest.mark.parametrize("what, expected", [("folder", "is a folder; give a TOML file"), ("latin-1", "not UTF-8")])
def test_a_study_file_that_is_a_folder_or_not_utf8_is_one_line_and_creates_nothing(what, expected, tmp_path, capsys):
    study = tmp_path / "s.toml"
    if what == "folder":
        study.mkdir()
    else:
        study.write_bytes('[study]\nname = "größe"\n'.encode("latin-1"))
    line = one_line(capsys, main(["study", "run", str(study), "--root", str(tmp_path / "runs")]))
    assert expected in line and not (tmp_path / "runs").exists()


def test_a_report_tells_a_killed_run_from_one_still_being_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["evolve", *TINY, "--max-iterations", "1", "--out", str(out)]) == 0
    (out / STATUS).write_text(json.dumps({"state": "running", "depth": 1, "iteration": 0}))  # as SIGKILL leaves it
    assert main(["report", str(out)]) == 0
    assert "no process holds the folder's lock: the run was killed" in (out / "report/report.md").read_text()
    with RunFolder(out) as writer:
        writer.acquire()  # a live writer: this process, through another open file
        assert main(["report", str(out)]) == 0
    assert f"still being written by process {os.getpid()}" in (out / "report/report.md").read_text()
