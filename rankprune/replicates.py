"""Replicates of one configuration (`rankprune evolve --seeds 0..4`): one folder holding a run folder per seed
(seed-S/, each a complete run folder whose every table row also carries its seed), and replicates.json with
the seeds, the shared data seed, the batch size asked for, and per depth every seed's result with the mean and
spread.

The replicates share one data draw (config data.seed, default the first seed: the same split, label noise and
tasks) and differ in initialisation and data order, so they train as one batch (ensemble.py). What is exact and
what is not: the same command, batched the same way, gives the same numbers, also when it was interrupted and
resumed (evolve.rewind_to_complete_round); with `--batch-members 1` every seed trains alone and its folder is
exactly the single run `--seed S --data-seed D`; batched, a seed's numbers differ from that single run's in the
order of floating-point sums, which SGD amplifies, so the two are equal in distribution, not in value (README).
`run_replicates` makes or resumes such a folder through the one lifecycle (job.execute); the CLI and the API
call it.
"""

from __future__ import annotations

import contextlib
import json
import statistics
from collections import Counter
from pathlib import Path

from rankprune.config import RangeError, RunConfig, parse_integers
from rankprune.errors import ConfigError
from rankprune.units import bound_side, sum_side
from rankprune.runfolder import (DEPTHS, REPLICATES, RunFolder, RunFolderError, check_writable, holds_nothing,
                                 is_replicates_folder, is_result, remove_result, write_json_atomic)

__all__ = ["REPLICATES", "parse_seeds", "seed_folder", "is_replicates_folder", "read_replicates", "write_replicates",
           "summarise", "spread", "censored_spread", "run_replicates", "resume_base"]

MAX_REPLICATES = 4096


def parse_seeds(text: str) -> list[int]:
    """`0..4` -> [0, 1, 2, 3, 4]; `0,3,7` -> [0, 3, 7]. ConfigError (one line) on anything else."""
    text = text.strip()
    try:
        seeds = parse_integers(text)
    except RangeError as exc:
        raise ConfigError(f"bad --seeds: {exc}") from None
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


def read_replicates(root: str | Path) -> dict:
    try:
        doc = json.loads((Path(root) / REPLICATES).read_text())
    except (OSError, ValueError):
        raise ConfigError(f"{root}: its {REPLICATES} is missing or not valid JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("seeds"), list):
        raise ConfigError(f"{root}: its {REPLICATES} is not a rankprune replicates file")
    return doc


def resume_base(root: str | Path) -> tuple[list[int], RunConfig]:
    """The seeds and the shared config a replicates folder was made with, to resume it."""
    doc = read_replicates(root)
    try:
        return doc["seeds"], RunConfig.from_stored(doc["config"]).validate()
    except (KeyError, TypeError, ConfigError) as exc:
        raise ConfigError(f"cannot resume {root}: its {REPLICATES} holds no usable config ({exc})") from None


def write_replicates(root: str | Path, doc: dict) -> None:
    write_json_atomic(Path(root) / REPLICATES, doc)


def spread(values: list[float]) -> dict:
    """mean, sample standard deviation (0 for one value), min and max, and n."""
    values = [float(v) for v in values]
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def censored_spread(values: list[float], sides: list[str | None]) -> dict:
    """Over seeds, a width that some seeds report only as a bound (units.bound_side: '>=' where it never shrank below
    its start or equals its input's size, '<=' where the depth hit its iteration cap still shrinking, None where
    measured): `measured`, spread() of the measured values (None when every one is censored), and `bounds`, the
    censored values as [side, value], sorted. A bound is not a measurement, and no single number summarises the two
    without a model of what lies beyond the bound: averaging it in as a value pulls the mean towards the bound,
    leaving it out pulls it towards the seeds that were measured. So both are kept and shown, the bounds counted and
    listed."""
    kept = [v for v, side in zip(values, sides) if side is None]
    bounds = sorted([side, float(v)] for v, side in zip(values, sides) if side is not None)
    return {"measured": spread(kept) if kept else None, "bounds": bounds}


def _reasons(run: dict) -> list:
    """Per hidden layer of a depths.json entry, its "censored" entry; None where the run recorded none (runs from
    before censoring was)."""
    marks = run.get("censored") if isinstance(run.get("censored"), list) else []
    return list(marks) + [None] * (len(run["widths"]) - len(marks))


def summarise(root: str | Path, seeds: list[int]) -> dict[str, dict]:
    """Per depth (as a string key): every finished seed's depths.json entry and the spread over seeds of the
    chosen network's total width, each layer's width, parameters, test and validation accuracy, iterations,
    cumulative seconds and FLOPs, and how often each stop reason ended it. `total_width` and `widths` spread every
    seed's value; `censoring` holds the same widths split into measured seeds and bounds (censored_spread: a total
    is a bound where any of its layers is, on the side they agree on), which is what the tables show."""
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
        reasons = [_reasons(r) for r in runs]
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
            "censoring": {
                "total_width": censored_spread([sum(r["widths"]) for r in runs], [sum_side(why) for why in reasons]),
                "widths": [censored_spread([r["widths"][layer] for r in runs], [bound_side(why[layer]) for why in reasons])
                           for layer in range(int(key))],
            },
            "per_seed": {str(s): {**{k: rows[s][k] for k in ("widths", "test_acc", "val_acc", "parameters", "stop_reason",
                                                             "iterations", "cumulative_seconds")},
                                  "censored": rows[s].get("censored")} for s in sorted(rows)},
        }
    return out


def run_replicates(base: RunConfig, seeds: list[int], root: str | Path, *, resume: bool = False, overwrite: bool = False,
                   max_members: int | None = None, live=None, say=None, warn=None) -> dict[str, dict]:
    """Make (or with `resume` continue) the replicates folder `root`: `base` (a validated RunConfig whose
    data.seed is set) once per seed, trained in lockstep batches of at most `max_members`, each in its own seed-S/
    run folder; returns summarise()'s spread per depth, also written to replicates.json (after an interrupt too).
    `live`: a live.ReplicasReporter (or None); `say`/`warn` as job.execute takes them. Bad settings and folders
    raise ConfigError before anything is written. A resume continues under the stored batch size, so that its
    batches form as the uninterrupted run's did."""
    from rankprune.evolve import NullReporter
    from rankprune.job import Job, execute, replaced_line

    root = Path(root)
    if base.data.seed is None:
        raise ConfigError("replicates share one data draw: set data.seed (--data-seed)")
    if resume:
        stored = read_replicates(root)
        if stored.get("batch_members") not in (None, max_members) and max_members is not None:
            raise ConfigError(f"cannot resume {root} with --batch-members {max_members} (it was run with "
                              f"{stored['batch_members']}): batches formed otherwise give other numbers")
        max_members = stored.get("batch_members", max_members)
    elif root.exists():
        if not root.is_dir():
            raise RunFolderError(f"{root} exists and is not a folder")
        if not holds_nothing(root):
            if not overwrite:
                raise RunFolderError(f"{root} exists and is not empty; pass --resume to continue it or --overwrite to replace it")
            if not is_result(root):
                raise RunFolderError(f"--overwrite replaces only a rankprune run or replicates folder, and {root} is not "
                                     "one; nothing was touched")
        for folder in [root, *(p for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file())]:
            RunFolder(folder).refuse_if_held()  # never replace what another process is writing
    check_writable(root)
    jobs = []
    for seed in seeds:
        path = seed_folder(root, seed)
        again = resume and (path / "config.json").is_file()
        jobs.append(Job(base.replace(seed=seed), path, resume=again, overwrite=overwrite and not again, tags={"seed": seed}))

    @contextlib.contextmanager
    def hold_root():
        """The replicates folder's own lock, the earlier result it replaces, and its index."""
        holder = RunFolder(root)
        holder.acquire()
        if say is not None:
            say(f"replicates folder: {root}")
        try:
            if overwrite:
                # every seed folder of this run is replaced by its own session (which keeps a user's files in it)
                removed, kept = remove_result(root, keep=frozenset(seed_folder(root, s).name for s in seeds))
                if (removed or kept) and say is not None:
                    say(replaced_line(root, removed, kept))
            earlier = read_replicates(root).get("summary", {}) if is_replicates_folder(root) else {}
            write_replicates(root, {"seeds": seeds, "data_seed": base.data_seed, "batch_members": max_members,
                                    "config": base.to_dict(), "summary": earlier})
            try:
                yield
            finally:
                with contextlib.suppress(OSError):  # a full disk must not hide why the run stopped
                    write_replicates(root, {**read_replicates(root), "summary": summarise(root, seeds)})
        finally:
            holder.release()

    contexts = [hold_root] + ([lambda: live] if live is not None else [])
    reporters = [live.for_seed(s) for s in seeds] if live is not None else [NullReporter() for _ in seeds]
    execute(jobs, reporters=reporters, contexts=contexts, max_members=max_members, say=say, warn=warn)
    return summarise(root, seeds)
