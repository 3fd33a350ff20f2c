"""Activation ranks: every rank measure of each hidden layer's activation matrix, the other side of a layer from
its weights: W_l can have full rank while few directions of its output are ever used (dead or duplicated units),
and the warm rebuild works on this side.

    activation_rank_<spec>           on the iteration's sample of training inputs (the rows the warm rebuild
                                     decomposes), once the iteration has trained
    heldout_activation_rank_<spec>   on held-out rows (measure.heldout_inputs: the validation inputs), once the
                                     iteration has trained; with --rank-source activations also after every epoch,
                                     since it is then the driving rank that --saturate rank|both watches

Per epoch that costs a forward pass of the held-out rows and a Gram eigendecomposition per hidden layer (an MLP
layer of width 784: a 784 x 784 eigenproblem), less than the epoch's own evaluation of validation and test;
benchmarks/bench_rank_source.py measures its share of a run.
"""

from __future__ import annotations

from rankprune.measure import heldout_inputs, measure_activations, recorded_measures
from rankprune.probes.base import ProbeContext, register

__all__ = ["ActivationProbe", "HELDOUT_PREFIX"]

HELDOUT_PREFIX = "heldout_activation_rank_"


def drives(ctx: ProbeContext) -> bool:
    """Whether this run's width follows the activations' rank (RankConfig.source, resolved)."""
    return ctx.cfg.rank.source == "activations"


@register("activations")
class ActivationProbe:
    def __init__(self):
        self._last: dict = {}  # the last epoch's held-out ranks, where measured

    def _heldout(self, ctx: ProbeContext) -> dict:
        ranks = measure_activations(ctx.model, heldout_inputs(ctx.data), recorded_measures(ctx.cfg.rank.measure))
        return {f"{HELDOUT_PREFIX}{spec}": values for spec, values in ranks.items()}

    def epoch(self, ctx: ProbeContext) -> dict:
        if not drives(ctx):
            return {}
        self._last = self._heldout(ctx)
        return self._last

    def iteration(self, ctx: ProbeContext) -> dict:
        ranks = measure_activations(ctx.model, ctx.sample, recorded_measures(ctx.cfg.rank.measure))
        # The last epoch's measurement where there was one: training has not moved the weights since.
        return {**{f"activation_rank_{spec}": values for spec, values in ranks.items()},
                **(self._last or self._heldout(ctx))}
