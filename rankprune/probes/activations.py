"""Activation ranks: every rank measure of each hidden layer's activation matrix on the iteration's sample of
training inputs, once the iteration has trained. The other side of a layer from its weights: W_l can have
full rank while few directions of its output are ever used (dead or duplicated units), and the warm
rebuild works on this side."""

from __future__ import annotations

from rankprune.measure import measure_activations, recorded_measures
from rankprune.probes.base import ProbeContext, register

__all__ = ["ActivationProbe"]


@register("activations")
class ActivationProbe:
    def epoch(self, ctx: ProbeContext) -> dict:
        return {}

    def iteration(self, ctx: ProbeContext) -> dict:
        ranks = measure_activations(ctx.model, ctx.sample, recorded_measures(ctx.cfg.rank.measure))
        return {f"activation_rank_{spec}": values for spec, values in ranks.items()}
