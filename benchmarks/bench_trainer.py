"""Throughput of rankprune's trainer against a notebook-style DataLoader loop, and its GFLOP/s.

Two questions, answered in one process so that the ratios share the host's conditions:

(a) samples/s of `rankprune.train.train_to_saturation` (in-memory tensors, index_select batches)
    against the loop of the original notebook (torchvision MNIST, per-sample ToTensor + Normalize,
    DataLoader(batch_size=64, shuffle=True)), same network, same SGD, same batch size 64: the MLP at
    width 784 and width 64 (depth 2; targets >= 2x at width 784, >= 10x at width 64), or with
    `--model cnn` the CNN family at 64 channels (depth 2; no target, the ratio is reported).
(b) the trainer's achieved GFLOP/s at width 784, batch 512 (TrainResult.flops / TrainResult.seconds,
    i.e. 3 x forward FLOPs per sample) against the best fp32 `torch.mm` GFLOP/s measured here.
    Target: >= 90%.

The trainer is the real function, called with a TrainConfig that runs a fixed number of epochs
(patience above max_epochs, no learning-rate drops); its per-epoch `seconds` count the optimisation
steps only. Trainer and notebook measurements are interleaved round by round, so a burst of load
from another process hits both, and each figure is a median over rounds (trainer: over epochs).

    python benchmarks/bench_trainer.py [--data-dir ../shared/data/mnist10k] [--out benchmarks/results/trainer.md]
    python benchmarks/bench_trainer.py --model cnn --widths 64 --flops-depths "" --out benchmarks/results/trainer_cnn.md
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from rankprune.config import DataConfig, TrainConfig
from rankprune.data import Split, Splits, load
from rankprune.models import MLP, build_mlp, forward_flops, get_family
from rankprune.runfolder import write_text_atomic
from rankprune.train import train_to_saturation

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mnist10k"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "trainer.md"

# The notebook's hyperparameters, shared by both loops.
LR, MOMENTUM, WEIGHT_DECAY, NOTEBOOK_BATCH = 0.05, 0.9, 5e-3, 64
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # torchvision's Normalize((0.1307,), (0.3081,))
SEED = 0

# Targets from the issue.
TARGET_RATIO = {784: 2.0, 64: 10.0}
TARGET_FRACTION_OF_MATMUL = 0.90

# fp32 matmul shapes (m, k, n) for the ceiling: the MLP's forward shape at batch 512, then square.
CEILING_SHAPES = ((512, 784, 784), (1024, 1024, 1024), (2048, 2048, 2048))


# --------------------------------------------------------------------------------------------
# The two loops


def trainer_epochs(model: MLP, data: Splits, batch_size: int, epochs: int, seed: int) -> tuple[list[float], float, float]:
    """Run train_to_saturation for exactly `epochs` epochs.

    Returns (per-epoch training seconds, TrainResult.seconds, TrainResult.flops).
    """
    cfg = TrainConfig(lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, batch_size=batch_size,
                      max_epochs=epochs, patience=epochs + 1, lr_drops=0)
    seconds: list[float] = []
    result = train_to_saturation(model, data, cfg, WEIGHT_DECAY, seed, on_epoch=lambda r: seconds.append(r["seconds"]))
    assert result.epochs == epochs and result.stop_reason == "max-epochs", result
    return seconds, result.seconds, result.flops


def notebook_loader(data_dir: Path, batch_size: int = NOTEBOOK_BATCH) -> torch.utils.data.DataLoader:
    """The original notebook's input pipeline: a PIL image per sample, ToTensor, Normalize."""
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    dataset = datasets.MNIST(str(data_dir), train=True, download=False, transform=transform)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)


def notebook_epoch(model: MLP, optimizer: torch.optim.Optimizer, loader, max_steps: int | None = None) -> tuple[float, int]:
    """One epoch of the notebook's loop (or its first max_steps batches): (wall seconds, samples)."""
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    samples = 0
    start = time.perf_counter()
    for step, (x, y) in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        optimizer.zero_grad()  # images stay (N, 1, 28, 28): the MLP flattens them itself, the CNN convolves
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        samples += len(y)
    return time.perf_counter() - start, samples


def sgd(model: MLP) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def head(data: Splits, n: int) -> Splits:
    """The same splits with only the first n training rows: a short warm-up pass."""
    return dataclasses.replace(data, train=Split(data.train.x[:n], data.train.y[:n]))


# --------------------------------------------------------------------------------------------
# FLOPs


def executed_flops_per_sample(dims: list[int]) -> int:
    """Matmul FLOPs a training step really runs per sample: forward, weight gradients, and input
    gradients for every layer but the first (the data needs no gradient). forward_flops x 3 counts
    the first layer's input gradient too, so it overstates depth-2 work by about 1/6."""
    mults = [a * b for a, b in zip(dims[:-1], dims[1:])]
    return 2 * (2 * sum(mults) + sum(mults[1:]))


def matmul_gflops(m: int, k: int, n: int, min_seconds: float, repeats: int) -> float:
    """Median GFLOP/s of fp32 torch.mm(m x k, k x n) into a preallocated output."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    c = torch.empty(m, n)
    flops = 2 * m * k * n
    for _ in range(3):
        torch.mm(a, b, out=c)
    start, reps = time.perf_counter(), 0
    while time.perf_counter() - start < min_seconds / repeats or reps < 3:
        torch.mm(a, b, out=c)
        reps += 1
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=c)
        rates.append(flops * reps / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


# --------------------------------------------------------------------------------------------
# Measurements


@dataclass
class Throughput:
    family: str
    width: int
    depth: int
    trainer_samples: int  # training rows per trainer epoch
    notebook_samples: int  # rows per notebook epoch
    trainer_rates: list[float]  # samples/s, one per timed epoch
    trainer_total_rate: float  # all timed samples / sum of TrainResult.seconds
    notebook_rates: list[float]  # samples/s, one per round
    round_ratios: list[float]  # trainer (median of the round's epochs) / notebook, one per round

    @property
    def trainer(self) -> float:
        return statistics.median(self.trainer_rates)

    @property
    def notebook(self) -> float:
        return statistics.median(self.notebook_rates)

    @property
    def ratio(self) -> float:
        """Median of the per-round ratios: each pairs measurements taken seconds apart, so slow
        drift in host load cancels; the ratio of the medians is shown beside it."""
        return statistics.median(self.round_ratios)


def measure_throughput(data: Splits, data_dir: Path, family: str, width: int, depth: int, rounds: int,
                       trainer_epochs_per_round: int, notebook_steps: int | None, log) -> Throughput:
    widths = [width] * depth
    build = get_family(family).build
    trainer_model = build(data.input_shape, widths, data.n_classes, seed=SEED)
    notebook_model = build(data.input_shape, widths, data.n_classes, seed=SEED)
    optimizer, loader = sgd(notebook_model), notebook_loader(data_dir)

    # Warm-up: one short pass of each (allocator, oneDNN kernels, the loader's file handles).
    trainer_epochs(trainer_model, head(data, 16 * NOTEBOOK_BATCH), NOTEBOOK_BATCH, 1, seed=SEED)
    notebook_epoch(notebook_model, optimizer, loader, max_steps=16)

    trainer_rates, notebook_rates, round_ratios, total_seconds, total_samples = [], [], [], 0.0, 0
    for r in range(rounds):
        seconds, result_seconds, _ = trainer_epochs(trainer_model, data, NOTEBOOK_BATCH, trainer_epochs_per_round, seed=SEED + 1 + r)
        trainer_rates += [len(data.train) / s for s in seconds]
        total_seconds += result_seconds
        total_samples += len(data.train) * trainer_epochs_per_round
        nb_seconds, nb_samples = notebook_epoch(notebook_model, optimizer, loader, max_steps=notebook_steps)
        notebook_rates.append(nb_samples / nb_seconds)
        round_trainer = statistics.median(trainer_rates[-len(seconds):])
        round_ratios.append(round_trainer / notebook_rates[-1])
        log(f"  width {width} round {r + 1}/{rounds}: trainer {round_trainer:,.0f}/s ({len(seconds)} epochs), "
            f"notebook {notebook_rates[-1]:,.0f}/s, ratio {round_ratios[-1]:.2f}")
    return Throughput(family, width, depth, len(data.train), nb_samples, trainer_rates, total_samples / total_seconds,
                      notebook_rates, round_ratios)


@dataclass
class Efficiency:
    width: int
    depth: int
    batch: int
    counted_gflops: list[float]  # TrainResult-style: 3 x forward FLOPs / training seconds, per epoch
    total_counted_gflops: float  # TrainResult.flops / TrainResult.seconds over all timed epochs
    executed_fraction: float  # executed matmul FLOPs / counted FLOPs

    @property
    def gflops(self) -> float:
        return statistics.median(self.counted_gflops)


def measure_efficiency(data: Splits, width: int, depth: int, batch: int, epochs: int, log) -> Efficiency:
    widths = [width] * depth
    model = build_mlp(data.n_features, widths, data.n_classes, seed=SEED)
    trainer_epochs(model, head(data, 4 * batch), batch, 1, seed=SEED)  # warm-up
    seconds, result_seconds, result_flops = trainer_epochs(model, data, batch, epochs, seed=SEED + 1)
    per_epoch_flops = result_flops / epochs
    counted = [per_epoch_flops / s / 1e9 for s in seconds]
    dims = [data.n_features, *widths, data.n_classes]
    executed = executed_flops_per_sample(dims) / (3 * forward_flops(data.n_features, widths, data.n_classes))
    log(f"  width {width} depth {depth} batch {batch}: {statistics.median(counted):.1f} GFLOP/s (counted)")
    return Efficiency(width, depth, batch, counted, result_flops / result_seconds / 1e9, executed)


# --------------------------------------------------------------------------------------------
# Output


def _spread(values: list[float]) -> str:
    return f"{min(values):,.0f}-{max(values):,.0f}"


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


def tables(throughputs: list[Throughput], efficiencies: list[Efficiency], ceilings: dict[tuple, float]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every table; rendered both by rich and as Markdown."""
    out = []
    rows = []
    for t in throughputs:
        target = TARGET_RATIO.get(t.width) if t.family == "mlp" else None
        rows.append([
            f"{t.family} {t.width} x {t.depth}", str(NOTEBOOK_BATCH),
            f"{t.notebook:,.0f}", _spread(t.notebook_rates),
            f"{t.trainer:,.0f}", _spread(t.trainer_rates), f"{t.trainer_total_rate:,.0f}",
            f"{t.ratio:.2f}x", f"{t.trainer / t.notebook:.2f}x",
            f">= {target:g}x" if target else "-", _met(t.ratio >= target) if target else "-",
        ])
    out.append(("(a) samples/s: trainer vs notebook DataLoader loop",
                ["width x depth", "batch", "notebook /s", "notebook range", "trainer /s", "trainer range",
                 "trainer /s (TrainResult)", "ratio (paired)", "ratio of medians", "target", "met"], rows))

    if not efficiencies:
        return out
    best = max(max(passes) for passes in ceilings.values())
    rows = [[f"{m}x{k} @ {k}x{n}", *(f"{g:.1f}" for g in passes), f"{max(passes) / best:.0%}"]
            for (m, k, n), passes in ceilings.items()]
    out.append(("fp32 torch.mm ceiling, median GFLOP/s before and after (b)",
                ["shape", "before", "after", "best of both / ceiling"], rows))

    rows = []
    for e in efficiencies:
        frac = e.gflops / best
        rows.append([
            f"{e.width} x {e.depth}", str(e.batch), f"{e.gflops:.1f}", f"{min(e.counted_gflops):.1f}-{max(e.counted_gflops):.1f}",
            f"{e.total_counted_gflops:.1f}", f"{best:.1f}", f"{frac:.0%}", f"{e.gflops * e.executed_fraction / best:.0%}",
            f">= {TARGET_FRACTION_OF_MATMUL:.0%}", _met(frac >= TARGET_FRACTION_OF_MATMUL),
        ])
    out.append(("(b) trainer GFLOP/s (3 x forward FLOPs) vs fp32 matmul ceiling",
                ["width x depth", "batch", "GFLOP/s", "range", "GFLOP/s (TrainResult)", "ceiling",
                 "% of ceiling", "% (executed FLOPs)", "target", "met"], rows))
    return out


def render_rich(console: Console, parts) -> None:
    for title, header, rows in parts:
        table = Table(title=title, title_justify="left")
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*[f"[bold red]{c}[/]" if c == "NO" else c for c in row])
        console.print(table)


def render_markdown(parts, meta: dict[str, str], notes: list[str]) -> str:
    lines = ["# Trainer benchmark", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    for title, header, rows in parts:
        lines += ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"



# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("RANKPRUNE_DATA", DEFAULT_DATA)),
                   help="torchvision layout, MNIST/raw/*-ubyte (default: $RANKPRUNE_DATA or ../shared/data/mnist10k)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown results file")
    p.add_argument("--rounds", type=int, default=5, help="interleaved trainer/notebook rounds per width")
    p.add_argument("--model", default="mlp", help="model family for (a): mlp | cnn")
    p.add_argument("--widths", default="784,64", help="hidden widths for (a), comma-separated (cnn: channels)")
    p.add_argument("--depth", type=int, default=2, help="hidden layers for (a)")
    p.add_argument("--flops-depths", default="2,5", help="hidden layers for (b), comma-separated; width 784")
    p.add_argument("--flops-batch", type=int, default=512)
    p.add_argument("--flops-epochs", type=int, default=5, help="timed trainer epochs for (b)")
    p.add_argument("--min-round-seconds", type=float, default=1.0,
                   help="trainer epochs per round are chosen to last at least this long")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 round, notebook limited to 20 batches, small ceilings; not for reporting")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    console = Console(width=max(console.width, 160))  # the tables are wide; don't wrap them in logs
    log = lambda msg: console.print(f"[dim]{msg}[/]")  # noqa: E731
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load_before = os.getloadavg()
    if load_before[0] > 0.5 * (os.cpu_count() or 1):
        # With OpenMP's default active waiting, a torch process whose threads share cores with another
        # busy process can run 10-100x slower (every parallel region waits for a descheduled thread).
        console.print(f"[bold yellow]warning:[/] 1-minute load average is {load_before[0]:.2f} on "
                      f"{os.cpu_count()} CPUs; other processes will distort these figures")

    # val_fraction 0.1 (the default) leaves 7,200 of the 8,000 training images for the trainer.
    data = load(DataConfig(dataset="mnist", data_dir=str(args.data_dir), download=False), seed=SEED)
    rounds = 1 if args.quick else args.rounds
    notebook_steps = 20 if args.quick else None

    throughputs = []
    for width in (int(w) for w in args.widths.split(",")):
        # Estimate an epoch's time from a short timed pass, so that width 64 gets enough epochs.
        probe = get_family(args.model).build(data.input_shape, [width] * args.depth, data.n_classes, seed=SEED)
        trainer_epochs(probe, head(data, 16 * NOTEBOOK_BATCH), NOTEBOOK_BATCH, 1, seed=SEED)
        (probe_seconds,), _, _ = trainer_epochs(probe, head(data, 32 * NOTEBOOK_BATCH), NOTEBOOK_BATCH, 1, seed=SEED)
        epoch_estimate = probe_seconds * len(data.train) / (32 * NOTEBOOK_BATCH)
        per_round = 1 if args.quick else max(1, math.ceil(args.min_round_seconds / epoch_estimate))
        throughputs.append(measure_throughput(data, args.data_dir, args.model, width, args.depth, rounds, per_round, notebook_steps, log))

    # The ceiling is measured on both sides of (b), so a burst of host load during one pass does not
    # decide the verdict; the best median of either pass is the ceiling.
    shapes = [s for s in CEILING_SHAPES if not (args.quick and s[0] > 1024)]
    ceilings: dict[tuple[int, int, int], list[float]] = {s: [] for s in shapes}

    def measure_ceilings(when: str) -> None:
        for m, k, n in shapes:
            ceilings[(m, k, n)].append(matmul_gflops(m, k, n, min_seconds=0.3 if args.quick else 1.0, repeats=5))
            log(f"  mm {m}x{k}x{n} ({when}): {ceilings[(m, k, n)][-1]:.1f} GFLOP/s")

    efficiencies = []
    flops_depths = [int(d) for d in args.flops_depths.split(",") if d.strip()]  # "" skips (b)
    if flops_depths:
        measure_ceilings("before")
        flops_epochs = 1 if args.quick else args.flops_epochs
        for depth in flops_depths:
            efficiencies.append(measure_efficiency(data, 784, depth, args.flops_batch, flops_epochs, log))
        measure_ceilings("after")

    parts = tables(throughputs, efficiencies, ceilings)
    render_rich(console, parts)

    load_after = os.getloadavg()
    meta = {
        "command": shlex.join(["python", sys.argv[0], *(sys.argv[1:] if argv is None else argv)]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "cpu": f"{os.cpu_count()} logical CPUs, {platform.machine()} {platform.processor()}".strip(),
        "load average (1 min) before / after": f"{load_before[0]:.2f} / {load_after[0]:.2f}",
        "data": f"{args.data_dir} (trainer: {len(data.train):,} training rows after a 10% validation split; "
                f"notebook: MNIST(train=True), {throughputs[0].notebook_samples if throughputs else 0:,} rows)",
        "wall time": f"{time.perf_counter() - started:.0f} s",
    }
    notes = [
        "Medians: trainer over timed epochs (training steps only, as TrainResult.seconds counts), notebook over "
        f"rounds (one full DataLoader epoch each, wall time). {rounds} interleaved round(s) per width.",
        "'trainer /s (TrainResult)' is all timed samples / the sum of TrainResult.seconds (a mean, not a median).",
        "'% (executed FLOPs)' rescales to the matmul FLOPs really run: the first layer needs no input gradient, "
        "so 3 x forward FLOPs overstates the work (by 20% at depth 2 and 7% at depth 5 for width 784).",
        "Ceiling: the best median fp32 torch.mm rate over the listed shapes and both passes.",
        "'ratio (paired)' is the median over rounds of (trainer / notebook) within a round; it decides 'met'.",
    ]
    if args.quick:
        notes.insert(0, "QUICK SMOKE RUN: not for reporting.")
    md = render_markdown(parts, meta, notes)
    write_text_atomic(args.out, md)
    console.print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
