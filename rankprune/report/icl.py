"""The in-context learning report (Kirsch et al. 2022, the GPICL MNIST experiment): two grid studies, an MLP's and a
transformer's, over task count x initial width x seed (studies/icl/*.toml), read together.

    the 2 x 2 accuracy map    (MLP, transformer) x (seen, unseen tasks), test accuracy of each cell's chosen network
    the convergent width map  the width the size axis sets, after the controller shrank it
    accuracy by position      the transformer's in-context learning curves, seen and unseen tasks
    verdicts                  does unseen-task accuracy rise with the task count (each family), and is the
                              transformer's above the MLP's at each task count; seeds are the unit, exact tests,
                              Holm over the family

A trial's accuracy is its chosen network's (the controller's result): test accuracy on the test images under log2 N
of the training tasks (seen) and under log2 N tasks of another seed (unseen). Nothing here is decided on test data:
the controller chose each network on validation.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from rankprune import figures_icl
from rankprune.analysis import holm, paired_difference, trend
from rankprune.analysis.intervals import mean_interval
from rankprune.config import ConfigError
from rankprune.report.document import _check_figure_options, _check_out, _Document, _num
from rankprune.runfolder import CONFIG, DATA

__all__ = ["trial_rows", "cells", "verdicts", "render_icl", "describe_trial"]


def trial_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per finished trial of a study's trials_frame: family, tasks, width (initial, of the size axis), seed,
    seen and unseen test accuracy, the convergent width of the size axis's group with its censoring side, and the
    accuracy-by-position curves where the trial recorded them."""
    rows = []
    for _, t in frame.iterrows():
        widths, initial = list(t["widths"]), list(t["initial_widths"])
        marks = list(t.get("censored") or [None] * len(widths))
        family = t["family"]
        if family == "transformer":  # the residual width is the model width d
            width, start, mark = widths[0], initial[0], marks[0]
        else:  # an MLP's mean hidden width
            width, start = float(np.mean(widths)), initial[0]
            mark = next((m for m in marks if m), None)
        rows.append({
            "family": family, "tasks": int(t["param_data.tasks"]), "width": int(start), "seed": int(t["param_seed"]),
            "seen": float(t["test_acc"]), "unseen": float(t["test_acc_unseen_tasks"]),
            "val": float(t["val_acc"]), "convergent_width": float(width), "kept": sum(widths) / sum(initial),
            "side": {"initial": ">=", "input": ">=", "unconverged": "<="}.get(mark, ""),
            "widths": widths, "initial_widths": initial,
            "seen_curve": t.get("test_acc_by_position"), "unseen_curve": t.get("test_acc_unseen_tasks_by_position"),
        })
    return pd.DataFrame(rows)


def cells(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (family, tasks, width): seeds n, seen and unseen test accuracy mean with a 95% interval over seeds, the
    convergent width's mean and the side of any seed's bound."""
    out = []
    for (family, tasks, width), g in rows.groupby(["family", "tasks", "width"]):
        cell = {"family": family, "tasks": tasks, "width": width, "n": len(g)}
        for value in ("seen", "unseen"):
            lo, hi, _ = mean_interval(g[value].to_numpy())
            cell.update({f"{value}_mean": float(g[value].mean()), f"{value}_lo": lo, f"{value}_hi": hi})
        sides = sorted({s for s in g["side"] if s})
        cell.update(width_mean=float(g["convergent_width"].mean()), width_side=" ".join(sides),
                    kept_mean=float(g["kept"].mean()))
        out.append(cell)
    return pd.DataFrame(out)


def verdicts(rows: pd.DataFrame, chance: float, alpha: float = 0.05) -> list:
    """The tests: per family, unseen-task accuracy rises with log2 N (Spearman within seed, exact stratified
    permutation); per task count, the transformer's unseen accuracy above the MLP's (paired by seed and width, exact
    signed-rank). Rows are averaged over widths within a seed (the seed is the unit).

    Holm's family is the tests that can reach `alpha` on this design (their smallest attainable p, fixed by the
    number of seeds and settings and not by the data, is at most alpha): with 3 seeds a signed-rank test's floor is
    0.125 one-sided, so it could never reject, and counting it in the family would only raise the others' adjusted
    p-values. Those are reported with their p and floor, outside the family, as descriptions."""
    table = rows.assign(log2_tasks=np.log2(rows["tasks"]), censored=None)
    out = []
    for family in ("mlp", "transformer"):
        mine = table[table["family"] == family]
        if len(mine):
            out.append(trend(mine, "log2_tasks", "unseen", unit="seed", censored=None, alternative="greater",
                             claim=f"{figures_icl.FAMILY_NAMES[family]}: unseen-task accuracy rises with log2 N"))
    if {"mlp", "transformer"} <= set(table["family"]):
        for tasks in sorted(table["tasks"].unique()):
            at = table[table["tasks"] == tasks]
            out.append(paired_difference(at, "unseen", "family", "transformer", "mlp", unit="seed", within=("width",),
                                         censored=None, alternative="greater",
                                         claim=f"N = {tasks:,}: the transformer's unseen-task accuracy is above the MLP's"))
    testable = [i for i, v in enumerate(out) if not math.isnan(v.p_value) and v.p_floor <= alpha]
    adjusted = dict(zip(testable, holm([out[i] for i in testable], "the in-context learning grid's tests that can "
                                                                    f"reach p = {alpha:g}")))
    return [adjusted.get(i, v) for i, v in enumerate(out)]


def _interval(mean: float, lo: float, hi: float) -> str:
    """mean [low, high], the interval cut to the accuracies that exist ([0, 1]; marked '*' where it was cut)."""
    if math.isnan(lo):
        return _num(mean)
    cut = lo < 0 or hi > 1
    return f"{_num(mean)} [{_num(max(lo, 0.0))}, {_num(min(hi, 1.0))}]{'*' if cut else ''}"


def _cell_table(c: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, r in c.sort_values(["family", "tasks", "width"]).iterrows():
        rows.append({
            "family": figures_icl.FAMILY_NAMES[r["family"]], "tasks N": f"{r['tasks']:,}", "initial width": str(r["width"]),
            "seeds": str(r["n"]), "seen tasks: test acc [95% t interval]": _interval(r["seen_mean"], r["seen_lo"], r["seen_hi"]),
            "unseen tasks: test acc [95% t interval]": _interval(r["unseen_mean"], r["unseen_lo"], r["unseen_hi"]),
            "convergent width (mean)": f"{r['width_side'] + ' ' if r['width_side'] else ''}{_num(r['width_mean'])}",
            "units kept, all groups": f"{r['kept_mean']:.0%}",
        })
    return pd.DataFrame(rows)


def _group_table(rows: pd.DataFrame, groups: list[str]) -> pd.DataFrame:
    """The transformer's convergent widths of every group, mean over seeds per cell: the residual width, then each
    kind of group block by block ("19, 19, 16, 14 of 32")."""
    out = []
    kinds = [k for k in ("query-key", "value-output", "feed-forward") if any(g.endswith(k) for g in groups)]
    for (tasks, width), g in rows[rows["family"] == "transformer"].groupby(["tasks", "width"]):
        mean = np.mean(np.asarray(list(g["widths"]), dtype=float), axis=0)
        start = list(g["initial_widths"].iloc[0])
        row = {"tasks N": f"{tasks:,}", "initial width": str(width), "seeds": str(len(g)),
               "residual": f"{_num(mean[0])} of {start[0]}"}
        for kind in kinds:
            idx = [i for i, name in enumerate(groups) if name.endswith(kind)]
            row[f"{kind}, blocks 1-{len(idx)}"] = f"{', '.join(_num(mean[i]) for i in idx)} of {start[idx[0]]}"
        out.append(row)
    return pd.DataFrame(out)


def _curves(rows: pd.DataFrame) -> list[dict]:
    out = []
    mine = rows[(rows["family"] == "transformer") & rows["seen_curve"].notna()]
    for (tasks, width), g in mine.groupby(["tasks", "width"]):
        out.append({"tasks": tasks, "width": width, "seen": np.mean(np.asarray(list(g["seen_curve"])), axis=0),
                    "unseen": np.mean(np.asarray(list(g["unseen_curve"])), axis=0)})
    return out


def render_icl(frames: dict[str, pd.DataFrame], out: Path, *, chance: float, names: dict[str, str],
               description: list[str], fmt: str = "png", dpi: float = 110) -> Path:
    """report.md and figures in `out` for the studies' trials_frames (`frames`, by family); `names` are the study
    names, `description` bullet lines on how they ran. ConfigError (one line) where there is nothing to report."""
    _check_figure_options(fmt, dpi)
    _check_out(out)
    rows = pd.concat([trial_rows(f) for f in frames.values() if len(f)], ignore_index=True) if any(
        len(f) for f in frames.values()) else pd.DataFrame()
    if rows.empty:
        raise ConfigError(f"no finished trials in {', '.join(names.values())}: nothing to report")
    c = cells(rows)
    doc = _Document(out, fmt, dpi)
    doc.add("# In-context learning: MLP against transformer, seen and unseen tasks", "",
            "After Kirsch et al. 2022 (General-Purpose In-Context Learning by Meta-Learning Transformers), the MNIST "
            "task augmentation. Each task is a random linear projection of the image with a permutation of the "
            "labels; the MLP reads one example at a time, the transformer a sequence of one task's examples with "
            "the previous example's label beside each. Each trial is a controller run: trained, shrunk to its "
            "convergent widths, the network chosen on validation.", "")
    doc.bullets([f"studies: {', '.join(f'{figures_icl.FAMILY_NAMES[k]} `{v}`' for k, v in names.items())}",
                 *description,
                 f"{len(rows)} finished trials; seeds {', '.join(str(s) for s in sorted(rows['seed'].unique()))}; "
                 f"chance is {chance:g}"])
    doc.add("## Accuracy", "")
    doc.figure("icl_accuracy_map", lambda: figures_icl.accuracy_map(c, chance), "the 2 x 2 accuracy map",
               "Test accuracy of each cell's chosen network, mean over seeds (n), on the test images under log2 N of "
               "the training tasks (seen) and under log2 N tasks never trained on (unseen). The colour runs from "
               "chance to 1 in every panel.")
    doc.table(_cell_table(c))
    doc.add("Intervals are Student's t over seeds; '*': the interval reached past 0 or 1 and is shown cut there.", "")
    doc.add("## Tests", "", "Seeds are the unit: a seed's value is its mean over the initial widths. Spearman's rho "
            "within each seed, tested by permuting log2 N within seeds (exact); the paired differences by the exact "
            "signed-rank test over seeds. A test whose smallest attainable p is above 0.05 on this design (a "
            "signed-rank test over 3 seeds cannot go below 0.125 one-sided) can show a direction, not settle it: "
            "it is reported without a Holm p and is not counted in the family the others are corrected over.", "")
    doc.bullets([v.text() for v in verdicts(rows, chance)])
    doc.add("## Convergent widths", "")
    doc.figure("icl_width_map", lambda: figures_icl.width_map(c), "the convergent width map",
               "Top: the width the size axis sets once the controller stopped shrinking, mean over seeds: the MLP's "
               "mean hidden width, the transformer's residual width (its model width d). Hatched with '>=' where a "
               "seed's width never fell below its start (a lower bound, not a measured rank), '<=' where it was still "
               "shrinking at the iteration cap. Bottom: the share of all its units (every group's width summed) the "
               "chosen network kept.")
    groups = _transformer_groups(rows)
    if groups:
        doc.add("The transformer's every group (convergent / initial width, mean over seeds):", "")
        doc.table(_group_table(rows, groups))
    curves = _curves(rows)
    if curves:
        doc.add("## Accuracy by position", "")
        doc.figure("icl_positions", lambda: figures_icl.position_curves(curves, chance), "accuracy by position",
                   "The transformer's test accuracy at each position of a sequence (position t has seen t labelled "
                   "examples of its task), mean over seeds: seen tasks solid, unseen dashed. A curve that rises "
                   "along the sequence is learning in context; one flat at chance on unseen tasks has memorised "
                   "its training tasks.")
    return doc.write()


def _transformer_groups(rows: pd.DataFrame) -> list[str]:
    from rankprune.models import get_family

    mine = rows[rows["family"] == "transformer"]
    if mine.empty:
        return []
    return [g.name for g in get_family("transformer").groups(list(mine["initial_widths"].iloc[0]))]


def describe_trial(frames: dict[str, pd.DataFrame], fetcher=None) -> tuple[float, list[str]]:
    """Chance accuracy (1 / classes) and a line per study on how its trials ran, read from each study's first trial's
    run folder (config.json, data.json; fetched by `fetcher`, an artifacts.Fetcher, where its worker uploaded it to an
    artifact store); a folder that cannot be read is said so, not guessed at."""
    import json

    from rankprune.artifacts import Fetcher

    fetcher = fetcher if fetcher is not None else Fetcher()
    chance, lines = math.nan, []
    for family, frame in frames.items():
        folder = Path(frame["run_folder"].iloc[0])
        try:
            folder = fetcher.folder(frame.iloc[0].to_dict(), folder)
            config, data = (json.loads((folder / name).read_text()) for name in (CONFIG, DATA))
        except (OSError, ValueError) as exc:
            lines.append(f"{figures_icl.FAMILY_NAMES[family]}: run folder {folder} unreadable ({type(exc).__name__})")
            continue
        chance = 1.0 / data["n_classes"]
        d, t, m = config["data"], config["train"], config["model"]
        shape = "x".join(str(v) for v in data["input_shape"])
        depth = frame["depth"].iloc[0]
        lines.append(
            f"{figures_icl.FAMILY_NAMES[family]}: {d['dataset']}" + (f" at {d['image_size']}x{d['image_size']} pixels" if d.get("image_size") else "")
            + f", {data['n_classes']} classes, inputs {shape}"
            + (f" (sequences of {d['sequence_length']} examples)" if d.get("sequence_length") else " (one example each)")
            + f"; {'blocks' if m['family'] == 'transformer' else 'hidden layers'} {depth}; {t['optimizer']} lr {t['lr']:g}, "
            f"weight decay {t['weight_decay']:g}, batch {t['batch_size']}, at most {t['max_epochs']} epochs an iteration; "
            f"ranks of {config['rank']['source']} ({config['rank']['measure']}); rebuild {config['evolve']['rebuild']}, "
            f"at most {config['evolve']['max_iterations']} iterations")
    return chance, lines
