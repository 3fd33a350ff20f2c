"""Does the controller converge the same way on every dataset? Widths per iteration, with every stop rule off.

    python benchmarks/bench_convergence.py [--iterations 20] [--seeds 0..2] [--data-dir ../shared/data/mnist10k]
                                           [--rebuild warm|reinit] [--name convergence] [-- EXTRA CLI EVOLVE FLAGS]

Runs the warm (or `--rebuild reinit`) controller for --iterations shrink iterations with the stop rules switched
off (`--width-tol 0`, `--max-drop 1`: neither a fixed point within tolerance nor an accuracy drop ends a depth
early; an exact fixed point still does), depth 2, on three datasets, 3 seeds each, as replicates:

- digits (scikit-learn's 8x8 images), width 128, as the README's quick start;
- the MNIST subset, width 256;
- scikit-learn's breast cancer table (569 x 30, two classes; standardised), width 64, through the Python API.

Writes, per dataset and seed, the total hidden width and validation / test accuracy at every iteration
(`benchmarks/results/NAME.csv`), and a Markdown summary (`NAME.md`): for each run, the iteration at which the
width first changes by at most 1, 2 and 5% per iteration thereafter, and the accuracy against the iteration-0
network, so that one can see whether widths reach a fixed point, drift without end, or collapse.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing  # noqa: E402

from rankprune.runfolder import ITERATIONS, RunFolder  # noqa: E402

FREE = ["--width-tol", "0", "--max-drop", "1", "--layers", "2"]


def evolve(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "rankprune.cli", "evolve", *args], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"rankprune evolve {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")


def breast_cancer(out: Path, seeds: list[int], iterations: int, rebuild: str) -> None:
    """The third dataset through the API (it has no --dataset): a seeded 60/20/20 split, standardised."""
    import numpy as np
    import torch
    from sklearn.datasets import load_breast_cancer

    import rankprune as rp

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    perm = np.random.default_rng(0).permutation(len(y))
    x, y = torch.tensor(x[perm], dtype=torch.float32), torch.tensor(y[perm])
    a, b = int(0.6 * len(y)), int(0.8 * len(y))
    cfg = rp.RunConfig().replace(model={"width": 64}, evolve={"layers": (2,), "max_iterations": iterations,
                                                              "width_tol": 0.0, "max_drop": 1.0, "rebuild": rebuild})
    for seed in seeds:
        rp.run_tensors(cfg.replace(seed=seed), train=(x[:a], y[:a]), val=(x[a:b], y[a:b]), test=(x[b:], y[b:]),
                       out=out / f"seed-{seed}", progress=False)


def settle(totals: list[int], fraction: float) -> int | None:
    """The first iteration after which every step changes the total width by at most `fraction` of it."""
    for i in range(len(totals)):
        if all(abs(totals[j] - totals[j + 1]) <= fraction * totals[j] for j in range(i, len(totals) - 1)):
            return i
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--seeds", default="0..2")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/mnist10k"))
    p.add_argument("--name", default="convergence")
    # an option of the script, not an extra flag: the API-run dataset must get it too
    p.add_argument("--rebuild", choices=("warm", "reinit"), default="warm")
    p.add_argument("extra", nargs="*")
    a = p.parse_args()
    from rankprune.replicates import parse_seeds

    seeds = parse_seeds(a.seeds)
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cli = {"digits": ["--dataset", "digits", "--width", "128"],
               "mnist-subset": ["--dataset", "mnist", "--width", "256", "--data-dir", a.data_dir, "--no-download"]}
        for name, flags in cli.items():
            evolve([*flags, *FREE, "--max-iterations", str(a.iterations), "--rebuild", a.rebuild, "--seeds", a.seeds,
                    "--out", str(tmp / name), *a.extra])
        breast_cancer(tmp / "breast-cancer", seeds, a.iterations, a.rebuild)  # the extra flags reach the CLI runs only
        for name in (*cli, "breast-cancer"):
            for seed in seeds:
                for r in RunFolder(tmp / name / f"seed-{seed}").rows(ITERATIONS):
                    rows.append({"dataset": name, "seed": seed, "iteration": r["iteration"], "phase": r["phase"],
                                 "widths": r["widths"], "total_width": sum(r["widths"]), "next_widths": r["next_widths"],
                                 "val_acc": r["val_acc"], "test_acc": r["test_acc"], "stop": r["stop"]})
    import pandas as pd

    df = pd.DataFrame(rows)
    out = ROOT / "benchmarks/results"
    df.to_csv(out / f"{a.name}.csv", index=False)
    lines = [f"# Convergence across datasets\n\n`python {' '.join(sys.argv)}`\n\n",
             f"- date {dt.date.today()}, torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
             f"{os.getloadavg()[0]:.2f}; depth 2, {a.rebuild} rebuild, `{' '.join(FREE)} --max-iterations {a.iterations}`\n\n",
             "| dataset | seed | total width per shrink iteration | settles within 1% / 2% / 5% from iteration | "
             "val acc: iteration 0 -> last | test acc: iteration 0 -> last |\n|---|---|---|---|---|---|\n"]
    for (name, seed), g in df[df.phase == "shrink"].groupby(["dataset", "seed"], sort=False):
        totals = [*g.total_width, sum(g.next_widths.iloc[-1])]
        lines.append(f"| {name} | {seed} | {', '.join(map(str, totals))} | "
                     f"{' / '.join(str(settle(totals, f)) for f in (0.01, 0.02, 0.05))} | "
                     f"{g.val_acc.iloc[0]:.4f} -> {g.val_acc.iloc[-1]:.4f} | {g.test_acc.iloc[0]:.4f} -> {g.test_acc.iloc[-1]:.4f} |\n")
    (out / f"{a.name}.md").write_text("".join(lines))
    print("".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
