"""What a suite's experiments claim, and how each claim is tested: a registry of kinds.

A kind is a function (the trials table of one study: frame.trials_table, a Hypothesis) -> Outcome: its verdicts
(one, or one per value of `by`), a per-setting summary table and a callable that draws its figure. Every p-value
comes from rankprune.analysis; censored rows (a width that is a bound, not a measurement) are left out of every
test and listed in its verdict, and counted in the summary.

    trend        does y rise (fall) with x, a parameter of the grid? Spearman within each seed, x permuted within
                 seeds (analysis.trend, unit = seed)
    paired       is `value` different under condition a than under b, seed by seed? (analysis.paired_difference,
                 paired on the seed and every other parameter that varies)
    association  do two quantities go together, e.g. rank and the generalisation gap? x may be a measured metric.
                 Spearman within each seed, x permuted within seeds (analysis.trend, unit = seed): the trials of
                 one seed share its data split and draws, so they are a block, not independent points
    versus       is quantity a different from quantity b of the same runs (the chosen network's test accuracy
                 against its scratch control's)? The differences are paired within each run and averaged per seed
                 (analysis.paired_difference, exact signed-rank over seeds)
    prediction   does y differ from a value a theory predicts from a setting, x + offset (neural collapse: the
                 last hidden layer's width is C - 1)? The same paired test, of y against x + offset

Options every kind takes: claim (the sentence the report states or refutes), alternative ("two-sided",
"greater", "less"), where = {param = value} (only those rows), by = param (one verdict per value of it), and
include_censored = true for an outcome that is no width (an accuracy): the runs whose widths are bounds are kept,
since the accuracy they reached at the width they stopped at is measured (the scaling grid's narrow starts), and
the verdict says how many.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from rankprune.analysis import Verdict, is_censored, mean_interval, paired_difference, trend
from rankprune.analysis.tables import DIRECTION
from rankprune.config import ConfigError
from rankprune.findings import figures
from rankprune.findings.frame import METRICS, WIDTH_LIKE
from rankprune.units import EITHER_SIDE, bound_side, sum_side

__all__ = ["Hypothesis", "Tested", "Outcome", "Kind", "KINDS", "register", "check_hypothesis", "evaluate",
           "claim_of", "summarise", "ALTERNATIVES"]

ALTERNATIVES = ("two-sided", "greater", "less")
# question: the report section it answers, where it is not its experiment's (one study can answer several: the
# label-noise grid tests the complexity trend and the overfitting one)
COMMON = ("kind", "claim", "alternative", "where", "by", "question", "include_censored")
UNIT = "seed"  # the unit of replication of every suite study: the suite injects the seeds into its grid


@dataclass(frozen=True)
class Hypothesis:
    kind: str
    options: dict[str, Any]  # the kind's own: x and y, or value, condition, a and b
    claim: str | None = None  # None: the analysis layer's wording ("total_width rises with data.label_noise")
    alternative: str = "two-sided"
    where: dict[str, Any] = field(default_factory=dict)
    by: str | None = None
    question: int | None = None  # None: its experiment's
    include_censored: bool = False  # keep the runs whose widths are bounds (an outcome that is no width)


@dataclass(frozen=True)
class Tested:
    """One verdict of a hypothesis, with what it read: `rows` runs, `censored` of them left out as bounds."""
    verdict: Verdict
    rows: int
    censored: int
    group: str = ""  # "evolve.rebuild = warm" with `by`, else ""
    kept: int = 0  # runs whose widths are bounds, kept in the test (include_censored: the outcome is no width)

    @property
    def answered(self) -> bool:
        """False where more than half the runs were left out as censored: the test speaks for too few of them."""
        return 2 * self.censored <= self.rows


@dataclass(frozen=True)
class Outcome:
    tested: tuple[Tested, ...]
    table: pd.DataFrame  # per setting: mean, ci_low, ci_high, ci_method, n, censored, bounds
    draw: Callable[[], Any]  # -> matplotlib Figure
    caption: str
    sides: frozenset[str] = frozenset()  # the bound sides ('>=', '<=', '~') of the censored widths the table shows


@dataclass(frozen=True)
class Kind:
    evaluate: Callable[[pd.DataFrame, Hypothesis], Outcome]
    required: tuple[str, ...]
    check: Callable[[Hypothesis, dict[str, list], str], None]  # (hypothesis, the study's grid, where) -> ConfigError


KINDS: dict[str, Kind] = {}


def register(name: str, required: tuple[str, ...], check: Callable[[Hypothesis, dict[str, list], str], None]):
    """Add a kind: @register("trend", ("x", "y"), check) over its evaluate function."""
    def add(evaluate: Callable[[pd.DataFrame, Hypothesis], Outcome]):
        KINDS[name] = Kind(evaluate, required, check)
        return evaluate
    return add


def evaluate(frame: pd.DataFrame, h: Hypothesis) -> Outcome:
    """The kind's outcome; where the trials never recorded a quantity it reads (trials from before the study file
    asked for it, e.g. scratch_test_acc without evolve.scratch), one "no test" verdict that says so."""
    needed = [v for k, v in h.options.items() if k in ("x", "y", "value", "a", "b") and v in METRICS]
    absent = [v for v in needed if v not in frame or frame[v].isna().all()]
    if absent:
        from rankprune.analysis.tables import _no_test

        why = f"no trial recorded {', '.join(absent)} (run the study again with the setting that records it)"
        v = _no_test(h.claim or claim_of(h), "", 0.95, 0, UNIT, why)
        empty = pd.DataFrame(columns=["setting", "mean", "ci_low", "ci_high", "ci_method", "n", "censored", "bounds"])
        return Outcome((Tested(v, len(frame), 0),), empty, lambda: None, why)
    if h.include_censored and "censored" in frame:
        kept = int(is_censored(frame["censored"]).sum())
        outcome = KINDS[h.kind].evaluate(frame.drop(columns="censored"), h)
        note = (f"{kept} runs whose widths are bounds kept: the outcome is measured in them, at the width they "
                "stopped at") if kept else ""
        if not note:
            return outcome
        tested = tuple(dataclasses.replace(t, kept=kept, verdict=dataclasses.replace(
            t.verdict, note="; ".join(x for x in (t.verdict.note, note) if x))) for t in outcome.tested)
        return dataclasses.replace(outcome, tested=tested, caption=f"{outcome.caption} {note[0].upper()}{note[1:]}.")
    return KINDS[h.kind].evaluate(frame, h)


def claim_of(h: Hypothesis) -> str:
    """The claim as the report states it before any test: the file's, else the analysis layer's wording."""
    if h.claim is not None:
        return h.claim
    o = h.options
    if h.kind == "paired":
        return f"{o['value']} differs between {o['condition']} {o['a']} and {o['b']}"
    if h.kind == "versus":
        return f"{o['a']} differs from {o['b']}"
    if h.kind == "prediction":
        return f"{o['y']} differs from {_predicted_name(o)}"
    if "x" in o and "y" in o:
        return f"{o['y']} {DIRECTION[h.alternative]} {o['x']}"
    return h.kind


# --- checking a hypothesis of a suite file ---------------------------------------------------------------
def check_hypothesis(raw: Any, spec, where: str) -> Hypothesis:
    """A suite file's hypothesis table, checked against its study (`spec`, seeds injected): a Hypothesis, or a
    one-line ConfigError naming `where` and the key."""
    from rankprune.study import _grid

    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table: {{ kind = \"trend\", x = \"...\", y = \"...\" }}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}: unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    allowed = (*COMMON, *KINDS[kind].required)
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]} for kind {kind}; known: {', '.join(allowed)}")
    missing = [k for k in KINDS[kind].required if k not in raw]
    if missing:
        raise ConfigError(f"{where}: kind {kind} needs {missing[0]} ({', '.join(KINDS[kind].required)})")
    claim = raw.get("claim")
    if claim is not None and not (isinstance(claim, str) and claim.strip()):
        raise ConfigError(f"{where}: claim must be a non-empty string")
    alternative = raw.get("alternative", "two-sided")
    if alternative not in ALTERNATIVES:
        raise ConfigError(f"{where}: alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}")
    grid = _grid(spec)
    rows_where = raw.get("where", {})
    if not isinstance(rows_where, dict):
        raise ConfigError(f"{where}: where must be a table, e.g. where = {{ \"evolve.rebuild\" = \"warm\" }}")
    for key, value in rows_where.items():
        _check_param(key, grid, f"{where}: where.{key}", varying=False)
        # one value fixes the key; a list keeps the rows at any of them (e.g. the starts above the convergent width)
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ConfigError(f"{where}: where.{key} is an empty list; give the values to keep")
        for v in values:
            if v not in grid[key]:
                raise ConfigError(f"{where}: where.{key} = {v!r} is not a value of the grid ({_values(grid[key])})")
    by = raw.get("by")
    if by is not None:
        _check_param(by, grid, f"{where}: by", varying=True)
        if by in rows_where:
            raise ConfigError(f"{where}: by = {by!r} is also fixed by where")
    question = raw.get("question")
    if question is not None and (not isinstance(question, int) or isinstance(question, bool)):
        raise ConfigError(f"{where}: question must be a number of [questions], got {question!r}")
    keep = raw.get("include_censored", False)
    if not isinstance(keep, bool):
        raise ConfigError(f"{where}: include_censored must be true or false, got {keep!r}")
    outcomes = [raw[k] for k in ("y", "value", "a", "b") if k in raw]
    if keep and any(o in WIDTH_LIKE for o in outcomes):
        raise ConfigError(f"{where}: include_censored keeps runs whose widths are bounds, so its outcome may not be a "
                          f"width ({', '.join(o for o in outcomes if o in WIDTH_LIKE)})")
    h = Hypothesis(kind, {k: raw[k] for k in KINDS[kind].required}, claim, alternative, dict(rows_where), by, question,
                   keep)
    KINDS[kind].check(h, grid, where)
    return h


def _values(values: list) -> str:
    return ", ".join(map(repr, values))


def _check_param(name: Any, grid: dict[str, list], where: str, varying: bool = True) -> None:
    """`name` must be a parameter the study's grid varies (not the seed: it is the unit of replication)."""
    if not isinstance(name, str) or name not in grid:
        raise ConfigError(f"{where} = {name!r} is not a key of the study's space; its grid varies "
                          f"{', '.join(k for k in grid if k != UNIT) or 'only the seed'}")
    if name == UNIT:
        raise ConfigError(f"{where}: the seed is the unit of replication, not a setting")
    if varying and len(grid[name]) < 2:
        raise ConfigError(f"{where} = {name!r} takes one value in the grid ({_values(grid[name])}): nothing to compare")


def _check_ordered(name: str, grid: dict[str, list], where: str) -> None:
    """A trend needs an order on x: numbers (a rank correlation of "funnel" against "constant" means nothing)."""
    text = [v for v in grid[name] if not isinstance(v, (int, float))]
    if text:
        raise ConfigError(f"{where} = {name!r} takes values without an order ({_values(text)}); compare two of them with "
                          "kind = \"paired\" instead")


def _check_metric(name: Any, where: str) -> None:
    if name not in METRICS:
        raise ConfigError(f"{where} = {name!r} is not a known metric; choose from {', '.join(METRICS)}")


def _distinct(h: Hypothesis, name: str, where: str) -> None:
    """`name` (a compared parameter) may be neither `by` nor fixed to one value by `where` (a list of two or more
    of its values is a subset to compare within)."""
    kept = h.where.get(name)
    if name == h.by or (name in h.where and not (isinstance(kept, list) and len(kept) > 1)):
        raise ConfigError(f"{where} = {name!r} is also {'by' if name == h.by else 'fixed by where'}")


def _check_trend(h: Hypothesis, grid: dict[str, list], where: str) -> None:
    _check_param(h.options["x"], grid, f"{where}: x")
    _distinct(h, h.options["x"], f"{where}: x")
    _check_ordered(h.options["x"], grid, f"{where}: x")
    _check_metric(h.options["y"], f"{where}: y")


def _check_paired(h: Hypothesis, grid: dict[str, list], where: str) -> None:
    condition, a, b = (h.options[k] for k in ("condition", "a", "b"))
    _check_param(condition, grid, f"{where}: condition")
    _distinct(h, condition, f"{where}: condition")
    for key, v in (("a", a), ("b", b)):
        if v not in grid[condition]:
            raise ConfigError(f"{where}: {key} = {v!r} is not a value of {condition} ({_values(grid[condition])})")
    if a == b:
        raise ConfigError(f"{where}: a and b are both {a!r}; a paired test compares two conditions")
    _check_metric(h.options["value"], f"{where}: value")


def _check_association(h: Hypothesis, grid: dict[str, list], where: str) -> None:
    x, y = h.options["x"], h.options["y"]
    if x not in METRICS:
        _check_param(x, grid, f"{where}: x")
        _check_ordered(x, grid, f"{where}: x")
    _check_metric(y, f"{where}: y")
    if x == y:
        raise ConfigError(f"{where}: x and y are both {x!r}")


def _check_versus(h: Hypothesis, grid: dict[str, list], where: str) -> None:
    a, b = h.options["a"], h.options["b"]
    _check_metric(a, f"{where}: a")
    _check_metric(b, f"{where}: b")
    if a == b:
        raise ConfigError(f"{where}: a and b are both {a!r}; compare two quantities")


def _check_prediction(h: Hypothesis, grid: dict[str, list], where: str) -> None:
    _check_trend(h, grid, where)  # y at the values of x, as a trend reads them
    offset = h.options["offset"]
    if not isinstance(offset, (int, float)) or isinstance(offset, bool) or not math.isfinite(offset):
        raise ConfigError(f"{where}: offset must be a number (the prediction is x + offset), got {offset!r}")


# --- the summary every kind shows -----------------------------------------------------------------------
def _flags(rows: pd.DataFrame) -> pd.Series:
    return is_censored(rows["censored"]) if "censored" in rows else pd.Series(False, index=rows.index)


def _side(row, value: str) -> str:
    """Which side the censored row's `value` bounds: a layer's own side for first_width / last_width, the total's
    for a sum, '~' where the run is censored in a layer this value does not read (or the value is no width)."""
    marks = row["censored"] if isinstance(row.get("censored"), (list, tuple)) else []
    if value == "first_width" and marks:
        side = bound_side(marks[0])
    elif value == "last_width" and marks:
        side = bound_side(marks[-1])
    elif value in WIDTH_LIKE:
        side = sum_side(marks)
    else:
        side = None
    return side or EITHER_SIDE


def _num(v) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() else f"{v:.3g}"


def _bound_value(row, value: str) -> str:
    """A censored row's value as a table lists it: '>= 64' for a width (a bound); other values are measured, but of
    a run whose width is a bound: '0.93 (a censored run)'."""
    if value in WIDTH_LIKE and _side(row, value) != EITHER_SIDE:
        return f"{_side(row, value)} {_num(row[value])}"
    return f"{_num(row[value])} (a censored run)"


def _order(values: pd.Series) -> list:
    seen = list(dict.fromkeys(values.tolist()))
    try:
        return sorted(seen)
    except TypeError:
        return seen


def summarise(rows: pd.DataFrame, setting: str, value: str, settings: list | None = None) -> pd.DataFrame:
    """Per value of `setting`: the mean of `value` over seeds (each seed's measured runs averaged first) with its
    interval (analysis.mean_interval: Student's t below analysis.MIN_BOOTSTRAP seeds, BCa from there), the seeds
    it is over, and the censored runs left out of it, listed as bounds ('seed 2: >= 64')."""
    flags = _flags(rows)
    out = []
    for s in settings if settings is not None else _order(rows[setting]):
        here = rows[setting] == s
        measured = rows[here & ~flags].groupby(UNIT)[value].mean().dropna()
        lo, hi, how = mean_interval(measured.to_numpy(), units=f"{UNIT}s")
        bounds = [f"{UNIT} {r[UNIT]}: {_bound_value(r, value)}"
                  for _, r in rows[here & flags].sort_values(UNIT, kind="stable").iterrows()]
        out.append({"setting": s, "mean": float(measured.mean()) if len(measured) else math.nan, "ci_low": lo,
                    "ci_high": hi, "ci_method": how, "n": len(measured), "censored": len(bounds),
                    "bounds": ", ".join(bounds)})
    return pd.DataFrame(out, columns=["setting", "mean", "ci_low", "ci_high", "ci_method", "n", "censored", "bounds"])


def _points(rows: pd.DataFrame, setting: str, value: str) -> pd.DataFrame:
    """What a figure draws per seed: its measured runs at a setting averaged (side None), and each censored run
    at its bound (side '>=', '<=' or '~')."""
    flags = _flags(rows)
    measured = rows[~flags].groupby([setting, UNIT], as_index=False, sort=False)[value].mean()
    measured = measured.rename(columns={setting: "setting", value: "value"}).assign(side=None)
    bound = pd.DataFrame({"setting": rows.loc[flags, setting], UNIT: rows.loc[flags, UNIT],
                          "value": rows.loc[flags, value],
                          "side": [_side(r, value) for _, r in rows[flags].iterrows()]})
    return pd.concat([measured, bound], ignore_index=True) if len(bound) else measured


def _groups(frame: pd.DataFrame, h: Hypothesis) -> list[tuple[Any, pd.DataFrame]]:
    """(value of `by` or None, its rows), the rows restricted to `where`."""
    rows = frame
    for key, value in h.where.items():
        rows = rows[rows[key].isin(value)] if isinstance(value, list) else rows[rows[key] == value]
    if h.by is None:
        return [(None, rows)]
    return [(v, rows[rows[h.by] == v]) for v in _order(rows[h.by])]


def _tested(v: Verdict, rows: pd.DataFrame, h: Hypothesis, g) -> Tested:
    """The verdict of group `g` (None without `by`), its claim naming the group, with the rows it read."""
    if g is not None:
        v = dataclasses.replace(v, claim=f"{v.claim} ({h.by} = {g})")
    return Tested(v, len(rows), int(_flags(rows).sum()), "" if g is None else f"{h.by} = {g}")


def _label(g) -> Any:
    """A group's value in the tables a figure draws from: '' for the one group there is without `by`."""
    return "" if g is None else g


def _stack(parts: list[pd.DataFrame]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["group", "setting", "seed", "value", "side"])


def _where_text(h: Hypothesis) -> str:
    return "".join(f"; only {k} in {', '.join(map(str, v))}" if isinstance(v, list) else f"; only {k} = {v}"
                   for k, v in h.where.items())


# --- the kinds -----------------------------------------------------------------------------------------------
@register("trend", ("x", "y"), _check_trend)
def trend_kind(frame: pd.DataFrame, h: Hypothesis) -> Outcome:
    x, y = h.options["x"], h.options["y"]
    tested, tables, points = [], [], []
    for g, rows in _groups(frame, h):
        v = trend(rows, x, y, unit=UNIT, alternative=h.alternative, claim=h.claim)
        tested.append(_tested(v, rows, h, g))
        tables.append(summarise(rows, x, y).assign(group=_label(g)))
        points.append(_points(rows, x, y).assign(group=_label(g)))
    table, drawn = pd.concat(tables, ignore_index=True), _stack(points)
    title = tested[0].verdict.claim if h.by is None else (h.claim or f"{y} against {x}")

    def draw():
        return figures.by_setting(drawn, table, x, y, title, group=h.by)

    caption = (f"{figures.label_of(y)} at each {x}{_where_text(h)}: per setting the mean over seeds with its 95% "
               "interval, and each seed beside it" + (f", a colour per {h.by}" if h.by else "") + ".")
    return Outcome(tuple(tested), _table(table, h), draw, caption, _sides(drawn, y))


def _sides(points: pd.DataFrame, value: str) -> frozenset[str]:
    """The sides of bound the censored values of a width-like `value` are on; none for other values (not bounds)."""
    if value not in WIDTH_LIKE or points.empty:
        return frozenset()
    return frozenset(s for s in points["side"] if isinstance(s, str))


@register("paired", ("value", "condition", "a", "b"), _check_paired)
def paired_kind(frame: pd.DataFrame, h: Hypothesis) -> Outcome:
    value, condition, a, b = (h.options[k] for k in ("value", "condition", "a", "b"))
    params = frame.attrs.get("params", [])
    tested, tables, points = [], [], []
    for g, rows in _groups(frame, h):
        within = tuple(p for p in params if p not in (condition, UNIT, h.by, *h.where) and p in rows
                       and rows[p].nunique() > 1)
        v = paired_difference(rows, value, condition, a, b, unit=UNIT, within=within, alternative=h.alternative,
                              claim=h.claim)
        both = rows[rows[condition].isin([a, b])]
        tested.append(_tested(v, both, h, g))
        tables.append(summarise(both, condition, value, [a, b]).assign(group=_label(g)))
        points.append(_points(both, condition, value).assign(group=_label(g)))
    table, drawn = pd.concat(tables, ignore_index=True), _stack(points)
    drawn = _one_per_seed(drawn)
    title = tested[0].verdict.claim if h.by is None else (h.claim or f"{value}: {a} against {b}")

    def draw():
        return figures.paired_lines(drawn, table, condition, a, b, value, title, group=h.by)

    caption = (f"{figures.label_of(value)} under {condition} = {a} and {b}{_where_text(h)}: one line per seed "
               "joining its two values, and each condition's mean with its 95% interval beside them.")
    return Outcome(tuple(tested), _table(table, h), draw, caption, _sides(drawn, value))


def _one_per_seed(points: pd.DataFrame) -> pd.DataFrame:
    """One value per (group, condition, seed) for a line to join: a seed's measured runs are averaged already; a
    condition where the seed has a censored run shows that run (the pair is left out of the test)."""
    if points.empty:
        return points
    points = points.assign(_bound=points["side"].map(lambda s: isinstance(s, str)))
    points = points.sort_values("_bound", ascending=False, kind="stable")
    return points.drop_duplicates(["group", "setting", UNIT]).drop(columns="_bound")


@register("association", ("x", "y"), _check_association)
def association_kind(frame: pd.DataFrame, h: Hypothesis) -> Outcome:
    x, y = h.options["x"], h.options["y"]
    tested, tables, points = [], [], []
    for g, rows in _groups(frame, h):
        trials = rows.assign(trial="#" + rows["number"].astype(str)) if "number" in rows else rows
        v = trend(trials, x, y, unit=UNIT, row_unit="trial", label="trial" if "trial" in trials else None,
                  alternative=h.alternative, claim=h.claim)
        tested.append(_tested(v, rows, h, g))
        flags = _flags(rows)
        for name in (x, y):
            measured = rows.loc[~flags, name].dropna().to_numpy(dtype=float)
            lo, hi, how = mean_interval(measured, units="trials")
            tables.append(pd.DataFrame([{
                "group": _label(g), "setting": name, "mean": measured.mean() if len(measured) else math.nan, "ci_low": lo,
                "ci_high": hi, "ci_method": how, "n": len(measured), "censored": int(flags.sum()),
                "bounds": ", ".join(f"#{r['number']}: {_bound_value(r, name)}" for _, r in rows[flags].iterrows())
                if "number" in rows else ""}]))
        points.append(pd.DataFrame({"group": _label(g), "x": rows[x].to_numpy(), "y": rows[y].to_numpy(),
                                    "seed": rows[UNIT].to_numpy() if UNIT in rows else None,
                                    "side": [_side(r, y) if f else None for (_, r), f in zip(rows.iterrows(), flags)]}))
    table = pd.concat(tables, ignore_index=True)
    drawn = pd.concat(points, ignore_index=True)
    title = tested[0].verdict.claim if h.by is None else (h.claim or f"{y} against {x}")

    def draw():
        return figures.scatter(drawn, x, y, title, group=h.by)

    caption = (f"Each trial's {figures.label_of(y)} against its {figures.label_of(x)}{_where_text(h)}; the test "
               "correlates them within each seed and permutes within seeds.")
    return Outcome(tuple(tested), _table(table, h, setting="quantity"), draw, caption, _sides(drawn, y))


def _table(table: pd.DataFrame, h: Hypothesis, setting: str | None = None) -> pd.DataFrame:
    """The summary with its setting column named after what it holds, and the group column only with `by`."""
    name = setting or {"trend": h.options.get("x"), "paired": h.options.get("condition"),
                       "prediction": h.options.get("x")}.get(h.kind, "setting")
    table = table.rename(columns={"setting": name})
    if h.by is None:
        return table.drop(columns="group")
    table = table.rename(columns={"group": h.by})
    return table[[h.by, *(c for c in table.columns if c != h.by)]]


# --- two quantities of the same runs -------------------------------------------------------------------
def _predicted_name(o: dict) -> str:
    off = o["offset"]
    return o["x"] if off == 0 else f"({o['x']} {'+' if off > 0 else '-'} {_num(abs(off))})"


def _two_sided_frame(rows: pd.DataFrame, a: str, a_values: pd.Series, b: str, b_values: pd.Series,
                     width_like: bool) -> pd.DataFrame:
    """Each run twice, as quantity a and as quantity b (column "quantity", its number in "value"), so that the
    paired machinery compares them run by run. A censored run's width is a bound: it stays flagged where the
    quantities are widths, and is measured like any other run where they are not (an accuracy is no bound)."""
    keep = [c for c in rows.columns if c not in (a, b, "value", "quantity")]
    if not width_like:
        keep = [c for c in keep if c != "censored"]
    both = pd.concat([rows[keep].assign(quantity=a, value=a_values.to_numpy()),
                      rows[keep].assign(quantity=b, value=b_values.to_numpy())], ignore_index=True)
    both.attrs = dict(rows.attrs)
    return both


def _compare(frame: pd.DataFrame, h: Hypothesis, a: str, b: str, values, width_like: bool, title_of) -> Outcome:
    """The versus and prediction kinds: quantity a against b of the same runs, paired run by run, averaged per seed."""
    params = frame.attrs.get("params", [])
    tested, tables, points = [], [], []
    for g, rows in _groups(frame, h):
        va, vb = values(rows)
        both = _two_sided_frame(rows, a, va, b, vb, width_like)
        # one pair per run: a run is its seed and the settings that vary (the grid has one run per cell)
        within = tuple(p for p in params if p not in (UNIT, h.by, *h.where) and p in rows and rows[p].nunique() > 1)
        v = paired_difference(both, "value", "quantity", a, b, unit=UNIT, within=within, alternative=h.alternative,
                              claim=h.claim or claim_of(h))
        tested.append(_tested(v, rows, h, g))
        tables.append(summarise(both, "quantity", "value", [a, b]).assign(group=_label(g)))
        points.append(_points(both, "quantity", "value").assign(group=_label(g)))
    table, drawn = pd.concat(tables, ignore_index=True), _one_per_seed(_stack(points))
    title = title_of(tested)

    def draw():
        return figures.paired_lines(drawn, table, "quantity", a, b, h.options.get("y", a), title, group=h.by)

    return table, drawn, tested, draw


@register("versus", ("a", "b"), _check_versus)
def versus_kind(frame: pd.DataFrame, h: Hypothesis) -> Outcome:
    a, b = h.options["a"], h.options["b"]
    table, drawn, tested, draw = _compare(
        frame, h, a, b, lambda rows: (rows[a], rows[b]), a in WIDTH_LIKE and b in WIDTH_LIKE,
        lambda t: t[0].verdict.claim if h.by is None else (h.claim or f"{a} against {b}"))
    caption = (f"{figures.label_of(a)} against {figures.label_of(b)} of the same runs{_where_text(h)}: one line per "
               "seed joining its two values (its runs averaged), and each quantity's mean with its 95% interval.")
    return Outcome(tuple(tested), _table(table.rename(columns={"setting": "quantity"}), h, setting="quantity"), draw,
                   caption, _sides(drawn, a))


@register("prediction", ("y", "x", "offset"), _check_prediction)
def prediction_kind(frame: pd.DataFrame, h: Hypothesis) -> Outcome:
    x, y, offset = h.options["x"], h.options["y"], float(h.options["offset"])
    predicted = _predicted_name(h.options)
    table, drawn, tested, draw = _compare(
        frame, h, y, predicted, lambda rows: (rows[y], rows[x].astype(float) + offset), y in WIDTH_LIKE,
        lambda t: t[0].verdict.claim if h.by is None else (h.claim or f"{y} against {predicted}"))
    # per setting of x: the measured y beside what the theory predicts there
    per_setting = []
    for g, rows in _groups(frame, h):
        s = summarise(rows, x, y).assign(group=_label(g))
        s.insert(2, "predicted", s["setting"].astype(float) + offset)
        per_setting.append(s)
    table = pd.concat(per_setting, ignore_index=True)

    def draw_by_setting():
        points = _stack([_points(rows, x, y).assign(group=_label(g)) for g, rows in _groups(frame, h)])
        return figures.by_setting(points, table, x, y, tested[0].verdict.claim if h.by is None else (h.claim or y),
                                  group=h.by, predicted=(table["setting"].astype(float).tolist(),
                                                         table["predicted"].tolist(), predicted))

    caption = (f"{figures.label_of(y)} at each {x}{_where_text(h)}: per setting the mean over seeds with its 95% "
               f"interval and each seed beside it; the dashed line is the prediction, {predicted}.")
    return Outcome(tuple(tested), _table(table, h), draw_by_setting, caption, _sides(drawn, y))
