"""The report of an Optuna study: one function per section, in the order the report shows them.

Optuna, scipy (via rankprune.classes) and rankprune.study are imported inside the functions that need
them: a run report must not pay for them at import.
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import pandas as pd

from rankprune import figures
from rankprune.report.document import _count, _Document, _list, _num, _pct, _seconds
from rankprune.report.gather import StudyData, read_study
from rankprune.report.reference import _reference
from rankprune.units import BOUND_MARKER_WORDS, bound_note, sides_of, sum_side, widths_text

# What `rankprune study classes --by` accepts (rankprune.classes.BY, which imports scipy: not at import here),
# and what a class's trials then share: in prose, and as the legend of the rank figures.
CLASSES_BY = {"vector": ("per-layer ranks (same depth)", "per-layer ranks"),
              "sum": ("network ranks (sums)", "rank sum"),
              "normalized": ("normalised network ranks", "rank / hidden width")}

# Units of the metrics a study can optimise (study.METRICS), for axis labels. Accuracies are fractions in the
# storage and percentages everywhere in the report: Optuna's plots draw them x 100 too (PERCENT).
METRIC_UNITS = {
    "test_acc": "%", "val_acc": "%", "train_acc": "%",
    "test_loss": "cross-entropy, nats", "train_loss": "cross-entropy, nats",
    "generalisation_gap": "train - test accuracy, pp", "network_rank_sum": "singular directions",
    "network_rank_normalized": "rank / hidden width", "network_rank_min": "singular directions",
    "rank_parameters": "count", "parameters": "count", "cumulative_seconds": "s", "cumulative_flops": "FLOPs",
    "epochs": "count",
}
PERCENT = {"test_acc", "val_acc", "train_acc", "generalisation_gap"}

# fANOVA fits a random forest to the trials; with fewer than this many trials per sampled parameter its ranking
# is mostly noise (a study of 4 trials ranked the seed, which cannot matter, first).
FANOVA_TRIALS_PER_PARAMETER = 10


def _metric_label(s: StudyData, name: str) -> str:
    if name in PERCENT and s.metric is figures.R_SQUARED:  # a regression task's "accuracies" are R^2
        return f"{name} (R^2 {figures.R_SQUARED.unit})"
    return f"{name} ({METRIC_UNITS[name]})" if name in METRIC_UNITS else name


def _scale(name: str) -> float:
    return 100.0 if name in PERCENT else 1.0


def _classes_by(s: StudyData) -> str:
    """How classes were formed, as the command that makes the same table."""
    what = CLASSES_BY[s.by][0]
    close = "are equal" if s.tol == 0 else f"differ by at most {s.tol:g} (single linkage: chained)"
    return (f"{what} {close}: the classes of `rankprune study classes {s.study.study_name} --by {s.by} "
            f"--tol {s.tol:g}`; this report's `--by` and `--tol` choose others")


# --- header and what is missing --------------------------------------------------------------------
def _header(doc: _Document, s: StudyData) -> None:
    from rankprune.study import _redact

    study = s.study
    doc.add(f"# Study report: `{study.study_name}`", "")
    objectives = ", ".join(f"{n} ({d.name.lower()})" for n, d in zip(s.names, study.directions))
    doc.add(f"**Storage:** `{_redact(s.storage)}`. Mode {s.mode}; objectives: {objectives}. "
            f"Trials: {len(s.trials)} in all ({', '.join(f'{n} {st}' for st, n in sorted(s.states.items())) or 'none'}).", "")
    warning = _test_objective_warning(s)
    if warning:
        doc.add(f"> **Warning: {warning}.** Optuna's plots below (history, Pareto front, importances) are of those "
                "objectives; the best trial and the Pareto front of this report are chosen on validation instead.", "")


def _test_objective_warning(s: StudyData) -> str | None:
    from rankprune.study import test_objective_warning

    return test_objective_warning(s.names)


def _missing(doc: _Document, s: StudyData) -> None:
    df, states, repeats = s.frame, s.states, s.repeats
    gaps = []
    if not s.trials:
        gaps.append("no trials yet")
    elif df.empty:
        gaps.append("no finished trial yet: no rank figures, no classes")
    if states.get("running"):
        gaps.append(f"{states['running']} trial(s) still running (or killed without a heartbeat): a snapshot")
    if repeats:
        gaps.append(f"{len(repeats)} completed trial(s) repeat an earlier trial's parameters and are counted once: "
                    + ", ".join(f"#{a} (= #{b})" for a, b in sorted(repeats.items())))
    if len(df) + len(repeats) < len(s.complete):
        gaps.append(f"{len(s.complete) - len(df) - len(repeats)} completed trial(s) lack the rank attributes: left out of the rank figures")
    if gaps:
        doc.add("## What is missing", "")
        doc.bullets(gaps)


# --- rank against outcomes -------------------------------------------------------------------------
def _rank_scatter(doc: _Document, s: StudyData) -> None:
    if s.frame.empty:
        return
    df, classes = s.frame, s.classes
    signatures = dict(zip(s.class_table["class"], s.class_table["signature"]))
    ranks_are = ("measured ranks at saturation (a survey: each network trained once, never shrunk)" if s.mode == "survey"
                 else "convergent ranks (where the controller stopped)")
    metric = s.metric
    doc.add("## Network rank against accuracy and generalisation", "",
            f"Network rank: the sum of the hidden layers' {ranks_are}. Equivalence class: trials whose "
            f"{_classes_by(s)}.", "")
    title = f"equivalence class: {CLASSES_BY[s.by][1]}"
    censored = _censored(s).map(sum_side)  # the side each trial's network rank is bounded on, None if measured
    marked = " " + _censored_means(s, set(censored.dropna()), markers=True) if censored.notna().any() else ""
    doc.figure("rank-vs-test-acc", lambda: figures.rank_scatter(df, classes, signatures, "test_acc", metric.label("test"),
                                                                class_title=title, censored=censored),
               "network rank against test accuracy",
               "Each trial's network rank against its test accuracy, coloured by equivalence class." + marked
               + " Look for whether more rank buys accuracy, and whether a class shares an accuracy.")
    gap = f"generalisation gap: train - test {metric.name} ({'pp' if metric is figures.ACCURACY else metric.unit})"
    doc.figure("rank-vs-gap", lambda: figures.rank_scatter(df, classes, signatures, "generalisation_gap", gap,
                                                           class_title=title, censored=censored),
               "network rank against the generalisation gap",
               "Each trial's network rank against its generalisation gap, coloured by equivalence class." + marked
               + " Look for a rising trend: higher-rank networks overfitting more.")


def _censored(s: StudyData) -> pd.Series:
    """Per row of the frame, per hidden layer: why its result is a bound (study.censored_layers), else None."""
    from rankprune.study import censored_layers

    return pd.Series([censored_layers(r, s.mode) for r in s.frame.to_dict("records")], index=s.frame.index, dtype=object)


def _censored_means(s: StudyData, sides: set[str], markers: bool = False) -> str:
    """What a censored trial is, for the sides of bound present (units.bound_note): `markers`, as the rank figures
    draw them; else as the tables write them."""
    if s.mode == "survey":  # a survey's result is its rank: a lower bound where a layer used every unit it had
        return (f"{BOUND_MARKER_WORDS['>='] if markers else repr('>= N')} marks a censored trial: a layer whose measured "
                "rank reached its width (a survey never shrinks: every unit used, the layer might use more), so its "
                "rank is a lower bound, not a measurement.")
    return bound_note(sides, markers) + (" A trial with any censored layer has a censored network rank." if markers else "")


def _classes(doc: _Document, s: StudyData) -> None:
    if s.frame.empty:
        return
    table = s.class_table
    doc.add("## Equivalence classes of measured rank" if s.mode == "survey" else "## Equivalence classes of convergent rank", "",
            f"Trials whose {_classes_by(s)}.", "")
    from rankprune.study import censored_members

    # accuracies (fractions) as percentages, whichever of them the class table has
    shown = table.assign(**{c: table[c].map(_pct) for c in table.columns if c.endswith(("_acc", "_acc_mean", "_acc_std"))})
    shown = shown.rename(columns={"test_acc_mean": "test acc % (mean)", "test_acc_std": "test acc (sd, pp)",
                                  "representative_val_acc": "representative: val acc %",
                                  "representative_test_acc": "representative: test acc %"})
    censored = censored_members(s.frame, s.classes, s.mode)
    if any(censored.values()):
        doc.add(f"The censored column lists each member whose result is a bound, with its "
                f"{'ranks' if s.mode == 'survey' else 'widths'}. " + _censored_means(s, sides_of(list(_censored(s)))), "")
    # the members whose result is a bound, marked '>= N' (study.censored_layers)
    shown = shown.assign(censored=shown["class"].map(lambda c: censored.get(int(c), "")))
    doc.table(shown.astype(str))


def _trends(doc: _Document, s: StudyData) -> None:
    if s.frame.empty:
        return
    from rankprune.classes import rank_trends

    trends = rank_trends(s.frame)
    doc.add("## Rank trends", "", "Spearman correlation of the network rank with each outcome (nan: too few trials "
            "or no spread).", "")
    excluded = trends.attrs.get("excluded") or []
    if excluded:
        doc.add(f"Left out as censored (a bound, not a measured rank), {len(excluded)} trial(s): "
                + ", ".join(map(str, excluded)) + ".", "")
    coefficients = ("spearman_rho", "ci_low", "ci_high")
    doc.table(trends.assign(**{c: trends[c].map(lambda v: f"{v:.3f}") for c in trends.columns if c in coefficients},
                            **{c: trends[c].map(lambda v: f"{v:.3g}") for c in trends.columns if c.startswith("p_")})
              .astype(str))


# --- a grid over two parameters --------------------------------------------------------------------
# What each heatmap of a two-parameter grid shows; the convergent width is the chosen widths' total (an evolve study)
# or, in a survey, the rank measured at the sampled widths (its network rank).
HEATMAP_METRICS = ("test_acc", "test_loss", "val_acc")
SEED_PARAMETER = "seed"
MAX_GRID_VALUES = 16  # values of a parameter a heatmap's axis holds: more (a range sampled at random) is unreadable


def grid_parameters(frame: pd.DataFrame) -> list[str] | None:
    """The two parameters (names without "param_", in the frame's column order) a study's finished trials vary
    besides the seed, or None where they vary one, or three or more. A space key held at one value does not count."""
    if frame.empty:
        return None
    varied = [c.removeprefix("param_") for c in frame.columns
              if c.startswith("param_") and c != f"param_{SEED_PARAMETER}"
              and frame[c].dropna().map(repr).nunique() > 1]
    return varied if len(varied) == 2 else None


def width_metric(mode: str) -> str:
    """The column a study's convergent width is read from (heatmap_table computes total_width)."""
    return "network_rank_sum" if mode == "survey" else "total_width"


def _metric_column(frame: pd.DataFrame, metric: str) -> pd.Series:
    if metric == "total_width" and "total_width" not in frame:
        return frame["widths"].map(lambda w: float(sum(w)) if isinstance(w, (list, tuple)) and len(w) else float("nan"))
    return pd.to_numeric(frame[metric], errors="coerce").astype(float)


def heatmap_table(frame: pd.DataFrame, x: str, y: str, metric: str, mode: str = "evolve") -> pd.DataFrame:
    """One row per (x, y) pair of values the trials of `frame` (classes.trials_frame) were run at, sorted by x then y:
    the mean of `metric` over them (its seeds), n (the trials with a value), censored (how many of them have a
    censored layer, study.censored_layers) and side (the side a sum of their bounds lies on, units.sum_side; None
    where none is censored). `metric` is a column of the frame, or "total_width" (the chosen widths' total). Trials
    without a value of x, y or the metric are left out."""
    from rankprune.study import censored_layers

    columns = [x, y, "mean", "n", "censored", "side"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    marks = [censored_layers(r, mode) for r in frame.to_dict("records")]
    data = pd.DataFrame({x: frame[f"param_{x}"].to_numpy(), y: frame[f"param_{y}"].to_numpy(),
                         "value": _metric_column(frame, metric).to_numpy(), "marks": marks})
    data = data[data[x].notna() & data[y].notna() & data["value"].notna()]
    rows = []
    for (vx, vy), cell in data.groupby([x, y], sort=False):
        layers = [m for trial in cell["marks"] for m in trial]
        rows.append({x: vx, y: vy, "mean": float(cell["value"].mean()), "n": len(cell),
                     "censored": int(sum(any(trial) for trial in cell["marks"])), "side": sum_side(layers)})
    table = pd.DataFrame(rows, columns=columns)
    order = sorted(range(len(table)), key=lambda i: (_sort_key(table[x].iloc[i]), _sort_key(table[y].iloc[i])))
    table = table.iloc[order].reset_index(drop=True)
    table["side"] = pd.Series([rows[i]["side"] for i in order], dtype=object)  # None, not NaN, where measured
    return table


def _sort_key(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def _heatmap_label(s: StudyData, metric: str) -> str:
    from rankprune.findings.figures import label_of

    if metric in PERCENT and s.metric is figures.R_SQUARED:
        return s.metric.label("validation" if metric == "val_acc" else "test")
    return label_of(metric)


def _heatmaps(doc: _Document, s: StudyData) -> None:
    """A study whose trials vary exactly two parameters besides the seed: a heatmap per metric of the mean over the
    trials at each pair of values."""
    pair = grid_parameters(s.frame)
    if pair is None:
        return
    from rankprune.findings.figures import label_of

    x, y = pair
    counts = {p: s.frame[f"param_{p}"].dropna().map(repr).nunique() for p in pair}
    if max(counts.values()) > MAX_GRID_VALUES:  # a continuous range sampled at random: a cell per trial, unreadable
        doc.add(f"## The grid: {x} by {y}", "",
                f"*Heatmaps not drawn: the trials vary two parameters besides the seed, but at "
                f"{counts[x]} values of {x} and {counts[y]} of {y}; a grid of at most {MAX_GRID_VALUES} values a side "
                "is drawn.*", "")
        return
    width = width_metric(s.mode)
    what = {"test_acc": f"test {s.metric.text}", "val_acc": f"validation {s.metric.text}", "test_loss": "test loss",
            width: "network rank (the measured ranks' sum)" if s.mode == "survey" else "convergent width (the chosen widths' total)"}
    doc.add(f"## The grid: {x} by {y}", "",
            f"The trials vary two parameters besides the seed, {x} and {y}: each heatmap gives per pair of values the "
            "mean over the trials (seeds) run at it, with their number n.", "")
    for metric in (*HEATMAP_METRICS, width):
        if metric != "total_width" and (metric not in s.frame or s.frame[metric].isna().all()):
            continue
        table = heatmap_table(s.frame, x, y, metric, s.mode)
        if table.empty:
            continue
        bounds = metric == width
        censored = int(table["censored"].sum())
        note = None
        if censored:
            sides = sorted(set(table["side"].dropna()))
            note = ("Hatched cells (bold) are censored, bounds not measurements: " + (
                f"at least one of their trials' {'ranks reached their widths' if s.mode == 'survey' else 'widths is censored'}, "
                + ("so the mean is a bound (" + ", ".join(f"'{side} N'" for side in sides) + ")." if bounds else
                   f"so the network's {'rank' if s.mode == 'survey' else 'convergent width'} is a bound and this "
                   "value is not that of a converged network.")))
        name = "heatmap-" + re.sub(r"[^A-Za-z0-9_.-]", "_", metric)
        doc.figure(name, lambda t=table, m=metric, b=bounds, n=note: figures.heatmap(
                       t, x, y, label_of(x), label_of(y), _heatmap_label(s, m),
                       f"{what[m]} by {x} and {y}: the mean over the trials (seeds)", scale=_scale(m), bounds=b, note=n),
                   f"heatmap of {what[metric]} by {x} and {y}",
                   f"Mean {what[metric]} over the trials (seeds) at each pair of {x} (x) and {y} (y); each cell gives "
                   "the mean (3 significant digits) and the number of trials n; grey: no trial with a value."
                   + (f" {note}" if note else "") + (f" {_censored_means(s, set(table['side'].dropna()))}"
                                                      if note and bounds else ""))


# --- the Pareto front, on validation --------------------------------------------------------------
# What a test-split objective (study.TEST_METRICS) is ranked on instead: its validation counterpart, a column of the
# trials frame or one derived from it. test_loss has none among a trial's attributes.
VALIDATION_OF = {"test_acc": "val_acc", "generalisation_gap": "validation_gap"}


def pareto_front(values: pd.DataFrame, maximise: list[bool]) -> list:
    """The index labels of the rows no other row dominates (at least as good in every column, better in one)."""
    signs = [1.0 if up else -1.0 for up in maximise]
    points = values.to_numpy(dtype=float) * signs
    keep = []
    for i, p in enumerate(points):
        if not any((q >= p).all() and (q > p).any() for j, q in enumerate(points) if j != i):
            keep.append(values.index[i])
    return keep


def _front_objectives(s: StudyData) -> list[tuple[str, str, bool]]:
    """(objective, the column it is ranked on, maximised) per objective of the study."""
    return [(name, VALIDATION_OF.get(name, name), d.name.lower() == "maximize") for name, d in zip(s.names, s.study.directions)]


def _validation_front(doc: _Document, s: StudyData) -> None:
    """A multi-objective study's Pareto front among the finished trials, chosen on validation: a test-split
    objective is replaced by its validation counterpart. Each trial is shown with its test accuracy."""
    if s.frame.empty or len(s.names) < 2:
        return
    frame = s.frame.assign(validation_gap=s.frame["train_acc"] - s.frame["val_acc"]) if "val_acc" in s.frame else s.frame
    objectives = _front_objectives(s)
    if any(column not in frame for _, column, _ in objectives):
        return  # objectives the trials do not record (an unnamed study's "objective 0"): Optuna's plot shows it
    values = frame[[column for _, column, _ in objectives]].astype(float)
    values = values[values.notna().all(axis=1)]
    front = frame.loc[pareto_front(values, [up for _, _, up in objectives])]
    first, column, up = objectives[0]
    front = front.sort_values([column, "number"], ascending=[not up, True])
    censored = _censored(s).loc[front.index]
    replaced = [f"{name} by {column}" for name, column, _ in objectives if column != name]
    gap = "generalisation_gap" in s.names
    doc.add("## Pareto front, chosen on validation", "",
            f"The {len(front)} finished trial(s) that no other trial beats in every objective ("
            + ", ".join(f"{column} {'max' if up else 'min'}imised" for _, column, up in objectives) + "), each with its "
            "test accuracy, which played no part in choosing it."
            + (f" The study optimises a test-split metric; this front replaces {' and '.join(replaced)}"
               + (" (validation_gap: training minus validation accuracy)" if gap else "")
               + ", so it can differ from Optuna's Pareto plot below." if replaced else "")
            + (" test_loss has no validation counterpart among the trials' attributes: the front is ranked on it as "
               "the study was." if "test_loss" in s.names else ""), "")
    rows = []
    for (_, r), marks in zip(front.iterrows(), censored):
        row = {"trial": r["number"]}
        for _, column, _ in objectives:
            percent = column in PERCENT or column == "validation_gap"
            label = {"val_acc": "val acc %", "train_acc": "train acc %", "validation_gap": "validation gap (pp)",
                     "generalisation_gap": "gap (pp)"}.get(column, f"{column} %" if percent else column)
            row[label] = _pct(r[column]) if percent else _num(r[column])
        row.setdefault("val acc %", _pct(r["val_acc"]))
        row.update({"test acc %": _pct(r["test_acc"]),
                    "widths": _list(r["widths"]) if s.mode == "survey" else widths_text(r["widths"], marks),
                    "ranks": _censored_ranks(r["ranks"], marks) if s.mode == "survey" else _list(r["ranks"]),
                    "parameters": _count(r["parameters"])})
        rows.append(row)
    doc.table(pd.DataFrame(rows))


# --- the reference ---------------------------------------------------------------------------------
def _best_of_study(s: StudyData) -> dict | None:
    """The reference row of the finished trial with the highest validation accuracy, reported with its test
    accuracy."""
    r = s.best
    if r is None:
        return None
    shrunk = s.mode != "survey" and list(r["widths"]) != list(r["initial_widths"])
    widths = widths_text(r["widths"], None if s.mode == "survey" else r.get("censored"))
    return {"network": f"trial #{r['number']}: depth {r['depth']}, widths {widths} (best validation accuracy)",
            "parameters": r["parameters"], "test_acc": r["test_acc"], "source": "this study",
            "pruning": f"rank-pruned (structured: whole units) from {_list(r['initial_widths'])}" if shrunk else
            "none: trained once at its initial widths (a survey trial, not shrunk)" if s.mode == "survey" else
            "none: the controller kept its initial widths"}


def _study_reference(doc: _Document, s: StudyData) -> None:
    _reference(doc, _best_of_study(s), s.best_data, s.best_missing, s.best_described)


# --- Optuna's own plots ----------------------------------------------------------------------------
def _optuna_plots(doc: _Document, s: StudyData) -> None:
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # headless; never switch a backend the caller chose
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())  # Optuna draws with pyplot: close what it opens, drawn or not
    try:
        # Optuna's plots switch matplotlib's global style (ggplot); rc_context puts the caller's back, so the
        # report's own figures drawn after these keep theirs.
        with matplotlib.rc_context():
            _optuna_figures(doc, s)
    finally:
        for number in set(plt.get_fignums()) - before:
            plt.close(number)


def _history(s: StudyData, i: int):
    """Optuna's optimisation history of objective i, accuracies in %."""
    from optuna.visualization import matplotlib as om

    name, scale = s.names[i], _scale(s.names[i])
    single = len(s.names) == 1
    axes = om.plot_optimization_history(s.study, target=(lambda t: scale * t.value) if single else
                                        (lambda t: scale * t.values[i]), target_name=name)
    return figures.optuna_figure(axes, "trial number", _metric_label(s, name), integer_x=True)


def _pareto(s: StudyData):
    """Optuna's Pareto front of 2 or 3 objectives, accuracies in %."""
    from optuna.visualization import matplotlib as om

    scales = [_scale(n) for n in s.names]
    axes = om.plot_pareto_front(s.study, target_names=s.names,
                                targets=lambda t: tuple(k * v for k, v in zip(scales, t.values)))
    return figures.optuna_figure(axes, *([_metric_label(s, n) for n in s.names] if len(s.names) == 2 else ()))


def _too_few_for_fanova(n_trials: int, n_parameters: int) -> bool:
    return n_trials < FANOVA_TRIALS_PER_PARAMETER * n_parameters


def _importances(s: StudyData, varying: list[str]):
    """Optuna's fANOVA importances as percentages, titled with the sample-size caveat where it applies."""
    import optuna
    from optuna.visualization import matplotlib as om

    # fANOVA, seeded: Optuna 5's default (PED-ANOVA) ranks parameters by how they reach *low*
    # values, which misreads a maximised objective such as test accuracy.
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    n = len(s.complete)
    title = (f"{n} trials for {len(varying)} sampled parameters: too few to rank them (noise)"
             if _too_few_for_fanova(n, len(varying)) else f"fANOVA over {n} trials")
    return figures.optuna_figure(om.plot_param_importances(s.study, evaluator=evaluator, params=varying),
                                 "importance: share of the objective's variance explained (%; fANOVA, sums to 100%)",
                                 "sampled parameter", shares=True, title=title)


def _optuna_figures(doc: _Document, s: StudyData) -> None:
    import optuna

    study, names, complete = s.study, s.names, s.complete
    doc.add("## Optuna's plots", "")
    if not complete:
        doc.add("*No completed trial: Optuna has nothing to plot.*", "")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if len(names) == 1:
            doc.figure("optuna-history", lambda: _history(s, 0), f"Optuna optimisation history of {names[0]}",
                       f"{names[0]} of each trial and the best so far, by trial number. Look for the best value "
                       "levelling off: more trials would buy little.")
        else:
            for i, name in enumerate(names):
                doc.figure(f"optuna-history-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}", lambda i=i: _history(s, i),
                           f"Optuna optimisation history of {name}",
                           f"{name} ({study.directions[i].name.lower()}d) of each trial, by trial number. Look for "
                           "whether later trials (the sampler's informed guesses) do better than the first.")
            doc.figure("optuna-pareto", lambda: _pareto(s), "Optuna Pareto front",
                       f"Each trial by {' and '.join(names)}; highlighted: the Pareto front"
                       + (" of these objectives, one of them on the test split (the warning above; the front chosen on "
                          "validation is tabled above)" if _test_objective_warning(s) else "")
                       + ". Look for the trade-off along the front: what one objective costs in the other.")
        # The seed is the unit of replication, not a setting to tune: its share of the variance is noise by
        # construction, so it is left out of the importances (the seeds' spread is reported with each effect).
        varying = sorted(k for k in {k for t in complete for k in t.params}
                         if k != "seed" and len({repr(t.params.get(k)) for t in complete}) > 1)
        if len(complete) >= 2 and varying:
            caveat = (f" **Caveat: {len(complete)} completed trials for {len(varying)} sampled parameters, fewer than "
                      f"{FANOVA_TRIALS_PER_PARAMETER} per parameter: fANOVA's random forest then ranks noise, and a "
                      "parameter that cannot matter (a seed) can come first. Read it as a hint of what to sample, not "
                      "a finding.**" if _too_few_for_fanova(len(complete), len(varying)) else "")
            doc.figure("optuna-importances", lambda: _importances(s, varying), "Optuna hyperparameter importances",
                       "How much of each objective's variance each sampled parameter explains (fANOVA). Look for the "
                       "parameter that moves the objective. The seed, the unit of replication, is left out." + caveat)
        else:
            doc.add(f"*Figure not drawn (hyperparameter importances): needs at least 2 completed trials whose "
                    f"parameters vary; this study has {len(complete)} completed, {len(varying)} varying parameter(s).*", "")


# --- trials ----------------------------------------------------------------------------------------
def _trial_table(df: pd.DataFrame, classes: pd.Series, censored: pd.Series | None = None, mode: str = "evolve") -> pd.DataFrame:
    """One row per finished trial. A censored result (study.censored_layers) reads '>= N': an evolve trial's chosen
    widths, a survey trial's ranks."""
    params = [c for c in df.columns if c.startswith("param_") and c not in ("param_depth", "param_width", "param_width_profile")]
    if censored is None:
        censored = pd.Series([[]] * len(df), index=df.index, dtype=object)
    survey = mode == "survey"
    rows = []
    for (_, r), cid, marks in zip(df.iterrows(), classes, censored):
        rows.append({
            "trial": r["number"], "class": cid, "initial widths": _list(r["initial_widths"]),
            "widths": _list(r["widths"]) if survey else widths_text(r["widths"], marks),
            "rank measure": r["rank_measure"],
            "ranks": _censored_ranks(r["ranks"], marks) if survey else _list(r["ranks"]),
            "rank sum": _num(r["network_rank_sum"]),
            "rank / width": f"{r['network_rank_normalized']:.3f}", "parameters": _count(r["parameters"]),
            "train acc %": _pct(r["train_acc"]), "val acc %": _pct(r.get("val_acc")), "test acc %": _pct(r["test_acc"]),
            "gap (pp)": _pct(r["generalisation_gap"]),
            **{c.removeprefix("param_"): _num(r[c]) for c in params},
            "iterations": _num(r["iterations"]), "stop": r["stop_reason"],
            "cumulative time (s)": _seconds(r["cumulative_seconds"]),
        })
    return pd.DataFrame(rows)


def _censored_ranks(ranks, marks) -> str:
    """A survey trial's ranks, a censored one (it reached its layer's width) as '>= N'."""
    if not any(marks):
        return _list(ranks)
    return widths_text([_num(v) or "nan" for v in ranks], marks)


def _stored_folders(s: StudyData) -> str:
    """Where the run folders of trials whose workers uploaded them to an artifact store are, for this reader."""
    from rankprune.artifacts import ARTIFACT_ATTR, default_cache

    if ARTIFACT_ATTR not in s.frame or not s.frame[ARTIFACT_ATTR].map(lambda v: isinstance(v, str)).any():
        return ""
    cache = getattr(s.fetcher, "cache", None) or default_cache()
    return (f" Trials whose workers uploaded their folders to an artifact store (the `{ARTIFACT_ATTR}` attribute) "
            f"are fetched into `{cache}/ARTIFACT_ID/trial-NNNN` when a report reads them.")


def _trials(doc: _Document, s: StudyData) -> None:
    if not s.frame.empty:
        doc.add("## Trials", "", "Each finished trial's run folder holds its epochs and spectra: "
                "`rankprune report RUN_FOLDER` draws them." + _stored_folders(s), "")
        doc.table(_trial_table(s.frame, s.classes, _censored(s), s.mode))


def _failed(doc: _Document, s: StudyData) -> None:
    if s.failed:
        doc.add("## Failed trials", "")
        doc.table(pd.DataFrame([{"trial": str(t.number), "reason": t.user_attrs.get("fail_reason", "not recorded")}
                                for t in s.failed]))


def _jamming_points(s: StudyData) -> pd.DataFrame:
    """Per epoch of every finished trial trained with the hinge loss: N_Delta / N and the training loss, one
    `run` per (trial, depth, parameter count) since a shrink changes N; `epoch` counts the trial's epochs."""
    from rankprune.artifacts import ArtifactUnavailable
    from rankprune.runfolder import EPOCHS, ITERATIONS, RunFolder

    # Where the space does not sample the loss, every trial trained with the first's: a first trial without N_Delta
    # settles it, and the other folders are not read (nor fetched from an artifact store).
    one_loss = not any("loss" in str(k) for k in (s.study.user_attrs.get("space") or {}))
    rows = []
    for trial in (s.frame.to_dict("records") if "run_folder" in s.frame else []):
        folder = trial["run_folder"]
        if not isinstance(folder, str):
            continue
        try:
            run = RunFolder(s.fetcher.folder(trial, folder) if s.fetcher is not None else folder)
        except ArtifactUnavailable:
            continue
        if not (run.path / EPOCHS).is_file():
            continue
        params = {(r["depth"], r["iteration"]): r["parameters"] for r in run.rows(ITERATIONS)}
        epochs = run.rows(EPOCHS)
        if one_loss and not any(e.get("n_delta") is not None for e in epochs):
            break
        for step, e in enumerate(epochs, start=1):
            n = params.get((e["depth"], e["iteration"]))
            if e.get("n_delta") is None or not n:
                continue
            # One line per network size: an anneal (same widths) continues its shrink iteration's line.
            rows.append({"run": f"{folder}:{e['depth']}:{n}", "label": f"{n:,}", "epoch": step,
                         "x": e["n_delta"] / n, "train_loss": e["train_loss"]})
    return pd.DataFrame(rows)


def _jamming(doc: _Document, s: StudyData) -> None:
    """A study of networks trained with the hinge loss: the jamming transition's plot."""
    if s.frame.empty:
        return
    points = _jamming_points(s)
    if points.empty:
        return
    from rankprune import figures_dynamics

    doc.add("## The jamming transition", "")
    doc.figure("jamming", lambda: figures_dynamics.jamming(points), "training loss against N_Delta / N",
               "Every finished trial trained with the quadratic hinge: training loss against N_Delta / N (unsatisfied "
               "constraints, one per training sample and output, per parameter), a point per epoch coloured by the epoch "
               "counted across the trial's iterations, each network labelled with its parameter count where there is "
               "room. Look for where the networks' last points sit against the dashed line N_Delta = N: to its left "
               "there are fewer unsatisfied constraints than parameters, and the loss can reach zero (unjammed); to "
               "its right the network is too small to fit them (jammed).")


# The report, top to bottom.
SECTIONS = (_header, _missing, _rank_scatter, _classes, _trends, _heatmaps, _validation_front, _study_reference, _optuna_plots, _jamming,
            _trials, _failed)


def render_study(study, out: Path, storage: str, by: str = "vector", tol: float = 0.0, fmt: str = "png",
                 dpi: float = figures.DPI, root=None, fetcher=None) -> Path:
    """Write the report of an Optuna study to out/report.md (figures in out/figures, `fmt` files at `dpi`), its
    equivalence classes formed `by` within `tol` as `rankprune study classes` forms them; return its path."""
    gathered = read_study(study, storage, by, tol, root, fetcher)
    doc = _Document(out, fmt, dpi)
    for section in SECTIONS:
        section(doc, gathered)
    return doc.write()
