"""Augmented tasks of controlled number (--tasks N), as in Kirsch et al., "General-Purpose In-Context Learners"
(the MNIST task augmentation of the GPICL experiments): task t is a seeded random linear projection of the
flattened input (Gaussian entries of variance 1/d) with a seeded permutation of the labels; task 0 is the
identity (the plain dataset). Every row of every split is assigned a task at random, so one network must
learn N tasks at once; unseen tasks (new projections and permutations, from another stream) measure what
it learnt about tasks in general."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["TaskSet", "make_tasks", "assign_tasks", "apply_tasks"]


@dataclass(frozen=True)
class TaskSet:
    projections: torch.Tensor  # (N, d, d): x -> projections[t] @ x
    permutations: torch.Tensor  # (N, K): label c -> permutations[t, c]

    def __len__(self) -> int:
        return self.projections.shape[0]


def make_tasks(n: int, d: int, n_classes: int, seed: int, identity_first: bool) -> TaskSet:
    """n seeded tasks on d-dimensional inputs; with identity_first, task 0 is the plain dataset."""
    g = torch.Generator().manual_seed(seed)
    projections = torch.randn(n, d, d, generator=g) / math.sqrt(d)
    permutations = torch.stack([torch.randperm(n_classes, generator=g) for _ in range(n)])
    if identity_first:
        projections[0] = torch.eye(d)
        permutations[0] = torch.arange(n_classes)
    return TaskSet(projections, permutations)


def assign_tasks(rows: int, n_tasks: int, seed: int) -> torch.Tensor:
    """A task for every row, uniformly at random (seeded)."""
    return torch.randint(0, n_tasks, (rows,), generator=torch.Generator().manual_seed(seed))


def apply_tasks(x: torch.Tensor, y: torch.Tensor, task: torch.Tensor, tasks: TaskSet) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's input projected and its label permuted by its task; inputs keep their shape (N, ...)."""
    flat = x.flatten(1)
    out = torch.empty_like(flat)
    for t in task.unique().tolist():
        rows = task == t
        out[rows] = flat[rows] @ tasks.projections[t].to(flat).T
    return out.reshape(x.shape), tasks.permutations.to(y.device)[task.to(y.device), y]
