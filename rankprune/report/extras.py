"""What an experiment of a findings suite shows besides its hypotheses: its study report's own sections (the
equivalence classes of its trials, heatmaps over a two-parameter grid), the overfitting pairs of its trials, and
published results set beside its own (suite keys `show` and `published`).

Each is drawn in the experiment's section of its own question, from the study as `rankprune report STUDY` reads it,
so the findings report and the study's report never disagree.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pandas as pd

from rankprune.findings.suite import SHOW, Experiment

__all__ = ["EXTRAS", "render_extras", "published_table"]

DEMOTE = "##"  # a study report's "## Section" sits under the findings report's "### study"


class _Nested:
    """A findings document seen as a study report's: its headings one level down and two, its figures named after
    the experiment, so that two studies' heatmaps never share a file."""

    def __init__(self, doc, prefix: str):
        self.doc, self.prefix = doc, prefix

    def add(self, *lines: str) -> None:
        # the study report's own flags are not the findings report's: the suite file's `classes` chooses them here
        lines = (line.replace("this report's `--by` and `--tol` choose others",
                              "the suite file's `classes = { by, tol }` chooses others") for line in lines)
        self.doc.add(*(DEMOTE + line if line.startswith("#") else line for line in lines))

    def table(self, df: pd.DataFrame) -> None:
        if "initial_widths" in df:  # a class of 25 members lists 25 starts: each distinct start once, with its count
            df = df.assign(initial_widths=df["initial_widths"].map(_distinct_starts))
        self.doc.table(df)

    def bullets(self, items: list[str]) -> None:
        self.doc.bullets(items)

    def figure(self, name: str, draw: Callable[[], Any], alt: str, caption: str) -> bool:
        return self.doc.figure(f"{self.prefix}-{name}", draw, alt, caption)


def _distinct_starts(text: str) -> str:
    starts = [t.strip() for t in str(text).split(";") if t.strip()]
    counts = dict.fromkeys(starts, 0)
    for t in starts:
        counts[t] += 1
    return "; ".join(f"{t} x{n}" if n > 1 else t for t, n in counts.items())


def _study_data(e: Experiment, url: str):
    from rankprune.report.gather import read_study
    from rankprune.study import load_study

    by, tol = e.classes
    return read_study(load_study(e.name, url, read_only=True), url, by, tol)


def _classes(doc, e: Experiment, url: str) -> None:
    from rankprune.report.study import _classes as study_classes

    study_classes(_Nested(doc, e.name), _study_data(e, url))


def _heatmaps(doc, e: Experiment, url: str) -> None:
    from rankprune.report.study import _heatmaps as study_heatmaps

    study_heatmaps(_Nested(doc, e.name), _study_data(e, url))


def _overfitting_pairs(doc, e: Experiment, url: str) -> None:
    """Research question 2 of the original notebook: pairs of trials of one seed at equal training accuracy (within a
    point) where the wider network tests worse. Counted against the pairs where it tests better: the pairs are no
    independent sample (a trial is in many), so this is a description, and the association tests are the test."""
    from rankprune.classes import overfitting_pairs
    from rankprune.findings.frame import trials_table
    from rankprune.study import load_study

    frame = trials_table(load_study(e.name, url, read_only=True), e.spec.mode)
    from rankprune.analysis import is_censored

    measured = frame[~is_censored(frame["censored"])] if "censored" in frame else frame
    rows, against, total = [], 0, 0
    for seed, part in measured.groupby("seed"):
        pairs = overfitting_pairs(part, rank="total_width")
        reverse = overfitting_pairs(part.assign(total_width=-part["total_width"]), rank="total_width")
        against, total = against + len(pairs), total + len(pairs) + len(reverse)
        for _, p in pairs.iterrows():
            rows.append({"seed": seed, "wider trial": f"#{int(p['trial_high'])}", "its width": _whole(p["rank_high"]),
                         "its test acc %": f"{100 * p['test_acc_high']:.2f}", "narrower trial": f"#{int(p['trial_low'])}",
                         "its width ": _whole(p["rank_low"]), "its test acc % ": f"{100 * p['test_acc_low']:.2f}",
                         "train acc % (wider, narrower)": f"{100 * p['train_acc_high']:.2f}, {100 * p['train_acc_low']:.2f}"})
    left_out = len(frame) - len(measured)
    found = (f"in {against} of {total} such pairs the wider network (larger convergent total width) had the lower "
             "test accuracy") if total else "there were none"
    doc.add("#### Overfitting pairs", "",
            f"Pairs of trials of one seed whose training accuracies are within one point of each other: {found}"
            + (f"; {left_out} censored trials left out" if left_out else "") + ". A trial takes part in many pairs, so "
            "this count is a description, not a test; the association hypotheses above test it within seeds.", "")
    if rows:
        doc.table(pd.DataFrame(rows).head(12))
        if len(rows) > 12:
            doc.add(f"*{len(rows) - 12} more pairs not shown.*", "")


def _whole(v) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.3g}"


EXTRAS: dict[str, Callable[[Any, Experiment, str], None]] = {
    "classes": _classes, "heatmaps": _heatmaps, "overfitting_pairs": _overfitting_pairs}
assert set(EXTRAS) == set(SHOW), "every name a suite may show has its renderer"


# --- published results beside the study's -------------------------------------------------------------------
def published_table(e: Experiment, frame: pd.DataFrame) -> pd.DataFrame:
    """The study's runs summarised (per layer the mean convergent width, parameters, test error with its interval
    over seeds), then each published row as the suite file gives it."""
    from rankprune.analysis import mean_interval

    rows = []
    if not frame.empty:
        widths = np.array(frame["chosen_widths"].map(list).tolist(), dtype=float)
        error = 1 - frame.groupby("seed")["test_acc"].mean().to_numpy(dtype=float)
        lo, hi, how = mean_interval(error, units="seeds")
        starts = sorted({"-".join(map(str, w)) for w in frame["initial_widths"].map(list)})
        per_seed = "; ".join(f"seed {r['seed']}: {'-'.join(map(str, r['chosen_widths']))} at {100 * (1 - r['test_acc']):.2f}%"
                             for _, r in frame.sort_values("seed").iterrows())
        rows.append({"method": f"rankprune (this suite, {e.name})",
                     "hidden widths": "-".join(f"{w:.0f}" for w in widths.mean(axis=0)) + f" (mean of {len(frame)})",
                     "parameters": f"{frame['parameters'].mean():,.0f}",
                     "test error %": f"{100 * error.mean():.2f} [{100 * lo:.2f}, {100 * hi:.2f}]" if not math.isnan(lo)
                     else f"{100 * error.mean():.2f}",
                     "data": "the MNIST subset" if "mnist" in str(e.spec.base.get("data", {}).get("dataset", "mnist")) else "",
                     "source": f"start {', '.join(starts)}; {per_seed}"})
    for p in e.published:
        rows.append({"method": p["method"], "hidden widths": p.get("widths", ""),
                     "parameters": f"{p['parameters']:,}" if "parameters" in p else "",
                     "test error %": f"{100 * p['error']:.2f}", "data": "full MNIST (60,000 training images)",
                     "source": p["source"] + (f"; {p['note']}" if "note" in p else "")})
    return pd.DataFrame(rows)


def render_extras(doc, e: Experiment, url: str, frame: pd.DataFrame | None) -> None:
    """Everything the experiment's `show` and `published` ask for, after its hypotheses."""
    if e.published and frame is not None:
        doc.add("#### Beside published results", "")
        doc.table(published_table(e, frame))
        doc.add("The interval is Student's t over seeds. The published rows are as their papers report them on full "
                "MNIST (60,000 training images); these runs trained on the subset's 8,000 training images less the "
                "validation split, so the errors are not like for like: run the study file's command on full MNIST "
                "for that.", "")
    for name in e.show:
        EXTRAS[name](doc, e, url)
