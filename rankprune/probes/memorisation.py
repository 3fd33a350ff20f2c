"""Memorisation under --label-noise: training accuracy on the relabelled rows (against the labels they were
given: how much noise the network has fitted) and on the clean rows, once the iteration has trained; and the
relabelled rows' accuracy against their true labels (how much of the task the network still knows there)."""

from __future__ import annotations

import torch

from rankprune.data import Split
from rankprune.probes.base import ProbeContext, register
from rankprune.train import evaluate

__all__ = ["MemorisationProbe"]


@register("memorisation")
class MemorisationProbe:
    def epoch(self, ctx: ProbeContext) -> dict:
        return {}

    def iteration(self, ctx: ProbeContext) -> dict:
        data = ctx.data
        if data.relabelled is None or len(data.relabelled) == 0:
            return {}
        rows = data.relabelled.to(data.train.x.device)
        clean = torch.ones(len(data.train), dtype=torch.bool, device=rows.device)
        clean[rows] = False
        x, y = data.train.x, data.train.y
        relabelled = Split(x[rows], y[rows])
        out = {"train_acc_relabelled": evaluate(ctx.model, relabelled, ctx.precision).acc,
               "train_acc_relabelled_true": evaluate(ctx.model, Split(x[rows], data.true_labels[rows]), ctx.precision).acc}
        out["train_acc_clean"] = evaluate(ctx.model, Split(x[clean], y[clean]), ctx.precision).acc if clean.any() else None
        return out
