"""--rank-source weights against activations: what each drives the widths to, and what it costs (issue 19).

    python benchmarks/bench_rank_source.py [--families mlp,cnn] [--depths 2,3] [--seeds 0,1,2] [--jobs 1]
                                           [--data-dir ../shared/data/mnist10k] [--no-run]

Every run is `rankprune evolve --model F --rank-source S --layers D --seed N` on the MNIST subset with the defaults
otherwise (warm rebuild, the family's width and weight decay, --saturate both), one depth per run folder under
runs/bench-rank-source/, as a subprocess with OMP_NUM_THREADS=1; a finished folder is reused, an interrupted one
resumed. --jobs 2 runs two at once, and only when the load average is below 1.5 (the machine is shared).

Writes benchmarks/results/rank_source.md and rank_source.csv (one row per run): the chosen network's widths per
layer (a censored width, one that is a bound and not a measured rank, as '>= w' with its reason), its test and
validation accuracy, iterations, stop reason, cumulative FLOPs and seconds; iteration 0's driving ranks of both
sources at full width; the largest per-layer reconstruction error of the warm rebuilds on the validation rows;
and, measured in-process on each starting network, what one held-out activation measurement costs against an
epoch's training and its weight spectra (the per-epoch price of --rank-source activations with --saturate
rank|both). Means and sample sds over seeds and the per-seed values; no p-values (rankprune.analysis owns those).
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

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
MEASURE = "numerical:0.02"  # the default driving measure (rank.RankConfig)


def _run(argv: list[str], log: Path, code: Path | None = None) -> tuple[int, float]:
    """One `rankprune` process with one thread; with `code`, the rankprune package found there (a snapshot) rather
    than the checkout's, run from its folder (the current folder comes first on a `python -m` path)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    start = time.perf_counter()
    with log.open("a") as f:
        status = subprocess.call([sys.executable, "-m", "rankprune", *argv], stdout=f, stderr=subprocess.STDOUT, env=env,
                                 cwd=code)
    return status, time.perf_counter() - start


def snapshot(folder: Path) -> Path:
    """The checkout's rankprune/ copied once into folder/code (kept if there already), with the git revision and
    the uncommitted changes beside it: a grid of hours then runs one version of the code, whatever is edited in
    the checkout meanwhile."""
    import shutil

    code = folder / "code"
    if not (code / "rankprune").is_dir():
        shutil.copytree(ROOT / "rankprune", code / "rankprune", ignore=shutil.ignore_patterns("__pycache__"))
        git = lambda *a: subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout  # noqa: E731
        (code / "revision.txt").write_text(f"{git('describe', '--always', '--dirty').strip()} "
                                           f"taken {dt.datetime.now().isoformat(timespec='minutes')}\n")
        (code / "uncommitted.diff").write_text(git("diff", "HEAD", "--", "rankprune"))
    return code


def _state(out: Path) -> str | None:
    try:
        return json.loads((out / "status.json").read_text())["state"]
    except (OSError, ValueError, KeyError):
        return None


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "iterations.jsonl").read_text().splitlines() if line.strip()]


def _result(out: Path, family: str, source: str, depth: int, seed: int, wall: float | None) -> dict:
    d = json.loads((out / "depths.json").read_text())[str(depth)]
    rows = [r for r in _rows(out) if r["depth"] == depth]
    first = rows[0]
    censored = d.get("censored") or [None] * depth
    if source == "activations":
        # 'input' says a width equals its incoming matrix's columns, the most rank that matrix can have; a layer's
        # post-ReLU outputs are not bounded by it (a first conv block reads 9 pixels per position and its
        # activations span 26-29 directions here), so under this source it marks nothing.
        censored = [None if c == "input" else c for c in censored]
    errors = [e for r in rows if r.get("rebuild_error") for e in r["rebuild_error"]]
    outputs = [r["rebuild_output_error"] for r in rows if r.get("rebuild_output_error") is not None]
    return {
        "family": family, "source": source, "depth": depth, "seed": seed,
        "widths": d["widths"], "censored": censored, "initial_widths": d["initial_widths"],
        "total_width": sum(d["widths"]), "test_acc": d["test_acc"], "val_acc": d["val_acc"],
        "reference_test_acc": d.get("reference_test_acc"), "iterations": d["iterations"], "stop_reason": d["stop_reason"],
        "epochs": d["epochs"], "cumulative_flops": d["cumulative_flops"], "cumulative_seconds": d["cumulative_seconds"],
        "wall_seconds": wall,
        # iteration 0 at full width: the driving measure of both sources (weights: the output layer left out)
        "first_weight_ranks": first[f"rank_{MEASURE}"][:-1],
        "first_activation_ranks": first.get(f"heldout_activation_rank_{MEASURE}"),
        "chosen_weight_ranks": next(r for r in rows if r["iteration"] == d["chosen_iteration"])[f"rank_{MEASURE}"][:-1],
        "chosen_activation_ranks": next(r for r in rows if r["iteration"] == d["chosen_iteration"]).get(
            f"heldout_activation_rank_{MEASURE}"),
        "max_rebuild_error": max(errors) if errors else None,
        "max_rebuild_output_error": max(outputs) if outputs else None,
    }


def _width(w: int, reason: str | None) -> str:
    return f">= {w} ({reason})" if reason else str(w)


def _ms(values, scale: float = 1.0, digits: int = 1) -> str:
    v = pd.Series(values, dtype=float).dropna() * scale
    if v.empty:
        return "—"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"


def _layers(frame: pd.DataFrame, column: str = "widths") -> str:
    values = [v for v in frame[column] if isinstance(v, list)]
    if not values:
        return "—"
    a = np.array(values, dtype=float)
    sd = a.std(0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1])
    return "[" + ", ".join(f"{m:.1f} ± {s:.1f}" for m, s in zip(a.mean(0), sd)) + "]"


def measurement_cost(family: str, depth: int, data_dir: str, repeats: int = 3) -> dict:
    """Seconds, in this process (one thread), of one epoch's training of the family's starting network at `depth`,
    of its weight spectra (what every epoch measures anyway) and of one held-out activation measurement (what
    --rank-source activations adds to every epoch under --saturate rank|both): minima over `repeats`."""
    import torch

    from rankprune.config import RunConfig
    from rankprune.data import load
    from rankprune.measure import heldout_inputs, measure_activations, measure_layers, recorded_measures
    from rankprune.models import get_family
    from rankprune.train import train_to_saturation

    torch.set_num_threads(1)
    cfg = RunConfig().replace(data={"data_dir": data_dir, "download": False}, model={"family": family},
                              train={"max_epochs": 1}).validate().resolved()
    data = load(cfg.data, cfg.seed)
    model = get_family(family).build(data.input_shape, [cfg.model.width] * depth, data.n_classes, seed=0)
    measures = recorded_measures(cfg.rank.measure)
    epoch = min(train_to_saturation(model, data, cfg.train, cfg.train.weight_decay, seed=0).seconds for _ in range(repeats))

    def best(f) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            f()
            times.append(time.perf_counter() - start)
        return min(times)

    model.eval()
    heldout = heldout_inputs(data)
    return {"family": family, "depth": depth, "epoch_train_s": epoch,
            "weight_spectra_s": best(lambda: measure_layers(model, measures)),
            "heldout_activations_s": best(lambda: measure_activations(model, heldout, measures)),
            "heldout_rows": len(heldout)}


def summarise(df: pd.DataFrame, costs: pd.DataFrame | None) -> list[str]:
    lines = ["## Per family, depth and source (mean ± sd over seeds)", "",
             "| family | depth | source | runs | widths per layer | total width | censored layers | test acc % | "
             "val acc % | iterations | cumulative TFLOP | epochs |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (family, depth, source), g in df.groupby(["family", "depth", "source"], sort=True):
        censored = sum(1 for marks in g.censored for m in marks if m)
        lines.append(f"| {family} | {depth} | {source} | {len(g)} | {_layers(g)} | {_ms(g.total_width)} | {censored} of "
                     f"{len(g) * depth} | {_ms(g.test_acc, 100, 2)} | {_ms(g.val_acc, 100, 2)} | {_ms(g.iterations)} | "
                     f"{_ms(g.cumulative_flops, 1e-12, 2)} | {_ms(g.epochs)} |")
    lines += ["", "## Per run", "",
              "| family | depth | source | seed | chosen widths | test acc % | val acc % | iterations | stop | cumulative "
              "TFLOP | wall s | iteration 0 ranks: weights / activations | chosen network's ranks: weights / activations | "
              "largest rebuild error (layer / output) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in df.sort_values(["family", "depth", "source", "seed"]).itertuples():
        widths = "[" + ", ".join(_width(w, c) for w, c in zip(r.widths, r.censored)) + "]"
        err = ("—" if r.max_rebuild_error is None or pd.isna(r.max_rebuild_error)
               else f"{r.max_rebuild_error:.3g} / {r.max_rebuild_output_error:.3g}")
        wall = "—" if r.wall_seconds is None or pd.isna(r.wall_seconds) else f"{r.wall_seconds:.0f}"
        lines.append(f"| {r.family} | {r.depth} | {r.source} | {r.seed} | {widths} | {100 * r.test_acc:.2f} | "
                     f"{100 * r.val_acc:.2f} | {r.iterations} | {r.stop_reason} | {r.cumulative_flops / 1e12:.3f} | {wall} | "
                     f"{_ints(r.first_weight_ranks)} / {_ints(r.first_activation_ranks)} | "
                     f"{_ints(r.chosen_weight_ranks)} / {_ints(r.chosen_activation_ranks)} | {err} |")
    lines += ["", "## How each depth stopped", "", "| family | source | stop | runs |", "|---|---|---|---|"]
    for (family, source, reason), n in df.groupby(["family", "source", "stop_reason"]).size().items():
        lines.append(f"| {family} | {source} | {reason} | {n} |")
    if costs is not None and not costs.empty:
        lines += ["", "## What a held-out activation measurement costs per epoch", "",
                  "Measured in this process, one thread, on each family's starting network (minimum of 3): one epoch "
                  "of training, the weight spectra every epoch measures anyway, and one measurement of every hidden "
                  "layer's activation rank on the validation rows, which --rank-source activations adds to every "
                  "epoch (the validation and test evaluations every epoch runs are not counted).", "",
                  "| family | depth | validation rows | epoch's training s | weight spectra s | held-out activations s | "
                  "activations / training |", "|---|---|---|---|---|---|---|"]
        for c in costs.itertuples():
            lines.append(f"| {c.family} | {c.depth} | {c.heldout_rows} | {c.epoch_train_s:.2f} | {c.weight_spectra_s:.3f} | "
                         f"{c.heldout_activations_s:.3f} | {100 * c.heldout_activations_s / c.epoch_train_s:.1f}% |")
    return lines


def _ints(values) -> str:
    return "—" if not isinstance(values, list) else "[" + ", ".join(str(int(round(v))) for v in values) + "]"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default="mlp,cnn")
    p.add_argument("--sources", default="weights,activations")
    p.add_argument("--depths", default="2,3")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--jobs", type=int, default=1, help="processes at once, one thread each (1; 2 only below load 1.5)")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/mnist10k"))
    p.add_argument("--results", default=str(ROOT / "benchmarks/results"))
    p.add_argument("--name", default="rank_source", help="results file stem (rank_source)")
    p.add_argument("--no-run", action="store_true", help="only summarise the finished run folders already there")
    p.add_argument("--no-cost", action="store_true", help="skip the in-process measurement-cost table")
    p.add_argument("--snapshot", action="store_true",
                   help="run a copy of the checkout's rankprune/ taken at the first such call (runs/bench-rank-source/code)")
    args = p.parse_args()

    families, sources = args.families.split(","), args.sources.split(",")
    depths, seeds = [int(d) for d in args.depths.split(",")], [int(s) for s in args.seeds.split(",")]
    folder = ROOT / "runs" / "bench-rank-source"
    folder.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    jobs = []
    for family in families:  # the slow family last: a partial grid still compares both sources of the first
        for depth in depths:
            for seed in seeds:
                for source in sources:
                    out = folder / f"{family}-{source}-d{depth}-seed{seed}"
                    argv = ["evolve", "--model", family, "--rank-source", source, "--layers", str(depth),
                            "--data-dir", args.data_dir, "--no-download", "--seed", str(seed), "--out", str(out)]
                    jobs.append((family, source, depth, seed, out, argv))

    code = snapshot(folder) if args.snapshot else None
    walls_file = folder / "walls.json"
    walls = json.loads(walls_file.read_text()) if walls_file.is_file() else {}
    started = time.perf_counter()
    if not args.no_run:
        parallel = args.jobs > 1 and load_start < 1.5
        if args.jobs > 1 and not parallel:
            print(f"load average {load_start:.2f} >= 1.5: running one at a time", flush=True)

        def one(job) -> None:
            family, source, depth, seed, out, argv = job
            state = _state(out)
            if state == "finished":
                return
            status, seconds = _run(argv + (["--resume"] if state else []), folder / f"{out.name}.log", code)
            if not state:  # a resumed run's wall time is only part of it
                walls[out.name] = seconds
                walls_file.write_text(json.dumps(walls, indent=1))
            print(f"{out.name}: exit {status} after {seconds:.0f} s", flush=True)

        if parallel:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(2) as pool:
                list(pool.map(one, jobs))
        else:
            for job in jobs:
                one(job)
    wall = time.perf_counter() - started

    rows = [_result(out, family, source, depth, seed, walls.get(out.name))
            for family, source, depth, seed, out, _argv in jobs if _state(out) == "finished"]
    if not rows:
        print("no finished runs", file=sys.stderr)
        return 1
    df = pd.DataFrame(rows)
    costs = None
    if not args.no_cost:
        costs = pd.DataFrame([measurement_cost(f, d, args.data_dir) for f in families for d in depths])
    results = Path(args.results)
    df.to_csv(results / f"{args.name}.csv", index=False)
    import torch

    revision = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                              text=True).stdout.strip() or "unknown"
    snap = folder / "code" / "revision.txt"
    if snap.is_file():
        revision = (f"{revision} (the runs: the snapshot runs/bench-rank-source/code of git "
                    f"{snap.read_text().strip()}, its uncommitted changes in code/uncommitted.diff)")
    lines = [f"# --rank-source weights against activations on the MNIST subset", "",
             f"Written {dt.datetime.now().isoformat(timespec='minutes')} by `python benchmarks/bench_rank_source.py "
             f"{shlex.join(sys.argv[1:])}` on {platform.machine()} ({os.cpu_count()} cores), torch {torch.__version__}, "
             f"OMP_NUM_THREADS=1 in every run, git {revision}; load average {load_start:.2f} at the start; "
             + (f"{len(rows)} runs, this invocation took {wall / 60:.1f} min of wall time"
                if not args.no_run else f"{len(rows)} runs summarised")
             + (f"; the runs' own wall times sum to {df.wall_seconds.sum() / 60:.0f} min (two at a time where the "
                "load allowed, so each is indicative)" if df.wall_seconds.notna().any() else "") + ".", "",
             "Every run: `rankprune evolve --model F --rank-source S --layers D --data-dir DATA --no-download --seed N`, "
             "defaults otherwise (warm rebuild, width 784 for the MLP and 64 channels for the CNN, --saturate both, "
             f"driving measure {MEASURE}); activations are measured on the validation rows. Widths are the chosen "
             "(result) iteration's; a censored width (a bound, not a measured rank: 'initial' = never shrank, 'input' = "
             "equals its incoming matrix's columns) shows as '>= w'; under --rank-source activations an 'input' mark in "
             "depths.json is left out, since an activation rank is not bounded by the incoming matrix's columns. "
             "Accuracies are the chosen network's. The largest rebuild error is the largest over the depth's warm "
             "rebuilds, on the validation rows, of a layer's own error in the next layer's pre-activations and of the "
             "network's output (rebuild.RebuildCost). Cumulative seconds are indicative (a shared machine); FLOPs are "
             "exact.", ""]
    missing = [out.name for *_, out, _argv in jobs if _state(out) != "finished"]
    if missing:
        lines += [f"Not in these tables (not run, or not finished): {', '.join(missing)}; `python "
                  f"benchmarks/bench_rank_source.py` runs what is missing and keeps what is there.", ""]
    lines += summarise(df, costs)
    (results / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
