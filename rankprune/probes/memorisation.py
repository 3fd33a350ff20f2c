"""Memorisation under --label-noise, once the iteration has trained.

--label-noise gives a seeded set of training rows a uniformly random class, which is the true one for about 1/K
of them: those rows are clean in all but name. Only the rows whose label actually changed (`changed_rows`) can
show memorisation, so the probe scores those:

    train_acc_relabelled          accuracy on the changed rows against the random labels they were trained on
    train_acc_relabelled_true     the same rows against their true labels: how much of the task the network
                                  still knows there
    train_acc_relabelled_chance   what a network that memorised none of them would score against the random
                                  labels, given how it does against the true ones (below)
    train_acc_clean               accuracy on every other training row (their label is the true one)
    relabelled_rows               "changed": which rows the first three are over (older runs scored all drawn
                                  rows, and records.upgrade_row marks theirs "all")

The chance level. On a changed row the random label r is uniform over the K - 1 classes other than the true one
t (uniform over K, conditioned on r != t). A network that memorised nothing predicts p from the image alone,
independently of r, so it scores P(p = r) = P(p != t) / (K - 1): (1 - train_acc_relabelled_true) / (K - 1). A
network that predicts the true class scores 0; one that guesses uniformly scores (1 - 1/K) / (K - 1) = 1/K.
Memorisation is train_acc_relabelled above that level.
"""

from __future__ import annotations

import torch

from rankprune.data import Split
from rankprune.probes.base import ProbeContext, register
from rankprune.train import evaluate

__all__ = ["MemorisationProbe", "changed_rows", "chance_level"]


def changed_rows(relabelled: torch.Tensor, labels: torch.Tensor, true_labels: torch.Tensor) -> torch.Tensor:
    """The relabelled rows (indices into the training split) whose label is not the true one, ascending."""
    rows = relabelled.to(labels.device)
    return rows[labels[rows] != true_labels[rows]]


def chance_level(acc_true: float, n_classes: int) -> float:
    """Accuracy against the random labels of the changed rows of a network whose predictions do not depend on
    those labels and which scores `acc_true` against the true ones (module doc)."""
    return (1.0 - acc_true) / (n_classes - 1)


@register("memorisation")
class MemorisationProbe:
    def epoch(self, ctx: ProbeContext) -> dict:
        return {}

    def iteration(self, ctx: ProbeContext) -> dict:
        data = ctx.data
        if data.relabelled is None or len(data.relabelled) == 0:
            return {}
        x, y = data.train.x, data.train.y
        rows = changed_rows(data.relabelled, y, data.true_labels)
        clean = torch.ones(len(data.train), dtype=torch.bool, device=rows.device)
        clean[rows] = False
        out: dict = {"relabelled_rows": "changed"}
        if len(rows):
            acc_true = evaluate(ctx.model, Split(x[rows], data.true_labels[rows]), ctx.precision).acc
            out.update(train_acc_relabelled=evaluate(ctx.model, Split(x[rows], y[rows]), ctx.precision).acc,
                       train_acc_relabelled_true=acc_true,
                       train_acc_relabelled_chance=chance_level(acc_true, data.n_classes))
        else:  # every drawn row kept its class: nothing to memorise
            out.update(train_acc_relabelled=None, train_acc_relabelled_true=None, train_acc_relabelled_chance=None)
        out["train_acc_clean"] = evaluate(ctx.model, Split(x[clean], y[clean]), ctx.precision).acc if clean.any() else None
        return out
