"""The report's sections for what a task knob adds to a run: memorisation of random labels (--label-noise),
accuracy on unseen tasks (--tasks) and N_Delta under the quadratic hinge (--loss hinge). Each draws from the
columns its knob makes the run record, and adds nothing to a run without them."""

from __future__ import annotations

import pandas as pd

from rankprune import figures_dynamics
from rankprune.report.document import _Document
from rankprune.report.gather import RunData

__all__ = ["memorisation", "unseen_tasks", "n_delta"]


def _recorded(table: pd.DataFrame, *columns: str) -> bool:
    """Whether the table has every column with at least one value (runs without the knob have none)."""
    return not table.empty and all(c in table and table[c].notna().any() for c in columns)


def _chance(run: RunData) -> float | None:
    """Accuracy of a uniform guess, 1 / classes, where the run recorded its class count (data.json)."""
    classes = (run.described or {}).get("n_classes")
    return 1 / classes if classes else None


def memorisation(doc: _Document, run: RunData) -> None:
    it = run.iterations
    if not _recorded(it, "train_acc_relabelled", "train_acc_clean"):
        return
    noise = run.data.get("label_noise", "?")
    relabelled = ((run.described or {}).get("label_noise") or {}).get("relabelled")
    doc.add("## Memorisation of random labels", "")
    changed_only = "train_acc_relabelled_chance" in it and it["train_acc_relabelled_chance"].notna().any()
    series = [
        ("train_acc_clean", "training: clean rows"),
        ("train_acc_relabelled", "training: relabelled rows,\nagainst their random label"),
        ("train_acc_relabelled_true", "training: relabelled rows,\nagainst their true label"),
        ("test_acc", "test"),
    ]
    if changed_only:  # the chance level on changed rows depends on the network: a series, not a constant
        series.append(("train_acc_relabelled_chance", "chance against the random label\n(memorising nothing)"))
    doc.figure("memorisation", lambda: figures_dynamics.accuracies_per_iteration(
        it, series, None if changed_only else _chance(run)), "training accuracy on clean and relabelled rows per iteration",
        f"Label noise {noise}: {f'{relabelled:,} ' if relabelled else ''}training rows were given a uniformly random class"
        + (", and the rows whose class it changed are scored (a row that drew its own class is clean). " if changed_only
           else " (this run scored every drawn row, also those that drew their own class). ")
        + "Accuracy at the end of each iteration on the clean training rows, on the relabelled rows against the random "
        "label they were trained on (memorisation) and against their true label, and on the test set; a star marks the "
        "anneal. " + ("Memorisation is the gap above the chance line: what a network that memorised nothing would score "
                      "against the random labels, (1 - its accuracy against the true labels) / (classes - 1). "
                      if changed_only else "")
        + "Look for memorisation rising as the network shrinks or anneals, and the test accuracy falling with it.")


def unseen_tasks(doc: _Document, run: RunData) -> None:
    it = run.iterations
    if not _recorded(it, "test_acc_unseen_tasks"):
        return
    doc.add("## Accuracy on unseen tasks", "")
    doc.figure("unseen-tasks", lambda: figures_dynamics.accuracies_per_iteration(it, [
        ("train_acc", "training (seen tasks)"),
        ("test_acc", "test, seen tasks"),
        ("test_acc_unseen_tasks", "test, unseen tasks"),
    ], _chance(run)), "test accuracy on seen and unseen tasks per iteration",
        f"{run.data.get('tasks', '?')} augmented tasks (a seeded projection of the input and a permutation of the "
        "labels each): accuracy at the end of each iteration on the training set and the test set, whose rows carry "
        "the tasks trained on, and on test rows of as many tasks never trained on; a star marks the anneal. Look for "
        "unseen-task accuracy above chance: learning in context, which a plain network should not show.")


def n_delta(doc: _Document, run: RunData) -> None:
    epochs, it = run.epochs, run.iterations
    if not _recorded(epochs, "n_delta") or not _recorded(it, "n_delta_per_parameter"):
        return
    described = run.described or {}
    # N_Delta counts constraints: one per training sample and output
    n_train = described["n_train"] * described.get("n_classes", 1) if described.get("n_train") else None
    doc.add("## Unsatisfied margins (N_Delta)", "")
    doc.figure("n-delta", lambda: figures_dynamics.n_delta_across_training(epochs, it, n_train),
               "N_Delta per epoch and N_Delta / N per iteration",
               "The quadratic hinge's N_Delta, the unsatisfied constraints (one per training sample and output, "
               "Delta = 1 - y f >= 0): per epoch as a share of all of them "
               "(a marker ends each iteration), and per parameter at the end of each iteration, against the dashed "
               "line N_Delta = N of the jamming transition; a star marks the anneal. Look for N_Delta / N crossing 1 "
               "as the network shrinks: below the line the loss can reach zero, above it the network is too small "
               "to fit every margin.")
