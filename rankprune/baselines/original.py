"""The original research notebook's controller (../shared/seeds/001_d974ed2ca7fde498.txt, problem 2), as a baseline.

What the notebook did, per depth (its loop trained four depths side by side; here one depth runs alone):

    an MLP of `width` (784, MNIST's input size) units per hidden layer, PyTorch's default init;
    Adam at 1e-3, no weight decay; ReduceLROnPlateau (threshold 1e-2, the notebook's) stepped once per epoch;
    per epoch one pass over the training split at batch 64 and one at batch 128, each through a shuffling DataLoader;
    every 3rd epoch of a meta-iteration numpy's matrix_rank of every layer's weights, and "evolve" once test
    accuracy is at least 0.9 and gained at most 0.01 since the last check (0 at a meta-iteration's first check, as
    the notebook's prev_acc was): a new network at widths = the hidden layers' ranks, fresh weights, a fresh
    optimiser; after 100 epochs without evolving, the new network anyway, at the last check's ranks;
    15 meta-iterations (networks) at most.

It decides on TEST accuracy, as the notebook did; rankprune decides on validation and only reports test accuracy.
Two choices of ours: the plateau scheduler steps on the test loss (the notebook stepped it on the last training
batch's loss), and the data are rankprune's in-memory splits (data.load: the training split, normalised once),
so that it trains on the same rows as the controllers it is compared with; the validation split goes unused.

A budget of training FLOPs, given by the caller, ends it too: an epoch runs only while its FLOPs fit in what is
left (the first epoch always runs), so it never spends more than the budget and stops less than one epoch short.
FLOPs are counted as train.TrainingProgress counts them: 3 x one sample's forward pass (models.forward_flops) per
sample passed, here both passes. Seconds are the training passes' wall time only (evaluation and the SVDs left
out), as rankprune's cumulative_seconds are. Seeded: the same (data, depth, seed, budget) gives the same log
(seconds aside); it uses the torch threads it is given, and no DataLoader workers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from rankprune.data import Split, Splits
from rankprune.models import build_mlp, forward_flops
from rankprune.seeds import ORIGINAL_INIT, ORIGINAL_ORDER, derive_seed
from rankprune.train import evaluate

__all__ = ["OriginalResult", "epoch_flops", "train_original", "WIDTH", "MAX_META_ITERATIONS", "STOPS"]

WIDTH = 784  # hidden units per layer of the first network: the notebook's hidden_size_base
LR = 1e-3
BATCH_SIZES = (64, 128)  # one pass at each, every epoch
CHECK_EVERY = 3  # epochs of a meta-iteration between rank checks
MIN_ACC = 0.9  # test accuracy a check needs before it evolves
MAX_GAIN = 0.01  # ... and the most it may have gained since the last check
MAX_EPOCHS = 100  # per meta-iteration: the notebook's num_epochs
MAX_META_ITERATIONS = 15
PLATEAU_THRESHOLD = 1e-2  # ReduceLROnPlateau's, relative (the notebook's)
STOPS = ("budget", "meta-iterations")


@dataclass(frozen=True)
class OriginalResult:
    log: list[dict]  # one row per epoch (train_original's docstring)
    stop: str  # one of STOPS
    budget_flops: float | None

    @property
    def final(self) -> dict:
        """The last epoch's row: the network the loop ends with, its answer (it selects nothing)."""
        return self.log[-1]

    @property
    def meta_iterations(self) -> int:
        """Networks trained."""
        return self.final["meta_iteration"] + 1


def epoch_flops(data: Splits, widths: list[int]) -> float:
    """Training FLOPs of one epoch at `widths`: 3 x forward per sample, for each of the epoch's passes."""
    return 3.0 * forward_flops(data.input_shape, widths, data.n_classes) * len(BATCH_SIZES) * len(data.train)


def _ranks(model) -> list[int]:
    """numpy's matrix_rank of every layer's weights, the output layer's too (the notebook's rank_fc)."""
    return [int(np.linalg.matrix_rank(linear.weight.detach().cpu().numpy())) for linear in model.linears]


def train_original(data: Splits, depth: int, seed: int, budget_flops: float | None = None, width: int = WIDTH,
                   device: str | torch.device = "cpu", on_epoch: Callable[[dict], None] | None = None) -> OriginalResult:
    """Run the notebook's controller on `data` from `depth` hidden layers of `width` units until 15 meta-iterations
    or the FLOPs budget. Each epoch's row, also passed to on_epoch: meta_iteration (0-based), epoch (1-based, within
    the meta-iteration), widths, lr (at the epoch's start), train_loss (mean over both passes), test_loss, test_acc,
    seconds and flops of the epoch's training, cumulative_seconds, cumulative_flops, ranks (every layer's, on a
    check epoch; else None), evolve (this check starts a new network)."""
    torch.manual_seed(seed)
    device = torch.device(device)
    # The DataLoader yields CPU batches (the notebook's moved them with .cuda()); one seeded generator shuffles both.
    rows = TensorDataset(data.train.x.cpu(), data.train.y.cpu())
    shuffle = torch.Generator().manual_seed(derive_seed(seed, depth, 0, ORIGINAL_ORDER))
    loaders = [DataLoader(rows, batch_size=b, shuffle=True, generator=shuffle, num_workers=0) for b in BATCH_SIZES]
    test = Split(data.test.x.to(device), data.test.y.to(device))
    samples = len(BATCH_SIZES) * len(data.train)
    widths, log, spent_flops, spent_seconds, stop = [width] * depth, [], 0.0, 0.0, "meta-iterations"
    for meta in range(MAX_META_ITERATIONS):
        model = build_mlp(data.input_shape, widths, data.n_classes, derive_seed(seed, depth, meta, ORIGINAL_INIT), device)
        optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=0.0)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, threshold=PLATEAU_THRESHOLD)
        flops, last_check, next_widths = epoch_flops(data, widths), 0.0, widths
        for epoch in range(1, MAX_EPOCHS + 1):
            if budget_flops is not None and log and spent_flops + flops > budget_flops:
                stop = "budget"
                break
            lr = optimizer.param_groups[0]["lr"]
            model.train()
            loss_sum = torch.zeros((), device=device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for loader in loaders:
                for x, y in loader:
                    x, y = x.to(device), y.to(device)
                    optimizer.zero_grad()
                    loss = F.cross_entropy(model(x), y)
                    loss.backward()
                    optimizer.step()
                    loss_sum.add_(loss.detach(), alpha=len(y))
            train_loss = loss_sum.item() / samples  # sync point: the epoch's training is done here
            seconds = time.perf_counter() - start
            spent_flops += flops
            spent_seconds += seconds
            model.eval()
            scored = evaluate(model, test)
            scheduler.step(scored.loss)
            ranks, evolve = None, False
            if epoch % CHECK_EVERY == 0:
                ranks = _ranks(model)
                evolve = scored.acc >= MIN_ACC and scored.acc - last_check <= MAX_GAIN
                last_check, next_widths = scored.acc, [max(1, r) for r in ranks[:-1]]
            row = {"meta_iteration": meta, "epoch": epoch, "widths": list(widths), "lr": lr, "train_loss": train_loss,
                   "test_loss": scored.loss, "test_acc": scored.acc, "seconds": seconds, "flops": flops,
                   "cumulative_seconds": spent_seconds, "cumulative_flops": spent_flops, "ranks": ranks, "evolve": evolve}
            log.append(row)
            if on_epoch is not None:
                on_epoch(row)
            if evolve:
                break
        if stop == "budget":
            break
        widths = next_widths
    return OriginalResult(log, stop, budget_flops)
