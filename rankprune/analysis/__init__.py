"""Statistics for rankprune: pure functions from tables to verdicts.

Every p-value the package or its benchmarks report comes from here. Tests are exact, or permutation tests with
a stated resolution, wherever samples are small or tied; effects carry bootstrap intervals where there are
enough units for one; families of tests reported together are Holm-corrected; the seed is the unit of
replication; censored rows are left out and listed (tables.py says how).
"""
from rankprune.analysis.exact import (EXACT_LIMIT, TestResult, mann_whitney_exact, mcnemar_exact,
                                      signed_rank_exact, spearman_permutation)
from rankprune.analysis.intervals import MIN_BOOTSTRAP, bootstrap_ci, mean_interval
from rankprune.analysis.tables import is_censored, mcnemar, paired_difference, trend, two_groups
from rankprune.analysis.verdict import Effect, Verdict, holm, verdict_table

__all__ = [
    "Verdict", "Effect", "holm", "verdict_table",
    "trend", "paired_difference", "two_groups", "mcnemar", "is_censored",
    "spearman_permutation", "mann_whitney_exact", "signed_rank_exact", "mcnemar_exact", "TestResult",
    "bootstrap_ci", "mean_interval", "MIN_BOOTSTRAP", "EXACT_LIMIT",
]
