"""Would lending the measuring thread a core bring measuring under its targets at 2 threads, and at what price?

Beside training (probes/beside.py) the measuring thread and the training thread both run with torch's thread count,
so on a 2-core machine three busy threads share two cores. Lending a core: the measuring thread runs with one thread,
and the training thread drops to one thread fewer until the measurement is done, then takes its core back between two
steps. This times an epoch of the width-784 MLP (depth 2) on the MNIST subset's 7,200 samples, batch 64, SGD as the
runs train it, under four schedules, in one process, interleaved round by round:
    none     training and evaluation only
    waits    the spectra and movement decompositions (rankprune's own measure_matrices and matrix_ranks on copies),
             then the epoch: the old path
    beside   the decompositions on the measuring thread beside the epoch (what rankprune does)
    lend     beside, with the core lent
and then checks what lending does to the weights: the same 3 epochs from the same seed, trained without lending and
with it, compared bit for bit (a thread count changes how MKL and torch sum, so where the switch lands in an epoch,
which depends on timing, changes the result).
    python benchmarks/bench_lend_core.py [--rounds 8] [--data-dir ../shared/data/mnist10k]
Writes benchmarks/results/lend_core.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from rankprune.config import RunConfig
from rankprune.data import load
from rankprune.measure import matrix_ranks, measure_matrices, recorded_measures
from rankprune.models import get_family

ROOT = Path(__file__).resolve().parents[1]
SCHEDULES = ("none", "waits", "beside", "lend")


class Epochs:
    def __init__(self, data, cfg, seed: int = 0):
        torch.manual_seed(seed)
        self.data, self.cfg = data, cfg
        self.model = get_family("mlp").build(data.input_shape, [784, 784], data.n_classes, seed, torch.device("cpu"))
        self.start = [w.detach().clone() for w in self.model.weights()]
        self.opt = torch.optim.SGD(self.model.parameters(), lr=cfg.train.lr, momentum=cfg.train.momentum,
                                   weight_decay=cfg.train.weight_decay)
        self.measures = recorded_measures(cfg.rank.measure)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="measure")
        self.generator = torch.Generator().manual_seed(seed)

    def _measure(self, weights, grads, one_thread: bool) -> None:
        if one_thread:
            torch.set_num_threads(1)  # this thread's count only (torch's and MKL's are per thread)
        measure_matrices(weights, grads, self.measures, grad_rows=64)
        matrix_ranks([w - s for w, s in zip(weights, self.start)], self.measures)

    def epoch(self, schedule: str) -> float:
        start = time.perf_counter()
        pending, lent = None, None
        if schedule != "none":
            weights = [w.detach().clone() for w in self.model.weights()]
            grads = [None if w.grad is None else w.grad.detach().clone() for w in self.model.weights()]
            if schedule == "waits":
                self._measure(weights, grads, False)
            else:
                pending = self.pool.submit(self._measure, weights, grads, schedule == "lend")
                if schedule == "lend" and torch.get_num_threads() > 1:
                    lent = torch.get_num_threads()
                    torch.set_num_threads(lent - 1)
        train = self.data.train
        order = torch.randperm(len(train), generator=self.generator)
        self.model.train()
        for i in range(0, len(order), 64):
            if lent is not None and pending.done():  # the core back, between two steps
                torch.set_num_threads(lent)
                lent = None
            idx = order[i:i + 64]
            loss = torch.nn.functional.cross_entropy(self.model(train.x[idx]), train.y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        self.model.eval()
        with torch.no_grad():
            self.model(self.data.val.x)
            self.model(self.data.test.x)
        if pending is not None:
            pending.result()
        if lent is not None:
            torch.set_num_threads(lent)
        return time.perf_counter() - start

    def weights(self) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in self.model.parameters()])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/mnist10k"))
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/lend_core.md"))
    args = p.parse_args()
    cfg = RunConfig().replace(data={"dataset": "mnist", "data_dir": args.data_dir, "download": False}).resolved()
    data = load(cfg.data, 0)
    run = Epochs(data, cfg)
    times: dict[str, list[float]] = {s: [] for s in SCHEDULES}
    for r in range(args.rounds + 1):  # the first round warms up and is dropped
        for s in SCHEDULES:
            seconds = run.epoch(s)
            if r:
                times[s].append(seconds)
    med = {s: statistics.median(v) for s, v in times.items()}
    # the same epochs from the same seed: beside twice (the control), and lent
    finals = {}
    for name, schedule in (("beside", "beside"), ("beside again", "beside"), ("lend", "lend"), ("lend again", "lend")):
        twin = Epochs(data, cfg)
        for _ in range(3):
            twin.epoch(schedule)
        finals[name] = twin.weights()

    def differ(a: str, b: str) -> str:
        d = float((finals[a] - finals[b]).abs().max())
        return "identical" if d == 0 else f"differ (largest {d:.2e})"

    lines = ["# Lending the measuring thread a core (MLP 784 x 2, MNIST subset epoch)", "",
             f"Written by `python benchmarks/bench_lend_core.py --rounds {args.rounds}` on "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; medians "
             f"of {args.rounds} rounds, one process, the schedules interleaved. The measurement per epoch: the spectra "
             "and movement decompositions (measure_matrices and matrix_ranks on copies of the weights, gradients and "
             "changes). 'adds': (the epoch - the epoch without measuring) over the epoch.", "",
             "| schedule | epoch (s) | measuring adds |", "|---|---|---|"]
    lines += [f"| {s} | {med[s]:.3f} | {100 * (med[s] - med['none']) / med[s]:.1f}% |" for s in SCHEDULES]
    lines += ["", "Three epochs from one seed, the final weights compared bit for bit:", "",
              f"- beside against beside again: {differ('beside', 'beside again')}",
              f"- lend against lend again: {differ('lend', 'lend again')}",
              f"- lend against beside: {differ('lend', 'beside')}"]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
