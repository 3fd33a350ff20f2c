"""Compare two `bench_evolve.py` results (e.g. the warm default against reinit), seed by seed and depth by depth.

    python benchmarks/compare_evolve.py benchmarks/results/evolve_warm_mnist10k.md benchmarks/results/evolve_mnist10k.md [--print]
    python benchmarks/compare_evolve.py --rebuild benchmarks/results/rebuild_warm_vs_reinit.csv

Reads each file's "Per depth" table, pairs the rows by (seed, depth), and prints (and appends to the first
file, replacing an earlier comparison, unless --print) the widths, shrink and test accuracy of both, their means
and standard deviations per depth, and paired tests of the differences from rankprune.analysis. `--rebuild`
compares warm against reinit in a `bench_rebuild.py` CSV (final test accuracy and hidden units) and only prints.

The seed is the unit of replication: the depths of one seed share its data split, validation split and seed, so
12 (seed, depth) pairs of 3 seeds are 3 independent differences, not 12. Each seed's differences are averaged
over its depths (the question is whether one method beats the other across depths, and the mean weighs every
depth alike) and the seeds' means are tested with the exact signed-rank test; with 3 seeds the smallest
attainable two-sided p is 0.25. Holm's correction runs over the measures reported together. A (seed, depth)
whose row is censored on either side (a `censored` column, where the table has one) is left out and listed.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import pandas as pd

from rankprune.analysis import Verdict, holm, paired_difference
from rankprune.runfolder import atomic_path

MARK = "## Against "


def per_depth(path: Path) -> pd.DataFrame:
    block = path.read_text().split("## Per depth")[1].split("## Per iteration")[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.splitlines() if line.startswith("|")]
    df = pd.DataFrame(rows[2:], columns=rows[0])
    for col in ("seed", "depth"):
        df[col] = df[col].astype(int)
    for col in ("shrink", "test_acc"):
        df[col] = df[col].astype(float)
    return df


WIDTH_MEASURES = ("hidden_units", "shrink")  # what censoring bounds: a width; an accuracy is measured whatever the width


def paired_tests(long: pd.DataFrame, a: str, b: str, measures: dict[str, str]) -> list[Verdict]:
    """a - b for each measure (column: how to say it), paired by seed over depths, Holm over the measures. Censored
    (seed, depth) pairs are left out of the width measures only: a censored width is a bound, while the accuracy of
    that network is a measurement like any other."""
    verdicts = [paired_difference(long, column, "method", a, b, unit="seed", within=("depth",),
                                  censored="censored" if column in WIDTH_MEASURES else None,
                                  claim=f"{what} differs between {a} and {b}") for column, what in measures.items()]
    return holm(verdicts, f"{', '.join(measures.values())}, {a} against {b}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", type=Path, help="two bench_evolve.py results: a, then b")
    p.add_argument("--print", action="store_true", help="print only; leave the first file as it is")
    p.add_argument("--rebuild", type=Path, help="a bench_rebuild.py CSV: warm against reinit, printed")
    args = p.parse_args()
    if args.rebuild:
        long = pd.read_csv(args.rebuild)
        if "censored" in long:  # a list per row, as CSV text: "[None, 'initial']"
            long["censored"] = long["censored"].map(lambda v: ast.literal_eval(v) if isinstance(v, str) else None)
        verdicts = paired_tests(long, "warm", "reinit", {"final_test_acc": "final test accuracy",
                                                          "hidden_units": "hidden units"})
        print("\n".join(f"- {v.text()}" for v in verdicts))
        return 0
    if len(args.files) != 2:
        p.error("give two bench_evolve.py results, or --rebuild CSV")
    a_path, b_path = args.files
    a, b = per_depth(a_path), per_depth(b_path)
    m = a.merge(b, on=["seed", "depth"], suffixes=("_a", "_b"))
    long = pd.concat([a.assign(method="a"), b.assign(method="b")], ignore_index=True)
    verdicts = paired_tests(long, "a", "b", {"test_acc": "test accuracy", "shrink": "shrink of the total hidden width"})
    by_depth = m.groupby("depth")[["shrink_a", "shrink_b", "test_acc_a", "test_acc_b"]].agg(["mean", "std"])
    by_depth.columns = [f"{c} {s}" for c, s in by_depth.columns]
    lines = [
        f"{MARK}{b_path.name}", "",
        f"`python benchmarks/compare_evolve.py {a_path} {b_path}`: `_a` is this file, `_b` is {b_path.name}, paired by "
        f"(seed, depth), {len(m)} pairs of {m.seed.nunique()} seeds.", "",
        m[["seed", "depth", "widths_a", "shrink_a", "test_acc_a", "widths_b", "shrink_b", "test_acc_b"]].to_markdown(index=False, floatfmt=".4g"),
        "", by_depth.reset_index().to_markdown(index=False, floatfmt=".4g"), "",
        "Paired tests (rankprune.analysis): each seed's a - b averaged over its depths, the seeds' means tested "
        "(the seed is the unit of replication; its depths share its data split):", "",
        *[f"- {v.text()}" for v in verdicts],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.print:
        kept = a_path.read_text().split(MARK)[0].rstrip() + "\n\n"
        with atomic_path(a_path) as tmp:
            tmp.write_text(kept + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
