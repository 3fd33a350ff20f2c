"""The controller's rules, as pure functions of a depth's iteration history (rows of iterations.jsonl).

A depth runs shrink iterations until a stop rule fires; with the warm rebuild and at least one learning-rate
drop, one anneal iteration then finishes the chosen network (shrink iterations stop at their first plateau,
since the warm rebuild throws nothing away). No I/O, no training: tested on hand-made histories.
"""

from __future__ import annotations

import math

from rankprune.config import RunConfig

__all__ = [
    "DEPTH_STOP_REASONS", "SHRINK", "ANNEAL", "anneals", "phase", "decision_acc", "drop_tolerance", "chosen", "stop_reason", "next_phase",
    "result_iteration", "censored", "CENSORED_AT",
]

# no-shrink: the first iteration planned no shrink beyond width_tol, so the depth ends where it started: its
# widths are the initial ones, a bound and not a measured convergent rank (censored, below).
DEPTH_STOP_REASONS = ("fixed-point", "converged", "no-shrink", "max-iterations", "accuracy-drop", "diverged")
# Why a width is a bound rather than a measurement: it never shrank below its start, or it sits at the most rank
# its incoming matrix can have (the matrix's columns: the input's size for the first layer).
CENSORED_AT = ("initial", "input")
SHRINK, ANNEAL = "shrink", "anneal"


def anneals(cfg: RunConfig) -> bool:
    """Whether a depth ends with an anneal iteration: the warm rebuild keeps what the network computes, so
    its shrink iterations stop at the first plateau and one anneal (learning rate x lr_drop_factor) finishes
    the result; reinit retrains from scratch and anneals within every iteration instead."""
    return cfg.evolve.rebuild == "warm" and cfg.train.lr_drops > 0


def phase(row: dict) -> str:
    return row["phase"]


def decision_acc(row: dict) -> float:
    """The validation accuracy an iteration is judged by (records.upgrade_row fills it in for older rows)."""
    return row["decision_acc"]


def drop_tolerance(best: dict, row: dict, max_drop: float, drop_z: float) -> float:
    """How far `row`'s validation accuracy may sit below the best iteration's before that is a drop: max_drop,
    or drop_z standard errors of the difference of the two accuracies where that is larger. On the MNIST
    subset's 800 validation images one standard error of a 97% accuracy is 0.6 points, so a 1.5-point gap
    between two iterations is within noise about as often as not. Rows without n_val (older runs) use
    max_drop alone."""
    n = row.get("n_val")
    if not n or drop_z == 0:
        return max_drop
    a, b = decision_acc(row), decision_acc(best)
    return max(max_drop, drop_z * math.sqrt(max(a * (1 - a), 0.0) / n + max(b * (1 - b), 0.0) / n))


def chosen(history: list[dict], max_drop: float, drop_z: float = 0.0) -> dict:
    """The last shrink iteration whose validation accuracy is within the drop tolerance of the best (diverged
    ones aside)."""
    shrink = [h for h in history if phase(h) == SHRINK]
    finite = [h for h in shrink if h.get("stop") != "diverged"] or shrink
    best = max(finite, key=decision_acc)
    return [h for h in finite if decision_acc(h) >= decision_acc(best) - drop_tolerance(best, h, max_drop, drop_z)][-1]


def stop_reason(row: dict, shrink_history: list[dict], cfg: RunConfig) -> str | None:
    """Why a depth stops after the shrink iteration `row` (the last of `shrink_history`), or None to go on."""
    if row["train_stop"] == "diverged":
        return "diverged"
    best = max(shrink_history, key=decision_acc)
    if decision_acc(row) < decision_acc(best) - drop_tolerance(best, row, cfg.evolve.max_drop, cfg.evolve.drop_z):
        return "accuracy-drop"
    settled = sum(row["widths"]) - sum(row["next_widths"]) <= cfg.evolve.width_tol * sum(row["widths"])
    if settled and row["iteration"] == 0:
        return "no-shrink"  # nothing was ever measured below the start: not a fixed point, a bound
    if row["next_widths"] == row["widths"]:
        return "fixed-point"
    if settled:
        return "converged"
    if row["iteration"] + 1 >= cfg.evolve.max_iterations:
        return "max-iterations"
    return None


def next_phase(history: list[dict], cfg: RunConfig) -> str | None:
    """What the depth does next: SHRINK, ANNEAL, or None when it is done.

    A diverged depth is not annealed: there is nothing sound to finish, and its result is the last finite
    iteration as it stands. The rule reads only the history, so a resumed depth decides exactly as an
    uninterrupted one."""
    if not history:
        return SHRINK
    last = history[-1]
    if phase(last) == ANNEAL:
        return None
    if last.get("stop") is None:
        return SHRINK
    return ANNEAL if anneals(cfg) and last["stop"] != "diverged" else None


def result_iteration(history: list[dict], max_drop: float, drop_z: float = 0.0) -> dict:
    """The iteration a finished depth reports: its anneal if it has one and it is at least as accurate on
    validation as the network it started from (the chosen shrink iteration's saved weights), else that chosen
    iteration. At the anneal's low learning rate a network can memorise noisy labels: with half the training
    labels random (MNIST subset, depth 2, width 256) anneals fitted 74-81% of the relabelled rows and fell
    from 85% to 67% test accuracy."""
    base = chosen(history, max_drop, drop_z)
    last = history[-1]
    if phase(last) == ANNEAL and last["val_acc"] >= base["val_acc"]:
        return last
    return base


def censored(widths: list[int], initial_widths: list[int], fan_in: list[int]) -> list[str | None]:
    """Per hidden layer, why its width is a bound and not a measured rank: "initial" where it never shrank below its
    start (its rank may be anything up to there), "input" where it equals the columns of its incoming matrix (the
    most rank that matrix can have: 64 for digits' first layer, 9 for a grey-scale first conv block), else None.
    Such a width is censored: trend statistics leave it out, and tables show it as '>= w'."""
    return ["initial" if w >= start else "input" if w >= bound else None
            for w, start, bound in zip(widths, initial_widths, fan_in)]
