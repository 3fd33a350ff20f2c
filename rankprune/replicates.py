"""Replicates of one configuration (`rankprune evolve --seeds 0..4`): one folder holding a run folder per seed
(seed-S/, each a complete run folder whose every table row also carries its seed), and replicates.json with
the seeds, the shared data seed, and per depth every seed's result with the mean and spread.

The replicates share one data draw (config data.seed, default the first seed: the same split, label noise and
tasks) and differ in initialisation and data order, so they train as one batch (ensemble.py); each seed's
folder equals a single run with `--seed S --data-seed D`. `run_replicates` makes or resumes such a folder and
runs every seed through the lockstep controller (evolve.evolve_together); the CLI and the API call it.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

from rankprune.config import parse_integers
from rankprune.errors import ConfigError
from rankprune.runfolder import CONFIG, DEPTHS, RunFolder, RunFolderError, write_json_atomic

__all__ = ["REPLICATES", "parse_seeds", "seed_folder", "is_replicates_folder", "read_replicates", "write_replicates",
           "summarise", "spread", "run_replicates"]

REPLICATES = "replicates.json"
MAX_REPLICATES = 4096


def parse_seeds(text: str) -> list[int]:
    """`0..4` -> [0, 1, 2, 3, 4]; `0,3,7` -> [0, 3, 7]. ConfigError (one line) on anything else."""
    text = text.strip()
    try:
        seeds = parse_integers(text)
    except ValueError:
        raise ConfigError(f"bad --seeds {text!r}: use a range like 0..4 or a list like 0,3,7") from None
    if any(s < 0 for s in seeds):
        raise ConfigError(f"bad --seeds {text!r}: seeds are non-negative integers")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"bad --seeds {text!r}: a seed appears twice")
    if len(seeds) > MAX_REPLICATES:
        raise ConfigError(f"bad --seeds {text!r}: at most {MAX_REPLICATES} replicates in one folder")
    return seeds


def seed_folder(root: str | Path, seed: int) -> Path:
    return Path(root) / f"seed-{seed}"


def is_replicates_folder(path: str | Path) -> bool:
    return (Path(path) / REPLICATES).is_file()


def read_replicates(root: str | Path) -> dict:
    try:
        doc = json.loads((Path(root) / REPLICATES).read_text())
    except (OSError, ValueError):
        raise ConfigError(f"{root}: its {REPLICATES} is missing or not valid JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("seeds"), list):
        raise ConfigError(f"{root}: its {REPLICATES} is not a rankprune replicates file")
    return doc


def write_replicates(root: str | Path, doc: dict) -> None:
    write_json_atomic(Path(root) / REPLICATES, doc)


def spread(values: list[float]) -> dict:
    """mean, sample standard deviation (0 for one value), min and max, and n."""
    values = [float(v) for v in values]
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def summarise(root: str | Path, seeds: list[int]) -> dict[str, dict]:
    """Per depth (as a string key): every finished seed's depths.json entry and the spread over seeds of the
    chosen network's total width, each layer's width, parameters, test and validation accuracy, iterations,
    cumulative seconds and FLOPs, and how often each stop reason ended it."""
    per_depth: dict[str, dict[int, dict]] = {}
    for seed in seeds:
        path = seed_folder(root, seed) / DEPTHS
        depths = json.loads(path.read_text()) if path.is_file() else {}
        for key, summary in depths.items():
            per_depth.setdefault(key, {})[seed] = summary
    out = {}
    for key in sorted(per_depth, key=int):
        rows = per_depth[key]
        runs = list(rows.values())
        out[key] = {
            "depth": int(key),
            "seeds": sorted(rows),
            "total_width": spread([sum(r["widths"]) for r in runs]),
            "widths": [spread([r["widths"][layer] for r in runs]) for layer in range(int(key))],
            "parameters": spread([r["parameters"] for r in runs]),
            "test_acc": spread([r["test_acc"] for r in runs]),
            "val_acc": spread([r["val_acc"] for r in runs]),
            "iterations": spread([r["iterations"] for r in runs]),
            "cumulative_seconds": spread([r["cumulative_seconds"] for r in runs]),
            "cumulative_flops": spread([r["cumulative_flops"] for r in runs]),
            "stop_reasons": dict(Counter(r["stop_reason"] for r in runs)),
            "per_seed": {str(s): {k: rows[s][k] for k in ("widths", "test_acc", "val_acc", "parameters", "stop_reason",
                                                            "iterations", "cumulative_seconds")} for s in sorted(rows)},
        }
    return out


def run_replicates(base, seeds: list[int], root: str | Path, *, resume: bool = False, overwrite: bool = False,
                   max_members: int | None = None, live=None, announce=None) -> dict[str, dict]:
    """Make (or with `resume` continue) the replicates folder `root`: `base` (a validated RunConfig whose
    data.seed is set) once per seed, trained in lockstep batches, each in its own seed-S/ run folder; returns
    summarise()'s spread per depth, also written to replicates.json (after an interrupt too). `live`: a
    live.ReplicasReporter (or None); `announce()` is called once the folder is about to be written. Bad
    settings and folders raise ConfigError before anything is written."""
    import contextlib

    from rankprune.evolve import NullReporter, Replica, checked_data, evolve_together
    from rankprune.provenance import environment

    root = Path(root)
    if base.data.seed is None:
        raise ConfigError("replicates share one data draw: set data.seed (--data-seed)")
    if not resume and root.exists():
        if not root.is_dir():
            raise RunFolderError(f"{root} exists and is not a folder")
        if any(root.iterdir()):
            if not overwrite:
                raise RunFolderError(f"{root} exists and is not empty; pass --resume to continue it or --overwrite to replace it")
            if not is_replicates_folder(root):
                raise RunFolderError(f"--overwrite replaces only a rankprune replicates folder, and {root} is not one; "
                                     "nothing was touched")
    data = checked_data(base)
    runs, started = [], []
    for seed in seeds:
        path = seed_folder(root, seed)
        again = resume and (path / CONFIG).is_file()
        runs.append(RunFolder.check(path, resume=again, overwrite=overwrite and not again, tags={"seed": seed}))
        started.append(again)
    if announce is not None:
        announce()
    root.mkdir(parents=True, exist_ok=True)
    earlier = read_replicates(root).get("summary", {}) if is_replicates_folder(root) else {}
    write_replicates(root, {"seeds": seeds, "data_seed": base.data_seed, "config": base.to_dict(), "summary": earlier})
    try:
        with contextlib.ExitStack() as stack:
            if live is not None:
                stack.enter_context(live)
            replicas = []
            for seed, run, again in zip(seeds, runs, started):
                cfg = base.replace(seed=seed)
                stack.enter_context(run.session(cfg.to_dict(), environment(cfg.device, cfg.seed), data.describe(),
                                                resume=again, overwrite=overwrite and not again))
                replicas.append(Replica(cfg, data, run, live.for_seed(seed) if live is not None else NullReporter()))
            evolve_together(replicas, max_members)
    finally:
        summary = summarise(root, seeds)
        write_replicates(root, {**read_replicates(root), "summary": summary})
    return summary
