"""A run folder's lease (lease.py): one writer across machines, where the flock holds on one machine only. Another
machine's process is played by a lease file written as that machine would write it (another boot id)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from rankprune import lease as lease_mod
from rankprune.lease import LEASE, Lease, LeaseHeld
from rankprune.runfolder import EPOCHS, STATUS, RunFolder, RunFolderError


def _elsewhere(folder, renewed_ago: float, seconds: float = 120.0, token: str = "theirs") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LEASE).write_text(json.dumps({"holder": "node3:4242", "machine": "another-boot-id", "token": token,
                                            "renewed": time.time() - renewed_ago, "seconds": seconds}))


def test_a_live_lease_of_another_machine_refuses_the_folder_in_one_line_naming_it(tmp_path):
    _elsewhere(tmp_path / "run", renewed_ago=5)
    folder = RunFolder(tmp_path / "run")
    with pytest.raises(RunFolderError, match=r"being written by process 4242 on node3 \(its lease was renewed 5 s ago"):
        folder.acquire()
    assert folder.writer() == "process 4242 on node3"
    with pytest.raises(RunFolderError, match="process 4242 on node3"):
        RunFolder.check(tmp_path / "run", resume=False, overwrite=True)
    assert json.loads((tmp_path / "run" / LEASE).read_text())["token"] == "theirs"  # not touched
    assert not (tmp_path / "run" / ".lock").read_text()  # and the flock's pid was not written either


def test_an_expired_lease_of_another_machine_is_taken_over_and_dropped_on_release(tmp_path):
    _elsewhere(tmp_path / "run", renewed_ago=300)
    folder = RunFolder(tmp_path / "run")
    assert folder.writer() is None  # a dead machine's lease holds nothing
    folder.acquire()
    doc = json.loads((tmp_path / "run" / LEASE).read_text())
    assert doc["machine"] == lease_mod.machine_id() and doc["holder"].endswith(f":{os.getpid()}")
    folder.release()
    assert not (tmp_path / "run" / LEASE).exists()


def test_a_lease_left_by_a_killed_process_of_this_machine_is_taken_over_at_once(tmp_path):
    code = (f"from rankprune.runfolder import RunFolder; import time; f = RunFolder({str(tmp_path / 'run')!r}); "
            "f.acquire(); print('held', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderError, match=f"process {child.pid}"):
            RunFolder(tmp_path / "run").acquire()
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    assert json.loads((tmp_path / "run" / LEASE).read_text())["holder"].endswith(f":{child.pid}")  # left behind
    folder = RunFolder(tmp_path / "run")
    folder.acquire()  # its lease is fresh, but its holder no longer holds the flock
    assert json.loads((tmp_path / "run" / LEASE).read_text())["holder"].endswith(f":{os.getpid()}")
    folder.release()


def test_the_holder_renews_its_lease_while_it_holds_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKPRUNE_LEASE_SECONDS", "0.6")
    folder = RunFolder(tmp_path / "run")
    folder.acquire()
    try:
        first = json.loads((tmp_path / "run" / LEASE).read_text())["renewed"]
        time.sleep(0.7)  # past the lease's life: renewed meanwhile, every 0.2 s
        doc = json.loads((tmp_path / "run" / LEASE).read_text())
        assert doc["renewed"] > first and time.time() - doc["renewed"] < 0.6
    finally:
        folder.release()


def test_a_holder_whose_lease_was_taken_over_stops_writing_and_leaves_the_status_alone(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.acquire()
    folder.append(EPOCHS, {"epoch": 1})
    folder.set_status("running")
    _elsewhere(tmp_path / "run", renewed_ago=0, token="the-new-holder")  # paused past its life, and taken over
    folder._lease.renew()
    with pytest.raises(RunFolderError, match="another process took this folder over"):
        folder.append(EPOCHS, {"epoch": 2})
    folder._mark("failed", error="x")
    assert json.loads((tmp_path / "run" / STATUS).read_text())["state"] == "running"
    assert [r["epoch"] for r in folder.rows(EPOCHS)] == [1]
    folder.release()
    assert json.loads((tmp_path / "run" / LEASE).read_text())["token"] == "the-new-holder"  # its lease is kept


def test_two_takers_of_one_expired_lease_end_with_exactly_one_holder(tmp_path, monkeypatch):
    # Two machines (played by two threads whose machine id is not the lease's) find the lease expired at once.
    _elsewhere(tmp_path, renewed_ago=300)
    start, outcomes = threading.Barrier(2), []

    def take() -> None:
        lease = Lease(tmp_path)
        start.wait()
        try:
            lease.token = os.urandom(8).hex()
            lease._take_over()
            outcomes.append(("held", lease.token))
        except LeaseHeld as exc:
            outcomes.append(("refused", str(exc)))

    threads = [threading.Thread(target=take) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held = [token for kind, token in outcomes if kind == "held"]
    assert len(held) == 1 and [kind for kind, _ in outcomes].count("refused") == 1
    assert json.loads((tmp_path / LEASE).read_text())["token"] == held[0]
