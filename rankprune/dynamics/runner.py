"""Run an experiment's units into its folder, skipping those already finished, with a progress bar.

Each unit is saved the moment it finishes; Ctrl-C or SIGTERM (which the CLI turns into KeyboardInterrupt) ends
the unit in progress without saving it, and the same command continues from there. `shard` splits the units
between processes that share one folder (K of N takes every N-th unit from the K-th): each writes only its own
units' files.
"""

from __future__ import annotations

import time
from typing import Callable

from rankprune.dynamics.folder import ExperimentFolder

__all__ = ["run_units", "Shard"]

Shard = tuple[int, int]  # (K, N): this process takes units K, K + N, K + 2N, ... (K from 0)


def run_units(folder: ExperimentFolder, units: list[tuple[str, Callable[[], dict]]], *, shard: Shard = (0, 1),
              console=None, describe: Callable[[dict], str] | None = None, label: str = "networks") -> tuple[int, int]:
    """(finished now, finished in all of this shard) after running every unfinished unit of this shard."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    k, n = shard
    mine = units[k::n]
    todo = [(key, compute) for key, compute in mine if not folder.done(key)]
    progress = Progress(TextColumn(f"{folder.kind}: {label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.description}"), console=console, transient=False)
    task = progress.add_task("", total=len(mine), completed=len(mine) - len(todo))
    finished = 0
    with progress:
        for key, compute in todo:
            progress.update(task, description=key)
            start = time.perf_counter()
            result = compute()
            result.setdefault("seconds", time.perf_counter() - start)
            folder.save(key, result)
            finished += 1
            progress.advance(task)
            if describe is not None:
                progress.console.print(f"{key}: {describe(result)}", soft_wrap=True)
    return finished, len(mine) - len(todo) + finished
