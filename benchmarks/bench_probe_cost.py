"""What the optional probes add to an epoch: --movement at width 784 (depth 2), on the MNIST subset's epoch and
on a full-MNIST-sized one, measured in one process.

    python benchmarks/bench_probe_cost.py [--data-dir ../shared/data/mnist10k] [--rounds 5]

An epoch here is what the controller runs per epoch without the optional probes: the training steps, the
evaluation of validation and test, and the spectra probe (every weight's SVD and the gradient's rank). The
movement probe's epoch() call is timed on the same network right after; its share is its median seconds over
the epoch's median seconds. Writes benchmarks/results/probe_cost.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from rankprune.config import RunConfig
from rankprune.data import load
from rankprune.models import get_family
from rankprune.probes import ProbeContext
from rankprune.probes.movement import MovementProbe
from rankprune.probes.spectra import SpectraProbe
from rankprune.runfolder import RunFolder
from rankprune.train import train_to_saturation

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/mnist10k"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/probe_cost.md"))
    args = p.parse_args()

    cfg = RunConfig().replace(data={"dataset": "mnist", "data_dir": args.data_dir, "download": False},
                              probes={"movement": True}).resolved()
    data = load(cfg.data, 0)
    rows = []
    for case, (label, samples) in enumerate((("MNIST subset epoch (7,200 samples)", None),
                                             ("full-MNIST-sized epoch (54,000 samples)", 54_000))):
        train = dataclasses.replace(cfg.train, max_epochs=1, lr_drops=0, samples_per_epoch=samples, saturate="accuracy")
        model = get_family("mlp").build(data.input_shape, [784, 784], data.n_classes, 0, torch.device("cpu"))
        run = RunFolder(Path(os.environ.get("TMPDIR", "/tmp")) / f"rankprune-bench-probe-cost-{case}")
        run.create(overwrite=True)
        run.save_weights(model.state_dict(), 2, 0, start=True)
        ctx = ProbeContext(cfg, data, run, model, 2, 0, "fp32", data.train.x[:64], train, cfg.train.weight_decay)
        spectra, movement = SpectraProbe(), MovementProbe()
        epoch_s, probe_s = [], []
        for r in range(args.rounds + 1):  # the first round warms up and is dropped
            start = time.perf_counter()
            train_to_saturation(model, data, train, cfg.train.weight_decay, r)
            spectra.epoch(ctx)
            mid = time.perf_counter()
            movement.epoch(ctx)
            end = time.perf_counter()
            if r:
                epoch_s.append(mid - start)
                probe_s.append(end - mid)
        e, m = statistics.median(epoch_s), statistics.median(probe_s)
        rows.append((label, e, m, 100 * m / e))
    lines = ["# What --movement adds to an epoch (MLP 784 x 2)", "",
             f"Written by `python benchmarks/bench_probe_cost.py --rounds {args.rounds}` on {platform.processor() or platform.machine()}, "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.rounds} rounds, one process.", "",
             "| epoch | epoch without it (s) | movement probe (s) | added |", "|---|---|---|---|"]
    lines += [f"| {label} | {e:.3f} | {m:.3f} | {pct:.1f}% |" for label, e, m, pct in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
