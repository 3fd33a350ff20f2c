"""The table every hypothesis reads: one row per finished trial of a study, its parameters under their own
names, the widths summed, and per hidden layer whether its result is a bound.

    number, <each parameter as its dotted name: "seed", "width", "data.label_noise", "evolve.rebuild", ...>,
    every user attribute of the trial (study.trial_attributes), and
    chosen_widths                          the chosen (convergent) widths, per layer
    total_width, first_width, last_width   the chosen (convergent) widths: their sum, the first, the last layer's
    initial_total_width, initial_width     the starting widths: their sum, the first layer's
    censored                               per hidden layer None, or why the result is a bound (study.censored_layers)

frame.attrs holds "params" (the parameter columns), "mode" and "repeats" (classes.trials_frame).
"""

from __future__ import annotations

import pandas as pd

from rankprune.study import METRICS as STUDY_METRICS
from rankprune.study import censored_layers

__all__ = ["DERIVED", "METRICS", "WIDTH_LIKE", "trials_table", "with_derived"]

DERIVED = ("total_width", "first_width", "last_width", "initial_total_width", "initial_width")
# What a hypothesis may take as its outcome (y, value): numbers every finished trial records, and the derived ones.
METRICS = (*STUDY_METRICS, "iterations", "depth", *DERIVED,
           # recorded where the task has them (study._task_outcomes); a trial without one is listed as missing
           "memorisation", "train_acc_relabelled", "train_acc_relabelled_true", "train_acc_relabelled_chance",
           "train_acc_clean", "test_acc_unseen_tasks", "n_delta_fraction",
           # the scratch control (evolve.scratch): the chosen widths trained from a fresh start for the same FLOPs
           "scratch_test_acc", "scratch_val_acc", "scratch_train_acc", "scratch_test_loss", "scratch_train_loss",
           "scratch_epochs", "scratch_flops", "scratch_seconds")
# Outcomes that are a width or a rank: where a row is censored its value is the bound itself, written '>= w'.
WIDTH_LIKE = ("total_width", "first_width", "last_width", "network_rank_sum", "network_rank_min")


def trials_table(study, mode: str | None = None) -> pd.DataFrame:
    """The finished trials of an Optuna study (classes.trials_frame: repeats counted once) with the columns above;
    `mode` defaults to the one the study recorded."""
    from rankprune.classes import trials_frame

    return with_derived(trials_frame(study), mode or study.user_attrs.get("mode", "evolve"))


def with_derived(frame: pd.DataFrame, mode: str) -> pd.DataFrame:
    """classes.trials_frame's table with parameters renamed ("param_seed" -> "seed") and the derived columns."""
    params = [c.removeprefix("param_") for c in frame.columns if c.startswith("param_")]
    derived = {}
    if not frame.empty:  # from the trials' attributes, before a parameter of the same name takes their column
        widths, initial = frame["widths"].map(list), frame["initial_widths"].map(list)
        derived = dict(chosen_widths=widths, total_width=widths.map(sum), first_width=widths.map(lambda w: w[0]),
                       last_width=widths.map(lambda w: w[-1]), initial_total_width=initial.map(sum),
                       initial_width=initial.map(lambda w: w[0]),
                       censored=[censored_layers(r, mode) for r in frame.to_dict("records")])
    # a parameter wins over a user attribute of its name: "depth" is both, with the same value; "widths" is the
    # start spelled out ("300-100") as a parameter and the chosen widths as an attribute, kept as chosen_widths
    out = frame.drop(columns=[p for p in params if p in frame.columns])
    out = out.rename(columns={f"param_{p}": p for p in params})
    if derived:
        out = out.assign(**derived)
    out.attrs.update(frame.attrs, params=params, mode=mode)
    return out
