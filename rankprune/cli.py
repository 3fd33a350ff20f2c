"""Command line: parse, validate, call. No science here.

Every user error is one line on stderr and exit status 2, raised as ConfigError (or argparse's own
complaint, reshaped to one line) before anything is written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from rankprune.config import ConfigError, RunConfig, load_toml, parse_layers

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# --- evolve -----------------------------------------------------------------------------------
# flag -> (section, key, type, help). A flag left out keeps the config's value (default, TOML, or
# the resumed run's), so only what the user typed overrides anything.
_EVOLVE_FLAGS: dict[str, tuple[str | None, str, Any, str]] = {
    "--width": ("model", "width", int, "initial width of every hidden layer (784)"),
    "--dataset": ("data", "dataset", str, "mnist | fashion-mnist | kmnist | digits (mnist)"),
    "--data-dir": ("data", "data_dir", str, "dataset folder (default: ~/.cache/rankprune/data, or $RANKPRUNE_DATA)"),
    "--train-fraction": ("data", "train_fraction", float, "seeded fraction of the training set to use (1.0)"),
    "--val-fraction": ("data", "val_fraction", float, "fraction of the training set held out for validation (0.1)"),
    "--optimizer": ("train", "optimizer", str, "sgd | adam (sgd, with momentum)"),
    "--lr": ("train", "lr", float, "learning rate (0.05)"),
    "--momentum": ("train", "momentum", float, "SGD momentum (0.9)"),
    "--weight-decay": ("train", "weight_decay", float, "weight decay of the first iteration (5e-3)"),
    "--batch-size": ("train", "batch_size", int, "batch size (64)"),
    "--max-epochs": ("train", "max_epochs", int, "epoch cap per iteration (40)"),
    "--patience": ("train", "patience", int, "epochs without a gain > --min-delta that mean saturated (4)"),
    "--min-delta": ("train", "min_delta", float, "validation-accuracy gain that counts, as a fraction (0.002)"),
    "--lr-drops": ("train", "lr_drops", int, "plateaus that divide the learning rate before saturation is called (1)"),
    "--lr-drop-factor": ("train", "lr_drop_factor", float, "learning-rate multiplier at each such plateau (0.1)"),
    "--precision": ("train", "precision", str, "fp32 | bf16 autocast (fp32)"),
    "--rank": ("rank", "measure", str, "rank measure that drives shrinking: numerical[:RTOL] | effective | stable | energy:Q (numerical:0.02)"),
    "--min-width": ("rank", "min_width", int, "no hidden layer shrinks below this (1)"),
    "--max-iterations": ("evolve", "max_iterations", int, "controller iterations per depth at most (8)"),
    "--max-drop": ("evolve", "max_drop", float, "stop when validation accuracy is this far below the best iteration (0.015)"),
    "--width-tol": ("evolve", "width_tol", float, "converged once the total hidden width shrinks by at most this fraction (0.05; 0 = exact fixed point)"),
    "--wd-decay": ("evolve", "wd_decay", float, "multiply weight decay by this before each next iteration (1 = off)"),
    "--rebuild": ("evolve", "rebuild", str, "how a narrower network starts: reinit (fresh weights) | warm (keeps what the network computes)"),
    "--rebuild-samples": ("evolve", "rebuild_samples", int, "training rows the warm rebuild and the activation ranks use (4096)"),
    "--seed": (None, "seed", int, "seed of everything random (0)"),
}


def _add_evolve(sub) -> None:
    p = sub.add_parser("evolve", help="run the rank-pruning controller for each depth", description=(
        "Train a wide MLP to saturation, shrink each hidden layer to its measured rank, retrain, and "
        "repeat until the widths stop changing; once per depth in --layers."))
    p.add_argument("--layers", help="depths to run: 2..5, 2,3,5 or 4 (2..5)")
    for flag, (_section, _key, kind, help_) in _EVOLVE_FLAGS.items():
        p.add_argument(flag, type=kind, help=help_)
    p.add_argument("--rtol", type=float, help="relative tolerance of the numerical rank: count sigma_i > RTOL * sigma_max")
    p.add_argument("--no-download", action="store_true", help="never download; fail if the data is missing")
    p.add_argument("--device", default=None, help="cpu | cuda | auto (cpu)")
    p.add_argument("--config", help="TOML file with [data] [model] [train] [rank] [evolve] tables; flags override it")
    p.add_argument("--out", help="run folder (default: runs/evolve-DATASET-HASH of the config)")
    p.add_argument("--resume", action="store_true", help="continue the run folder --out from its last finished iteration")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(handler=_run_evolve)


def _evolve_config(args: argparse.Namespace) -> RunConfig:
    """The resolved config: defaults < --config TOML < flags."""
    cfg = RunConfig.from_dict(load_toml(args.config)) if args.config else RunConfig()
    changes: dict[str, dict] = {}
    top: dict[str, Any] = {}
    for flag, (section, key, _kind, _help) in _EVOLVE_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is None:
            continue
        if section is None:
            top[key] = value
        else:
            changes.setdefault(section, {})[key] = value
    if args.layers is not None:
        changes.setdefault("evolve", {})["layers"] = parse_layers(args.layers)
    if args.no_download:
        changes.setdefault("data", {})["download"] = False
    if args.rtol is not None:
        measure = changes.get("rank", {}).get("measure", "numerical")
        if measure.partition(":")[0] != "numerical":
            raise ConfigError(f"--rtol applies to the numerical rank, not {measure!r}")
        changes.setdefault("rank", {})["measure"] = f"numerical:{args.rtol:g}"
    return cfg.replace(**changes, **top)


def _resolve_device(name: str | None) -> str:
    import torch

    name = name or "cpu"
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available here; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda or auto")
    return name


def _default_out(cfg: RunConfig) -> Path:
    digest = hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    return Path("runs") / f"evolve-{cfg.data.dataset}-{digest}"


def _run_evolve(args: argparse.Namespace) -> int:
    from rankprune.runfolder import CONFIG, DEPTHS, ENVIRONMENT, STATUS, RunFolder

    if args.resume:
        if not args.out:
            raise ConfigError("--resume needs --out, the run folder to continue")
        typed = [f for f in (*_EVOLVE_FLAGS, "--layers", "--rtol", "--config")
                 if getattr(args, f.lstrip("-").replace("-", "_")) is not None]
        if typed or args.no_download:
            raise ConfigError(f"--resume continues the stored config; drop {(typed or ['--no-download'])[0]}")
        run = RunFolder.check(args.out, resume=True, overwrite=args.overwrite)
        stored = run.read(CONFIG)
        try:
            cfg = RunConfig.from_dict(stored)
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"cannot resume {run.path}: its {CONFIG} is not a rankprune config ({exc})") from None
        cfg = cfg.replace(device=_resolve_device(args.device or cfg.device)).validate()
    else:
        cfg = _evolve_config(args)
        cfg = cfg.replace(device=_resolve_device(args.device)).validate()
        run = RunFolder.check(args.out or _default_out(cfg), resume=False, overwrite=args.overwrite)

    # Load data before writing anything: missing data must leave no half-made run folder behind.
    from rankprune import data as data_mod

    data = data_mod.load(cfg.data, cfg.seed, cfg.device)

    from rich.console import Console

    from rankprune.evolve import evolve
    from rankprune.live import LiveReporter, summary_table
    from rankprune.provenance import environment

    if args.resume:  # keep the original provenance; add this session's beside it
        env = run.read(ENVIRONMENT, {})
        env.setdefault("resumed", []).append(environment(cfg.device, cfg.seed))
        run.write(ENVIRONMENT, env)
    else:
        run.create(overwrite=args.overwrite)
        run.write(CONFIG, cfg.to_dict())
        run.write(ENVIRONMENT, environment(cfg.device, cfg.seed))
    console = Console(stderr=True)
    console.print(f"run folder: {run.path}")
    try:
        with LiveReporter(cfg, console) as live:
            evolve(cfg, data, run, live)
    except KeyboardInterrupt:
        where = run.read(STATUS, {})
        where.pop("state", None)
        run.set_status("interrupted", **where)
        console.print(f"interrupted; finished epochs and iterations are in {run.path}. "
                      f"Continue with: rankprune evolve --out {run.path} --resume")
        return EXIT_INTERRUPTED
    except BaseException as exc:
        where = run.read(STATUS, {})
        where.pop("state", None)
        run.set_status("failed", error=f"{type(exc).__name__}: {exc}", **where)
        raise
    out = Console()
    if not out.is_terminal:  # logs and pipes: wide enough that the table never folds
        out = Console(width=140)
    out.print(summary_table(run.read(DEPTHS, {})))
    console.print(f"results: {run.path}")
    return 0


# --- study -----------------------------------------------------------------------------------
def _add_study(sub) -> None:
    p = sub.add_parser("study", help="Optuna studies over initial architectures")
    ssub = p.add_subparsers(dest="study_command", required=True, parser_class=_Parser)

    r = ssub.add_parser("run", help="run (or continue) the study a TOML file declares")
    r.add_argument("file", help="study file, e.g. studies/problem1_random_architectures.toml")
    r.add_argument("--n-trials", type=int, help="trials this process runs (default: the file's n_trials)")
    r.add_argument("--storage", help="SQLAlchemy URL (default: sqlite:///ROOT/studies.sqlite3)")
    r.add_argument("--study-name", help="name in the storage (default: the file's)")
    r.add_argument("--seed", type=int, help="sampler seed (default: the file's)")
    r.add_argument("--root", default="runs", help="folder for trial run folders and the default storage (runs)")
    r.add_argument("--heartbeat", type=int, help="seconds between trial heartbeats (default: the file's, or 60)")
    r.add_argument("--data-dir", help="dataset folder, overriding the file's base.data.data_dir")
    r.add_argument("--no-download", action="store_true", help="never download; a trial fails if the data is missing")
    r.set_defaults(handler=_run_study)

    for name, helptext, handler in (
        ("classes", "group finished trials into equivalence classes of convergent rank", _run_classes),
        ("trends", "Spearman correlations of network rank with accuracy, gap and size", _run_trends),
    ):
        c = ssub.add_parser(name, help=helptext)
        c.add_argument("name", help="study name")
        c.add_argument("--storage", help="SQLAlchemy URL (default: sqlite:///ROOT/studies.sqlite3)")
        c.add_argument("--root", default="runs", help="where the default storage lives (runs)")
        c.add_argument("--csv", help="also write the table to this CSV file")
        if name == "classes":
            c.add_argument("--by", choices=("vector", "sum", "normalized"), default="vector", help="what must be equal (vector)")
            c.add_argument("--tol", type=float, default=0.0, help="largest difference inside a class (0: exactly equal)")
        else:
            c.add_argument("--rank", choices=("network_rank_sum", "network_rank_normalized", "network_rank_min", "rank_parameters"),
                           default="network_rank_sum", help="which form of the network rank (network_rank_sum)")
            c.add_argument("--train-tol", type=float, default=0.01, help="'similar training accuracy' for overfitting pairs (0.01)")
        c.set_defaults(handler=handler)


def _wide_console():
    from rich.console import Console

    out = Console()
    return out if out.is_terminal else Console(width=160)


def _frame_table(df, title: str, floatfmt: str = "{:.4g}"):
    from rich.table import Table

    table = Table(title=title)
    for col in df.columns:
        table.add_column(str(col), overflow="fold")
    for rec in df.itertuples(index=False):
        table.add_row(*(floatfmt.format(v) if isinstance(v, float) else str(v) for v in rec))
    return table


def _run_study(args: argparse.Namespace) -> int:
    import dataclasses
    import logging

    import optuna

    from rankprune.study import default_storage, open_storage, parse_spec, run_study

    spec = parse_spec(args.file)
    if args.n_trials is not None and args.n_trials < 1:
        raise ConfigError(f"--n-trials must be at least 1, got {args.n_trials}")
    if args.study_name is not None and not all(c.isalnum() or c in "._-" for c in args.study_name):
        raise ConfigError(f"study name {args.study_name!r} may hold only letters, digits, '.', '_' and '-'")
    if args.heartbeat is not None:
        if args.heartbeat < 1:
            raise ConfigError(f"--heartbeat must be at least 1 second, got {args.heartbeat}")
        spec = dataclasses.replace(spec, heartbeat_interval=args.heartbeat, grace_period=max(2 * args.heartbeat, 2))
    if args.data_dir or args.no_download:
        data = dict(spec.base.get("data", {}))
        if args.data_dir:
            data["data_dir"] = args.data_dir
        if args.no_download:
            data["download"] = False
        spec = dataclasses.replace(spec, base={**spec.base, "data": data})
    url = args.storage or default_storage(args.root)
    open_storage(url)  # a bad URL fails here, before any trial runs
    from rankprune import data as data_mod

    data_mod.load(RunConfig.from_dict(spec.base).data, seed=0)  # so does missing data
    n_trials = args.n_trials or spec.n_trials
    name = args.study_name or spec.name

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    optuna.logging.set_verbosity(logging.ERROR)  # we print one line per trial ourselves
    progress = Progress(TextColumn(f"study {name} ({spec.mode})"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console)
    task = progress.add_task("trials", total=n_trials)

    def after_trial(study, trial) -> None:
        progress.advance(task)
        a = trial.user_attrs
        if trial.state == optuna.trial.TrialState.COMPLETE:
            progress.console.print(
                f"trial {trial.number}: {a['initial_widths']} -> ranks {a['ranks']}  test {a['test_acc']:.4f} "
                f"train {a['train_acc']:.4f}  rank sum {a['network_rank_sum']} ({a['network_rank_normalized']:.3f})  "
                f"{a['cumulative_seconds']:.1f} s", soft_wrap=True)
        else:
            progress.console.print(f"trial {trial.number} {trial.state.name.lower()}: {a.get('fail_reason', 'see the trial')}", soft_wrap=True)

    from rankprune.study import sampler_seed

    console.print(f"storage: {url}; sampler seed {sampler_seed(spec, url, args.seed)}")
    try:
        with progress:
            study = run_study(spec, url, Path(args.root), n_trials, name, args.seed, callbacks=[after_trial])
    except KeyboardInterrupt:
        console.print(f"interrupted; finished trials stay in the study. Continue with: rankprune study run {args.file}"
                      + (f" --storage {args.storage}" if args.storage else ""))
        return EXIT_INTERRUPTED
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    console.print(f"study {name}: {states.count('COMPLETE')} complete, {states.count('FAIL')} failed, "
                  f"{len(states)} trials in all")
    return 0


def _load_frame(args: argparse.Namespace):
    from rankprune.classes import trials_frame
    from rankprune.study import default_storage, load_study

    study = load_study(args.name, args.storage or default_storage(args.root))
    df = trials_frame(study)
    if df.empty:
        raise ConfigError(f"study {args.name!r} has no finished trials yet")
    return df


def _run_classes(args: argparse.Namespace) -> int:
    from rankprune.classes import class_table

    if args.tol < 0:
        raise ConfigError(f"--tol must be non-negative, got {args.tol}")
    table = class_table(_load_frame(args), args.by, args.tol)
    _wide_console().print(_frame_table(table, f"equivalence classes of convergent rank in {args.name} (by {args.by}, tol {args.tol:g})"))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


def _run_trends(args: argparse.Namespace) -> int:
    from rankprune.classes import overfitting_pairs, rank_trends

    df = _load_frame(args)
    trends = rank_trends(df, args.rank)
    pairs = overfitting_pairs(df, args.rank, args.train_tol)
    out = _wide_console()
    out.print(_frame_table(trends, f"Spearman correlation of {args.rank} in {args.name} ({len(df)} trials)"))
    if pairs.empty:
        out.print(f"no pair where the higher-rank network has the lower test accuracy at training accuracy within {args.train_tol:g}")
    else:
        out.print(_frame_table(pairs, f"overfitting cases: higher rank, lower test accuracy, training accuracy within {args.train_tol:g} ({len(pairs)} pairs)"))
    if args.csv:
        trends.to_csv(args.csv, index=False)
    return 0


# --- report ----------------------------------------------------------------------------------
def _add_report(sub) -> None:
    p = sub.add_parser("report", help="Markdown report with figures of a run folder or a study", description=(
        "Write DIR/report.md and DIR/figures/*.png for PATH: a run folder (a folder holding config.json), "
        "or else the name of a study in --storage (default: the SQLite file under --root)."))
    p.add_argument("path", metavar="PATH", help="run folder, or study name")
    p.add_argument("--out", help="report folder (default: PATH/report for a run, ROOT/reports/NAME for a study)")
    p.add_argument("--storage", help="SQLAlchemy URL of the study's storage (default: sqlite:///ROOT/studies.sqlite3)")
    p.add_argument("--root", default="runs", help="folder of the default storage, and of a study's default --out (runs)")
    p.set_defaults(handler=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from rankprune.report import render

    path = render(args.path, args.out, storage=args.storage, root=args.root)
    print(f"report: {path}")
    return 0


# --- entry point ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rankprune", description="Shrink networks to the rank of their weight matrices.")
    from rankprune import __version__

    parser.add_argument("--version", action="version", version=f"rankprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_evolve(sub)
    _add_study(sub)
    _add_report(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"rankprune {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # before a run folder existed (e.g. while loading data): nothing to keep
        print(f"rankprune {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
