"""Warm (function-preserving) against reinit rebuild: accuracy kept, training cost, final widths.

    python benchmarks/bench_rebuild.py [--data-dir ../shared/data/mnist10k] [--seeds 0,1,2]
        [--layers 2..5] [--jobs 1] [--threads 2] [-- EXTRA EVOLVE FLAGS]

Runs `rankprune evolve --rebuild M --seed S` for every method and seed (each its own process, `--jobs`
at once, `--threads` torch threads each), then writes benchmarks/results/rebuild_warm_vs_reinit.md
and rebuild_warm_vs_reinit.csv: per depth and method, mean and spread over seeds of the final test
accuracy, the cumulative training FLOPs and seconds to the chosen iteration, the accuracy right
after each rebuild against before it, and whether the final widths agree.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def run_one(method: str, seed: int, args, extra: list[str]) -> tuple[str, Path]:
    out = Path(args.runs) / f"{method}-seed{seed}"
    cmd = [sys.executable, "-m", "rankprune", "evolve", "--rebuild", method, "--seed", str(seed),
           "--layers", args.layers, "--data-dir", args.data_dir, "--no-download", "--out", str(out), "--overwrite", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return shlex.join(["rankprune", *cmd[3:]]), out


def summarise(runs: list[tuple[str, int, Path]]) -> pd.DataFrame:
    rows = []
    for method, seed, out in runs:
        its = pd.read_json(out / "iterations.jsonl", lines=True)
        depths = json.loads((out / "depths.json").read_text())
        for key, d in depths.items():
            it = its[its.depth == int(key)]
            chosen = it[it.iteration == d["chosen_iteration"]].iloc[0]
            later = it[it.iteration > 0]
            rows.append({
                "method": method, "seed": seed, "depth": int(key), "stop": d["stop_reason"],
                "iterations": d["iterations"], "final_widths": d["widths"], "hidden_units": sum(d["widths"]),
                # per layer None or why the width is a bound (a run from before it was recorded: unknown, None)
                "censored": d.get("censored"),
                "first_test_acc": d["initial_test_acc"], "final_test_acc": d["test_acc"],
                "flops_to_final": chosen.cumulative_flops, "seconds_to_final": chosen.cumulative_seconds,
                "flops_total": d["cumulative_flops"], "seconds_total": d["cumulative_seconds"],
                # mean over rebuilds of (test accuracy right after the rebuild - before it)
                "rebuild_change": (later.test_acc_after_rebuild - later.test_acc_before_rebuild).mean() if len(later) else float("nan"),
                "after_rebuild_min": later.test_acc_after_rebuild.min() if len(later) else float("nan"),
            })
    return pd.DataFrame(rows)


def comparison(df: pd.DataFrame) -> pd.DataFrame:
    agg = df.groupby(["depth", "method"]).agg(
        seeds=("seed", "count"),
        final_test_acc=("final_test_acc", "mean"), final_test_acc_std=("final_test_acc", "std"),
        first_test_acc=("first_test_acc", "mean"),
        hidden_units=("hidden_units", "mean"), hidden_units_std=("hidden_units", "std"),
        gflops_to_final=("flops_to_final", lambda x: x.mean() / 1e9),
        seconds_to_final=("seconds_to_final", "mean"),
        rebuild_change=("rebuild_change", "mean"),
    ).reset_index()
    ratios = []
    for depth, part in agg.groupby("depth"):
        p = part.set_index("method")
        if {"warm", "reinit"} <= set(p.index):
            ratios.append({
                "depth": depth,
                "warm/reinit FLOPs to final": p.loc["warm", "gflops_to_final"] / p.loc["reinit", "gflops_to_final"],
                "warm/reinit seconds to final": p.loc["warm", "seconds_to_final"] / p.loc["reinit", "seconds_to_final"],
                "warm - reinit final test acc (points)": 100 * (p.loc["warm", "final_test_acc"] - p.loc["reinit", "final_test_acc"]),
                "warm - reinit hidden units": p.loc["warm", "hidden_units"] - p.loc["reinit", "hidden_units"],
            })
    return agg, pd.DataFrame(ratios)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/mnist10k"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default="warm,reinit")
    p.add_argument("--layers", default="2..5")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (each its own process)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per run")
    p.add_argument("--runs", default=str(ROOT / "runs" / "bench-rebuild"))
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--no-run", action="store_true", help="only summarise the run folders already under --runs")
    p.add_argument("extra", nargs="*", help="further `rankprune evolve` flags (after --)")
    args = p.parse_args()

    jobs = [(m, int(s)) for m in args.methods.split(",") for s in args.seeds.split(",")]
    if args.no_run:
        done = [(json.loads((Path(args.runs) / f"{m}-seed{s}" / "environment.json").read_text())["command"], Path(args.runs) / f"{m}-seed{s}")
                for m, s in jobs]
        done = [("rankprune " + shlex.join(cmd[1:]), out) for cmd, out in done]
    else:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            done = list(pool.map(lambda job: run_one(*job, args, args.extra), jobs))
    runs = [(m, s, out) for (m, s), (_cmd, out) in zip(jobs, done)]
    df = summarise(runs)
    agg, ratios = comparison(df)

    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    df.to_csv(results / "rebuild_warm_vs_reinit.csv", index=False)
    import torch

    lines = [
        "# Warm (interpolative-decomposition) rebuild against reinit",
        "",
        f"{dt.date.today().isoformat()}; torch {torch.__version__}; {platform.machine()}, {os.cpu_count()} cores; "
        f"{args.jobs} runs at once, {args.threads} threads each (seconds are comparable within this file only).",
        "",
        "Made by:",
        "",
        "    python benchmarks/bench_rebuild.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "",
        "which ran:",
        "",
        *[f"    {cmd}" for cmd, _ in done],
        "",
        "FLOPs and seconds are cumulative training cost up to the chosen iteration of each depth (the one",
        "whose accuracy is reported); rebuild_change is the mean over rebuilds of test accuracy right after",
        "the rebuild minus right before it (the previous iteration at saturation), before any retraining.",
        "",
        "## Per depth and method (mean over seeds)",
        "",
        agg.to_markdown(index=False, floatfmt=".4g"),
        "",
        "## Warm against reinit",
        "",
        ratios.to_markdown(index=False, floatfmt=".3g"),
        "",
        "## Every run",
        "",
        df.to_markdown(index=False, floatfmt=".4g"),
        "",
    ]
    (results / "rebuild_warm_vs_reinit.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
