"""Training losses (--loss), by name: each maps (logits (N, K), labels (N,)) to per-sample losses (N,); a batch of
sequences (logits (S, T, K), labels (S, T)) to each sequence's mean over its positions.

- cross-entropy: the default.
- hinge: the quadratic hinge of the jamming experiments (Spigler, Geiger et al.): the mean over outputs of
  max(0, 1 - y_k f_k)^2, with y_k = +1 for the true class and -1 for every other. Each output's margin of each
  sample is one constraint (P K of them for P samples and K outputs; with one output, as the jamming experiments
  train, P); N_Delta counts the constraints with Delta_k = 1 - y_k f_k >= 0, so that N_Delta / N crosses 1 where
  the unsatisfied constraints outnumber the N parameters.
- mse: the mean over outputs of (f_k - onehot_k)^2; for a regression task (float targets) (f - y)^2.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "per_sample", "signed_targets", "unsatisfied"]


def signed_targets(y: torch.Tensor, n_out: int, dtype: torch.dtype) -> torch.Tensor:
    """+1 for the true class, -1 for the others: (N, K)."""
    return 2 * F.one_hot(y, n_out).to(dtype) - 1


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def _hinge(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    margins = signed_targets(y, logits.shape[1], logits.dtype) * logits
    return torch.relu(1 - margins).square().mean(dim=1)


def _mse(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if y.is_floating_point():  # a regression target (N,): the squared error of the single output
        return (logits - y.to(logits.dtype).unsqueeze(1)).square().mean(dim=1)
    return (logits - F.one_hot(y, logits.shape[1]).to(logits.dtype)).square().mean(dim=1)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cross-entropy": _cross_entropy, "hinge": _hinge, "mse": _mse,
}


def per_sample(name: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,) losses; a sequence's (logits (S, T, K), labels (S, T)) is one sample whose loss is its positions' mean."""
    if logits.dim() == 3:
        return LOSSES[name](logits.flatten(0, 1), y.flatten()).view(y.shape).mean(dim=1)
    return LOSSES[name](logits, y)


def unsatisfied(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample, how many of its constraints are unsatisfied: outputs whose Delta_k = 1 - y_k f_k is >= 0 (the
    jamming experiments' Delta set); zero for a regression target, which has no margins. A sequence's count is
    over all its positions."""
    if logits.dim() == 3:
        return unsatisfied(logits.flatten(0, 1), y.flatten()).view(y.shape).sum(dim=1)
    if y.is_floating_point():
        return torch.zeros(len(y), dtype=torch.int64, device=y.device)
    return (signed_targets(y, logits.shape[1], logits.dtype) * logits <= 1).sum(dim=1)
