"""Trials per hour with 1, 2 and 4 `rankprune worker` processes on one machine (OMP_NUM_THREADS=1 each), on one
storage and one artifact root, as a cluster's workers run.

    python benchmarks/bench_workers.py [--workers 1,2,4] [--storage journal|sqlite] [--data-dir ../shared/data/mnist10k]
                                       [--out benchmarks/results/workers.md]

Each worker count runs the same grid study from scratch (a fresh storage and root): the MNIST subset, depth 1,
widths 32, 64, 128 and 256, seeds 0-3 (16 cells, at most 2 shrink iterations each), `--batch 1`. The figure is the
16 trials over the wall time from the first worker's start to the last one's exit (process start-up, data loading
and the storage's own work included), per hour; the ratio is to one worker, all measured in this one run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
STUDY = """[study]
name = "workers"
mode = "survey"
sampler = "grid"
n_trials = 16

[base.data]
dataset = "mnist"
data_dir = "{data_dir}"
download = false

[base.evolve]
max_iterations = 2

[space]
depth = 1
width = {{ choices = [32, 64, 128, 256] }}
seed = {{ choices = [0, 1, 2, 3] }}
"""


def run(n: int, storage_kind: str, data_dir: str, tmp: Path) -> tuple[float, int]:
    folder = tmp / f"{n}-workers"
    folder.mkdir()
    (folder / "study.toml").write_text(STUDY.format(data_dir=data_dir))
    url = f"journal:{folder / 'studies.log'}" if storage_kind == "journal" else f"sqlite:///{folder / 'studies.sqlite3'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "rankprune.cli", "worker", "--storage", url, "--study", str(folder / "study.toml"),
            "--artifacts", str(folder / "artifacts")]
    start = time.perf_counter()
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a worker failed: {err.strip().splitlines()[-1] if err.strip() else p.returncode}")
    wall = time.perf_counter() - start
    from rankprune.study import open_storage

    trials = optuna.load_study(study_name="workers", storage=open_storage(url)).get_trials(
        states=(optuna.trial.TrialState.COMPLETE,))
    return wall, len(trials)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--storage", choices=("journal", "sqlite"), default="journal")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/mnist10k"))
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/workers.md"))
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(w) for w in args.workers.split(",")):
            wall, complete = run(n, args.storage, args.data_dir, Path(tmp))
            rows.append((n, wall, complete, 3600 * complete / wall))
            print(f"{n} worker(s): {complete} trials in {wall:.1f} s = {3600 * complete / wall:.0f} trials/hour", flush=True)
    base = rows[0][3]
    lines = ["# Trials per hour with several workers on this machine", "",
             f"`python {' '.join(sys.argv)}`; {platform.machine()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS=1 per worker, "
             f"{args.storage} storage, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. A 16-cell grid study "
             "(MNIST subset, depth 1, widths 32-256, seeds 0-3, at most 2 shrink iterations) from scratch per row; "
             "wall time from the first worker's start to the last one's exit.", "",
             "| workers | trials complete | wall (s) | trials per hour | ratio to 1 worker |", "|---|---|---|---|---|"]
    lines += [f"| {n} | {c} | {w:.1f} | {t:.0f} | {t / base:.2f}x |" for n, w, c, t in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
