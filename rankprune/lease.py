"""One writer per run folder across machines: a lease file beside the folder's flock.

The flock (runfolder.RunFolder.acquire) is exact on one machine, and the kernel drops it when its holder dies however
it dies. Across machines it holds only where the network filesystem carries locks (NFSv4 with a lock manager), and
not on many that clusters mount (some Lustre and CIFS mounts, NFS mounted `nolock`). The lease holds on any
filesystem whose create-exclusive and rename are atomic (NFSv3 and later, Lustre, GPFS, CIFS):

    .lease   {"holder": "host:pid", "machine": boot id, "token": ..., "renewed": Unix time, "seconds": how long it lasts}

- Taken by creating the file exclusively (O_CREAT | O_EXCL); renewed by its holder every third of its life (a thread
  per process) by writing a new file and renaming it over the old; dropped by removing it.
- A lease of another machine, renewed within its life, refuses the folder in one line naming the holder.
- A lease of this machine whose holder no longer holds the flock (the flock is taken first, so the caller holds it
  now) was left by a dead process: taken over at once.
- A lease past its life (its holder killed, its machine lost, or paused for longer) is taken over by rename; two
  takers racing are settled by reading the file again after SETTLE_S: the one whose token is there holds it, the
  other is refused.
- A holder whose token is no longer in the file (paused past its life and taken over) has lost the folder: its next
  write raises LeaseLost, so two writers never interleave rows.

The rule compares one machine's clock with another's: their clocks must agree to well within the lease's life (NTP
does: milliseconds against minutes). RANKPRUNE_LEASE_SECONDS sets the life (120 by default).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

__all__ = ["Lease", "LeaseHeld", "LeaseLost", "LEASE", "lease_seconds", "machine_id"]

LEASE = ".lease"
DEFAULT_SECONDS = 120.0
SETTLE_S = 0.5  # longer than a taker's read-then-rename takes; see the race above


class LeaseHeld(Exception):
    """Another machine's process holds the folder's lease; the message names it."""


class LeaseLost(Exception):
    """This process's lease was taken over (it was paused past the lease's life); it must stop writing."""


def lease_seconds() -> float:
    try:
        value = float(os.environ.get("RANKPRUNE_LEASE_SECONDS", DEFAULT_SECONDS))
    except ValueError:
        return DEFAULT_SECONDS
    return value if value > 0 else DEFAULT_SECONDS


def machine_id() -> str:
    """This machine's identity for the lease: its boot id (containers on one machine share it, and share flocks),
    else its host name. Host names alone repeat across containers on different machines."""
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return socket.gethostname()


def _read(path: Path) -> dict | None:
    """The lease in `path`; {} for a file being created (empty or torn), None where there is none."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


class Lease:
    """The lease of one folder, for this process. acquire() takes it or raises LeaseHeld; check() raises LeaseLost
    once another process took it over; release() drops it."""

    def __init__(self, folder: Path, seconds: float | None = None):
        self.path = Path(folder) / LEASE
        self.seconds = seconds if seconds is not None else lease_seconds()
        self.token: str | None = None
        self.lost = False
        self._lock = threading.Lock()  # the renewing thread and release() take turns: a renewal never revives a dropped lease

    def _doc(self) -> dict:
        return {"holder": f"{socket.gethostname()}:{os.getpid()}", "machine": machine_id(), "token": self.token,
                "renewed": time.time(), "seconds": self.seconds}

    def _replace(self) -> None:
        tmp = self.path.with_name(f"{LEASE}.{self.token}.tmp")
        tmp.write_text(json.dumps(self._doc()))
        os.replace(tmp, self.path)

    def acquire(self) -> None:
        """Take the lease (the caller holds the folder's flock). LeaseHeld where a live process elsewhere holds it."""
        if self.token is not None:
            return
        self.token, self.lost = uuid.uuid4().hex, False
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            self._take_over()
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(self._doc()))
        _RENEWER.add(self)

    def _take_over(self) -> None:
        old = _read(self.path)
        if old is None:  # dropped meanwhile
            self._replace()
            return
        age = time.time() - float(old.get("renewed", _mtime(self.path)))
        life = float(old.get("seconds", self.seconds))
        if old.get("machine") == machine_id():
            self._replace()  # its holder on this machine no longer holds the flock, which we hold: it is gone
            return
        if age <= life:
            self.token = None
            raise LeaseHeld(f"{_who(old)} (its lease was renewed {max(age, 0):.0f} s ago and lasts {life:.0f} s)")
        self._replace()
        time.sleep(SETTLE_S)  # another machine that found it expired as well renames within this
        now = _read(self.path) or {}
        if now.get("token") != self.token:
            self.token = None
            raise LeaseHeld(f"{_who(now)} (it took over the expired lease at the same moment)")

    def renew(self) -> None:
        """Write the lease again with the time now, unless another process took it over (then: lost)."""
        with self._lock:
            if self.token is None or self.lost:
                return
            now = _read(self.path)
            if now is not None and now and now.get("token") != self.token:
                self.lost = True
                return
            with contextlib.suppress(OSError):
                self._replace()

    def check(self) -> None:
        if self.lost:
            raise LeaseLost(f"{self.path.parent}: another process took this folder over after its lease of "
                            f"{self.seconds:.0f} s ran out (this process was paused or its clock is behind); it stops "
                            "writing there")

    def release(self) -> None:
        if self.token is None:
            return
        _RENEWER.discard(self)
        with self._lock:
            with contextlib.suppress(OSError):
                if (_read(self.path) or {}).get("token") == self.token:
                    self.path.unlink()
            self.token = None

    def holder(self) -> str | None:
        """Who else holds the lease now, live, on another machine ('process 12 on node3'); None otherwise."""
        doc = _read(self.path)
        if not doc or doc.get("machine") == machine_id() or doc.get("token") == self.token:
            return None
        if time.time() - float(doc.get("renewed", 0)) > float(doc.get("seconds", self.seconds)):
            return None
        return _who(doc)


def _who(doc: dict) -> str:
    host, _, pid = str(doc.get("holder", "")).rpartition(":")
    return f"process {pid} on {host}" if host else "another process"


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


class _Renewer:
    """One daemon thread per process renews every lease it holds, every third of the shortest life."""

    def __init__(self):
        self.leases: set[Lease] = set()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.period = DEFAULT_SECONDS / 3

    def add(self, lease: Lease) -> None:
        with self.lock:
            self.leases.add(lease)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, daemon=True, name="rankprune-leases")
                self.thread.start()
            elif lease.seconds / 3 < self.period:
                self.wake.set()  # a shorter life than the thread is waiting out: wait again from now

    def discard(self, lease: Lease) -> None:
        with self.lock:
            self.leases.discard(lease)

    def _run(self) -> None:
        while True:
            with self.lock:
                self.period = min((lease.seconds for lease in self.leases), default=DEFAULT_SECONDS) / 3
            if self.wake.wait(self.period):
                self.wake.clear()
                continue
            with self.lock:
                leases = list(self.leases)
            for lease in leases:
                lease.renew()


_RENEWER = _Renewer()
