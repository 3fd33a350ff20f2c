"""Unseen tasks under --tasks: test accuracy on the test images under tasks never trained on (new projections and
label permutations), beside the test accuracy on the tasks trained on (the run's own test_acc). On sequences (the
transformer's), also the accuracy at each position of the validation, test and unseen-test sequences: position t
has seen t labelled examples of its task, so this is the in-context learning curve."""

from __future__ import annotations

import torch

from rankprune.data import Split
from rankprune.probes.base import ProbeContext, register
from rankprune.train import EVAL_CHUNK, evaluate


@torch.no_grad()
def accuracy_by_position(model, split: Split) -> list[float]:
    """Per position of a split of sequences (labels (S, T)), the fraction of its S labels the network got right."""
    right = torch.zeros(split.y.shape[1], dtype=torch.float64)
    for i in range(0, len(split), max(1, EVAL_CHUNK // split.y.shape[1])):
        chunk = slice(i, i + max(1, EVAL_CHUNK // split.y.shape[1]))
        right += (model(split.x[chunk]).argmax(-1) == split.y[chunk]).sum(dim=0).cpu().double()
    return (right / max(1, len(split))).tolist()

__all__ = ["UnseenTasksProbe"]


@register("unseen-tasks")
class UnseenTasksProbe:
    def epoch(self, ctx: ProbeContext) -> dict:
        return {}

    def iteration(self, ctx: ProbeContext) -> dict:
        if ctx.data.unseen_test is None:
            return {}
        result = evaluate(ctx.model, ctx.data.unseen_test, ctx.precision, ctx.cfg.train.loss)
        out = {"test_acc_unseen_tasks": result.acc, "test_loss_unseen_tasks": result.loss}
        if ctx.data.sequence_length is not None:
            ctx.model.eval()
            out.update(val_acc_by_position=accuracy_by_position(ctx.model, ctx.data.val),
                       test_acc_by_position=accuracy_by_position(ctx.model, ctx.data.test),
                       test_acc_unseen_tasks_by_position=accuracy_by_position(ctx.model, ctx.data.unseen_test))
        return out
