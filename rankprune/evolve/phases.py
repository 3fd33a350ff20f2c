"""The controller's rules, as pure functions of a depth's iteration history (rows of iterations.jsonl).

A depth runs shrink iterations until a stop rule fires; with the warm rebuild and at least one learning-rate
drop, one anneal iteration then finishes the chosen network (shrink iterations stop at their first plateau,
since the warm rebuild throws nothing away). No I/O, no training: tested on hand-made histories.
"""

from __future__ import annotations

import base64
import math

import numpy as np

from rankprune.config import RunConfig

__all__ = [
    "DEPTH_STOP_REASONS", "SHRINK", "ANNEAL", "anneals", "phase", "decision_acc", "drop_tolerance", "chosen", "stop_reason", "next_phase",
    "result_iteration", "censored", "CENSORED_AT", "is_drop", "one_sided_level", "encode_correct", "decode_correct",
]

# no-shrink: the first iteration planned no shrink beyond width_tol, so the depth ends where it started: its
# widths are the initial ones, a bound and not a measured convergent rank (censored, below).
DEPTH_STOP_REASONS = ("fixed-point", "converged", "no-shrink", "max-iterations", "accuracy-drop", "diverged")
# Why a width is a bound rather than a measurement: it never shrank below its start, it sits at the most rank
# its incoming matrix can have (the matrix's columns: the input's size for the first layer), or the depth hit the
# iteration cap while it was still shrinking (censored, below).
CENSORED_AT = ("initial", "input", "unconverged")
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


def encode_correct(correct) -> str | None:
    """A validation row's right answers (a bool tensor or array) as compact text for iterations.jsonl: the bits,
    packed and base64-encoded (800 images: 136 characters). None stays None (regression: no items)."""
    if correct is None:
        return None
    bits = np.asarray(correct, dtype=bool)
    return f"{len(bits)}:" + base64.b64encode(np.packbits(bits).tobytes()).decode("ascii")


def decode_correct(text: str) -> np.ndarray:
    n, _, packed = text.partition(":")
    return np.unpackbits(np.frombuffer(base64.b64decode(packed), dtype=np.uint8))[: int(n)].astype(bool)


def one_sided_level(z: float) -> float:
    """The one-sided tail of a standard normal beyond z: the significance level --drop-z Z stands for (2: 0.023)."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def is_drop(best: dict, row: dict, max_drop: float, drop_z: float, test: str = "unpaired") -> bool:
    """Whether `row`'s validation accuracy is a drop from the best iteration's: lower by more than max_drop, and,
    unless drop_z is 0, significantly lower.

    mcnemar (config format 4): both networks were scored on the same validation images, so the test is paired:
    McNemar's exact test on the images one got right and the other wrong (b: the best right, the row wrong; c:
    the other way), one-sided, at the level --drop-z stands for (one_sided_level). An unpaired test ignores that
    the two accuracies share their images and is too cautious where they mostly agree.
    unpaired (format 3 and older, and rows without recorded answers: regression, older runs): the gap must exceed
    drop_z standard errors of the difference of two independent binomial accuracies (drop_tolerance)."""
    gap = decision_acc(best) - decision_acc(row)
    if gap <= max_drop:
        return False
    if drop_z == 0:
        return True
    if test == "mcnemar" and best.get("decision_correct") and row.get("decision_correct"):
        from rankprune.analysis import mcnemar_exact

        a, r = decode_correct(best["decision_correct"]), decode_correct(row["decision_correct"])
        if len(a) == len(r):
            p = mcnemar_exact(int((a & ~r).sum()), int((~a & r).sum()), alternative="greater")
            return p < one_sided_level(drop_z)
    return gap > drop_tolerance(best, row, max_drop, drop_z)


def chosen(history: list[dict], max_drop: float, drop_z: float = 0.0, test: str = "unpaired") -> dict:
    """The last shrink iteration whose validation accuracy is not a drop from the best (is_drop; diverged ones
    aside)."""
    shrink = [h for h in history if phase(h) == SHRINK]
    finite = [h for h in shrink if h.get("stop") != "diverged"] or shrink
    best = max(finite, key=decision_acc)
    return [h for h in finite if h is best or not is_drop(best, h, max_drop, drop_z, test)][-1]


def stop_reason(row: dict, shrink_history: list[dict], cfg: RunConfig) -> str | None:
    """Why a depth stops after the shrink iteration `row` (the last of `shrink_history`), or None to go on."""
    if row["train_stop"] == "diverged":
        return "diverged"
    best = max(shrink_history, key=decision_acc)
    if is_drop(best, row, cfg.evolve.max_drop, cfg.evolve.drop_z, cfg.evolve.drop_test):
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


def result_iteration(history: list[dict], max_drop: float, drop_z: float = 0.0, test: str = "unpaired") -> dict:
    """The iteration a finished depth reports: its anneal if it has one and it is at least as accurate on
    validation as the network it started from (the chosen shrink iteration's saved weights), else that chosen
    iteration. At the anneal's low learning rate a network can memorise noisy labels: with half the training
    labels random (MNIST subset, depth 2, width 256) anneals fitted 74-81% of the relabelled rows and fell
    from 85% to 67% test accuracy."""
    base = chosen(history, max_drop, drop_z, test)
    last = history[-1]
    if phase(last) == ANNEAL and last["val_acc"] >= base["val_acc"]:
        return last
    return base


def censored(widths: list[int], initial_widths: list[int], fan_in: list[int],
             shrinking: list[bool] | None = None) -> list[str | None]:
    """Per hidden layer, why its width is a bound and not a measured convergent rank, or None:

    - "initial": it never shrank below its start (its rank may be anything up to there): a lower bound, '>= w';
    - "input": it equals the columns of its incoming matrix (the most rank that matrix can have: 64 for digits'
      first layer, 9 for a grey-scale first conv block): a lower bound too, '>= w';
    - "unconverged": the depth ended at the iteration cap while this layer was still shrinking (`shrinking`): its
      fixed point lies below, an upper bound, '<= w'.

    Trend statistics leave censored widths out (counted and listed); tables and figures mark them."""
    shrinking = shrinking or [False] * len(widths)
    return ["initial" if w >= start else "input" if w >= bound else "unconverged" if still else None
            for w, start, bound, still in zip(widths, initial_widths, fan_in, shrinking)]
