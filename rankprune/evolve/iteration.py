"""One controller iteration: make the network its phase calls for, train it to saturation with the probes
measuring, and return its row of iterations.jsonl (the caller decides the stop and writes it)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from rankprune.config import RunConfig
from rankprune.data import Splits
from rankprune.evolve.phases import ANNEAL, SHRINK, anneals, chosen, encode_correct
from rankprune.models import get_family
from rankprune.probes import ProbeContext, make_probes
from rankprune.probes.beside import EpochRows, Later
from rankprune.rank import parse_measure
from rankprune.measure import heldout_inputs
from rankprune.rebuild import next_widths, rebuild_with_cost
from rankprune.runfolder import EPOCHS, RunFolder
from rankprune.seeds import INIT, ORDER, REBUILD, SAMPLE, derive_seed
from rankprune.scaling import center_and_scale
from rankprune.ensemble import Member
from rankprune.train import TrainResult, evaluate, train_to_saturation

__all__ = ["run_iteration", "start_iteration", "finish_iteration", "PendingIteration", "restore"]


def restore(cfg: RunConfig, data: Splits, run: RunFolder, depth: int, row: dict, start: bool = False) -> nn.Module:
    """The network an earlier (finished) iteration ended with (or, with start, began from), from its saved
    state_dict; a plain network (scaling.center_and_scale is the caller's)."""
    return run.load_network(cfg.model.family, data.input_shape, row["widths"], data.n_classes, depth, row["iteration"],
                            start=start, device=data.train.x.device)


def driving_ranks(cfg: RunConfig, row: dict) -> list[float]:
    """The hidden layers' driving ranks in an epoch's or iteration's row: of the incoming weights (rank_<spec>, whose
    output layer is not shrunk) or of the activations on held-out rows (heldout_activation_rank_<spec>)."""
    spec = parse_measure(cfg.rank.measure).spec
    if cfg.rank.source == "activations":
        return row[f"heldout_activation_rank_{spec}"]
    return row[f"rank_{spec}"][:-1]


def _sample(data: Splits, cfg: RunConfig, depth: int, iteration: int) -> torch.Tensor:
    """A seeded sample of training inputs (never validation or test) for the rebuild and the probes."""
    n = len(data.train)
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, depth, iteration, SAMPLE))
    idx = torch.randperm(n, generator=g)[: min(n, cfg.evolve.rebuild_samples)].to(data.train.x.device)
    return torch.index_select(data.train.x, 0, idx)


@dataclass
class PendingIteration:
    """An iteration made and ready to train: its network and how it trains (`member`), and what finish_iteration
    needs to write its row once training is done."""

    member: Member
    cfg: RunConfig
    data: Splits
    run: RunFolder
    depth: int
    iteration: int
    phase: str
    history: list[dict]
    widths: list[int]
    ctx: ProbeContext
    probes: list
    base: tuple[float, float]  # cumulative seconds and FLOPs before this iteration
    after_rebuild: dict
    last: dict  # the last epoch's row, as on_epoch wrote it
    rows: EpochRows  # its epoch rows, some still measuring beside training: flush() before reading `last`


def run_iteration(cfg: RunConfig, data: Splits, run: RunFolder, depth: int, iteration: int, phase: str,
                  history: list[dict], widths: list[int], previous: nn.Module | None, reporter) -> tuple[dict, nn.Module]:
    """Train one iteration of `phase` at `widths` and return (its row without `stop`, the trained network).

    `previous` is the last iteration's network when it is still in memory (else it is restored from disk)."""
    pending = start_iteration(cfg, data, run, depth, iteration, phase, history, widths, previous, reporter)
    m = pending.member
    try:
        result = train_to_saturation(m.model, data, m.cfg, m.weight_decay, m.seed, m.on_epoch, m.ranks)
    finally:
        pending.rows.flush()  # an interrupted iteration keeps the row of every epoch it finished
    return finish_iteration(pending, result)


def start_iteration(cfg: RunConfig, data: Splits, run: RunFolder, depth: int, iteration: int, phase: str,
                    history: list[dict], widths: list[int], previous: nn.Module | None, reporter) -> PendingIteration:
    """Make the network of one iteration of `phase` at `widths` (built, rebuilt or restored), save where it
    starts, and return it with its training settings and probes; ensemble.train_members or train_to_saturation
    trains it, and finish_iteration writes its row."""
    family = get_family(cfg.model.family)
    annealing = anneals(cfg)
    train_cfg = dataclasses.replace(cfg.train, lr_drops=0) if annealing else cfg.train
    weight_decay = cfg.train.weight_decay * cfg.evolve.wd_decay**iteration
    sample = _sample(data, cfg, depth, iteration)
    after_rebuild: dict = {}
    if phase == ANNEAL:  # the chosen network again: same widths, a lower learning rate
        base = chosen(history, cfg.evolve.max_drop, cfg.evolve.drop_z, cfg.evolve.drop_test)
        widths, weight_decay = base["widths"], base["weight_decay"]
        model = restore(cfg, data, run, depth, base)
        train_cfg = dataclasses.replace(cfg.train, lr=cfg.train.lr * cfg.train.lr_drop_factor, lr_drops=cfg.train.lr_drops - 1)
    elif iteration == 0:
        model = family.build(data.input_shape, widths, data.n_classes, derive_seed(cfg.seed, depth, 0, INIT), data.train.x.device)
    else:
        previous = previous if previous is not None else restore(cfg, data, run, depth, history[-1])
        # What the rebuild cost in function, on held-out rows it was not fitted on (None for reinit)
        model, cost = rebuild_with_cost(previous, widths, cfg.evolve.rebuild, derive_seed(cfg.seed, depth, iteration, REBUILD),
                                        sample, heldout_inputs(data))
        if cost is not None:
            after_rebuild.update(rebuild_error=cost.layer_errors, rebuild_output_error=cost.output_error)
    if cfg.model.alpha is not None:
        # alpha * (f - f_0), f_0 where this iteration starts (an anneal: where its chosen iteration started), and
        # the learning rate / alpha^2: every iteration of a scaled run starts at zero output.
        start = restore(cfg, data, run, depth, base, start=True) if phase == ANNEAL else None
        center_and_scale(model, cfg.model.alpha, start)
        train_cfg = dataclasses.replace(train_cfg, lr=train_cfg.lr / cfg.model.alpha**2)
    if phase == SHRINK and iteration > 0:
        # Accuracy right after the rebuild, before any retraining: what the rebuild kept.
        val, test = (evaluate(model, data.val, cfg.train.precision, cfg.train.loss),
                     evaluate(model, data.test, cfg.train.precision, cfg.train.loss))
        after_rebuild.update(val_acc_after_rebuild=val.acc, test_acc_after_rebuild=test.acc)
    run.save_weights(model.state_dict(), depth, iteration, start=True)  # where the iteration began
    reporter.iteration_started(depth, iteration, widths)

    ctx = ProbeContext(cfg, data, run, model, depth, iteration, train_cfg.precision, sample, train_cfg, weight_decay)
    probes = make_probes(cfg)
    base_seconds, base_flops = (history[-1]["cumulative_seconds"], history[-1]["cumulative_flops"]) if history else (0.0, 0.0)
    spent = {"seconds": 0.0, "flops": 0.0}
    last: dict = {}

    this_epoch: dict = {}

    def finish(row: dict) -> None:
        run.append(EPOCHS, row)
        last["row"] = row
        reporter.epoch_done(depth, iteration, row)

    rows = EpochRows(finish)  # an epoch's decompositions run beside the next epoch's training (probes/beside.py)

    def on_epoch(record: dict) -> None:
        spent["seconds"] += record["seconds"]
        spent["flops"] += record["flops"]
        row = {"depth": depth, "iteration": iteration, **record, "widths": widths, "weight_decay": weight_decay,
               "cumulative_seconds": base_seconds + spent["seconds"], "cumulative_flops": base_flops + spent["flops"]}
        later = []
        for probe in probes:
            out = probe.epoch(ctx)
            if isinstance(out, Later):
                later.append(out)
            else:
                row.update(out)
        this_epoch["row"] = row  # completed in place once its Later parts are measured
        rows.submit(row, later)

    def epoch_ranks():
        """--saturate rank|both: this epoch's driving ranks (the spectra or activations probe's), as a function that
        waits for them; the plateau rule calls it only where a decision needs them (saturation.Saturation)."""
        row = this_epoch["row"]

        def ranks() -> list:
            rows.flush()
            return driving_ranks(cfg, row)

        return ranks

    member = Member(model, train_cfg, weight_decay, derive_seed(cfg.seed, depth, iteration, ORDER), on_epoch,
                    ranks=epoch_ranks,
                    on_spectra=lambda values: ctx.precomputed.__setitem__("singular_values", values))
    return PendingIteration(member, cfg, data, run, depth, iteration, phase, history, widths, ctx, probes,
                            (base_seconds, base_flops), after_rebuild, last, rows)


def finish_iteration(pending: PendingIteration, result: TrainResult) -> tuple[dict, nn.Module]:
    """After training: the iteration-end probes, the saved weights, and its row without `stop`."""
    p = pending
    p.rows.flush()
    cfg, data, run, depth, iteration, phase, history, widths = p.cfg, p.data, p.run, p.depth, p.iteration, p.phase, p.history, p.widths
    model, weight_decay, ctx, probes, last, after_rebuild = p.member.model, p.member.weight_decay, p.ctx, p.probes, p.last, p.after_rebuild
    base_seconds, base_flops = p.base
    family = get_family(cfg.model.family)
    annealing = anneals(cfg)
    drive = parse_measure(cfg.rank.measure).spec
    final_epoch = last["row"]
    train_eval = evaluate(model, data.train, cfg.train.precision, cfg.train.loss)
    measured: dict = {}
    for probe in probes:
        measured.update(probe.iteration(ctx))
    ranks = driving_ranks(cfg, measured)
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
        # N_Delta counts constraints, one per training sample and output (losses.unsatisfied); its fraction is of
        # all P K of them; N_Delta / h divides by one hidden layer's width, as find_h's equal widths define h (the
        # mean width, once a shrink has made them unequal)
        **({"n_delta": train_eval.n_delta,
            "n_delta_fraction": train_eval.n_delta / max(1, len(data.train) * data.n_classes),
            "n_delta_per_parameter": train_eval.n_delta / family.parameter_count(data.input_shape, widths, data.n_classes),
            "n_delta_per_width": train_eval.n_delta / (sum(widths) / max(1, len(widths)))}
           if cfg.train.loss == "hinge" else {}),
        "val_loss": final_epoch["val_loss"],
        "n_val": len(data.val),  # the validation rows its accuracy is over (the drop rule's standard error)
        "val_acc": final_epoch["val_acc"],
        # An annealed iteration is judged by its last epoch. A warm shrink iteration stops at its first
        # plateau at the full learning rate, where the last epoch is one noisy sample (+-1.5 points on
        # 800 images): it is judged by its best epoch, which the anneal reaches.
        "decision_acc": result.best_val_acc if annealing and phase == SHRINK else final_epoch["val_acc"],
        # which validation images the network judged by decision_acc got right: the accuracy-drop test pairs
        # two iterations on them (phases.is_drop, McNemar)
        "decision_correct": encode_correct(result.best_val_correct if annealing and phase == SHRINK
                                           else result.last_val_correct),
        "test_loss": final_epoch["test_loss"],
        "test_acc": final_epoch["test_acc"],
        "generalisation_gap": train_eval.acc - final_epoch["test_acc"],
        "seconds": result.seconds,
        "flops": result.flops,
        "cumulative_seconds": base_seconds + result.seconds,
        "cumulative_flops": base_flops + result.flops,
        "rebuild": cfg.evolve.rebuild if phase == SHRINK and iteration > 0 else None,
        # before the rebuild = the previous iteration's accuracy at saturation
        "val_acc_before_rebuild": history[-1]["val_acc"] if after_rebuild else None,
        "test_acc_before_rebuild": history[-1]["test_acc"] if after_rebuild else None,
        "val_acc_after_rebuild": after_rebuild.get("val_acc_after_rebuild"),
        "test_acc_after_rebuild": after_rebuild.get("test_acc_after_rebuild"),
        "rank_measure": drive,
        "ranks_source": cfg.rank.source,  # what `ranks` were measured on: weights | activations (held-out rows)
        "ranks": ranks,
        # The warm rebuild's cost in function on held-out rows (rebuild.RebuildCost); None where this iteration
        # did not start from a warm rebuild (iteration 0, reinit, the anneal).
        "rebuild_error": after_rebuild.get("rebuild_error"),
        "rebuild_output_error": after_rebuild.get("rebuild_output_error"),
        # --alpha: whether the scaled output restarted at zero where this iteration began, so that what the
        # rebuild kept of the function was not the output it started training from (scaling.py).
        "output_recentred": None if cfg.model.alpha is None else (phase == SHRINK and iteration > 0),
        **measured,
        "next_widths": widths if result.stop_reason == "diverged" or phase == ANNEAL
        else next_widths(widths, ranks, cfg.rank.min_width, [g.offset for g in family.groups(widths)]),
    }
    run.save_weights(model.state_dict(), depth, iteration)
    return row, model
