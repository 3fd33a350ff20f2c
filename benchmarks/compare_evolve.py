"""Compare two `bench_evolve.py` results (e.g. the warm default against reinit), seed by seed and depth by depth.

    python benchmarks/compare_evolve.py benchmarks/results/evolve_warm_mnist10k.md benchmarks/results/evolve_mnist10k.md

Reads each file's "Per depth" table, pairs the rows by (seed, depth), and prints (and appends to the first
file, replacing an earlier comparison) the widths, shrink and test accuracy of both, their means and
standard deviations per depth, and paired tests of the differences (Wilcoxon signed-rank and paired t).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from scipy.stats import ttest_rel, wilcoxon

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


def main() -> int:
    a_path, b_path = (Path(p) for p in sys.argv[1:3])
    a, b = per_depth(a_path), per_depth(b_path)
    m = a.merge(b, on=["seed", "depth"], suffixes=("_a", "_b"))
    diff_acc, diff_shrink = m["test_acc_a"] - m["test_acc_b"], m["shrink_a"] - m["shrink_b"]
    by_depth = m.groupby("depth")[["shrink_a", "shrink_b", "test_acc_a", "test_acc_b"]].agg(["mean", "std"])
    by_depth.columns = [f"{c} {s}" for c, s in by_depth.columns]
    lines = [
        f"{MARK}{b_path.name}", "",
        f"`python benchmarks/compare_evolve.py {a_path} {b_path}`: `_a` is this file, `_b` is {b_path.name}, paired by "
        f"(seed, depth), {len(m)} pairs.", "",
        m[["seed", "depth", "widths_a", "shrink_a", "test_acc_a", "widths_b", "shrink_b", "test_acc_b"]].to_markdown(index=False, floatfmt=".4g"),
        "", by_depth.reset_index().to_markdown(index=False, floatfmt=".4g"), "",
        f"- test accuracy, a - b: mean {100 * diff_acc.mean():+.2f} points (sd {100 * diff_acc.std():.2f}); Wilcoxon "
        f"p = {wilcoxon(diff_acc).pvalue:.3g}, paired t p = {ttest_rel(m['test_acc_a'], m['test_acc_b']).pvalue:.3g}",
        f"- shrink of the total hidden width, a - b: mean {diff_shrink.mean():+.2f}x (sd {diff_shrink.std():.2f}); Wilcoxon "
        f"p = {wilcoxon(diff_shrink).pvalue:.3g}, paired t p = {ttest_rel(m['shrink_a'], m['shrink_b']).pvalue:.3g}",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    kept = a_path.read_text().split(MARK)[0].rstrip() + "\n\n"
    with atomic_path(a_path) as tmp:
        tmp.write_text(kept + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
