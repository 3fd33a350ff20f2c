"""How far training moves the weights (--movement): lazy (kernel) training barely moves a wide network from its
random initialisation, so its spectrum stays the random one; feature learning moves it, and low rank can
appear. Every epoch, per weight matrix (hidden layers, then the output layer):

    movement                ||W_t - W_start||_F / ||W_start||_F from the iteration's starting weights
    movement_from_init      the same from the run's very first initialisation (iteration 0's start), where the
                            layer's shape still matches (None where a shrink changed it)
    movement_network        all parameters concatenated (biases too), from the iteration's start
    movement_network_from_init   the same from the first initialisation, while every shape matches
    change_rank_<spec>      every recorded rank measure of W_t - W_start: does training add a low-rank update
                            on top of a full-rank random matrix?

The starting weights are the ones the controller saved before training (weights/...-start.pt), read once.
"""

from __future__ import annotations

import math

import torch

from rankprune.measure import matrix_ranks, recorded_measures
from rankprune.probes.base import ProbeContext, register

__all__ = ["MovementProbe", "relative_movement"]


def relative_movement(now: torch.Tensor, start: torch.Tensor) -> float:
    """||now - start||_F / ||start||_F (inf where start is all zeros and now is not; 0 where both are)."""
    change = float(torch.linalg.vector_norm((now.detach().float() - start.float()).flatten()))
    base = float(torch.linalg.vector_norm(start.float().flatten()))
    return change / base if base > 0 else (0.0 if change == 0 else math.inf)


@register("movement")
class MovementProbe:
    @staticmethod
    def wanted(cfg) -> bool:
        return cfg.probes.movement

    def __init__(self):
        self._names: list[str] | None = None  # state-dict names of model.weights(), in order
        self._start: dict[str, torch.Tensor] = {}
        self._init: dict[str, torch.Tensor] = {}
        self._last: dict = {}

    def _load(self, ctx: ProbeContext) -> None:
        ids = {id(p): name for name, p in ctx.model.named_parameters()}
        self._names = [ids[id(w)] for w in ctx.model.weights()]
        device = next(ctx.model.parameters()).device
        self._start = {k: v.to(device) for k, v in ctx.run.load_weights(ctx.depth, ctx.iteration, start=True).items()}
        first = self._start if ctx.iteration == 0 else ctx.run.load_weights(ctx.depth, 0, start=True)
        self._init = {k: v.to(device) for k, v in first.items()}

    @torch.no_grad()
    def epoch(self, ctx: ProbeContext) -> dict:
        if self._names is None:
            self._load(ctx)
        params = dict(ctx.model.named_parameters())
        weights = [params[n] for n in self._names]
        row = {
            "movement": [relative_movement(w, self._start[n]) for n, w in zip(self._names, weights)],
            "movement_from_init": [relative_movement(w, self._init[n]) if self._init[n].shape == w.shape else None
                                   for n, w in zip(self._names, weights)],
            "movement_network": _network_movement(params, self._start),
            "movement_network_from_init": (_network_movement(params, self._init)
                                           if all(self._init[n].shape == p.shape for n, p in params.items()) else None),
        }
        changes = [w.detach() - self._start[n] for n, w in zip(self._names, weights)]
        for spec, ranks in matrix_ranks(changes, recorded_measures(ctx.cfg.rank.measure)).items():
            row[f"change_rank_{spec}"] = ranks
        self._last = row
        return row

    def iteration(self, ctx: ProbeContext) -> dict:
        """The last epoch's movement columns, where the iteration's training ended."""
        return dict(self._last)


def _network_movement(params: dict[str, torch.Tensor], start: dict[str, torch.Tensor]) -> float:
    change = math.sqrt(sum(float(torch.sum((p.detach().float() - start[n].float()) ** 2)) for n, p in params.items()))
    base = math.sqrt(sum(float(torch.sum(start[n].float() ** 2)) for n in params))
    return change / base if base > 0 else 0.0
