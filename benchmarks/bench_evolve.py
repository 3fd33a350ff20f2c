"""Run `rankprune evolve --layers 2..5` on the MNIST subset and write its per-iteration table.

    python benchmarks/bench_evolve.py [--data-dir ../shared/data/mnist10k] [--seeds 0] [-- EXTRA EVOLVE FLAGS]

Writes benchmarks/results/evolve_mnist10k.md (per-depth summary and per-iteration table, with the
command) and evolve_mnist10k_iterations.csv. The run folders stay under runs/bench-evolve-seedS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
from pathlib import Path

import pandas as pd
import torch

from rankprune.cli import main as rankprune_main
from rankprune.runfolder import DEPTHS, ITERATIONS, RunFolder, atomic_path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/mnist10k"))
    p.add_argument("--seeds", default="0", help="comma-separated seeds, one full run each")
    p.add_argument("--layers", default="2..5", help="the depths, as rankprune evolve --layers takes them")
    p.add_argument("--results", default=str(ROOT / "benchmarks/results"))
    p.add_argument("--no-run", action="store_true", help="only summarise the finished run folders already there")
    p.add_argument("--name", default="evolve_mnist10k",
                   help="stem of the results files and run folders (evolve_mnist10k; e.g. cnn_mnist10k with -- --model cnn)")
    p.add_argument("extra", nargs="*", help="further `rankprune evolve` flags (after --)")
    args = p.parse_args()

    iterations, depths, commands = [], [], []
    for seed in (int(s) for s in args.seeds.split(",")):
        out = ROOT / "runs" / (f"bench-evolve-seed{seed}" if args.name == "evolve_mnist10k" else f"bench-{args.name}-seed{seed}")
        argv = ["evolve", "--layers", args.layers, "--data-dir", args.data_dir, "--no-download",
                "--seed", str(seed), "--out", str(out), "--overwrite", *args.extra]
        run = RunFolder(out)
        commands.append("rankprune " + shlex.join(argv))
        code = 0 if args.no_run else rankprune_main(argv)
        if code != 0:
            return code
        it = run.table(ITERATIONS)
        it.insert(0, "seed", seed)
        iterations.append(it)
        for d in run.read(DEPTHS).values():
            depths.append({"seed": seed, **d})

    it = pd.concat(iterations, ignore_index=True)
    dp = pd.DataFrame(depths)
    dp["shrink"] = dp["initial_widths"].map(sum) / dp["widths"].map(sum)
    # The fair full-width accuracy: annealed as the chosen network is (a warm run's reference), else iteration 0's.
    if "reference_test_acc" not in dp:
        dp["reference_test_acc"] = None
    dp["full_width_test_acc"] = dp["reference_test_acc"].where(dp["reference_test_acc"].notna(), dp["initial_test_acc"])
    dp["acc_change_points"] = 100 * (dp["test_acc"] - dp["full_width_test_acc"])
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    cols = ["seed", "depth", "iteration", "widths", "parameters", "epochs", "train_acc", "val_acc", "test_acc",
            "cumulative_seconds", "cumulative_flops", "next_widths", "stop"]
    with atomic_path(results / f"{args.name}_iterations.csv") as tmp:
        it[cols].to_csv(tmp, index=False)
    summary_cols = ["seed", "depth", "stop_reason", "iterations", "widths", "shrink", "parameters",
                    "initial_test_acc", "full_width_test_acc", "test_acc", "acc_change_points", "cumulative_seconds"]
    text = [
        f"# `rankprune evolve --layers {args.layers} {' '.join(args.extra)}` on the 10k MNIST subset".replace("  ", " "),
        "",
        f"{dt.date.today().isoformat()}, torch {torch.__version__}, {torch.get_num_threads()} threads. Commands:",
        "",
        *[f"    {c}" for c in commands],
        "",
        "(run through `python benchmarks/bench_evolve.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]) + "`)",
        "",
        "## Per depth: shrink of the total hidden width, and test accuracy first iteration -> chosen",
        "",
        "`initial_test_acc` is iteration 0's own accuracy; `full_width_test_acc` is the full-width network annealed as "
        "the chosen one is (a warm run's reference; iteration 0's own accuracy where every iteration anneals), and "
        "`acc_change_points` compares the chosen network with it.",
        "",
        dp[summary_cols].to_markdown(index=False, floatfmt=".4g"),
        "",
        "## Per iteration",
        "",
        it[cols].to_markdown(index=False, floatfmt=".4g"),
        "",
    ]
    with atomic_path(results / f"{args.name}.md") as tmp:
        tmp.write_text("\n".join(text))
    print(f"wrote {results / f'{args.name}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
