"""Fixed-step training with checkpoints at log-spaced steps: the loop both dynamics experiments share.

A step is one optimisation step (full batch or a fixed batch size), not an epoch: the jamming and lazy-training
experiments plot loss, N_Delta and weight movement against steps on a log axis, so they are measured at steps
0, 1, 2, ... spaced evenly in log(step) up to the budget (nn_jamming's `intlogspace`), and at the last step.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from rankprune.probes.movement import relative_movement

__all__ = ["log_steps", "run_steps", "Movement"]


def log_steps(total: int, count: int) -> list[int]:
    """Step 0 and about `count` whole steps from 1 to `total`, evenly spaced in log(step), `total` always among
    them; every step when `count` reaches them all. log_steps(100, 5) -> [0, 1, 3, 10, 32, 100]."""
    if total < 1 or count < 1:
        raise ValueError(f"need total >= 1 and count >= 1, got {total}, {count}")
    if count >= total:
        return list(range(total + 1))
    n = count
    while True:  # rounding merges the first few steps: ask for more points until `count` distinct remain
        steps = np.unique(np.round(np.logspace(0, np.log10(total), n)).astype(np.int64))
        if len(steps) >= count or n > 10 * count + total:
            return [0] + [int(s) for s in steps]
        n += 1


def run_steps(step: Callable[[int], None], total: int, at: list[int], measure: Callable[[int], dict],
              stop: Callable[[dict], bool] | None = None) -> list[dict]:
    """Take `total` optimisation steps with `step(i)` (i from 0), calling `measure(s)` before any step (s = 0) and
    after step s for every s in `at`; a row whose `stop(row)` is true ends training there (the loss is exactly
    zero: nothing moves any more), and that row is the last. Returns the rows, each with its "step"."""
    wanted = set(at)
    rows = [{"step": 0, **measure(0)}]
    if stop is not None and stop(rows[-1]):
        return rows
    for i in range(total):
        step(i)
        done = i + 1
        if done in wanted or done == total:
            rows.append({"step": done, **measure(done)})
            if stop is not None and stop(rows[-1]):
                break
    return rows


class Movement:
    """Relative movement ||W_t - W_0||_F / ||W_0||_F of every weight matrix (a parameter with 2 or more dimensions)
    from where training started, and of all parameters together."""

    def __init__(self, model: nn.Module):
        self.start = {name: p.detach().clone() for name, p in model.named_parameters()}
        self.names = [name for name, p in model.named_parameters() if p.ndim >= 2]

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict:
        params = dict(model.named_parameters())
        change = sum(float(torch.sum((params[n].detach() - s) ** 2)) for n, s in self.start.items())
        base = sum(float(torch.sum(s ** 2)) for s in self.start.values())
        return {"movement": [relative_movement(params[n], self.start[n]) for n in self.names],
                "movement_network": (change / base) ** 0.5 if base > 0 else 0.0}
