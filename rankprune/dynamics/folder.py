"""An experiment folder: what a dynamics command ran and every network it finished, one file each.

    experiment.json     the experiment's kind, its resolved settings and where it ran (versions, git revision)
    units/KEY.json      one finished network (or other unit of work): its settings and step-by-step rows
    report.md, figures/ the report drawn from the units (report/dynamics_experiments.py)

A unit is written atomically once it is finished, so Ctrl-C or SIGTERM loses at most the unit in progress, and
running the same command again skips every unit already there. A folder made with other settings is refused in
one line rather than mixed with them: the settings that do not change a result (where the data lies) may differ.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from rankprune.config import ConfigError
from rankprune.provenance import environment
from rankprune.runfolder import check_writable, write_json_atomic

__all__ = ["ExperimentFolder", "EXPERIMENT", "UNITS"]

EXPERIMENT, UNITS = "experiment.json", "units"
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]*$")


class ExperimentFolder:
    def __init__(self, path: str | Path, kind: str, settings: dict, *, free: frozenset[str] = frozenset()):
        """`settings`: everything that decides the results (JSON-able); `free`: keys of it a later run may change."""
        self.path, self.kind, self.settings, self.free = Path(path), kind, settings, free

    def open(self, seed: int = 0) -> "ExperimentFolder":
        """Create the folder (or check an existing one holds this experiment with the same settings) and record it."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path} exists and is not a folder")
        stored = self.stored()
        # (a sibling shard may have just made units/ or be writing experiment.json: those are ours)
        if stored is None and self.path.is_dir() and any(p.name not in (EXPERIMENT, UNITS) and not p.name.startswith(".")
                                                         for p in self.path.iterdir()):
            raise ConfigError(f"--out {self.path} holds other files and no {EXPERIMENT}: give an empty or new folder")
        if stored is not None:
            if stored.get("kind") != self.kind:
                raise ConfigError(f"{self.path} holds a {stored.get('kind')} experiment, not {self.kind}: give another --out")
            changed = sorted(k for k in set(stored.get("settings", {})) | set(self.settings)
                             if k not in self.free and stored.get("settings", {}).get(k) != self.settings.get(k))
            if changed:
                was = stored["settings"]
                shown = "; ".join(f"{k}: {was.get(k)!r} there, {self.settings.get(k)!r} now" for k in changed[:3])
                raise ConfigError(f"{self.path} was run with other settings ({shown}); give another --out to keep both")
        check_writable(self.path)
        (self.path / UNITS).mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path / EXPERIMENT, {"kind": self.kind, "settings": self.settings,
                                                   "environment": environment("cpu", seed)})
        return self

    def stored(self) -> dict | None:
        try:
            return json.loads((self.path / EXPERIMENT).read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{self.path / EXPERIMENT} cannot be read ({exc})") from None

    def _unit(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"bad unit key {key!r}")
        return self.path / UNITS / f"{key}.json"

    def done(self, key: str) -> bool:
        return self._unit(key).is_file()

    def save(self, key: str, result: dict[str, Any]) -> None:
        write_json_atomic(self._unit(key), result)

    def units(self) -> list[dict]:
        """Every finished unit, in key order."""
        return load_units(self.path)


def load_units(path: str | Path) -> list[dict]:
    folder = Path(path) / UNITS
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
