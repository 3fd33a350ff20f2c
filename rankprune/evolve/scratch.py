"""The scratch control (--scratch): a depth's chosen widths trained from a fresh initialisation.

Liu et al. 2019, "Rethinking the Value of Network Pruning" (ICLR), train the architecture a pruning method found
from scratch; their Scratch-B gets the training compute that method spent. Here that budget is the depth's
`cumulative_flops`: every iteration the controller trained to find the chosen widths (not the reference probe,
which is a measurement and not a step of the method). If the scratch network matches the chosen one, the
architecture carries the accuracy; if it falls short, the weights the controller handed down do.

The network is the family's at the chosen widths, built from its own seed (seeds.SCRATCH_INIT), and trained with
the run's training settings: its optimiser, learning rate, batch size, loss, plateau rule and learning-rate drops,
and the base weight decay (before any --wd-decay multiplier). The budget becomes whole epochs at the network's
own FLOPs per epoch, trained to the end whatever the plateaus (train.train_to_saturation, stop_at_saturation
False), capped at SCRATCH_EPOCH_CAP x train.max_epochs; the network is scored at the end of its budget (never
at its best test epoch). Its epochs go to scratch.jsonl, its result into the depth's summary as scratch_* keys.
"""

from __future__ import annotations

import dataclasses

from rankprune.config import RunConfig
from rankprune.data import Splits
from rankprune.measure import driving_ranks, heldout_inputs
from rankprune.models import get_family
from rankprune.runfolder import SCRATCH, RunFolder
from rankprune.scaling import center_and_scale
from rankprune.seeds import SCRATCH_INIT, SCRATCH_ORDER, derive_seed
from rankprune.train import evaluate, train_to_saturation

__all__ = ["SCRATCH_EPOCH_CAP", "SCRATCH_KEYS", "scratch_epochs", "epoch_flops", "train_scratch"]

# The most epochs the control trains, in train.max_epochs: a depth that took many iterations at a large width
# would otherwise buy a narrow network thousands of epochs. scratch_capped says where the cap bound.
SCRATCH_EPOCH_CAP = 10

# What the control adds to a depth's summary (depths.json) and a study trial's user attributes.
SCRATCH_KEYS = ("scratch_val_acc", "scratch_test_acc", "scratch_train_acc", "scratch_train_loss", "scratch_test_loss",
                "scratch_epochs", "scratch_flops", "scratch_seconds", "scratch_budget_flops", "scratch_capped",
                "scratch_train_stop")


def epoch_flops(cfg: RunConfig, data: Splits, widths: list[int]) -> float:
    """Training FLOPs of one epoch of the family's network at `widths`, as train.TrainingProgress counts them:
    3 x one sample's forward pass, per sample the epoch draws."""
    family = get_family(cfg.model.family)
    return 3 * family.forward_flops(data.input_shape, widths, data.n_classes) * data.samples_per_epoch(cfg.train.samples_per_epoch)


def scratch_epochs(cfg: RunConfig, data: Splits, widths: list[int], budget_flops: float) -> tuple[int, bool]:
    """(whole epochs nearest the budget, at least one; whether the cap cut them)."""
    wanted = max(1, round(budget_flops / epoch_flops(cfg, data, widths)))
    cap = SCRATCH_EPOCH_CAP * cfg.train.max_epochs
    return min(wanted, cap), wanted > cap


def train_scratch(cfg: RunConfig, data: Splits, run: RunFolder, depth: int, summary: dict) -> dict:
    """Train the control for a finished depth's `summary` (its widths and cumulative_flops) and return its
    scratch_* keys; its epochs are appended to scratch.jsonl, after any rows an interrupted attempt left there."""
    widths, budget = summary["widths"], summary["cumulative_flops"]
    epochs, capped = scratch_epochs(cfg, data, widths, budget)
    if (run.path / SCRATCH).is_file():
        run.replace_rows(SCRATCH, [r for r in run.rows(SCRATCH) if r["depth"] != depth])
    model = get_family(cfg.model.family).build(data.input_shape, widths, data.n_classes,
                                               derive_seed(cfg.seed, depth, 0, SCRATCH_INIT), data.train.x.device)
    train_cfg = dataclasses.replace(cfg.train, max_epochs=epochs)
    if cfg.model.alpha is not None:  # the run's parametrisation: alpha * (f - f_0) from this init, lr / alpha^2
        center_and_scale(model, cfg.model.alpha)
        train_cfg = dataclasses.replace(train_cfg, lr=train_cfg.lr / cfg.model.alpha**2)
    spent = {"seconds": 0.0, "flops": 0.0}
    last: dict = {}

    def on_epoch(record: dict) -> None:
        spent["seconds"] += record["seconds"]
        spent["flops"] += record["flops"]
        last.update(record)
        run.append(SCRATCH, {"depth": depth, **record, "widths": widths, "cumulative_seconds": spent["seconds"],
                             "cumulative_flops": spent["flops"], "budget_flops": budget})

    drive, source, heldout = cfg.rank.measure, cfg.rank.source, heldout_inputs(data)
    result = train_to_saturation(model, data, train_cfg, cfg.train.weight_decay, derive_seed(cfg.seed, depth, 0, SCRATCH_ORDER),
                                 on_epoch, ranks=lambda: driving_ranks(model, drive, source, heldout), stop_at_saturation=False)
    train = evaluate(model, data.train, cfg.train.precision, cfg.train.loss)
    return {
        "scratch_val_acc": last["val_acc"],  # at the end of the budget, as the chosen network is scored
        "scratch_test_acc": last["test_acc"],
        "scratch_train_acc": train.acc,
        "scratch_train_loss": train.loss,
        "scratch_test_loss": last["test_loss"],
        "scratch_epochs": result.epochs,
        "scratch_flops": result.flops,
        "scratch_seconds": result.seconds,
        "scratch_budget_flops": budget,
        "scratch_capped": capped,
        "scratch_train_stop": result.stop_reason,  # max-epochs: the whole budget; diverged: stopped early
    }
