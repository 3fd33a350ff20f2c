"""The controller loop: for each depth, resume, then `while there is a next phase: run one iteration`, then
the depth's summary. The rules live in phases.py, one iteration in iteration.py, measurements in probes/."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from torch import nn

from rankprune.config import RunConfig
from rankprune.data import Splits
from rankprune.ensemble import train_members
from rankprune.evolve.iteration import finish_iteration, start_iteration
from rankprune.evolve.phases import SHRINK, censored, next_phase, phase, result_iteration, stop_reason
from rankprune.evolve.scratch import train_scratch
from rankprune.models import get_family, width_for_parameters
from rankprune.runfolder import DEPTHS, ITERATION_TABLES, ITERATIONS, RunFolder

__all__ = ["Reporter", "NullReporter", "DepthResult", "Replica", "evolve", "evolve_together", "evolve_depth", "evolve_depth_together",
           "starting_widths", "rewind_to_complete_round"]


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
    """A depth's starting widths (family.start_widths: cfg.model.width in every hidden layer of an MLP or CNN; a
    transformer's residual width, then each block's groups), or with --params those of the width whose network has
    about that many parameters."""
    family = get_family(cfg.model.family)
    if cfg.model.params is not None:
        return family.start_widths(width_for_parameters(family, data.input_shape, depth, data.n_classes, cfg.model.params), depth)
    return family.start_widths(cfg.model.width or family.default_width, depth)


@dataclass
class Replica:
    """One network's controller in a lockstep evolve: its config, data, run folder and live view. Replicas that
    share a Splits object (and a batch key, ensemble.batch_key) train their iterations in one batch."""

    cfg: RunConfig
    data: Splits
    run: RunFolder
    reporter: Reporter = field(default_factory=NullReporter)
    initial_widths: list[int] | None = None


@dataclass
class _DepthState:
    replica: Replica
    cfg: RunConfig
    history: list[dict]
    widths: list[int]
    previous: nn.Module | None = None


def evolve_depth(cfg: RunConfig, data: Splits, run: RunFolder, depth: int, reporter: Reporter,
                 initial_widths: list[int] | None = None) -> DepthResult:
    """Run the controller for one depth, from `initial_widths` (one per hidden layer) or starting_widths;
    a depth with finished iterations in the run folder continues after the last of them."""
    return evolve_depth_together([Replica(cfg, data, run, reporter, initial_widths)], depth)[0]


def evolve_depth_together(replicas: list[Replica], depth: int, max_members: int | None = None) -> list[DepthResult]:
    """The controller for one depth of every replica, in lockstep: each round makes every unfinished replica's
    next iteration, trains them together (ensemble.train_members, at most `max_members` per batch), and writes
    each replica's row as soon as its network has finished training. Each replica decides its phases and stop
    from its own history (phases.py), exactly as alone; one that stops sits out the later rounds."""
    states = []
    for r in replicas:
        cfg = r.cfg.resolved()
        if r.initial_widths is not None and get_family(cfg.model.family).depth_of(list(r.initial_widths)) != depth:
            raise ValueError(f"depth {depth} needs {len(get_family(cfg.model.family).start_widths(1, depth))} initial "
                             f"widths, got {list(r.initial_widths)}")
        history = [row for row in r.run.rows(ITERATIONS) if row["depth"] == depth]
        widths = history[-1]["next_widths"] if history else list(r.initial_widths or starting_widths(cfg, r.data, depth))
        r.reporter.depth_started(depth, widths, len(history))
        states.append(_DepthState(r, cfg, history, widths))
    while True:
        pending = []
        for st in states:
            upcoming = next_phase(st.history, st.cfg)
            if upcoming is None:
                continue
            iteration = st.history[-1]["iteration"] + 1 if st.history else 0
            st.replica.run.set_status("running", depth=depth, iteration=iteration)
            pending.append((st, start_iteration(st.cfg, st.replica.data, st.replica.run, depth, iteration, upcoming,
                                                st.history, st.widths, st.previous, st.replica.reporter)))
        if not pending:
            break
        by_data: dict[int, list] = {}
        for item in pending:
            by_data.setdefault(id(item[0].replica.data), []).append(item)
        try:
            for group in by_data.values():
                train_members([p.member for _, p in group], group[0][0].replica.data,
                              lambda i, result, group=group: _record(depth, *group[i], result), max_members)
        finally:
            for _, p in pending:  # an interrupted batch keeps the row of every epoch its members finished
                p.rows.flush()
    return [_finish_depth(st, depth) for st in states]


def _record(depth: int, st: _DepthState, pending, result) -> None:
    """A replica's iteration has trained: its row, with the stop its rules give, goes into iterations.jsonl."""
    row, st.previous = finish_iteration(pending, result)
    upcoming = pending.phase
    shrinks = [h for h in st.history if phase(h) == SHRINK]
    row["stop"] = stop_reason(row, shrinks + [row], st.cfg) if upcoming == SHRINK else st.history[-1]["stop"]
    start = (st.history[0] if st.history else row)["widths"]
    row["censored"] = censored(row["next_widths"], start, _rank_bounds(st.cfg, st.replica.data, row["next_widths"]))
    st.replica.run.append(ITERATIONS, row)  # last: a row here means the iteration's files are complete
    st.history.append(row)
    st.replica.reporter.iteration_done(depth, row)
    st.widths = row["next_widths"]


def _finish_depth(st: _DepthState, depth: int) -> DepthResult:
    run, cfg = st.replica.run, st.cfg
    summary = _summary(cfg, depth, st.history, st.replica.data)
    run.save_weights(run.load_weights(depth, summary["chosen_iteration"]), depth)
    if cfg.evolve.scratch:
        # Before depths.json: a depth is finished once its entry is there, so a run interrupted in the scratch
        # training resumes here (its iterations all done) and redoes only the scratch training.
        run.set_status("running", depth=depth, scratch=True)
        summary.update(train_scratch(cfg, st.replica.data, run, depth, summary))
    depths = run.read(DEPTHS, {})
    depths[str(depth)] = summary
    run.write(DEPTHS, depths)
    st.replica.reporter.depth_done(depth, summary)
    return DepthResult(depth, summary)


def _rank_bounds(cfg: RunConfig, data: Splits, widths: list[int]) -> list[float]:
    """Per hidden layer, the most rank the matrix that drives its width can have whatever the width: the incoming
    weights' columns (family.fan_in), or for activations (--rank-source activations) the held-out rows they are
    measured on (a ReLU's outputs can span more directions than its weights' columns: no fan-in bound there)."""
    if cfg.rank.source == "activations":
        return [len(data.val) * (data.sequence_length or 1)] * len(widths)  # a sequence gives a row per position
    return get_family(cfg.model.family).fan_in(data.input_shape, widths)


def _still_shrinking(history: list[dict]) -> list[bool] | None:
    """Per layer, whether a depth stopped by the iteration cap still planned to shrink it: not at its fixed point."""
    shrink = [h for h in history if phase(h) == SHRINK]
    if not shrink or shrink[-1].get("stop") != "max-iterations":
        return None
    return [n < w for w, n in zip(shrink[-1]["widths"], shrink[-1]["next_widths"])]


# What the task probes measured on the chosen network, where its task has them (label noise: memorisation on the
# changed rows and its chance level; augmented tasks: unseen-task accuracy; the hinge loss: N_Delta): a study's
# trials carry them, so a finding can test rank against memorisation rather than the gap on noisy labels.
TASK_OUTCOMES = ("train_acc_relabelled", "train_acc_relabelled_true", "train_acc_relabelled_chance", "train_acc_clean",
                 "test_acc_unseen_tasks", "n_delta_fraction",
                 # on sequences (the transformer's): the in-context learning curves (probes/tasks.py)
                 "val_acc_by_position", "test_acc_by_position", "test_acc_unseen_tasks_by_position")


def _summary(cfg: RunConfig, depth: int, history: list[dict], data: Splits) -> dict:
    """The depths.json entry of a finished depth: its result iteration against its first."""
    chosen, first = result_iteration(history, cfg.evolve.max_drop, cfg.evolve.drop_z, cfg.evolve.drop_test), history[0]
    return {
        "depth": depth,
        "family": cfg.model.family,
        "params_requested": cfg.model.params,
        "stop_reason": history[-1]["stop"],
        "iterations": len(history),
        "chosen_iteration": chosen["iteration"],
        "widths": chosen["widths"],
        "initial_widths": first["widths"],
        # per layer: None, or why the width is a bound rather than a measurement (phases.censored)
        "censored": censored(chosen["widths"], first["widths"], _rank_bounds(cfg, data, chosen["widths"]),
                             _still_shrinking(history)),
        # per layer: the most rank its driving matrix can have at those widths (a survey's rank that reaches it is
        # pinned by the input, not measured: study.censored_layers)
        "rank_bounds": _rank_bounds(cfg, data, chosen["widths"]),
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
        "ranks_source": cfg.rank.source,  # what the widths followed: the weights' or the activations' rank
        "ranks": chosen["ranks"],  # the driving measure per hidden layer of the chosen network
        "layer_ranks": {k.removeprefix("rank_"): v for k, v in chosen.items() if k.startswith("rank_") and k != "rank_measure"},
        "epochs": sum(h["epochs"] for h in history),
        "cumulative_seconds": history[-1]["cumulative_seconds"],
        "cumulative_flops": history[-1]["cumulative_flops"],
        **{k: chosen[k] for k in TASK_OUTCOMES if chosen.get(k) is not None},
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


def rewind_to_complete_round(replicas: list[Replica], depth: int) -> None:
    """Before replicas resume a depth in lockstep: drop the iterations of a round that not every member finished.

    Round k of a depth trains iteration k of every replica whose rules still call for one, in one batch
    (ensemble.train_members), and each member's row is written as soon as it has trained. Interrupted within a
    round, some members have that iteration and others not; resumed as they stand, the ones behind would train
    round k in a smaller batch, and a batch's floating-point sums (its padding, its stacked matmuls) differ from
    another batch's, so their numbers would differ from the uninterrupted run's. Going back to the last round
    every member finished re-forms every batch as it was, so a resumed run gives exactly what the uninterrupted
    one gives (on the same device and thread count). A lone replica's round is always complete."""
    if len(replicas) < 2:
        return
    histories = [[row for row in r.run.rows(ITERATIONS) if row["depth"] == depth] for r in replicas]
    unfinished = [len(h) for r, h in zip(replicas, histories) if next_phase(h, r.cfg) is not None]
    if not unfinished:
        return
    round_ = min(unfinished)  # the first round a member still owes
    for r, h in zip(replicas, histories):
        if len(h) > round_:
            finished = [(row["depth"], row["iteration"]) for row in r.run.rows(ITERATIONS)
                        if row["depth"] != depth or row["iteration"] < round_]
            r.run.keep_rows(ITERATIONS, finished)
            for table in ITERATION_TABLES:
                r.run.keep_rows(table, finished)


def evolve(cfg: RunConfig, data: Splits, run: RunFolder, reporter: Reporter | None = None) -> list[DepthResult]:
    """Run the controller for every depth in cfg.evolve.layers; depths already finished are kept."""
    return evolve_together([Replica(cfg, data, run, reporter or NullReporter())])[0]


def evolve_together(replicas: list[Replica], max_members: int | None = None) -> list[list[DepthResult]]:
    """evolve() for several replicas (seeds of one configuration, say) in lockstep, depth by depth; each
    replica's run folder is its own, and resumes as evolve() resumes it."""
    for r in replicas:
        r.cfg = r.cfg.resolved()  # the family's defaults (the CLI, studies and the API resolve already; callers may not)
        # Rows of an iteration that never finished (interrupted) are dropped; it is redone from its start.
        # A torn last line (killed mid-write) is dropped too, so the next row never lands on its fragment.
        finished = [(row["depth"], row["iteration"]) for row in r.run.rows(ITERATIONS)]
        r.run.keep_rows(ITERATIONS, finished)
        for table in ITERATION_TABLES:
            r.run.keep_rows(table, finished)
        for depth in r.cfg.evolve.layers:
            _reopen_if_extended(r.cfg, r.run, depth)
    results: list[dict[int, DepthResult]] = [{} for _ in replicas]
    for depth in dict.fromkeys(d for r in replicas for d in r.cfg.evolve.layers):  # in the order they are given
        todo = []
        for i, r in enumerate(replicas):
            if depth not in r.cfg.evolve.layers:
                continue
            done = r.run.read(DEPTHS, {}).get(str(depth))
            if done:
                results[i][depth] = DepthResult(depth, done)
            else:
                todo.append(i)
        rewind_to_complete_round([replicas[i] for i in todo], depth)
        for i, result in zip(todo, evolve_depth_together([replicas[i] for i in todo], depth, max_members)):
            results[i][depth] = result
    for r in replicas:
        r.run.set_status("finished")
    return [[res[d] for d in r.cfg.evolve.layers] for r, res in zip(replicas, results)]
