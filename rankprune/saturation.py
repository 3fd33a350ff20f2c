"""When training counts as saturated: validation accuracy stopped rising, the driving rank stopped moving, or
both. Pure bookkeeping over the epochs' numbers; the trainer feeds it and asks it.

Accuracy alone stops while the rank is often still falling (a warm depth-2 MLP on the MNIST subset: the
second hidden layer's numerical:0.02 rank went from about 235 to 90 in one iteration and still fell at its
last epoch), so the width an iteration measures is a snapshot of a moving quantity. `rank` waits until no
hidden layer's driving rank has moved by more than rank_tol units over the last `patience` epochs.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Sequence

__all__ = ["SATURATE_RULES", "Saturation"]

SATURATE_RULES = ("accuracy", "rank", "both")


class Saturation:
    """One training run's plateau detector under `rule` (accuracy | rank | both).

    accuracy: `patience` epochs in a row without a validation gain of more than min_delta over the reference
    (which moves only on such a gain, as Keras' EarlyStopping does).
    rank: over the last patience + 1 measurements (the last `patience` epochs and the one before them), every
    hidden layer's driving rank stayed within rank_tol units (max - min).
    both: both hold at once.
    `restart()` forgets the history (after a learning-rate drop the plateau is looked for afresh).
    """

    def __init__(self, rule: str, patience: int, min_delta: float, rank_tol: int = 0):
        if rule not in SATURATE_RULES:
            raise ValueError(f"unknown saturation rule {rule!r}")
        self.rule, self.patience, self.min_delta, self.rank_tol = rule, patience, min_delta, rank_tol
        self._reference, self._since_gain = -1.0, 0
        self._ranks: deque[tuple[float, ...]] = deque(maxlen=patience + 1)

    @property
    def needs_ranks(self) -> bool:
        return self.rule != "accuracy"

    def observe(self, val_acc: float, ranks: Sequence[int] | Callable[[], Sequence[int]] | None = None) -> None:
        """One epoch's validation accuracy and, for the rank rules, its hidden layers' driving ranks: the ranks, or a
        function that gives them once they are measured (probes/beside.py), called only where a decision needs
        them. Under `both` that is once accuracy is flat: the epochs before train while their ranks are measured."""
        if val_acc > self._reference + self.min_delta:
            self._reference, self._since_gain = val_acc, 0
        else:
            self._since_gain += 1
        if self.needs_ranks:
            if ranks is None:
                raise ValueError(f"saturation rule {self.rule!r} needs the driving ranks every epoch")
            self._ranks.append(ranks if callable(ranks) else tuple(float(r) for r in ranks))

    def _accuracy_flat(self) -> bool:
        return self._since_gain >= self.patience

    def _rank_flat(self) -> bool:
        if len(self._ranks) < self.patience + 1:
            return False
        for i, ranks in enumerate(self._ranks):
            if callable(ranks):
                self._ranks[i] = tuple(float(r) for r in ranks())
        return all(max(layer) - min(layer) <= self.rank_tol for layer in zip(*self._ranks))

    @property
    def plateaued(self) -> bool:
        if self.rule == "accuracy":
            return self._accuracy_flat()
        if self.rule == "rank":
            return self._rank_flat()
        return self._accuracy_flat() and self._rank_flat()

    def restart(self) -> None:
        """After a learning-rate drop: count epochs afresh (the accuracy reference is kept, as before)."""
        self._since_gain = 0
        self._ranks.clear()
