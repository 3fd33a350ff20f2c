"""A rich live view of the controller: progress per depth, iteration and epoch, and a closing table."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from rankprune.config import RunConfig, task_knobs
from rankprune.units import sides_of, spread_text, tflop, widths_text

__all__ = ["LiveReporter", "summary_table"]


def _first_acc(d: dict) -> float:
    """The full-width accuracy to compare the chosen network with: annealed (the reference) where the first
    iteration itself stopped at its first plateau."""
    return d["reference_test_acc"] if d.get("reference_test_acc") is not None else d["initial_test_acc"]


def _fmt_widths(widths, censored=None) -> str:
    """'[64, 38]'; a censored width (its layer's entry in `censored`: "initial" or "input") as '>= 64', a bound."""
    return widths_text(list(widths), censored)


def _task_columns(row: dict) -> str:
    """The iteration's columns that only some tasks have: memorisation under label noise, unseen tasks, N_Delta."""
    parts = []
    if row.get("train_acc_relabelled") is not None:
        parts.append(f"train relabelled {row['train_acc_relabelled']:.4f} clean {row['train_acc_clean']:.4f}")
    if row.get("test_acc_unseen_tasks") is not None:
        parts.append(f"unseen tasks {row['test_acc_unseen_tasks']:.4f}")
    if row.get("n_delta") is not None:
        parts.append(f"N_Delta {row['n_delta']}")
    return "".join("  " + p for p in parts)


class LiveReporter:
    """Implements evolve.Reporter with a rich Progress: a bar for the depth in progress (iterations) and one
    for its epochs. A finished depth's bars are removed and replaced by a printed line, so finished bars never
    stand between the lines of the next depth."""

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
        # What task this is, before any number: the knobs change what every accuracy below means.
        self.console.print("task: " + "; ".join(task_knobs(self.cfg.to_dict())), soft_wrap=True, markup=False)
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def depth_started(self, depth, widths, iteration):
        self._depth_task[depth] = self.progress.add_task(
            f"depth {depth} iterations", total=self.cfg.evolve.max_iterations, completed=iteration,
            info=f"widths {_fmt_widths(widths)}",
        )
        if self._epoch_task is None:  # added after the depth's bar, so it reads as the depth's epochs
            self._epoch_task = self.progress.add_task("  epochs", total=self.cfg.train.max_epochs, info="")

    def iteration_started(self, depth, iteration, widths):
        self.progress.update(self._depth_task[depth], info=f"iteration {iteration}: widths {_fmt_widths(widths)}")
        self.progress.reset(self._epoch_task, total=self.cfg.train.max_epochs, info="")

    def epoch_done(self, depth, iteration, row):
        from rankprune.evolve.iteration import driving_ranks

        try:  # what the widths follow: the weights' rank, or the activations' (--rank-source)
            ranks = driving_ranks(self.cfg.resolved(), row)
        except KeyError:
            ranks = None
        self.progress.update(
            self._epoch_task, completed=row["epoch"],
            info=f"val {row['val_acc']:.4f}  loss {row['train_loss']:.4f}"
                 + (f"  N_Delta {row['n_delta']}" if "n_delta" in row else "")
                 + (f"  rank {_fmt_widths(round(r) for r in ranks)}" if ranks is not None else "")
                 + f"  {row['cumulative_seconds']:.1f} s",
        )

    def iteration_done(self, depth, row):
        self.progress.advance(self._depth_task[depth])
        self.progress.console.print(
            f"depth {depth} iteration {row['iteration']}: widths {_fmt_widths(row['widths'])} -> "
            f"{_fmt_widths(row['next_widths'], row.get('censored'))}  val {row['val_acc']:.4f} test {row['test_acc']:.4f}  "
            f"{row['epochs']} epochs ({row['train_stop']})  {row['cumulative_seconds']:.1f} s"
            + _task_columns(row)
            + (f"  [{row['stop']}]" if row["stop"] else ""),
            soft_wrap=True,  # one line per iteration in logs, whatever the terminal width
            markup=False,  # "[fixed-point]" is text, not a rich style tag (which would swallow it)
        )

    def depth_done(self, depth, summary):
        # The depth's bars go and a line takes their place: the next depth's bars start below it.
        self.progress.remove_task(self._depth_task.pop(depth))
        if self._epoch_task is not None:
            self.progress.remove_task(self._epoch_task)
            self._epoch_task = None
        self.progress.refresh()  # else the print below redraws the last frame, the removed bars in it
        self.progress.console.print(
            f"depth {depth} done: {summary['stop_reason']} after {summary['iterations']} iterations, widths "
            f"{_fmt_widths(summary['widths'], summary.get('censored'))} (chosen iteration {summary.get('chosen_iteration', '?')})  "
            f"test {summary['test_acc']:.4f}  {summary['cumulative_seconds']:.1f} s  "
            f"{tflop(summary['cumulative_flops'])} TFLOP",
            soft_wrap=True, markup=False,
        )


def summary_table(depths: dict[str, dict]) -> Table:
    """One row of two lines per depth: the first network on top, the chosen one below ("-> ..."), beside the
    stop reason and the depth's cumulative cost. Two short lines rather than one long one keep the table
    within an 80-column terminal; the stop reason is never wrapped nor cut."""
    table = Table(title="rank-pruning results per depth", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  collapse_padding=True)
    rows = []
    for key in sorted(depths, key=int):
        d = depths[key]
        initial_parameters = f"{d['initial_parameters']:,}" if d.get("initial_parameters") is not None else "?"
        rows.append((
            str(d["depth"]),
            f"{d['stop_reason']}\n{d['iterations']} iterations",
            f"{_fmt_widths(d['initial_widths'])}\n-> {_fmt_widths(d['widths'], d.get('censored'))}",
            f"{initial_parameters}\n-> {d['parameters']:,}",
            f"{_first_acc(d):.4f}\n-> {d['test_acc']:.4f}",
            f"{d['cumulative_seconds']:.1f} s\n{tflop(d['cumulative_flops'])} TFLOP",
        ))
    headers = ("depth", "stopped by", "widths\nfirst -> chosen", "params\nfirst -> chosen",
               "test acc\nfirst -> chosen", "cumulative\ntrain time, compute")
    for i, header in enumerate(headers):
        # Every column but the widths is as wide as its longest line or header word (the header wraps); the
        # widths, which grow with depth, take the rest and fold.
        word = max(map(len, header.split()))
        cell = max((len(line) for row in rows for line in row[i].splitlines()), default=0)
        table.add_column(header, justify="left" if i in (1, 2) else "right", overflow="fold",
                         width=None if i == 2 else max(word, cell), no_wrap=i == 1)
    captions = []
    if any(depths[k].get("reference_test_acc") is not None for k in depths):
        captions.append("first test acc: the full-width network annealed as the chosen one is")
    captions += _bound_captions(sides_of([depths[k].get("censored") for k in depths]))
    if captions:
        table.caption = "\n".join(captions)
    for row in rows:
        table.add_row(*row)
    return table


# The summary tables' notes on a censored width, short enough for an 80-column terminal (units.BOUND_MEANING at length).
_BOUND_CAPTIONS = {">=": ">= N: a lower bound (never shrank, or at its input's size)",
                   "<=": "<= N: an upper bound (still shrinking at the iteration cap)",
                   "~": "~ N: a sum of lower and upper bounds, a bound on neither side"}


def _bound_captions(sides: set[str]) -> list[str]:
    return [text for side, text in _BOUND_CAPTIONS.items() if side in sides]


class ReplicasReporter:
    """The live view of replicates trained together (evolve --seeds): one bar per seed for its epochs, and a
    printed line per finished iteration and depth, prefixed with the seed. `for_seed(s)` is the
    evolve.Reporter of one replicate."""

    def __init__(self, cfg: RunConfig, seeds: list[int], console: Console | None = None):
        self.cfg, self.seeds = cfg, list(seeds)
        self.console = console or Console(stderr=True)
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=20),
                                 MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 console=self.console, transient=True)
        self._task: dict[int, int] = {}

    def __enter__(self) -> "ReplicasReporter":
        self.console.print("task: " + "; ".join(task_knobs(self.cfg.to_dict())), soft_wrap=True, markup=False)
        self.console.print(f"{len(self.seeds)} replicates (seeds {', '.join(map(str, self.seeds))}) trained together",
                           soft_wrap=True, markup=False)
        self.progress.start()
        for seed in self.seeds:
            self._task[seed] = self.progress.add_task(f"seed {seed}", total=self.cfg.train.max_epochs, info="")
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def for_seed(self, seed: int) -> "_SeedReporter":
        return _SeedReporter(self, seed)


class _SeedReporter:
    def __init__(self, parent: ReplicasReporter, seed: int):
        self.parent, self.seed = parent, seed

    def _print(self, text: str) -> None:
        self.parent.progress.console.print(f"seed {self.seed} {text}", soft_wrap=True, markup=False)

    def depth_started(self, depth, widths, iteration):
        pass

    def iteration_started(self, depth, iteration, widths):
        self.parent.progress.reset(self.parent._task[self.seed], total=self.parent.cfg.train.max_epochs,
                                   description=f"seed {self.seed} depth {depth} iteration {iteration}",
                                   info=f"widths {_fmt_widths(widths)}")

    def epoch_done(self, depth, iteration, row):
        self.parent.progress.update(self.parent._task[self.seed], completed=row["epoch"],
                                    info=f"val {row['val_acc']:.4f}  {row['cumulative_seconds']:.1f} s")

    def iteration_done(self, depth, row):
        self._print(f"depth {depth} iteration {row['iteration']}: widths {_fmt_widths(row['widths'])} -> "
                    f"{_fmt_widths(row['next_widths'], row.get('censored'))}  val {row['val_acc']:.4f} test {row['test_acc']:.4f}  "
                    f"{row['epochs']} epochs ({row['train_stop']})" + (f"  [{row['stop']}]" if row["stop"] else ""))

    def depth_done(self, depth, summary):
        self._print(f"depth {depth} done: {summary['stop_reason']}, widths {_fmt_widths(summary['widths'], summary.get('censored'))}  "
                    f"test {summary['test_acc']:.4f}")


def replicates_table(summary: dict[str, dict]) -> Table:
    """Per depth, over the replicates: the chosen widths' mean ± sd per layer and in total, test accuracy, and
    how the depths stopped."""
    table = Table(title="rank-pruning results per depth, mean ± sd over seeds", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, collapse_padding=True)
    sides: set[str] = set()
    for header, justify in (("depth", "right"), ("seeds", "right"), ("widths (chosen)", "left"), ("total width", "right"),
                            ("test acc", "right"), ("stopped by", "left")):
        table.add_column(header, justify=justify, overflow="fold")
    for key in sorted(summary, key=int):
        d = summary[key]
        # over the seeds whose width is measured; a censored one (a bound) is listed, not averaged in
        censoring = d.get("censoring") or {"total_width": {"measured": d["total_width"], "bounds": []},
                                           "widths": [{"measured": w, "bounds": []} for w in d["widths"]]}
        sides |= {side for c in (*censoring["widths"], censoring["total_width"]) for side, _ in c["bounds"]}
        table.add_row(str(d["depth"]), str(len(d["seeds"])),
                      "[" + ", ".join(spread_text(w) for w in censoring["widths"]) + "]",
                      spread_text(censoring["total_width"]),
                      f"{d['test_acc']['mean']:.4f} ± {d['test_acc']['sd']:.4f}",
                      ", ".join(f"{k} x{v}" for k, v in sorted(d["stop_reasons"].items())))
    if sides:
        table.caption = "\n".join(["mean ± sd over the seeds whose width is measured (n: how many)",
                                   "censored: seeds at a bound, counted with their bounds, not averaged",
                                   *_bound_captions(sides)])
    return table
