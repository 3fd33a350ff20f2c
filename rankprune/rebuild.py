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
  A group with a fold of its own (models.base.Group: a transformer's query-key form, its residual stream) is
  shrunk by the network's fold_group instead, in the same order.
- `reinit`: fresh weights at the new widths (the original experiment's behaviour).

What a warm rebuild cost in function (`rebuild_with_cost`) is measured on held-out rows the decomposition never
saw (the controller passes the validation inputs, measure.heldout_inputs): per hidden layer, the relative error
of the next layer's pre-activations that layer's own decomposition causes, and the relative error of the whole
network's output (the logits).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.linalg
import torch
from torch import nn

from rankprune.models import activation_inputs, activation_rows, family_of
from rankprune.rank import width_from_rank
from rankprune.scaling import plain

__all__ = ["next_widths", "rebuild", "rebuild_with_cost", "RebuildCost", "REBUILDS", "reinit", "warm",
           "interpolative_decomposition", "relative_error"]


def next_widths(widths: list[int], ranks: list[float], min_width: int, offsets: list[int] | None = None) -> list[int]:
    """Group l (a hidden layer) gets max(min_width, ceil(its driving rank) + offset), never more than it has now.

    `ranks` holds one rank per group (the output layer excluded): of its driving weight matrix, or of its
    activations on held-out rows (--rank-source). `offsets` (models.base.Group.offset, 0 by default): the width a
    group needs beyond its rank (a LayerNorm'd residual stream of rank r needs r + 1).
    """
    if len(ranks) != len(widths):
        raise ValueError(f"{len(widths)} hidden widths but {len(ranks)} ranks")
    offsets = offsets or [0] * len(widths)
    return [width_from_rank(r + o, w, min_width + o) for w, r, o in zip(widths, ranks, offsets)]


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


@dataclass(frozen=True)
class RebuildCost:
    """What a warm rebuild cost in function, on held-out rows (relative Frobenius errors, 0 = nothing lost).

    layer_errors[l]: ||A' - A|| / ||A|| for A the pre-activations of the layer after hidden layer l (the output
    layer's logits for the last), A' the same once layer l is shrunk, both with the earlier layers already shrunk:
    the error layer l's own decomposition adds, on rows it was not fitted on.
    output_error: the same for the network's logits, the rebuilt network against the one it was made from:
    every layer's error together, as it propagates.
    """

    layer_errors: list[float]
    output_error: float


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """||approx - exact||_F / ||exact||_F (0 where both are zero, inf where only `exact` is)."""
    diff, base = float(torch.linalg.vector_norm(approx - exact)), float(torch.linalg.vector_norm(exact))
    return diff / base if base > 0 else (0.0 if diff == 0 else float("inf"))


def _layer_outputs(network: nn.Module, x: torch.Tensor, which: set[int]) -> dict[int, torch.Tensor]:
    """What the layers owning network.weights()[i], i in `which`, compute on x: their pre-activations (every family
    applies its nonlinearity and pooling outside the module that holds the weight; the last weight's is the
    logits). Only those are kept: a conv block's full-resolution output on a few hundred images is 0.3 GB.
    A network whose groups are not read by one layer each (a transformer's) says what reads them itself
    (network.group_readers): there, the logits."""
    if hasattr(network, "group_readers"):
        return network.group_readers(x, which)
    owners = {id(w): i for i, w in enumerate(network.weights()) if i in which}
    out: dict[int, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda _m, _i, y, i=owners[id(m.weight)]: out.__setitem__(i, y))
               for m in network.modules() if isinstance(getattr(m, "weight", None), torch.Tensor) and id(m.weight) in owners]
    try:
        network(x)
    finally:
        for h in handles:
            h.remove()
    return out


@torch.no_grad()
def _warm(model: nn.Module, widths: list[int], inputs: torch.Tensor | None,
          heldout: torch.Tensor | None = None) -> tuple[nn.Module, RebuildCost | None]:
    """warm(), and with `heldout` rows its RebuildCost on them (one extra forward pass of them per layer)."""
    if inputs is None:
        raise ValueError("the warm rebuild needs a sample of training inputs")
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    # The plain network (an output-scaled one's scaling hook is dropped: the controller re-centres the result).
    new = plain(copy.deepcopy(model)).to("cpu", torch.float64)
    x = activation_inputs(new, inputs.detach().to("cpu", torch.float64))
    last = len(widths)  # the output layer's index in weights()
    if heldout is not None:
        h = activation_inputs(new, heldout.detach().to("cpu", torch.float64))
        before = _layer_outputs(new, h, {1, last})
        reference, errors = before[last], []
    for layer, (group, r) in enumerate(zip(family_of(new).groups(new.widths), widths)):
        if group.fold == "units":
            z = activation_rows(new.hidden(x)[layer]).numpy()
            selected, t = interpolative_decomposition(z, r)
            new.keep_units(layer, torch.from_numpy(selected), torch.from_numpy(t))
        else:  # the family's own fold (a bilinear form's SVD, a rotated residual stream)
            new.fold_group(layer, r, x)
        if heldout is not None:
            after = _layer_outputs(new, h, {layer + 1, layer + 2, last})
            errors.append(relative_error(after[layer + 1], before[layer + 1]))
            before = after  # the next layer's decomposition starts from this network
    cost = None if heldout is None else RebuildCost(errors, relative_error(before[last], reference))
    return new.to(device, dtype), cost


def warm(model: nn.Module, widths: list[int], seed: int, inputs: torch.Tensor | None = None) -> nn.Module:
    """A narrower network that computes nearly what `model` computes on `inputs` (see module doc).

    `inputs` is a sample of training inputs (a few thousand rows); the result is deterministic for
    given inputs. `seed` is unused: the decomposition has no randomness. Works in float64 on the CPU.
    The result is a plain network: an output-scaled model's scaling (scaling.py) is not carried over.
    """
    return _warm(model, widths, inputs)[0]


RebuildMethod = Callable[[nn.Module, list[int], int, torch.Tensor | None], nn.Module]
REBUILDS: dict[str, RebuildMethod] = {"warm": warm, "reinit": reinit}


def rebuild(model: nn.Module, widths: list[int], method: str, seed: int, inputs: torch.Tensor | None = None) -> nn.Module:
    if any(new > old for new, old in zip(widths, model.widths)):
        raise ValueError(f"widths never grow: {model.widths} -> {widths}")
    return REBUILDS[method](model, widths, seed, inputs)


def rebuild_with_cost(model: nn.Module, widths: list[int], method: str, seed: int, inputs: torch.Tensor | None,
                      heldout: torch.Tensor) -> tuple[nn.Module, RebuildCost | None]:
    """rebuild(), and what it cost in function on the `heldout` rows (RebuildCost); None for a rebuild that does
    not try to keep the function (reinit), whose network is the one rebuild() gives."""
    if method != "warm":
        return rebuild(model, widths, method, seed, inputs), None
    if any(new > old for new, old in zip(widths, model.widths)):
        raise ValueError(f"widths never grow: {model.widths} -> {widths}")
    return _warm(model, widths, inputs, heldout)
