"""The report of a replicates folder (`evolve --seeds`): per depth the spread of the chosen networks over seeds,
every seed's result, and how the seeds' widths and accuracies moved per iteration. Each seed-S/ is an ordinary
run folder with a report of its own (`rankprune report DIR/seed-S`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rankprune import figures
from rankprune.config import task_knobs
from rankprune.models import get_family
from rankprune.replicates import read_replicates, seed_folder, summarise
from rankprune.report.document import _Document, _seconds
from rankprune.report.gather import widths_censored
from rankprune.runfolder import DEPTHS, ITERATIONS, RunFolder
from rankprune.units import bound_note, spread_text, sum_side, widths_text

__all__ = ["render_replicates"]


def _spread(s: dict, scale: float = 1.0, digits: int = 1) -> str:
    return (f"{s['mean'] * scale:.{digits}f} ± {s['sd'] * scale:.{digits}f} "
            f"({s['min'] * scale:.{digits}f}-{s['max'] * scale:.{digits}f})")


def _spread_seconds(s: dict) -> str:
    """A spread of a quantity of any magnitude (seconds: 0.06 on digits, 100 on MNIST) in significant digits."""
    return f"{_seconds(s['mean'])} ± {_seconds(s['sd'])} ({_seconds(s['min'])}-{_seconds(s['max'])})"


def render_replicates(root: Path, out: Path, fmt: str = "png", dpi: float = figures.DPI) -> Path:
    doc_json = read_replicates(root)
    seeds = doc_json["seeds"]
    summary = summarise(root, seeds)
    config = doc_json.get("config", {})
    unit = get_family(config.get("model", {}).get("family", "mlp")).width_unit
    metric = figures.metric_of(config.get("data", {}).get("dataset", ""))
    doc = _Document(out, fmt, dpi)
    doc.add(f"# Replicates: {root.name}", "",
            f"{len(seeds)} seeds ({', '.join(map(str, seeds))}) of one configuration, sharing the data of data seed "
            f"{doc_json.get('data_seed')} (split, label noise, tasks) and differing in initialisation and data order.", "",
            "Task: " + "; ".join(task_knobs(config)) + ".", "")
    censoring = {key: d.get("censoring") or {"total_width": {"measured": d["total_width"], "bounds": []},
                                             "widths": [{"measured": w, "bounds": []} for w in d["widths"]]}
                 for key, d in summary.items()}
    sides = {side for c in censoring.values() for w in (*c["widths"], c["total_width"]) for side, _ in w["bounds"]}
    doc.add("## The chosen networks over seeds", "",
            "Mean ± standard deviation (minimum-maximum) over the seeds that finished the depth."
            + (" " + bound_note(sides) + " Where some seeds are censored, a width is summarised over the seeds whose "
               "width is measured (n = how many), and the censored seeds are counted beside, with the range of their "
               "bounds (a total is censored where any of its layers is): a bound averaged in as a value would pull the "
               "mean towards it, and no model of what lies beyond it is assumed. Each seed's own widths are in the "
               "table below." if sides else ""), "")
    if summary:
        doc.table(pd.DataFrame([{
            "depth": d["depth"], "seeds": len(d["seeds"]),
            f"widths ({unit})": "[" + ", ".join(spread_text(w) for w in censoring[key]["widths"]) + "]",
            "total width": spread_text(censoring[key]["total_width"], extent=True),
            "parameters": _spread(d["parameters"], digits=0),
            "test acc (%)": _spread(d["test_acc"], 100, 2),
            "val acc (%)": _spread(d["val_acc"], 100, 2),
            "iterations": _spread(d["iterations"]),
            "cumulative train s": _spread_seconds(d["cumulative_seconds"]),
            "stopped by": ", ".join(f"{k} x{v}" for k, v in sorted(d["stop_reasons"].items())),
        } for key, d in summary.items()]))
    else:
        doc.add("*No seed has finished a depth yet.*", "")
    rows = []
    for seed in seeds:
        folder = seed_folder(root, seed)
        if not folder.is_dir():
            continue
        run = RunFolder(folder)
        seed_rows = pd.DataFrame(run.rows(ITERATIONS))
        try:
            depths = run.read(DEPTHS)
        except ValueError:
            depths = None
        marks = widths_censored(seed_rows, depths if isinstance(depths, dict) else None)
        # each row's own widths' marks (its "censored" key is of its next widths)
        rows += [{**r, "seed": seed, "widths_censored": m} for r, m in zip(seed_rows.to_dict("records"), marks)]
    per_seed = [{"seed": int(s), "depth": d["depth"], **v} for d in summary.values() for s, v in d["per_seed"].items()]
    if per_seed:
        doc.add("## Every seed", "")
        doc.table(pd.DataFrame([{
            "seed": p["seed"], "depth": p["depth"], f"chosen widths ({unit})": widths_text(p["widths"], p.get("censored")),
            "test acc (%)": f"{100 * p['test_acc']:.2f}", "val acc (%)": f"{100 * p['val_acc']:.2f}",
            "stopped by": p["stop_reason"], "iterations": p["iterations"],
            "cumulative train s": _seconds(p["cumulative_seconds"])} for p in sorted(per_seed, key=lambda p: (p["depth"], p["seed"]))]))
    if rows:
        doc.add("## Per iteration", "")
        doc.figure("replicates_per_iteration", lambda: figures.replicates_per_iteration(pd.DataFrame(rows), unit, metric),
                   "total hidden width and test accuracy per iteration, one line per seed",
                   "Each seed's total hidden width (top) and test accuracy (bottom) at every controller iteration, a "
                   "line style and marker per seed, each seed shifted a little sideways so that equal values stay "
                   "visible; a star marks the anneal, which retrains the chosen network and is the depth's result"
                   + ("; an open triangle replaces the seed's marker on a censored total (upward: at least this, "
                      "downward: at most this; an octagon: a bound either way), at an anneal too, whose star then shows "
                      "in the accuracy panel alone. " + bound_note({sum_side(r["widths_censored"]) for r in rows} - {None},
                                                                    markers=True)
                      if any(sum_side(r["widths_censored"]) for r in rows) else ".")
                   + " The accuracy panels share one scale. Look for how far the seeds spread, and whether they meet.")
    unfinished = [s for s in seeds if not any(str(s) in d["per_seed"] for d in summary.values())]
    if unfinished:
        doc.add(f"*Seeds with no finished depth yet: {', '.join(map(str, unfinished))}. Continue with "
                f"`rankprune evolve --out {root} --resume`.*", "")
    doc.add("Each seed's own report: `rankprune report " + str(seed_folder(root, seeds[0])) + "` (and so on per seed).", "")
    return doc.write()
