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
from rankprune.probes.beside import Later

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
        self._names: list[str] | None = None  # None until the starting weights are loaded
        self._start: dict[str, torch.Tensor] = {}
        self._start_weights: list[torch.Tensor] = []  # network.weights() at the iteration's start
        self._init_weights: list[torch.Tensor] | None = None  # ... at the run's first start, while shapes match
        self._init: dict[str, torch.Tensor] = {}
        self._last: dict = {}

    @torch.no_grad()
    def _load(self, ctx: ProbeContext) -> None:
        """The starting weights as state dicts, and the matrices network.weights() gives for them: a copy of the
        network loaded with them, so that a matrix the family makes on the fly (a transformer's residual writers or
        query-key form) is measured as the network's own is."""
        import copy

        device = next(ctx.model.parameters()).device
        self._start = {k: v.to(device) for k, v in ctx.run.load_weights(ctx.depth, ctx.iteration, start=True).items()}
        first = self._start if ctx.iteration == 0 else ctx.run.load_weights(ctx.depth, 0, start=True)
        self._init = {k: v.to(device) for k, v in first.items()}

        def matrices(state: dict) -> list[torch.Tensor] | None:
            shapes = {k: v.shape for k, v in ctx.model.state_dict().items()}
            if any(shapes.get(k) != v.shape for k, v in state.items()) or set(shapes) != set(state):
                return None  # a shrink changed its shapes
            twin = copy.deepcopy(ctx.model)
            twin.load_state_dict(state)
            return [w.detach().clone() for w in twin.weights()]

        self._start_weights = matrices(self._start)
        # From the first initialisation, per matrix while its own shape matches (a layer that kept its width and
        # its input's): a parameter from its state; a matrix made on the fly only while the whole network matches.
        ids = {id(p): name for name, p in ctx.model.named_parameters()}
        whole = matrices(self._init)
        self._init_weights = []
        for i, w in enumerate(ctx.model.weights()):
            name = ids.get(id(w))
            if name is not None:
                self._init_weights.append(self._init[name] if name in self._init and self._init[name].shape == w.shape
                                          else None)
            else:
                self._init_weights.append(None if whole is None else whole[i])
        self._names = []  # loaded

    @torch.no_grad()
    def epoch(self, ctx: ProbeContext) -> Later:
        """Copies of the weights now; their movement and change ranks measured beside the next epoch (beside.py)."""
        if self._names is None:
            self._load(ctx)
        params = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
        weights = [w.detach().clone() for w in ctx.model.weights()]
        measures = recorded_measures(ctx.cfg.rank.measure)
        return Later(lambda: self._measure(params, weights, measures))

    @torch.no_grad()
    def _measure(self, params: dict, weights: list, measures: list) -> dict:
        init = self._init_weights
        row = {
            "movement": [relative_movement(w, s) for w, s in zip(weights, self._start_weights)],
            "movement_from_init": [relative_movement(w, s) if s is not None and s.shape == w.shape else None
                                   for w, s in zip(weights, init)],
            "movement_network": _network_movement(params, self._start),
            "movement_network_from_init": (_network_movement(params, self._init)
                                           if all(n in self._init and self._init[n].shape == p.shape
                                                  for n, p in params.items()) else None),
        }
        changes = [w.detach() - s for w, s in zip(weights, self._start_weights)]
        for spec, ranks in matrix_ranks(changes, measures).items():
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
