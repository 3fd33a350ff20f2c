"""A throwaway PostgreSQL server for tests: Debian's server binaries, a temporary cluster on a free
loopback port with trust authentication, stopped and deleted at teardown.

PostgreSQL refuses to run as root, so when the tests run as root (CI) the cluster belongs to the
`postgres` user that Debian's package creates, and initdb and pg_ctl run through `runuser`.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["server_bin_dir", "unavailable_reason", "PostgresServer"]

START_TIMEOUT_S = 60


def server_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl: the newest /usr/lib/postgresql/N/bin (where Debian's
    postgresql package puts them; it links only the clients into PATH), else whatever PATH has."""
    versions = []
    for d in Path("/usr/lib/postgresql").glob("*/bin"):
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file() and re.fullmatch(r"\d+(\.\d+)?", d.parent.name):
            versions.append((float(d.parent.name), d))
    if versions:
        return max(versions)[1]
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).resolve().parent == Path(pg_ctl).resolve().parent:
        return Path(initdb).resolve().parent
    return None


def unavailable_reason() -> str | None:
    """Why no server can be started here, or None."""
    if server_bin_dir() is None:
        return ("no PostgreSQL server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin or on PATH; "
                "install Debian's postgresql package (.ci/run does)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root but there is no 'postgres' user to own the cluster (PostgreSQL refuses root)"
        if shutil.which("runuser") is None:
            return "running as root but runuser is missing, so the server cannot run as 'postgres'"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """`with PostgresServer() as server: url = server.create_database("name")`."""

    def __init__(self, bin_dir: Path | None = None):
        self.bin_dir = bin_dir or server_bin_dir()
        self.port: int | None = None
        self.tmp: Path | None = None
        self._as_postgres = os.geteuid() == 0

    # --- lifecycle ----------------------------------------------------------------------------------
    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        # Server output goes to its log file (pg_ctl -l); never let the daemon hold our pipes open.
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=START_TIMEOUT_S + 30, cwd=self.tmp)

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    @property
    def log(self) -> Path:
        return self.tmp / "server.log"

    def start(self) -> "PostgresServer":
        # In /tmp rather than pytest's tmp_path: that one sits under a 0700 folder of the test user,
        # which the postgres user cannot enter.
        self.tmp = Path(tempfile.mkdtemp(prefix="rankprune-pg-"))
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.tmp, user.pw_uid, user.pw_gid)
        done = self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                         "--locale", "C", "--no-sync")
        if done.returncode != 0:
            self._cleanup()
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}")
        for _attempt in range(3):  # another process may take the free port between probe and bind
            self.port = _free_port()
            # fsync and synchronous_commit off: a test cluster that is deleted afterwards needs no
            # durability, and Optuna commits once per user attribute.
            options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.tmp} "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(START_TIMEOUT_S),
                             "-o", options, "start")
            if done.returncode == 0:
                return self
        log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
        self._cleanup()
        raise RuntimeError(f"pg_ctl start failed ({done.returncode}):\n{done.stdout}\n{log}")

    def stop(self) -> None:
        if self.tmp is None:
            return
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self._cleanup()

    def _cleanup(self) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- use ----------------------------------------------------------------------------------------
    def connect(self, dbname: str = "postgres"):
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname)

    def create_database(self, name: str) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"database name {name!r}: use lower-case letters, digits and '_'")
        conn = self.connect()
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def url(self, name: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"
