"""Paired tests on items scored by two classifiers (McNemar) and on per-seed differences."""
from __future__ import annotations

from scipy.stats import binomtest

__all__ = ["mcnemar_exact"]


def mcnemar_exact(b: int, c: int, alternative: str = "greater") -> float:
    """McNemar's exact p-value for two classifiers scored on the same items.

    b: items the first classifier got right and the second wrong.
    c: items the first classifier got wrong and the second right.
    Items both got right or both got wrong carry no information about which is better and are not
    passed. Under the null of equal accuracy each discordant item is equally likely to fall either
    way, so b ~ Binomial(b + c, 1/2) (McNemar 1947; the exact form is the binomial sign test).

    alternative="greater": the first classifier is more accurate (P(B >= b)); "two-sided":
    they differ either way (scipy's two-sided binomial p, which for p = 1/2 is min(1, 2 * the
    smaller tail)). No discordant items (b + c == 0) gives p = 1.
    """
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got b={b}, c={c}")
    if alternative not in ("greater", "two-sided"):
        raise ValueError(f"alternative must be 'greater' or 'two-sided', got {alternative!r}")
    if b + c == 0:
        return 1.0
    return float(binomtest(b, b + c, 0.5, alternative=alternative).pvalue)
