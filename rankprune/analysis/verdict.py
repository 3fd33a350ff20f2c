"""The verdict record every test in rankprune returns, and Holm's correction over a family of them."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Effect", "Verdict", "holm", "verdict_table"]


@dataclass(frozen=True)
class Effect:
    """An effect size with its confidence interval; `ci` is None where no interval can be had (`ci_method` says why)."""
    name: str  # e.g. "Spearman rho (mean within seed)", "mean difference, warm - reinit"
    estimate: float
    ci: tuple[float, float] | None
    level: float  # of the interval, e.g. 0.95
    ci_method: str  # how the interval was made ("bootstrap BCa over seeds, 9999 seeded resamples"), or why none

    def text(self) -> str:
        interval = (f"{self.level:.0%} CI [{self.ci[0]:+.3g}, {self.ci[1]:+.3g}]" if self.ci is not None
                    else f"no CI: {self.ci_method}")
        return f"{self.name} {self.estimate:+.3g} ({interval})"


@dataclass(frozen=True)
class Verdict:
    """One claim tested on one table.

    `n` counts units of replication (`unit`, e.g. "seed"), not rows. `p_floor` is the smallest p-value the test
    can give on this design: an exact test's most extreme outcome (a rank test on 3 against 3 never goes below
    0.05 one-sided), or a Monte Carlo test's resolution. `excluded` lists what was left out and `excluded_why`
    says why (censored runs are counted and listed, never silently dropped). `p_adjusted` and `family` are set
    by `holm`.
    """
    claim: str
    effect: Effect
    test: str
    statistic: float
    p_value: float
    p_floor: float
    alternative: str
    n: int
    unit: str
    excluded: tuple[str, ...] = ()
    excluded_why: str = ""
    note: str = ""  # e.g. why no test could be made (p_value is then nan)
    p_adjusted: float | None = None
    family: str | None = None

    @property
    def p(self) -> float:
        """The p-value to judge by: Holm-adjusted where the verdict belongs to a family."""
        return self.p_value if self.p_adjusted is None else self.p_adjusted

    def significant(self, alpha: float = 0.05) -> bool:
        return not math.isnan(self.p) and self.p <= alpha

    def text(self) -> str:
        """One line for a Markdown report."""
        if math.isnan(self.p_value):
            return f"{self.claim}: no test ({self.note})"
        parts = [f"{self.claim}: {self.effect.text()}; {self.test}, p = {self.p_value:.2g} "
                 f"(smallest attainable {self.p_floor:.2g})"]
        if self.p_adjusted is not None:
            parts.append(f"Holm p = {self.p_adjusted:.2g} over {self.family}")
        parts.append(f"n = {self.n} {self.unit}s")
        if self.excluded:
            parts.append(f"left out {len(self.excluded)} ({self.excluded_why}): {', '.join(self.excluded)}")
        if self.note:
            parts.append(self.note)
        return "; ".join(parts) + "."


def holm(verdicts: list[Verdict], family: str) -> list[Verdict]:
    """The verdicts, in the same order, with Holm's step-down adjusted p-values (Holm 1979) and `family` named.

    The i-th smallest of m p-values is multiplied by m - i + 1, and adjusted values are made non-decreasing in
    that order (capped at 1). It controls the family-wise error under any dependence between the tests, which
    matters here: knobs of one grid share their baseline runs. Verdicts without a test (nan p) are not members
    of the family: they keep p_adjusted None and do not count in m.
    """
    tested = [i for i, v in enumerate(verdicts) if not math.isnan(v.p_value)]
    order = sorted(tested, key=lambda i: verdicts[i].p_value)
    m, running, adjusted = len(order), 0.0, {}
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * verdicts[i].p_value))
        adjusted[i] = running
    name = f"{family} ({m} tests)"
    return [dataclasses.replace(v, p_adjusted=adjusted[i], family=name) if i in adjusted else v
            for i, v in enumerate(verdicts)]


def verdict_table(verdicts: list[Verdict]) -> pd.DataFrame:
    """One row per verdict, numbers as numbers (nan where none), for tables and CSV files."""
    rows = []
    for v in verdicts:
        lo, hi = v.effect.ci if v.effect.ci is not None else (np.nan, np.nan)
        rows.append({"claim": v.claim, "effect": v.effect.name, "estimate": v.effect.estimate, "ci_low": lo,
                     "ci_high": hi, "ci_level": v.effect.level, "test": v.test, "statistic": v.statistic,
                     "p_value": v.p_value, "p_holm": np.nan if v.p_adjusted is None else v.p_adjusted,
                     "p_floor": v.p_floor, "n": v.n, "unit": v.unit, "excluded": "; ".join(v.excluded)})
    return pd.DataFrame(rows)
