"""Command line: parse, validate, call. No science here.

Every user error is one line on stderr and exit status 2, raised as ConfigError (or argparse's own
complaint, reshaped to one line) before anything is written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def _openmp_defaults() -> None:
    """Idle OpenMP threads sleep rather than spin (OMP_WAIT_POLICY=PASSIVE) unless the user chose otherwise.

    With OpenMP's default, two rankprune processes on 2 cores spin against each other: the pair took 1.94x
    (up to 5.5x) as long as one process alone, 1.16x with PASSIVE, which cost one process alone nothing
    measurable (benchmarks/results/processes.md). OpenMP reads the variable once, when torch loads it, so this runs
    on import of the CLI, before the imports below pull torch in. RANKPRUNE_NO_OMP_DEFAULTS=1 leaves the
    environment as it is.
    """
    if os.environ.get("RANKPRUNE_NO_OMP_DEFAULTS") != "1":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


_openmp_defaults()

from rankprune.config import ConfigError, RunConfig, load_toml, parse_layers  # noqa: E402  (after the OpenMP default)
from rankprune.regression import is_regression  # noqa: E402

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# How many networks one batch holds (ensemble.default_batch_members); the same words for evolve and study run.
BATCH_MEMBERS_HELP = ("networks trained together in one batch at most (default: on CPU 16 of at most 400,000 parameters, "
                      "larger ones one at a time; on a GPU as many as fill half its free memory, at most 1,024)")


def _at_least_one(*flags: tuple[str, int | None]) -> None:
    """ConfigError (one line, exit 2) for the first given (flag, value) below 1; None means not given."""
    for flag, value in flags:
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")


# --- evolve -----------------------------------------------------------------------------------
def _samples_per_epoch(text: str) -> int | str:
    """--samples-per-epoch: a whole number of samples, or `pass`."""
    if text.strip().lower() == "pass":
        return "pass"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of samples or 'pass', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# flag -> (section, key, type, help). A flag left out keeps the config's value (default, TOML, or
# the resumed run's), so only what the user typed overrides anything.
_EVOLVE_FLAGS: dict[str, tuple[str | None, str, Any, str]] = {
    "--model": ("model", "family", str, "model family: mlp | cnn | transformer (mlp; transformer reads sequences of one task: give --tasks N)"),
    "--width": ("model", "width", int, "initial width of every hidden layer: units (mlp, 784) or channels per conv block (cnn, 64)"),
    "--params": ("model", "params", int, "parameter-matched start: every depth's initial width is the one with about this many parameters (excludes --width)"),
    "--dataset": ("data", "dataset", str, "mnist | fashion-mnist | kmnist | digits | regression:simple | regression:middle | regression:complex (mnist)"),
    "--points": ("data", "points", int, "a regression task's training points on [-1, 1] (15)"),
    "--noise": ("data", "noise", float, "standard deviation of the Gaussian noise on a regression task's training targets (0)"),
    "--data-dir": ("data", "data_dir", str, "dataset folder (default: ~/.cache/rankprune/data, or $RANKPRUNE_DATA)"),
    "--train-fraction": ("data", "train_fraction", float, "seeded fraction of the training set to use (1.0)"),
    "--val-fraction": ("data", "val_fraction", float, "fraction of the training set held out for validation, drawn before --train-fraction so its size does not depend on it (0.1)"),
    "--validation": ("data", "validation", str, "where the validation split comes from: pool (the whole training set, before --train-fraction; default) | fraction (carved from the train fraction, as runs before config format 4)"),
    "--classes": ("data", "classes", int, "keep K classes in every split: the first K, or a seeded choice with --classes-seed (all)"),
    "--classes-seed": ("data", "classes_seed", int, "seed of the choice of --classes (none: the first K)"),
    "--tasks": ("data", "tasks", int, "augmented tasks: N random projections of the input with label permutations; records unseen-task test accuracy (off)"),
    "--task-sampling": ("data", "task_sampling", str, "how --tasks draws its data: augmented (the experiment's: min(n_train x N, --task-samples) samples, each a random image under a random task; validation and test under log2 N of the training tasks, unseen test under log2 N new ones; default) | fixed (every row of the fixed splits gets one of N tasks, task 0 the identity: runs before config format 5)"),
    "--task-samples": ("data", "task_samples", int, "the most samples --task-sampling augmented draws for training, and the most pairs an evaluation split holds (200000; the experiment's 1,000,000 holds 3.1 GB of MNIST in memory)"),
    "--image-size": ("data", "image_size", int, "shrink images to S x S pixels by averaging blocks (off): cheaper augmented tasks on a CPU"),
    "--sequence-length": ("data", "sequence_length", int, "examples of one task per sequence for --model transformer (100, the experiment's positions); training sequences are drawn afresh every epoch"),
    "--label-noise": ("data", "label_noise", float, "seeded fraction of training labels replaced by a random class (0; validation and test stay clean)"),
    "--optimizer": ("train", "optimizer", str, "sgd | adam (sgd, with momentum)"),
    "--lr": ("train", "lr", float, "learning rate (0.05)"),
    "--momentum": ("train", "momentum", float, "SGD momentum (0.9)"),
    "--weight-decay": ("train", "weight_decay", float, "weight decay of the first iteration (mlp 5e-3, cnn 1e-3)"),
    "--batch-size": ("train", "batch_size", int, "batch size (64)"),
    "--max-epochs": ("train", "max_epochs", int, "epoch cap per iteration (40)"),
    "--patience": ("train", "patience", int, "epochs without a gain > --min-delta that mean saturated (4)"),
    "--min-delta": ("train", "min_delta", float, "validation-accuracy gain that counts, as a fraction (0.002)"),
    "--lr-drops": ("train", "lr_drops", int, "plateaus that divide the learning rate before saturation is called (1)"),
    "--lr-drop-factor": ("train", "lr_drop_factor", float, "learning-rate multiplier at each such plateau (0.1)"),
    "--precision": ("train", "precision", str, "fp32 | bf16 autocast (fp32)"),
    "--saturate": ("train", "saturate", str, "what ends training: both (validation accuracy stops rising and no hidden layer's driving rank moves by more than --rank-tol, over --patience epochs; default) | rank (the rank alone) | accuracy (accuracy alone: the rule of runs made before --saturate existed)"),
    "--rank-tol": ("train", "rank_tol", int, "units a driving rank may move and still count as saturated, for --saturate rank|both (2)"),
    "--alpha": ("model", "alpha", float, "output scaling for lazy training: the output is ALPHA * (f(x) - f_0(x)), f_0 the network where each iteration started, with the learning rate / ALPHA^2 (off)"),
    "--movement": ("probes", "movement", bool, "record every epoch how far each weight matrix moved from the iteration's start and the first initialisation, and the ranks of the change (off)"),
    "--hessian-top": ("probes", "hessian_top", int, "the top K eigenvalues of the training loss's Hessian at every iteration's end, by Lanczos (0: off)"),
    "--hessian-samples": ("probes", "hessian_samples", int, "training rows of the seeded batch the Hessian is taken on (512)"),
    "--hessian-full-max": ("probes", "hessian_full_max", int, "with --hessian-top, networks with at most this many parameters also get the full Hessian spectrum (5000)"),
    "--loss": ("train", "loss", str, "cross-entropy | hinge (quadratic, as the jamming experiments; records N_Delta) | mse (mean squared error to one-hot targets, or to a regression target); default: cross-entropy, and mse for the regression datasets"),
    "--samples-per-epoch": ("train", "samples_per_epoch", _samples_per_epoch,
                            "training samples one epoch draws: N | pass (one pass over the data used); default: the "
                            "full training split's size, so --train-fraction keeps the steps per epoch equal"),
    "--rank": ("rank", "measure", str, "rank measure that drives shrinking: numerical[:RTOL] | effective | stable | energy:Q (numerical:0.02)"),
    "--min-width": ("rank", "min_width", int, "no hidden layer shrinks below this (1)"),
    "--rank-source": ("rank", "source", str, "what the driving rank is measured on: weights (each hidden layer's incoming weight matrix) | activations (its outputs on the validation inputs, what the warm rebuild preserves); default: the family's (mlp weights, cnn activations)"),
    "--max-iterations": ("evolve", "max_iterations", int, "shrink iterations per depth at most; a depth still shrinking at the cap is reported unconverged, its widths censored (20)"),
    "--max-drop": ("evolve", "max_drop", float, "stop when validation accuracy is this far below the best iteration (0.015)"),
    "--drop-z": ("evolve", "drop_z", float, "an accuracy drop must also be significant at the one-sided level of a Z-sigma normal deviate (2: p < 0.023), by McNemar's exact test on the validation images both iterations scored (2; 0 = --max-drop alone)"),
    "--drop-test": ("evolve", "drop_test", str, "how an accuracy drop is tested: mcnemar (paired, on the same validation images; default) | unpaired (the binomial standard error of two independent accuracies, as runs before config format 4)"),
    "--width-tol": ("evolve", "width_tol", float, "stop as converged once the total hidden width shrinks by at most this fraction (0: only an exact fixed point, the default)"),
    "--wd-decay": ("evolve", "wd_decay", float, "multiply weight decay by this before each next iteration (1 = off)"),
    "--rebuild": ("evolve", "rebuild", str, "how a narrower network starts: warm (keeps what the network computes; default) | reinit (fresh weights, as the original experiment)"),
    "--rebuild-samples": ("evolve", "rebuild_samples", int, "training rows the warm rebuild and the activation ranks use (4096)"),
    "--scratch": ("evolve", "scratch", bool, "after each depth, train its chosen widths again from a fresh initialisation for the training FLOPs the depth spent (Liu et al. 2019's Scratch-B), recorded as scratch_* in depths.json and per epoch in scratch.jsonl (off)"),
    "--seed": (None, "seed", int, "seed of everything random (0)"),
    "--data-seed": ("data", "seed", int, "seed of the data's draws only: split, fraction, label noise, tasks (the run's seed)"),
}


def _add_evolve(sub) -> None:
    p = sub.add_parser("evolve", help="run the rank-pruning controller for each depth", description=(
        "Train a wide network (an MLP, or a CNN with --model cnn) to saturation, shrink each hidden layer to "
        "its measured rank, retrain, and repeat until the widths stop changing; once per depth in --layers."))
    p.add_argument("--layers", help="depths to run: 2..5, 2,3,5 or 4 (2..5)")
    for flag, (_section, _key, kind, help_) in _EVOLVE_FLAGS.items():
        if kind is bool:  # a switch: absent is None (the config's value stands), present is True
            p.add_argument(flag, action="store_const", const=True, help=help_)
        else:
            p.add_argument(flag, type=kind, help=help_)
    p.add_argument("--rtol", type=float, help="relative tolerance of the numerical rank: count sigma_i > RTOL * sigma_max")
    p.add_argument("--no-download", action="store_true", help="never download; fail if the data is missing")
    p.add_argument("--device", default=None, help="cpu | cuda | auto (cpu)")
    p.add_argument("--config", help="TOML file with [data] [model] [train] [rank] [evolve] tables; flags override it")
    p.add_argument("--out", help="run folder (default: runs/evolve-DATASET-HASH of the config)")
    p.add_argument("--resume", action="store_true", help="continue the run folder --out from its last finished iteration")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--seeds", help="replicates: 0..4 or 0,3,7; one folder with a run per seed, all sharing the data "
                                   "of --data-seed (default the first seed), trained together in batches")
    p.add_argument("--batch-members", type=int, help=BATCH_MEMBERS_HELP)
    p.set_defaults(handler=_run_evolve)


def _flag_name(attr: str) -> str:
    return "--" + attr.replace("_", "-")


def _typed_changes(args: argparse.Namespace) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[tuple[str | None, str], str]]:
    """What the user asked for beyond the defaults: (section changes, top-level changes, where each came from).

    `where` maps (section, key) to the flag or file that set it, so a resume conflict can be named.
    Precedence: defaults < --config TOML < flags.
    """
    changes: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    where: dict[tuple[str | None, str], str] = {}
    if args.config:
        doc = load_toml(args.config)
        RunConfig.from_dict(doc)  # unknown keys and wrong types fail here, naming the key
        for section, value in doc.items():
            if isinstance(value, dict):
                changes.setdefault(section, {}).update(value)
                where.update({(section, k): f"{section}.{k} in {args.config}" for k in value})
            else:
                top[section] = value
                where[(None, section)] = f"{section} in {args.config}"
    for flag, (section, key, _kind, _help) in _EVOLVE_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is None:
            continue
        if section is None:
            top[key] = value
        else:
            changes.setdefault(section, {})[key] = value
        where[(section, key)] = flag
    dataset = changes.get("data", {}).get("dataset")
    if dataset and is_regression(dataset) and "loss" not in changes.get("train", {}):
        changes.setdefault("train", {})["loss"] = "mse"  # a regression task trains with MSE unless told otherwise
    if args.layers is not None:
        changes.setdefault("evolve", {})["layers"] = parse_layers(args.layers)
        where[("evolve", "layers")] = "--layers"
    if args.no_download:
        changes.setdefault("data", {})["download"] = False
        where[("data", "download")] = "--no-download"
    if args.rtol is not None:
        measure = changes.get("rank", {}).get("measure", "numerical")
        if measure.partition(":")[0] != "numerical":
            raise ConfigError(f"--rtol applies to the numerical rank, not {measure!r}")
        changes.setdefault("rank", {})["measure"] = f"numerical:{args.rtol:g}"
        where[("rank", "measure")] = "--rtol" if ("rank", "measure") not in where else f"{where[('rank', 'measure')]} with --rtol"
    return changes, top, where


def _evolve_config(args: argparse.Namespace) -> RunConfig:
    """The resolved config: defaults < --config TOML < flags."""
    changes, top, _where = _typed_changes(args)
    return RunConfig().replace(**changes, **top).validate().resolved()


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


def _resume_config(args: argparse.Namespace, stored: RunConfig, path: Path) -> RunConfig:
    """The stored config with what the user typed again: job.resume_config, the one resume rule, with each
    conflicting setting named by the flag (or --config key) that set it."""
    from rankprune.job import resume_config

    changes, top, where = _typed_changes(args)
    return resume_config(stored, stored.replace(**changes, **top), path, names=where)


def _interrupted_exit(exc: BaseException) -> int:
    from rankprune.job import Terminated

    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def _stdout_console():
    from rich.console import Console

    out = Console()
    return out if out.is_terminal else Console(width=140)  # logs and pipes: wide enough that tables never fold


def _run_evolve(args: argparse.Namespace) -> int:
    from rich.console import Console

    from rankprune.job import Job, execute, stored_config
    from rankprune.live import LiveReporter, summary_table
    from rankprune.runfolder import DEPTHS, RunFolder, default_run_folder, is_replicates_folder

    _at_least_one(("--batch-members", args.batch_members))
    if args.seeds is not None or (args.resume and args.out and is_replicates_folder(args.out)):
        return _run_replicates(args)
    if args.batch_members is not None:
        raise ConfigError("--batch-members applies to replicates (--seeds)")
    if args.resume:
        out = Path(args.out or default_run_folder(_evolve_config(args).to_dict()))
        if not args.out and not out.exists():
            raise ConfigError(f"no run with these settings at {out} (the default folder); "
                              "to continue a run made with other settings, give it with --out")
        RunFolder.check(out, resume=True, overwrite=args.overwrite)  # a missing or foreign folder: its own message
        cfg = _resume_config(args, stored_config(out), out)
        cfg = cfg.replace(device=_resolve_device(args.device or cfg.device)).validate()
    else:
        cfg = _evolve_config(args)
        cfg = cfg.replace(device=_resolve_device(args.device)).validate()
        out = Path(args.out or default_run_folder(cfg.to_dict()))

    console = Console(stderr=True)
    job = Job(cfg, out, resume=args.resume, overwrite=args.overwrite)
    live = LiveReporter(cfg, console)
    try:
        execute([job], reporters=[live], contexts=[lambda: live], say=lambda line: console.print(line, soft_wrap=True, markup=False),
                warn=lambda line: console.print(f"warning: {line}", soft_wrap=True, markup=False))
    except KeyboardInterrupt as exc:
        console.print(f"interrupted; finished epochs and iterations are in {out}. "
                      f"Continue with: rankprune evolve --out {out} --resume", soft_wrap=True)
        return _interrupted_exit(exc)
    _stdout_console().print(summary_table(RunFolder(out).read(DEPTHS, {})))
    console.print(f"results: {out}")
    return 0


def _run_replicates(args: argparse.Namespace) -> int:
    """evolve --seeds: a run folder per seed under one folder, every seed's iterations trained together."""
    from rich.console import Console

    from rankprune.live import ReplicasReporter, replicates_table
    from rankprune.replicates import parse_seeds, resume_base, run_replicates, seed_folder
    from rankprune.runfolder import default_run_folder

    if args.resume:
        if not args.out:
            raise ConfigError("--resume of replicates needs the folder: give --out")
        root = Path(args.out)
        seeds, stored = resume_base(root)
        if args.seeds is not None and parse_seeds(args.seeds) != seeds:
            raise ConfigError(f"cannot resume {root} with other --seeds (it has {seeds})")
        base = _resume_config(args, stored, root)
    else:
        seeds = parse_seeds(args.seeds)
        if args.seed is not None:
            raise ConfigError("give --seed for one run or --seeds for replicates, not both")
        cfg = _evolve_config(args)
        base = cfg.replace(data={"seed": cfg.data.seed if cfg.data.seed is not None else seeds[0]})
        root = Path(args.out or default_run_folder({**base.to_dict(), "seeds": seeds}))
    base = base.replace(device=_resolve_device(args.device or (base.device if args.resume else None))).validate()
    console = Console(stderr=True)
    live = ReplicasReporter(base, seeds, console)
    try:
        summary = run_replicates(base, seeds, root, resume=args.resume, overwrite=args.overwrite, max_members=args.batch_members,
                                 live=live, say=lambda line: console.print(line, soft_wrap=True, markup=False),
                                 warn=lambda line: console.print(f"warning: {line}", soft_wrap=True, markup=False))
    except KeyboardInterrupt as exc:
        console.print(f"interrupted; finished epochs and iterations are in {root}. "
                      f"Continue with: rankprune evolve --out {root} --resume", soft_wrap=True)
        return _interrupted_exit(exc)
    _stdout_console().print(replicates_table(summary))
    console.print(f"results: {root} ({', '.join(p.name for p in (seed_folder(root, s) for s in seeds))})")
    return 0


# --- study -----------------------------------------------------------------------------------
def _add_study(sub) -> None:
    p = sub.add_parser("study", help="Optuna studies over initial architectures")
    ssub = p.add_subparsers(dest="study_command", required=True, parser_class=_Parser)

    r = ssub.add_parser("run", help="run (or continue) the study a TOML file declares")
    r.add_argument("file", help="study file, e.g. studies/problem1_random_architectures.toml")
    r.add_argument("--n-trials", type=int, help="trials this process runs (default: the file's n_trials, unless --until is given)")
    r.add_argument("--until", type=int, metavar="N", help="run until the study holds N complete trials in all, "
                                                          "whichever worker ran them (with --n-trials: at most that many here)")
    r.add_argument("--storage", help="SQLAlchemy URL, or journal:PATH for Optuna's journal file (default: sqlite:///ROOT/studies.sqlite3)")
    r.add_argument("--allow-other-tables", action="store_true",
                   help="store the study in a database that also holds tables which are not Optuna's (refused otherwise)")
    r.add_argument("--study-name", help="name in the storage (default: the file's)")
    r.add_argument("--seed", type=int, help="sampler seed (default: the file's)")
    r.add_argument("--root", default="runs", help="folder for trial run folders and the default storage (runs)")
    r.add_argument("--artifact-store", metavar="URL", help=ARTIFACT_STORE_HELP)
    r.add_argument("--heartbeat", type=int, help="seconds between trial heartbeats (default: the file's, or 60)")
    r.add_argument("--data-dir", help="dataset folder, overriding the file's base.data.data_dir")
    r.add_argument("--no-download", action="store_true", help="never download; a trial fails if the data is missing")
    r.add_argument("--batch", type=int, default=1, help="trials asked from Optuna at once and trained together, "
                                                          "grouped by depth and family (1: one at a time)")
    r.add_argument("--batch-members", type=int, help=BATCH_MEMBERS_HELP)
    r.set_defaults(handler=_run_study)

    for name, helptext, handler in (
        ("classes", "group finished trials into equivalence classes of convergent rank", _run_classes),
        ("trends", "Spearman correlations of network rank with accuracy, gap and size", _run_trends),
    ):
        c = ssub.add_parser(name, help=helptext)
        c.add_argument("name", help="study name")
        c.add_argument("--storage", help="SQLAlchemy URL, or journal:PATH for Optuna's journal file (default: sqlite:///ROOT/studies.sqlite3)")
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

    i = ssub.add_parser("icl", help="the in-context learning report of an MLP study and a transformer study over task "
                                    "count x width: the 2 x 2 accuracy map, convergent widths, accuracy by position")
    i.add_argument("--mlp", required=True, help="the MLP's study name (e.g. icl_mlp, studies/icl/mlp.toml)")
    i.add_argument("--transformer", required=True, help="the transformer's study name (e.g. icl_transformer)")
    i.add_argument("--storage", help="SQLAlchemy URL, or journal:PATH for Optuna's journal file (default: sqlite:///ROOT/studies.sqlite3)")
    i.add_argument("--root", default="runs", help="where the default storage lives (runs)")
    i.add_argument("--out", help="report folder (default: ROOT/reports/icl)")
    i.add_argument("--format", choices=("png", "svg", "pdf"), default="png", help="figure files (png)")
    i.add_argument("--dpi", type=float, default=110, help="pixels per inch of a png, 50-1200 (110)")
    _add_artifact_reading(i)
    i.set_defaults(handler=_run_icl)


def _run_icl(args: argparse.Namespace) -> int:
    from rankprune.classes import trials_frame
    from rankprune.report.icl import describe_trial, render_icl
    from rankprune.study import default_storage, load_study

    storage = args.storage or default_storage(args.root)
    names = {"mlp": args.mlp, "transformer": args.transformer}
    frames = {family: trials_frame(load_study(name, storage, read_only=True), args.root) for family, name in names.items()}
    for family, frame in frames.items():
        if frame.empty:
            raise ConfigError(f"study {names[family]!r} has no finished trials yet")
        if set(frame["family"]) != {family}:
            raise ConfigError(f"study {names[family]!r} holds {', '.join(sorted(set(frame['family'])))} trials, not "
                              f"{family}: give --{family} the {family} study")
    chance, lines = describe_trial(frames, _fetcher(args, args.root))
    out = Path(args.out) if args.out else Path(args.root) / "reports" / "icl"
    path = render_icl(frames, out, chance=chance, names=names, description=lines, fmt=args.format, dpi=args.dpi)
    print(f"report: {path}")
    return 0


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

    from rankprune.study import (SAMPLER_SEED_MAX, StudyStalled, check_storage, default_storage, parse_spec, run_study,
                                 test_objective_warning)

    # Everything is checked before anything is created: the file, the flags, the storage (only read), the data.
    spec = parse_spec(args.file)
    _at_least_one(("--n-trials", args.n_trials), ("--until", args.until), ("--batch", args.batch),
                  ("--batch-members", args.batch_members))
    if args.seed is not None and not 0 <= args.seed <= SAMPLER_SEED_MAX:
        raise ConfigError(f"--seed must be an integer from 0 to {SAMPLER_SEED_MAX}, got {args.seed}")
    if args.study_name is not None and not (args.study_name and all(c.isalnum() or c in "._-" for c in args.study_name)):
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
    check_storage(url, args.allow_other_tables)  # a bad URL, or someone else's tables, before any data is loaded
    _artifact_store(args)  # a store it cannot open, too
    from rankprune import data as data_mod

    try:  # missing data fails here, before the storage is created
        splits = data_mod.load(RunConfig.from_dict(spec.base).data, seed=0)
    except data_mod.DataError as exc:
        raise ConfigError(f"{exc}; give --data-dir DIR, or set dataset = \"digits\" in the file's [base.data] table") from None
    # without --until, the file's n_trials; what is left of it is what a continue command asks for
    n_trials = args.n_trials if args.n_trials is not None or args.until is not None else spec.n_trials
    name = args.study_name or spec.name

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    optuna.logging.set_verbosity(logging.ERROR)  # we print one line per trial ourselves
    progress = Progress(TextColumn(f"study {name} ({spec.mode})"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console)
    task = progress.add_task("trials", total=n_trials)
    finished = 0  # trials of this process that ended other than by the interruption

    def on_start(planned: int, retried: list[int]) -> None:
        progress.update(task, total=planned)
        if args.until is not None and planned == 0:
            progress.console.print(f"study {name} already holds {args.until} complete trials or more (--until {args.until})")
        if retried:
            progress.console.print(f"retrying {len(retried)} interrupted trial(s) first, with the same parameters: "
                                   + ", ".join(f"#{n}" for n in retried), soft_wrap=True)

    def after_trial(study, trial) -> None:
        nonlocal finished
        a = trial.user_attrs
        interrupted = trial.state == optuna.trial.TrialState.FAIL and str(a.get("fail_reason", "")).startswith("interrupted")
        finished += not interrupted
        progress.advance(task)
        _print_trial(progress.console, trial, spec.mode)

    console.print(f"storage: {url}")
    for warning in (test_objective_warning(o.metric for o in spec.objectives), data_mod.small_validation_warning(splits)):
        if warning:
            console.print(f"warning: {warning}", soft_wrap=True, markup=False)
    try:
        with progress:
            study = run_study(spec, url, Path(args.root), n_trials, name, args.seed, callbacks=[after_trial],
                              batch=args.batch, max_members=args.batch_members, until=args.until,
                              allow_other_tables=args.allow_other_tables, on_start=on_start,
                              artifact_store=args.artifact_store)
    except KeyboardInterrupt as exc:
        left = None if n_trials is None else max(1, n_trials - finished)
        console.print("interrupted; finished trials stay in the study, the interrupted ones are marked failed and are "
                      f"retried when it continues. Continue with: {_study_resume_command(args, left)}", soft_wrap=True)
        return _interrupted_exit(exc)
    except StudyStalled as exc:
        console.print(f"stopped: {exc}", soft_wrap=True)
        return 1
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    console.print(f"study {name}: {states.count('COMPLETE')} complete, {states.count('FAIL')} failed, "
                  f"{len(states)} trials in all")
    return 0


def _print_trial(console, trial, mode: str) -> None:
    """One line per finished trial of a study: its widths and ranks, accuracies and seconds, or why it failed."""
    import optuna

    from rankprune.units import seconds, widths_text

    a = trial.user_attrs
    retry = f" (retry of #{a['retry_of']})" if "retry_of" in a else ""
    if trial.state == optuna.trial.TrialState.COMPLETE:
        console.print(
            f"trial {trial.number}{retry}: {widths_text(a['initial_widths'])} -> "
            f"{'' if mode == 'survey' else 'widths ' + widths_text(a['widths'], a.get('censored')) + ', '}"
            f"ranks {a['ranks']}  val {a['val_acc']:.4f} test {a['test_acc']:.4f} train {a['train_acc']:.4f}  "
            f"rank sum {a['network_rank_sum']} ({a['network_rank_normalized']:.3f})  "
            f"{seconds(a['cumulative_seconds'])} s", soft_wrap=True, markup=False)
    else:
        console.print(f"trial {trial.number}{retry} {trial.state.name.lower()}: {a.get('fail_reason', 'see the trial')}",
                      soft_wrap=True)


# `study run`'s options besides --n-trials as (flag, attribute, default): a continue command repeats every one given.
_STUDY_RUN_OPTIONS = (
    ("--study-name", "study_name", None), ("--root", "root", None), ("--storage", "storage", None),
    ("--allow-other-tables", "allow_other_tables", False), ("--data-dir", "data_dir", None),
    ("--no-download", "no_download", False), ("--seed", "seed", None), ("--heartbeat", "heartbeat", None),
    ("--until", "until", None), ("--batch", "batch", 1), ("--batch-members", "batch_members", None),
    ("--artifact-store", "artifact_store", None),
)


def _study_resume_command(args: argparse.Namespace, n_trials_left: int | None) -> str:
    """The `study run` command line that continues this one: every option given, and --n-trials with the trials
    not yet run (the interrupted ones, retried first, are among them); --until is a total and stays as it was."""
    import shlex

    parts = ["rankprune", "study", "run", args.file]
    if n_trials_left is not None:
        parts += ["--n-trials", str(n_trials_left)]
    for flag, attribute, default in _STUDY_RUN_OPTIONS:
        value = getattr(args, attribute)
        if value is True:
            parts.append(flag)
        elif value is not None and value is not False and value != default:
            parts += [flag, str(value)]
    return shlex.join(parts)


def _load_frame(args: argparse.Namespace):
    from rankprune.classes import trials_frame
    from rankprune.study import default_storage, load_study

    study = load_study(args.name, args.storage or default_storage(args.root), read_only=True)
    df = trials_frame(study, args.root)
    df.attrs["mode"] = mode = study.user_attrs.get("mode", "?")
    if df.empty:
        raise ConfigError(f"study {args.name!r} has no finished trials yet")
    from rankprune.study import censored_layers

    # what is a bound, as every table and figure reads it (a survey's ranks, an evolve trial's widths): classes
    # list these members, trends leave them out
    df["censored"] = [censored_layers(r, mode) for r in df.to_dict("records")]
    repeats = df.attrs.get("repeats", {})
    if repeats:
        shown = ", ".join(f"#{a} (= #{b})" for a, b in sorted(repeats.items()))
        print(f"{len(repeats)} trial(s) repeat an earlier trial's parameters and are counted once: {shown}", file=sys.stderr)
    return df


def _check_csv(path: str | None) -> None:
    """--csv must name a file whose folder exists: checked before any work, so nothing is half-written."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"--csv {path} is a folder; give a file name, e.g. {target / 'table.csv'}")
    if not target.parent.is_dir():
        raise ConfigError(f"--csv {path}: no folder {target.parent}")


def _run_classes(args: argparse.Namespace) -> int:
    from rankprune.classes import class_table, equivalence_classes
    from rankprune.study import censored_members

    if not args.tol >= 0:
        raise ConfigError(f"--tol must be non-negative, got {args.tol}")
    _check_csv(args.csv)
    df = _load_frame(args)
    table = class_table(df, args.by, args.tol)
    censored = censored_members(df, equivalence_classes(df, args.by, args.tol), df.attrs["mode"])
    if any(censored.values()):  # members whose result is a bound, '>= N', listed with it (study.censored_layers)
        table = table.assign(censored=table["class"].map(lambda c: censored.get(int(c), "")))
    out = _wide_console()
    ranks = "measured rank (a survey: each network trained once)" if df.attrs["mode"] == "survey" else "convergent rank"
    out.print(_frame_table(table, f"equivalence classes of {ranks} in {args.name} (by {args.by}, tol {args.tol:g})"))
    if any(censored.values()):
        from rankprune.units import bound_note, sides_of

        out.print("censored: members whose result is a bound. " + (
            "'>= N': a layer whose measured rank reached its width (a survey never shrinks: every unit used)"
            if df.attrs["mode"] == "survey" else bound_note(sides_of(list(df["censored"])))), soft_wrap=True, markup=False)
    if args.csv:
        from rankprune.runfolder import atomic_path

        with atomic_path(Path(args.csv)) as tmp:
            table.to_csv(tmp, index=False)
    return 0


def _run_trends(args: argparse.Namespace) -> int:
    from rankprune.classes import overfitting_pairs, rank_trends

    if not 0 <= args.train_tol <= 1:
        raise ConfigError(f"--train-tol is a difference of accuracies, from 0 to 1; got {args.train_tol}")
    _check_csv(args.csv)
    df = _load_frame(args)
    trends = rank_trends(df, args.rank)
    pairs = overfitting_pairs(df, args.rank, args.train_tol)
    out = _wide_console()
    out.print(_frame_table(trends, f"Spearman correlation of {args.rank} in {args.name} ({len(df)} trials)"))
    if trends.attrs["excluded"]:
        out.print(f"left out as censored (a width at its bound, not a measured rank): {', '.join(trends.attrs['excluded'])}")
    if pairs.empty:
        out.print(f"no pair where the higher-rank network has the lower test accuracy at training accuracy within {args.train_tol:g}")
    else:
        out.print(_frame_table(pairs, f"overfitting cases: higher rank, lower test accuracy, training accuracy within {args.train_tol:g} ({len(pairs)} pairs)"))
    if args.csv:
        from rankprune.runfolder import atomic_path

        with atomic_path(Path(args.csv)) as tmp:
            trends.to_csv(tmp, index=False)
    return 0


ARTIFACT_STORE_HELP = ("also upload each finished trial's run folder to this Optuna artifact store, for readers without the "
                       "artifact root: a folder, file:PATH, or s3://BUCKET[/PREFIX] (needs boto3)")
ARTIFACT_READ_HELP = ("where trials' run folders are fetched from when their workers uploaded them to an artifact store "
                      "(default: the store each trial recorded); a folder, file:PATH or s3://BUCKET[/PREFIX]")
ARTIFACT_CACHE_HELP = "where fetched run folders are kept (default: ~/.cache/rankprune/artifacts)"


def _artifact_store(args: argparse.Namespace):
    """A writer's --artifact-store as (URL, store), opened (and a file store's folder made) before any trial runs;
    None where none was given. A name it cannot open: ConfigError, one line."""
    if getattr(args, "artifact_store", None) is None:
        return None
    from rankprune.artifacts import open_store, store_url

    return store_url(args.artifact_store), open_store(args.artifact_store, create=True)


def _add_artifact_reading(p) -> None:
    p.add_argument("--artifact-store", metavar="URL", help=ARTIFACT_READ_HELP)
    p.add_argument("--artifact-cache", metavar="DIR", help=ARTIFACT_CACHE_HELP)


def _fetcher(args: argparse.Namespace, root):
    """How a reader finds trials' run folders: under its --root, or fetched from an artifact store (artifacts.Fetcher)."""
    from rankprune.artifacts import Fetcher, store_url

    store = getattr(args, "artifact_store", None)
    cache = getattr(args, "artifact_cache", None)
    return Fetcher(store=None if store is None else store_url(store), cache=None if cache is None else Path(cache),
                   root=None if root is None else Path(root))


# --- findings --------------------------------------------------------------------------------
# rankprune.findings.DEFAULT_SUITE and the runner's root, written out: importing the package here would cost every
# command Optuna's and pandas' start-up.
DEFAULT_SUITE = "studies/findings/suite.toml"
FINDINGS_ROOT = "runs/findings"


def _add_findings(sub) -> None:
    p = sub.add_parser("findings", help="a suite of grid studies and the report of its verdicts")
    fsub = p.add_subparsers(dest="findings_command", required=True, parser_class=_Parser)

    r = fsub.add_parser("run", help="run (or continue) every study of a suite up to its grid")
    r.add_argument("suite", nargs="?", default=DEFAULT_SUITE, metavar="SUITE", help=f"suite file ({DEFAULT_SUITE})")
    r.add_argument("--storage", help="SQLAlchemy URL, or journal:PATH for Optuna's journal file (default: sqlite:///ROOT/studies.sqlite3)")
    r.add_argument("--root", default=FINDINGS_ROOT, help=f"folder for trial run folders and the default storage ({FINDINGS_ROOT})")
    r.add_argument("--batch", type=int, default=1, help="trials asked from Optuna at once and trained together (1)")
    r.add_argument("--only", nargs="+", action="extend", metavar="NAME",
                   help="run only these experiments and baselines (study names, [[baseline]] names)")
    r.add_argument("--data-dir", help="dataset folder, overriding every study's base.data.data_dir")
    r.add_argument("--no-download", action="store_true", help="never download; fail at once if the data is missing")
    r.add_argument("--device", help="cpu, cuda or auto, overriding every study's device")
    r.add_argument("--artifact-store", metavar="URL", help=ARTIFACT_STORE_HELP + "; baselines' result files too")
    r.set_defaults(handler=_run_findings)

    rp = fsub.add_parser("report", help="findings.md: a verdict per hypothesis, a section per question, figures")
    rp.add_argument("suite", nargs="?", default=DEFAULT_SUITE, metavar="SUITE", help=f"suite file ({DEFAULT_SUITE})")
    rp.add_argument("--storage", help="SQLAlchemy URL, or journal:PATH for Optuna's journal file (default: sqlite:///ROOT/studies.sqlite3)")
    rp.add_argument("--root", default=FINDINGS_ROOT, help=f"where the default storage lives ({FINDINGS_ROOT})")
    rp.add_argument("--out", help="report folder (default: ROOT/report)")
    _add_artifact_reading(rp)
    rp.set_defaults(handler=_run_findings_report)


# `findings run`'s options as (flag, attribute, default): the continue command repeats every one given.
_FINDINGS_RUN_OPTIONS = (
    ("--storage", "storage", None), ("--root", "root", FINDINGS_ROOT), ("--batch", "batch", 1),
    ("--data-dir", "data_dir", None), ("--no-download", "no_download", False), ("--device", "device", None),
    ("--artifact-store", "artifact_store", None),
)


def _findings_command(args: argparse.Namespace, verb: str = "run") -> list[str]:
    """The `findings run` (or `report`, with the options the two share) command line of these arguments, as argv."""
    parts = ["rankprune", "findings", verb, args.suite]
    for flag, attribute, default in _FINDINGS_RUN_OPTIONS:
        if verb != "run" and flag not in ("--storage", "--root", "--artifact-store"):
            continue
        value = getattr(args, attribute, default)
        if value is True:
            parts.append(flag)
        elif value is not None and value is not False and value != default:
            parts += [flag, str(value)]
    if verb == "run":
        for name in getattr(args, "only", None) or []:
            parts += ["--only", name]
    return parts


def _run_findings(args: argparse.Namespace) -> int:
    import logging
    import shlex

    import optuna
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rankprune.findings import parse_suite, with_overrides
    from rankprune.findings.runner import check_data, progress_of, top_up
    from rankprune.study import StudyStalled, check_storage, default_storage

    # Everything is checked before any study is touched: the flags, the suite and its study files, the storage, the data.
    _at_least_one(("--batch", args.batch))
    suite = parse_suite(args.suite)
    suite.select(args.only)  # an unknown name, before the device or the data are looked at
    device = _resolve_device(args.device) if args.device is not None else None
    suite = with_overrides(suite, args.data_dir, False if args.no_download else None, device)
    experiments = suite.select(args.only)
    baselines = suite.select_baselines(args.only)
    url = args.storage or default_storage(args.root)
    check_storage(url)
    artifacts = _artifact_store(args)
    check_data(experiments + [suite.experiment(b.study) for b in baselines if suite.experiment(b.study) not in experiments])

    console = Console(stderr=True)
    optuna.logging.set_verbosity(logging.ERROR)  # one line per trial, printed here
    console.print(f"suite {suite.name}: {len(experiments)} of {len(suite.experiments)} studies"
                  + (f", {len(baselines)} of {len(suite.baselines)} baselines" if suite.baselines else "")
                  + f"; storage: {url}", soft_wrap=True)
    incomplete: list[str] = []
    try:
        for i, e in enumerate(experiments, 1):
            before = progress_of(e, url)
            if isinstance(before, ConfigError):
                raise before
            where = f"study {i} of {len(experiments)}: {e.name}"
            if before.complete:
                console.print(f"{where}: complete ({before.done} of {e.declared} trials); skipped")
                continue
            progress = Progress(TextColumn(where), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
            task = progress.add_task("trials", total=e.declared, completed=before.done)

            def after_trial(study, trial, progress=progress, task=task, mode=e.spec.mode) -> None:
                if trial.state == optuna.trial.TrialState.COMPLETE:
                    progress.advance(task)
                _print_trial(progress.console, trial, mode)

            def retried(why: str, numbers: list[int], progress=progress) -> None:
                whose = "whose worker was killed" if why == "killed" else "interrupted earlier"
                progress.console.print(f"retrying {len(numbers)} trial(s) {whose} first, with the same parameters: "
                                       + ", ".join(f"#{n}" for n in numbers), soft_wrap=True)

            try:
                with progress:
                    after = top_up(e, url, Path(args.root), args.batch, callbacks=[after_trial], on_retry=retried,
                                   artifact_store=args.artifact_store)
            except StudyStalled as exc:
                console.print(f"{where}: stopped: {exc}", soft_wrap=True)
                incomplete.append(e.name)
                continue
            if after.complete:
                console.print(f"{where}: complete ({after.done} of {e.declared} trials)")
            else:
                failed = [c for c in after.missing if c.state == "failed"]
                console.print(f"{where}: {after.done} of {e.declared} trials complete; missing: "
                              + ", ".join(f"{n} {state}" for state, n in after.counts().items())
                              + (f" (not retried, e.g. {failed[0].reason})" if failed else ""), soft_wrap=True, markup=False)
                incomplete.append(e.name)
        # each baseline after the studies, so that its budgets (its study's runs) are there
        for i, b in enumerate(baselines, 1):
            if not _run_baseline(console, b, suite.experiment(b.study), url, Path(args.root),
                                 f"baseline {i} of {len(baselines)}: {b.name}", artifacts):
                incomplete.append(b.name)
    except KeyboardInterrupt as exc:
        console.print("interrupted; finished trials stay in their studies, the interrupted ones are marked failed and "
                      "are retried when it continues; a baseline keeps the runs it finished. "
                      f"Continue with: {shlex.join(_findings_command(args))}", soft_wrap=True)
        return _interrupted_exit(exc)
    behind = {b.name for b in baselines} & set(incomplete)
    done = len(experiments) - len(incomplete) + len(behind)
    console.print(f"suite {suite.name}: {done} of {len(experiments)} studies complete"
                  + (f", {len(baselines) - len(behind)} of {len(baselines)} baselines" if baselines else "")
                  + (f"; incomplete: {', '.join(incomplete)}" if incomplete else "")
                  + f". Report: {shlex.join(_findings_command(args, 'report'))}", soft_wrap=True)
    return 0 if not incomplete else 1


def _run_baseline(console, baseline, experiment, url: str, root: Path, where: str, artifacts=None) -> bool:
    """Run a suite's baseline (findings.baseline) with a progress bar and one line per finished (depth, seed), in
    the style of the studies above; returns whether every pair is done."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rankprune.findings.baseline import plan, run_baseline
    from rankprune.units import seconds, tflop, widths_text

    before = plan(baseline, experiment, url, root)
    if all(p.done for p in before):
        if artifacts is not None:  # results run before the store was named go up now (nothing is run)
            run_baseline(baseline, experiment, url, root, artifacts=artifacts)
        console.print(f"{where}: complete ({len(before)} of {len(before)} runs); skipped")
        return True
    progress = Progress(TextColumn(where), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
    task = progress.add_task("runs", total=len(before), completed=sum(p.done for p in before))

    def finished(pair, r: dict) -> None:
        progress.advance(task)
        progress.console.print(
            f"depth {pair.depth}, seed {pair.seed}: {widths_text(r['initial_widths'])} -> widths {widths_text(r['widths'])} "
            f"after {r['meta_iterations']} networks ({r['stop']})  test {r['test_acc']:.4f}  "
            f"{tflop(r['cumulative_flops'])} of {tflop(r['budget_flops'])} TFLOP  {seconds(r['cumulative_seconds'])} s",
            soft_wrap=True, markup=False)

    with progress:
        after = run_baseline(baseline, experiment, url, root, on_pair=finished, artifacts=artifacts)
    waiting = [p for p in after if p.budget_flops is None]
    if not waiting:
        console.print(f"{where}: complete ({len(after)} of {len(after)} runs)")
        return True
    console.print(f"{where}: {sum(p.done for p in after)} of {len(after)} runs complete; {len(waiting)} wait for their "
                  f"budget, the {baseline.study} run with evolve.rebuild = {baseline.budget} (e.g. depth "
                  f"{waiting[0].depth}, seed {waiting[0].seed}): run the study first", soft_wrap=True, markup=False)
    return False


def _run_findings_report(args: argparse.Namespace) -> int:
    from rankprune.findings import parse_suite
    from rankprune.report.findings import render_findings
    from rankprune.study import default_storage

    suite = parse_suite(args.suite)
    url = args.storage or default_storage(args.root)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        print(f"warning: no storage at {url.removeprefix('sqlite:///')}: every experiment is reported as not run yet",
              file=sys.stderr)
    out = Path(args.out) if args.out else Path(args.root) / "report"
    report = _findings_command(args, "report") + (["--out", args.out] if args.out else [])
    path = render_findings(suite, url, out, run=_findings_command(args, "run"), report=report, root=Path(args.root),
                           fetcher=_fetcher(args, args.root))
    print(f"report: {path}")
    return 0


# --- report ----------------------------------------------------------------------------------
def _add_report(sub) -> None:
    p = sub.add_parser("report", help="Markdown report with figures of a run folder or a study", description=(
        "Write DIR/report.md and DIR/figures/*.png (or --format) for PATH: a run folder (a folder holding "
        "rankprune's config.json), a replicates folder (evolve --seeds), or else the name of a study in --storage "
        "(default: the SQLite file under --root)."))
    p.add_argument("path", metavar="PATH", help="run folder, replicates folder, or study name")
    p.add_argument("--out", help="report folder (default: PATH/report for a run, ROOT/reports/NAME for a study)")
    p.add_argument("--storage", help="SQLAlchemy URL of the study's storage, or journal:PATH (default: sqlite:///ROOT/studies.sqlite3)")
    p.add_argument("--root", default="runs", help="folder of the default storage, and of a study's default --out (runs)")
    # rankprune.figures.FORMATS and DPI, written out: importing matplotlib would cost every command 0.5 s to start
    p.add_argument("--format", choices=("png", "svg", "pdf"), default="png",
                   help="figure files: png for the Markdown, svg or pdf (vectors) for a paper (png)")
    p.add_argument("--dpi", type=float, default=110, help="pixels per inch of a png, 50-1200 (110; 300 for print)")
    # a study's equivalence classes, as `study classes` forms them; None: not given (an error for a folder)
    p.add_argument("--by", choices=("vector", "sum", "normalized"),
                   help="a study's classes: what must be equal, as in `study classes` (vector)")
    p.add_argument("--tol", type=float, help="a study's classes: largest difference inside a class (0: exactly equal)")
    _add_artifact_reading(p)
    p.set_defaults(handler=_run_report)


def _add_worker(sub) -> None:
    p = sub.add_parser("worker", help="one of any number of workers on any number of machines: run the named studies' "
                                      "trials until each holds its declared trials, then exit 0", description=(
        "Ask for trials until every named study holds its declared trials (a grid's cells, or the file's n_trials), "
        "then exit 0. Start as many as you like, on one machine or many, on one shared storage (PostgreSQL, or "
        "journal:PATH on a shared filesystem) and one artifact root (--root on a shared filesystem). Trials send "
        "heartbeats; a worker killed outright leaves trials the next one fails and retries once. SIGTERM starts "
        "nothing new, fails the trials it holds with the reason, and exits 143."))
    p.add_argument("--storage", required=True, help="SQLAlchemy URL, or journal:PATH for Optuna's journal file")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--suite", metavar="FILE", help="a findings suite: every study of it, up to its grid")
    which.add_argument("--study", nargs="+", action="extend", metavar="FILE", help="study files, one after another")
    p.add_argument("--root", "--artifacts", dest="root", default="runs",
                   help="the artifact root, where trial run folders go (runs); the storage records them relative to it")
    p.add_argument("--artifact-store", metavar="URL", help=ARTIFACT_STORE_HELP)
    p.add_argument("--batch", type=int, default=1, help="trials asked at once and trained together (1)")
    p.add_argument("--data-dir", help="dataset folder, overriding every study's base.data.data_dir")
    p.add_argument("--no-download", action="store_true", help="never download; fail at once if the data is missing")
    p.set_defaults(handler=_run_worker)


def _run_worker(args: argparse.Namespace) -> int:
    """`findings run` for a suite (without its report). A grid study file is topped up to its cells as `findings run`
    tops up a suite's studies (findings.runner.top_up: passes that first fail the trials of killed workers, whose
    heartbeats stopped, and retry them, so that no cell is run twice); another study file runs `study run --until
    n_trials`."""
    import dataclasses

    from rankprune.study import SAMPLER_ALIASES, parse_spec

    _at_least_one(("--batch", args.batch))
    if args.suite:
        return _run_findings(argparse.Namespace(suite=args.suite, storage=args.storage, root=args.root, batch=args.batch,
                                                only=None, data_dir=args.data_dir, no_download=args.no_download,
                                                device=None, artifact_store=args.artifact_store))
    specs = [parse_spec(f) for f in args.study]  # every file checked before the first trial
    for file, spec in zip(args.study, specs):
        if SAMPLER_ALIASES.get(spec.sampler.lower(), spec.sampler) != "GridSampler":
            code = _run_study(argparse.Namespace(
                file=file, n_trials=None, until=spec.n_trials, storage=args.storage, allow_other_tables=False,
                study_name=None, seed=None, root=args.root, heartbeat=None, data_dir=args.data_dir,
                no_download=args.no_download, batch=args.batch, batch_members=None, artifact_store=args.artifact_store))
            if code != 0:
                return code
            continue
        code = _top_up_grid(args, dataclasses.replace(spec, base=_data_overrides(spec.base, args)), file)
        if code != 0:
            return code
    return 0


def _data_overrides(base: dict, args: argparse.Namespace) -> dict:
    data = dict(base.get("data", {}))
    if args.data_dir:
        data["data_dir"] = args.data_dir
    if args.no_download:
        data["download"] = False
    return {**base, "data": data}


def _top_up_grid(args: argparse.Namespace, spec, file: str) -> int:
    import logging

    import optuna
    from rich.console import Console

    from rankprune.findings.runner import check_data, top_up
    from rankprune.findings.suite import Experiment
    from rankprune.study import StudyStalled, check_storage

    experiment = Experiment(Path(file), spec, 0, (), None, ())
    check_storage(args.storage)
    _artifact_store(args)
    check_data([experiment])
    console = Console(stderr=True)
    optuna.logging.set_verbosity(logging.ERROR)
    try:
        progress = top_up(experiment, args.storage, Path(args.root), args.batch, artifact_store=args.artifact_store,
                          callbacks=[lambda _study, trial: _print_trial(console, trial, spec.mode)],
                          on_retry=lambda why, numbers: console.print(
                              f"retrying {len(numbers)} trial(s) ({why}) first: " + ", ".join(f"#{n}" for n in numbers)))
    except StudyStalled as exc:
        console.print(f"study {spec.name}: stopped: {exc}", soft_wrap=True)
        return 1
    console.print(f"study {spec.name}: {progress.done} of {len(progress.cells)} cells complete"
                  + ("" if progress.complete else "; the rest are held by other workers or failed"), soft_wrap=True)
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from rankprune.report import render

    path = render(args.path, args.out, storage=args.storage, root=args.root, fmt=args.format, dpi=args.dpi,
                  by=args.by, tol=args.tol, fetcher=_fetcher(args, args.root))
    print(f"report: {path}")
    return 0


# --- dynamics ---------------------------------------------------------------------------------
DYNAMICS_ROOT = "runs/dynamics"


def _integer_list(flag: str):
    """argparse type: `2..5` or `2,3,5` or `4` as a list of integers (config.parse_integers), one-line errors."""
    def parse(text: str) -> list[int]:
        from rankprune.config import RangeError, parse_integers

        try:
            return parse_integers(text)
        except (RangeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(f"{exc}" if isinstance(exc, RangeError) else
                                             f"expected 2..5, 2,3,5 or 4, got {text!r}") from None
    parse.__name__ = flag
    return parse


def _shard(text: str) -> tuple[int, int]:
    """--shard K/N: this process takes every N-th unit from the K-th (K from 1 to N)."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 1/2, got {text!r}") from None
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"K must be from 1 to N, got {text!r}")
    return k - 1, n


def _add_dynamics_common(p, default_out: str) -> None:
    p.add_argument("--out", default=default_out, help=f"experiment folder; running again continues it ({default_out})")
    p.add_argument("--seeds", type=_integer_list("--seeds"), default=[0, 1, 2], help="seeds: 0..4 or 0,3,7 (0..2)")
    p.add_argument("--shard", type=_shard, default=(0, 1),
                   help="K/N: run every N-th network from the K-th, so that N processes (OMP_NUM_THREADS=1 each) share "
                        "one folder; the report is drawn by whichever finishes the last network (1/1)")
    p.add_argument("--no-report", action="store_true", help="run the networks, draw no report")
    p.add_argument("--format", choices=("png", "svg", "pdf"), default="png", help="figure files (png)")
    p.add_argument("--dpi", type=float, default=110, help="pixels per inch of a png, 50-1200 (110)")


def _add_dynamics(sub) -> None:
    p = sub.add_parser("dynamics", help="the jamming and lazy-training experiments, step by step",
                       description="Fixed-step training with log-spaced checkpoints, as the jamming (Geiger, Spigler et "
                                   "al. 2019) and lazy-training (Chizat, Oyallon and Bach 2019) experiments ran it. Each "
                                   "command runs its networks into a folder (continuing one it already started) and "
                                   "writes FOLDER/report.md with its figures.")
    dsub = p.add_subparsers(dest="dynamics_command", required=True, parser_class=_Parser)

    j = dsub.add_parser("jamming", help="N_Delta / N, loss and Hessian across parameter-matched widths (MNIST parity)")
    _add_dynamics_common(j, f"{DYNAMICS_ROOT}/jamming")
    j.add_argument("--dataset", default="mnist", help="mnist | fashion-mnist | kmnist | digits: the task is the parity of the class (mnist)")
    j.add_argument("--data-dir", help="dataset folder (default: ~/.cache/rankprune/data, or $RANKPRUNE_DATA)")
    j.add_argument("--no-download", action="store_true", help="never download; fail at once if the data is missing")
    j.add_argument("--points", type=int, default=6000, help="P, training images, half of each parity (6000)")
    j.add_argument("--dim", type=int, default=10, help="d, principal components the images are projected on (10)")
    j.add_argument("--depths", type=_integer_list("--depths"), default=[2, 3], help="hidden layers: 2..3 or 1,2,4 (2,3)")
    j.add_argument("--params", type=_integer_list("--params"), default=None,
                   help="weights N of the networks, e.g. 100,1000,10000 (13 from 100 to 100,000, 4 per decade)")
    j.add_argument("--steps", type=int, default=3000, help="step budget (3000)")
    j.add_argument("--lr", type=float, default=1e-3, help="learning rate (1e-3)")
    j.add_argument("--optimizer", default="adam", help="adam | sgd (adam)")
    j.add_argument("--batch-size", type=int, help="patterns per step, drawn from the unsatisfied ones (the full batch)")
    j.add_argument("--precision", default="float64", help="float64 | float32 (float64)")
    j.add_argument("--checkpoints", type=int, default=60, help="log-spaced steps measured besides step 0 (60)")
    j.add_argument("--hessian-max", type=int, default=2000,
                   help="networks of at most this many parameters get the full Hessian at the start and the end (2000; 0: none)")
    j.add_argument("--device", help="cpu, cuda or auto (cpu)")
    j.set_defaults(handler=_run_jamming)

    lz = dsub.add_parser("lazy", help="loss and relative weight movement per step: widths, output scaling alpha, random "
                                      "features, a bad initialisation, and the scaled one-parameter landscape")
    lz.add_argument("experiment", choices=("widths", "alpha", "random-features", "bad-init", "landscape"),
                    help="widths: a shallow network at widths 5 to 1000; alpha: output scaling 1 to 1000 with the "
                         "learning rate / alpha^2; random-features: fixed sine features, only the last layer trained; "
                         "bad-init: 2 large steps first, against the default start; landscape: the loss of a scaled "
                         "one-parameter model beside its linearisation (no training)")
    _add_dynamics_common(lz, f"{DYNAMICS_ROOT}/lazy-EXPERIMENT")
    lz.add_argument("--steps", type=int, help="steps of every network (each experiment's own: widths 50,000, alpha "
                                              "10,000, random features 10,000 and 100, bad-init 1,000 after the 2 bad ones)")
    lz.add_argument("--checkpoints", type=int, default=120, help="log-spaced steps measured besides step 0 (120)")
    lz.add_argument("--target", default="middle", help="the 1-D regression target: simple | middle | complex (middle)")
    lz.add_argument("--noise", type=float, default=0.0, help="standard deviation of Gaussian noise on the targets (0)")
    lz.add_argument("--decay-to-init", type=float, default=0.0,
                    help="weight decay towards the initial weights, lambda/2 ||w - w_0||^2 (0: none; a decay to zero "
                         "would pull a lazy network away from its initialisation)")
    lz.set_defaults(handler=_run_lazy)

    r = dsub.add_parser("report", help="draw FOLDER/report.md again from the networks a dynamics command finished")
    r.add_argument("folder", metavar="FOLDER")
    r.add_argument("--format", choices=("png", "svg", "pdf"), default="png", help="figure files (png)")
    r.add_argument("--dpi", type=float, default=110, help="pixels per inch of a png, 50-1200 (110)")
    r.set_defaults(handler=_run_dynamics_report)


def _run_dynamics_units(args: argparse.Namespace, folder, units, describe) -> int:
    from rich.console import Console

    from rankprune.dynamics.runner import run_units

    console = Console(stderr=True)
    folder.open(seed=min(args.seeds))
    k, n = args.shard
    console.print(f"{folder.kind}: {len(units)} networks in {folder.path}" + (f"; this process takes {k + 1} of every {n}" if n > 1 else ""),
                  soft_wrap=True)
    try:
        finished, done = run_units(folder, units, shard=args.shard, console=console, describe=describe)
    except KeyboardInterrupt:
        kept = sum(folder.done(key) for key, _ in units)
        console.print(f"interrupted: {kept} of {len(units)} networks are finished and kept in {folder.path}; "
                      "run the same command again to continue", soft_wrap=True)
        raise
    all_done = all(folder.done(key) for key, _ in units)
    if not args.no_report and all_done:
        from rankprune.report.dynamics_experiments import render_experiment

        print(f"report: {render_experiment(folder.path, args.format, args.dpi)}")
    elif not all_done:
        console.print(f"{sum(folder.done(key) for key, _ in units)} of {len(units)} networks finished; the report waits "
                      "for the rest (the other shards)", soft_wrap=True)
    return 0


def _run_jamming(args: argparse.Namespace) -> int:
    from rankprune.dynamics.folder import ExperimentFolder
    from rankprune.dynamics.jamming import DEFAULT_PARAMS, FREE, JammingSettings, check_data, units

    s = JammingSettings(dataset=args.dataset, data_dir=args.data_dir, download=not args.no_download, points=args.points,
                        dim=args.dim, depths=tuple(args.depths), params=tuple(args.params or DEFAULT_PARAMS),
                        seeds=tuple(args.seeds), steps=args.steps, lr=args.lr, optimizer=args.optimizer,
                        batch_size=args.batch_size, precision=args.precision, checkpoints=args.checkpoints,
                        hessian_max=args.hessian_max, device=_resolve_device(args.device))
    s.validate()
    check_data(s)
    folder = ExperimentFolder(args.out, "jamming", s.to_dict(), free=FREE)
    return _run_dynamics_units(args, folder, units(s), lambda r: (
        f"N {r['N']:,} (h {r['h']}), {r['steps_run']:,} steps: loss {r['final']['train_loss']:.3g}, "
        f"N_Delta/N {r['final']['n_delta'] / r['N']:.3g}, test error {100 * r['final']['test_error']:.1f}%, "
        f"{r['seconds']:.1f} s"))


def _run_lazy(args: argparse.Namespace) -> int:
    from rankprune.dynamics.folder import ExperimentFolder

    out = args.out.replace("EXPERIMENT", args.experiment)
    if args.experiment == "landscape":  # no network, no seed: the figure itself
        folder = ExperimentFolder(out, "lazy", {"experiment": "landscape"}).open()
        if not args.no_report:
            from rankprune.report.dynamics_experiments import render_experiment

            print(f"report: {render_experiment(folder.path, args.format, args.dpi)}")
        return 0
    from rankprune.dynamics.lazy import LazySettings, units

    s = LazySettings(experiment=args.experiment, seeds=tuple(args.seeds), steps=args.steps, checkpoints=args.checkpoints,
                     target=args.target, noise=args.noise, decay_to_init=args.decay_to_init).validate()
    folder = ExperimentFolder(out, "lazy", s.to_dict())
    return _run_dynamics_units(args, folder, units(s), lambda r: (
        f"{r['setting']} {r[r['setting']]}: loss {r['final']['loss']:.3g}, movement of the last layer "
        f"{r['final']['movement'][-1]:.3g}, of the network {r['final']['movement_network']:.3g}"
        + (" (diverged)" if r["diverged"] else "")))


def _run_dynamics_report(args: argparse.Namespace) -> int:
    from rankprune.report.dynamics_experiments import render_experiment

    print(f"report: {render_experiment(args.folder, args.format, args.dpi)}")
    return 0


# --- entry point ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rankprune", description="Shrink networks to the rank of their weight matrices.")
    from rankprune import __version__

    parser.add_argument("--version", action="version", version=f"rankprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_evolve(sub)
    _add_study(sub)
    _add_findings(sub)
    _add_dynamics(sub)
    _add_report(sub)
    _add_worker(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from rankprune.job import interrupts_on_sigterm

    try:
        with interrupts_on_sigterm():
            return args.handler(args)
    except ConfigError as exc:
        print(f"rankprune {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:  # before a run folder existed (e.g. while loading data): nothing to keep
        print(f"rankprune {args.command}: interrupted", file=sys.stderr)
        return _interrupted_exit(exc)


if __name__ == "__main__":
    sys.exit(main())
