"""Training dynamics, measured (issue 11's acceptance): lazy versus feature learning, weight movement and the
Hessian on MNIST, and the jamming transition under the hinge loss.

    python benchmarks/bench_dynamics.py PART [--seeds 0,1,2] [--jobs 2] [--data-dir ../shared/data/mnist10k] [--no-run]

PART is one of:
  lazy     regression:middle, depth 1, one iteration of reinit training (no shrinking), no weight decay, lr 0.01, --movement:
           widths 10, 100, 1000 at alpha off, and width 100 at alpha 1, 100, 1000
  mnist    the MNIST subset, depth 2, width 256, warm rebuild, --movement --hessian-top 20: per iteration
  jamming  the hinge loss at depth 2, parameter-matched (--params 1e3 .. 1e5), one reinit iteration, no shrinking:
           train loss against N_Delta / N per epoch, and where N_Delta / N crosses 1

Writes benchmarks/results/dynamics_PART.md (and .csv, and a figure for jamming). Runs stay under
runs/dynamics-PART/NAME-seedS and are reused when finished; every process runs with OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_grid import _run, _state  # noqa: E402  the same one-thread process runner

from rankprune.analysis import holm, trend  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _lazy() -> list[tuple[str, list[str], dict]]:
    # lr 0.01: at the default 0.05 the width-1000 network does not fit (test R^2 below 0); one rate for all
    base = ["--dataset", "regression:middle", "--layers", "1", "--max-iterations", "1", "--rebuild", "reinit",
            "--weight-decay", "0", "--lr", "0.01", "--movement"]
    runs = [(f"width-{w}", [*base, "--width", str(w)], {"width": w, "alpha": None}) for w in (10, 100, 1000)]
    runs += [(f"width-100-alpha-{a}", [*base, "--width", "100", "--alpha", str(a)], {"width": 100, "alpha": a})
             for a in (1, 100, 1000)]
    return runs


def _mnist(data_dir: str) -> list[tuple[str, list[str], dict]]:
    # Width 256 (issue 10's acceptance width), not the default 784: a Lanczos step at 784 is a double backward
    # through 1.2M parameters, and 20 eigenvalues per iteration took minutes each on 2 CPU cores.
    return [("depth-2", ["--layers", "2", "--width", "256", "--movement", "--hessian-top", "20", "--data-dir", data_dir,
                         "--no-download"], {})]


PARAMS = (1_000, 3_000, 10_000, 30_000, 100_000)


def _jamming(data_dir: str) -> list[tuple[str, list[str], dict]]:
    base = ["--layers", "2", "--loss", "hinge", "--max-iterations", "1", "--rebuild", "reinit",
            "--data-dir", data_dir, "--no-download"]
    return [(f"params-{p}", [*base, "--params", str(p)], {"params": p}) for p in PARAMS]


def _rows(out: Path, table: str) -> list[dict]:
    return [json.loads(line) for line in (out / table).read_text().splitlines() if line.strip()]


def _ms(values) -> str:
    v = pd.Series(values, dtype=float).dropna()
    return "—" if v.empty else (f"{v.mean():.4g} ± {v.std(ddof=1):.2g}" if len(v) > 1 else f"{v.mean():.4g}")


def lazy_summary(runs: list[tuple[str, int, Path, dict]]) -> list[str]:
    rows = []
    for name, seed, out, meta in runs:
        it = _rows(out, "iterations.jsonl")[0]
        rows.append({"run": name, "seed": seed, **meta, "movement_hidden": it["movement"][0], "movement_output": it["movement"][1],
                     "movement_network": it["movement_network"], "test_r2": it["test_acc"], "train_loss": it["train_loss"],
                     "activation_rank": (it.get("activation_rank_numerical:0.02") or [None])[0],
                     "change_rank_hidden": (it.get("change_rank_numerical:0.02") or [None])[0], "epochs": it["epochs"]})
    df = pd.DataFrame(rows)
    lines = ["| run | width | alpha | relative movement, hidden layer | output layer | whole network | rank `numerical:0.02` of the change (hidden) | activation rank `numerical:0.02` | test R^2 | train loss | epochs |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, g in df.groupby("run", sort=False):
        lines.append(f"| {name} | {g.width.iloc[0]} | {g.alpha.iloc[0] if pd.notna(g.alpha.iloc[0]) else 'off'} | "
                     f"{_ms(g.movement_hidden)} | {_ms(g.movement_output)} | {_ms(g.movement_network)} | "
                     f"{_ms(g.change_rank_hidden)} | {_ms(g.activation_rank)} | {_ms(g.test_r2)} | {_ms(g.train_loss)} | {_ms(g.epochs)} |")
    return lines + ["", *movement_trends(df)], df


def movement_trends(df: pd.DataFrame) -> list[str]:
    """Whole-network movement against width (alpha off) and against alpha (width 100), from rankprune.analysis:
    Spearman's rho within each seed, averaged; p from an exact permutation of the setting within each seed (every
    seed ran every setting: its runs are a block); Holm over the two, which are reported together. Movement is
    not a width, so nothing here is censored."""
    verdicts = holm([trend(df[df.alpha.isna()], "width", "movement_network", unit="seed", censored=None),
                     trend(df[df.alpha.notna()], "alpha", "movement_network", unit="seed", censored=None)],
                    "movement against width and against alpha")
    return [f"- {v.text()}" for v in verdicts]


def mnist_summary(runs) -> tuple[list[str], pd.DataFrame]:
    rows = []
    for name, seed, out, meta in runs:
        for it in _rows(out, "iterations.jsonl"):
            top = it.get("hessian_top") or []
            rows.append({"seed": seed, "iteration": it["iteration"], "phase": it.get("phase"), "widths": it["widths"],
                         "movement": it.get("movement"), "change_rank": it.get("change_rank_numerical:0.02"),
                         "movement_network": it.get("movement_network"), "hessian_top": top,
                         "test_acc": it["test_acc"], "epochs": it["epochs"]})
    df = pd.DataFrame(rows)
    fmt = lambda v: "[" + ", ".join(f"{x:.3g}" for x in v) + "]" if isinstance(v, list) else "—"  # noqa: E731
    lines = ["| seed | iteration | phase | widths | relative movement per layer | rank of the change per layer | "
             "whole network | top 3 of 20 Hessian eigenvalues | 20th | test acc % | epochs |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in df.itertuples():
        lines.append(f"| {r.seed} | {r.iteration} | {r.phase} | {r.widths} | {fmt(r.movement)} | {r.change_rank} | "
                     f"{r.movement_network:.3g} | {fmt(r.hessian_top[:3])} | {r.hessian_top[-1]:.3g} | "
                     f"{100 * r.test_acc:.2f} | {r.epochs} |")
    return lines, df


def jamming_summary(runs, results: Path) -> tuple[list[str], pd.DataFrame]:
    from rankprune import figures, figures_dynamics

    rows, epochs = [], []
    for name, seed, out, meta in runs:
        it = _rows(out, "iterations.jsonl")[0]
        params = it["parameters"]
        rows.append({"params_requested": meta["params"], "seed": seed, "parameters": params, "widths": it["widths"],
                     "n_delta": it["n_delta"], "n_delta_per_parameter": it["n_delta_per_parameter"],
                     "n_delta_fraction": it["n_delta_fraction"], "train_loss": it["train_loss"], "test_acc": it["test_acc"]})
        for e in _rows(out, "epochs.jsonl"):
            if e["iteration"] == 0:
                epochs.append({"params_requested": meta["params"], "seed": seed, "epoch": e["epoch"],
                               "x": e["n_delta"] / params, "train_loss": e["train_loss"]})
    df, ep = pd.DataFrame(rows), pd.DataFrame(epochs)
    lines = ["| --params | parameters | widths | N_Delta | N_Delta / N | N_Delta / samples | train loss (hinge) | test acc % |",
             "|---|---|---|---|---|---|---|---|"]
    for p, g in df.groupby("params_requested"):
        lines.append(f"| {p:,} | {_ms(g.parameters)} | {g.widths.iloc[0]} | {_ms(g.n_delta)} | {_ms(g.n_delta_per_parameter)} | "
                     f"{_ms(g.n_delta_fraction)} | {_ms(g.train_loss)} | {_ms(100 * g.test_acc)} |")
    means = df.groupby("params_requested")["n_delta_per_parameter"].mean()
    crossing = next(((a, b) for a, b in zip(means.index[:-1], means.index[1:]) if means[a] >= 1 > means[b]), None)
    lines += ["", ("N_Delta / N (the mean over seeds) crosses 1 between --params {:,} and {:,}.".format(*crossing)
                   if crossing else f"N_Delta / N does not cross 1 in this range: {', '.join(f'{v:.3g}' for v in means)}.")]
    ep["run"] = ep["params_requested"].astype(str) + "-" + ep["seed"].astype(str)
    ep["label"] = ep["params_requested"].map(lambda p: f"{p:,}")
    fig = figures_dynamics.jamming(ep)
    figures.save(fig, results / "dynamics_jamming.png")
    return lines, df


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("lazy", "mnist", "jamming"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/mnist10k"))
    p.add_argument("--results", default=str(ROOT / "benchmarks/results"))
    p.add_argument("--no-run", action="store_true")
    p.add_argument("--from-csv", help="lazy: print the movement trends of a dynamics_lazy.csv made earlier (runs "
                                      "nothing, writes nothing)")
    args = p.parse_args()
    if args.from_csv:
        if args.part != "lazy":
            p.error("--from-csv: only lazy has statistics")
        print("\n".join(movement_trends(pd.read_csv(args.from_csv))))
        return 0

    specs = {"lazy": _lazy, "mnist": lambda: _mnist(args.data_dir), "jamming": lambda: _jamming(args.data_dir)}[args.part]()
    folder = ROOT / "runs" / f"dynamics-{args.part}"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(name, seed, folder / f"{name}-seed{seed}", flags, meta) for name, flags, meta in specs
            for seed in (int(s) for s in args.seeds.split(","))]
    started = time.perf_counter()
    if not args.no_run:
        def one(job):
            name, seed, out, flags, meta = job
            state = _state(out)
            if state == "finished":
                return 0
            argv = ["evolve", *flags, "--seed", str(seed), "--out", str(out)] + (["--resume"] if state else [])
            code, seconds = _run(argv, folder / f"{name}-seed{seed}.log")
            print(f"{name} seed {seed}: exit {code} after {seconds:.0f} s", flush=True)
            return code

        with ThreadPoolExecutor(args.jobs) as pool:
            codes = list(pool.map(one, jobs))
        if any(codes):
            print("some runs failed; see their .log files under", folder, file=sys.stderr)
        (folder / "wall.json").write_text(json.dumps({"wall_s": time.perf_counter() - started, "jobs": args.jobs,
                                                       "cores": os.cpu_count()}))
    done = [(n, s, o, m) for n, s, o, f, m in jobs if _state(o) == "finished"]
    if not done:
        print("no finished runs", file=sys.stderr)
        return 1
    results = Path(args.results)
    summarise = {"lazy": lazy_summary, "mnist": mnist_summary, "jamming": lambda r: jamming_summary(r, results)}[args.part]
    lines, df = summarise(done)
    df.to_csv(results / f"dynamics_{args.part}.csv", index=False)
    timing = json.loads((folder / "wall.json").read_text()) if (folder / "wall.json").is_file() else None
    flags = " ".join(a for a in sys.argv[1:] if a != "--no-run")
    head = [f"# Training dynamics: `{args.part}`", "",
            f"Written by `python benchmarks/bench_dynamics.py {flags}` on {platform.processor() or platform.machine()}"
            + (f"; {timing['wall_s'] / 60:.1f} min of wall time on {timing['cores']} cores, {timing['jobs']} one-thread "
               "processes at once" if timing else "") + ". Mean ± sd over seeds where rows are grouped.", "",
            "Every run: `rankprune " + " ".join(["evolve", *jobs[0][3]]) + " --seed S` (the first setting; the others "
            "differ as the table says).", ""]
    (results / f"dynamics_{args.part}.md").write_text("\n".join(head + lines) + "\n")
    print("\n".join(head + lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
