"""Units that the CLI's tables, the report's tables and its figures share, so a quantity reads alike everywhere.

Training compute spans three orders of magnitude across datasets (a digits run is about 1e10 FLOPs, a
full-MNIST run 1e13 to 1e14), so FLOPs are shown in one unit, TFLOP, to 3 significant figures, rather
than in a fixed number of decimals that rounds a digits run to 0.00.
"""

from __future__ import annotations

import math

__all__ = ["TFLOP", "tflop", "seconds", "BOUND", "width_text", "widths_text", "is_censored"]

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


# A censored width (phases.censored: it never shrank below its start, or it equals its incoming matrix's columns) is a
# lower bound on the convergent rank, not a measurement of it: every table shows it as ">= 256", in ASCII so that it
# reads alike in a terminal, a log, Markdown and a CSV.
BOUND = ">= "


def is_censored(why) -> bool:
    """Whether a layer's "censored" entry marks a bound: "initial" or "input". None, and anything a run made before
    censoring was recorded holds (no key at all, or NaN from a DataFrame), reads as unknown: not marked."""
    return isinstance(why, str) and bool(why)


def width_text(width, why=None) -> str:
    """One hidden layer's width: '64', or '>= 64' where `why` marks it censored."""
    text = f"{width:g}" if isinstance(width, float) else str(width)
    return BOUND + text if is_censored(why) else text


def widths_text(widths, censored=None) -> str:
    """Hidden widths as '[>= 64, 38]': each censored one (per layer, as depths.json, an iteration row or a trial's
    "censored" holds it) as a bound. `censored` None, or shorter than `widths` (a run from before it was recorded):
    nothing marked."""
    marks = list(censored) if isinstance(censored, (list, tuple)) else []
    return "[" + ", ".join(width_text(w, marks[i] if i < len(marks) else None) for i, w in enumerate(widths)) + "]"
