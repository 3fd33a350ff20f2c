"""Train many networks at once: members of one family and depth as one batched model (models.batched), one
forward and backward per step for all of them.

Every member keeps what it would have alone: its network and initialisation, its own seeded data order, its
learning rate and its drops, momentum and weight decay, and its own saturation state (train.TrainingProgress,
the bookkeeping train_to_saturation uses). A member that stops (saturated, diverged, out of epochs) leaves the
batch at the end of that epoch, gets storage of its own back, and `on_finished` is called for it at once, so
an interrupted batch keeps every member that had finished. Members whose settings cannot share a step (another
batch size, optimiser or precision, a family without a batched form, an output-scaled network) train one
after another through train_to_saturation instead, with the same results.

A member's seconds are its share of the batch's: each epoch's wall time divided by the members in it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from rankprune.config import TrainConfig
from rankprune.data import Splits, epoch_order
from rankprune.losses import per_sample
from rankprune.models import family_of
from rankprune.train import TrainingProgress, TrainResult, _autocast, train_to_saturation

__all__ = ["Member", "batch_key", "pack", "train_members", "train_batch", "default_batch_members", "member_bytes"]


@dataclass
class Member:
    """One network to train and how: the arguments train_to_saturation takes."""

    model: nn.Module
    cfg: TrainConfig
    weight_decay: float
    seed: int  # the data order's
    on_epoch: Callable[[dict], None] | None = None
    ranks: Callable[[], Sequence[int]] | None = None
    # Takes the member's weight singular values (a list per weight matrix) before on_epoch, where a batch took
    # them for all its members at once (BatchedNetwork.singular_values); None: nobody needs them.
    on_spectra: Callable[[list], None] | None = None


def batch_key(member: Member) -> tuple | None:
    """Members with equal keys can share a batched step; None: this member trains alone. The step is shared,
    so the batch size, loss, precision and epoch length must agree; a network whose forward has hooks (an
    output-scaled network, scaling.py) or a family without a batched form cannot be stacked."""
    family = family_of(member.model)
    if member.cfg.optimizer != "sgd" or not hasattr(family, "batched") or member.model._forward_hooks:
        return None
    return (family.name, len(member.model.widths), member.cfg.batch_size, member.cfg.loss, member.cfg.precision,
            member.cfg.samples_per_epoch)


# On CPU a batch pays only where members are small: 16 members of 784-64-64-10 (55k parameters) train 3.3x faster
# in one batch than one after another, of 784-256-256-10 (268k) 1.4x, and of 784-784-784-10 (1.2M) 0.7x: one
# large network's matmuls already run near the CPU's peak, and K stacked weight sets leave the cache
# (benchmarks/results/ensemble_cpu.md).
CPU_BATCH_MAX_PARAMETERS = 400_000


GPU_MAX_MEMBERS = 1024  # beyond a few hundred small members a GPU step gains little more, while memory keeps growing


def member_bytes(parameters: int, batch_size: int, activations_per_sample: int) -> int:
    """A member's memory in a batch, float32: weights, gradients and momentum, and its batch's activations
    (inputs and every hidden layer's output) about three times over (forward, backward, temporaries). The
    CPU benchmark measured 1.1-1.8x this as resident memory (benchmarks/results/ensemble_cpu.md)."""
    return 4 * (3 * parameters + 3 * batch_size * activations_per_sample)


def default_batch_members(device: torch.device, largest: int, per_member: int = 0, free: int | None = None) -> int:
    """How many members one batch holds unless --batch-members says, given the largest member's parameter
    count and its memory (member_bytes). On a GPU, as many as fill half of the free memory (`free`, default
    what CUDA reports), at most GPU_MAX_MEMBERS: small members are launch-bound, and 128 LeNet-300-100-sized
    ones at batch 128 take about 0.6 GB. On CPU, 16 for members of at most CPU_BATCH_MAX_PARAMETERS, else 1:
    larger networks train one after another."""
    if device.type == "cuda":
        if free is None:
            free, _total = torch.cuda.mem_get_info(device)
        return int(max(1, min(GPU_MAX_MEMBERS, free // max(1, 2 * per_member))))
    return 16 if largest <= CPU_BATCH_MAX_PARAMETERS else 1


# A batch computes every member at the widest member's widths: members are packed so that the padded work is at
# most this much more than the members' own. Without it a 32-wide member batched beside a 512-wide one costs as
# much as a second 512-wide network: a survey of random architectures (depth 1-5, widths 32-512) ran 0.87x with
# --batch 8 before packing; packed, its trials mostly train alone (0.89x and 1.04x in two runs, host noise),
# while a study of one architecture (studies/wd_decay.toml) runs 1.70x (benchmarks/results/ensemble_study_*.md).
MAX_PADDING = 1.5


def _parameters(model: nn.Module, widths: list[int] | None = None) -> int:
    family = family_of(model)
    return family.parameter_count(model.input_shape, widths or model.widths, model.n_out)


def pack(members: list[Member], indices: list[int], data: Splits, max_members: int | None = None) -> list[list[int]]:
    """Members of one batch key (`indices`) in batches: by size, smallest first, each batch growing while its
    padded parameter count times its members stays within MAX_PADDING of their own summed counts and it is no
    larger than max_members (default: default_batch_members for its largest member)."""
    size = {i: _parameters(members[i].model) for i in indices}
    chunks: list[list[int]] = []
    for i in sorted(indices, key=lambda i: (size[i], i)):
        chunk = chunks[-1] if chunks else None
        if chunk is not None:
            candidate = chunk + [i]
            widths = [max(members[j].model.widths[layer] for j in candidate) for layer in range(len(members[i].model.widths))]
            padded = _parameters(members[i].model, widths)
            own = sum(size[j] for j in candidate)
            per_sample = math.prod(data.input_shape) + sum(widths)
            limit = max_members or default_batch_members(data.train.x.device, padded,
                                                         member_bytes(padded, members[i].cfg.batch_size, per_sample))
            if len(candidate) <= limit and padded * len(candidate) <= MAX_PADDING * own:
                chunk.append(i)
                continue
        chunks.append([i])
    return chunks


def train_members(members: list[Member], data: Splits, on_finished: Callable[[int, TrainResult], None] | None = None,
                  max_members: int | None = None) -> list[TrainResult]:
    """Train every member to saturation; members that can share a step train in batches of at most
    `max_members` (default: default_batch_members), the rest one after another. `on_finished(index, result)` is called
    as each member stops, with its network holding its final weights in storage of its own."""
    results: list[TrainResult | None] = [None] * len(members)
    groups: dict[tuple, list[int]] = {}
    for i, member in enumerate(members):
        key = batch_key(member)
        groups.setdefault(("alone", i) if key is None else key, []).append(i)

    def finished(i: int, result: TrainResult) -> None:
        results[i] = result
        if on_finished is not None:
            on_finished(i, result)

    for indices in groups.values():
        for chunk in pack(members, indices, data, max_members):
            if len(chunk) == 1:
                m = members[chunk[0]]
                finished(chunk[0], train_to_saturation(m.model, data, m.cfg, m.weight_decay, m.seed, m.on_epoch, m.ranks))
            else:
                train_batch([members[i] for i in chunk], data, lambda j, r, chunk=chunk: finished(chunk[j], r))
    return results  # type: ignore[return-value]


def train_batch(members: list[Member], data: Splits, finished: Callable[[int, TrainResult], None]) -> None:
    """Members of one batch_key, in lockstep: an epoch is one seeded order per member, and every step takes
    batch_size rows of each member's order, stacked (K, B, ...)."""
    device = data.train.x.device
    cfg = members[0].cfg  # the shared step's settings (batch_key): batch size, loss, precision, epoch length
    progress = [TrainingProgress(m.model, data, m.cfg, m.ranks) for m in members]
    generators = [torch.Generator().manual_seed(m.seed) for m in members]
    net = family_of(members[0].model).batched([m.model for m in members])
    active = list(range(len(members)))  # members still in the batch, in net's order
    samples, n = progress[0].samples, len(data.train)
    momentum = torch.tensor([m.cfg.momentum for m in members], device=device)
    weight_decay = torch.tensor([m.weight_decay for m in members], device=device)
    try:
        for epoch in range(1, max(m.cfg.max_epochs for m in members) + 1):
            lr = torch.tensor([progress[i].lr for i in active], device=device)
            mom, wd = momentum[active], weight_decay[active]
            # Each member's order is drawn from its own generator exactly as data.batches draws it alone.
            orders = torch.stack([epoch_order(n, samples, generators[i]) for i in active]).to(device)
            k = len(active)
            loss_sum = torch.zeros(k, device=device)
            predictions, labels = [], []
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for s in range(0, samples, cfg.batch_size):
                idx = orders[:, s : s + cfg.batch_size]
                b = idx.shape[1]
                flat = idx.reshape(-1)
                x = torch.index_select(data.train.x, 0, flat).view(k, b, *data.train.x.shape[1:])
                y = torch.index_select(data.train.y, 0, flat).view(k, b, *data.train.y.shape[1:])
                with _autocast(device, cfg.precision):
                    logits = net(x)
                    per_member = per_sample(cfg.loss, logits.float().flatten(0, 1), y.flatten(0, 1)).view(k, b).mean(1)
                net.zero_grad(set_to_none=True)
                per_member.sum().backward()  # each member's gradient is that of its own mean loss
                net.sgd_step(lr, mom, wd)
                loss_sum.add_(per_member.detach() * b)
                predictions.append(logits.detach() if progress[0].regression else logits.detach().argmax(-1))
                labels.append(y)
            train_loss = (loss_sum / samples).tolist()  # sync point: the epoch's work is done here
            seconds = (time.perf_counter() - start) / k
            predictions, labels = torch.cat(predictions, 1), torch.cat(labels, 1)
            if any(members[i].on_spectra is not None for i in active):
                for i, values in zip(active, net.singular_values()):
                    if members[i].on_spectra is not None and values is not None:
                        members[i].on_spectra(values)
            stopped = []
            for j, i in enumerate(active):
                p = progress[i]
                record = p.record(epoch, train_loss[j], p.train_acc(predictions[j], labels[j]), seconds)
                if members[i].on_epoch is not None:
                    members[i].on_epoch(record)
                if p.advance():
                    stopped.append(j)
            if stopped:
                net.release(stopped)
                for j in stopped:
                    finished(active[j], progress[active[j]].result())
                keep = [j for j in range(k) if j not in stopped]
                active = [active[j] for j in keep]
                if not active:
                    return
                net = net.select(keep)
    finally:
        net.release()  # an interrupted batch leaves every member with its own weights
