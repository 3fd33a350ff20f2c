"""Rebuild a network at new hidden widths. Pure: (network, new widths, seed) -> new network; no I/O.

A rebuild method is a function registered in REBUILDS under the name `--rebuild` takes. Each returns
a complete network whose every shape agrees with the new widths, so a caller never patches shapes.
"""

from __future__ import annotations

from typing import Callable

from rankprune.models import MLP, build_mlp
from rankprune.rank import width_from_rank

__all__ = ["next_widths", "rebuild", "REBUILDS", "reinit"]


def next_widths(widths: list[int], ranks: list[float], min_width: int) -> list[int]:
    """Hidden layer l gets max(min_width, ceil(rank of W_l)), never more than it has now.

    `ranks` holds one rank per hidden layer's incoming weight matrix (the output layer excluded).
    """
    if len(ranks) != len(widths):
        raise ValueError(f"{len(widths)} hidden widths but {len(ranks)} ranks")
    return [width_from_rank(r, w, min_width) for w, r in zip(widths, ranks)]


def reinit(model: MLP, widths: list[int], seed: int) -> MLP:
    """A freshly initialised network at the new widths: the original experiment's rebuild."""
    return build_mlp(model.n_in, widths, model.n_out, seed=seed, device=next(model.parameters()).device)


REBUILDS: dict[str, Callable[[MLP, list[int], int], MLP]] = {"reinit": reinit}


def rebuild(model: MLP, widths: list[int], method: str, seed: int) -> MLP:
    if any(new > old for new, old in zip(widths, model.widths)):
        raise ValueError(f"widths never grow: {model.widths} -> {widths}")
    return REBUILDS[method](model, widths, seed)
