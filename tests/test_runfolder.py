"""The run folder: how a folder may be opened, atomic JSON, appendable tables, weights."""

from __future__ import annotations

import json
from pathlib import Path
import os

import pandas as pd
import pytest
import torch

from rankprune.config import ConfigError, RunConfig
from rankprune.lease import LEASE
from rankprune.runfolder import CONFIG, EPOCHS, LOCK, STATUS, RunFolder, RunFolderError, is_run_folder


def test_check_accepts_a_new_or_empty_folder_and_writes_nothing(tmp_path):
    RunFolder.check(tmp_path / "new", resume=False, overwrite=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    RunFolder.check(tmp_path / "empty", resume=False, overwrite=False)
    assert list((tmp_path / "empty").iterdir()) == []


def test_check_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    (tmp_path / CONFIG).write_text(json.dumps(RunConfig().to_dict()))
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not empty"):
        RunFolder.check(tmp_path, resume=False, overwrite=False)
    RunFolder.check(tmp_path, resume=False, overwrite=True)
    assert (tmp_path / "keep.txt").read_text() == "mine"  # check never deletes; create(overwrite) does


@pytest.mark.parametrize("config", [None, "not json", '{"name": "my notes"}', "[1, 2]"])
def test_overwrite_refuses_a_folder_that_is_not_a_run_and_touches_nothing(tmp_path, config):
    (tmp_path / "thesis.tex").write_text("years of work")
    if config is not None:
        (tmp_path / CONFIG).write_text(config)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(RunFolderError, match="only a rankprune run"):
        RunFolder.check(tmp_path, resume=False, overwrite=True)
    with pytest.raises(RunFolderError, match="only a rankprune run"):
        RunFolder(tmp_path).create(overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != LOCK) == before
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_is_run_folder_accepts_only_a_rankprune_config(tmp_path):
    assert not is_run_folder(tmp_path)
    (tmp_path / CONFIG).write_text(json.dumps(RunConfig().to_dict()))
    assert is_run_folder(tmp_path)
    (tmp_path / CONFIG).write_text(json.dumps({**RunConfig().to_dict(), "author": "me"}))
    assert not is_run_folder(tmp_path)
    # keys that happen to be rankprune's are not a rankprune config: its sections must be there, as tables
    for foreign in ({"seed": 1}, {"model": {"width": 5}}, {**RunConfig().to_dict(), "data": "mnist"}):
        (tmp_path / CONFIG).write_text(json.dumps(foreign))
        assert not is_run_folder(tmp_path)
    (tmp_path / CONFIG).write_text((Path(__file__).parent / "data/run-format-1" / CONFIG).read_text())
    assert is_run_folder(tmp_path)  # every older format still is one


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    first = RunFolder(tmp_path / "run")
    first.create(overwrite=False)
    first.write(CONFIG, RunConfig().to_dict())
    second = RunFolder(tmp_path / "run")
    with pytest.raises(RunFolderError, match=rf"being written by process {os.getpid()}"):
        second.acquire()
    with pytest.raises(RunFolderError, match="being written"):  # --resume's check, before any work
        RunFolder.check(tmp_path / "run", resume=True, overwrite=False)
    with pytest.raises(RunFolderError, match="being written"):  # --overwrite must not clear a live run
        RunFolder.check(tmp_path / "run", resume=False, overwrite=True)
    first.release()
    second.acquire()  # free once the holder lets go
    second.release()


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    import subprocess
    import sys

    code = ("import os, sys; from rankprune.runfolder import RunFolder; r = RunFolder(sys.argv[1]); r.create(overwrite=False); "
            "os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], check=False)
    assert (tmp_path / "run" / LOCK).is_file()
    with RunFolder(tmp_path / "run") as run:
        run.acquire()
        assert (tmp_path / "run" / LOCK).read_text().split()[0] == str(os.getpid())


@pytest.mark.parametrize("exists", [False, True])
def test_check_resume_needs_a_config(tmp_path, exists):
    path = tmp_path / "run"
    if exists:
        path.mkdir()
        (path / "other.txt").write_text("x")
    # a missing folder is named as missing, not as one without a config
    with pytest.raises(RunFolderError, match=CONFIG if exists else "no such folder"):
        RunFolder.check(path, resume=True, overwrite=False)
    path.mkdir(exist_ok=True)
    (path / CONFIG).write_text("{}")
    assert RunFolder.check(path, resume=True, overwrite=False).path == path


def test_check_resume_and_overwrite_exclude_each_other(tmp_path):
    with pytest.raises(RunFolderError):
        RunFolder.check(tmp_path, resume=True, overwrite=True)


def test_check_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunFolderError, match="not a folder"):
        RunFolder.check(tmp_path / "f", resume=False, overwrite=True)


def test_run_folder_errors_are_config_errors():
    assert issubclass(RunFolderError, ConfigError)  # so the CLI reports them as one line, exit 2


def test_create_with_overwrite_replaces_the_result_and_keeps_the_users_files(tmp_path):
    (tmp_path / CONFIG).write_text(json.dumps(RunConfig().to_dict()))
    (tmp_path / "epochs.jsonl").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("what I saw")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "depth-2-final.pt").write_text("x")
    (tmp_path / "weights" / "my-finetuned.pt").write_text("mine")
    with RunFolder(tmp_path) as run:
        run.create(overwrite=True)
        assert sorted(p.name for p in tmp_path.iterdir()) == [LEASE, LOCK, "notes.txt", "weights"]
        assert [p.name for p in (tmp_path / "weights").iterdir()] == ["my-finetuned.pt"]
        removed, kept = run.replaced
        assert sorted(p.name for p in removed) == [CONFIG, "depth-2-final.pt", "epochs.jsonl"]
        assert sorted(p.name for p in kept) == ["my-finetuned.pt", "notes.txt"]


def test_json_documents_are_atomic_and_store_nan_as_null(tmp_path):
    run = RunFolder(tmp_path)
    run.write("doc.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": float("-inf")}})
    assert run.read("doc.json") == {"a": None, "b": [1.0, None], "c": {"d": None}}
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]  # no temporary file left
    assert run.read("missing.json", {"x": 1}) == {"x": 1}
    run.set_status("running", depth=2, iteration=3)
    assert run.read(STATUS) == {"state": "running", "depth": 2, "iteration": 3}


def test_tables_append_read_and_skip_a_torn_last_line(tmp_path):
    run = RunFolder(tmp_path)
    run.append(EPOCHS, {"depth": 1, "iteration": 0, "loss": float("nan"), "ranks": [1.0, 2.0]})
    run.append(EPOCHS, {"depth": 1, "iteration": 1, "loss": 0.5, "ranks": [1.0, 2.0]})
    assert [r["loss"] for r in run.rows(EPOCHS)] == [None, 0.5]
    with (tmp_path / EPOCHS).open("a") as fh:
        fh.write('{"depth": 1, "itera')
    assert len(run.rows(EPOCHS)) == 2
    assert run.rows("absent.jsonl") == []


def test_keep_rows_keeps_only_the_given_iterations(tmp_path):
    run = RunFolder(tmp_path)
    for depth, iteration in [(1, 0), (1, 1), (2, 0), (2, 1)]:
        run.append(EPOCHS, {"depth": depth, "iteration": iteration})
    with (tmp_path / EPOCHS).open("a") as fh:
        fh.write('{"depth": 2, "ite')
    run.keep_rows(EPOCHS, [(1, 0), (2, 0)])
    assert [(r["depth"], r["iteration"]) for r in run.rows(EPOCHS)] == [(1, 0), (2, 0)]
    assert len(pd.read_json(tmp_path / EPOCHS, lines=True)) == 2  # the torn line is gone too
    assert run.table(EPOCHS)["iteration"].tolist() == [0, 0]
    assert run.table("absent.jsonl").empty


def test_weights_round_trip(tmp_path):
    run = RunFolder(tmp_path)
    state = {"linears.0.weight": torch.randn(3, 4), "linears.0.bias": torch.randn(3)}
    run.save_weights(state, depth=2, iteration=7)
    run.save_weights(state, depth=2)
    assert run.weights_path(2, 7).name == "depth-2-iteration-07.pt"
    assert run.weights_path(2).name == "depth-2-final.pt"
    for loaded in (run.load_weights(2, 7), run.load_weights(2)):
        assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["depth-2-final.pt", "depth-2-iteration-07.pt"]


def test_a_row_is_one_line_of_json(tmp_path):
    run = RunFolder(tmp_path)
    run.append(EPOCHS, {"depth": 1, "iteration": 0, "text": "a\nb"})
    lines = (tmp_path / EPOCHS).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["text"] == "a\nb"
