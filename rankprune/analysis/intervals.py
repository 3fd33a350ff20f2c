"""Bootstrap confidence intervals for effects, and when none can be had; an interval for a mean at any n."""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.stats import bootstrap
from scipy.stats import t as student_t

__all__ = ["MIN_BOOTSTRAP", "bootstrap_ci", "mean_interval"]

# Fewest units a bootstrap interval is made from. The bootstrap treats the sample as the population: 3 seeds
# have only 10 distinct resamples (5 have 126) and their spread understates the population's, so a small-n
# interval covers far less often than it claims. Below this, an effect is reported without an interval.
MIN_BOOTSTRAP = 8


def bootstrap_ci(samples: tuple, statistic, *, paired: bool = False, level: float = 0.95, n_resamples: int = 9_999,
                 seed: int = 0, units: str = "units") -> tuple[tuple[float, float] | None, str]:
    """A BCa bootstrap interval (Efron 1987) for statistic(*samples, axis=-1), seeded, and how it was made; or None
    and why not (fewer than MIN_BOOTSTRAP units in a sample, or a degenerate bootstrap distribution). `paired`
    resamples the samples' elements together (rows of a table), else each sample on its own."""
    n = min(len(s) for s in samples)
    if n < MIN_BOOTSTRAP:
        return None, f"{n} {units}, too few for a bootstrap interval (needs {MIN_BOOTSTRAP})"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a degenerate distribution warns and gives nan: reported below instead
        res = bootstrap(tuple(np.asarray(s, dtype=float) for s in samples), statistic, paired=paired,
                        vectorized=True, method="BCa", confidence_level=level, n_resamples=n_resamples, rng=seed)
    lo, hi = (float(v) for v in res.confidence_interval)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None, "the bootstrap distribution is degenerate (resamples without spread)"
    return (lo, hi), f"bootstrap BCa over {n} {units}, {n_resamples:,} resamples, seed {seed}"


def mean_interval(values, level: float = 0.95, *, units: str = "seeds", seed: int = 0) -> tuple[float, float, str]:
    """(low, high, how) of an interval for the mean of `values`: the BCa bootstrap (bootstrap_ci) from MIN_BOOTSTRAP
    values on, Student's t interval below that (mean ± t(1 - (1 - level) / 2, n - 1) s / sqrt(n), which assumes
    the values roughly normal: with 3 seeds nothing better is on offer, and the bootstrap would understate the
    spread), and the t interval too where the bootstrap distribution is degenerate. One value or none: (nan, nan)
    and why. `how` names the method and the number of values, for a table's footnote."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    n = len(v)
    if n < 2:
        return math.nan, math.nan, f"no interval from fewer than 2 {units}"
    if n >= MIN_BOOTSTRAP:
        ci, how = bootstrap_ci((v,), lambda x, axis=-1: np.mean(x, axis=axis), level=level, seed=seed, units=units)
        if ci is not None:
            return ci[0], ci[1], how
    half = float(student_t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return float(v.mean() - half), float(v.mean() + half), f"Student's t over {n} {units}"
