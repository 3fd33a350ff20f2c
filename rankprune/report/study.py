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
    doc.figure("rank-vs-test-acc", lambda: figures.rank_scatter(df, classes, signatures, "test_acc", metric.label("test"),
                                                                class_title=title),
               "network rank against test accuracy",
               "Each trial's network rank against its test accuracy, coloured by equivalence class. Look for "
               "whether more rank buys accuracy, and whether a class shares an accuracy.")
    gap = f"generalisation gap: train - test {metric.name} ({'pp' if metric is figures.ACCURACY else metric.unit})"
    doc.figure("rank-vs-gap", lambda: figures.rank_scatter(df, classes, signatures, "generalisation_gap", gap,
                                                           class_title=title),
               "network rank against the generalisation gap",
               "Each trial's network rank against its generalisation gap, coloured by equivalence class. Look for "
               "a rising trend: higher-rank networks overfitting more.")


def _classes(doc: _Document, s: StudyData) -> None:
    if s.frame.empty:
        return
    table = s.class_table
    doc.add("## Equivalence classes of measured rank" if s.mode == "survey" else "## Equivalence classes of convergent rank", "",
            f"Trials whose {_classes_by(s)}.", "")
    shown = table.assign(test_acc_mean=table["test_acc_mean"].map(_pct), test_acc_std=table["test_acc_std"].map(_pct))
    doc.table(shown.rename(columns={"test_acc_mean": "test acc % (mean)", "test_acc_std": "test acc (sd, pp)"}).astype(str))


def _trends(doc: _Document, s: StudyData) -> None:
    if s.frame.empty:
        return
    from rankprune.classes import rank_trends

    trends = rank_trends(s.frame)
    doc.add("## Rank trends", "", "Spearman correlation of the network rank with each outcome (nan: too few trials "
            "or no spread).", "")
    doc.table(trends.assign(spearman_rho=trends["spearman_rho"].map(lambda v: f"{v:.3f}"),
                            p_value=trends["p_value"].map(lambda v: f"{v:.3g}")).astype(str))


# --- the reference ---------------------------------------------------------------------------------
def _best_of_study(s: StudyData) -> dict | None:
    """The reference row of the finished trial with the highest validation accuracy, reported with its test
    accuracy."""
    r = s.best
    if r is None:
        return None
    shrunk = s.mode != "survey" and list(r["widths"]) != list(r["initial_widths"])
    return {"network": f"trial #{r['number']}: depth {r['depth']}, widths {_list(r['widths'])} (best validation accuracy)",
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
    return figures.optuna_figure(om.plot_param_importances(s.study, evaluator=evaluator),
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
                       f"Each trial by {' and '.join(names)}; highlighted: the Pareto front. Look for the trade-off "
                       "along the front: what one objective costs in the other.")
        varying = [k for k in {k for t in complete for k in t.params} if len({repr(t.params.get(k)) for t in complete}) > 1]
        if len(complete) >= 2 and varying:
            caveat = (f" **Caveat: {len(complete)} completed trials for {len(varying)} sampled parameters, fewer than "
                      f"{FANOVA_TRIALS_PER_PARAMETER} per parameter: fANOVA's random forest then ranks noise, and a "
                      "parameter that cannot matter (a seed) can come first. Read it as a hint of what to sample, not "
                      "a finding.**" if _too_few_for_fanova(len(complete), len(varying)) else "")
            doc.figure("optuna-importances", lambda: _importances(s, varying), "Optuna hyperparameter importances",
                       "How much of each objective's variance each sampled parameter explains (fANOVA). Look for the "
                       "parameter that moves the objective." + caveat)
        else:
            doc.add(f"*Figure not drawn (hyperparameter importances): needs at least 2 completed trials whose "
                    f"parameters vary; this study has {len(complete)} completed, {len(varying)} varying parameter(s).*", "")


# --- trials ----------------------------------------------------------------------------------------
def _trial_table(df: pd.DataFrame, classes: pd.Series) -> pd.DataFrame:
    params = [c for c in df.columns if c.startswith("param_") and c not in ("param_depth", "param_width", "param_width_profile")]
    rows = []
    for (_, r), cid in zip(df.iterrows(), classes):
        rows.append({
            "trial": r["number"], "class": cid, "initial widths": _list(r["initial_widths"]), "widths": _list(r["widths"]),
            "rank measure": r["rank_measure"], "ranks": _list(r["ranks"]), "rank sum": _num(r["network_rank_sum"]),
            "rank / width": f"{r['network_rank_normalized']:.3f}", "parameters": _count(r["parameters"]),
            "train acc %": _pct(r["train_acc"]), "test acc %": _pct(r["test_acc"]), "gap (pp)": _pct(r["generalisation_gap"]),
            **{c.removeprefix("param_"): _num(r[c]) for c in params},
            "iterations": _num(r["iterations"]), "stop": r["stop_reason"],
            "cumulative time (s)": _seconds(r["cumulative_seconds"]),
        })
    return pd.DataFrame(rows)


def _trials(doc: _Document, s: StudyData) -> None:
    if not s.frame.empty:
        doc.add("## Trials", "", "Each finished trial's run folder holds its epochs and spectra: "
                "`rankprune report RUN_FOLDER` draws them.", "")
        doc.table(_trial_table(s.frame, s.classes))


def _failed(doc: _Document, s: StudyData) -> None:
    if s.failed:
        doc.add("## Failed trials", "")
        doc.table(pd.DataFrame([{"trial": str(t.number), "reason": t.user_attrs.get("fail_reason", "not recorded")}
                                for t in s.failed]))


def _jamming_points(s: StudyData) -> pd.DataFrame:
    """Per epoch of every finished trial trained with the hinge loss: N_Delta / N and the training loss, one
    `run` per (trial, depth, parameter count) since a shrink changes N; `epoch` counts the trial's epochs."""
    from rankprune.runfolder import EPOCHS, ITERATIONS, RunFolder

    rows = []
    for folder in (s.frame["run_folder"] if "run_folder" in s.frame else []):
        run = RunFolder(folder)
        if not isinstance(folder, str) or not (run.path / EPOCHS).is_file():
            continue
        params = {(r["depth"], r["iteration"]): r["parameters"] for r in run.rows(ITERATIONS)}
        for step, e in enumerate(run.rows(EPOCHS), start=1):
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
               "Every finished trial trained with the quadratic hinge: training loss against N_Delta / N (the training "
               "samples with an unsatisfied margin per parameter), a point per epoch coloured by the epoch, each network "
               "labelled with its parameter count (a colour per epoch counted across the trial's iterations). Look for where the networks' last points cross the dashed line "
               "N_Delta = N: below it the loss can reach zero (jammed networks fit every margin).")


# The report, top to bottom.
SECTIONS = (_header, _missing, _rank_scatter, _classes, _trends, _study_reference, _optuna_plots, _jamming, _trials,
            _failed)


def render_study(study, out: Path, storage: str, by: str = "vector", tol: float = 0.0, fmt: str = "png",
                 dpi: float = figures.DPI) -> Path:
    """Write the report of an Optuna study to out/report.md (figures in out/figures, `fmt` files at `dpi`), its
    equivalence classes formed `by` within `tol` as `rankprune study classes` forms them; return its path."""
    gathered = read_study(study, storage, by, tol)
    doc = _Document(out, fmt, dpi)
    for section in SECTIONS:
        section(doc, gathered)
    return doc.write()
