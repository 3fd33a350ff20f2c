"""Rank measurement's share of an `evolve` run's wall time, for the MLP and the CNN.

    python benchmarks/bench_measure_share.py [--data-dir ../shared/data/mnist10k] [--out benchmarks/results/measure_share.md]

Runs the real controller (rankprune.evolve.evolve, the probes as registered) on the MNIST subset, one
depth per family, default settings but at most 2 shrink iterations (then the anneal), with the
measurements the probes make wrapped in timers: the weight spectra after every epoch (`measure_layers`:
a float32 SVD of every weight matrix and the sketched rank of its gradient), the full-batch gradient they
read (`batch_gradient`), and the activation ranks once per iteration (`measure_activations`, float64 Gram
eigenvalues). The share is their summed seconds over the run's wall time, in this one process. The warm
run's reference anneal (training a copy, not measuring) is timed and shown apart. Target: under 10%.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from rankprune.config import RunConfig
from rankprune.data import load
from rankprune.evolve import NullReporter, evolve
from rankprune.probes import activations, reference, spectra
from rankprune.runfolder import RunFolder, atomic_path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "MLP, width 784, depth 2": dict(model={"family": "mlp", "width": 784}, evolve={"layers": (2,)}),
    # The same run measured as before the sketch and the float32/Gram decompositions: every matrix, gradient
    # and activation matrix through a full float64 SVD (the ratio to the row above is measured in one run).
    "MLP, width 784, depth 2, float64 SVDs (before)": dict(model={"family": "mlp", "width": 784}, evolve={"layers": (2,)},
                                                           legacy=True),
    "CNN, 64 channels, depth 2": dict(model={"family": "cnn", "width": 64}, evolve={"layers": (2,)}),
    # An epoch as long as full MNIST's (54,000 training samples after its validation split), on the subset:
    # the measurement per epoch is the same, the training it sits beside 7.5x longer.
    "MLP, width 784, depth 2, full-MNIST-sized epochs (--samples-per-epoch 54000)": dict(
        model={"family": "mlp", "width": 784}, evolve={"layers": (2,)}, train={"samples_per_epoch": 54000}),
}


def legacy_decompositions():
    """Patch rankprune.measure back to a float64 SVD of everything; returns the undo list."""
    from rankprune import measure
    from rankprune.rank import numerical_rank, singular_values

    patches = {
        "singular_values": lambda m, dtype=None: singular_values(m),
        "gram_singular_values": lambda m: singular_values(m),
        "sketched_numerical_rank": lambda m, eps, sketch, seed=0: numerical_rank(singular_values(m), tuple(m.shape), eps),
    }
    undo = [(measure, name, getattr(measure, name)) for name in patches]
    for name, fn in patches.items():
        setattr(measure, name, fn)
    return undo
# Default training (iterations as long as a user's); two shrink iterations are enough to see the share.
SHORT = dict(evolve={"max_iterations": 2})


def timed(module, name: str, clock: dict):
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            clock[name] = clock.get(name, 0.0) + time.perf_counter() - start

    setattr(module, name, wrapper)
    return original


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/mnist10k"))
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/measure_share.md"))
    p.add_argument("--cases", default=None, help="comma-separated case numbers (1-based) to run; default all")
    args = p.parse_args()
    rows = []
    chosen = [int(c) for c in args.cases.split(",")] if args.cases else range(1, len(CASES) + 1)
    for label, sections in (list(CASES.items())[i - 1] for i in chosen):
        sections = dict(sections)
        undo = legacy_decompositions() if sections.pop("legacy", False) else []
        cfg = RunConfig().replace(data={"dataset": "mnist", "data_dir": args.data_dir, "download": False})
        for key, value in {**sections}.items():
            cfg = cfg.replace(**{key: value})
        cfg = cfg.replace(evolve=SHORT["evolve"]).validate().resolved()
        data = load(cfg.data, cfg.data_seed)
        clock: dict[str, float] = {}
        originals = [(spectra, "measure_layers", timed(spectra, "measure_layers", clock)),
                     (spectra, "batch_gradient", timed(spectra, "batch_gradient", clock)),
                     (activations, "measure_activations", timed(activations, "measure_activations", clock)),
                     (reference, "train_to_saturation", timed(reference, "train_to_saturation", clock))]
        try:
            with tempfile.TemporaryDirectory() as tmp, RunFolder(Path(tmp) / "run") as run:
                run.create(overwrite=False)
                start = time.perf_counter()
                evolve(cfg, data, run, NullReporter())
                wall = time.perf_counter() - start
                epochs = len(run.rows("epochs.jsonl"))
        finally:
            for module, name, original in originals + undo:
                setattr(module, name, original)
        measured = sum(v for k, v in clock.items() if k != "train_to_saturation")
        rows.append((label, wall, epochs, clock.get("measure_layers", 0.0), clock.get("batch_gradient", 0.0),
                     clock.get("measure_activations", 0.0), clock.get("train_to_saturation", 0.0), measured / wall))
        print(f"{label}: wall {wall:.1f} s, {epochs} epochs, measurement {measured:.2f} s = {100 * measured / wall:.1f}%", flush=True)

    lines = [
        "# Rank measurement's share of an evolve run", "",
        f"`python {' '.join(sys.argv)}`; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. Each case: the MNIST subset, "
        "seed 0, default settings (warm rebuild), at most 2 shrink iterations (then the anneal), one process. "
        "Measurement = weight spectra + full-batch gradient + activation ranks; the reference anneal is training "
        "(a copy of the full-width network, for comparison) and counts only in the wall time.", "",
        "| case | wall (s) | epochs | weight spectra (s) | full-batch gradient (s) | activation ranks (s) | reference anneal (s) | measurement share of wall |",
        "|---|---|---|---|---|---|---|---|",
        *(f"| {r[0]} | {r[1]:.1f} | {r[2]} | {r[3]:.2f} | {r[4]:.2f} | {r[5]:.2f} | {r[6]:.1f} | {100 * r[7]:.1f}% |" for r in rows),
        "",
    ]
    with atomic_path(Path(args.out)) as tmp:
        tmp.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
