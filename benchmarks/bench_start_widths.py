"""Does the convergent rank depend on where the controller starts? Initial widths 128 to 2048, warm and reinit.

    python benchmarks/bench_start_widths.py [--widths 128,256,512,1024,2048] [--seeds 0..2] [--methods warm,reinit]
        [--jobs 2] [--data-dir ../shared/data/mnist10k] [--name start_widths] [-- EXTRA EVOLVE FLAGS]

For every initial width and rebuild method, `rankprune evolve --layers 2 --width W --rebuild M --seeds S` (the
seeds as replicates, one process, OMP_NUM_THREADS=1; `--jobs` such processes at once) on the MNIST subset, defaults
otherwise. Writes benchmarks/results/NAME.md and .csv: each run's chosen widths (censored ones marked), stop
reason and test accuracy, and per method the analysis layer's seed-blocked trend of the chosen total width against
the initial width over the uncensored runs (an exact permutation test; censored runs are listed, not used).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing  # noqa: E402

from rankprune.analysis import holm, trend  # noqa: E402
from rankprune.replicates import parse_seeds  # noqa: E402
from rankprune.units import widths_text  # noqa: E402


def run(width: int, method: str, args, extra: list[str]) -> Path:
    out = Path(args.runs) / f"{method}-w{width}"
    if (out / "replicates.json").is_file() and all((out / f"seed-{s}/depths.json").is_file() for s in parse_seeds(args.seeds)):
        return out  # finished earlier: --runs keeps them, so an interrupted benchmark continues
    cmd = [sys.executable, "-m", "rankprune.cli", "evolve", "--layers", "2", "--width", str(width), "--rebuild", method,
           "--seeds", args.seeds, "--data-dir", args.data_dir, "--no-download", "--out", str(out),
           *(["--resume"] if (out / "replicates.json").is_file() else []), *extra]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="128,256,512,1024,2048")
    p.add_argument("--seeds", default="0..2")
    p.add_argument("--methods", default="warm,reinit")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/mnist10k"))
    p.add_argument("--runs", default=str(ROOT / "runs" / "bench-start-widths"))
    p.add_argument("--name", default="start_widths")
    p.add_argument("extra", nargs="*")
    a = p.parse_args()
    widths = [int(w) for w in a.widths.split(",")]
    methods = a.methods.split(",")
    import time

    import torch

    start = time.perf_counter()
    cases = [(w, m) for w in sorted(widths, reverse=True) for m in methods]  # the long ones first
    with ThreadPoolExecutor(a.jobs) as pool:
        folders = dict(zip(cases, pool.map(lambda c: run(*c, a, a.extra), cases)))
    rows = []
    for (width, method), out in folders.items():
        for seed in parse_seeds(a.seeds):
            d = json.loads((out / f"seed-{seed}/depths.json").read_text())["2"]
            rows.append({"method": method, "initial_width": width, "seed": seed, "widths": d["widths"],
                         "total_width": sum(d["widths"]), "censored": d.get("censored"), "stop": d["stop_reason"],
                         "iterations": d["iterations"], "test_acc": d["test_acc"], "val_acc": d["val_acc"]})
    df = pd.DataFrame(rows).sort_values(["method", "initial_width", "seed"])
    results = ROOT / "benchmarks/results"
    df.to_csv(results / f"{a.name}.csv", index=False)
    lines = [f"# Convergent rank against the initial width\n\n`python {' '.join(sys.argv)}`\n\n",
             f"- date {dt.date.today()}, torch {torch.__version__}, OMP_NUM_THREADS=1 per run, {a.jobs} at once, load "
             f"average {os.getloadavg()[0]:.2f} at the end, {(time.perf_counter() - start) / 60:.0f} min; MNIST subset, "
             f"depth 2, defaults otherwise{' with ' + ' '.join(a.extra) if a.extra else ''}\n\n",
             "| method | initial width | seed | chosen widths | stop | iterations | test acc | val acc |\n"
             "|---|---|---|---|---|---|---|---|\n"]
    for r in df.itertuples():
        shown = widths_text(r.widths, r.censored)
        lines.append(f"| {r.method} | {r.initial_width} | {r.seed} | {shown} | {r.stop} | {r.iterations} | "
                     f"{r.test_acc:.4f} | {r.val_acc:.4f} |\n")
    verdicts = holm([trend(df[df.method == m], "initial_width", "total_width", unit="seed", label="method",
                           claim=f"{m}: the chosen total width changes monotonically with the initial width")
                     for m in methods], family="start width, per rebuild method")
    lines.append("\n## Does the chosen width follow the initial width? (seed-blocked exact Spearman, Holm)\n\n")
    lines += [f"- {v.text()}\n" for v in verdicts]
    lines.append("\n## Spread of the chosen total width over every start (uncensored runs)\n\n")
    from rankprune.analysis import is_censored

    for m in methods:
        g = df[(df.method == m) & ~is_censored(df.censored)]
        if len(g):
            lines.append(f"- {m}: {g.total_width.min()}-{g.total_width.max()} units (first layer "
                         f"{min(w[0] for w in g.widths)}-{max(w[0] for w in g.widths)}), {len(g)} of "
                         f"{int((df.method == m).sum())} runs uncensored\n")
    (results / f"{a.name}.md").write_text("".join(lines))
    print("".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
