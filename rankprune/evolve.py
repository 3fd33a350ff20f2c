"""The rank-pruning controller: train -> measure -> rebuild -> retrain, until the widths stop changing.

For each depth L: start from L hidden layers of the initial width, train to saturation, measure
every layer's rank, give hidden layer l the width of rank(W_l) (never more than it has), multiply
the weight decay by wd_decay, and repeat. A depth ends at a fixed point (the widths did not
change: the network's convergent rank), when they converged (the total hidden width shrank by at
most width_tol of itself), at max_iterations, when validation accuracy falls more
than max_drop below the best iteration so far, or when training diverges.

The depth's result is its *chosen* iteration: the last one whose validation accuracy is within
max_drop of the best, so an accuracy drop reports the narrowest network that still held accuracy.
Every decision uses validation data; the test split is only recorded.

Every iteration's seeds derive from (seed, depth, iteration), so a resumed run continues exactly
as an uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from rankprune.config import RunConfig
from rankprune.data import Splits
from rankprune.measure import measure_activations, measure_layers, recorded_measures
from rankprune.models import get_family, width_for_parameters
from rankprune.rank import parse_measure
from rankprune.rebuild import next_widths, rebuild
from rankprune.runfolder import DEPTHS, EPOCHS, ITERATIONS, SPECTRA, RunFolder
from rankprune.train import batch_gradient, evaluate, train_to_saturation

__all__ = ["Reporter", "NullReporter", "DepthResult", "evolve", "evolve_depth", "derive_seed", "DEPTH_STOP_REASONS"]

DEPTH_STOP_REASONS = ("fixed-point", "converged", "max-iterations", "accuracy-drop", "diverged")


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


def derive_seed(seed: int, *keys: int) -> int:
    """An independent 31-bit seed for a (seed, key...) tuple, stable across runs and resumes."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0] & 0x7FFFFFFF)


# Keys of derive_seed's last argument, so two uses never share a stream.
_INIT, _ORDER, _REBUILD, _SAMPLE, _GRAD = 0, 1, 2, 3, 4


def _decision_acc(row: dict) -> float:
    """The validation accuracy an iteration is judged by (rows from before decision_acc: val_acc)."""
    return row.get("decision_acc", row["val_acc"])


def _chosen(history: list[dict], max_drop: float) -> dict:
    """The last iteration whose validation accuracy is within max_drop of the best."""
    finite = [h for h in history if h["stop"] != "diverged"] or history
    best = max(_decision_acc(h) for h in finite)
    return [h for h in finite if _decision_acc(h) >= best - max_drop][-1]


def _stop_reason(row: dict, history: list[dict], cfg: RunConfig) -> str | None:
    if row["train_stop"] == "diverged":
        return "diverged"
    best = max(_decision_acc(h) for h in history)
    if _decision_acc(row) < best - cfg.evolve.max_drop:
        return "accuracy-drop"
    if row["next_widths"] == row["widths"]:
        return "fixed-point"
    if sum(row["widths"]) - sum(row["next_widths"]) <= cfg.evolve.width_tol * sum(row["widths"]):
        return "converged"
    if row["iteration"] + 1 >= cfg.evolve.max_iterations:
        return "max-iterations"
    return None


def _rebuild_sample(data: Splits, cfg: RunConfig, depth: int, iteration: int):
    """A seeded sample of training inputs (never validation or test) for the rebuild and activation ranks."""
    n = len(data.train)
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, depth, iteration, _SAMPLE))
    idx = torch.randperm(n, generator=g)[: min(n, cfg.evolve.rebuild_samples)].to(data.train.x.device)
    return torch.index_select(data.train.x, 0, idx)


def _gradient_batch(data: Splits, cfg: RunConfig, depth: int, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded, full-size batch of training rows on which every epoch's gradient rank is measured.

    A gradient of B rows has rank at most B; the epoch's last batch is often short (14 rows on digits),
    which would cap the measured rank at its size rather than at the batch size the run trains with.
    """
    n = len(data.train)
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, depth, iteration, _GRAD))
    idx = torch.randperm(n, generator=g)[: min(n, cfg.train.batch_size)].to(data.train.x.device)
    return torch.index_select(data.train.x, 0, idx), torch.index_select(data.train.y, 0, idx)


def _restore(cfg: RunConfig, data: Splits, run: RunFolder, depth: int, row: dict, device) -> nn.Module:
    """The network an earlier (finished) iteration ended with, from its saved state_dict."""
    model = get_family(cfg.model.family).build(data.input_shape, row["widths"], data.n_classes, seed=0, device=device)
    model.load_state_dict(run.load_weights(depth, row["iteration"]))
    return model


def starting_widths(cfg: RunConfig, data: Splits, depth: int) -> list[int]:
    """A depth's starting widths: cfg.model.width in every hidden layer, or with --params the equal width
    whose network has about that many parameters."""
    family = get_family(cfg.model.family)
    if cfg.model.params is not None:
        return [width_for_parameters(family, data.input_shape, depth, data.n_classes, cfg.model.params)] * depth
    return [cfg.model.width or family.default_width] * depth


def evolve_depth(
    cfg: RunConfig, data: Splits, run: RunFolder, depth: int, reporter: Reporter,
    initial_widths: list[int] | None = None,
) -> DepthResult:
    """Run the controller for one depth, starting from cfg.model.width units per hidden layer or
    from `initial_widths` (one per hidden layer) when given."""
    if initial_widths is not None and len(initial_widths) != depth:
        raise ValueError(f"depth {depth} needs {depth} initial widths, got {list(initial_widths)}")
    measures = recorded_measures(cfg.rank.measure)
    drive = parse_measure(cfg.rank.measure).spec
    device = data.train.x.device

    history = [r for r in run.rows(ITERATIONS) if r["depth"] == depth]
    if history:  # resume after the last finished iteration
        widths, start = history[-1]["next_widths"], history[-1]["iteration"] + 1
        cum_seconds, cum_flops = history[-1]["cumulative_seconds"], history[-1]["cumulative_flops"]
    else:
        widths = list(initial_widths) if initial_widths is not None else starting_widths(cfg, data, depth)
        start, cum_seconds, cum_flops = 0, 0.0, 0.0
    reporter.depth_started(depth, widths, start)
    for h in history:  # rows written before phases existed
        h.setdefault("phase", "shrink")

    family = get_family(cfg.model.family)
    previous: nn.Module | None = None
    reason = history[-1]["stop"] if history else None
    iteration = start
    # The warm rebuild keeps what the network computes, so it need not anneal every iteration:
    # shrink iterations stop at the first plateau, and one anneal iteration finishes the result.
    anneal = cfg.evolve.rebuild == "warm" and cfg.train.lr_drops > 0
    shrink_train = dataclasses.replace(cfg.train, lr_drops=0) if anneal else cfg.train
    while reason is None or (anneal and history[-1]["phase"] != "anneal"):
        run.set_status("running", depth=depth, iteration=iteration)
        weight_decay = cfg.train.weight_decay * cfg.evolve.wd_decay**iteration
        sample = _rebuild_sample(data, cfg, depth, iteration)
        after_rebuild: dict = {}
        if reason is not None:  # anneal the chosen network: same widths, a lower learning rate
            base = _chosen(history, cfg.evolve.max_drop)
            widths, phase = base["widths"], "anneal"
            model = _restore(cfg, data, run, depth, base, device)
            train_cfg = dataclasses.replace(cfg.train, lr=cfg.train.lr * cfg.train.lr_drop_factor, lr_drops=cfg.train.lr_drops - 1)
            weight_decay = base["weight_decay"]
        elif iteration == 0:
            phase, train_cfg = "shrink", shrink_train
            model = family.build(data.input_shape, widths, data.n_classes, derive_seed(cfg.seed, depth, 0, _INIT), device)
        else:
            phase, train_cfg = "shrink", shrink_train
            if previous is None:
                previous = _restore(cfg, data, run, depth, history[-1], device)
            model = rebuild(previous, widths, cfg.evolve.rebuild, derive_seed(cfg.seed, depth, iteration, _REBUILD), sample)
            # Accuracy right after the rebuild, before any retraining: what the rebuild kept.
            val, test = evaluate(model, data.val, cfg.train.precision), evaluate(model, data.test, cfg.train.precision)
            after_rebuild = {"val_acc_after_rebuild": val.acc, "test_acc_after_rebuild": test.acc}
        reporter.iteration_started(depth, iteration, widths)

        last: dict = {}  # the last epoch's spectra and row
        base_seconds, base_flops = cum_seconds, cum_flops
        epoch_seconds, epoch_flops = [0.0], [0.0]

        grad_x, grad_y = _gradient_batch(data, cfg, depth, iteration)

        def on_epoch(record: dict) -> None:
            batch_gradient(model, grad_x, grad_y, train_cfg.precision)  # read by measure_layers' grad_rank
            spectra = measure_layers(model, measures)
            last["spectra"] = spectra
            epoch_seconds[0] += record["seconds"]
            epoch_flops[0] += record["flops"]
            row = {
                "depth": depth,
                "iteration": iteration,
                **record,
                "widths": widths,
                "weight_decay": weight_decay,
                "cumulative_seconds": base_seconds + epoch_seconds[0],
                "cumulative_flops": base_flops + epoch_flops[0],
                **spectra.row(),
            }
            run.append(EPOCHS, row)
            last["row"] = row
            reporter.epoch_done(depth, iteration, row)

        result = train_to_saturation(
            model, data, train_cfg, weight_decay, derive_seed(cfg.seed, depth, iteration, _ORDER), on_epoch
        )
        cum_seconds, cum_flops = base_seconds + result.seconds, base_flops + result.flops
        spectra = last["spectra"]
        final_epoch = last["row"]
        train_eval = evaluate(model, data.train, cfg.train.precision)
        ranks = spectra.ranks[drive][:-1]  # hidden layers' incoming matrices; the output layer is not shrunk
        row = {
            "depth": depth,
            "iteration": iteration,
            "phase": phase,
            "widths": widths,
            "parameters": family.parameter_count(data.input_shape, widths, data.n_classes),
            "weight_decay": weight_decay,
            "epochs": result.epochs,
            "train_stop": result.stop_reason,
            "train_loss": train_eval.loss,
            "train_acc": train_eval.acc,
            "val_loss": final_epoch["val_loss"],
            "val_acc": final_epoch["val_acc"],
            # An annealed iteration is judged by its last epoch. A warm shrink iteration stops at its
            # first plateau at the full learning rate, where the last epoch is one noisy sample
            # (+-1.5 points on 800 images): it is judged by its best epoch, which the anneal reaches.
            "decision_acc": result.best_val_acc if anneal and phase == "shrink" else final_epoch["val_acc"],
            "test_loss": final_epoch["test_loss"],
            "test_acc": final_epoch["test_acc"],
            "generalisation_gap": train_eval.acc - final_epoch["test_acc"],
            "seconds": result.seconds,
            "flops": result.flops,
            "cumulative_seconds": cum_seconds,
            "cumulative_flops": cum_flops,
            "rebuild": cfg.evolve.rebuild if phase == "shrink" and iteration > 0 else None,
            # before the rebuild = the previous iteration's accuracy at saturation
            "val_acc_before_rebuild": history[-1]["val_acc"] if after_rebuild else None,
            "test_acc_before_rebuild": history[-1]["test_acc"] if after_rebuild else None,
            "val_acc_after_rebuild": after_rebuild.get("val_acc_after_rebuild"),
            "test_acc_after_rebuild": after_rebuild.get("test_acc_after_rebuild"),
            "rank_measure": drive,
            "ranks": ranks,
            **{f"rank_{spec}": values for spec, values in spectra.ranks.items()},
            **{f"activation_rank_{spec}": values for spec, values in measure_activations(model, sample, measures).items()},
            "next_widths": widths if result.stop_reason == "diverged" or phase == "anneal"
            else next_widths(widths, ranks, cfg.rank.min_width),
        }
        run.save_weights(model.state_dict(), depth, iteration)
        for layer, s in enumerate(spectra.singular_values):
            run.append(SPECTRA, {"depth": depth, "iteration": iteration, "layer": layer, "singular_values": s.tolist()})
        if phase == "shrink":
            reason = _stop_reason(row, [h for h in history if h["phase"] == "shrink"] + [row], cfg)
            if reason == "diverged" and anneal:
                anneal = False  # nothing sound to anneal: report the last finite iteration as it is
        row["stop"] = reason
        run.append(ITERATIONS, row)  # last: a row here means the iteration's files are complete
        history.append(row)
        reporter.iteration_done(depth, row)
        previous, widths, iteration = model, row["next_widths"], iteration + 1

    annealed = history[-1] if history[-1]["phase"] == "anneal" else None
    chosen, first = annealed or _chosen(history, cfg.evolve.max_drop), history[0]
    summary = {
        "depth": depth,
        "family": cfg.model.family,
        "params_requested": cfg.model.params,
        "stop_reason": reason,
        "iterations": len(history),
        "chosen_iteration": chosen["iteration"],
        "widths": chosen["widths"],
        "initial_widths": first["widths"],
        "parameters": chosen["parameters"],
        "initial_parameters": first["parameters"],
        "val_acc": chosen["val_acc"],
        "test_acc": chosen["test_acc"],
        "initial_test_acc": first["test_acc"],
        "train_acc": chosen["train_acc"],
        "train_loss": chosen["train_loss"],
        "test_loss": chosen["test_loss"],
        "generalisation_gap": chosen["generalisation_gap"],
        "rank_measure": drive,
        "ranks": chosen["ranks"],  # the driving measure per hidden layer of the chosen network
        "layer_ranks": {k.removeprefix("rank_"): v for k, v in chosen.items() if k.startswith("rank_") and k != "rank_measure"},
        "epochs": sum(h["epochs"] for h in history),
        "cumulative_seconds": history[-1]["cumulative_seconds"],
        "cumulative_flops": history[-1]["cumulative_flops"],
    }
    run.save_weights(run.load_weights(depth, chosen["iteration"]), depth)
    depths = run.read(DEPTHS, {})
    depths[str(depth)] = summary
    run.write(DEPTHS, depths)
    reporter.depth_done(depth, summary)
    return DepthResult(depth, summary)


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
    shrink = [r for r in mine if r.get("phase", "shrink") == "shrink"]
    if len(shrink) >= cfg.evolve.max_iterations:
        return
    dropped = {(depth, r["iteration"]) for r in mine if r.get("phase", "shrink") != "shrink"}
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
    run.keep_rows(EPOCHS, finished)
    run.keep_rows(SPECTRA, finished)
    del depths[str(depth)]
    run.write(DEPTHS, depths)


def evolve(cfg: RunConfig, data: Splits, run: RunFolder, reporter: Reporter | None = None) -> list[DepthResult]:
    """Run the controller for every depth in cfg.evolve.layers; depths already finished are kept."""
    reporter = reporter or NullReporter()
    # Rows of an iteration that never finished (interrupted) are dropped; it is redone from its start.
    # A torn last line (killed mid-write) is dropped too, so the next row never lands on its fragment.
    finished = [(r["depth"], r["iteration"]) for r in run.rows(ITERATIONS)]
    run.keep_rows(ITERATIONS, finished)
    run.keep_rows(EPOCHS, finished)
    run.keep_rows(SPECTRA, finished)
    for depth in cfg.evolve.layers:
        _reopen_if_extended(cfg, run, depth)
    results = []
    for depth in cfg.evolve.layers:
        done = run.read(DEPTHS, {}).get(str(depth))
        results.append(DepthResult(depth, done) if done else evolve_depth(cfg, data, run, depth, reporter))
    run.set_status("finished")
    return results
