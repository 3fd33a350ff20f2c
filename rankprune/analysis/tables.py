"""Verdicts from tables: one row per run (or per trial), the seed as the unit of replication, censored rows out.

Conventions shared by every function here:
- `unit` names the column whose rows share their randomness (the seed: one seed's runs share its data split,
  validation split and initial draw). Rows that share a unit and a setting are one observation (averaged), and
  tests permute within a unit, so n counts units, never rows.
- `censored` names a column holding a boolean, or per hidden layer None / "initial" / "input" as rankprune writes
  it (depths.json, a study trial's `censored`); a row is censored if any entry is not None. A censored value is a
  bound, not a measurement: by default such rows are left out and listed in the verdict (`excluded`);
  include_censored=True keeps them (a sensitivity analysis) and says so in the verdict's note. A table without
  the column has nothing censored.
- A baseline shared by several knobs (the default setting is a point of every knob of a grid) enters each knob's
  test as that knob's baseline, and each knob's test is its own; the knobs are one family, to be corrected with
  `holm` (valid under the dependence the shared baseline creates). No test pools knobs.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import binomtest, rankdata

from rankprune.analysis.exact import mann_whitney_exact, mcnemar_exact, signed_rank_exact, spearman_permutation
from rankprune.analysis.intervals import bootstrap_ci, mean_interval
from rankprune.analysis.verdict import Effect, Verdict

__all__ = ["is_censored", "trend", "paired_difference", "two_groups", "mcnemar"]

DIRECTION = {"two-sided": "changes monotonically with", "greater": "rises with", "less": "falls with"}


def is_censored(values: pd.Series) -> pd.Series:
    """True where a row's value is censored: True, or a per-layer list with an entry that is not None."""
    def one(v) -> bool:
        if isinstance(v, (list, tuple, np.ndarray)):
            return any(e is not None and not (isinstance(e, float) and math.isnan(e)) for e in v)
        return bool(v) if isinstance(v, (bool, np.bool_)) else False
    return values.map(one).astype(bool)


def _why(v) -> str:
    if isinstance(v, (list, tuple, np.ndarray)):
        return "/".join("-" if e is None else str(e) for e in v)
    return "censored"


def _censor(table: pd.DataFrame, censored: str | None, include: bool, describe) -> tuple[pd.DataFrame, tuple, str, str]:
    """(rows to test, excluded descriptions, why, note)."""
    if censored is None or censored not in table:
        return table, (), "", ""
    flags = is_censored(table[censored])
    listed = tuple(f"{describe(r)} [{_why(r[censored])}]" for _, r in table[flags].iterrows())
    if include:
        return table, (), "", (f"includes {len(listed)} censored rows (a sensitivity analysis): {', '.join(listed)}"
                               if listed else "")
    return table[~flags], listed, "censored: the width is a bound, not a measured rank" if listed else "", ""


def _describer(label: str | None, unit: str | None, fallback: str):
    def describe(row) -> str:
        name = str(row[label]) if label else f"{fallback} {row[fallback]}"
        return f"{name} {unit} {row[unit]}" if unit else name
    return describe


def _no_test(claim: str, effect: str, level: float, n: int, unit: str, why: str, excluded=(), excluded_why="",
             note="") -> Verdict:
    return Verdict(claim, Effect(effect, math.nan, None, level, why), "none", math.nan, math.nan, math.nan,
                   "", n, unit, excluded, excluded_why, why if not note else f"{why}; {note}")


def _unit_interval(values: np.ndarray, level: float, seed: int, unit: str,
                   bounds: tuple[float, float] | None = None) -> tuple[tuple[float, float] | None, str]:
    """The interval of an effect that is a mean over units (seeds): mean_interval's, Student's t below
    intervals.MIN_BOOTSTRAP units and BCa from there, so that 3 seeds still give an (honestly wide) interval; clipped
    to `bounds` (a correlation's [-1, 1]). None from fewer than 2 units."""
    lo, hi, how = mean_interval(values, level, units=f"{unit}s", seed=seed)
    if math.isnan(lo):
        return None, how
    if bounds is not None and (lo < bounds[0] or hi > bounds[1]):
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
        how += f", clipped to [{bounds[0]:g}, {bounds[1]:g}]"
    return (lo, hi), how


def _spearman(x, y, axis=-1):
    """Spearman's rho along an axis (for the bootstrap); nan where either variable has no spread."""
    cx, cy = (rankdata(v, axis=axis) for v in (x, y))
    cx, cy = cx - cx.mean(axis=axis, keepdims=True), cy - cy.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (cx * cy).sum(axis=axis) / np.sqrt((cx ** 2).sum(axis=axis) * (cy ** 2).sum(axis=axis))


def _mean(v, axis=-1):
    return np.mean(v, axis=axis)


def trend(table: pd.DataFrame, x: str, y: str, *, unit: str | None = "seed", row_unit: str = "run",
          censored: str | None = "censored", include_censored: bool = False, label: str | None = None,
          alternative: str = "two-sided", claim: str | None = None, level: float = 0.95,
          n_resamples: int = 99_999, seed: int = 0) -> Verdict:
    """Does y rise or fall with x? Spearman's rho, tested by permuting x.

    With `unit` (e.g. "seed", where every seed ran every setting), rows sharing (unit, x) are averaged, rho is
    computed within each unit, the effect is their mean, and x is permuted within units only (a stratified
    permutation test: spearman_permutation); n is the number of units. With unit=None each row is an independent
    `row_unit` (a study's trials) and x is permuted across rows. The interval is a BCa bootstrap over units (over
    rows without a unit), where there are enough of them. `label` names a column that names a row in the list
    of exclusions (else x and its value).
    """
    claim = claim or f"{y} {DIRECTION[alternative]} {x}"
    effect_name = f"Spearman rho, mean within {unit}" if unit else "Spearman rho"
    describe = _describer(label, unit, x)
    rows, excluded, why, note = _censor(table, censored, include_censored, describe)
    missing = rows[[x, y]].isna().any(axis=1)
    if missing.any():  # e.g. an outcome a run did not record: listed like a censored row
        excluded += tuple(f"{describe(r)} [missing {x} or {y}]" for _, r in rows[missing].iterrows())
        why, rows = "; ".join(w for w in (why, f"missing {x} or {y}") if w), rows[~missing]
    what = unit or row_unit
    if unit:
        rows = rows.groupby([unit, x], as_index=False)[y].mean()
        per_unit = rows.groupby(unit)[[x, y]].apply(lambda g: float(_spearman(g[x].to_numpy(), g[y].to_numpy()))
                                                    if len(g) > 1 else math.nan).dropna()
        n = len(per_unit)
    else:
        n = len(rows)
    if n == 0 or rows[x].nunique() < 2 or (unit is None and n < 3):
        return _no_test(claim, effect_name, level, n, what, f"too few {what}s with two or more values of {x}",
                        excluded, why, note)
    res = spearman_permutation(rows[x], rows[y], rows[unit] if unit else None, alternative=alternative,
                               n_resamples=n_resamples, seed=seed)
    if math.isnan(res.p_value):
        return _no_test(claim, effect_name, level, n, what, f"no spread in {x} or {y}", excluded, why, note)
    if unit:
        ci, how = _unit_interval(per_unit.to_numpy(), level, seed, unit, bounds=(-1.0, 1.0))
    else:
        ci, how = bootstrap_ci((rows[x].to_numpy(), rows[y].to_numpy()), _spearman, paired=True, level=level,
                               seed=seed, units=f"{row_unit}s")
    return Verdict(claim, Effect(effect_name, res.statistic, ci, level, how), res.test, res.statistic, res.p_value,
                   res.p_floor, alternative, n, what, excluded, why, note)


def paired_difference(table: pd.DataFrame, value: str, condition: str, a, b, *, unit: str = "seed",
                      within: tuple[str, ...] = (), censored: str | None = "censored", include_censored: bool = False,
                      alternative: str = "two-sided", claim: str | None = None, level: float = 0.95,
                      n_resamples: int = 99_999, seed: int = 0) -> Verdict:
    """Is `value` different under condition a than under b, for the same units? (a - b)

    Rows of a and b are paired on (unit, *within) (e.g. seed and depth); a pair with a censored member, or a row
    without a partner, is left out whole and listed. The pairs' differences are averaged within each unit, so
    each unit gives one difference (the depths of one seed share its data split and seed: they are not
    independent replicates), and the units' differences are tested with the exact signed-rank test
    (signed_rank_exact). The effect is the mean over units of the difference, with a bootstrap interval where
    there are enough units.
    """
    claim = claim or f"{value} differs between {condition} {a} and {b}"
    effect_name = f"mean difference {a} - {b} (per {unit}, averaged over {', '.join(within)})" if within else \
        f"mean difference {a} - {b}"
    keys = [unit, *within]
    sides = {}
    for name in (a, b):  # repeated rows of one (unit, *within) are one observation
        side = table[table[condition] == name]
        side = side.assign(_censored=is_censored(side[censored]) if censored in side else False)
        sides[name] = side.groupby(keys, as_index=False).agg(**{value: (value, "mean"), "_censored": ("_censored", "any")})
    pairs = sides[a].merge(sides[b], on=keys, how="outer", suffixes=("_a", "_b"), indicator=True)
    describe = lambda r: ", ".join(f"{k} {r[k]}" for k in keys)  # noqa: E731
    lonely = pairs["_merge"] != "both"
    bound = ~lonely & (pairs["_censored_a"].astype(bool) | pairs["_censored_b"].astype(bool))
    excluded = [f"{describe(r)} [no partner]" for _, r in pairs[lonely].iterrows()]
    note = ""
    if include_censored and bound.any():  # a sensitivity analysis: kept, and said so
        note = f"includes {int(bound.sum())} pairs with a censored member: " + \
            ", ".join(describe(r) for _, r in pairs[bound].iterrows())
        bound = pd.Series(False, index=pairs.index)
    excluded += [f"{describe(r)} [censored]" for _, r in pairs[bound].iterrows()]
    why = "; ".join(w for w, on in (("no partner under the other condition", lonely.any()),
                                    ("censored: the width is a bound, not a measured rank", bound.any())) if on)
    kept = pairs[~lonely & ~bound]
    per_unit = (kept[f"{value}_a"] - kept[f"{value}_b"]).groupby(kept[unit]).mean()
    n = len(per_unit)
    if n == 0:
        return _no_test(claim, effect_name, level, 0, unit, "no pairs", tuple(excluded), why, note)
    if n == 1:  # one difference has no null distribution to speak of (scipy's permutation test refuses it)
        return _no_test(claim, effect_name, level, 1, unit, f"pairs from one {unit} only: too few to test",
                        tuple(excluded), why, note)
    res = signed_rank_exact(per_unit.to_numpy(), alternative=alternative, n_resamples=n_resamples, seed=seed)
    ci, how = _unit_interval(per_unit.to_numpy(), level, seed, unit)
    return Verdict(claim, Effect(effect_name, float(per_unit.mean()), ci, level, how), res.test, res.statistic,
                   res.p_value, res.p_floor, alternative, n, unit, tuple(excluded), why, note)


def two_groups(table: pd.DataFrame, value: str, group: str, a, b, *, row_unit: str = "run",
               censored: str | None = "censored", include_censored: bool = False, label: str | None = None,
               alternative: str = "two-sided", claim: str | None = None, level: float = 0.95,
               n_resamples: int = 99_999, seed: int = 0) -> Verdict:
    """Is `value` different in group a than in group b, for independent runs? (Mann-Whitney, exact.)

    Only for groups whose runs share no unit of replication: runs of the same seeds under two conditions are
    paired, and belong to paired_difference. The effect is the difference of the means, a - b.
    """
    claim = claim or f"{value} differs between {group} {a} and {b}"
    effect_name = f"difference of means {a} - {b}"
    rows, excluded, why, note = _censor(table, censored, include_censored, _describer(label, None, group))
    va, vb = (rows.loc[rows[group] == g, value].to_numpy(dtype=float) for g in (a, b))
    n = len(va) + len(vb)
    if min(len(va), len(vb)) == 0:
        return _no_test(claim, effect_name, level, n, row_unit, "a group is empty", excluded, why, note)
    res = mann_whitney_exact(va, vb, alternative=alternative, n_resamples=n_resamples, seed=seed)
    ci, how = bootstrap_ci((va, vb), lambda u, v, axis=-1: u.mean(axis=axis) - v.mean(axis=axis), level=level,
                           seed=seed, units=f"{row_unit}s in the smaller group")
    return Verdict(claim, Effect(effect_name, float(va.mean() - vb.mean()), ci, level, how), res.test,
                   res.statistic, res.p_value, res.p_floor, alternative, n, row_unit, excluded, why, note)


def mcnemar(b: int, c: int, *, first: str = "the first classifier", second: str = "the second",
            alternative: str = "greater", items: str = "items", level: float = 0.95) -> Verdict:
    """McNemar's exact test as a verdict (see mcnemar_exact for b and c). The effect is the share of discordant
    items the first classifier got right, b / (b + c) (1/2 under the null), with its exact Clopper-Pearson
    interval; n is the number of discordant items."""
    claim = f"{first} is more accurate than {second} on the same {items}" if alternative == "greater" else \
        f"{first} and {second} differ in accuracy on the same {items}"
    name = f"share of discordant {items} {first} got right"
    p = mcnemar_exact(b, c, alternative)
    floor = mcnemar_exact(b + c, 0, alternative)  # every discordant item one way: the most extreme outcome
    if b + c == 0:
        effect = Effect(name, math.nan, None, level, "no discordant items")
    else:
        ci = binomtest(b, b + c, 0.5).proportion_ci(confidence_level=level, method="exact")
        effect = Effect(name, b / (b + c), (float(ci.low), float(ci.high)), level, "exact (Clopper-Pearson)")
    return Verdict(claim, effect, "McNemar's exact test (binomial on the discordant pairs)", float(b), p, floor,
                   alternative, b + c, "discordant item")
