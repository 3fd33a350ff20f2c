"""The run folder: every file name in one place, atomic writes, appendable tables.

Layout (all tables are JSON Lines: `pandas.read_json(path, lines=True)` loads each in one call):

    config.json            resolved RunConfig
    environment.json       versions, git revision, seed, device, command line
    status.json            running / finished / interrupted / failed, and where it stood
    epochs.jsonl           one row per epoch: losses, accuracies, ranks per layer, norms, time, FLOPs
    iterations.jsonl       one row per controller iteration: widths, params, accuracy at saturation...
    spectra.jsonl          one row per (depth, iteration, layer): singular values at saturation
    hessian.jsonl          one row per (depth, iteration) with --hessian-top: the Hessian's eigenvalues
    scratch.jsonl          one row per (depth, epoch) with --scratch: the chosen widths trained from a fresh
                           initialisation (evolve/scratch.py); accuracies against cumulative seconds and FLOPs
    depths.json            per depth: final widths, why it stopped, chosen iteration (written as each ends)
    data.json              the data as trained on: split sizes, input shape, classes, normalisation
    .lock                  held (flock) by the one process writing the folder; holds its pid
    .lease                 that process's lease, which holds across machines on a network filesystem (lease.py)
    weights/depth-L-iteration-II.pt   state_dict at saturation of every iteration
    weights/depth-L-iteration-II-start.pt   state_dict where every iteration began (fresh or rebuilt)
    weights/depth-L-final.pt          state_dict of the chosen iteration
    report/                `rankprune report`'s default output: report.md and figures/

A replicates folder (evolve --seeds) holds replicates.json, a run folder per seed (seed-S/), its own .lock and
report/. Everything else a user puts in either kind of folder is theirs: --overwrite removes rankprune's files
(result_entries) and keeps, and names, the user's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import io
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from rankprune.config import ConfigError, RunConfig, task_sampling_inert
from rankprune.lease import LEASE, Lease, LeaseHeld, LeaseLost
from rankprune.records import upgrade_row

__all__ = [
    "RunFolder", "RunFolderError", "CONFIG", "ENVIRONMENT", "STATUS", "EPOCHS", "ITERATIONS", "SPECTRA", "HESSIAN", "SCRATCH", "ITERATION_TABLES", "DEPTHS",
    "DATA", "LOCK", "REPLICATES", "REPORT_DIR", "RESUMABLE", "is_run_folder", "is_replicates_folder", "is_result",
    "holds_nothing", "result_entries", "remove_result", "check_writable", "default_run_folder", "settings_key", "config_key",
]

CONFIG = "config.json"
ENVIRONMENT = "environment.json"
STATUS = "status.json"
EPOCHS = "epochs.jsonl"
ITERATIONS = "iterations.jsonl"
SPECTRA = "spectra.jsonl"
HESSIAN = "hessian.jsonl"
SCRATCH = "scratch.jsonl"  # (depth, epoch) rows, no iteration: evolve/scratch.py drops a depth's own on a redo
# Tables whose rows belong to one (depth, iteration): a resume drops those of iterations that never finished.
ITERATION_TABLES = (EPOCHS, SPECTRA, HESSIAN)
DEPTHS = "depths.json"
DATA = "data.json"
WEIGHTS = "weights"
LOCK = ".lock"
REPLICATES = "replicates.json"  # a replicates folder's index (replicates.py)
REPORT_DIR = "report"  # where `rankprune report` writes for a run or replicates folder by default
# The files rankprune writes in a run folder (a replicates folder adds REPLICATES and its seed folders).
RESULT_FILES = frozenset({CONFIG, ENVIRONMENT, STATUS, EPOCHS, ITERATIONS, SPECTRA, HESSIAN, SCRATCH, DEPTHS, DATA, LOCK, LEASE})
REPORT_FILES = re.compile(r"report\.md|figures/[^/]+\.(png|svg|pdf)")
WEIGHT_FILES = re.compile(r"depth-\d+-(final|iteration-\d+(-start)?)\.pt")
SEED_FOLDER = re.compile(r"seed-\d+")
_TEMP = re.compile(r"\..+\.[^.]+\.tmp")  # atomic_path's temporary files, left behind by a killed write
# The sections a rankprune config.json holds (RunConfig's fields); a JSON object with any other key
# is somebody else's file, and --overwrite must not delete the folder around it.
# A rankprune config's top-level keys: RunConfig's sections and fields, and the format version.
_CONFIG_KEYS = frozenset(f.name for f in dataclasses.fields(RunConfig)) | {"format_version"}


class RunFolderError(ConfigError):
    """A run folder that cannot be used as asked (exists, is not a run, ...)."""


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: store them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` when the block succeeds.

    Readers never see a half-written file, and a failed or interrupted write leaves the old one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(_finite(obj), indent=2) + "\n")


# Settings that do not change what a run computes: where the data lies, whether it may be downloaded,
# and how many iterations a depth may take (a larger cap continues a depth that stopped at the cap).
# They are left out of the default folder's name, so the same command finds the same folder, and a
# resume may change them.
RESUMABLE = frozenset({("data", "data_dir"), ("data", "download"), ("evolve", "max_iterations")})


# Settings added to the config after run folders were first named by its hash, with the value that means what
# every run before them did. Left out of the hash at that value, so that a folder's name does not change when a
# field with a default appears (tests/test_runfolder_names.py fails for a new field not listed here).
ADDED_WITH_DEFAULT: dict[tuple[str, str], object] = {
    ("data", "seed"): None,  # the run's own seed draws its data
    ("evolve", "scratch"): False,  # no scratch control
    ("data", "sequence_length"): None,  # single samples, not sequences
    ("data", "image_size"): None,  # images as shipped
}


def settings_key(config: dict) -> dict:
    """A resolved config less the RESUMABLE settings, and less every setting added since folders were named at the
    value every run before it meant (ADDED_WITH_DEFAULT): two runs with equal keys compute the same thing."""
    d = json.loads(json.dumps(config))
    for section, key in RESUMABLE:
        d.get(section, {}).pop(key, None)
    for (section, key), default in ADDED_WITH_DEFAULT.items():
        part = d.get(section, {})
        if key in part and part[key] == default:
            part.pop(key)
    data = d.get("data", {})
    if task_sampling_inert(data):
        data.pop("task_sampling", None)
        data.pop("task_samples", None)
    return d


def config_key(config: dict) -> str:
    """The short hash that names what a config computes (its settings_key): equal keys, equal results."""
    import hashlib

    return hashlib.sha1(json.dumps(settings_key(config), sort_keys=True).encode()).hexdigest()[:8]


def default_run_folder(config: dict, root: str | Path = "runs") -> Path:
    """ROOT/evolve-DATASET-HASH, the hash of the resolved config's settings_key."""
    return Path(root) / f"evolve-{config['data']['dataset']}-{config_key(config)}"


def is_run_folder(path: str | Path) -> bool:
    """Whether `path` is a folder rankprune made: it holds a config.json that is a rankprune config."""
    config = Path(path) / CONFIG
    try:
        doc = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    # every format (tests/data/run-format-1 included) has at least these sections, each a table
    return (isinstance(doc, dict) and set(doc) <= _CONFIG_KEYS
            and all(isinstance(doc.get(section), dict) for section in ("data", "model", "train", "evolve")))


def is_replicates_folder(path: str | Path) -> bool:
    return (Path(path) / REPLICATES).is_file()


def is_result(path: str | Path) -> bool:
    """Whether `path` holds a rankprune result: a run folder or a replicates folder."""
    return is_run_folder(path) or is_replicates_folder(path)


def _debris(name: str) -> bool:
    """What an attempt that wrote nothing of a result leaves: the lock and lease files, a killed write's temporary file."""
    return name in (LOCK, LEASE) or bool(_TEMP.fullmatch(name))


def holds_nothing(path: Path) -> bool:
    """Whether a folder is empty but for debris (an earlier attempt's lock, a torn temporary file): it holds no
    result and nothing of a user's, so a new run may use it as it would an empty folder."""
    return all(_debris(p.name) for p in path.iterdir())


def result_entries(path: Path) -> tuple[list[Path], list[Path]]:
    """The files in a rankprune result folder, split into rankprune's own and the user's (everything rankprune
    does not write: notes, notebooks, a figure of their own). Seed folders of a replicates folder are read the
    same way; a folder is never listed, only the files in it."""
    ours: list[Path] = []
    theirs: list[Path] = []
    for entry in sorted(path.iterdir()):
        name = entry.name
        if entry.is_symlink() or not (entry.is_file() or entry.is_dir()):
            theirs.append(entry)
        elif entry.is_file():
            (ours if name in RESULT_FILES or name == REPLICATES or _debris(name) else theirs).append(entry)
        elif name == WEIGHTS:
            for f in sorted(entry.rglob("*")):
                if f.is_file() or f.is_symlink():
                    mine = f.parent == entry and (WEIGHT_FILES.fullmatch(f.name) or _debris(f.name)) and not f.is_symlink()
                    (ours if mine else theirs).append(f)
        elif name == REPORT_DIR:
            for f in sorted(entry.rglob("*")):
                if f.is_file() or f.is_symlink():
                    rel = f.relative_to(entry).as_posix()
                    (ours if REPORT_FILES.fullmatch(rel) and not f.is_symlink() else theirs).append(f)
        elif SEED_FOLDER.fullmatch(name) and is_run_folder(entry):
            seed_ours, seed_theirs = result_entries(entry)
            ours += seed_ours
            theirs += seed_theirs
        else:
            theirs += [f for f in sorted(entry.rglob("*")) if f.is_file() or f.is_symlink()] or [entry]
    return ours, theirs


def remove_result(path: Path, keep: frozenset[str] = frozenset()) -> tuple[list[Path], list[Path]]:
    """Delete rankprune's files in `path` (but those under the top-level entries named in `keep`), then every
    folder left empty by that; the user's files stay where they are. Returns (removed, kept)."""
    ours, theirs = result_entries(path)
    removed = [f for f in ours if f.relative_to(path).parts[0] not in keep
               and f not in (path / LOCK, path / LEASE)]  # the caller holds its lock and lease
    for f in removed:
        f.unlink()
    for folder in sorted({p for f in removed for p in f.parents if path in p.parents}, key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty: a folder still holding a user's file stays
    return removed, theirs


def check_writable(path: Path) -> None:
    """RunFolderError (one line) when `path`, or the folder it would be created in, cannot be written: a
    read-only file system, no permission, or a full disk. Writes nothing."""
    target = Path(path).absolute()
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise RunFolderError(f"cannot create {path}: {probe} is a file, not a folder")
    where = "" if probe == target else f" (it would be created in {probe})"
    try:
        st = os.statvfs(probe)
    except OSError:
        st = None
    if st is not None and st.f_flag & os.ST_RDONLY:
        raise RunFolderError(f"cannot write {path}{where}: {probe} is on a read-only file system; give --out on another one")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunFolderError(f"cannot write {path}{where}: no permission to write in {probe}; give another --out")
    if st is not None and st.f_blocks == 0:  # /proc, /sys: a kernel's view, with no room for files
        raise RunFolderError(f"cannot write {path}{where}: {probe} is on a virtual file system that holds no files; "
                             "give --out on a disk")
    if st is not None and st.f_bavail * st.f_frsize < MIN_FREE_BYTES:
        raise RunFolderError(f"cannot write {path}: the file system of {probe} is full "
                             f"({st.f_bavail * st.f_frsize:,} bytes free); free some space or give --out on another one")


# Below this much free space not even a run's config and first table rows fit.
MIN_FREE_BYTES = 1 << 20


class RunFolder:
    def __init__(self, path: str | Path, tags: dict | None = None):
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._lease: Lease | None = None
        # Columns every row this folder appends starts with: a replicate's {"seed": S} (replicates.py), so that
        # tables of several seeds concatenated stay keyed by seed.
        self.tags = dict(tags or {})
        # What an --overwrite removed and kept: (rankprune's files removed, the user's files kept); None otherwise.
        self.replaced: tuple[list[Path], list[Path]] | None = None

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def check(cls, path: str | Path, *, resume: bool, overwrite: bool, tags: dict | None = None) -> "RunFolder":
        """Validate how a folder may be used, writing nothing; raise RunFolderError if it may not.

        New: the folder must not exist, be empty, or hold only an earlier attempt's debris (holds_nothing).
        Resume: it must hold a rankprune config. Overwrite: it must hold a rankprune result (a run or replicates
        folder); its user's files will be kept. Every use needs a folder that can be written."""
        run = cls(path, tags)
        if resume and overwrite:
            raise RunFolderError("--resume and --overwrite exclude each other")
        exists = run.path.exists()
        if exists and not run.path.is_dir():
            raise RunFolderError(f"{run.path} exists and is not a folder")
        empty = not exists or holds_nothing(run.path)
        if resume:
            if not exists:
                raise RunFolderError(f"cannot resume {run.path}: no such folder")
            if empty:
                raise RunFolderError(f"cannot resume {run.path}: nothing of a run was saved in it (an earlier attempt "
                                     "left only its lock); run the same command without --resume to start it")
            if not (run.path / CONFIG).is_file():
                raise RunFolderError(f"cannot resume {run.path}: it holds no {CONFIG}, so it is not a rankprune run folder")
        elif not empty and not overwrite:
            raise RunFolderError(f"{run.path} exists and is not empty; pass --resume to continue it or --overwrite to replace it")
        elif not empty and not is_result(run.path):
            raise RunFolderError(f"--overwrite replaces only a rankprune run or replicates folder, and {run.path} is not "
                                 f"one (no rankprune {CONFIG} or {REPLICATES}); nothing was touched")
        if exists:
            run.refuse_if_held()
        check_writable(run.path)
        return run

    # -- the lock: one writer at a time -----------------------------------------------------------
    def _holder(self) -> str:
        try:
            pid = (self.path / LOCK).read_text().split()[0]
        except (OSError, IndexError):
            return "another process"
        return f"process {pid}"

    def _flock(self, fd: int, mode: int) -> None:
        """flock without waiting; a lock another process holds is a RunFolderError naming that process."""
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise RunFolderError(f"{self.path} is being written by {self._holder()}; wait for it to finish "
                                 "or stop it first") from None

    def writer(self) -> str | None:
        """Who holds the folder now ('process 1234', or 'process 1234 on node3' for another machine's lease), or None
        when nobody does: a status of `running` with no writer is a run killed before it could record how it ended
        (SIGKILL, a crash). Takes and keeps nothing."""
        if self._lock_fd is not None:
            return None
        if (self.path / LOCK).is_file():
            fd = os.open(self.path / LOCK, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                return self._holder()
            finally:
                os.close(fd)
        return Lease(self.path).holder()

    def refuse_if_held(self) -> None:
        """RunFolderError if another process holds the folder's lock, or another machine's process its lease; takes
        and keeps nothing."""
        holder = self.writer()
        if holder is not None:
            raise RunFolderError(f"{self.path} is being written by {holder}; wait for it to finish or stop it first")

    def acquire(self) -> None:
        """Take the folder's advisory lock (flock) for this process, or raise RunFolderError naming the holder.

        The kernel drops a flock when its holder exits however it exits (even SIGKILL), so a lock file
        left behind by a dead process never blocks anyone; its pid is only there to name a live holder.
        """
        if self._lock_fd is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        # The lease after the flock: on this machine the flock says who is alive, and the lease of a process that
        # no longer holds it is taken over at once; another machine's is honoured until it expires (lease.py).
        lease = Lease(self.path)
        try:
            lease.acquire()
        except LeaseHeld as exc:
            os.close(fd)
            raise RunFolderError(f"{self.path} is being written by {exc}; wait for it to finish or stop it first") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd, self._lease = fd, lease

    def release(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def _fence(self) -> None:
        """RunFolderError where this process lost the folder's lease to another machine's (it was paused past the
        lease's life): it must not write a row more there."""
        if self._lease is not None:
            try:
                self._lease.check()
            except LeaseLost as exc:
                raise RunFolderError(str(exc)) from None

    def lost(self) -> bool:
        return self._lease is not None and self._lease.lost

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def create(self, overwrite: bool) -> None:
        """Make the folder and take its lock; with `overwrite`, first remove the rankprune result it holds (a run
        or replicates folder), keeping the user's files (`self.replaced` says what went and what stayed).

        Removing happens under the lock, so a folder another process is writing is never cleared."""
        self.acquire()
        if not holds_nothing(self.path):
            if not overwrite:
                raise RunFolderError(f"{self.path} is not empty; pass --resume to continue it or --overwrite to replace it")
            if not is_result(self.path):
                raise RunFolderError(f"--overwrite replaces only a rankprune run or replicates folder, and {self.path} "
                                     f"is not one (no rankprune {CONFIG} or {REPLICATES}); nothing was touched")
            self.replaced = remove_result(self.path)
        (self.path / WEIGHTS).mkdir(parents=True, exist_ok=True)

    # -- the lifecycle: one place starts a run and records how it ended -----------------------------
    @contextlib.contextmanager
    def session(self, config: dict, environment: dict, data: dict, *, resume: bool, overwrite: bool = False,
                config_changed: bool = False) -> Iterator["RunFolder"]:
        """Hold the folder for one session of work: take the lock, write config.json and environment.json
        (a resume keeps the original provenance and appends this session's), data.json and status `running`;
        on the way out record `interrupted` (Ctrl-C, SIGTERM) or `failed` with the reason in status.json,
        keeping where the run stood. A start that fails before any of that is written (a full disk) removes
        what it made, so that the folder is as it was.

        Everything that is not JSON here (the config, the environment) arrives as plain dicts, so this
        module needs no training code.
        """
        existed = self.path.exists()
        with self:
            try:
                if resume:
                    self.acquire()
                    env = self.read(ENVIRONMENT, {}) or {}
                    env.setdefault("resumed", []).append(environment)
                    self.write(ENVIRONMENT, env)
                    if config_changed:
                        self.write(CONFIG, config)  # the run continues under the settings it now has
                else:
                    self.create(overwrite=overwrite)
                    self.write(CONFIG, config)
                    self.write(ENVIRONMENT, environment)
                self.write(DATA, data)
                where = self.read(STATUS, {}) or {}
                where.pop("state", None)
                where.pop("error", None)
                self.set_status("running", **where)
            except OSError:
                if not resume:
                    self._undo_start(existed)
                raise
            try:
                yield self
            except KeyboardInterrupt:
                self._mark("interrupted")
                raise
            except BaseException as exc:
                first = str(exc).strip().splitlines()
                self._mark("failed", error=f"{type(exc).__name__}: {first[0] if first else ''}".rstrip(": "))
                raise

    def _undo_start(self, existed: bool) -> None:
        """After a start that could not write its first files: remove what it wrote (never a user's file), and
        the folder itself if this start made it and it is empty again."""
        with contextlib.suppress(OSError):
            if self.path.is_dir():
                remove_result(self.path)
                self.release()
                with contextlib.suppress(OSError):
                    (self.path / LOCK).unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    (self.path / WEIGHTS).rmdir()  # only if empty
                if not existed and not any(self.path.iterdir()):
                    self.path.rmdir()

    def _mark(self, state: str, **extra: Any) -> None:
        """Record how a session ended, whatever the disk allows: on a full disk the atomic write (a new file)
        fails, so status.json is rewritten in place, in the block it already has; if even that fails, the
        status stays as it was and the lock is still released by the caller. A process that lost the folder's lease
        writes nothing: the folder is another's now."""
        if self.lost():
            return
        try:
            where = self.read(STATUS, {}) or {}
        except (OSError, ValueError):
            where = {}
        where.pop("state", None)
        where.pop("error", None)
        doc = {"state": state, **where, **extra}
        try:
            self.set_status(state, **where, **extra)
        except OSError:
            with contextlib.suppress(OSError):
                text = json.dumps(_finite(doc)).encode()
                fd = os.open(self.path / STATUS, os.O_WRONLY)
                try:
                    os.write(fd, text)
                    os.ftruncate(fd, len(text))
                finally:
                    os.close(fd)

    # -- JSON documents -------------------------------------------------------------------------
    def write(self, name: str, obj: Any) -> None:
        self._fence()
        write_json_atomic(self.path / name, obj)

    def read(self, name: str, default: Any = None) -> Any:
        p = self.path / name
        if not p.is_file():
            return default
        with p.open() as fh:
            return json.load(fh)

    def set_status(self, state: str, **where: Any) -> None:
        self.write(STATUS, {"state": state, **where})

    # -- tables ---------------------------------------------------------------------------------
    def append(self, table: str, row: dict) -> None:
        """Append one row; flushed at once so an interrupted run keeps every finished row."""
        self._fence()
        with (self.path / table).open("a") as fh:
            fh.write(json.dumps(_finite({**self.tags, **row})) + "\n")
            fh.flush()

    def rows(self, table: str) -> list[dict]:
        """All complete rows of a table; a torn last line (killed mid-write) is ignored."""
        p = self.path / table
        if not p.is_file():
            return []
        out = []
        for line in p.read_text().splitlines():
            try:
                out.append(upgrade_row(table, json.loads(line)))  # older formats read as the current one
            except json.JSONDecodeError:
                continue
        return out

    def replace_rows(self, table: str, rows: list[dict]) -> None:
        """Rewrite a whole table atomically."""
        self._fence()
        write_text_atomic(self.path / table, "".join(json.dumps(_finite(r)) + "\n" for r in rows))

    def keep_rows(self, table: str, keep: Iterable[tuple[int, int]]) -> None:
        """Rewrite a table keeping only rows whose (depth, iteration) is in `keep` (used by resume). A table that
        does not exist is left so: a probe's table (hessian.jsonl) appears only in runs that record it."""
        if not (self.path / table).is_file():
            return
        keep = set(keep)
        self.replace_rows(table, [r for r in self.rows(table) if (r["depth"], r["iteration"]) in keep])

    def table(self, table: str):
        """A table as a pandas DataFrame."""
        import pandas as pd

        p = self.path / table
        if not p.is_file() or p.stat().st_size == 0:
            return pd.DataFrame()
        return pd.read_json(p, lines=True)

    # -- weights --------------------------------------------------------------------------------
    def weights_path(self, depth: int, iteration: int | None = None, start: bool = False) -> Path:
        """weights/depth-L-iteration-II.pt (at saturation), ...-II-start.pt (where the iteration began: the
        fresh or rebuilt network, for measuring how far training moved it), or depth-L-final.pt."""
        tag = "final" if iteration is None else f"iteration-{iteration:02d}" + ("-start" if start else "")
        return self.path / WEIGHTS / f"depth-{depth}-{tag}.pt"

    def save_weights(self, state_dict: dict, depth: int, iteration: int | None = None, start: bool = False) -> None:
        # Serialised in memory, then written as plain bytes: torch.save writing a file reports a full disk as a
        # RuntimeError of its C++ stream, and a write here must fail as an OSError naming the errno.
        self._fence()
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buffer)
        with atomic_path(self.weights_path(depth, iteration, start)) as tmp:
            tmp.write_bytes(buffer.getbuffer())

    def load_weights(self, depth: int, iteration: int | None = None, start: bool = False) -> dict:
        return torch.load(self.weights_path(depth, iteration, start), map_location="cpu", weights_only=True)

    def load_network(self, family: str, input_shape: tuple[int, ...], widths: list[int], n_out: int, depth: int,
                     iteration: int | None = None, start: bool = False, device: str | torch.device = "cpu") -> torch.nn.Module:
        """A saved network of `family` at `widths`: built (seed irrelevant, every weight is loaded), then its
        state_dict from load_weights. The plain network: output scaling (--alpha) is the caller's."""
        from rankprune.models import get_family

        network = get_family(family).build(input_shape, widths, n_out, seed=0, device=device)
        network.load_state_dict(self.load_weights(depth, iteration, start))
        return network
