"""Measurements that run beside training: an epoch's spectra and movement decompositions (full SVDs of every weight
matrix and of its change) take a tenth of an MNIST-subset run's time when the training waits for them, yet nothing
but the epoch's row needs them. So a probe's epoch() may return, besides the columns it measured at once, a `Later`:
a function of tensors it copied at the epoch's end, run on the measuring thread (one per process) while the next
epoch trains. The row is appended to epochs.jsonl, and reported, once its Later parts are done; every epoch has its
row, in order (EpochRows).

Only what no decision of this epoch reads may wait: the driving rank that --saturate rank|both watches is measured
at once (SpectraProbe.defers). An iteration's end, an error and Ctrl-C or SIGTERM first wait for the last epoch's
row (EpochRows.flush), so an interrupted run keeps every epoch it finished.

What it saves depends on free cores: training that leaves a core idle (one OpenMP thread per process, or a GPU
doing the training) hides the decompositions entirely; training on every core hides part of them
(benchmarks/bench_measure_share.py and bench_probe_cost.py measure both paths in one run).
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

__all__ = ["Later", "EpochRows", "set_beside"]

_BESIDE = True
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


class Later:
    """The part of a probe's epoch measurement that can run on the measuring thread: `measure()` returns its
    columns, reading only what the probe copied at the epoch's end (never the live network)."""

    __slots__ = ("measure",)

    def __init__(self, measure: Callable[[], dict]):
        self.measure = measure


def set_beside(on: bool) -> bool:
    """Run Later parts on the measuring thread (True, the default) or at once on the training thread (the old path,
    which the benchmarks time beside the new one). Returns the previous setting."""
    global _BESIDE
    previous, _BESIDE = _BESIDE, bool(on)
    return previous


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rankprune-measure")
        return _POOL


class EpochRows:
    """One iteration's epoch rows, finished in order by `finish(row)` (append and report): at once where an epoch
    has no Later part, else on the measuring thread. At most one epoch waits at a time: the next submit, and flush(),
    wait for it first, and re-raise what its measurement raised."""

    def __init__(self, finish: Callable[[dict], None]):
        self.finish = finish
        self.pending: Future | None = None

    def submit(self, row: dict, later: list[Later]) -> None:
        self.flush()
        if not later or not _BESIDE:
            for part in later:
                row.update(part.measure())
            self.finish(row)
            return

        def work() -> None:
            for part in later:
                row.update(part.measure())
            self.finish(row)

        self.pending = _pool().submit(work)

    def flush(self) -> None:
        """Wait until every submitted row is written (re-raising its measurement's error, if any)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()
