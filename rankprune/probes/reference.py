"""The full-width reference: what the initial network reaches when it is trained out, the baseline that the
chosen network's accuracy is compared with.

A warm run trains iteration 0 only to its first plateau at the full learning rate (the shrink iterations go
on from there) and anneals only the chosen network at the end, so iteration 0's own accuracy is that of an
unfinished network: comparing it with an annealed chosen network would credit shrinking with what the
anneal did. This probe anneals a copy of iteration 0's network exactly as the chosen one will be (learning
rate x lr_drop_factor, to saturation) and records it in iteration 0's row as reference_* columns. The copy
is thrown away, so the shrink iterations are unchanged; its seconds and FLOPs are recorded beside it and not
added to the run's cumulative cost, since it is a measurement for comparison, not a step of the method.
Runs whose iterations anneal within themselves (reinit, or --lr-drops 0) need no reference.
"""

from __future__ import annotations

import copy
import dataclasses

from rankprune.measure import driving_ranks, heldout_inputs
from rankprune.probes.base import ProbeContext, register
from rankprune.seeds import REFERENCE, derive_seed
from rankprune.train import evaluate, train_to_saturation

__all__ = ["ReferenceProbe", "needs_reference"]


def needs_reference(ctx: ProbeContext) -> bool:
    """Iteration 0 of a run whose iterations were trained without the learning-rate drops they are configured with."""
    return ctx.iteration == 0 and ctx.train.lr_drops < ctx.cfg.train.lr_drops


@register("reference")
class ReferenceProbe:
    def epoch(self, ctx: ProbeContext) -> dict:
        return {}

    def iteration(self, ctx: ProbeContext) -> dict:
        if not needs_reference(ctx):
            return {}
        cfg = ctx.cfg.train
        anneal = dataclasses.replace(cfg, lr=ctx.train.lr * cfg.lr_drop_factor, lr_drops=cfg.lr_drops - 1)  # ctx.train.lr: / alpha^2 where scaled
        model = copy.deepcopy(ctx.model)
        seed = derive_seed(ctx.cfg.seed, ctx.depth, ctx.iteration, REFERENCE)
        drive, source, heldout = ctx.cfg.rank.measure, ctx.cfg.rank.source, heldout_inputs(ctx.data)
        result = train_to_saturation(model, ctx.data, anneal, ctx.weight_decay, seed,
                                     ranks=lambda: driving_ranks(model, drive, source, heldout))
        loss = ctx.cfg.train.loss
        val, test = evaluate(model, ctx.data.val, ctx.precision, loss), evaluate(model, ctx.data.test, ctx.precision, loss)
        return {"reference_val_acc": val.acc, "reference_test_acc": test.acc, "reference_epochs": result.epochs,
                "reference_seconds": result.seconds, "reference_flops": result.flops}
