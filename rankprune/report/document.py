"""The Markdown document a report is written into: cell formatting, figure links, and the out folder.

A report owns report.md and the figures it links, nothing else: `_check_out` refuses a folder of other
files, and `_Document.write` removes only the figures the earlier report.md linked and this one does not.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from rankprune import figures
from rankprune.config import ConfigError
from rankprune.runfolder import write_text_atomic
from rankprune.units import seconds

REPORT = "report.md"
FIGURES = "figures"


# --- formatting ------------------------------------------------------------------------------------
def _absent(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _num(v: Any) -> str:
    """Whole numbers as integers, others to 3 significant digits; '' when absent."""
    if _absent(v):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _list(v: Any) -> str:
    # a diverged network's ranks are NaN, stored as null
    return "[" + ", ".join(_num(x) or "nan" for x in v) + "]" if isinstance(v, (list, tuple)) else ""


def _seconds(v: Any) -> str:
    """Seconds to 3 significant figures (units.seconds): a digits run trains an iteration in 0.06 s, which a
    fixed decimal printed as 0.0, a column of zeros; '' when absent."""
    return "" if _absent(v) else seconds(v)


def _pct(v: Any) -> str:
    """An accuracy (a fraction) as a percentage with 2 decimals."""
    return "" if _absent(v) else f"{100 * v:.2f}"


def _count(v: Any) -> str:
    return "" if _absent(v) else f"{int(v):,}"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first[:240]}" if first else type(exc).__name__


def _md_table(df: pd.DataFrame) -> str:
    # Every cell is formatted text already; tabulate must not re-parse "1,135" or "93.75".
    return df.to_markdown(index=False, disable_numparse=True)


# --- the document ----------------------------------------------------------------------------------
class _Document:
    """Markdown lines and the figures written for them, as `fmt` files (figures.FORMATS) at `dpi`; `write`
    puts `report` (report.md) in place last. Figures go into the folder `figure_dir` (figures/) beside it, or
    beside the report itself where that is ""."""

    def __init__(self, out: Path, fmt: str = "png", dpi: float = figures.DPI, report: str = REPORT,
                 figure_dir: str = FIGURES):
        self.out = out
        self.fmt, self.dpi = fmt, dpi
        self.report, self.figure_dir = report, figure_dir
        self.lines: list[str] = []
        self.figures: list[Path] = []

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, df: pd.DataFrame) -> None:
        self.add(_md_table(df), "")

    def bullets(self, items: list[str]) -> None:
        self.add(*(f"- {item}" for item in items), "")

    def figure(self, name: str, draw: Callable[[], Any], alt: str, caption: str) -> bool:
        """Draw, save as figures/NAME.FMT and link it; a figure that cannot be drawn is a note saying why."""
        path = self.out / self.figure_dir / f"{name}.{self.fmt}"
        try:
            figures.save(draw(), path, dpi=self.dpi)
        except Exception as exc:
            self.add(f"*Figure not drawn ({alt}): {_reason(exc)}.*", "")
            return False
        self.figures.append(path)
        link = f"{self.figure_dir}/{path.name}" if self.figure_dir else path.name
        self.add(f"![{alt}]({link})", "", f"*{caption}*", "")
        return True

    def write(self) -> Path:
        path = self.out / self.report
        earlier = _linked_figures(path, self.figure_dir)
        write_text_atomic(path, "\n".join(self.lines).rstrip() + "\n")
        # Figures the earlier report drew and this one did not would be stale: remove them, and only
        # them. Anything else in figures/ (a user's own file) was never ours to delete.
        for old in earlier - {p.name for p in self.figures}:
            (self.out / self.figure_dir / old).unlink(missing_ok=True)
        return path


def _linked_figures(report: Path, figure_dir: str = FIGURES) -> set[str]:
    """The figure files a report links (what an earlier rankprune report wrote into `figure_dir`)."""
    folder = rf"{re.escape(figure_dir)}/" if figure_dir else ""
    link = re.compile(rf"\]\({folder}([A-Za-z0-9_.-]+\.(?:{'|'.join(figures.FORMATS)}))\)")
    try:
        return set(link.findall(report.read_text()))
    except (OSError, UnicodeDecodeError):
        return set()


DPI_RANGE = (50, 1200)  # pixels per inch: below 50 text is unreadable; above 1200 a figure runs to 100 MB


def _check_figure_options(fmt: str, dpi: float) -> None:
    """--format and --dpi, refused in one line before anything is read or written."""
    if fmt not in figures.FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(figures.FORMATS)}, got {fmt!r}")
    lo, hi = DPI_RANGE
    if not lo <= dpi <= hi:
        raise ConfigError(f"--dpi must be between {lo} and {hi} (pixels per inch), got {dpi:g}")


def _check_out(out: Path, report: str = REPORT) -> None:
    """A report goes into a new or empty folder, or over an earlier rankprune report; never into a folder of
    other files (it would mix with them, and stale-figure clean-up must not touch what is not ours)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / report).is_file():
        raise ConfigError(f"{out} holds other files and no {report}: give an empty or new folder with --out")
