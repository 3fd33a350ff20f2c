"""The probe seam: what a measurement sees (ProbeContext) and what it provides (Probe), and the registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from torch import nn

from rankprune.config import RunConfig, TrainConfig
from rankprune.data import Splits
from rankprune.runfolder import RunFolder

__all__ = ["ProbeContext", "Probe", "PROBES", "register", "make_probes", "check_probes"]


@dataclass(frozen=True)
class ProbeContext:
    cfg: RunConfig
    data: Splits
    run: RunFolder  # for probes that keep a table of their own (spectra.jsonl)
    model: nn.Module  # the network being trained; its weights move between calls
    depth: int
    iteration: int
    precision: str  # the iteration's training precision
    sample: torch.Tensor  # the iteration's seeded sample of training inputs (as the warm rebuild uses)
    train: TrainConfig  # how this iteration trains (a warm shrink iteration: without its learning-rate drops)
    weight_decay: float  # this iteration's weight decay (after --wd-decay)
    # What the trainer already measured after this epoch, for the probes to use instead of measuring again:
    # "singular_values" (per weight matrix) from a batch's one decomposition of all its members (ensemble.py).
    precomputed: dict = field(default_factory=dict)


class Probe(Protocol):
    def epoch(self, ctx: ProbeContext) -> dict:
        """Columns for the epoch's row (called after every epoch)."""

    def iteration(self, ctx: ProbeContext) -> dict:
        """Columns for the iteration's row (called once, after training, before the row is written)."""


PROBES: dict[str, Callable[[], Probe]] = {}


def register(name: str):
    """Class decorator: add a probe to the registry under `name`; it runs after those registered before it."""

    def add(cls):
        PROBES[name] = cls
        return cls

    return add


def make_probes(cfg: RunConfig) -> list[Probe]:
    """Fresh instances of the registered probes this run asks for, in registry order. A probe class may define
    `wanted(cfg) -> bool` (a staticmethod); one that says no is never made, so it costs nothing."""
    return [make() for make in PROBES.values() if getattr(make, "wanted", lambda _cfg: True)(cfg)]


def check_probes(cfg: RunConfig, parameters: int) -> None:
    """Before anything is written: each wanted probe class with a `check(cfg, parameters)` staticmethod raises
    ConfigError where the run's settings cannot work (`parameters`: the smallest starting network's count)."""
    for make in PROBES.values():
        if getattr(make, "wanted", lambda _cfg: True)(cfg) and hasattr(make, "check"):
            make.check(cfg, parameters)
