"""What a spectrum costs on this CPU: the ways to get every singular value of a 784 x 784 weight and of a
4,096 x 784 activation matrix, timed in one process (medians of 7 after a warm-up, milliseconds).

    python benchmarks/bench_svd_options.py [--out benchmarks/results/svd_options.md]

Decided rankprune.measure's choices: float32 SVD of weights, float64 Gram eigenvalues of activations, and
no thread pool (two SVDs at once are not faster than one after another here).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def ms(f, repeats: int = 7) -> float:
    f()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/svd_options.md"))
    args = p.parse_args()
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    weights = [torch.randn(784, 784) / 28 for _ in range(4)]
    rows = []
    for dtype in (torch.float64, torch.float32):
        w = [m.to(dtype) for m in weights]
        name = str(dtype).removeprefix("torch.")
        rows.append((f"svdvals, one 784 x 784, {name}", ms(lambda: torch.linalg.svdvals(w[0]))))
        rows.append((f"svdvals, four 784 x 784 one after another, {name}", ms(lambda: [torch.linalg.svdvals(m) for m in w])))
        rows.append((f"svdvals, four 784 x 784 batched, {name}", ms(lambda: torch.linalg.svdvals(torch.stack(w)))))
        with cf.ThreadPoolExecutor(2) as pool:
            torch.set_num_threads(1)
            rows.append((f"svdvals, four 784 x 784 on 2 threads (1 torch thread each), {name}",
                         ms(lambda: list(pool.map(torch.linalg.svdvals, w)))))
            torch.set_num_threads(threads)
        rows.append((f"Gram eigvalsh, one 784 x 784, {name}", ms(lambda: torch.linalg.eigvalsh(w[0] @ w[0].T))))
        rows.append((f"numpy svd (values only), one 784 x 784, {name}", ms(lambda: np.linalg.svd(w[0].numpy(), compute_uv=False))))
    activations = torch.relu(torch.randn(4096, 784))
    for dtype in (torch.float64, torch.float32):
        a = activations.to(dtype)
        name = str(dtype).removeprefix("torch.")
        rows.append((f"svdvals, 4096 x 784 activations, {name}", ms(lambda: torch.linalg.svdvals(a), 3)))
        rows.append((f"Gram eigvalsh, 4096 x 784 activations, {name}", ms(lambda: torch.linalg.eigvalsh(a.T @ a), 3)))
    lines = ["# Spectrum costs on this CPU", "",
             f"`python {' '.join(sys.argv)}`; torch {torch.__version__}, {threads} threads, "
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. Medians, milliseconds.", "",
             "| what | ms |", "|---|---|", *(f"| {what} | {t:.1f} |" for what, t in rows), ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
