"""Statistics for rankprune: pure functions from tables to verdicts.

Every p-value the package or its benchmarks report comes from here. Tests are exact or permutation
tests wherever samples are small or tied; effects carry bootstrap intervals; families of tests
reported together are Holm-corrected; the seed is the unit of replication.
"""
from rankprune.analysis.paired import mcnemar_exact

__all__ = ["mcnemar_exact"]
