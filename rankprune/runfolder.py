"""The run folder: every file name in one place, atomic writes, appendable tables.

Layout (all tables are JSON Lines: `pandas.read_json(path, lines=True)` loads each in one call):

    config.json            resolved RunConfig
    environment.json       versions, git revision, seed, device, command line
    status.json            running / finished / interrupted / failed, and where it stood
    epochs.jsonl           one row per epoch: losses, accuracies, ranks per layer, norms, time, FLOPs
    iterations.jsonl       one row per controller iteration: widths, params, accuracy at saturation...
    spectra.jsonl          one row per (depth, iteration, layer): singular values at saturation
    depths.json            per depth: final widths, why it stopped, chosen iteration (written as each ends)
    weights/depth-L-iteration-II.pt   state_dict at saturation of every iteration
    weights/depth-L-final.pt          state_dict of the chosen iteration
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from rankprune.config import ConfigError

__all__ = ["RunFolder", "RunFolderError", "CONFIG", "ENVIRONMENT", "STATUS", "EPOCHS", "ITERATIONS", "SPECTRA", "DEPTHS"]

CONFIG = "config.json"
ENVIRONMENT = "environment.json"
STATUS = "status.json"
EPOCHS = "epochs.jsonl"
ITERATIONS = "iterations.jsonl"
SPECTRA = "spectra.jsonl"
DEPTHS = "depths.json"
WEIGHTS = "weights"


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


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def check(cls, path: str | Path, *, resume: bool, overwrite: bool) -> "RunFolder":
        """Validate how a folder may be used, writing nothing; raise RunFolderError if it may not."""
        run = cls(path)
        if resume and overwrite:
            raise RunFolderError("--resume and --overwrite exclude each other")
        exists = run.path.exists()
        if exists and not run.path.is_dir():
            raise RunFolderError(f"{run.path} exists and is not a folder")
        nonempty = exists and any(run.path.iterdir())
        if resume:
            if not (run.path / CONFIG).is_file():
                raise RunFolderError(f"cannot resume {run.path}: it holds no {CONFIG}")
        elif nonempty and not overwrite:
            raise RunFolderError(f"{run.path} exists and is not empty; pass --resume to continue it or --overwrite to replace it")
        return run

    def create(self, overwrite: bool) -> None:
        if overwrite and self.path.exists():
            shutil.rmtree(self.path)
        (self.path / WEIGHTS).mkdir(parents=True, exist_ok=True)

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
            fh.write(json.dumps(_finite(row)) + "\n")
            fh.flush()

    def rows(self, table: str) -> list[dict]:
        """All complete rows of a table; a torn last line (killed mid-write) is ignored."""
        p = self.path / table
        if not p.is_file():
            return []
        out = []
        for line in p.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def keep_rows(self, table: str, keep: Iterable[tuple[int, int]]) -> None:
        """Rewrite a table keeping only rows whose (depth, iteration) is in `keep` (used by resume)."""
        keep = set(keep)
        rows = [r for r in self.rows(table) if (r["depth"], r["iteration"]) in keep]
        write_text_atomic(self.path / table, "".join(json.dumps(r) + "\n" for r in rows))

    def table(self, table: str):
        """A table as a pandas DataFrame."""
        import pandas as pd

        p = self.path / table
        if not p.is_file() or p.stat().st_size == 0:
            return pd.DataFrame()
        return pd.read_json(p, lines=True)

    # -- weights --------------------------------------------------------------------------------
    def weights_path(self, depth: int, iteration: int | None = None) -> Path:
        tag = "final" if iteration is None else f"iteration-{iteration:02d}"
        return self.path / WEIGHTS / f"depth-{depth}-{tag}.pt"

    def save_weights(self, state_dict: dict, depth: int, iteration: int | None = None) -> None:
        with atomic_path(self.weights_path(depth, iteration)) as tmp:
            torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp)

    def load_weights(self, depth: int, iteration: int | None = None) -> dict:
        return torch.load(self.weights_path(depth, iteration), map_location="cpu", weights_only=True)
