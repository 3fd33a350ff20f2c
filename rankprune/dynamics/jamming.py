"""The jamming transition of Geiger, Spigler et al. (2019, "Jamming transition as a paradigm to understand the
loss landscape of deep neural networks"; their code: mariogeiger/nn_jamming), as they ran it:

- a binary task with one output: MNIST parity (y = +1 for an odd digit, -1 for an even one), P training images,
  half of each parity, projected on their first `dim` principal components and whitened (the paper's
  `mnist_pca`, d = 10); the PCA is fitted on the P training images only and applied to the test images;
- fully connected ReLU networks of L hidden layers of equal width h, orthogonal initial weights and zero biases,
  h chosen by `find_h` so that the network has N weights (biases are not counted, as in the paper);
- the quadratic hinge loss mean(max(0, Delta)^2), Delta = 1 - y f, with no weight decay, Adam on the full batch
  (or on a fixed batch of unsatisfied patterns, as nn_jamming's make_a_step), for a fixed budget of steps or
  until the loss is exactly zero (every Delta <= 0: the gradient is zero and nothing moves any more);
- at log-spaced steps: the training loss, N_Delta (constraints with Delta >= 0), the training and test error
  and loss, and how far the weights moved;
- the Hessian of the training loss on the whole training set, in float64, at the start and at the end, for the
  networks of at most `hessian_max` weights (a dense N x N matrix, one Hessian-vector product per column).

A constraint is one pattern's margin on one output: with one output there are P of them. With K outputs (the
one-vs-rest classification of `rankprune evolve --loss hinge`) there are P K, and N_Delta counts every output's
margin, so that N_Delta / N still crosses 1 where the constraints outnumber the parameters (losses.unsatisfied).

N* (the jamming point at the step budget) is where N_Delta / N at the end of training falls through 1 as N
grows, interpolated linearly in log N between the two grid networks on either side; a depth and seed whose
networks all sit on one side gives N* censored at the grid's end ("<" or ">"), never a value.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from rankprune.config import ConfigError, DataConfig
from rankprune.dynamics.steps import Movement, log_steps, run_steps
from rankprune.seeds import derive_seed

__all__ = ["JammingSettings", "find_h", "weight_count", "quadratic_hinge", "n_delta", "ParityTask", "parity_task",
           "fully_connected", "train_network", "units", "n_star", "DEFAULT_PARAMS"]

# 4 networks per decade from 10^2 to 10^5 weights: N* of MNIST parity at P = 6,000 and d = 10 lies near 10^3
DEFAULT_PARAMS = tuple(int(round(10 ** (2 + i / 4))) for i in range(13))
DATASETS = ("mnist", "fashion-mnist", "kmnist", "digits")


@dataclass(frozen=True)
class JammingSettings:
    dataset: str = "mnist"
    data_dir: str | None = None
    download: bool = True
    points: int = 6000  # P, the training patterns (half of each parity)
    dim: int = 10  # principal components the images are projected on (the paper's d)
    depths: tuple[int, ...] = (2, 3)  # L, hidden layers
    params: tuple[int, ...] = DEFAULT_PARAMS  # N, weights (biases not counted)
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 3000  # the step budget
    lr: float = 1e-3  # Adam's learning rate (nn_jamming's default is 1e-4 over up to 10^6 steps)
    optimizer: str = "adam"  # adam | sgd (plain gradient descent)
    batch_size: int | None = None  # None: the full batch
    precision: str = "float64"  # nn_jamming's default
    checkpoints: int = 60  # log-spaced steps measured, besides step 0
    hessian_max: int = 3200  # networks of at most this many parameters get the full Hessian (0: none)
    device: str = "cpu"

    def validate(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r} for the jamming experiment; choose from {', '.join(DATASETS)}")
        for flag, value, least in (("--points", self.points, 2), ("--dim", self.dim, 1), ("--steps", self.steps, 1),
                                   ("--checkpoints", self.checkpoints, 1)):
            if isinstance(value, bool) or value < least:
                raise ConfigError(f"{flag} must be at least {least}, got {value}")
        if self.points % 2:
            raise ConfigError(f"--points must be even (half of each parity), got {self.points}")
        if not self.depths or min(self.depths) < 1:
            raise ConfigError(f"--depths must be hidden-layer counts of at least 1, got {list(self.depths)}")
        if not self.params or min(self.params) < 1:
            raise ConfigError(f"--params must be parameter counts of at least 1, got {list(self.params)}")
        if not self.seeds or min(self.seeds) < 0:
            raise ConfigError(f"--seeds must be non-negative integers, got {list(self.seeds)}")
        for flag, values in (("--depths", self.depths), ("--params", self.params), ("--seeds", self.seeds)):
            if len(set(values)) != len(values):
                raise ConfigError(f"{flag} repeats a value: {list(values)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be a positive number, got {self.lr}")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"--optimizer must be adam or sgd, got {self.optimizer!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.precision not in ("float32", "float64"):
            raise ConfigError(f"--precision must be float32 or float64, got {self.precision!r}")
        if self.hessian_max < 0:
            raise ConfigError(f"--hessian-max must be 0 (off) or a parameter count, got {self.hessian_max}")
        for depth in self.depths:
            for n in self.params:
                if find_h(n, depth, self.dim) < 1:
                    raise ConfigError(f"--params {n} at depth {depth} with --dim {self.dim} gives no hidden unit; "
                                      f"the smallest network has {weight_count(depth, self.dim, 1)} weights")

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# Settings that do not change a result: where the data lies, whether it may be downloaded, the device.
FREE = frozenset({"data_dir", "download", "device"})


# --- sizes ------------------------------------------------------------------------------------------
def find_h(n: float, depth: int, d: int, n_out: int = 1) -> int:
    """The width h of `depth` hidden layers with about n weights: the root of N = h d + (L - 1) h^2 + n_out h
    (nn_jamming's constN.py, without biases), rounded; for one hidden layer N = h (d + n_out)."""
    if depth == 1:
        return round(n / (d + n_out))
    return round(-((n_out + d) - ((n_out + d) ** 2 + 4 * (depth - 1) * n) ** 0.5) / (2 * (depth - 1)))


def weight_count(depth: int, d: int, h: int, n_out: int = 1) -> int:
    """N: the weights (not the biases) of `depth` hidden layers of width h on d inputs with n_out outputs."""
    return h * d + (depth - 1) * h * h + n_out * h


# --- the loss and its constraints -------------------------------------------------------------------
def quadratic_hinge(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean(max(0, 1 - y f)^2) over every constraint (pattern, output); y = +1 or -1, the shape of f."""
    return torch.relu(1 - y * f).square().mean()


def n_delta(f: torch.Tensor, y: torch.Tensor) -> int:
    """N_Delta: the constraints whose Delta = 1 - y f is >= 0 (the margin not yet beyond 1), as the jamming
    experiments count them; with several outputs, every output's margin of every pattern is one constraint."""
    return int((1 - y * f >= 0).sum())


# --- the task ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParityTask:
    x: torch.Tensor  # (P, dim) whitened principal components
    y: torch.Tensor  # (P,) +1 odd, -1 even
    x_test: torch.Tensor
    y_test: torch.Tensor
    digits: list[int] = field(default_factory=list)  # the original labels of the P training patterns, in order


def parity_labels(labels: torch.Tensor) -> torch.Tensor:
    """+1 for an odd class, -1 for an even one (nn_jamming's target y % 2, as a sign)."""
    return (labels % 2).to(torch.float64) * 2 - 1


def check_data(s: JammingSettings) -> None:
    """ConfigError (one line) before anything is written: the dataset cannot be loaded, or holds too few images of
    a parity for --points, or too few pixels for --dim."""
    from rankprune.data import raw_arrays

    (x_tr, y_tr), _test = raw_arrays(DataConfig(dataset=s.dataset, data_dir=s.data_dir, download=s.download), 0)
    _balanced_rows(y_tr, s, torch.Generator().manual_seed(0))
    if s.dim > min(s.points, x_tr[0].numel()):
        raise ConfigError(f"--dim {s.dim} is more principal components than {min(s.points, x_tr[0].numel())} "
                          "(pixels or patterns)")


def _balanced_rows(labels: torch.Tensor, s: JammingSettings, g: torch.Generator) -> torch.Tensor:
    """P rows, half of each parity, interleaved (as nn_jamming does), so that any prefix is balanced."""
    half = s.points // 2
    picked = []
    for parity in (0, 1):
        rows = torch.nonzero(labels % 2 == parity).flatten()
        if len(rows) < half:
            raise ConfigError(f"{s.dataset} has {len(rows):,} training images of {'even' if parity == 0 else 'odd'} "
                              f"digits, fewer than the {half:,} that --points {s.points} needs; give --points "
                              f"{2 * len(rows)} or fewer")
        picked.append(rows[torch.randperm(len(rows), generator=g)[:half]])
    return torch.stack(picked, dim=1).flatten()


def parity_task(s: JammingSettings, seed: int) -> ParityTask:
    """P training patterns drawn by `seed`, half of each parity, and the whole test set, projected on the first
    `dim` principal components of the P training patterns and divided by the square roots of their variances."""
    from rankprune.data import raw_arrays

    cfg = DataConfig(dataset=s.dataset, data_dir=s.data_dir, download=s.download)
    (x_tr, y_tr), (x_te, y_te) = raw_arrays(cfg, seed)
    x_tr, x_te = x_tr.flatten(1).double(), x_te.flatten(1).double()
    idx = _balanced_rows(y_tr, s, torch.Generator().manual_seed(derive_seed(seed, 0x9A41)))
    x, labels = x_tr[idx], y_tr[idx]
    if s.dim > min(x.shape):
        raise ConfigError(f"--dim {s.dim} is more principal components than {min(x.shape)} (pixels or patterns)")
    mean = x.mean(0)
    _, sv, vt = torch.linalg.svd(x - mean, full_matrices=False)
    variance = sv[: s.dim] ** 2 / (len(x) - 1)
    if float(variance.min()) <= 0:
        raise ConfigError(f"--dim {s.dim}: the training images span fewer than {s.dim} directions")
    project = lambda v: (v - mean) @ vt[: s.dim].T / variance.sqrt()  # noqa: E731
    dtype = getattr(torch, s.precision)
    return ParityTask(project(x).to(dtype).to(s.device), parity_labels(labels).to(dtype).to(s.device),
                      project(x_te).to(dtype).to(s.device), parity_labels(y_te).to(dtype).to(s.device),
                      labels.tolist())


# --- the network ------------------------------------------------------------------------------------
class FullyConnected(nn.Module):
    """`depth` hidden ReLU layers of width h and one linear output, returned as (batch,)."""

    def __init__(self, d: int, h: int, depth: int):
        super().__init__()
        sizes = [d] + [h] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(h, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.out(x)[:, 0]


def fully_connected(d: int, h: int, depth: int, seed: int, dtype: torch.dtype = torch.float64) -> FullyConnected:
    """The paper's network at its initialisation: orthogonal weights (gain 1), zero biases, seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FullyConnected(d, h, depth).to(dtype)  # drawn in the training precision, as nn_jamming does
        for name, p in model.named_parameters():
            if name.endswith("weight"):
                nn.init.orthogonal_(p)
            else:
                nn.init.zeros_(p)
    return model


# --- training ---------------------------------------------------------------------------------------
def _measure(model: nn.Module, task: ParityTask, movement: Movement) -> dict:
    with torch.no_grad():
        f, f_test = model(task.x), model(task.x_test)
    return {"train_loss": float(quadratic_hinge(f, task.y)), "n_delta": n_delta(f, task.y),
            # nn_jamming counts Delta > 0 (the patterns that still pull); the two differ by the patterns exactly at
            # the margin, whose Delta stops at 0 where the gradient vanishes
            "n_delta_positive": int((1 - task.y * f > 0).sum()),
            "train_error": float((task.y * f <= 0).double().mean()),
            "test_loss": float(quadratic_hinge(f_test, task.y_test)),
            "test_error": float((task.y_test * f_test <= 0).double().mean()),
            "movement_network": movement(model)["movement_network"]}


def hessian_spectrum(model: nn.Module, task: ParityTask) -> dict:
    """Every eigenvalue of the Hessian of the training loss mean(max(0, Delta)^2) over all P patterns, in float64.
    Only patterns with Delta > 0 contribute (the loss is flat in the others), so the products run on those alone,
    scaled by their share of P; with none, H = 0 and nothing is computed."""
    from rankprune.probes.hessian import full_spectrum, hessian_operator

    model = copy.deepcopy(model).double()  # a float64 copy: training's network is untouched
    with torch.no_grad():
        delta = 1 - task.y.double() * model(task.x.double())
    active = delta > 0
    n_params = sum(p.numel() for p in model.parameters())
    count = int(active.sum())
    if count == 0:
        return {"zero": True, "active": 0, "parameters": n_params, "eigenvalues": []}
    share = count / len(task.y)
    loss = lambda f, y: torch.relu(1 - y * f).square() * share  # noqa: E731  (the mean over the active patterns, times their share of P)
    op, n = hessian_operator(model, task.x.double()[active], task.y.double()[active], loss)
    return {"zero": False, "active": count, "parameters": n, "eigenvalues": full_spectrum(op, n).tolist()}


def train_network(s: JammingSettings, task: ParityTask, depth: int, n: int, seed: int) -> dict:
    """One network of about n weights and `depth` hidden layers, trained for the step budget (or to zero loss)."""
    h = find_h(n, depth, s.dim)
    dtype = getattr(torch, s.precision)
    model = fully_connected(s.dim, h, depth, derive_seed(seed, depth, n), dtype).to(s.device)
    weights = weight_count(depth, s.dim, h)
    params = [p for p in model.parameters()]
    opt = (torch.optim.Adam(params, lr=s.lr) if s.optimizer == "adam" else torch.optim.SGD(params, lr=s.lr))
    batch = s.batch_size or len(task.y)
    order = torch.Generator().manual_seed(derive_seed(seed, depth, n, 1))
    movement = Movement(model)
    hessian_wanted = 0 < sum(p.numel() for p in params) <= s.hessian_max
    start = time.perf_counter()
    hessian = {"init": hessian_spectrum(model, task) if hessian_wanted else None}
    hessian_seconds = time.perf_counter() - start

    def step(_i: int) -> None:
        # nn_jamming's make_a_step: a batch of patterns with Delta > 0 only (the others have zero gradient), from
        # a random order; the full batch takes them all. The loss is divided by the batch size, so that on the
        # full batch it is exactly the training loss.
        with torch.no_grad():
            unsatisfied = torch.nonzero(1 - task.y * model(task.x) > 0).flatten()
        if len(unsatisfied) == 0:
            return
        if batch < len(task.y):
            unsatisfied = unsatisfied[torch.randperm(len(unsatisfied), generator=order)[:batch].to(unsatisfied.device)]
        f = model(task.x[unsatisfied])
        loss = torch.relu(1 - task.y[unsatisfied] * f).square().sum() / batch
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rows = run_steps(step, s.steps, log_steps(s.steps, s.checkpoints), lambda _s: _measure(model, task, movement),
                     stop=lambda row: row["train_loss"] == 0.0)
    train_seconds = time.perf_counter() - start - hessian_seconds
    if hessian_wanted:
        t = time.perf_counter()
        hessian["end"] = hessian_spectrum(model, task)
        hessian_seconds += time.perf_counter() - t
    last = rows[-1]
    return {"experiment": "jamming", "depth": depth, "params_asked": n, "N": weights, "h": h,
            "parameters_with_biases": sum(p.numel() for p in params), "seed": seed, "P": len(task.y), "d": s.dim,
            "steps_run": last["step"], "stopped": "zero loss" if last["train_loss"] == 0.0 else "step budget",
            "final": {k: v for k, v in last.items()}, "rows": rows, "hessian": hessian if hessian_wanted else None,
            "train_seconds": train_seconds, "hessian_seconds": hessian_seconds}


def unit_key(depth: int, n: int, seed: int) -> str:
    return f"jamming-L{depth}-N{n}-seed{seed}"


def units(s: JammingSettings) -> list[tuple[str, Callable[[], dict]]]:
    """Every network of the grid as (key, compute), seed by seed (each seed's task is drawn once, when its first
    network that is not yet finished starts), smallest first within a depth."""
    tasks: dict[int, ParityTask] = {}

    def compute(depth: int, n: int, seed: int) -> dict:
        if seed not in tasks:
            tasks.clear()  # one seed's task in memory at a time
            tasks[seed] = parity_task(s, seed)
        return train_network(s, tasks[seed], depth, n, seed)

    return [(unit_key(depth, n, seed), lambda depth=depth, n=n, seed=seed: compute(depth, n, seed))
            for seed in s.seeds for depth in s.depths for n in sorted(s.params)]


# --- the jamming point ------------------------------------------------------------------------------
def n_star(ns: list[float], ratios: list[float]) -> tuple[float, str]:
    """(N*, side) from the final N_Delta / N of one depth and seed across its grid of N: where the ratio falls
    through 1, linear in log N between the largest N still at or above 1 and the next one; side "=" for a
    crossing, "<" (every network below 1: N* < the smallest N) or ">" (none below 1: N* > the largest)."""
    order = np.argsort(ns)
    n = np.asarray(ns, dtype=float)[order]
    r = np.asarray(ratios, dtype=float)[order]
    above = np.nonzero(r >= 1)[0]
    if len(above) == 0:
        return float(n[0]), "<"
    i = int(above[-1])
    if i == len(n) - 1:
        return float(n[-1]), ">"
    t = (r[i] - 1) / (r[i] - r[i + 1])
    return float(np.exp(np.log(n[i]) + t * (np.log(n[i + 1]) - np.log(n[i])))), "="
