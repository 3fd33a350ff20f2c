"""Equivalence classes and rank trends as pure functions of hand-made trial tables."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pandas as pd
import pytest

from rankprune.classes import best_trial, class_table, equivalence_classes, overfitting_pairs, rank_trends, trials_frame


def trial(number: int, ranks: list[int], widths: list[int] | None = None, test_acc: float = 0.9,
          train_acc: float = 0.95, val_acc: float | None = None, **extra) -> dict:
    """One row as trials_frame builds it, with the rank forms derived as study.trial_attributes does."""
    widths = widths or [max(ranks) * 2] * len(ranks)
    return {
        "number": number,
        "ranks": ranks,
        "widths": widths,
        "initial_widths": widths,
        "network_rank_sum": sum(ranks),
        "network_rank_normalized": sum(ranks) / sum(widths),
        "network_rank_min": min(ranks),
        "test_acc": test_acc,
        "val_acc": test_acc if val_acc is None else val_acc,
        "train_acc": train_acc,
        "generalisation_gap": train_acc - test_acc,
        "parameters": 100 * sum(widths),
        **extra,
    }


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def classes_of(df: pd.DataFrame, labels: pd.Series) -> set[frozenset[int]]:
    """The partition of trial numbers the labels make, independent of how classes are numbered."""
    return {frozenset(df.loc[labels == c, "number"]) for c in labels.unique()}


# --- equivalence_classes -----------------------------------------------------------------------------
def test_tol_0_groups_exactly_equal_vectors():
    df = frame(trial(0, [3, 2]), trial(1, [3, 2]), trial(2, [3, 3]), trial(3, [5]), trial(4, [5]), trial(5, [3]))
    labels = equivalence_classes(df, "vector", tol=0)
    assert classes_of(df, labels) == {frozenset({0, 1}), frozenset({2}), frozenset({3, 4}), frozenset({5})}
    # numbered from 1 in order of signature: shallower networks first, then by ranks
    assert labels.tolist() == [3, 3, 4, 2, 2, 1]


def test_vector_classes_never_mix_depths():
    # same sum (5) and, with any tolerance, "near" as numbers; but a 1-layer and a 2-layer network
    # cannot have equal rank vectors
    df = frame(trial(0, [5]), trial(1, [2, 3]), trial(2, [5, 1]))
    assert classes_of(df, equivalence_classes(df, "vector", tol=0)) == {frozenset({0}), frozenset({1}), frozenset({2})}
    # a tolerance larger than any difference merges the two 2-layer networks, never the 1-layer one
    assert classes_of(df, equivalence_classes(df, "vector", tol=100)) == {frozenset({0}), frozenset({1, 2})}


@pytest.mark.parametrize("tol, expected", [
    (0.0, [{0}, {1}, {2}, {3}]),
    (0.5, [{0}, {1}, {2}, {3}]),
    (1.0, [{0, 1, 2}, {3}]),  # single linkage: [10,5]~[11,5]~[12,5] chain into one class
    (2.0, [{0, 1, 2}, {3}]),
    (3.0, [{0, 1, 2, 3}]),
])
def test_tol_merges_vectors_within_it(tol, expected):
    # largest per-layer difference (Chebyshev): [10,5] vs [11,5] is 1; [12,5] vs [12,8] is 3
    df = frame(trial(0, [10, 5]), trial(1, [11, 5]), trial(2, [12, 5]), trial(3, [12, 8]))
    labels = equivalence_classes(df, "vector", tol=tol)
    assert classes_of(df, labels) == {frozenset(s) for s in expected}


def test_by_sum_and_normalized_compare_scalars_across_depths():
    df = frame(
        trial(0, [5], widths=[10]),        # sum 5, normalized 0.5
        trial(1, [2, 3], widths=[5, 5]),   # sum 5, normalized 0.5
        trial(2, [4, 2], widths=[8, 4]),   # sum 6, normalized 0.5
        trial(3, [7], widths=[10]),        # sum 7, normalized 0.7
    )
    assert classes_of(df, equivalence_classes(df, "sum")) == {frozenset({0, 1}), frozenset({2}), frozenset({3})}
    assert classes_of(df, equivalence_classes(df, "sum", tol=1)) == {frozenset({0, 1, 2, 3})}
    assert classes_of(df, equivalence_classes(df, "normalized")) == {frozenset({0, 1, 2}), frozenset({3})}
    assert classes_of(df, equivalence_classes(df, "normalized", tol=0.19)) == {frozenset({0, 1, 2}), frozenset({3})}
    assert classes_of(df, equivalence_classes(df, "normalized", tol=0.2)) == {frozenset({0, 1, 2, 3})}


def test_labels_follow_the_frames_index():
    df = frame(trial(7, [4]), trial(8, [6]), trial(9, [4]))
    df.index = [30, 10, 20]  # e.g. a filtered frame
    labels = equivalence_classes(df, "vector")
    assert list(labels.index) == [30, 10, 20]
    assert labels[30] == labels[20] == 1 and labels[10] == 2


def test_one_trial_and_no_trials():
    assert equivalence_classes(frame(trial(0, [3, 1])), "vector").tolist() == [1]
    assert equivalence_classes(pd.DataFrame(), "vector").empty


# --- class_table ---------------------------------------------------------------------------------------
def test_class_table_members_signature_and_accuracy():
    df = frame(
        trial(0, [3, 2], widths=[8, 8], test_acc=0.90),
        trial(1, [3, 2], widths=[16, 4], test_acc=0.80),
        trial(2, [4, 2], widths=[8, 8], test_acc=0.70),
        trial(3, [6], widths=[8], test_acc=0.60),
    )
    table = class_table(df, "vector", tol=0)
    assert table["class"].tolist() == [1, 2, 3]
    assert table["signature"].tolist() == ["[6]", "[3, 2]", "[4, 2]"]
    assert table["n"].tolist() == [1, 2, 1]
    assert table["members"].tolist() == ["3", "0, 1", "2"]
    assert table.loc[1, "initial_widths"] == "[8, 8]; [16, 4]"
    assert table.loc[1, "test_acc_mean"] == pytest.approx(0.85)
    assert table.loc[1, "test_acc_std"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert table.loc[0, "test_acc_std"] == 0.0
    assert table["n"].sum() == len(df)


def test_class_table_shows_ranges_inside_a_tolerant_class():
    df = frame(trial(0, [10, 5]), trial(1, [11, 5]), trial(2, [20, 5]))
    table = class_table(df, "vector", tol=1)
    assert table["signature"].tolist() == ["[10-11, 5]", "[20, 5]"]
    table = class_table(df, "sum", tol=1)
    assert table["signature"].tolist() == ["15-16", "25"]
    assert table["members"].tolist() == ["0, 1", "2"]


def test_class_table_representative_is_chosen_on_validation_and_shown_with_test():
    df = frame(
        trial(0, [3, 2], test_acc=0.95, val_acc=0.90),  # best on test, not on validation
        trial(1, [3, 2], test_acc=0.91, val_acc=0.93),
        trial(2, [3, 2], test_acc=0.80, val_acc=0.93),  # ties trial 1 on validation: the lower number wins
        trial(3, [5, 1], test_acc=0.70, val_acc=0.70, censored=["initial", None]),
    )
    table = class_table(df, "vector").set_index("signature")
    assert table.loc["[3, 2]", "representative"] == 1
    assert table.loc["[3, 2]", "representative_val_acc"] == pytest.approx(0.93)
    assert table.loc["[3, 2]", "representative_test_acc"] == pytest.approx(0.91)
    assert best_trial(df)["number"] == 1
    # a class whose member sits at a bound says so; the others list no one
    assert table.loc["[5, 1]", "censored"] == "3" and table.loc["[3, 2]", "censored"] == ""


def test_class_table_of_nothing_has_the_columns():
    table = class_table(pd.DataFrame(), "vector")
    assert table.empty and {"class", "signature", "n", "members"} <= set(table.columns)


# --- rank_trends ---------------------------------------------------------------------------------------
def test_rank_trends_of_a_monotone_relation():
    # accuracy rises and the gap falls with the rank sum, not linearly: Spearman sees +1 and -1
    rows = [trial(i, [r], widths=[64], test_acc=0.5 + math.log(r) / 10, train_acc=0.99, parameters=6400)
            for i, r in enumerate([2, 4, 7, 15, 30])]
    trends = rank_trends(frame(*rows), "network_rank_sum").set_index("versus")
    assert trends.loc["test_acc", "spearman_rho"] == pytest.approx(1.0)
    assert trends.loc["test_acc", "p_value"] < 0.05
    assert trends.loc["generalisation_gap", "spearman_rho"] == pytest.approx(-1.0)
    assert math.isnan(trends.loc["parameters", "spearman_rho"])  # constant outcome: no correlation defined
    assert (trends["n"] == 5).all() and (trends["rank"] == "network_rank_sum").all()


def test_rank_trends_p_value_is_an_exact_permutation_with_holm_over_the_outcomes():
    rows = [trial(i, [r], widths=[64], test_acc=0.5 + r / 100, train_acc=0.99, parameters=100 * r)
            for i, r in enumerate([2, 4, 7, 15, 30])]
    trends = rank_trends(frame(*rows)).set_index("versus")
    # a perfect order of 5 trials: 2 of the 5! = 120 orderings are as extreme (scipy's t approximation: 1.4e-24)
    assert trends.loc["test_acc", "p_value"] == pytest.approx(2 / 120)
    assert trends.loc["test_acc", "p_floor"] == pytest.approx(2 / 120)
    assert trends.loc["test_acc", "p_holm"] == pytest.approx(3 * 2 / 120)  # three outcomes, all tied
    assert "exact permutation" in trends.loc["test_acc", "test"]
    assert trends["ci_low"].isna().all()  # 5 trials: too few for a bootstrap interval


def test_rank_trends_leave_censored_trials_out_and_list_them():
    rows = [trial(i, [r], widths=[64], test_acc=0.5 + r / 100) for i, r in enumerate([2, 4, 7, 15, 30])]
    # a trial that never shrank: its "rank" 64 is its initial width, and it contradicts the trend
    rows.append(trial(5, [64], widths=[64], test_acc=0.4, censored=["initial"]))
    df = frame(*rows)
    trends = rank_trends(df).set_index("versus")
    assert trends.loc["test_acc", "n"] == 5 and trends.loc["test_acc", "spearman_rho"] == pytest.approx(1.0)
    assert trends.attrs["excluded"] == ["#5 [initial]"]
    kept = rank_trends(df, include_censored=True).set_index("versus")
    assert kept.loc["test_acc", "n"] == 6 and kept.loc["test_acc", "spearman_rho"] < 0.5
    assert kept.attrs["excluded"] == []


def test_rank_trends_needs_three_trials_and_varying_ranks():
    two = frame(trial(0, [2], test_acc=0.5), trial(1, [4], test_acc=0.6))
    assert rank_trends(two)["spearman_rho"].isna().all()
    flat = frame(*(trial(i, [3], test_acc=0.5 + i / 10) for i in range(4)))
    assert rank_trends(flat)["spearman_rho"].isna().all()


# --- overfitting_pairs ---------------------------------------------------------------------------------
def test_overfitting_pairs_finds_a_constructed_pair_and_nothing_else():
    df = frame(
        trial(0, [20], test_acc=0.80, train_acc=0.990),  # high rank, lower test accuracy
        trial(1, [8], test_acc=0.90, train_acc=0.995),   # low rank, higher test accuracy, same train acc: pair (0, 1)
        trial(2, [30], test_acc=0.70, train_acc=0.900),  # even higher rank, worse, but trains far worse: no pair
        trial(3, [25], test_acc=0.95, train_acc=0.990),  # higher rank and better: no pair
    )
    pairs = overfitting_pairs(df, "network_rank_sum", train_tol=0.01)
    assert list(zip(pairs["trial_high"], pairs["trial_low"])) == [(0, 1)]
    row = pairs.iloc[0]
    assert (row["rank_high"], row["rank_low"]) == (20, 8)
    assert row["test_acc_high"] < row["test_acc_low"]
    assert abs(row["train_acc_high"] - row["train_acc_low"]) <= 0.01


def test_overfitting_pairs_train_tol_and_order():
    df = frame(
        trial(0, [20], test_acc=0.80, train_acc=0.99),
        trial(1, [8], test_acc=0.90, train_acc=0.99),
        trial(2, [30], test_acc=0.70, train_acc=0.90),
    )
    assert len(overfitting_pairs(df, train_tol=0.0)) == 1
    wide = overfitting_pairs(df, train_tol=0.2)
    # (2,0) and (2,1) and (0,1); sorted by the lower-rank trial's test accuracy, best first
    assert list(zip(wide["trial_high"], wide["trial_low"])) == [(0, 1), (2, 1), (2, 0)]
    assert overfitting_pairs(frame(trial(0, [3]), trial(1, [3]))).empty


# --- trials_frame --------------------------------------------------------------------------------------
def test_trials_frame_keeps_finished_trials_with_ranks():
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(
        params={"depth": 2}, distributions={"depth": optuna.distributions.IntDistribution(1, 3)}, value=0.9,
        user_attrs=trial(0, [3, 2])))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={"fail_reason": "x"}))
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"note": "finished without ranks"}))
    df = trials_frame(study)
    assert df["number"].tolist() == [0]
    assert df.loc[0, "param_depth"] == 2
    assert df.loc[0, "ranks"] == [3, 2] and df.loc[0, "network_rank_sum"] == 5
