"""The analysis layer against hand-computed and scipy-reference values on small synthetic tables."""
from itertools import permutations
from math import comb

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rankprune.analysis import (MIN_BOOTSTRAP, bootstrap_ci, holm, is_censored, mann_whitney_exact, mcnemar,
                                mcnemar_exact, paired_difference, signed_rank_exact, spearman_permutation, trend,
                                two_groups, verdict_table)


# --- McNemar ---------------------------------------------------------------------------------------------
def test_mcnemar_exact_against_the_binomial_sum_by_hand():
    # b=8, c=2: P(B >= 8) for B ~ Binomial(10, 1/2) = (C(10,8) + C(10,9) + C(10,10)) / 2^10 = 56/1024
    assert mcnemar_exact(8, 2) == pytest.approx(56 / 1024)
    assert mcnemar_exact(8, 2, alternative="two-sided") == pytest.approx(112 / 1024)
    # the other direction: the first classifier worse, so "greater" is far from significant
    assert mcnemar_exact(2, 8) == pytest.approx(sum(comb(10, k) for k in range(2, 11)) / 1024)
    assert mcnemar_exact(0, 0) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_mcnemar_verdict_reports_its_floor_and_an_exact_interval():
    v = mcnemar(8, 2, first="warm", second="reinit", items="validation images")
    assert v.p_value == pytest.approx(56 / 1024)
    assert v.p_floor == pytest.approx(1 / 1024)  # all 10 discordant items one way
    assert v.n == 10 and v.effect.estimate == pytest.approx(0.8)
    ci = stats.binomtest(8, 10).proportion_ci(method="exact")
    assert v.effect.ci == pytest.approx((ci.low, ci.high))
    assert not v.significant()


# --- exact tests -----------------------------------------------------------------------------------------
def test_permutation_spearman_n5_is_exact_against_enumeration_by_hand():
    x, y = [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]
    d2 = lambda order: sum((a - b) ** 2 for a, b in zip(order, y))  # noqa: E731
    rhos = [1 - 6 * d2(p) / (5 * 24) for p in permutations(x)]  # Spearman without ties, every ordering of x
    observed = 1 - 6 * d2(x) / (5 * 24)  # 0.8
    greater = sum(r >= observed - 1e-12 for r in rhos) / 120
    less = sum(r <= observed + 1e-12 for r in rhos) / 120
    res = spearman_permutation(x, y)
    assert res.exact and res.statistic == pytest.approx(0.8)
    assert res.p_value == pytest.approx(2 * min(greater, less))  # 16/120
    assert spearman_permutation(x, y, alternative="greater").p_value == pytest.approx(greater)  # 8/120
    assert res.p_floor == pytest.approx(2 / 120)
    assert spearman_permutation(x, y).p_value != pytest.approx(stats.spearmanr(x, y).pvalue)  # not the t approximation


def test_permutation_spearman_within_strata_permutes_only_inside_a_seed():
    # three seeds, each perfectly increasing in x: only the identity ordering in every seed is as extreme,
    # so p = 2 / 3!^3 two-sided, and never below it
    x = [1, 2, 3] * 3
    y = [1, 2, 3, 10, 20, 30, 5, 6, 7]
    res = spearman_permutation(x, y, strata=[0] * 3 + [1] * 3 + [2] * 3)
    assert res.exact and res.statistic == pytest.approx(1.0)
    assert res.p_value == pytest.approx(2 / 216) == pytest.approx(res.p_floor)
    # pooled, the 9 runs are treated as independent, and the seeds' different levels hide the trend each shows
    assert spearman_permutation(x, y).p_value > 0.3


def test_permutation_spearman_monte_carlo_states_its_resolution_and_is_seeded():
    x = np.arange(12)
    res = spearman_permutation(x, x, n_resamples=999, seed=3)
    assert not res.exact and "Monte Carlo" in res.test
    assert res.p_value == pytest.approx(2 / 1000) == pytest.approx(res.p_floor)
    y = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8])
    assert spearman_permutation(x, y, n_resamples=999, seed=3) == spearman_permutation(x, y, n_resamples=999, seed=3)


def test_mann_whitney_3_against_3_fully_separated():
    two = mann_whitney_exact([4, 5, 6], [1, 2, 3])
    assert two.p_value == pytest.approx(0.1) and two.p_floor == pytest.approx(0.1)  # 2 of C(6,3) = 20 splits
    one = mann_whitney_exact([4, 5, 6], [1, 2, 3], alternative="greater")
    assert one.p_value == pytest.approx(0.05) and one.p_floor == pytest.approx(0.05)
    assert mann_whitney_exact([4, 5, 6], [1, 2, 3], alternative="less").p_value == pytest.approx(1.0)


def test_mann_whitney_matches_scipy_exact_without_ties():
    a, b = [4, 5, 6.5, 9, 11], [1, 2, 3, 7, 8.5, 10]
    for alternative in ("two-sided", "greater", "less"):
        ref = stats.mannwhitneyu(a, b, method="exact", alternative=alternative)
        res = mann_whitney_exact(a, b, alternative=alternative)
        assert res.statistic == ref.statistic and res.p_value == pytest.approx(ref.pvalue)


def test_mann_whitney_with_ties_is_the_permutation_distribution():
    # a = [2, 2], b = [1, 2]: pooled ranks 3, 3, 1, 3, so U of a = 3 + 3 - 3 = 3. Of the 6 splits into two
    # pairs, the 3 without the 1 give U = 3 and the 3 with it U = 1: P(U >= 3) = 3/6.
    a, b = [2, 2], [1, 2]
    pooled = a + b
    us = []
    for idx in {tuple(sorted(p[:2])) for p in permutations(range(4))}:
        ranks = stats.rankdata(pooled)
        us.append(sum(ranks[i] for i in idx) - 3)
    res = mann_whitney_exact(a, b, alternative="greater")
    assert res.statistic == pytest.approx(3)
    assert res.p_value == pytest.approx(sum(u >= 3 for u in us) / len(us)) == pytest.approx(0.5)


def test_signed_rank_matches_scipy_exact_wilcoxon_without_ties():
    d = [1.5, -0.3, 2.2, 3.1, 0.7, -1.1, 2.9]
    for alternative in ("two-sided", "greater", "less"):
        ref = stats.wilcoxon(d, method="exact", alternative=alternative)
        assert signed_rank_exact(d, alternative=alternative).p_value == pytest.approx(ref.pvalue)
    assert signed_rank_exact(d).p_floor == pytest.approx(2 / 2 ** 7)


def test_signed_rank_with_ties_by_hand():
    # |d| = 1, 1, 1, 2: ranks 2, 2, 2, 4; observed sum 2 + 2 - 2 + 4 = 6. Of the 16 sign patterns, the sums >= 6
    # are all positive (10) and one 2 flipped (6, three ways): 4/16.
    res = signed_rank_exact([1, 1, -1, 2], alternative="greater")
    assert res.statistic == pytest.approx(6)
    assert res.p_value == pytest.approx(4 / 16)
    assert signed_rank_exact([1, 1, -1, 2]).p_value == pytest.approx(8 / 16)


def test_three_seeds_can_never_give_a_small_p():
    # the smallest p a rank test on 3 paired seeds can give: one sign pattern of 8, two-sided 2/8
    res = signed_rank_exact([5.0, 6.0, 7.0])
    assert res.p_value == pytest.approx(0.25) == pytest.approx(res.p_floor)


# --- Holm ----------------------------------------------------------------------------------------------
def _verdicts(ps):
    table = pd.DataFrame({"g": ["a", "b"] * 4, "v": range(8)})
    base = two_groups(table, "v", "g", "a", "b")
    import dataclasses
    return [dataclasses.replace(base, p_value=p) for p in ps]


def test_holm_against_a_hand_worked_family():
    # sorted 0.01, 0.03, 0.04: times 3, 2, 1 -> 0.03, 0.06, 0.04 -> made non-decreasing: 0.03, 0.06, 0.06
    adjusted = holm(_verdicts([0.01, 0.04, 0.03]), "three knobs")
    assert [v.p_adjusted for v in adjusted] == pytest.approx([0.03, 0.06, 0.06])
    assert [v.p_value for v in adjusted] == [0.01, 0.04, 0.03]
    assert adjusted[0].family == "three knobs (3 tests)"
    assert adjusted[0].significant() and not adjusted[2].significant()
    assert adjusted[1].p == adjusted[1].p_adjusted


def test_holm_caps_at_one_and_skips_verdicts_without_a_test():
    adjusted = holm(_verdicts([0.6, float("nan"), 0.5]), "f")
    assert [v.p_adjusted for v in adjusted] == [1.0, None, 1.0]
    assert adjusted[0].family == "f (2 tests)"


# --- table-level verdicts --------------------------------------------------------------------------------
def _grid(effect: float, seeds=(0, 1, 2)) -> pd.DataFrame:
    """Total width against a knob, one run per (seed, knob value); `effect` units of width per knob step."""
    noise = {0: [3, -2, 1, -4], 1: [-1, 4, -3, 2], 2: [2, -3, 4, -1]}  # no trend of its own
    return pd.DataFrame([{"seed": s, "knob": k, "width": 100 + effect * k + noise[s % 3][k],
                          "setting": f"knob-{k}", "censored": [None, None]}
                         for s in seeds for k in range(4)])


def test_a_trend_verdict_flips_when_the_effect_is_removed():
    strong = trend(_grid(effect=20), "knob", "width")
    assert strong.significant() and strong.effect.estimate == pytest.approx(1.0)
    assert strong.n == 3 and strong.unit == "seed"
    assert strong.p_value == pytest.approx(2 / 24 ** 3)
    flat = trend(_grid(effect=0), "knob", "width")
    assert not flat.significant() and abs(flat.effect.estimate) < 0.5


def test_a_paired_verdict_flips_when_the_effect_is_removed():
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(8):
        for depth in (2, 3):
            base = rng.normal(0.97, 0.01)
            rows += [{"seed": seed, "depth": depth, "method": "warm", "acc": base + rng.normal(0.01, 0.002)},
                     {"seed": seed, "depth": depth, "method": "reinit", "acc": base}]
    table = pd.DataFrame(rows)
    v = paired_difference(table, "acc", "method", "warm", "reinit", within=("depth",))
    assert v.n == 8 and v.significant() and v.effect.estimate == pytest.approx(0.01, abs=0.002)
    assert v.p_value == pytest.approx(2 / 256)  # 8 seeds, every one positive
    assert v.effect.ci is not None and v.effect.ci[0] <= v.effect.estimate <= v.effect.ci[1]
    assert 0 < v.effect.ci[0]
    # remove the effect: warm = reinit, give or take 0.002 alternating in sign over the seeds
    reinit = table[table.method == "reinit"].set_index(["seed", "depth"]).acc
    jitter = 0.002 * (table.seed % 2 * 2 - 1)
    gone = table.assign(acc=np.where(table.method == "warm", reinit.loc[list(zip(table.seed, table.depth))].to_numpy()
                                     + jitter, table.acc))
    assert not paired_difference(gone, "acc", "method", "warm", "reinit", within=("depth",)).significant()


def test_paired_difference_pairs_by_seed_not_by_seed_and_depth():
    rows = [{"seed": s, "depth": d, "method": m, "acc": 0.9 + (0.01 if m == "a" else 0) + 0.001 * d}
            for s in range(3) for d in (2, 3, 4, 5) for m in ("a", "b")]
    rows.append({"seed": 3, "depth": 2, "method": "a", "acc": 0.5})  # no partner
    v = paired_difference(pd.DataFrame(rows), "acc", "method", "a", "b", within=("depth",))
    assert v.n == 3  # 12 (seed, depth) pairs are 3 seeds
    assert v.p_value == pytest.approx(0.25) == pytest.approx(v.p_floor)
    assert v.excluded == ("seed 3, depth 2 [no partner]",)
    # below 8 seeds the effect's interval is Student's t over the seeds' mean differences (all 0.01 here: no spread)
    assert v.effect.ci == pytest.approx((0.01, 0.01)) and v.effect.ci_method == "Student's t over 3 seeds"
    # a censored member takes its pair out, listed; include_censored keeps it and says so
    table = pd.DataFrame(rows).assign(censored=[[None]] * (len(rows) - 1) + [[None]])
    table.at[0, "censored"] = ["initial"]  # seed 0, depth 2, method a
    out = paired_difference(table, "acc", "method", "a", "b", within=("depth",))
    assert "seed 0, depth 2 [censored]" in out.excluded and out.n == 3
    kept = paired_difference(table, "acc", "method", "a", "b", within=("depth",), include_censored=True)
    assert "seed 0, depth 2 [censored]" not in kept.excluded and "includes 1 pairs" in kept.note


def test_a_censored_row_is_kept_out_of_a_trend_by_default_and_listed():
    table = _grid(effect=20)
    # seed 2 at the top knob value never shrank: its width is a bound, and here a misleadingly low one
    row = table.index[(table.seed == 2) & (table.knob == 3)][0]
    table.at[row, "width"] = 50
    table.at[row, "censored"] = ["initial", None]
    default = trend(table, "knob", "width", label="setting")
    assert default.excluded == ("knob-3 seed 2 [initial/-]",)
    assert "censored" in default.excluded_why
    assert default.effect.estimate == pytest.approx(1.0)  # seed 2's three uncensored settings still rise
    assert default.p_floor == pytest.approx(2 / (24 * 24 * 6))  # seed 2 has 3 settings left
    kept = trend(table, "knob", "width", label="setting", include_censored=True)
    assert kept.excluded == () and "includes 1 censored" in kept.note
    assert kept.effect.estimate < 1.0
    assert trend(table.drop(columns="censored"), "knob", "width").excluded == ()


def test_is_censored_reads_booleans_and_per_layer_lists():
    flags = is_censored(pd.Series([[None, None], ["initial", None], [None, "input"], True, False, None]))
    assert flags.tolist() == [False, True, True, True, False, False]


def test_trend_averages_runs_sharing_a_seed_and_setting():
    table = _grid(effect=20)
    doubled = pd.concat([table, table.assign(width=table.width + 1)])  # e.g. a second depth of the same runs
    v = trend(doubled, "knob", "width")
    assert v.n == 3 and v.p_value == pytest.approx(trend(table, "knob", "width").p_value)


def test_trend_without_a_unit_treats_rows_as_independent():
    table = pd.DataFrame({"rank": [2, 4, 7, 15, 30], "acc": [0.5, 0.6, 0.55, 0.7, 0.8]})
    v = trend(table, "rank", "acc", unit=None, row_unit="trial")
    assert v.n == 5 and v.unit == "trial"
    assert v.p_value == pytest.approx(spearman_permutation(table["rank"], table["acc"]).p_value)
    assert trend(table.head(2), "rank", "acc", unit=None).note.startswith("too few")


def test_two_groups_3_against_3_reports_the_exact_floor():
    table = pd.DataFrame({"loss": ["hinge"] * 3 + ["ce"] * 3, "width": [131, 134, 130, 165, 168, 171]})
    v = two_groups(table, "width", "loss", "hinge", "ce")
    assert v.p_value == pytest.approx(0.1) == pytest.approx(v.p_floor)
    assert v.effect.estimate == pytest.approx(131.666666 - 168, abs=1e-4)
    row = verdict_table([v]).iloc[0]
    assert row["p_value"] == pytest.approx(0.1) and np.isnan(row["ci_low"]) and row["n"] == 6


def test_bootstrap_interval_is_scipys_bca_and_refused_for_tiny_samples():
    values = np.array([0.1, 0.2, 0.2, 0.3, 0.3, 0.4, 0.9, 1.5, 3.0])  # skewed: BCa and percentile differ
    ci, how = bootstrap_ci((values,), lambda v, axis=-1: v.mean(axis=axis), seed=1, units="seeds")
    ref = stats.bootstrap((values,), np.mean, method="BCa", n_resamples=9999, rng=1).confidence_interval
    assert ci == pytest.approx((ref.low, ref.high)) and "BCa" in how
    none, why = bootstrap_ci((values[:MIN_BOOTSTRAP - 1],), lambda v, axis=-1: v.mean(axis=axis))
    assert none is None and "too few" in why
