"""Run a grid of `rankprune evolve` settings x seeds as parallel one-thread processes; tabulate what they chose.

    python benchmarks/bench_grid.py GRID [--seeds 0,1,2] [--jobs 2] [--data-dir ../shared/data/mnist10k] [--no-run]

GRID is one of:
  saturate    --saturate accuracy | rank | both, depths 2 and 3 at the default width: which rule gives the most
              consistent convergent widths across seeds for the fewest cumulative FLOPs (issue 10)
  saturate_tasks  the three rules on four tasks of different difficulty at depth 2, width 256
  complexity  issue 10's acceptance: depth 2, width 256, warm, one task-complexity knob at a time (label noise,
              classes, tasks, train fraction at equal steps and per pass, hinge against cross-entropy)

Writes benchmarks/results/grid_GRID.md (per setting: mean and sd over seeds of the total and per-layer chosen
widths, test accuracy, cost; per knob: the trend of total width with the knob, from rankprune.analysis; stop
reasons) and grid_GRID.csv (one row per run). `--from-csv FILE` prints the summary of a CSV made earlier (e.g. the
committed one) and writes nothing. Runs stay under runs/grid-GRID/SETTING-seedS: a finished one is
reused, an interrupted one resumed. Every process gets OMP_NUM_THREADS=1: two multi-threaded processes on the
same cores slow each other 10-25x.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rankprune.analysis import Verdict, holm, is_censored, trend

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Setting:
    name: str  # folder-safe
    flags: tuple[str, ...]
    knobs: tuple[tuple[str, float], ...]  # (knob, its value) for every knob this setting is a point of


def _saturate_grid() -> tuple[tuple[str, ...], list[Setting]]:
    settings = [Setting(f"{rule}-d{d}", ("--saturate", rule, "--layers", str(d)), (("saturate", i),))
                for d in (2, 3) for i, rule in enumerate(("accuracy", "rank", "both"))]
    return (), settings


def _complexity_grid() -> tuple[tuple[str, ...], list[Setting]]:
    base = ("--layers", "2", "--width", "256", "--rebuild", "warm")
    # The default setting is a point of every knob: no noise, 10 classes, 1 task, all the data, cross-entropy.
    default = Setting("default", (), (("label_noise", 0.0), ("classes", 10), ("tasks", 1), ("train_fraction", 1.0),
                                      ("loss_hinge", 0)))
    s = [default]
    s += [Setting(f"noise-{p}", ("--label-noise", str(p)), (("label_noise", p),)) for p in (0.1, 0.25, 0.5)]
    s += [Setting(f"classes-{k}", ("--classes", str(k)), (("classes", k),)) for k in (2, 5)]
    # the tasks as this grid's committed results drew them (before config format 5's augmented sampling)
    s += [Setting(f"tasks-{n}", ("--tasks", str(n), "--task-sampling", "fixed"), (("tasks", n),)) for n in (2, 4, 16)]
    s += [Setting(f"fraction-{f}", ("--train-fraction", str(f)), (("train_fraction", f),)) for f in (0.125, 0.25, 0.5)]
    s += [Setting(f"fraction-{f}-pass", ("--train-fraction", str(f), "--samples-per-epoch", "pass"),
                  (("train_fraction_pass", f),)) for f in (0.125, 0.25, 0.5)]  # at 1, one pass is the default run
    s += [Setting("hinge", ("--loss", "hinge"), (("loss_hinge", 1),))]
    return base, s


CATEGORICAL = {"saturate"}  # knobs whose values are names, not an order: no correlation is computed
def _saturate_tasks_grid() -> tuple[tuple[str, ...], list[Setting]]:
    """The saturation rules on the acceptance grid's setting (depth 2, width 256) for tasks of different
    difficulty: an easy task saturates in accuracy within a few epochs, before weight decay has removed the
    random initialisation's spectrum."""
    base = ("--layers", "2", "--width", "256", "--rebuild", "warm")
    tasks = {"default": (), "classes-2": ("--classes", "2"), "noise-0.25": ("--label-noise", "0.25"),
             "fraction-0.125-pass": ("--train-fraction", "0.125", "--samples-per-epoch", "pass")}
    return base, [Setting(f"{task}-{rule}", (*flags, "--saturate", rule), (("saturate", i),))
                  for task, flags in tasks.items() for i, rule in enumerate(("accuracy", "rank", "both"))]


GRIDS = {"saturate": _saturate_grid, "complexity": _complexity_grid, "saturate_tasks": _saturate_tasks_grid}


def _run(argv: list[str], log: Path) -> tuple[int, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    with log.open("a") as f:
        code = subprocess.call([sys.executable, "-m", "rankprune", *argv], stdout=f, stderr=subprocess.STDOUT, env=env)
    return code, time.perf_counter() - start


def _state(out: Path) -> str | None:
    try:
        return json.loads((out / "status.json").read_text())["state"]
    except (OSError, ValueError, KeyError):
        return None


def _result_row(out: Path) -> list[dict]:
    """One row per depth of a finished run: its depths.json entry and the result iteration's own columns."""
    depths = json.loads((out / "depths.json").read_text())
    iterations = [json.loads(line) for line in (out / "iterations.jsonl").read_text().splitlines() if line.strip()]
    rows = []
    for d in depths.values():
        mine = [r for r in iterations if r["depth"] == d["depth"]]
        result = next(r for r in mine if r["iteration"] == d["chosen_iteration"])
        shrink = [r for r in mine if r.get("phase", "shrink") == "shrink"]
        rows.append({
            "depth": d["depth"], "widths": d["widths"], "total_width": sum(d["widths"]),
            "initial_total": sum(d["initial_widths"]), "test_acc": d["test_acc"], "val_acc": d["val_acc"],
            "train_acc": d["train_acc"], "reference_test_acc": d.get("reference_test_acc"),
            "test_acc_unseen_tasks": result.get("test_acc_unseen_tasks"),
            "train_acc_relabelled": result.get("train_acc_relabelled"), "train_acc_clean": result.get("train_acc_clean"),
            "n_delta_fraction": result.get("n_delta_fraction"),
            "stop_reason": d["stop_reason"], "iterations": d["iterations"], "epochs": d["epochs"],
            # per layer None, "initial" or "input": a width at its bound (runs from before it was recorded: none)
            "censored": d.get("censored", [None] * len(d["widths"])),
            "cumulative_flops": d["cumulative_flops"], "cumulative_seconds": d["cumulative_seconds"],
            # What the old rule (max_drop alone) would have done on the same history: the first shrink
            # iteration more than max_drop below the best before it, if any.
            "old_rule_drop_at": _old_rule_drop(shrink),
        })
    return rows


def _old_rule_drop(shrink: list[dict], max_drop: float = 0.015) -> int | None:
    best = -1.0
    for r in shrink:
        acc = r.get("decision_acc", r["val_acc"])
        if best >= 0 and acc < best - max_drop:
            return r["iteration"]
        best = max(best, acc)
    return None


def _ms(values) -> str:
    v = pd.Series(values, dtype=float).dropna()
    if v.empty:
        return "—"
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v.mean():.1f}"


def _pct(values) -> str:
    v = pd.Series(values, dtype=float).dropna() * 100
    if v.empty:
        return "—"
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f}"


def _layers(frame: pd.DataFrame) -> str:
    widths = np.array(frame["widths"].tolist(), dtype=float)
    return "[" + ", ".join(f"{m:.1f} ± {s:.1f}" for m, s in zip(widths.mean(0), widths.std(0, ddof=1) if len(widths) > 1 else 0 * widths.mean(0))) + "]"


def read_csv(path: Path) -> pd.DataFrame:
    """A grid CSV as summarise takes it. A CSV from before censoring was recorded gets it derived: a layer is
    censored ("initial") where its chosen width is its initial one, every layer starting at initial_total / depth
    (true of every grid here: one --width for all layers); the input bound (784 on MNIST) is above every width."""
    df = pd.read_csv(path)
    df["widths"] = df["widths"].map(json.loads)
    if "censored" in df:
        df["censored"] = df["censored"].map(ast.literal_eval)  # written as Python lists: [None, 'initial']
    else:
        df["censored"] = [["initial" if w >= r.initial_total / r.depth else None for w in r.widths]
                          for r in df.itertuples()]
        print(f"{path}: no censored column; derived from widths and initial_total", file=sys.stderr)
    return df


def knob_trends(df: pd.DataFrame, settings: list[Setting]) -> list[tuple[str, list[float], Verdict]]:
    """Per ordered knob: the values tested (of uncensored runs) and the analysis verdict on total width against it
    (seed-stratified exact permutation Spearman, censored runs out), Holm-adjusted over the knobs."""
    knobs = sorted({k for s in settings for k, _ in s.knobs if k not in CATEGORICAL})
    found = []
    for k in knobs:
        values = {s.name: dict(s.knobs)[k] for s in settings if k in dict(s.knobs)}
        if k == "train_fraction_pass" and 1.0 not in values.values():
            values["default"] = 1.0  # the fraction-1 pass run is the default run: an epoch is one pass there
        runs = df[df.setting.isin(values)].assign(**{k: lambda t: t.setting.map(values)})
        if runs[k].nunique() < 2:
            continue
        tested = runs[~is_censored(runs.censored)] if "censored" in runs else runs
        found.append((k, sorted(tested[k].unique()), trend(runs, k, "total_width", unit="seed", label="setting")))
    adjusted = holm([v for _, _, v in found], "the knobs of this grid")
    return [(k, values, v) for (k, values, _), v in zip(found, adjusted)]


def summarise(df: pd.DataFrame, settings: list[Setting]) -> list[str]:
    lines = ["## Per setting (mean ± sd over seeds)", "",
             "| setting | depth | runs | total width | sd / mean | widths per layer | test acc % | cumulative GFLOPs | cumulative s | epochs |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in settings:
        for depth, g in df[df.setting == s.name].groupby("depth"):
            cv = f"{100 * g.total_width.std(ddof=1) / g.total_width.mean():.1f}%" if len(g) > 1 else "—"
            lines.append(f"| {s.name} | {depth} | {len(g)} | {_ms(g.total_width)} | {cv} | {_layers(g)} | {_pct(g.test_acc)} | "
                         f"{_ms(g.cumulative_flops / 1e9)} | {_ms(g.cumulative_seconds)} | {_ms(g.epochs)} |")
    extra = [c for c in ("test_acc_unseen_tasks", "train_acc_relabelled", "train_acc_clean", "n_delta_fraction")
             if c in df and df[c].notna().any()]
    if extra:
        lines += ["", "## Task-specific columns (mean ± sd, %)", "", "| setting | " + " | ".join(extra) + " |",
                  "|---" * (len(extra) + 1) + "|"]
        for s in settings:
            g = df[df.setting == s.name]
            if any(g[c].notna().any() for c in extra):
                lines.append(f"| {s.name} | " + " | ".join(_pct(g[c]) for c in extra) + " |")
    verdicts = knob_trends(df, settings)
    if verdicts:
        lines += ["", "## Total width against each knob", "",
                  "Each knob's runs are its settings' and the default's (its baseline, shared by every knob). The seed "
                  "is the unit of replication: Spearman's rho between the knob and the total width is computed within "
                  "each seed and averaged, and its p-value is an exact permutation test permuting the knob's values "
                  "within each seed (runs that share a seed share its data split and initial draw: they are a block, "
                  "not independent points). Each knob's test is its own; Holm's correction runs over the knobs, which "
                  "allows for the dependence the shared baseline creates. Censored runs (a layer's width at its "
                  "initial value or its input bound: a bound, not a measured rank) are left out and listed. With 3 "
                  "seeds no bootstrap interval can be had; `smallest p` is the most extreme outcome this design allows.",
                  "", "| knob | values | seeds | mean within-seed rho | p (exact) | Holm p | smallest p | left out (censored) |",
                  "|---|---|---|---|---|---|---|---|"]
        for k, values, v in verdicts:
            p = "—" if np.isnan(v.p_value) else f"{v.p_value:.2g}"
            holm_p = "—" if v.p_adjusted is None else f"{v.p_adjusted:.2g}"
            floor = "—" if np.isnan(v.p_floor) else f"{v.p_floor:.2g}"
            lines.append(f"| {k} | {', '.join(f'{x:g}' for x in values)} | {v.n} | {v.effect.estimate:+.3f} | {p} | "
                         f"{holm_p} | {floor} | {', '.join(v.excluded) or 'none'} |")
    if "censored" in df:
        bound = df[is_censored(df.censored)]
        lines += ["", f"Censored runs (a layer's chosen width is its initial width or its input bound; left out of "
                      f"every trend): {len(bound)} of {len(df)}"
                  + (": " + ", ".join(f"{r.setting} seed {r.seed}" for r in bound.itertuples()) if len(bound) else "") + "."]
    lines += ["", "## How each depth stopped", "", "| stop | runs |", "|---|---|"]
    for reason, n in df.stop_reason.value_counts().items():
        lines.append(f"| {reason} | {n} |")
    fired = df.old_rule_drop_at.notna().sum()
    lines += ["", f"The old accuracy-drop rule (more than 1.5 points below the best shrink iteration, whatever the "
                  f"validation split's size) would have fired in {fired} of {len(df)} depths on these same histories; "
                  f"`accuracy-drop` fired in {(df.stop_reason == 'accuracy-drop').sum()} under the runs' own rule (1.5 "
                  f"points and significant: McNemar's exact test on the shared validation images, one-sided, at "
                  f"the level of --drop-z 2, for config format 4; two standard errors of unpaired accuracies "
                  f"before)."]
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("grid", choices=sorted(GRIDS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--jobs", type=int, default=2, help="processes at once, one thread each (2)")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/mnist10k"))
    p.add_argument("--results", default=str(ROOT / "benchmarks/results"))
    p.add_argument("--no-run", action="store_true", help="only summarise the finished run folders already there")
    p.add_argument("--only", help="comma-separated setting names to run (default: all)")
    p.add_argument("--from-csv", help="print the summary of this grid's CSV made earlier (runs nothing, writes nothing)")
    args = p.parse_args()

    base, settings = GRIDS[args.grid]()
    if args.from_csv:
        print("\n".join(summarise(read_csv(Path(args.from_csv)), settings)))
        return 0
    if args.only:
        settings = [s for s in settings if s.name in args.only.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    folder = ROOT / "runs" / f"grid-{args.grid}"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = []
    for s in settings:
        for seed in seeds:
            out = folder / f"{s.name}-seed{seed}"
            argv = ["evolve", *base, *s.flags, "--data-dir", args.data_dir, "--no-download", "--seed", str(seed),
                    "--out", str(out)]
            jobs.append((s, seed, out, argv))

    started = time.perf_counter()
    if not args.no_run:
        def one(job):
            s, seed, out, argv = job
            state = _state(out)
            if state == "finished":
                return 0, 0.0
            code, seconds = _run(argv + (["--resume"] if state else []), folder / f"{s.name}-seed{seed}.log")
            print(f"{s.name} seed {seed}: exit {code} after {seconds:.0f} s", flush=True)
            return code, seconds

        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(one, jobs))
        if any(code != 0 for code, _ in results):
            print("some runs failed; see their .log files under", folder, file=sys.stderr)
    wall = time.perf_counter() - started
    wall_file = folder / "wall.json"  # the grid's wall time, kept for a later --no-run summary
    if not args.no_run:
        wall_file.write_text(json.dumps({"wall_s": wall, "jobs": args.jobs, "cores": os.cpu_count()}))
    timing = json.loads(wall_file.read_text()) if wall_file.is_file() else None

    rows = []
    for s, seed, out, argv in jobs:
        if _state(out) != "finished":
            continue
        for r in _result_row(out):
            rows.append({"setting": s.name, "seed": seed, **r})
    if not rows:
        print("no finished runs", file=sys.stderr)
        return 1
    df = pd.DataFrame(rows)
    results = Path(args.results)
    df.to_csv(results / f"grid_{args.grid}.csv", index=False)
    lines = [f"# Grid `{args.grid}`: chosen widths per setting", "",
             f"Written {dt.date.today()} by `python benchmarks/bench_grid.py {' '.join(a for a in sys.argv[1:] if a != '--no-run')}` on "
             f"{platform.processor() or platform.machine()}"
             + (f"; the grid took {timing['wall_s'] / 60:.1f} min of wall time on {timing['cores']} cores, "
                f"{timing['jobs']} one-thread processes at once" if timing else "") + ".",
             "", f"Every run: `rankprune {shlex.join(['evolve', *base])} SETTING --data-dir DATA --no-download --seed S`; "
             "widths are the chosen (result) iteration's hidden widths; test accuracy is that network's. Cumulative "
             "seconds were measured with other runs beside them and are indicative; FLOPs are exact.", "",
             "| setting | flags |", "|---|---|", *[f"| {s.name} | `{shlex.join(s.flags) or '(defaults)'}` |" for s in settings], ""]
    lines += summarise(df, settings)
    (results / f"grid_{args.grid}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
