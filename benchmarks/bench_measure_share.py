"""Rank measurement's share of an `evolve` run's wall time, for the MLP and the CNN.

    python benchmarks/bench_measure_share.py [--data-dir ../shared/data/mnist10k] [--out benchmarks/results/measure_share.md]

Runs the real controller (rankprune.evolve.evolve, the probes as registered) on the MNIST subset, one
depth per family, default settings but at most 2 shrink iterations (then the anneal), with the
measurements the probes make wrapped in timers: the weight spectra after every epoch (`measure_layers`:
a float32 SVD of every weight matrix and the sketched rank of its gradient), the full-batch gradient they
read (`batch_gradient`), and the activation ranks once per iteration (`measure_activations`, float64 Gram
eigenvalues). Each case runs twice in this one process: with training waiting for the measurements (the old
path), whose share is their summed seconds over the run's wall time, and with the weight decompositions beside the
next epoch's training (probes/beside.py, the default), whose share is what its wall exceeds the first run's wall
less its measurements. The warm run's reference anneal (training a copy, not measuring) is timed and shown apart.
Target: under 10%.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from rankprune.config import RunConfig
from rankprune.data import load
from rankprune.evolve import NullReporter, evolve
from rankprune.probes import activations, reference, spectra
from rankprune.probes.beside import set_beside
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


def run_case(label: str, sections: dict, data_dir: str, on_beside: bool) -> dict:
    """One evolve run of a case, with the measurements beside training or with training waiting for them."""
    sections = dict(sections)
    undo = legacy_decompositions() if sections.pop("legacy", False) else []
    cfg = RunConfig().replace(data={"dataset": "mnist", "data_dir": data_dir, "download": False})
    for key, value in {**sections}.items():
        cfg = cfg.replace(**{key: value})
    cfg = cfg.replace(evolve=SHORT["evolve"]).validate().resolved()
    data = load(cfg.data, cfg.data_seed)
    clock: dict[str, float] = {}
    originals = [(spectra, "measure_layers", timed(spectra, "measure_layers", clock)),
                 (spectra, "measure_matrices", timed(spectra, "measure_matrices", clock)),
                 (spectra, "batch_gradient", timed(spectra, "batch_gradient", clock)),
                 (activations, "measure_activations", timed(activations, "measure_activations", clock)),
                 (reference, "train_to_saturation", timed(reference, "train_to_saturation", clock))]
    previous = set_beside(on_beside)
    try:
        with tempfile.TemporaryDirectory() as tmp, RunFolder(Path(tmp) / "run") as run:
            run.create(overwrite=False)
            start = time.perf_counter()
            evolve(cfg, data, run, NullReporter())
            wall = time.perf_counter() - start
            epochs = len(run.rows("epochs.jsonl"))
    finally:
        set_beside(previous)
        for module, name, original in originals + undo:
            setattr(module, name, original)
    spectra_s = clock.get("measure_layers", 0.0) + clock.get("measure_matrices", 0.0)
    measured = spectra_s + clock.get("batch_gradient", 0.0) + clock.get("measure_activations", 0.0)
    return dict(wall=wall, epochs=epochs, spectra=spectra_s, gradient=clock.get("batch_gradient", 0.0),
                activations=clock.get("measure_activations", 0.0), anneal=clock.get("train_to_saturation", 0.0),
                measured=measured)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/mnist10k"))
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/measure_share.md"))
    p.add_argument("--cases", default=None, help="comma-separated case numbers (1-based) to run; default all but "
                                                 "the float64 one")
    p.add_argument("--repeats", type=int, default=2, help="runs of each path per case, alternating; medians (2)")
    args = p.parse_args()
    rows = []
    chosen = [int(c) for c in args.cases.split(",")] if args.cases else [i + 1 for i, k in enumerate(CASES) if "float64" not in k]
    for label, sections in (list(CASES.items())[i - 1] for i in chosen):
        runs = {False: [], True: []}
        for _ in range(args.repeats):  # alternating, so that drift in the machine's speed falls on both paths
            for on_beside in (False, True):
                runs[on_beside].append(run_case(label, sections, args.data_dir, on_beside))
        waited, beside_ = ({k: statistics.median(r[k] for r in runs[b]) for k in runs[b][0]} for b in (False, True))
        assert waited["epochs"] == beside_["epochs"], "the two paths must train the same epochs"
        # Both runs do the same work (tests/test_beside.py: identical tables); what the run without the measurements
        # would take is the waiting run's wall less its timed measurements, and the beside run's share is what its
        # wall exceeds that by.
        bare = waited["wall"] - waited["measured"]
        share_w, share_b = waited["measured"] / waited["wall"], (beside_["wall"] - bare) / beside_["wall"]
        rows.append((label, waited, beside_, share_w, share_b))
        print(f"{label}: waits {waited['wall']:.1f} s ({100 * share_w:.1f}% measuring), beside {beside_['wall']:.1f} s "
              f"({100 * share_b:.1f}%)", flush=True)

    lines = [
        "# Rank measurement's share of an evolve run", "",
        f"`python {' '.join(sys.argv)}`; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. Each case: the MNIST subset, "
        "seed 0, default settings (warm rebuild), at most 2 shrink iterations (then the anneal), one process, run "
        f"{args.repeats} times each way, alternating (medians): with training waiting for the measurements (the path before probes/beside.py) and with "
        "the weight decompositions beside the next epoch's training (the default now). Both train the same epochs "
        "to the same tables. Measurement = weight spectra + full-batch gradient + activation ranks (the driving "
        "rank, measured at once); the reference anneal is training (a copy of the full-width network, for "
        "comparison) and counts only in the wall time. Waiting: the timed measurements over the wall. Beside: "
        "(its wall - (the waiting run's wall - its measurements)) over its wall, i.e. what measuring still adds.", "",
        "| case | epochs | waits: wall (s) | weight spectra (s) | full-batch gradient (s) | activation ranks (s) "
        "| waits: share | beside: wall (s) | beside: share |",
        "|---|---|---|---|---|---|---|---|---|",
        *(f"| {label} | {w['epochs']} | {w['wall']:.1f} | {w['spectra']:.2f} | {w['gradient']:.2f} | "
          f"{w['activations']:.2f} | {100 * sw:.1f}% | {b['wall']:.1f} | {100 * sb:.1f}% |"
          for label, w, b, sw, sb in rows),
        "",
    ]
    with atomic_path(Path(args.out)) as tmp:
        tmp.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
