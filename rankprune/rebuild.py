"""Rebuild a network at new hidden widths. Pure: (network, new widths, seed, inputs) -> new network.

A rebuild method is a function registered in REBUILDS under the name `--rebuild` takes. Each returns
a complete network whose every shape agrees with the new widths, so a caller never patches shapes, and
each works for every model family through the family's seam (models.base).

- `warm` (the default): keep what the network computes, by the interpolative decomposition of each
  hidden layer's activations (Chee, Renz, Damle & De Sa, "Model Preserving Compression for Neural
  Networks", NeurIPS 2022; for convolutions they decompose channel activations the same way). For
  layer l, in order from the input, with Z (M x n_l) the activations layer l+1 reads (network.hidden,
  through the already-shrunk earlier layers, on a sample of training inputs): a column-pivoted QR picks
  the r units S whose columns best span Z, and gives T (r x n_l) with Z ~= Z[:, S] T. Layer l keeps
  units S; layer l+1 reads them through T (network.keep_units), so it sees nearly the same input. At
  r = n_l, T is a permutation of the identity and nothing changes.
- `reinit`: fresh weights at the new widths (the original experiment's behaviour).
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import scipy.linalg
import torch
from torch import nn

from rankprune.models import activation_inputs, activation_rows, family_of
from rankprune.rank import width_from_rank

__all__ = ["next_widths", "rebuild", "REBUILDS", "reinit", "warm", "interpolative_decomposition"]


def next_widths(widths: list[int], ranks: list[float], min_width: int) -> list[int]:
    """Hidden layer l gets max(min_width, ceil(rank of W_l)), never more than it has now.

    `ranks` holds one rank per hidden layer's incoming weight matrix (the output layer excluded).
    """
    if len(ranks) != len(widths):
        raise ValueError(f"{len(widths)} hidden widths but {len(ranks)} ranks")
    return [width_from_rank(r, w, min_width) for w, r in zip(widths, ranks)]


def reinit(model: nn.Module, widths: list[int], seed: int, inputs: torch.Tensor | None = None) -> nn.Module:
    """A freshly initialised network of the same family at the new widths: the original experiment's rebuild."""
    return family_of(model).build(model.input_shape, widths, model.n_out, seed=seed, device=next(model.parameters()).device)


def interpolative_decomposition(z: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns S (rank of them) and T (rank x n) with z ~= z[:, S] @ T, by column-pivoted QR.

    z is float64 (N x n). With z[:, P] = Q R and R = [[R11, R12], [0, R22]], the first `rank`
    pivots are S and T[:, P] = [I, R11^{-1} R12]. A column that R11 cannot resolve (numerically
    zero pivot, e.g. a dead ReLU) gets no weight rather than a huge one.
    """
    n = z.shape[1]
    _q, r_mat, perm = scipy.linalg.qr(z, mode="economic", pivoting=True)
    selected = perm[:rank]
    t = np.zeros((rank, n))
    t[np.arange(rank), selected] = 1.0
    if rank < n:
        r11, r12 = r_mat[:rank, :rank], r_mat[:rank, rank:n]
        diag = np.abs(np.diag(r11))
        keep = diag > diag.max(initial=0.0) * 1e-10 if diag.size else diag.astype(bool)
        coef = np.zeros((rank, n - rank))
        if keep.any():
            k = np.flatnonzero(keep)
            coef[k] = scipy.linalg.solve_triangular(r11[np.ix_(k, k)], r12[k], lower=False)
        t[:, perm[rank:]] = coef
    return selected, t


@torch.no_grad()
def warm(model: nn.Module, widths: list[int], seed: int, inputs: torch.Tensor | None = None) -> nn.Module:
    """A narrower network that computes nearly what `model` computes on `inputs` (see module doc).

    `inputs` is a sample of training inputs (a few thousand rows); the result is deterministic for
    given inputs. `seed` is unused: the decomposition has no randomness. Works in float64 on the CPU.
    """
    if inputs is None:
        raise ValueError("the warm rebuild needs a sample of training inputs")
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    new = copy.deepcopy(model).to("cpu", torch.float64)
    x = activation_inputs(new, inputs.detach().to("cpu", torch.float64))
    for layer, r in enumerate(widths):
        z = activation_rows(new.hidden(x)[layer]).numpy()
        selected, t = interpolative_decomposition(z, r)
        new.keep_units(layer, torch.from_numpy(selected), torch.from_numpy(t))
    return new.to(device, dtype)


RebuildMethod = Callable[[nn.Module, list[int], int, torch.Tensor | None], nn.Module]
REBUILDS: dict[str, RebuildMethod] = {"warm": warm, "reinit": reinit}


def rebuild(model: nn.Module, widths: list[int], method: str, seed: int, inputs: torch.Tensor | None = None) -> nn.Module:
    if any(new > old for new, old in zip(widths, model.widths)):
        raise ValueError(f"widths never grow: {model.widths} -> {widths}")
    return REBUILDS[method](model, widths, seed, inputs)
