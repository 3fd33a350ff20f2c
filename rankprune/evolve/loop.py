"""The controller loop: for each depth, resume, then `while there is a next phase: run one iteration`, then
the depth's summary. The rules live in phases.py, one iteration in iteration.py, measurements in probes/."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import nn

from rankprune.config import RunConfig
from rankprune.data import Splits
from rankprune.evolve.iteration import run_iteration
from rankprune.evolve.phases import SHRINK, next_phase, phase, result_iteration, stop_reason
from rankprune.models import get_family, width_for_parameters
from rankprune.runfolder import DEPTHS, ITERATION_TABLES, ITERATIONS, RunFolder

__all__ = ["Reporter", "NullReporter", "DepthResult", "evolve", "evolve_depth", "starting_widths"]


class Reporter(Protocol):
    """What the controller tells a live view. Every method may be a no-op."""

    def depth_started(self, depth: int, widths: list[int], iteration: int) -> None: ...
    def iteration_started(self, depth: int, iteration: int, widths: list[int]) -> None: ...
    def epoch_done(self, depth: int, iteration: int, row: dict) -> None: ...
    def iteration_done(self, depth: int, row: dict) -> None: ...
    def depth_done(self, depth: int, summary: dict) -> None: ...


class NullReporter:
    def depth_started(self, depth, widths, iteration): pass
    def iteration_started(self, depth, iteration, widths): pass
    def epoch_done(self, depth, iteration, row): pass
    def iteration_done(self, depth, row): pass
    def depth_done(self, depth, summary): pass


@dataclass(frozen=True)
class DepthResult:
    depth: int
    summary: dict  # the depths.json entry


def starting_widths(cfg: RunConfig, data: Splits, depth: int) -> list[int]:
    """A depth's starting widths: cfg.model.width in every hidden layer, or with --params the equal width
    whose network has about that many parameters."""
    family = get_family(cfg.model.family)
    if cfg.model.params is not None:
        return [width_for_parameters(family, data.input_shape, depth, data.n_classes, cfg.model.params)] * depth
    return [cfg.model.width or family.default_width] * depth


def evolve_depth(cfg: RunConfig, data: Splits, run: RunFolder, depth: int, reporter: Reporter,
                 initial_widths: list[int] | None = None) -> DepthResult:
    """Run the controller for one depth, from `initial_widths` (one per hidden layer) or starting_widths;
    a depth with finished iterations in the run folder continues after the last of them."""
    cfg = cfg.resolved()
    if initial_widths is not None and len(initial_widths) != depth:
        raise ValueError(f"depth {depth} needs {depth} initial widths, got {list(initial_widths)}")
    history = [r for r in run.rows(ITERATIONS) if r["depth"] == depth]
    widths = history[-1]["next_widths"] if history else list(initial_widths or starting_widths(cfg, data, depth))
    reporter.depth_started(depth, widths, len(history))
    previous: nn.Module | None = None
    while (upcoming := next_phase(history, cfg)) is not None:
        iteration = history[-1]["iteration"] + 1 if history else 0
        run.set_status("running", depth=depth, iteration=iteration)
        row, previous = run_iteration(cfg, data, run, depth, iteration, upcoming, history, widths, previous, reporter)
        shrinks = [h for h in history if phase(h) == SHRINK]
        row["stop"] = stop_reason(row, shrinks + [row], cfg) if upcoming == SHRINK else history[-1]["stop"]
        run.append(ITERATIONS, row)  # last: a row here means the iteration's files are complete
        history.append(row)
        reporter.iteration_done(depth, row)
        widths = row["next_widths"]
    summary = _summary(cfg, depth, history)
    run.save_weights(run.load_weights(depth, summary["chosen_iteration"]), depth)
    depths = run.read(DEPTHS, {})
    depths[str(depth)] = summary
    run.write(DEPTHS, depths)
    reporter.depth_done(depth, summary)
    return DepthResult(depth, summary)


def _summary(cfg: RunConfig, depth: int, history: list[dict]) -> dict:
    """The depths.json entry of a finished depth: its result iteration against its first."""
    chosen, first = result_iteration(history, cfg.evolve.max_drop, cfg.evolve.drop_z), history[0]
    return {
        "depth": depth,
        "family": cfg.model.family,
        "params_requested": cfg.model.params,
        "stop_reason": history[-1]["stop"],
        "iterations": len(history),
        "chosen_iteration": chosen["iteration"],
        "widths": chosen["widths"],
        "initial_widths": first["widths"],
        "parameters": chosen["parameters"],
        "initial_parameters": first["parameters"],
        "val_acc": chosen["val_acc"],
        "test_acc": chosen["test_acc"],
        "initial_test_acc": first["test_acc"],
        # The full-width network annealed as the chosen one is (probes/reference.py); None where every
        # iteration anneals within itself and the first iteration's own accuracy is already that.
        "reference_test_acc": first.get("reference_test_acc"),
        "reference_val_acc": first.get("reference_val_acc"),
        "train_acc": chosen["train_acc"],
        "train_loss": chosen["train_loss"],
        "test_loss": chosen["test_loss"],
        "generalisation_gap": chosen["generalisation_gap"],
        "rank_measure": chosen["rank_measure"],
        "ranks": chosen["ranks"],  # the driving measure per hidden layer of the chosen network
        "layer_ranks": {k.removeprefix("rank_"): v for k, v in chosen.items() if k.startswith("rank_") and k != "rank_measure"},
        "epochs": sum(h["epochs"] for h in history),
        "cumulative_seconds": history[-1]["cumulative_seconds"],
        "cumulative_flops": history[-1]["cumulative_flops"],
    }


def _reopen_if_extended(cfg: RunConfig, run: RunFolder, depth: int) -> None:
    """A depth that stopped at the iteration cap continues when the cap has since been raised (a resume with a
    larger --max-iterations): its last shrink iteration loses its stop, and a warm run's anneal iteration,
    which finished the network the cap left, is dropped (a later anneal finishes the new result)."""
    depths = run.read(DEPTHS, {})
    done = depths.get(str(depth))
    if not done or done["stop_reason"] != "max-iterations":
        return
    rows = [r for r in run.rows(ITERATIONS)]
    mine = [r for r in rows if r["depth"] == depth]
    shrink = [r for r in mine if phase(r) == SHRINK]
    if len(shrink) >= cfg.evolve.max_iterations:
        return
    dropped = {(depth, r["iteration"]) for r in mine if phase(r) != SHRINK}
    last = shrink[-1]["iteration"]
    kept = []
    for r in rows:
        if (r["depth"], r["iteration"]) in dropped:
            continue
        if (r["depth"], r["iteration"]) == (depth, last):
            r = {**r, "stop": None}
        kept.append(r)
    finished = [(r["depth"], r["iteration"]) for r in kept]
    run.replace_rows(ITERATIONS, kept)
    for table in ITERATION_TABLES:
        run.keep_rows(table, finished)
    del depths[str(depth)]
    run.write(DEPTHS, depths)


def evolve(cfg: RunConfig, data: Splits, run: RunFolder, reporter: Reporter | None = None) -> list[DepthResult]:
    """Run the controller for every depth in cfg.evolve.layers; depths already finished are kept."""
    reporter = reporter or NullReporter()
    cfg = cfg.resolved()  # the family's defaults (the CLI, studies and the API resolve already; callers may not)
    # Rows of an iteration that never finished (interrupted) are dropped; it is redone from its start.
    # A torn last line (killed mid-write) is dropped too, so the next row never lands on its fragment.
    finished = [(r["depth"], r["iteration"]) for r in run.rows(ITERATIONS)]
    run.keep_rows(ITERATIONS, finished)
    for table in ITERATION_TABLES:
        run.keep_rows(table, finished)
    for depth in cfg.evolve.layers:
        _reopen_if_extended(cfg, run, depth)
    results = []
    for depth in cfg.evolve.layers:
        done = run.read(DEPTHS, {}).get(str(depth))
        results.append(DepthResult(depth, done) if done else evolve_depth(cfg, data, run, depth, reporter))
    run.set_status("finished")
    return results
