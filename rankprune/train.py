"""Train a network until validation accuracy saturates; evaluate; per-epoch records.

The loop is deliberately short: batches are slices of a seeded permutation over in-memory tensors
(data.batches), one optimizer step per batch, and one CPU-GPU sync per epoch (when the epoch's
summed loss is read back). Training seconds count the optimisation steps only, so evaluation and the
SVDs a caller runs between epochs do not inflate "cumulative training time".
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rankprune.config import RankConfig, TrainConfig
from rankprune.data import Split, Splits, batches
from rankprune.losses import per_sample, unsatisfied
from rankprune.measure import hidden_ranks
from rankprune.models import family_of
from rankprune.regression import score as r_squared
from rankprune.saturation import Saturation

__all__ = ["Evaluation", "TrainResult", "evaluate", "batch_gradient", "make_optimizer", "train_to_saturation", "TrainingProgress", "STOP_REASONS"]

# Why a training run ended.
STOP_REASONS = ("saturated", "max-epochs", "diverged")

EVAL_CHUNK = 8192  # rows per forward pass when evaluating; bounds memory, not a tuning knob


@dataclass(frozen=True)
class Evaluation:
    loss: float
    acc: float
    n_delta: int = 0  # samples with a margin y_k f_k < 1 (see losses.unsatisfied)
    # With evaluate(..., items=True) on a classification split: which rows the network got right (bool, on the CPU).
    # Two networks scored on the same rows are compared pairwise from these (McNemar's test, phases.py).
    correct: torch.Tensor | None = None


@dataclass(frozen=True)
class TrainResult:
    epochs: int
    stop_reason: str  # one of STOP_REASONS
    best_val_acc: float
    seconds: float  # training seconds, optimisation steps only
    flops: float  # training FLOPs (3 x forward per sample seen)
    # Which validation rows the network got right at its best epoch and at its last (None for regression, or when
    # training diverged before any evaluation): the items McNemar's test compares iterations on.
    best_val_correct: torch.Tensor | None = None
    last_val_correct: torch.Tensor | None = None


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, precision: str = "fp32", loss: str = "cross-entropy",
             items: bool = False) -> Evaluation:
    """Mean loss (--loss) and accuracy over a whole split; with the hinge loss also N_Delta, the count of
    unsatisfied constraints (losses.unsatisfied: one per sample and output); with `items`, which rows it got right (classification only)."""
    loss_sum = torch.zeros((), device=split.x.device, dtype=torch.float64)
    correct = torch.zeros((), device=split.x.device, dtype=torch.int64)
    unsatisfied_sum = torch.zeros((), device=split.x.device, dtype=torch.int64)
    outputs = []  # a regression task's predictions, for R^2 over the whole split
    rows: list[torch.Tensor] = []  # with `items`: each chunk's right answers
    with _autocast(split.x.device, precision):
        step = max(1, EVAL_CHUNK // (split.y.shape[1] if split.y.dim() == 2 else 1))  # a sequence is T rows
        for i in range(0, len(split), step):
            x, y = split.x[i : i + step], split.y[i : i + step]
            logits = model(x).float()
            loss_sum += per_sample(loss, logits, y).sum()
            if y.is_floating_point():
                outputs.append(logits)
                continue
            unsatisfied_sum += unsatisfied(logits, y).sum()
            right = logits.argmax(-1) == y  # a sequence's (S, T): every position is an item
            correct += right.sum()
            if items:
                rows.append(right.flatten().cpu())
    n = max(1, len(split))
    if outputs:  # regression: "accuracy" is R^2, in every table that shows accuracy
        return Evaluation(loss=loss_sum.item() / n, acc=r_squared(torch.cat(outputs), split.y), n_delta=0)
    return Evaluation(loss=loss_sum.item() / n, acc=correct.item() / max(1, split.y.numel()), n_delta=int(unsatisfied_sum.item()),
                      correct=torch.cat(rows) if items and rows else None)


def batch_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str = "fp32",
                   loss_name: str = "cross-entropy") -> None:
    """Leave in every parameter's .grad the gradient of the mean training loss on (x, y).

    For measurement between epochs: the training loop clears .grad before each step, so this changes
    nothing about training.
    """
    model.zero_grad(set_to_none=True)
    with torch.enable_grad(), _autocast(x.device, precision):
        loss = per_sample(loss_name, model(x).float(), y).mean()
    loss.backward()


def make_optimizer(model: nn.Module, cfg: TrainConfig, weight_decay: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        # fused: weight decay and momentum in one kernel per tensor instead of a fresh grad + wd*param
        # tensor per matrix; 1.13x at width 64 and 1.06x at 784 (benchmarks/bench_trainer.py).
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=weight_decay, fused=True)
    # Adam's default for-loop path is 0.55-0.8x at small batch on CPU; fused fixes it.
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=weight_decay, fused=True)


class TrainingProgress:
    """One training run's bookkeeping between epochs: evaluation, the epoch's record, the best validation
    accuracy, the plateau detector (saturation.Saturation), the learning-rate drops left and the rate now,
    training seconds and FLOPs. The one-network loop and every member of an ensemble (ensemble.py) use it, so a
    member trained in a batch stops and anneals exactly as it would alone."""

    def __init__(self, model: nn.Module, data: Splits, cfg: TrainConfig,
                 ranks: Callable[[], Sequence[int] | Callable[[], Sequence[int]]] | None = None,
                 stop_at_saturation: bool = True):
        # stop_at_saturation False: a fixed budget of cfg.max_epochs (the scratch control's, evolve/scratch.py);
        # plateaus still drop the learning rate, and the one after the last drop no longer ends training.
        self.model, self.data, self.cfg, self.stop_at_saturation = model, data, cfg, stop_at_saturation
        self.plateau = Saturation(cfg.saturate, cfg.patience, cfg.min_delta, cfg.rank_tol)
        if self.plateau.needs_ranks and ranks is None:  # a caller outside the controller: the default driving measure's
            default_measure = RankConfig().measure
            ranks = lambda: hidden_ranks(model, default_measure)  # noqa: E731
        self.ranks = ranks
        self.best, self.seconds, self.flops = -1.0, 0.0, 0.0  # `best`: the highest validation accuracy seen
        self.reason, self.epoch, self.drops_left, self.lr = "max-epochs", 0, cfg.lr_drops, cfg.lr
        self.samples = data.samples_per_epoch(cfg.samples_per_epoch)
        self.steps = -(-self.samples // cfg.batch_size)
        self.regression = data.train.y.is_floating_point()  # accuracy columns hold R^2
        self.flops_per_sample = 3 * family_of(model).forward_flops(model.input_shape, model.widths, model.n_out)
        self._val_acc = 0.0  # the last epoch's, for advance()
        self.best_correct = self.last_correct = None  # which validation rows the best and the last epoch got right

    def train_acc(self, predictions: torch.Tensor, labels: torch.Tensor) -> float:
        """The epoch's training accuracy (R^2) from its batches' predictions, taken as the weights moved."""
        if self.regression:
            return r_squared(predictions, labels)
        return (predictions == labels).sum().item() / max(1, labels.numel())  # a sequence's positions are each one

    def record(self, epoch: int, train_loss: float, train_acc: float, seconds: float) -> dict:
        """Evaluate the network after an epoch and return the epoch's record (on_epoch's dict)."""
        cfg, data, model = self.cfg, self.data, self.model
        self.epoch = epoch
        flops = self.flops_per_sample * self.samples
        self.seconds += seconds
        self.flops += flops
        model.eval()
        n_delta = None
        if not math.isfinite(train_loss):
            self.reason = "diverged"
            val = test = Evaluation(float("nan"), 0.0)
        else:
            val, test = evaluate(model, data.val, cfg.precision, cfg.loss, items=True), evaluate(model, data.test, cfg.precision, cfg.loss)
            if cfg.loss == "hinge":  # the jamming experiments' N_Delta, over the whole training split
                n_delta = evaluate(model, data.train, cfg.precision, cfg.loss).n_delta
            self.last_correct = val.correct
            if val.acc > self.best:
                self.best, self.best_correct = val.acc, val.correct
        self._val_acc = val.acc
        return {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val.loss,
            "val_acc": val.acc,
            "test_loss": test.loss,
            "test_acc": test.acc,
            "seconds": seconds,
            "flops": flops,
            "best_val_acc": max(self.best, 0.0),
            "lr": self.lr,
            **({"n_delta": n_delta} if cfg.loss == "hinge" else {}),
            "steps": self.steps,  # optimisation steps this epoch
            "samples": self.samples,  # training samples drawn this epoch
            "distinct_samples": min(self.samples, len(data.train)),  # of which different rows
        }

    def advance(self) -> bool:
        """After the epoch's record went out: whether training stops now. A plateau first multiplies the
        learning rate (self.lr) by lr_drop_factor, lr_drops times; the plateau after the last drop is saturation."""
        cfg = self.cfg
        if self.reason == "diverged":
            return True
        if self.drops_left == 0 and not self.stop_at_saturation:  # no plateau changes anything now: skip its ranks
            return self.epoch >= cfg.max_epochs
        self.plateau.observe(self._val_acc, self.ranks() if self.plateau.needs_ranks else None)
        if self.plateau.plateaued:
            if self.drops_left == 0:
                self.reason = "saturated"
                return True
            # Plateau at this learning rate: anneal and look for saturation again. Ending on a low
            # rate makes the final accuracy (and the spectrum we measure) far less noisy.
            self.drops_left -= 1
            self.plateau.restart()
            self.lr *= cfg.lr_drop_factor
        return self.epoch >= cfg.max_epochs

    def result(self) -> TrainResult:
        return TrainResult(epochs=self.epoch, stop_reason=self.reason, best_val_acc=max(self.best, 0.0),
                           seconds=self.seconds, flops=self.flops, best_val_correct=self.best_correct,
                           last_val_correct=self.last_correct)


def train_to_saturation(
    model: nn.Module,
    data: Splits,
    cfg: TrainConfig,
    weight_decay: float,
    seed: int,
    on_epoch: Callable[[dict], None] | None = None,
    ranks: Callable[[], Sequence[int]] | None = None,
    stop_at_saturation: bool = True,
) -> TrainResult:
    """Train until a plateau under cfg.saturate (saturation.Saturation): by default, validation accuracy gains
    no more than cfg.min_delta over cfg.patience epochs; with `rank` or `both`, `ranks()` (called after
    on_epoch, every epoch) gives the hidden layers' driving ranks, which must also stay within cfg.rank_tol
    (without it, the default rank measure's, measured here), or a function that gives them once they are measured
    (the controller's, whose decompositions run beside the next epoch: probes/beside.py).

    A plateau first multiplies the learning rate by cfg.lr_drop_factor, cfg.lr_drops times; the
    plateau after the last drop is saturation. With stop_at_saturation False it trains cfg.max_epochs epochs
    whatever the plateaus (which still drop the learning rate): a fixed budget.

    `on_epoch(record)` is called after every epoch with a dict: epoch (1-based), train_loss and
    train_acc (averaged over the epoch's batches, as the weights moved), val_/test_ loss and acc
    (evaluated after the epoch), seconds and flops of the epoch's training steps, and
    best_val_acc. The model's parameters still hold the last batch's gradients at that point.
    """
    device = data.train.x.device
    optimizer = make_optimizer(model, cfg, weight_decay)
    generator = torch.Generator().manual_seed(seed)
    progress = TrainingProgress(model, data, cfg, ranks, stop_at_saturation)
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = progress.lr
        loss_sum = torch.zeros((), device=device)
        # Predictions and labels are kept per batch and compared once per epoch: one op per step
        # instead of three, which matters where a step costs well under a millisecond.
        predictions, labels = [], []
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for x, y in batches(data.train_for(epoch), cfg.batch_size, generator, progress.samples):
            with _autocast(device, cfg.precision):
                logits = model(x)
                loss = per_sample(cfg.loss, logits.float(), y).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum.add_(loss.detach(), alpha=len(y))
            predictions.append(logits.detach() if progress.regression else logits.detach().argmax(-1))
            labels.append(y)
        train_loss = loss_sum.item() / progress.samples  # sync point: the epoch's work is done here
        seconds = time.perf_counter() - start
        record = progress.record(epoch, train_loss, progress.train_acc(torch.cat(predictions), torch.cat(labels)), seconds)
        if on_epoch is not None:
            on_epoch(record)
        if progress.advance():
            break
    return progress.result()
