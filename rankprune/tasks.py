"""Augmented tasks of controlled number (--tasks N), as in Kirsch et al. 2022, "General-Purpose In-Context Learning
by Meta-Learning Transformers" (the MNIST task augmentation of the GPICL experiments): task t is a seeded random
linear projection of the flattened input (Gaussian entries of variance 1/d) with a seeded permutation of the labels.
One network must learn N tasks at once; unseen tasks (new projections and permutations, from another stream)
measure what it learnt about tasks in general.

Two ways of drawing them (DataConfig.task_sampling):
- "augmented", as the experiment draws them: a TaskStream generates task t's projection and permutation on demand
  from (seed, t), one d x d matrix at a time, so 2^18 tasks need no N x d x d array; the training split grows with N
  (draw_samples: each sample a random image under a random one of the N tasks); there is no identity task.
- "fixed" (config format 4 and older): make_tasks holds N projections, task 0 the identity, and every row of the
  fixed splits gets one of them (assign_tasks, apply_tasks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from rankprune.seeds import derive_seed

__all__ = ["TaskSet", "make_tasks", "assign_tasks", "apply_tasks", "TaskStream", "draw_samples", "every_pair",
           "draw_sequences", "every_sequence", "tokens"]


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


class TaskStream:
    """Tasks t = 0, 1, 2, ... of one stream, each generated when asked for from (seed, t) alone: the same t gives the
    same task in every process and run, and nothing of size N x d x d is ever held."""

    def __init__(self, seed: int, d: int, n_classes: int):
        self.seed, self.d, self.n_classes = seed, d, n_classes

    def projection(self, t: int) -> torch.Tensor:
        """(d, d) with entries N(0, 1/d): x -> projection @ x keeps a squared norm on average."""
        g = torch.Generator().manual_seed(derive_seed(self.seed, int(t), 0))
        return torch.randn(self.d, self.d, generator=g) / math.sqrt(self.d)

    def permutation(self, t: int) -> torch.Tensor:
        """(K,): label c -> permutation[c]."""
        g = torch.Generator().manual_seed(derive_seed(self.seed, int(t), 1))
        return torch.randperm(self.n_classes, generator=g)

    def apply(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's input projected and its label permuted by its task (rows grouped by task, so each task's
        matrix is made once and dropped); inputs keep their shape (N, ...)."""
        flat = x.flatten(1)
        out, labels = torch.empty_like(flat), torch.empty_like(y)
        # one sort instead of a mask per task: a fresh draw of 4,096 sequences has about as many tasks, and a
        # `task == t` scan per task made drawing them cost more than training on them
        order = torch.argsort(task, stable=True)
        tasks, counts = torch.unique_consecutive(task[order], return_counts=True)
        start = 0
        for t, n in zip(tasks.tolist(), counts.tolist()):
            rows = order[start:start + n].to(flat.device)
            start += n
            out[rows] = flat[rows] @ self.projection(t).to(flat).T
            labels[rows] = self.permutation(t).to(y.device)[y[rows]]
        return out.reshape(x.shape), labels


def draw_samples(x: torch.Tensor, y: torch.Tensor, n_tasks: int, samples: int, stream: TaskStream,
                 seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`samples` draws, each a random row of (x, y) under a random one of tasks 0 .. n_tasks - 1 of `stream` (seeded):
    (inputs, labels, task of each). The experiment's training set: min(60,000 N, a cap) samples of MNIST."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, len(y), (samples,), generator=g)
    task = torch.randint(0, n_tasks, (samples,), generator=g)
    px, py = stream.apply(torch.index_select(x, 0, rows.to(x.device)), torch.index_select(y, 0, rows.to(y.device)), task)
    return px, py, task


def every_pair(x: torch.Tensor, y: torch.Tensor, n_tasks: int, stream: TaskStream, cap: int,
               seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every row of (x, y) under every one of tasks 0 .. n_tasks - 1 (held-out images under seen or unseen tasks),
    or `cap` of those pairs drawn without replacement (seeded) where there are more."""
    n = len(y)
    pairs = n * n_tasks
    if pairs <= cap:
        index = torch.arange(pairs)
    else:
        index = torch.randperm(pairs, generator=torch.Generator().manual_seed(seed))[:cap].sort().values
    rows, task = index % n, index // n
    px, py = stream.apply(torch.index_select(x, 0, rows.to(x.device)), torch.index_select(y, 0, rows.to(y.device)), task)
    return px, py, task


def draw_sequences(x: torch.Tensor, y: torch.Tensor, tasks: torch.Tensor, length: int, stream: TaskStream,
                   seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A sequence per entry of `tasks`: `length` random rows of (x, y) under that one task of `stream`, as the
    transformer reads them (models.transformer.tokens). Returns inputs (S, length, d) flattened and labels (S, length)."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, len(y), (len(tasks), length), generator=g)
    flat = x.flatten(1)
    px = torch.index_select(flat, 0, rows.flatten().to(flat.device)).reshape(len(tasks), length, -1)
    py = torch.index_select(y, 0, rows.flatten().to(y.device)).reshape(len(tasks), length)
    task = tasks.reshape(-1, 1).expand(-1, length).reshape(-1)
    out_x, out_y = stream.apply(px.reshape(-1, flat.shape[1]), py.reshape(-1), task)
    return out_x.reshape(len(tasks), length, -1), out_y.reshape(len(tasks), length)


def every_sequence(x: torch.Tensor, y: torch.Tensor, n_tasks: int, stream: TaskStream, length: int, cap: int,
                   seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out images under each of tasks 0 .. n_tasks - 1 as sequences of `length` examples of that task: each task
    gets the rows of (x, y) in a seeded order, cut into len(y) // length sequences (every image once per task), or
    fewer where the n_tasks x sequences x length pairs would pass `cap`. Inputs (S, length, d), labels (S, length)."""
    per_task = max(1, min(len(y) // length, cap // max(1, n_tasks * length)))
    g = torch.Generator().manual_seed(seed)
    rows = torch.stack([torch.randperm(len(y), generator=g)[: per_task * length] for _ in range(n_tasks)])
    task = torch.arange(n_tasks).repeat_interleave(per_task * length)
    flat = x.flatten(1)
    px, py = stream.apply(torch.index_select(flat, 0, rows.flatten().to(flat.device)),
                          torch.index_select(y, 0, rows.flatten().to(y.device)), task)
    return px.reshape(n_tasks * per_task, length, -1), py.reshape(n_tasks * per_task, length)


def tokens(x: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Sequences of examples (x (B, T, d) inputs, y (B, T) labels) as a transformer reads them, (B, T, d + K): each
    input beside the previous example's one-hot label, zeros at the first position (it never sees its own label)."""
    previous = torch.zeros(*y.shape, n_classes, dtype=x.dtype, device=x.device)
    previous[:, 1:] = F.one_hot(y[:, :-1], n_classes).to(x.dtype)
    return torch.cat([x, previous], dim=-1)
