"""A rich live view of the controller: progress per depth, iteration and epoch, and a closing table."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from rankprune.config import RunConfig

__all__ = ["LiveReporter", "summary_table"]


def _fmt_widths(widths: list[int]) -> str:
    return "[" + ", ".join(str(w) for w in widths) + "]"


class LiveReporter:
    """Implements evolve.Reporter with a rich Progress: one bar per depth (iterations), one for epochs."""

    def __init__(self, cfg: RunConfig, console: Console | None = None):
        self.cfg = cfg
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._depth_task: dict[int, int] = {}
        self._epoch_task: int | None = None

    def __enter__(self) -> "LiveReporter":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def depth_started(self, depth, widths, iteration):
        self._depth_task[depth] = self.progress.add_task(
            f"depth {depth} iterations", total=self.cfg.evolve.max_iterations, completed=iteration,
            info=f"widths {_fmt_widths(widths)}",
        )
        if self._epoch_task is None:
            self._epoch_task = self.progress.add_task("  epochs", total=self.cfg.train.max_epochs, info="")

    def iteration_started(self, depth, iteration, widths):
        self.progress.update(self._depth_task[depth], info=f"iteration {iteration}: widths {_fmt_widths(widths)}")
        self.progress.reset(self._epoch_task, total=self.cfg.train.max_epochs, info="")

    def epoch_done(self, depth, iteration, row):
        self.progress.update(
            self._epoch_task, completed=row["epoch"],
            info=f"val {row['val_acc']:.4f}  loss {row['train_loss']:.4f}  {row['cumulative_seconds']:.1f} s",
        )

    def iteration_done(self, depth, row):
        self.progress.advance(self._depth_task[depth])
        self.progress.console.print(
            f"depth {depth} iteration {row['iteration']}: widths {_fmt_widths(row['widths'])} -> "
            f"{_fmt_widths(row['next_widths'])}  val {row['val_acc']:.4f} test {row['test_acc']:.4f}  "
            f"{row['epochs']} epochs ({row['train_stop']})  {row['cumulative_seconds']:.1f} s"
            + (f"  [{row['stop']}]" if row["stop"] else ""),
            soft_wrap=True,  # one line per iteration in logs, whatever the terminal width
        )

    def depth_done(self, depth, summary):
        task = self._depth_task[depth]
        self.progress.update(task, total=summary["iterations"], completed=summary["iterations"],
                             info=f"{summary['stop_reason']}: widths {_fmt_widths(summary['widths'])}")


def summary_table(depths: dict[str, dict]) -> Table:
    table = Table(title="rank-pruning results per depth")
    for col in ("depth", "stopped by", "iters", "widths", "hidden units", "params", "test acc first -> chosen", "train s", "TFLOP"):
        table.add_column(col, justify="right" if col not in ("stopped by", "widths") else "left")
    for key in sorted(depths, key=int):
        d = depths[key]
        start, end = sum(d["initial_widths"]), sum(d["widths"])
        table.add_row(
            str(d["depth"]),
            d["stop_reason"],
            str(d["iterations"]),
            _fmt_widths(d["widths"]),
            f"{start} -> {end} ({start / max(end, 1):.1f}x)",
            f"{d['parameters']:,}",
            f"{d['initial_test_acc']:.4f} -> {d['test_acc']:.4f}",
            f"{d['cumulative_seconds']:.1f}",
            f"{d['cumulative_flops'] / 1e12:.2f}",
        )
    return table
