"""Replicates of one configuration (`rankprune evolve --seeds 0..4`): one folder holding a run folder per seed
(seed-S/, each a complete run folder whose every table row also carries its seed), and replicates.json with
the seeds, the shared data seed, and per depth every seed's result with the mean and spread.

The replicates share one data draw (config data.seed, default the first seed: the same split, label noise and
tasks) and differ in initialisation and data order, so they train as one batch (ensemble.py); each seed's
folder equals a single run with `--seed S --data-seed D`. No training code here.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from rankprune.errors import ConfigError
from rankprune.runfolder import DEPTHS, write_json_atomic

__all__ = ["REPLICATES", "parse_seeds", "seed_folder", "is_replicates_folder", "read_replicates", "write_replicates",
           "summarise", "spread"]

REPLICATES = "replicates.json"
MAX_REPLICATES = 4096


def parse_seeds(text: str) -> list[int]:
    """`0..4` -> [0, 1, 2, 3, 4]; `0,3,7` -> [0, 3, 7]. ConfigError (one line) on anything else."""
    text = text.strip()
    try:
        if ".." in text:
            lo, hi = (int(x) for x in text.split(".."))
            if lo > hi:
                raise ValueError
            seeds = list(range(lo, hi + 1))
        else:
            seeds = [int(x) for x in text.split(",")]
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
        stops: dict[str, int] = {}
        for r in runs:
            stops[r["stop_reason"]] = stops.get(r["stop_reason"], 0) + 1
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
            "stop_reasons": stops,
            "per_seed": {str(s): {k: rows[s][k] for k in ("widths", "test_acc", "val_acc", "parameters", "stop_reason",
                                                            "iterations", "cumulative_seconds")} for s in sorted(rows)},
        }
    return out
