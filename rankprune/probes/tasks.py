"""Unseen tasks under --tasks: test accuracy on the test images under tasks never trained on (new projections and
label permutations), beside the test accuracy on the tasks trained on (the run's own test_acc)."""

from __future__ import annotations

from rankprune.probes.base import ProbeContext, register
from rankprune.train import evaluate

__all__ = ["UnseenTasksProbe"]


@register("unseen-tasks")
class UnseenTasksProbe:
    def epoch(self, ctx: ProbeContext) -> dict:
        return {}

    def iteration(self, ctx: ProbeContext) -> dict:
        if ctx.data.unseen_test is None:
            return {}
        result = evaluate(ctx.model, ctx.data.unseen_test, ctx.precision, ctx.cfg.train.loss)
        return {"test_acc_unseen_tasks": result.acc, "test_loss_unseen_tasks": result.loss}
