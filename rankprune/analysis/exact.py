"""Exact and permutation p-values for the small samples rankprune makes (3 seeds a setting is typical).

Each test returns a `TestResult` whose p-value comes from the test's null distribution: enumerated in full
where it has at most EXACT_LIMIT members (the test is then exact), else drawn by seeded Monte Carlo, whose
p-value is (count + 1) / (resamples + 1) (Phipson & Smyth 2010: never zero) with its resolution stated.
Two-sided p-values are twice the smaller one-sided one, capped at 1 (scipy.stats.permutation_test's rule).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import permutations

import numpy as np
from scipy.stats import binomtest, permutation_test, rankdata

__all__ = ["TestResult", "EXACT_LIMIT", "spearman_permutation", "mann_whitney_exact", "signed_rank_exact",
           "mcnemar_exact"]

# Largest null distribution enumerated in full: 9! = 362,880 orderings of one sample, or (4!)^3 = 13,824 within
# three seeds, take well under a second; beyond it a Monte Carlo draw of n_resamples is as informative.
EXACT_LIMIT = 2_000_000
ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class TestResult:
    test: str  # what was done, e.g. "exact permutation Spearman, x permuted within strata (216 permutations)"
    statistic: float
    p_value: float
    p_floor: float  # the smallest p-value this design can give (exact), or the Monte Carlo resolution
    exact: bool


def _from_null(null: np.ndarray, t: float, alternative: str, exact: bool) -> tuple[float, float]:
    """p-value of t and the smallest attainable p-value, from a null distribution."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    tol = 1e-9 * max(1.0, abs(t))  # equal statistics computed in another order must count as equal
    add, size = (0, len(null)) if exact else (1, len(null) + 1)

    def tails(value_hi: float, value_lo: float) -> dict[str, float]:
        hi = (np.count_nonzero(null >= value_hi - tol) + add) / size
        lo = (np.count_nonzero(null <= value_lo + tol) + add) / size
        return {"greater": hi, "less": lo, "two-sided": min(1.0, 2 * min(hi, lo))}

    p = tails(t, t)[alternative]
    if exact:
        floor = tails(null.max(), null.min())[alternative]
    else:
        floor = (2.0 if alternative == "two-sided" else 1.0) / size
    return float(p), float(floor)


def _centred_ranks(v: np.ndarray) -> np.ndarray:
    r = rankdata(v)  # ties get their average rank
    return r - r.mean()


def spearman_permutation(x, y, strata=None, *, alternative: str = "two-sided", n_resamples: int = 99_999,
                         seed: int = 0) -> TestResult:
    """Spearman's rho between x and y, tested by permuting x (within each stratum, where `strata` is given).

    With strata (e.g. the seed: every seed ran every setting), the statistic is the mean over strata of the
    within-stratum rho, and x is permuted only within a stratum, so runs that share a seed stay a block: the
    design of Page's (1963) test for ordered alternatives, with Spearman's rho per block. A stratum whose x or y
    has no spread has no rho under any permutation and is left out of the mean. Ties get average ranks; the
    permutation null is exact with them.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    labels = np.zeros(len(x)) if strata is None else np.asarray(strata)
    blocks = []
    for s in dict.fromkeys(labels.tolist()):  # in order of first appearance
        idx = np.flatnonzero(labels == s)
        cx, cy = _centred_ranks(x[idx]), _centred_ranks(y[idx])
        scale = np.linalg.norm(cx) * np.linalg.norm(cy)
        if len(idx) >= 2 and scale > 0:
            blocks.append((cx, cy / scale))
    if not blocks:
        return TestResult("permutation Spearman: no stratum with spread in both variables", math.nan, math.nan,
                          math.nan, False)
    t = float(np.mean([cx @ cy for cx, cy in blocks]))
    total = math.prod(math.factorial(len(cx)) for cx, _ in blocks)
    exact = total <= EXACT_LIMIT
    rng = np.random.default_rng(seed)
    null = np.zeros(1)
    for cx, cy in blocks:
        k = len(cx)
        if exact:
            values = cx[np.array(list(permutations(range(k))))] @ cy
            null = np.add.outer(null, values).ravel()  # every combination of the strata's orderings
        else:  # in batches: n_resamples x k indices at once would hold 80 MB for 100 trials
            values = np.concatenate([cx[rng.permuted(np.tile(np.arange(k), (m, 1)), axis=1)] @ cy
                                     for m in np.diff(np.r_[0:n_resamples:10_000, n_resamples])])
            null = null + values
    null /= len(blocks)
    p, floor = _from_null(null, t, alternative, exact)
    where = "" if strata is None else f", x permuted within {len(blocks)} strata"
    how = (f"all {total:,} permutations" if exact
           else f"Monte Carlo, {n_resamples:,} seeded permutations, resolution {floor:.1g}")
    return TestResult(f"{'exact ' if exact else ''}permutation Spearman{where} ({how})", t, p, floor, exact)


def _scipy_permutation(data, statistic, permutation_type: str, count: int, alternative: str, n_resamples: int,
                       seed: int, name: str, what: str = "permutations") -> TestResult:
    """scipy.stats.permutation_test, exact (every one of `count` permutations) when count <= EXACT_LIMIT."""
    exact = count <= EXACT_LIMIT
    res = permutation_test(data, statistic, permutation_type=permutation_type, vectorized=True,
                           n_resamples=np.inf if exact else n_resamples, alternative=alternative, rng=seed)
    p, floor = _from_null(np.asarray(res.null_distribution), float(res.statistic), alternative, exact)
    how = f"all {count:,} {what}" if exact else f"Monte Carlo, {n_resamples:,} seeded {what}, resolution {floor:.1g}"
    return TestResult(f"{'exact ' if exact else ''}{name} ({how})", float(res.statistic), p, floor, exact)


def mann_whitney_exact(a, b, *, alternative: str = "two-sided", n_resamples: int = 99_999, seed: int = 0) -> TestResult:
    """Mann-Whitney U of sample a against b, by the permutation distribution of U over every split of the pooled
    values into groups of the two sizes. Without ties this is the exact Mann-Whitney test
    (scipy.stats.mannwhitneyu(method="exact")); with ties (average ranks) it stays exact, where that method's
    tables assume none. "greater": a tends to exceed b."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)

    def u(a, b, axis=-1):
        ranks = rankdata(np.concatenate([a, b], axis=axis), axis=axis)
        n1 = a.shape[axis]
        return np.take(ranks, np.arange(n1), axis=axis).sum(axis=axis) - n1 * (n1 + 1) / 2

    return _scipy_permutation((a, b), u, "independent", math.comb(len(a) + len(b), len(a)), alternative,
                              n_resamples, seed, "Mann-Whitney U")


def signed_rank_exact(d, *, alternative: str = "two-sided", n_resamples: int = 99_999, seed: int = 0) -> TestResult:
    """Wilcoxon's signed-rank test of paired differences d, by flipping the sign of each difference (all 2^n
    patterns: exact). The statistic is the sum of sign(d) * rank(|d|) (= 2 T+ - n(n+1)/2 without zeros); zeros
    are ranked and then count for neither sign (Pratt 1959), ties get average ranks, and the sign-flip null stays
    exact with both, where scipy.stats.wilcoxon(method="exact") needs neither. "greater": d tends above 0."""
    d = np.asarray(d, dtype=float)
    signed = np.sign(d) * rankdata(np.abs(d))  # ranks of |d| do not change when signs flip

    def total(s, axis=-1):
        return s.sum(axis=axis)

    return _scipy_permutation((signed,), total, "samples", 2 ** len(d), alternative, n_resamples, seed,
                              "Wilcoxon signed-rank by sign flips",
                              "sign patterns")


def mcnemar_exact(b: int, c: int, alternative: str = "greater") -> float:
    """McNemar's exact p-value for two classifiers scored on the same items.

    b: items the first classifier got right and the second wrong.
    c: items the first classifier got wrong and the second right.
    Items both got right or both got wrong carry no information about which is better and are not passed. Under
    the null of equal accuracy each discordant item is equally likely to fall either way, so b ~ Binomial(b + c,
    1/2) (McNemar 1947; the exact form is the binomial sign test on the discordant pairs).

    alternative="greater": the first classifier is more accurate, p = P(B >= b); "two-sided": they differ either
    way (scipy's two-sided binomial p, for p = 1/2 twice the smaller tail, capped at 1). No discordant item
    (b + c == 0) gives p = 1.
    """
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got b={b}, c={c}")
    if alternative not in ("greater", "two-sided"):
        raise ValueError(f"alternative must be 'greater' or 'two-sided', got {alternative!r}")
    if b + c == 0:
        return 1.0
    return float(binomtest(b, b + c, 0.5, alternative=alternative).pvalue)
