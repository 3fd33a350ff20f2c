"""Measure every layer of a network: singular values, every rank measure, norms, gradient rank."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from torch import nn

from rankprune.models import activation_inputs, activation_rows
from rankprune.rank import (DEFAULT_RECORDED, FLOAT32_RTOL, RankMeasure, gram_singular_values, parse_measure,
                            singular_values, sketched_numerical_rank)

__all__ = ["LayerSpectra", "measure_layers", "measure_matrices", "recorded_measures", "measure_activations", "heldout_inputs", "driving_ranks",
           "svd_dtype"]


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


def heldout_inputs(data) -> torch.Tensor:
    """The held-out rows a network's activation ranks (--rank-source activations) and a warm rebuild's cost are
    measured on: the validation inputs (a data.Splits' val.x; their labels are not used).

    Why validation: those rows were neither trained on nor decomposed by the rebuild (which uses a sample of the
    training rows), so they show what the network does on new data from the task; their number does not depend
    on --train-fraction or --rebuild-samples, where training rows disjoint from the rebuild's sample run out (digits
    has 1,294 training rows, fewer than the 4,096 the rebuild asks for); they are already what every decision
    (saturation, the accuracy-drop rule, the anneal) is made on, so a width chosen from them is chosen on
    validation; and the test split stays untouched. An MLP layer's activation rank on M rows is at most M (the
    MNIST subset's 800 validation rows against a width of 784; digits' 144 against the 128 of the quick start)."""
    return data.val.x


def driving_ranks(model: nn.Module, spec: str, source: str, heldout: torch.Tensor | None = None) -> list[float]:
    """The hidden layers' ranks under one measure, of what --rank-source names: the incoming weight matrices
    (the output layer is never shrunk), or the post-activation outputs on `heldout` rows."""
    if source == "activations":
        measure = parse_measure(spec)
        return measure_activations(model, heldout, [measure])[measure.spec]
    return hidden_ranks(model, spec)


def hidden_ranks(model: nn.Module, spec: str) -> list[float]:
    """The hidden layers' ranks under one measure (the output layer is never shrunk): what --saturate rank
    watches on a network no probe measures."""
    measure = parse_measure(spec)
    return measure_layers(model, [measure]).ranks[measure.spec][:-1]


def svd_dtype(stored: torch.dtype, measures: list[RankMeasure]) -> torch.dtype:
    """The precision a weight stored in `stored` is decomposed in: its own (float32: numpy's matrix_rank does the
    same, and it is what an epoch's measurement costs most), unless a measure asks for a relative tolerance under
    what a float32 SVD resolves (rank.FLOAT32_RTOL), when float64 resolves it."""
    fine = any(m.name == "numerical" and m.param is not None and m.param < FLOAT32_RTOL for m in measures)
    if stored == torch.float64 or fine:
        return torch.float64
    return torch.float32


def _matrix(w: torch.Tensor) -> torch.Tensor:
    """A weight as the matrix its rank is measured on: (out, in) as it is, a conv weight (out, in, k, k) as
    (out, in*k*k), as WeightWatcher and Torch-Pruning measure convolutions."""
    return w.reshape(w.shape[0], -1)


def measure_layers(model: nn.Module, measures: list[RankMeasure], grad_rows: int | None = None,
                   singular: list[np.ndarray] | None = None) -> LayerSpectra:
    """Every weight matrix of a network of any family (network.weights(): hidden layers, then the output).

    Weights are decomposed in their own precision (float32: numpy's matrix_rank does the same, and it is what
    an epoch's measurement costs most). `grad_rows`, the rows the gradients were taken over, bounds a linear
    layer's gradient rank and lets it be counted from a sketch (rank.sketched_numerical_rank), which falls
    back to the full SVD wherever the bound does not hold (a convolution's gradient sums over positions too).
    `singular`: each weight matrix's singular values already taken (a batch takes its members' at once,
    models.batched); the measures, norms and gradient ranks are then computed from them as from an SVD here.
    """
    weights = list(model.weights())
    return measure_matrices(weights, [w.grad for w in weights], measures, grad_rows, singular)


def measure_matrices(weights: list[torch.Tensor], grads: list[torch.Tensor | None], measures: list[RankMeasure],
                     grad_rows: int | None = None, singular: list[np.ndarray] | None = None) -> LayerSpectra:
    """measure_layers of matrices taken out of a network (copies made at an epoch's end, measured beside the next
    epoch's training: probes/beside.py): each weight and its gradient (None without one)."""
    svals, ranks, spectral, frobenius, grad_rank = [], {m.spec: [] for m in measures}, [], [], []
    for i, (weight, grad) in enumerate(zip(weights, grads)):
        w = _matrix(weight)
        # numpy's rule uses the eps of the dtype the weights are stored in.
        eps = float(torch.finfo(w.dtype).eps)
        s = singular[i] if singular is not None else singular_values(w, dtype=svd_dtype(w.dtype, measures))
        svals.append(s)
        for m in measures:
            ranks[m.spec].append(m(s, tuple(w.shape), eps))
        spectral.append(float(s[0]) if s.size else 0.0)
        frobenius.append(float(np.sqrt((s**2).sum())))
        g = None if grad is None else _matrix(grad)
        sketch = (grad_rows or max(g.shape)) + 8 if g is not None else 0  # a little oversampling
        grad_rank.append(None if g is None else sketched_numerical_rank(g, eps, sketch))
    return LayerSpectra(svals, ranks, spectral, frobenius, grad_rank)


def matrix_ranks(matrices: list[torch.Tensor], measures: list[RankMeasure]) -> dict[str, list[float]]:
    """Every measure of each matrix (a conv weight or its change taken as (out, in*k*k)), decomposed in float32
    as the weights are."""
    out: dict[str, list[float]] = {m.spec: [] for m in measures}
    for w in matrices:
        w = _matrix(w).float()
        s = singular_values(w, dtype=svd_dtype(torch.float32, measures))
        for m in measures:
            out[m.spec].append(m(s, tuple(w.shape), float(torch.finfo(torch.float32).eps)))
    return out


@torch.no_grad()
def measure_activations(model: nn.Module, inputs: torch.Tensor, measures: list[RankMeasure]) -> dict[str, list[float]]:
    """Every measure of each hidden layer's activation matrix (M x width, network.hidden) on `inputs`.

    The other side of a layer from its weights: W_l can have full rank while few directions of its
    output are ever used (dead or duplicated units), and the warm rebuild works on this side.
    """
    out: dict[str, list[float]] = {m.spec: [] for m in measures}
    for z in model.hidden(activation_inputs(model, inputs)):
        z = activation_rows(z)
        s = gram_singular_values(z)
        for m in measures:
            out[m.spec].append(m(s, tuple(z.shape), float(torch.finfo(torch.float32).eps)))
    return out
