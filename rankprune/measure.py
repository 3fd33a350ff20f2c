"""Measure every layer of a network: singular values, every rank measure, norms, gradient rank."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from torch import nn

from rankprune.models import activation_inputs, activation_rows
from rankprune.rank import DEFAULT_RECORDED, RankMeasure, parse_measure, singular_values

_NUMPY_RULE = RankMeasure("numerical")

__all__ = ["LayerSpectra", "measure_layers", "recorded_measures"]


@dataclass(frozen=True)
class LayerSpectra:
    """Per weight matrix of a network (hidden layers, then the output layer), in order."""

    singular_values: list[np.ndarray]
    ranks: dict[str, list[float]]  # measure spec -> one rank per layer
    spectral_norm: list[float]
    frobenius_norm: list[float]
    grad_rank: list[float | None]  # numerical rank of each layer's last gradient; None without one

    def row(self) -> dict:
        """Flat columns for the epoch table: rank_<spec>, spectral_norm, frobenius_norm, grad_rank."""
        out = {f"rank_{spec}": values for spec, values in self.ranks.items()}
        out.update(spectral_norm=self.spectral_norm, frobenius_norm=self.frobenius_norm, grad_rank=self.grad_rank)
        return out


def recorded_measures(driving: str) -> list[RankMeasure]:
    """The measures recorded at every evaluation: the defaults plus the one driving the shrinking."""
    specs = list(DEFAULT_RECORDED)
    measures = [parse_measure(s) for s in specs]
    drive = parse_measure(driving)
    if drive not in measures:
        measures.append(drive)
    return measures


def _matrix(w: torch.Tensor) -> torch.Tensor:
    """A weight as the matrix its rank is measured on: (out, in) as it is, a conv weight (out, in, k, k) as
    (out, in*k*k), as WeightWatcher and Torch-Pruning measure convolutions."""
    return w.reshape(w.shape[0], -1)


def measure_layers(model: nn.Module, measures: list[RankMeasure]) -> LayerSpectra:
    """Every weight matrix of a network of any family (network.weights(): hidden layers, then the output)."""
    svals, ranks, spectral, frobenius, grad_rank = [], {m.spec: [] for m in measures}, [], [], []
    for weight in model.weights():
        w = _matrix(weight)
        # numpy's rule uses the eps of the dtype the weights are stored in, though the SVD is float64.
        eps = float(torch.finfo(w.dtype).eps)
        s = singular_values(w)
        svals.append(s)
        for m in measures:
            ranks[m.spec].append(m(s, tuple(w.shape), eps))
        spectral.append(float(s[0]) if s.size else 0.0)
        frobenius.append(float(np.sqrt((s**2).sum())))
        g = None if weight.grad is None else _matrix(weight.grad)
        grad_rank.append(None if g is None else _NUMPY_RULE(singular_values(g), tuple(g.shape), eps))
    return LayerSpectra(svals, ranks, spectral, frobenius, grad_rank)


@torch.no_grad()
def measure_activations(model: nn.Module, inputs: torch.Tensor, measures: list[RankMeasure]) -> dict[str, list[float]]:
    """Every measure of each hidden layer's activation matrix (M x width, network.hidden) on `inputs`.

    The other side of a layer from its weights: W_l can have full rank while few directions of its
    output are ever used (dead or duplicated units), and the warm rebuild works on this side.
    """
    out: dict[str, list[float]] = {m.spec: [] for m in measures}
    for z in model.hidden(activation_inputs(model, inputs)):
        z = activation_rows(z)
        s = singular_values(z)
        for m in measures:
            out[m.spec].append(m(s, tuple(z.shape), float(torch.finfo(torch.float32).eps)))
    return out
