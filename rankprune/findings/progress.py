"""What of an experiment's grid is done: a pure function of its study's trials, for the runner and the report.

A cell of the grid (one value of every parameter, the seed included) is done once a COMPLETE trial holds its
parameters. Otherwise it is, in this order of precedence:

    running       a trial of it is RUNNING or WAITING (here or elsewhere; or a worker killed outright mid-trial,
                  whose trial no heartbeat has failed yet)
    interrupted   Ctrl-C or SIGTERM failed its trial: `study run` and the runner retry it once (retry_interrupted)
    killed        its trial failed without a reason: Optuna failed it when its heartbeat stopped (SIGKILL, a lost
                  machine); the runner retries it (retry_killed)
    failed        its trial failed for a reason of its own (diverged, an invalid network, an error): not retried,
                  since the same config and seed would fail alike; the report shows the reason
    not run       no trial yet
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import optuna

from rankprune.study import INTERRUPTED, StudySpec, _grid

__all__ = ["Cell", "Progress", "grid_cells", "cell_key", "grid_progress", "cell_text"]

State = optuna.trial.TrialState
# How a cell reads when it is not done, from the strongest claim on it to the weakest.
PRECEDENCE = ("running", "interrupted", "killed", "failed", "not run")


@dataclass(frozen=True)
class Cell:
    params: dict  # one value of every parameter of the grid
    state: str  # "done" or one of PRECEDENCE
    reason: str = ""  # why it failed, for "failed"


@dataclass(frozen=True)
class Progress:
    declared: int  # cells of the grid
    cells: tuple[Cell, ...]  # in grid order
    complete_trials: int  # COMPLETE trials in the study, repeats and trials outside the grid included
    outside: int  # COMPLETE trials whose parameters are no cell of the grid (the study file changed since)

    @property
    def done(self) -> int:
        return sum(c.state == "done" for c in self.cells)

    @property
    def missing(self) -> list[Cell]:
        return [c for c in self.cells if c.state != "done"]

    @property
    def runnable(self) -> list[Cell]:
        """Missing cells a run would try: all but those that failed for a reason of their own."""
        return [c for c in self.missing if c.state != "failed"]

    @property
    def complete(self) -> bool:
        return self.done == self.declared

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.missing:
            out[c.state] = out.get(c.state, 0) + 1
        return {s: out[s] for s in PRECEDENCE if s in out}


def grid_cells(spec: StudySpec) -> list[dict]:
    """Every cell of the study's grid, in the order of its space's keys."""
    grid = _grid(spec)
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def cell_key(params: dict) -> tuple:
    return tuple(sorted(params.items(), key=lambda kv: kv[0]))


def cell_text(params: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in params.items())


def _state_of(trial) -> tuple[str, str]:
    if trial.state == State.COMPLETE:
        return "done", ""
    if trial.state in (State.RUNNING, State.WAITING):
        return "running", ""
    reason = str(trial.user_attrs.get("fail_reason", ""))
    if trial.state == State.FAIL and not reason:
        return "killed", ""
    if reason.startswith(INTERRUPTED):
        return "interrupted", reason
    return "failed", reason or trial.state.name.lower()


def grid_progress(spec: StudySpec, trials: list) -> Progress:
    """The state of every cell of `spec`'s grid, from a study's trials (FrozenTrials; [] for a study not made yet)."""
    cells = grid_cells(spec)
    best: dict[tuple, tuple[str, str]] = {}
    rank = {s: i for i, s in enumerate(("done", *PRECEDENCE))}
    keys = {cell_key(c) for c in cells}
    outside = complete = 0
    for t in trials:
        state, reason = _state_of(t)
        key = cell_key(t.params) if t.params else cell_key(t.system_attrs.get("fixed_params", {}))
        if t.state == State.COMPLETE:
            complete += 1
            outside += key not in keys
        if key in keys and rank[state] < rank[best.get(key, ("not run", ""))[0]]:
            best[key] = (state, reason)
    return Progress(len(cells), tuple(Cell(c, *best.get(cell_key(c), ("not run", ""))) for c in cells), complete, outside)
