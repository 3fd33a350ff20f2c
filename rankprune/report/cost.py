"""The cost of each controller (question 3: does shrinking keep accuracy, and at what cost?), for a suite's
[[baseline]] beside the study it follows: per depth, test accuracy against cumulative training FLOPs and seconds
for every rankprune controller of the study (one per value of its evolve.rebuild: warm, reinit), each run's scratch
control (its chosen widths trained from a fresh start for the FLOPs its controller spent; evolve/scratch.py) and the
baseline (the original notebook's loop, findings/baseline.py), with a table of what each ends with and spends.

Gathered from the run folders (iterations.jsonl, depths.json, scratch.jsonl, environment.json) and the baseline's result
files only; nothing here trains. A baseline or study not run yet is listed with the command that runs it.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from rankprune.analysis import mean_interval
from rankprune.figures import _figure
from rankprune.findings.baseline import Baseline, Pair, plan, read_result
from rankprune.runfolder import DEPTHS, ENVIRONMENT, ITERATIONS, SCRATCH
from rankprune.study import trial_folder
from rankprune.units import seconds as seconds_text
from rankprune.units import TFLOP, tflop, widths_text

__all__ = ["Curve", "CostResult", "gather_costs", "cost_section", "cost_figure", "cost_table", "SCRATCH_OF",
           "ORIGINAL"]

ORIGINAL = "original loop"
SCRATCH_OF = "scratch, {}'s widths"  # the scratch control of a controller's runs, by its evolve.rebuild
# Each method's colour, line and result marker; a method not here (another rebuild value) takes the next spare colour.
STYLES = {
    "warm": ("tab:blue", "-", "o"), "reinit": ("tab:orange", "-", "s"),
    SCRATCH_OF.format("warm"): ("tab:cyan", "--", "^"), SCRATCH_OF.format("reinit"): ("tab:brown", "--", "v"),
    ORIGINAL: ("tab:red", "-", "D"),
}
SPARE = ("tab:purple", "tab:pink", "tab:olive", "tab:gray")


@dataclass(frozen=True)
class Curve:
    """One run of one method at one depth and seed: the test accuracy of each network it trained, when it had
    finished training it, against the training it had done by then. A controller's points are its networks (an
    iteration of rankprune's, a meta-iteration of the loop's, and the loop's last network where its budget cut it);
    a scratch control, one network, has a point per epoch."""
    method: str
    depth: int
    seed: int
    flops: np.ndarray  # cumulative training FLOPs at each point
    seconds: np.ndarray  # cumulative training seconds at each point
    acc: np.ndarray  # test accuracy at each point (a fraction)
    result: tuple[float, float, float]  # (FLOPs, seconds, test accuracy) of its result where it was trained
    spent: tuple[float, float]  # (FLOPs, seconds) the method trained in all: to its fixed point, or its budget
    widths: tuple[int, ...]  # of its result
    threads: int | None = None  # torch threads of the process that trained it (environment.json)


@dataclass(frozen=True)
class CostResult:
    baseline: Baseline
    experiment: object  # findings.suite.Experiment
    curves: tuple[Curve, ...]
    pairs: tuple[Pair, ...]  # the baseline's (depth, seed) runs and whether each is done
    study_missing: str  # what of the study is not complete ("" when it is)
    unread: tuple[str, ...]  # runs whose folder could not be read, and why

    @property
    def methods(self) -> list[str]:
        """Every method with a curve, the controllers first, then their scratch controls, then the baseline."""
        present = list(dict.fromkeys(c.method for c in self.curves))
        order = {m: i for i, m in enumerate(STYLES)}
        return sorted(present, key=lambda m: (m == ORIGINAL, m.startswith("scratch"), order.get(m, len(order)), m))

    @property
    def reference(self) -> str | None:
        """The method the budget came from (its FLOPs and seconds are the table's 1x), where it has curves."""
        ref = self.baseline.budget if isinstance(self.baseline.budget, str) else None
        return ref if ref in self.methods else None


# --- gathering -------------------------------------------------------------------------------------------------
def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _curve(method: str, depth: int, seed: int, rows: list[dict], result: dict, spent: tuple[float, float],
           widths, threads: int | None) -> Curve:
    return Curve(method, depth, seed, np.array([r["cumulative_flops"] for r in rows], dtype=float),
                 np.array([r["cumulative_seconds"] for r in rows], dtype=float),
                 np.array([r["test_acc"] for r in rows], dtype=float),
                 (float(result["cumulative_flops"]), float(result["cumulative_seconds"]), float(result["test_acc"])),
                 (float(spent[0]), float(spent[1])), tuple(widths), threads)


def _run_curves(folder: Path, method: str, depth: int, seed: int) -> list[Curve]:
    """The controller's curve and its scratch control's (where it trained one) from one trial's run folder."""
    summary = json.loads((folder / DEPTHS).read_text())[str(depth)]
    environment = json.loads((folder / ENVIRONMENT).read_text()) if (folder / ENVIRONMENT).is_file() else {}
    threads = environment.get("torch_threads")
    iterations = [r for r in _rows(folder / ITERATIONS) if r["depth"] == depth]
    chosen = next(r for r in iterations if r["iteration"] == summary["chosen_iteration"])
    curves = [_curve(method, depth, seed, iterations, chosen,
                     (summary["cumulative_flops"], summary["cumulative_seconds"]), summary["widths"], threads)]
    scratch = [r for r in _rows(folder / SCRATCH) if r["depth"] == depth]
    if scratch:  # scored at the end of its budget, as evolve/scratch.py scores it
        last = scratch[-1]
        curves.append(_curve(SCRATCH_OF.format(method), depth, seed, scratch, last,
                             (last["cumulative_flops"], last["cumulative_seconds"]), last["widths"], threads))
    return curves


def _study_curves(experiment, url: str, root: Path | None, depths, seeds, fetcher) -> tuple[list[Curve], list[str]]:
    """Every COMPLETE trial's curves (one per (method, depth, seed), the first trial of each), and the runs whose
    folder could not be read (or fetched by `fetcher`, artifacts.Fetcher, from the artifact store it was put in)."""
    import optuna

    from rankprune.config import ConfigError
    from rankprune.findings.baseline import _rebuilds
    from rankprune.study import _sqlite_path, load_study

    path = _sqlite_path(url)
    if path is not None and not path.is_file():
        return [], []
    try:
        study = load_study(experiment.name, url, read_only=True)
    except ConfigError:
        return [], []
    default = _rebuilds(experiment)[0]
    curves, seen, unread = [], set(), []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        method = str(t.params.get("evolve.rebuild", default))
        depth, seed = t.params.get("depth", t.user_attrs.get("depth")), t.params.get("seed")
        if depth not in depths or seed not in seeds or (method, depth, seed) in seen:
            continue
        seen.add((method, depth, seed))
        folder = trial_folder(str(t.user_attrs.get("run_folder", "")), root)
        if not (folder / DEPTHS).is_file() and root is not None:  # an absolute path recorded on another machine
            folder = root / "studies" / experiment.name / f"trial-{t.number:04d}"
        try:
            folder = fetcher.folder(t.user_attrs, folder)  # an ArtifactUnavailable is an OSError: listed as unread
            curves += _run_curves(folder, method, depth, seed)
        except (OSError, ValueError, KeyError, StopIteration) as exc:
            unread.append(f"trial {t.number} ({folder}): {type(exc).__name__} {exc}")
    return curves, unread


def _baseline_curves(pairs: list[Pair]) -> list[Curve]:
    curves = []
    for p in pairs:
        r = read_result(p.path) if p.done else None
        if r is None:
            continue
        log = r["log"]
        # each network's last epoch: where it evolved, ran out of epochs, or the budget stopped it
        ends = [row for row, after in zip(log, log[1:] + [None])
                if after is None or after["meta_iteration"] != row["meta_iteration"]]
        curves.append(_curve(ORIGINAL, p.depth, p.seed, ends, log[-1], (r["cumulative_flops"], r["cumulative_seconds"]),
                             r["widths"], r.get("environment", {}).get("torch_threads")))
    return curves


def gather_costs(suite, url: str, root: Path | None, results: list, missing_text, fetcher=None) -> list[CostResult]:
    """A CostResult per [[baseline]] of the suite; `results` are the report's ExperimentResults (progress per study),
    `missing_text(result)` says what of a study is missing, `root` is where the runner put the baselines' files and
    the run folders (None: nowhere known); `fetcher` (artifacts.Fetcher) fetches what the runner put in an artifact
    store instead (default: from the store each trial or result recorded)."""
    from rankprune.artifacts import Fetcher

    fetcher = fetcher if fetcher is not None else Fetcher(root=root)
    by_name = {r.experiment.name: r for r in results}
    out = []
    for b in suite.baselines:
        r = by_name[b.study]
        e = r.experiment
        pairs = plan(b, e, url, root, fetcher) if root is not None else []
        curves, unread = _study_curves(e, url, root, b.depths, b.seeds, fetcher)
        out.append(CostResult(b, e, tuple(curves + _baseline_curves(pairs)), tuple(pairs),
                              "" if r.complete else missing_text(r), tuple(unread)))
    return out


# --- the figure ------------------------------------------------------------------------------------------------
def _style(method: str, methods: list[str]) -> tuple[str, str, str]:
    if method in STYLES:
        return STYLES[method]
    extra = [m for m in methods if m not in STYLES]
    return SPARE[extra.index(method) % len(SPARE)], "--" if method.startswith("scratch") else "-", "P"


def _log_ticks(ax, low: float, high: float) -> None:
    """Plain-number ticks on a log x axis (0.2, 0.5, 1, 2): at 1, 1.5, 2, 3, 5 and 7 per decade where the data span
    less than one (evenly apart on the log scale, never crowded), at 1, 2 and 5 over up to 3, else at the powers of ten."""
    decades = math.log10(high / max(low, 1e-300))
    subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades < 1 else (1.0, 2.0, 5.0) if decades <= 3 else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(LogLocator(subs=tuple(float(k) for k in range(1, 10))))
    ax.xaxis.set_minor_formatter(NullFormatter())


def cost_figure(curves: list[Curve], methods: list[str], depth: int) -> Figure:
    """Two panels sharing y: test accuracy (%) against cumulative training compute (TFLOP) and against cumulative
    training seconds, both on log axes; per method each seed a thin line through its points, each run's result a
    small marker and the median result (median x, median accuracy over seeds) a large one edged in black."""
    mine = [c for c in curves if c.depth == depth]
    fig = _figure(11.6, 4.6, (0.75, 2.55, 0.65, 0.45))
    axes = fig.subplots(1, 2, sharey=True)
    fig.subplots_adjust(wspace=0.08)
    handles = []
    scale = (1 / TFLOP, 1.0)
    for method in methods:
        runs = [c for c in mine if c.method == method]
        if not runs:
            continue
        colour, ls, marker = _style(method, methods)
        for ax, k in zip(axes, (0, 1)):
            for c in runs:
                x = (c.flops if k == 0 else c.seconds) * scale[k]
                ax.plot(x, 100 * c.acc, color=colour, ls=ls, lw=0.9, alpha=0.5, zorder=2)
                ax.plot([c.result[k] * scale[k]], [100 * c.result[2]], marker=marker, color=colour, ms=4.5, alpha=0.7,
                        ls="none", zorder=3)
            ax.plot([np.median([c.result[k] for c in runs]) * scale[k]], [100 * np.median([c.result[2] for c in runs])],
                    marker=marker, color=colour, ms=10, mec="black", mew=1.0, ls="none", zorder=5)
        handles.append(Line2D([], [], color=colour, ls=ls, lw=1.2, marker=marker, ms=7, mec="black",
                              label=f"{method} (n = {len(runs)})"))
    points = np.concatenate([100 * c.acc for c in mine]) if mine else np.array([90.0])
    results = [100 * c.result[2] for c in mine] or [90.0]
    # low enough for every point, but no more than 5 points below the lowest result: a scratch control's first
    # epochs would otherwise squash the results into a sliver at the top
    low = max(float(points.min()), min(results) - 5.0)
    axes[0].set_ylim(max(0.0, math.floor(low - 0.2)), min(100.0, math.ceil(float(points.max()) + 0.3)))
    for ax, k, what in zip(axes, (0, 1), ("cumulative training compute (TFLOP, log scale)",
                                           "cumulative training time (s, log scale)")):
        ax.set_xscale("log")
        xs = np.concatenate([(c.flops if k == 0 else c.seconds) * scale[k] for c in mine]) if mine else np.array([1.0])
        _log_ticks(ax, float(xs.min()), float(xs.max()))
        ax.set_xlabel(what)
        ax.grid(alpha=0.3, which="major")
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].set_title(f"depth {depth}: against compute", loc="left", fontsize=9.5)
    axes[1].set_title("against time (compare as ratios)", loc="left", fontsize=9.5)
    handles += [Line2D([], [], color="grey", lw=0.9, alpha=0.6, label="one seed"),
                Line2D([], [], color="grey", marker="o", ms=4.5, alpha=0.7, ls="none", label="a run's result"),
                Line2D([], [], color="grey", marker="o", ms=9, mec="black", ls="none",
                       label="median result over seeds\n(median x, median accuracy)")]
    axes[1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.03, 1.0), borderaxespad=0, fontsize=7.5,
                   title="method (runs)", title_fontsize=8)
    return fig


# --- the table -------------------------------------------------------------------------------------------------
def _median_widths(curves: list[Curve]) -> str:
    shapes = {len(c.widths) for c in curves}
    if len(shapes) != 1:
        return ""
    return widths_text([int(round(float(np.median([c.widths[i] for c in curves])))) for i in range(shapes.pop())])


def cost_table(curves: list[Curve], methods: list[str], depth: int, reference: str | None) -> pd.DataFrame:
    """Per method at `depth`: its result's test accuracy (mean over seeds with a 95% interval), the FLOPs and
    seconds it trained in all (means, and as a multiple of the reference method's), its result's median widths, n."""
    mine = [c for c in curves if c.depth == depth]
    ref = [c for c in mine if c.method == reference]
    ref_flops = np.mean([c.spent[0] for c in ref]) if ref else math.nan
    ref_seconds = np.mean([c.spent[1] for c in ref]) if ref else math.nan
    rows = []
    for method in methods:
        runs = [c for c in mine if c.method == method]
        if not runs:
            continue
        acc = [100 * c.result[2] for c in runs]
        lo, hi, _ = mean_interval(acc)
        flops, secs = float(np.mean([c.spent[0] for c in runs])), float(np.mean([c.spent[1] for c in runs]))
        rows.append({
            "method": method,
            "result test accuracy (%)": f"{np.mean(acc):.2f}" + ("" if math.isnan(lo) else f" [{lo:.2f}, {hi:.2f}]"),
            "training TFLOP": tflop(flops),
            f"FLOPs ÷ {reference}'s": "" if math.isnan(ref_flops) else f"{flops / ref_flops:.2f}",
            "training s": seconds_text(secs),
            f"seconds ÷ {reference}'s": "" if math.isnan(ref_seconds) else f"{secs / ref_seconds:.2f}",
            "result widths (median per layer)": _median_widths(runs),
            "n": str(len(runs)),
        })
    table = pd.DataFrame(rows)
    if reference is None:
        table = table.drop(columns=[c for c in table.columns if "÷" in c])
    return table


# --- the section -----------------------------------------------------------------------------------------------
def _not_run(r: CostResult, run: list[str]) -> list[str]:
    """What of the section's runs is missing, each with the command that runs it."""
    b, lines = r.baseline, []
    if r.study_missing:
        lines.append(f"study `{b.study}`: {r.study_missing}; run it with `{shlex.join([*run, '--only', b.study])}`")
    todo = [p for p in r.pairs if not p.done] if r.pairs else []
    if todo or not r.pairs:
        count = f"{len(todo)} of {len(r.pairs)} runs" if r.pairs else f"all {len(b.pairs)} runs"
        waiting = sum(p.budget_flops is None for p in todo)
        wait = f" ({waiting} wait for their budget run in `{b.study}`)" if waiting else ""
        lines.append(f"baseline `{b.name}`: {count} not run yet{wait}; run it with "
                     f"`{shlex.join([*run, '--only', b.name])}`")
    return lines


def _threads_text(curves) -> str:
    threads = sorted({c.threads for c in curves if c.threads is not None})
    if not threads:
        return ""
    return f" The runs recorded {' or '.join(map(str, threads))} torch thread(s) per process."


def cost_section(doc, r: CostResult, run: list[str], report: list[str]) -> None:
    """The baseline's part of its question's section: what is compared, a figure and a table per depth, and what is
    not run yet with the command that runs it."""
    b = r.baseline
    doc.add(f"### Cost: accuracy against training compute and time (`{b.study}` and baseline `{b.name}`)", "")
    controllers = [m for m in r.methods if m != ORIGINAL and not m.startswith("scratch")]
    doc.add(f"Per depth, the test accuracy of each network a method trained, once it had trained it, against the "
            f"training FLOPs and seconds it had spent by then: rankprune's controllers of `{b.study}` "
            f"({', '.join(controllers) or 'none run yet'}), each run's scratch control (its chosen widths trained from a fresh start for the FLOPs its controller spent, scored at the end "
            f"of that budget), and the original notebook's loop (`{b.name}`: {b.width} units per hidden layer, Adam, a "
            "rebuild at numpy's matrix_rank every 3 epochs once test accuracy is at least 0.9 and gained at most 0.01, "
            f"15 networks at most) on the same data and seeds, stopped at {b.budget_rule()}.", "")
    doc.add("**The original loop decides on test accuracy, as the notebook did; rankprune decides on validation "
            "accuracy and only reports test accuracy**, so the loop's accuracies have seen the data they are scored on. "
            "FLOPs are training FLOPs, 3 x one sample's forward pass per sample trained on (evaluation and SVDs not "
            "counted). Seconds are training seconds (optimisation steps only), measured with two single-thread "
            "processes sharing the machine: read them as ratios between methods, not as speeds."
            + _threads_text(r.curves), "")
    doc.add("A run's result: rankprune's chosen network, drawn where it was trained (the controller trains on to its "
            "fixed point before it can choose, and the table counts all of it); the scratch control's network at the end "
            "of its budget; the loop's last network (it selects nothing). A scratch control's FLOPs are its own "
            "training, after the controller's run that found its widths.", "")
    doc.add(f"Its runs: `{shlex.join([*run, '--only', b.study, b.name])}`; this section: `{shlex.join(report)}`."
            + (f" Cost of the baseline: {b.cost}." if b.cost else ""), "")
    missing = _not_run(r, run)
    if missing:
        doc.add("**Not run yet:**", "")
        doc.bullets(missing)
    if r.unread:
        doc.add(f"*{len(r.unread)} run folder(s) could not be read and are left out:*", "")
        doc.bullets(list(r.unread[:5]))
    methods = r.methods
    for depth in b.depths:
        if not any(c.depth == depth for c in r.curves):
            doc.add(f"*Depth {depth}: no run finished yet.*", "")
            continue
        doc.add(f"#### Depth {depth}", "")
        doc.figure(f"{b.name}-depth-{depth}", lambda depth=depth: cost_figure(list(r.curves), methods, depth),
                   f"test accuracy against training compute and time, depth {depth}",
                   f"Depth {depth}: test accuracy against cumulative training compute (left, TFLOP) and time (right, "
                   "seconds), log axes. A line per run (one seed), through a point per network it trained: rankprune's "
                   "iterations, the loop's meta-iterations (and its last network, where the budget cut it short), and "
                   "every epoch of a scratch control (dashed), which trains one network. Small markers: each run's "
                   "result; large edged markers: the median over seeds of the result's cost and of its accuracy.")
        doc.table(cost_table(list(r.curves), methods, depth, r.reference))
    doc.add("Intervals: 95%, over seeds (analysis.mean_interval: Student's t below 8 seeds). Training TFLOP and s: "
            "means over seeds of everything each method trained; ÷: as a multiple of the mean of the method whose "
            "FLOPs set the loop's budget.", "")
