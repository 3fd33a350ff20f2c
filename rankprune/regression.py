"""The 1-D regression tasks of the lazy-training experiments (--dataset regression:NAME): a target function on
[-1, 1] of increasing wiggliness, --points training inputs drawn uniformly at random with Gaussian noise of
standard deviation --noise on their targets, and noise-free validation and test sets on their own draws.
Trained with MSE; every accuracy column holds R^2 = 1 - SS_res / SS_tot instead (regression_score).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = ["TARGETS", "PREFIX", "is_regression", "task_name", "target", "score", "VAL_POINTS", "TEST_POINTS", "EPOCH_SAMPLES"]

PREFIX = "regression:"
VAL_POINTS, TEST_POINTS = 256, 1024  # noise-free: how well the function itself is recovered
EPOCH_SAMPLES = 4096  # samples an epoch draws by default, cycling the training points


def _sines(terms: list[tuple[float, float, float]]) -> Callable[[torch.Tensor], torch.Tensor]:
    """sum of a * sin(k pi x + phase) over (a, k, phase)."""
    def f(x: torch.Tensor) -> torch.Tensor:
        return sum(a * torch.sin(k * math.pi * x + phase) for a, k, phase in terms)
    return f


# Fixed functions (no seed), so that a task is the same task in every run.
TARGETS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "simple": _sines([(1.0, 1, 0.0)]),  # one low-frequency sine
    "middle": _sines([(1.0, 1, 0.0), (0.6, 2, 0.7), (0.4, 3, 1.9)]),  # a few sines
    # many: amplitudes 1/sqrt(k), phases spread by the golden angle
    "complex": _sines([(1 / math.sqrt(k), k, (2.399963 * k) % (2 * math.pi)) for k in range(1, 13)]),
}


def is_regression(dataset: str) -> bool:
    return dataset.startswith(PREFIX)


def task_name(dataset: str) -> str:
    return dataset[len(PREFIX):]


def target(dataset: str) -> Callable[[torch.Tensor], torch.Tensor]:
    return TARGETS[task_name(dataset)]


def score(outputs: torch.Tensor, y: torch.Tensor) -> float:
    """R^2 of predictions (N, 1) against targets (N,): 1 is a perfect fit, 0 predicting the mean, below 0 worse
    (a split whose targets are all equal counts SS_tot as 1 rather than dividing by zero)."""
    pred = outputs.reshape(-1).double()
    y = y.reshape(-1).double()
    ss_res = float(((pred - y) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum()) or 1.0
    return 1.0 - ss_res / ss_tot
