"""Units that the CLI's tables, the report's tables and its figures share, so a quantity reads alike everywhere.

Training compute spans three orders of magnitude across datasets (a digits run is about 1e10 FLOPs, a
full-MNIST run 1e13 to 1e14), so FLOPs are shown in one unit, TFLOP, to 3 significant figures, rather
than in a fixed number of decimals that rounds a digits run to 0.00.
"""

from __future__ import annotations

import math

__all__ = ["TFLOP", "tflop", "seconds", "BOUND_SIDE", "is_censored", "bound_side", "sum_side", "width_text", "widths_text",
           "spread_text", "sides_of", "bound_note"]

TFLOP = 1e12  # floating-point operations in one TFLOP


def tflop(flops: float | None) -> str:
    """FLOPs as TFLOP to 3 significant figures, never in exponent notation: 1.36e10 FLOPs -> '0.0136',
    1.23e13 -> '12.3', 4.56e14 -> '456'; '' when absent (None or NaN)."""
    if flops is None or (isinstance(flops, float) and math.isnan(flops)):
        return ""
    value = flops / TFLOP
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    decimals = 2 - math.floor(math.log10(abs(value)))
    return f"{value:.{decimals}f}"


def seconds(value: float) -> str:
    """Seconds to 3 significant figures, never in exponent notation, so a short trial does not read '0.0':
    0.0342 -> '0.0342', 1.5 -> '1.50', 12.34 -> '12.3', 4567.8 -> '4,570'."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    value = float(f"{value:.3g}")  # rounded first, so 99.96 is '100', not '100.0'
    if abs(value) >= 100:
        return f"{value:,.0f}"
    decimals = 2 - math.floor(math.log10(abs(value)))
    return f"{value:.{decimals}f}"


# A censored width (phases.censored) is a bound on the convergent width, not a measurement of it, and which side it
# bounds depends on why: one that never shrank below its start ("initial") or that equals its incoming matrix's
# columns ("input") is a lower bound, written ">= 256"; one still shrinking when the depth hit its iteration cap
# ("unconverged") is an upper bound, "<= 37". ASCII, so that it reads alike in a terminal, a log, Markdown and a CSV.
# A reason this table does not know is a bound of unknown side, "~ 37"; a total of bounds on both sides too.
BOUND_SIDE = {"initial": ">=", "input": ">=", "unconverged": "<="}
EITHER_SIDE = "~"


def is_censored(why) -> bool:
    """Whether a layer's "censored" entry marks a bound. None, and anything a run made before censoring was
    recorded holds (no key at all, or NaN from a DataFrame), reads as unknown: not marked."""
    return isinstance(why, str) and bool(why)


def bound_side(why) -> str | None:
    """'>=' (a lower bound), '<=' (an upper bound), '~' (a bound of a side not known here), or None (measured)."""
    return BOUND_SIDE.get(why, EITHER_SIDE) if is_censored(why) else None


def sum_side(reasons) -> str | None:
    """The side a sum of widths (a total, a network rank) is bounded on, given its layers' censored entries: that
    of its bounds where they agree, '~' where lower and upper bounds mix, None where every layer is measured."""
    sides = {bound_side(why) for why in (reasons if isinstance(reasons, (list, tuple)) else [])} - {None}
    return (sides.pop() if len(sides) == 1 else EITHER_SIDE) if sides else None


def width_text(width, why=None) -> str:
    """One hidden layer's width: '64', or '>= 64' / '<= 37' where `why` marks it censored."""
    text = f"{width:g}" if isinstance(width, float) else str(width)
    side = bound_side(why)
    return text if side is None else f"{side} {text}"


def widths_text(widths, censored=None) -> str:
    """Hidden widths as '[>= 64, 38]': each censored one (per layer, as depths.json, an iteration row or a trial's
    "censored" holds it) as a bound. `censored` None, or shorter than `widths` (a run from before it was recorded):
    nothing marked."""
    marks = list(censored) if isinstance(censored, (list, tuple)) else []
    return "[" + ", ".join(width_text(w, marks[i] if i < len(marks) else None) for i, w in enumerate(widths)) + "]"


def spread_text(split: dict, digits: int = 1, extent: bool = False) -> str:
    """A width over seeds that some report only as a bound (replicates.censored_spread): the measured seeds' mean ±
    sd, with their count where bounds are left out of it and their (min-max) if `extent`, then how many are censored
    on each side and their range: '38.0 ± 2.0 (n = 2); 1 censored (>= 64)', '3 censored (<= 98-102)'. Without
    bounds, the spread alone. The bounds are never averaged in: each seed's own value is in its own row."""
    parts = []
    m, bounds = split.get("measured"), split.get("bounds") or []
    if m is not None:
        text = f"{m['mean']:.{digits}f} ± {m['sd']:.{digits}f}"
        if extent:
            text += f" ({m['min']:.{digits}f}-{m['max']:.{digits}f})"
        if bounds:
            text += f" (n = {m['n']})"
        parts.append(text)
    for side in (">=", "<=", EITHER_SIDE):
        values = [v for s, v in bounds if s == side]
        if values:
            lo, hi = min(values), max(values)
            parts.append(f"{len(values)} censored ({side} {lo:g}" + (f"-{hi:g}" if hi != lo else "") + ")")
    return "; ".join(parts)


# What each side of bound means, for the notes under a table or beside a figure that holds one.
BOUND_MEANING = {
    ">=": "a lower bound: the width never shrank below its start, or it equals its input's size (the most rank its "
          "incoming matrix can have)",
    "<=": "an upper bound: its depth hit the iteration cap while it was still shrinking",
    EITHER_SIDE: "a total of lower and upper bounds, a bound on neither side",
}
BOUND_MARKER_WORDS = {">=": "an open upward triangle", "<=": "an open downward triangle", EITHER_SIDE: "an open octagon"}


def sides_of(marks) -> set[str]:
    """The bound sides ('>=', '<=', '~') any of `marks` holds: per-layer censored lists, or lists of them."""
    if isinstance(marks, (list, tuple)):
        return set().union(*(sides_of(m) for m in marks)) if marks else set()
    side = bound_side(marks)
    return {side} if side else set()


def bound_note(sides, markers: bool = False) -> str:
    """One sentence on the bounds a table (or, `markers`, a figure) shows, for the sides present: "Censored widths are
    bounds on the convergent width, not measurements: '>= N', a lower bound: ...; '<= N', an upper bound: ..."."""
    parts = [f"{BOUND_MARKER_WORDS[side] if markers else repr(side + ' N')}, {BOUND_MEANING[side]}"
             for side in (">=", "<=", EITHER_SIDE) if side in sides]
    return ("Censored widths are bounds on the convergent width, not measurements: " + "; ".join(parts) + ".") if parts else ""
