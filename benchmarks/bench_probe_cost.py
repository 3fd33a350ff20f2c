"""What the optional probes add to an epoch: --movement at width 784 (depth 2), on the MNIST subset's epoch and on a
full-MNIST-sized one, with the measurements beside training (probes/beside.py, the default) and with training
waiting for them (the old path), measured in one process.

    python benchmarks/bench_probe_cost.py [--data-dir ../shared/data/mnist10k] [--rounds 5]

An epoch here is what the controller runs per epoch: the training steps, the evaluation of validation and test, and
the probes' epoch() calls, their rows finished through EpochRows as the controller finishes them. Each round times
a few epochs of each configuration in turn, so that drift in the machine's speed falls on all alike: no probe, the
spectra probe alone, and the spectra and movement probes, the last two under each path. The spectra probe's share and what the movement probe
adds are differences of the median epochs. Writes benchmarks/results/probe_cost.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from rankprune.config import RunConfig
from rankprune.data import load
from rankprune.models import get_family
from rankprune.probes import ProbeContext
from rankprune.probes.beside import EpochRows, Later, set_beside
from rankprune.probes.movement import MovementProbe
from rankprune.probes.spectra import SpectraProbe
from rankprune.runfolder import RunFolder
from rankprune.train import train_to_saturation

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/mnist10k"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--subset-only", action="store_true", help="only the MNIST subset's epoch")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/probe_cost.md"))
    args = p.parse_args()

    cfg = RunConfig().replace(data={"dataset": "mnist", "data_dir": args.data_dir, "download": False},
                              probes={"movement": True}).resolved()
    data = load(cfg.data, 0)
    rows = []
    # epochs per timing: all but the last train beside the measurements before them (an iteration of a run has 8 to 25)
    cases = (("MNIST subset epoch (7,200 samples)", None, 4), ("full-MNIST-sized epoch (54,000 samples)", 54_000, 2))
    for case, (label, samples, n_epochs) in enumerate(cases[: 1 if args.subset_only else 2]):
        train = dataclasses.replace(cfg.train, max_epochs=1, lr_drops=0, samples_per_epoch=samples, saturate="accuracy")
        model = get_family("mlp").build(data.input_shape, [784, 784], data.n_classes, 0, torch.device("cpu"))
        run = RunFolder(Path(tempfile.mkdtemp(prefix="rankprune-bench-probe-cost-")) / "run")
        run.create(overwrite=False)
        run.save_weights(model.state_dict(), 2, 0, start=True)
        ctx = ProbeContext(cfg, data, run, model, 2, 0, "fp32", data.train.x[:64], train, cfg.train.weight_decay)
        spectra, movement = SpectraProbe(), MovementProbe()
        # (beside, probes): no probe at all (training and evaluation only), the spectra probe, spectra and movement
        times: dict[tuple[bool, int], list[float]] = {(False, 0): [], **{(b, n): [] for b in (False, True) for n in (1, 2)}}
        for r in range(args.rounds + 1):  # the first round warms up and is dropped
            for (on_beside, n_probes), got in times.items():
                previous = set_beside(on_beside)
                rows_ = EpochRows(lambda row: None)
                try:
                    start = time.perf_counter()
                    for e in range(n_epochs):
                        train_to_saturation(model, data, train, cfg.train.weight_decay, n_epochs * r + e)
                        later, row = [], {}
                        for probe in (spectra, movement)[:n_probes]:
                            out = probe.epoch(ctx)
                            later.append(out) if isinstance(out, Later) else row.update(out)
                        rows_.submit(row, later)
                    rows_.flush()
                    seconds = (time.perf_counter() - start) / n_epochs
                finally:
                    set_beside(previous)
                if r:
                    got.append(seconds)
        med = {k: statistics.median(v) for k, v in times.items()}
        bare = med[(False, 0)]
        for on_beside in (False, True):
            spectra_only, both = med[(on_beside, 1)], med[(on_beside, 2)]
            rows.append((label, "beside training" if on_beside else "training waits (before)", bare, spectra_only,
                         100 * (spectra_only - bare) / spectra_only, both, 100 * (both - spectra_only) / spectra_only))
    lines = ["# What --movement adds to an epoch (MLP 784 x 2)", "",
             f"Written by `python benchmarks/bench_probe_cost.py --rounds {args.rounds}` on "
             f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; medians of {args.rounds} rounds, one process. "
             "An epoch: training, evaluation, the spectra probe (and the movement probe), rows finished as the "
             "controller finishes them; 4 epochs per timing on the subset and 2 on the full-sized epoch (the last of them "
             "waits for its own measurements, as an iteration's last epoch does), per epoch.", "",
             "Spectra's share: (the epoch with the spectra probe - the epoch with no probe) over the epoch with it; "
             "--movement: what it adds to the epoch with the spectra probe.", "",
             "| epoch | measurements | no probe (s) | spectra probe (s) | spectra's share | with --movement too (s) "
             "| --movement adds |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {label} | {path} | {bare:.3f} | {sp:.3f} | {sp_pct:.1f}% | {both:.3f} | {mv_pct:+.1f}% |"
              for label, path, bare, sp, sp_pct, both, mv_pct in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
