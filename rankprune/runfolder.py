"""The run folder: every file name in one place, atomic writes, appendable tables.

Layout (all tables are JSON Lines: `pandas.read_json(path, lines=True)` loads each in one call):

    config.json            resolved RunConfig
    environment.json       versions, git revision, seed, device, command line
    status.json            running / finished / interrupted / failed, and where it stood
    epochs.jsonl           one row per epoch: losses, accuracies, ranks per layer, norms, time, FLOPs
    iterations.jsonl       one row per controller iteration: widths, params, accuracy at saturation...
    spectra.jsonl          one row per (depth, iteration, layer): singular values at saturation
    hessian.jsonl          one row per (depth, iteration) with --hessian-top: the Hessian's eigenvalues
    depths.json            per depth: final widths, why it stopped, chosen iteration (written as each ends)
    data.json              the data as trained on: split sizes, input shape, classes, normalisation
    .lock                  held (flock) by the one process writing the folder; holds its pid
    weights/depth-L-iteration-II.pt   state_dict at saturation of every iteration
    weights/depth-L-iteration-II-start.pt   state_dict where every iteration began (fresh or rebuilt)
    weights/depth-L-final.pt          state_dict of the chosen iteration
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from rankprune.config import ConfigError, RunConfig
from rankprune.records import upgrade_row

__all__ = [
    "RunFolder", "RunFolderError", "CONFIG", "ENVIRONMENT", "STATUS", "EPOCHS", "ITERATIONS", "SPECTRA", "HESSIAN", "ITERATION_TABLES", "DEPTHS",
    "DATA", "LOCK", "RESUMABLE", "is_run_folder", "default_run_folder", "settings_key",
]

CONFIG = "config.json"
ENVIRONMENT = "environment.json"
STATUS = "status.json"
EPOCHS = "epochs.jsonl"
ITERATIONS = "iterations.jsonl"
SPECTRA = "spectra.jsonl"
HESSIAN = "hessian.jsonl"
# Tables whose rows belong to one (depth, iteration): a resume drops those of iterations that never finished.
ITERATION_TABLES = (EPOCHS, SPECTRA, HESSIAN)
DEPTHS = "depths.json"
DATA = "data.json"
WEIGHTS = "weights"
LOCK = ".lock"
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


def settings_key(config: dict) -> dict:
    """A resolved config less the RESUMABLE settings: two runs with equal keys compute the same thing."""
    d = json.loads(json.dumps(config))
    for section, key in RESUMABLE:
        d.get(section, {}).pop(key, None)
    if d.get("data", {}).get("seed", 0) is None:  # data.seed unset is what every run before it meant: same hash
        d["data"].pop("seed")
    return d


def default_run_folder(config: dict, root: str | Path = "runs") -> Path:
    """ROOT/evolve-DATASET-HASH, the hash of the resolved config's settings_key."""
    import hashlib

    digest = hashlib.sha1(json.dumps(settings_key(config), sort_keys=True).encode()).hexdigest()[:8]
    return Path(root) / f"evolve-{config['data']['dataset']}-{digest}"


def is_run_folder(path: str | Path) -> bool:
    """Whether `path` is a folder rankprune made: it holds a config.json that is a rankprune config."""
    config = Path(path) / CONFIG
    try:
        doc = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and bool(doc) and set(doc) <= _CONFIG_KEYS


class RunFolder:
    def __init__(self, path: str | Path, tags: dict | None = None):
        self.path = Path(path)
        self._lock_fd: int | None = None
        # Columns every row this folder appends starts with: a replicate's {"seed": S} (replicates.py), so that
        # tables of several seeds concatenated stay keyed by seed.
        self.tags = dict(tags or {})

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def check(cls, path: str | Path, *, resume: bool, overwrite: bool, tags: dict | None = None) -> "RunFolder":
        """Validate how a folder may be used, writing nothing; raise RunFolderError if it may not."""
        run = cls(path, tags)
        if resume and overwrite:
            raise RunFolderError("--resume and --overwrite exclude each other")
        exists = run.path.exists()
        if exists and not run.path.is_dir():
            raise RunFolderError(f"{run.path} exists and is not a folder")
        nonempty = exists and any(run.path.iterdir())
        if resume:
            if not exists:
                raise RunFolderError(f"cannot resume {run.path}: no such folder")
            if not (run.path / CONFIG).is_file():
                raise RunFolderError(f"cannot resume {run.path}: it holds no {CONFIG}, so it is not a rankprune run folder")
        elif nonempty and not overwrite:
            raise RunFolderError(f"{run.path} exists and is not empty; pass --resume to continue it or --overwrite to replace it")
        elif nonempty and not is_run_folder(run.path):
            raise RunFolderError(f"--overwrite replaces only a rankprune run folder, and {run.path} is not one "
                                 f"(no rankprune {CONFIG}); nothing was touched")
        if exists:
            run._refuse_if_held()
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

    def _refuse_if_held(self) -> None:
        """RunFolderError if another process holds the folder's lock; takes and keeps nothing."""
        if self._lock_fd is not None or not (self.path / LOCK).is_file():
            return
        fd = os.open(self.path / LOCK, os.O_RDONLY)
        try:
            self._flock(fd, fcntl.LOCK_SH)
        finally:
            os.close(fd)

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
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def create(self, overwrite: bool) -> None:
        """Make the folder and take its lock; with `overwrite`, empty it first (a run folder only).

        Emptying happens under the lock, so a folder another process is writing is never cleared.
        """
        self.acquire()
        others = [p for p in self.path.iterdir() if p.name != LOCK]
        if others:
            if not overwrite:
                raise RunFolderError(f"{self.path} is not empty; pass --resume to continue it or --overwrite to replace it")
            if not is_run_folder(self.path):
                raise RunFolderError(f"--overwrite replaces only a rankprune run folder, and {self.path} is not one "
                                     f"(no rankprune {CONFIG}); nothing was touched")
            for p in others:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        (self.path / WEIGHTS).mkdir(parents=True, exist_ok=True)

    # -- the lifecycle: one place starts a run and records how it ended -----------------------------
    @contextlib.contextmanager
    def session(self, config: dict, environment: dict, data: dict, *, resume: bool, overwrite: bool = False,
                config_changed: bool = False) -> Iterator["RunFolder"]:
        """Hold the folder for one session of work: take the lock, write config.json and environment.json
        (a resume keeps the original provenance and appends this session's), and data.json; on the way out
        record `interrupted` (Ctrl-C, SIGTERM) or `failed` in status.json, keeping where the run stood.

        Everything that is not JSON here (the config, the environment) arrives as plain dicts, so this
        module needs no training code.
        """
        with self:
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
            try:
                yield self
            except KeyboardInterrupt:
                self._mark("interrupted")
                raise
            except BaseException as exc:
                first = str(exc).strip().splitlines()
                self._mark("failed", error=f"{type(exc).__name__}: {first[0] if first else ''}".rstrip(": "))
                raise

    def _mark(self, state: str, **extra: Any) -> None:
        where = self.read(STATUS, {}) or {}
        where.pop("state", None)
        self.set_status(state, **where, **extra)

    # -- JSON documents -------------------------------------------------------------------------
    def write(self, name: str, obj: Any) -> None:
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
        with atomic_path(self.weights_path(depth, iteration, start)) as tmp:
            torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp)

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
