"""The original notebook's controller, re-created as a baseline, against `rankprune evolve`.

    python benchmarks/bench_original.py [--data-dir ../shared/data/mnist10k] [--layers 2..5] [--jobs 1]

The baseline (not a feature of rankprune; rankprune.baselines.original, which a findings suite also runs as
a [[baseline]]) follows the notebook it grew from: an MLP of width 784 per hidden layer; Adam at 1e-3 with no
weight decay; ReduceLROnPlateau on the test loss; each epoch one pass at batch 64 and one at batch 128 through a
DataLoader; every 3 epochs numpy's matrix_rank of every layer, and "evolve" (rebuild at widths = those ranks,
fresh weights) once test accuracy is at least 0.9 and gained at most 0.01 since the last check;
15 meta-iterations at most. It decides on test accuracy, as the notebook did.

For each depth, `rankprune evolve` runs first with its defaults and its training FLOPs become the budget the
baseline gets (FLOPs, not wall time: comparable and deterministic). Both log (wall seconds, test accuracy,
widths) after every epoch. Writes benchmarks/results/original_vs_rankprune.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def notebook_run(depth: int, data_dir: str, budget_flops: float, seed: int) -> dict:
    """The original controller (rankprune.baselines.original) for one depth, stopped at `budget_flops` training FLOPs,
    on rankprune's split of the same data (it trains on the training split; the validation split goes unused)."""
    from rankprune.baselines import train_original
    from rankprune.config import DataConfig
    from rankprune.data import load
    from rankprune.models import parameter_count

    data = load(DataConfig(dataset="mnist", data_dir=data_dir, download=False), seed)
    log, start = [], time.perf_counter()

    def clock(row: dict) -> None:  # wall seconds from the start, evaluation and SVDs included, as rankprune's Clock
        log.append({"wall_seconds": time.perf_counter() - start, "test_acc": row["test_acc"], "widths": row["widths"]})

    result = train_original(data, depth, seed, budget_flops, on_epoch=clock)
    final = log[-1]
    return {"method": "notebook", "depth": depth, "widths": final["widths"], "meta_iterations": result.meta_iterations,
            "epochs": len(log), "parameters": parameter_count(data.input_shape, final["widths"], data.n_classes),
            "final_test_acc": final["test_acc"], "best_test_acc": max(r["test_acc"] for r in log),
            "wall_seconds": final["wall_seconds"], "training_flops": result.final["cumulative_flops"], "log": log}


def rankprune_run(depth: int, data_dir: str, out: Path, seed: int) -> dict:
    """`rankprune evolve` for one depth with defaults, timing every epoch on the wall clock."""
    from rankprune.config import RunConfig
    from rankprune.data import load
    from rankprune.evolve import NullReporter, evolve
    from rankprune.runfolder import CONFIG, RunFolder

    cfg = RunConfig().replace(data={"data_dir": data_dir, "download": False}, evolve={"layers": (depth,)}, seed=seed).validate()
    data = load(cfg.data, cfg.data_seed)
    run = RunFolder(out)
    run.create(overwrite=True)
    run.write(CONFIG, cfg.to_dict())
    log, start = [], time.perf_counter()

    class Clock(NullReporter):
        def epoch_done(self, depth, iteration, row):
            log.append({"wall_seconds": time.perf_counter() - start, "test_acc": row["test_acc"], "widths": row["widths"]})

    (result,) = evolve(cfg, data, run, Clock())
    s = result.summary
    return {"method": "rankprune", "depth": depth, "widths": s["widths"], "meta_iterations": s["iterations"],
            "epochs": s["epochs"], "parameters": s["parameters"], "final_test_acc": s["test_acc"],
            "best_test_acc": max(r["test_acc"] for r in log), "wall_seconds": time.perf_counter() - start,
            "training_flops": s["cumulative_flops"], "log": log}


def first_time_at(log: list[dict], acc: float) -> float:
    """Wall seconds at the first epoch whose test accuracy reaches `acc` (inf if never)."""
    return next((r["wall_seconds"] for r in log if r["test_acc"] >= acc), float("inf"))


def one_depth(depth: int, args) -> list[dict]:
    """Both controllers for one depth: rankprune first, its training FLOPs are the notebook's budget."""
    ours = rankprune_run(depth, args.data_dir, Path(args.runs) / f"rankprune-depth{depth}", args.seed)
    theirs = notebook_run(depth, args.data_dir, ours["training_flops"], args.seed)
    return [ours, theirs]


def summarise(rows: list[dict], depths) -> tuple[pd.DataFrame, list[dict]]:
    table = []
    for depth in depths:
        ours, theirs = (next(r for r in rows if r["depth"] == depth and r["method"] == m) for m in ("rankprune", "notebook"))
        for a, b in ((ours, theirs), (theirs, ours)):
            table.append({
                "depth": depth, "method": a["method"], "final widths": str(a["widths"]), "parameters": a["parameters"],
                "meta-iterations": a["meta_iterations"], "epochs": a["epochs"], "final test acc": a["final_test_acc"],
                "best test acc": a["best_test_acc"], "wall s": a["wall_seconds"],
                "s to reach the other's best": first_time_at(a["log"], b["best_test_acc"]),
            })
    df = pd.DataFrame(table)
    ratios = []
    for depth in depths:
        part = df[df.depth == depth].set_index("method")
        ratios.append({
            "depth": depth,
            "params notebook / rankprune": part.loc["notebook", "parameters"] / part.loc["rankprune", "parameters"],
            "rankprune s to notebook's best / notebook s to its own best":
                first_time_at(next(r["log"] for r in rows if r["depth"] == depth and r["method"] == "rankprune"),
                              part.loc["notebook", "best test acc"])
                / first_time_at(next(r["log"] for r in rows if r["depth"] == depth and r["method"] == "notebook"),
                                part.loc["notebook", "best test acc"]),
            "notebook s to rankprune's best / rankprune s to its own best":
                first_time_at(next(r["log"] for r in rows if r["depth"] == depth and r["method"] == "notebook"),
                              part.loc["rankprune", "best test acc"])
                / first_time_at(next(r["log"] for r in rows if r["depth"] == depth and r["method"] == "rankprune"),
                                part.loc["rankprune", "best test acc"]),
        })
    return df, ratios


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/mnist10k"))
    p.add_argument("--layers", default="2..5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="depths at once, each its own process")
    p.add_argument("--threads", type=int, default=2, help="torch threads per process")
    p.add_argument("--runs", default=str(ROOT / "runs" / "bench-original"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--depth", type=int, help=argparse.SUPPRESS)  # a child process: one depth, JSON out
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.depth is not None:
        print(json.dumps(one_depth(args.depth, args)))
        return 0

    from rankprune.config import parse_layers

    depths = parse_layers(args.layers)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    procs, rows = [], []
    for depth in depths:  # at most --jobs at once
        while len([q for q in procs if q.poll() is None]) >= args.jobs:
            time.sleep(1)
        cmd = [sys.executable, __file__, *sys.argv[1:], "--depth", str(depth)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    for q in procs:
        out, _ = q.communicate()
        if q.returncode != 0:
            return q.returncode
        rows += json.loads(out.strip().splitlines()[-1])

    df, ratios = summarise(rows, depths)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    lines = [
        "# The original notebook's controller against `rankprune evolve`, same training-FLOPs budget",
        "",
        f"{dt.date.today().isoformat()}; torch {torch.__version__}; {platform.machine()}, {os.cpu_count()} cores; "
        f"{args.jobs} depths at once, {args.threads} threads each. Data: {args.data_dir} (8,000 training and "
        "2,000 test MNIST digits; rankprune holds out 800 of the 8,000 for validation, the notebook trains on all).",
        "",
        "Made by:",
        "",
        "    python benchmarks/bench_original.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "",
        "Per depth, rankprune ran first with its defaults (`rankprune evolve --layers L --data-dir ... --no-download`);",
        "its training FLOPs (3 x forward per sample) are the budget the notebook controller got; wall seconds include",
        "evaluation and SVDs for both.",
        "'s to reach the other's best' is the wall time at the first epoch whose test accuracy reaches the other",
        "method's best (inf: never within the budget).",
        "",
        df.to_markdown(index=False, floatfmt=".4g"),
        "",
        "## Ratios",
        "",
        pd.DataFrame(ratios).to_markdown(index=False, floatfmt=".3g"),
        "",
    ]
    (results / "original_vs_rankprune.md").write_text("\n".join(lines))
    (results / "original_vs_rankprune_logs.json").write_text(json.dumps(rows))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
