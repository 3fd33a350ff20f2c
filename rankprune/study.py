"""Optuna studies over initial architectures: the search space from a TOML file, the objective,
the storage, and the per-trial attributes that make convergent ranks comparable across networks.

A study file (see studies/*.toml) has these tables:

    [study]       name (required), mode ("survey" | "evolve"), sampler, seed, n_trials, objectives
    [base]        fixed parts of the run config, the same tables as `rankprune evolve --config`
    [space]       what each trial samples: depth, width, width_profile, and dotted config keys
                  ("train.lr", "evolve.wd_decay", "rank.measure", "seed", ...); or widths, every hidden
                  layer's width spelled out as "300-100" (LeNet-300-100, or architectures drawn once and
                  then replicated over seeds), which sets the depth too
    [storage]     heartbeat_interval, grace_period (seconds)

A space entry is a fixed value, ``{ choices = [...] }``, or ``{ low = L, high = H, log = true,
step = S }`` (integers when low and high are both integers). parse_spec builds the run config of every
fixed value, every choice and both ends of every range, and the widths of the narrowest funnel, so a
file that could only make invalid trials is refused before anything is created.

`survey` trains each sampled network once to saturation and measures its ranks (the controller
with one iteration); `evolve` runs the controller to its fixed point. Either way a trial leaves an
ordinary run folder under ROOT/studies/NAME/trial-NNNN.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
import warnings

import numpy as np
import optuna

from rankprune.config import ConfigError, RunConfig, load_toml
from rankprune.heartbeats import HeartbeatJournal, fail_stale_trials, heartbeat_interval, record_heartbeat

__all__ = [
    "StudySpec",
    "TrialFailed",
    "StudyStalled",
    "check_storage",
    "retry_interrupted",
    "parse_spec",
    "open_storage",
    "default_storage",
    "make_sampler",
    "sample_trial",
    "trial_attributes",
    "run_study",
    "load_study",
    "METRICS",
    "DEFAULT_OBJECTIVE",
    "TEST_METRICS",
    "test_objective_warning",
    "censored_layers",
    "censored_members",
]

MODES = ("survey", "evolve")
PROFILES = ("constant", "funnel", "expand", "independent")
# Objective metrics: user attributes every finished trial has.
METRICS = (
    "test_acc", "val_acc", "train_acc", "test_loss", "train_loss", "generalisation_gap",
    "network_rank_sum", "network_rank_normalized", "network_rank_min", "rank_parameters",
    "parameters", "cumulative_seconds", "cumulative_flops", "epochs",
)
# The objective a study file without `objectives` optimises. Every decision of a run is made on its validation split
# and the test split is only reported (README): a study's sampler (TPE, NSGA-II) steers by its objectives, and its
# Pareto front and best trial are ranked on them, so the default is validation accuracy.
DEFAULT_OBJECTIVE = {"metric": "val_acc", "direction": "maximize"}
# Objective metrics computed from the test split: test accuracy and loss, and the generalisation gap (training
# minus *test* accuracy: trial_attributes takes it from the run's summary, evolve/iteration.py). Optimising one lets
# the test set steer what is sampled; allowed, but a study run says so in one line and its report carries a warning.
TEST_METRICS = ("test_acc", "test_loss", "generalisation_gap")
SAMPLER_ALIASES = {
    "tpe": "TPESampler", "random": "RandomSampler", "grid": "GridSampler", "nsga2": "NSGAIISampler",
    "nsga3": "NSGAIIISampler", "qmc": "QMCSampler", "cmaes": "CmaEsSampler", "gp": "GPSampler",
}
ARCHITECTURE_KEYS = ("depth", "width", "width_profile", "widths")
# numpy's RandomState, which seeds Optuna's samplers, takes seeds from 0 to 2**32 - 1
SAMPLER_SEED_MAX = 2**32 - 1
# How the objective and the batched runner begin a trial's fail_reason when Ctrl-C or SIGTERM stopped it;
# a continued study retries such trials once (retry_interrupted).
INTERRUPTED = "interrupted"
# `until` without a trial cap stops once this many trials in a row (or a whole batch, if larger) failed:
# a space whose trials all fail would otherwise never reach its count of complete trials.
FAILED_IN_A_ROW = 10


class TrialFailed(Exception):
    """A trial that cannot produce a result (invalid architecture, diverged); the study goes on."""


class StudyStalled(RuntimeError):
    """run_study(until=N) stopped short of N complete trials because its trials kept failing."""


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # "maximize" | "minimize"


@dataclass(frozen=True)
class StudySpec:
    name: str
    mode: str
    objectives: tuple[Objective, ...]
    base: dict[str, Any]
    space: dict[str, Any]
    sampler: str = "tpe"
    sampler_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    n_trials: int = 10
    heartbeat_interval: int = 60
    grace_period: int = 180


def _section(doc: dict, key: str, allowed: tuple[str, ...], where: str) -> dict:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{key}] must be a table")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key {key}.{unknown[0]}; known: {', '.join(allowed)}")
    return value


def _check_distribution(name: str, spec: Any, where: str) -> None:
    if not isinstance(spec, dict):
        return  # a fixed value
    keys = set(spec)
    if "choices" in keys:
        if keys - {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise ConfigError(f"{where}: space.{name} needs a non-empty list in choices and nothing else")
        return
    if not {"low", "high"} <= keys or keys - {"low", "high", "log", "step"}:
        raise ConfigError(f"{where}: space.{name} must be a value, {{choices = [...]}} or {{low, high[, log][, step]}}")
    if not all(isinstance(spec[k], (int, float)) and not isinstance(spec[k], bool) for k in ("low", "high")):
        raise ConfigError(f"{where}: space.{name} low and high must be numbers")
    if spec["low"] > spec["high"]:
        raise ConfigError(f"{where}: space.{name} has low > high")
    if spec.get("log") and spec["low"] <= 0:
        raise ConfigError(f"{where}: space.{name} is log-scaled, so low must be positive")
    if "log" in spec and not isinstance(spec["log"], bool):
        raise ConfigError(f"{where}: space.{name} log must be true or false, got {spec['log']!r}")
    if "step" in spec:
        step = spec["step"]
        if not isinstance(step, (int, float)) or isinstance(step, bool) or not step > 0:
            raise ConfigError(f"{where}: space.{name} step must be a positive number, got {step!r}")
        if spec.get("log"):
            raise ConfigError(f"{where}: space.{name} has both log and step; Optuna takes one or the other")


def _check_config_path(name: str, where: str) -> None:
    """A dotted space key must name a RunConfig field: 'train.lr', 'seed'..."""
    section, _, key = name.rpartition(".")
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    if not section:
        if name not in fields or name in ("data", "model", "train", "rank", "evolve"):
            raise ConfigError(f"{where}: unknown parameter space.{name}")
        return
    if section not in fields or section in ("seed", "device"):
        raise ConfigError(f"{where}: unknown parameter space.{name}")
    inner = {f.name for f in dataclasses.fields(getattr(RunConfig(), section))}
    if key not in inner:
        raise ConfigError(f"{where}: unknown parameter space.{name}; {section} has {', '.join(sorted(inner))}")


_KIND_NAMES = {dict: "a table", str: "a string", list: "a list", int: "an integer"}


def parse_spec(path: str | Path) -> StudySpec:
    """Read and validate a study file; every problem is a one-line ConfigError naming it."""
    where = str(path)
    doc = load_toml(path)
    unknown = sorted(set(doc) - {"study", "base", "space", "storage"})
    if unknown:
        raise ConfigError(f"{where}: unknown table [{unknown[0]}]; known: study, base, space, storage")
    if "study" not in doc:
        raise ConfigError(f"{where}: no [study] table; a study file needs [study] with name = \"...\" (and mode, "
                          "sampler, seed, n_trials, objectives where the defaults do not fit) and [space] with depth")
    study = _section(doc, "study", ("name", "mode", "sampler", "sampler_options", "seed", "n_trials", "objectives", "description"), where)
    storage = _section(doc, "storage", ("heartbeat_interval", "grace_period"), where)
    space, base = doc.get("space", {}), doc.get("base", {})
    for key, value, kind in (
        ("[space]", space, dict), ("[base]", base, dict), ("study.name", study.get("name", ""), str),
        ("study.mode", study.get("mode", "survey"), str), ("study.sampler", study.get("sampler", "tpe"), str),
        ("study.sampler_options", study.get("sampler_options", {}), dict), ("study.objectives", study.get("objectives", []), list),
        ("study.seed", study.get("seed", 0), int), ("study.n_trials", study.get("n_trials", 1), int),
        ("storage.heartbeat_interval", storage.get("heartbeat_interval", 1), int),
        ("storage.grace_period", storage.get("grace_period", 1), int),
    ):
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be {_KIND_NAMES[kind]}, got {value!r}")
    for key in ("n_trials", "heartbeat_interval", "grace_period"):
        if (study if key == "n_trials" else storage).get(key, 1) < 1:
            raise ConfigError(f"{where}: {key} must be at least 1")
    if not 0 <= study.get("seed", 0) <= SAMPLER_SEED_MAX:
        raise ConfigError(f"{where}: study.seed must be an integer from 0 to {SAMPLER_SEED_MAX}, got {study['seed']}")
    if "name" not in study:
        raise ConfigError(f"{where}: [study] needs name = \"...\", the study's name in the storage")
    name = study["name"]
    if not name.strip():
        raise ConfigError(f"{where}: study.name is empty; give the study a name (letters, digits, '.', '_', '-')")
    mode = study.get("mode", "survey")
    if mode not in MODES:
        raise ConfigError(f"{where}: unknown mode {mode!r}; choose from {', '.join(MODES)}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"{where}: study name {name!r} may hold only letters, digits, '.', '_' and '-'")

    objectives = []
    for obj in study.get("objectives", [DEFAULT_OBJECTIVE]):
        if not isinstance(obj, dict) or set(obj) != {"metric", "direction"}:
            raise ConfigError(f"{where}: each objective is {{metric = ..., direction = ...}}")
        if obj["metric"] not in METRICS:
            raise ConfigError(f"{where}: unknown objective metric {obj['metric']!r}; choose from {', '.join(METRICS)}")
        if obj["direction"] not in ("maximize", "minimize"):
            raise ConfigError(f"{where}: objective direction must be maximize or minimize, got {obj['direction']!r}")
        objectives.append(Objective(obj["metric"], obj["direction"]))
    if not objectives:
        raise ConfigError(f"{where}: give at least one objective")

    if "depth" not in space and "widths" not in space:
        raise ConfigError(f"{where}: space.depth is required (a number or a distribution), or space.widths")
    if "widths" in space:
        _check_widths(space, base, where)
    if ("width" in space or "width_profile" in space) and ("model.params" in space or base.get("model", {}).get("params") is not None):
        raise ConfigError(f"{where}: model.params sets the initial width; drop space.width and space.width_profile")
    for key, spec in space.items():
        if key not in ARCHITECTURE_KEYS:
            _check_config_path(key, where)
        _check_distribution(key, spec, where)
    profile = space.get("width_profile", "constant")
    for p in profile["choices"] if isinstance(profile, dict) else [profile]:
        if p not in PROFILES:
            raise ConfigError(f"{where}: unknown width_profile {p!r}; choose from {', '.join(PROFILES)}")
    try:
        base_cfg = RunConfig.from_dict(base)
        base_cfg.validate()
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{where}: [base] {exc}") from None
    _check_space_values(space, base, mode, where)

    spec = StudySpec(
        name=name, mode=mode, objectives=tuple(objectives), base=base, space=space,
        sampler=study.get("sampler", "tpe"), sampler_options=study.get("sampler_options", {}),
        seed=int(study.get("seed", 0)), n_trials=int(study.get("n_trials", 10)),
        heartbeat_interval=int(storage.get("heartbeat_interval", 60)), grace_period=int(storage.get("grace_period", 180)),
    )
    make_sampler(spec, spec.seed)  # an unknown sampler or an ungriddable space fails here, before any study
    return spec


def test_objective_warning(metrics) -> str | None:
    """One line saying that a study's objectives (metric names) include a test-split metric (TEST_METRICS), so the
    test set steers its sampler and ranks its Pareto front; None when every objective is measured without it."""
    named = [m for m in metrics if m in TEST_METRICS]
    if not named:
        return None
    return (f"objective {' and '.join(named)} {'is' if len(named) == 1 else 'are'} measured on the test split: it steers "
            "the sampler and ranks the Pareto front, so the test set is no longer held out; optimise val_acc (the "
            "default) and only report test_acc")


def _edge_values(spec: Any) -> list:
    """What a space entry can take at its edges: its fixed value, every choice, or both ends of a range
    (the highest value its step reaches, as Optuna's suggest_int takes it)."""
    if not isinstance(spec, dict):
        return [spec]
    if "choices" in spec:
        return list(spec["choices"])
    low, high, step = spec["low"], spec["high"], spec.get("step", 1)
    if isinstance(low, int) and isinstance(high, int) and not isinstance(step, float):
        high = low + (high - low) // int(step) * int(step)
    return [low, high]


def parse_widths(text: Any) -> list[int]:
    """Hidden widths spelled "300-100" (a study's space.widths value): whole numbers of at least 1. ValueError
    otherwise."""
    parts = str(text).split("-") if isinstance(text, str) else [text]
    widths = [int(p) for p in parts if p.strip().isdigit()]
    if len(widths) != len(parts) or min(widths) < 1 or isinstance(text, bool):
        raise ValueError(f"widths must be whole numbers of at least 1 joined by '-' (\"300-100\"), got {text!r}")
    return widths


def _check_widths(space: dict, base: dict, where: str) -> None:
    """space.widths spells out every layer, so it excludes what would choose them another way, and fixes the depth."""
    clash = [k for k in ("width", "width_profile", "model.params") if k in space] + (
        ["[base.model] params"] if base.get("model", {}).get("params") is not None else [])
    if clash:
        raise ConfigError(f"{where}: space.widths sets every hidden layer's width; drop {clash[0]}")
    for value in _edge_values(space["widths"]):
        try:
            widths = parse_widths(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: space.{exc}") from None
        if "depth" in space and len(widths) not in _edge_values(space["depth"]):
            raise ConfigError(f"{where}: space.widths {value!r} has {len(widths)} layers but space.depth is "
                              f"{space['depth']!r}; drop space.depth (the widths set it)")


def _check_space_values(space: dict, base: dict, mode: str, where: str) -> None:
    """Every fixed value, every choice and both ends of every range make a valid run: whole depths and widths
    of at least 1, a funnel that keeps at least one unit in its last layer, and a RunConfig that validates
    for each value of each dotted key (the keys before it at their first value). The first problem is a one-line
    ConfigError naming the key and the value."""
    for key in ("depth", "width"):
        for value in _edge_values(space.get(key, 1)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{where}: space.{key} must be a whole number (or whole-number choices or bounds), got {value!r}")
            if value < 1:
                raise ConfigError(f"{where}: space.{key} must be at least 1, got {value}")
    depth = (max(len(parse_widths(w)) for w in _edge_values(space["widths"])) if "widths" in space
             else max(_edge_values(space["depth"])))
    try:
        configs = [_trial_config(base, mode, depth, {})]
    except ConfigError as exc:
        raise ConfigError(f"{where}: [base] at depth {depth} makes an invalid run: {exc}") from None
    earlier: dict[str, Any] = {}  # each key is checked beside the first value of the keys before it
    for key, spec in space.items():
        if key in ARCHITECTURE_KEYS:
            continue
        values = _edge_values(spec)
        for value in values:
            try:
                configs.append(_trial_config(base, mode, depth, {**earlier, key: value}))
            except ConfigError as exc:
                raise ConfigError(f"{where}: space.{key} = {value!r} makes an invalid run: {exc}") from None
        earlier[key] = values[0]
    profiles = _edge_values(space.get("width_profile", "constant"))
    if "funnel" not in profiles or any(cfg.model.params is not None for cfg in configs):
        return
    widths = _edge_values(space["width"]) if "width" in space else [cfg.resolved().model.width for cfg in configs]
    narrowest = [min(widths) // 2**i for i in range(depth)]
    if narrowest[-1] < 1:
        raise ConfigError(
            f"{where}: space: a funnel of depth {depth} from width {min(widths)} halves to 0 units {narrowest}; "
            f"keep depth at most {min(widths).bit_length()} or width at least {2 ** (depth - 1)}, or drop the funnel profile")


def _trial_config(base: dict, mode: str, depth: int, values: dict[str, Any]) -> RunConfig:
    """The validated run config of one trial: [base], the trial's values of the dotted [space] keys, and its
    depth; survey mode runs one controller iteration. ConfigError where the values make an invalid run."""
    changes: dict[str, dict] = {}
    top: dict[str, Any] = {}
    for key, value in values.items():
        section, _, field_name = key.rpartition(".")
        if section:
            changes.setdefault(section, {})[field_name] = value
        else:
            top[field_name] = value
    if mode == "survey":
        changes.setdefault("evolve", {})["max_iterations"] = 1
    changes.setdefault("evolve", {})["layers"] = (depth,)
    try:
        return RunConfig.from_dict(base).replace(**changes, **top).validate()
    except TypeError as exc:  # a value of a type the config cannot take at all
        raise ConfigError(str(exc)) from None


# --- sampling --------------------------------------------------------------------------------
def _suggest(trial: optuna.Trial, name: str, spec: Any) -> Any:
    if not isinstance(spec, dict):
        return spec
    if "choices" in spec:
        return trial.suggest_categorical(name, spec["choices"])
    low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
    if isinstance(low, int) and isinstance(high, int) and not isinstance(spec.get("step", 1), float):
        return trial.suggest_int(name, low, high, step=int(spec.get("step", 1)), log=log)
    return trial.suggest_float(name, float(low), float(high), step=spec.get("step"), log=log)


def _widths(depth: int, width: int, profile: str, trial: optuna.Trial, space: dict, family: str = "mlp") -> list[int]:
    from rankprune.models import get_family

    if profile == "constant":
        return get_family(family).start_widths(width, depth)  # a transformer's: residual, then its blocks' groups
    if family == "transformer":
        raise TrialFailed(f"a transformer's widths start at one width (width_profile constant), not {profile}")
    if profile == "funnel":  # halve at every layer
        return [width // 2**i for i in range(depth)]
    if profile == "expand":  # double at every layer
        return [width * 2**i for i in range(depth)]
    # independent: every layer its own draw from the width distribution
    return [int(_suggest(trial, f"width_{i}", space.get("width", width))) for i in range(depth)]


def sample_trial(trial: optuna.Trial, spec: StudySpec) -> tuple[RunConfig, list[int] | None]:
    """A trial's run config and initial widths (None: model.params picks them per depth). TrialFailed if the
    sampled network is invalid. Parameters are suggested in a fixed order (depth, profile, width, then the
    file's keys), so a seeded sampler draws the same trials."""
    if "widths" in spec.space:  # spelled out: they set the depth
        widths = parse_widths(_suggest(trial, "widths", spec.space["widths"]))
        values = {key: _suggest(trial, key, value) for key, value in spec.space.items() if key not in ARCHITECTURE_KEYS}
        try:
            return _trial_config(spec.base, spec.mode, len(widths), values).resolved(), widths
        except ConfigError as exc:
            raise TrialFailed(f"invalid configuration: {exc}") from None
    depth = int(_suggest(trial, "depth", spec.space["depth"]))
    profile = _suggest(trial, "width_profile", spec.space.get("width_profile", "constant"))
    width = int(_suggest(trial, "width", spec.space["width"])) if "width" in spec.space else None
    values = {key: _suggest(trial, key, value) for key, value in spec.space.items() if key not in ARCHITECTURE_KEYS}
    if depth < 1:
        raise TrialFailed(f"invalid architecture: depth {depth}")
    try:
        cfg = _trial_config(spec.base, spec.mode, depth, values)
    except ConfigError as exc:
        raise TrialFailed(f"invalid configuration: {exc}") from None
    if cfg.model.params is not None:
        return cfg, None
    cfg = cfg.resolved()
    widths = _widths(depth, width if width is not None else cfg.model.width, profile, trial, spec.space, cfg.model.family)
    if depth < 1 or min(widths) < 1:
        raise TrialFailed(f"invalid architecture: depth {depth}, widths {widths}")
    return cfg, widths


def make_sampler(spec: StudySpec, seed: int) -> optuna.samplers.BaseSampler:
    name = SAMPLER_ALIASES.get(spec.sampler.lower(), spec.sampler)
    cls = getattr(optuna.samplers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, optuna.samplers.BaseSampler)):
        raise ConfigError(f"unknown sampler {spec.sampler!r}; choose from {', '.join(SAMPLER_ALIASES)} or an optuna.samplers class name")
    options = dict(spec.sampler_options)
    if cls is optuna.samplers.GridSampler:
        options.setdefault("search_space", _grid(spec))
        cls = _GridWithRetries
    try:
        return cls(seed=seed, **options)
    except TypeError as exc:
        raise ConfigError(f"sampler {name}: {exc}") from None


class _GridWithRetries(optuna.samplers.GridSampler):
    """Optuna's GridSampler, which also lets an enqueued trial (a retry of an interrupted one) finish.

    An enqueued trial carries its parameters instead of a grid id, and GridSampler.after_trial looks up the id of
    the finished trial whenever exactly one cell is left unvisited (Optuna 5.0: KeyError 'grid_id'). The
    interrupted trial's own cell counts as visited already, so the unvisited cell is still to run: go on.

    It also lets a batched worker (optimize_batched, which tells trials outside optimize()) finish the grid's last
    cell: GridSampler stops the study from after_trial once every cell is taken, and Optuna allows Study.stop only
    inside optimize(); the batched loop already ends at its count of cells left, so that stop is not needed there.
    """

    def after_trial(self, study, trial, state, values) -> None:
        try:
            super().after_trial(study, trial, state, values)
        except KeyError:
            if "grid_id" in trial.system_attrs:
                raise
        except RuntimeError as exc:
            if "Study.stop" not in str(exc):
                raise


def _grid(spec: StudySpec) -> dict[str, list]:
    grid = {}
    for key, value in spec.space.items():
        if not isinstance(value, dict):
            continue
        if "choices" in value:
            grid[key] = value["choices"]
        elif isinstance(value["low"], int) and isinstance(value["high"], int):
            grid[key] = list(range(value["low"], value["high"] + 1, int(value.get("step", 1))))
        else:
            raise ConfigError(f"grid sampler: space.{key} is continuous; give it choices or integer bounds")
    if spec.space.get("width_profile") == "independent" or (
        isinstance(spec.space.get("width_profile"), dict) and "independent" in spec.space["width_profile"]["choices"]
    ):
        raise ConfigError("grid sampler: the independent width profile has no fixed grid")
    return grid


# Heartbeats and metric names are marked experimental in Optuna 4/5; we rely on them knowingly.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# --- storage ---------------------------------------------------------------------------------
def default_storage(root: str | Path) -> str:
    return f"sqlite:///{Path(root) / 'studies.sqlite3'}"


def _redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


JOURNAL = "journal:"  # --storage journal:PATH: Optuna's journal storage, one append-only file (JournalStorage)


def _journal_path(url: str) -> Path | None:
    """The file of a `journal:PATH` storage (journal:///abs/file.log or journal:rel/file.log); None for a database."""
    if not url.startswith(JOURNAL):
        return None
    rest = url[len(JOURNAL):]
    return Path(rest[2:] if rest.startswith("///") else rest)


def _journal(path: Path, heartbeat_interval: int | None = None, grace_period: int | None = None) -> optuna.storages.BaseStorage:
    """Optuna's journal storage on one file, locked by opening a lock file (Optuna's JournalFileOpenLock, which
    holds on network filesystems where the default symlink lock may not), with rankprune's heartbeats (heartbeats.py:
    Optuna keeps none in a journal)."""
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    return HeartbeatJournal(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))),
                            heartbeat_interval, grace_period)


def _sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///PATH` URL; None for other databases and in-memory SQLite."""
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") and len(url) > len("sqlite:///") else None


@functools.cache
def optuna_tables() -> frozenset[str]:
    """The names of the tables Optuna's RDBStorage creates, read from a throwaway in-memory database (so no
    private Optuna module is needed): 'studies', 'trials', 'version_info', 'alembic_version', ..."""
    import sqlalchemy

    storage = optuna.storages.RDBStorage("sqlite://")
    try:
        return frozenset(sqlalchemy.inspect(storage.engine).get_table_names())
    finally:
        storage.engine.dispose()


def _read_only(url: str) -> tuple[str, dict[str, Any]]:
    """(URL, engine keyword arguments) of an engine that reads `url`: a SQLite file opens with mode=ro, so
    nothing can write to it; a server database opens as it is (only reads are sent to it)."""
    import sqlite3

    path = _sqlite_path(url)
    if path is None or "?" in url:  # a server database, or a SQLite URL with options of its own
        return url, {}
    uri = f"{path.resolve().as_uri()}?mode=ro"
    return "sqlite://", {"creator": lambda: sqlite3.connect(uri, uri=True, check_same_thread=False)}


def _tables(url: str) -> set[str]:
    """The tables a database holds, looked at without creating or changing anything; ConfigError if it cannot be read."""
    import sqlalchemy

    try:
        engine_url, kwargs = _read_only(url)
        engine = sqlalchemy.create_engine(engine_url, **kwargs)
        try:
            return set(sqlalchemy.inspect(engine).get_table_names())
        finally:
            engine.dispose()
    except Exception as exc:  # a bad URL, a missing driver, an unreachable server, a file that is no database
        raise ConfigError(f"cannot open storage {_redact(url)}: {_first_line(exc)}") from None


def check_storage(url: str, allow_other_tables: bool = False) -> None:
    """ConfigError unless a study may be stored at `url`: a database that holds tables which are not Optuna's
    (someone's own data) is refused unless `allow_other_tables`. Creates nothing: a SQLite file that does not
    exist yet passes, a server database is only read."""
    path = _sqlite_path(url)
    if (path is not None and not path.exists()) or _journal_path(url) is not None:  # a journal file holds only Optuna's
        return
    other = sorted(_tables(url) - optuna_tables())
    if other and not allow_other_tables:
        shown = ", ".join(other[:3]) + (f" and {len(other) - 3} more" if len(other) > 3 else "")
        raise ConfigError(f"{_redact(url)} holds tables that are not Optuna's ({shown}); a study would add Optuna's "
                          f"{len(optuna_tables())} tables beside them: give it a database of its own, or pass --allow-other-tables")


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 allow_other_tables: bool = False) -> optuna.storages.BaseStorage:
    """An RDBStorage for any SQLAlchemy URL, with Optuna's tables created where missing; a URL that cannot be
    opened, or a database of someone else's tables (check_storage), is a one-line ConfigError.

    Workers that start together on an empty database race to create Optuna's tables, and the loser
    gets a duplicate-object error; the tables exist by then, so it simply tries again.
    """
    import sqlalchemy.exc

    journal = _journal_path(url)
    if journal is not None:  # a file of its own: nothing else is in it, no tables to create
        if str(journal) in ("", "."):
            raise ConfigError(f"--storage {url}: give the journal file, e.g. journal:///shared/studies.log")
        try:
            journal.parent.mkdir(parents=True, exist_ok=True)
            return _journal(journal, heartbeat_interval, grace_period)
        except OSError as exc:
            raise ConfigError(f"cannot open storage {url}: {_first_line(exc)}") from None
    check_storage(url, allow_other_tables)
    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            if _sqlite_path(url) is not None:
                _sqlite_path(url).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            if attempt + 1 == _SCHEMA_ATTEMPTS:
                raise ConfigError(f"cannot open storage {_redact(url)}: {_first_line(exc)}") from None
            time.sleep(0.2 * (attempt + 1))
        except Exception as exc:  # SQLAlchemy's ArgumentError, OperationalError, a missing driver, OSError...
            raise ConfigError(f"cannot open storage {_redact(url)}: {_first_line(exc)}") from None
    raise AssertionError("unreachable")


_SCHEMA_ATTEMPTS = 5
# What load_study(read_only=True) reads before it trusts a database to be Optuna's.
_SCHEMA_TABLES = ("studies", "trials", "version_info", "alembic_version")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def load_study(name: str, storage: str, read_only: bool = False) -> optuna.Study:
    """An existing study. `read_only` (study classes, trends, report) creates and changes nothing: a SQLite file
    that does not exist is an error, a database without Optuna's tables is "no study" without a table added,
    and SQLite files are opened read-only."""
    journal = _journal_path(storage)
    if journal is not None:
        if not journal.is_file():
            raise ConfigError(f"no study storage at {journal}; pass --storage journal:PATH of an existing journal")
        st = open_storage(storage) if not read_only else _journal(journal)  # loading a study writes nothing to it
    elif not read_only:
        st = open_storage(storage, allow_other_tables=True)
    else:
        path = _sqlite_path(storage)
        if path is not None and not path.is_file():
            raise ConfigError(f"no study storage at {path}; pass --storage URL or --root")
        tables = _tables(storage)
        if not tables & optuna_tables():
            raise ConfigError(f"no study {name!r} in {_redact(storage)} (it holds no Optuna tables)")
        missing = [t for t in _SCHEMA_TABLES if t not in tables]
        if missing:
            raise ConfigError(f"no study {name!r} in {_redact(storage)}: its Optuna tables are incomplete or from an old "
                              f"Optuna (no table {missing[0]}); `optuna storage upgrade --storage URL` upgrades an old one")
        try:
            engine_url, kwargs = _read_only(storage)
            st = optuna.storages.RDBStorage(engine_url, engine_kwargs=kwargs or None, skip_table_creation=True)
        except Exception as exc:  # a schema from another Optuna version, a server gone away
            raise ConfigError(f"cannot open storage {_redact(storage)}: {_first_line(exc)}") from None
    try:
        return optuna.load_study(study_name=name, storage=st)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(st)]
        raise ConfigError(f"no study {name!r} in {_redact(storage)}; it has: {', '.join(names) or 'none'}") from None


# --- where a trial's run folder lies -----------------------------------------------------------------
def stored_folder(folder: Path, root: Path) -> str:
    """How a trial's run folder is recorded in the storage: relative to the artifact root (--root) where it lies
    under it, so that any machine that mounts the root elsewhere finds it (trial_folder); else as it is."""
    try:
        return Path(folder).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(folder)


def trial_folder(recorded: str, root: str | Path | None) -> Path:
    """The run folder a trial recorded (stored_folder), on this machine: a relative path under `root` (the reader's
    --root, where it mounts the artifact root), an absolute one (studies made before paths were relative) as it is."""
    path = Path(recorded)
    return path if path.is_absolute() or root is None else Path(root) / path


def check_artifact_store(study: optuna.Study, artifacts: tuple[str, Any] | None) -> None:
    """A study whose trials upload their run folders to an artifact store keeps doing so: a worker started without
    --artifact-store would leave folders no other machine can read. The first worker given one records its URL
    (the study's user attribute artifact_store); another URL is accepted (a file store mounted elsewhere)."""
    from rankprune.artifacts import STORE_ATTR

    recorded = study.user_attrs.get(STORE_ATTR)
    if artifacts is None and recorded:
        raise ConfigError(f"study {study.study_name!r} keeps its trials' run folders in the artifact store {recorded}; "
                          "give --artifact-store (where this machine reaches it)")
    if artifacts is not None and not recorded:
        study.set_user_attr(STORE_ATTR, artifacts[0])


# --- the objective ----------------------------------------------------------------------------
def trial_attributes(summary: dict, family: str, input_shape: tuple[int, ...], n_out: int, run_folder: Path | str) -> dict:
    """What a finished trial records: the convergent rank in forms comparable across architectures."""
    from rankprune.models import get_family

    ranks = [int(math.ceil(r - 1e-9)) for r in summary["ranks"]]
    initial_widths = summary["initial_widths"]
    family_ = get_family(family)
    offsets = [g.offset for g in family_.groups(initial_widths)]  # a group's width beyond its rank
    return {
        "family": family,
        "initial_widths": initial_widths,
        "widths": summary["widths"],
        # per layer None, or why the width is a bound, not a measured rank ("initial", "input"); runs from before
        # it was recorded read as uncensored
        "censored": summary.get("censored", [None] * len(summary["widths"])),
        "rank_bounds": summary.get("rank_bounds"),  # per layer the most rank it can have (None before it was recorded)
        "depth": family_.depth_of(initial_widths),
        "rank_measure": summary["rank_measure"],
        "ranks": ranks,
        "layer_ranks": summary["layer_ranks"],
        "network_rank_sum": sum(ranks),
        # as the original experiment printed it: the share of the hidden units the ranks account for
        "network_rank_normalized": sum(ranks) / sum(summary["widths"]),
        "network_rank_min": min(ranks),
        "rank_parameters": family_.parameter_count(input_shape, [max(r + o, 1 + o) for r, o in zip(ranks, offsets)], n_out),
        "parameters": summary["parameters"],
        "train_acc": summary["train_acc"],
        "val_acc": summary["val_acc"],
        "test_acc": summary["test_acc"],
        "train_loss": summary["train_loss"],
        "test_loss": summary["test_loss"],
        "generalisation_gap": summary["generalisation_gap"],
        "epochs": summary["epochs"],
        "iterations": summary["iterations"],
        "stop_reason": summary["stop_reason"],
        "cumulative_seconds": summary["cumulative_seconds"],
        "cumulative_flops": summary["cumulative_flops"],
        "run_folder": str(run_folder),
        **_task_outcomes(summary),
    }


def _task_outcomes(summary: dict) -> dict:
    """The task probes' outcomes a depth recorded (evolve.loop.TASK_OUTCOMES), and memorisation: accuracy on the
    changed rows above what a network that memorised none of them scores (probes/memorisation.py)."""
    from rankprune.evolve.loop import TASK_OUTCOMES
    from rankprune.evolve.scratch import SCRATCH_KEYS

    # the scratch control (--scratch, evolve/scratch.py) where the depth trained one
    out = {k: summary[k] for k in (*TASK_OUTCOMES, *SCRATCH_KEYS) if summary.get(k) is not None}
    if "train_acc_relabelled" in out and "train_acc_relabelled_chance" in out:
        out["memorisation"] = out["train_acc_relabelled"] - out["train_acc_relabelled_chance"]
    return out


def censored_layers(trial, mode: str) -> list[str | None]:
    """Per hidden layer of a finished trial (a dict or a row of classes.trials_frame), why its result is a bound
    and not a measurement, else None; how tables mark it '>= N' and figures with their censored marker.

    An evolve trial's result is its chosen widths (the convergent rank): its "censored" attribute says per layer
    whether a width never shrank below its start ("initial") or equals its incoming matrix's columns ("input").
    A survey never shrinks, so that attribute marks every width "initial": its widths are the sampled ones, and
    its result is the rank measured at them, which is a bound only where a layer's rank reached its width (every
    unit used: the layer might use more), or its rank bound (`rank_bounds`: the incoming matrix's columns, 64 for
    digits' first layer; "input"), which bounds the rank whatever the width. Trials from before censoring was
    recorded read as uncensored, and those from before rank_bounds by their widths alone."""
    marks = trial.get("censored")
    marks = list(marks) if isinstance(marks, (list, tuple)) else []
    widths = list(trial.get("widths") or [])
    marks += [None] * (len(widths) - len(marks))
    if mode != "survey":
        return marks[:len(widths)]
    ranks = trial.get("ranks")
    ranks = list(ranks) if isinstance(ranks, (list, tuple)) else []
    bounds = trial.get("rank_bounds")
    bounds = list(bounds) if isinstance(bounds, (list, tuple)) else []

    def why(i: int, mark: str | None) -> str | None:
        rank = ranks[i] if i < len(ranks) else None
        if rank is None:
            return None
        if rank >= widths[i]:
            return mark
        return "input" if i < len(bounds) and bounds[i] is not None and rank >= bounds[i] else None

    return [why(i, mark) for i, mark in enumerate(marks[:len(widths)])]


def censored_members(frame, classes, mode: str) -> dict[int, str]:
    """Class id -> its censored members (censored_layers) with their results marked, '#3 [>= 64, 30]': an evolve
    trial's widths, a survey trial's ranks; '' for a class without any. `frame` as classes.trials_frame builds it,
    `classes` its class ids (classes.equivalence_classes)."""
    from rankprune.units import widths_text

    out: dict[int, list[str]] = {}
    for r, cid in zip(frame.to_dict("records"), classes):
        out.setdefault(int(cid), [])
        marks = censored_layers(r, mode)
        if any(marks):
            result = r["ranks"] if mode == "survey" else r["widths"]
            out[int(cid)].append(f"#{r['number']} {widths_text([_whole(v) for v in result], marks)}")
    return {cid: ", ".join(members) for cid, members in out.items()}


def _whole(v) -> str:
    """A rank or width as written in a table: whole numbers without '.0'; a diverged network's rank (None, NaN) as nan."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    return str(int(v)) if float(v).is_integer() else f"{v:.3g}"


def mark_asked(trial: optuna.Trial, storage: optuna.storages.BaseStorage | None = None) -> optuna.Trial:
    """The worker's name on a trial it has just asked for, before anything slow: a RUNNING trial without any user
    attribute past the grace period is one whose worker died inside ask() (heartbeats.fail_unstarted). With the
    `storage` of a batched worker, the trial's first heartbeat goes out before the name, so that a worker killed
    between the two leaves a trial one rule or the other judges (optimize() sends its first beat at once itself)."""
    if storage is not None and heartbeat_interval(storage):
        study_id = storage.get_study_id_from_name(trial.study.study_name)
        record_heartbeat(storage, storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))
    if "worker" not in trial.user_attrs:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    return trial


class _Trials:
    """How a trial is made and concluded, shared by one-at-a-time (Optuna's optimize) and batched (ask/tell)
    running: `prepare` samples its config and opens its run folder's settings, `conclude` turns its depth's
    summary into user attributes and the objective values."""

    def __init__(self, spec: StudySpec, root: Path, study_name: str, on_trial: Callable[[int, dict], None] | None = None,
                 artifacts: tuple[str, Any] | None = None):
        self.spec, self.root, self.study_name, self.on_trial = spec, root, study_name, on_trial
        self.artifacts = artifacts  # (URL, store) of an Optuna artifact store each run folder is uploaded to, or None
        self.cache: dict[tuple, Any] = {}

    def _data(self, cfg: RunConfig):
        """Trials sharing a dataset and data seed share its tensors (and so can share a batch)."""
        from rankprune.job import load_data

        key = (cfg.data, cfg.data_seed, cfg.device)
        if key not in self.cache:
            if len(self.cache) >= 4:
                self.cache.clear()
            self.cache[key] = load_data(cfg)
        return self.cache[key]

    def prepare(self, trial: optuna.Trial):
        """The trial's job (job.Prepared), through the lifecycle's checks: its folder, data, the family's inputs,
        the probes, the network's size. TrialFailed, with the reason in the trial, where it cannot run."""
        from rankprune.evolve import starting_widths
        from rankprune.job import Job, prepare

        mark_asked(trial)
        try:
            cfg, widths = sample_trial(trial, self.spec)
            data = self._data(cfg.resolved())  # --params leaves cfg unresolved; the data need its sequence length
            widths = widths or starting_widths(cfg, data, cfg.evolve.layers[0])
            folder = self.root / "studies" / self.study_name / f"trial-{trial.number:04d}"
            trial.set_user_attr("initial_widths", widths)
            trial.set_user_attr("run_folder", stored_folder(folder, self.root))
            # which worker ran it, and where its artifact root was mounted there (the run folder is relative to it)
            trial.set_user_attr("artifact_root", str(Path(self.root).resolve()))
            job = Job(cfg, folder, overwrite=True, provenance={"study": self.spec.name, "trial": trial.number},
                      initial_widths=tuple(widths))
            [ready] = prepare([job], data)
        except (TrialFailed, ConfigError) as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise TrialFailed(str(exc)) from None
        return ready

    def conclude(self, trial: optuna.Trial, cfg: RunConfig, data, run, summary: dict):
        if summary["stop_reason"] == "diverged" and summary["iterations"] == 1:
            trial.set_user_attr("fail_reason", "diverged: the training loss became NaN or infinite")
            raise TrialFailed("diverged: the training loss became NaN or infinite")
        attrs = trial_attributes(summary, cfg.model.family, data.input_shape, data.n_classes, stored_folder(run.path, self.root))
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        if self.artifacts is not None:
            self._upload(trial, run.path)
        if self.on_trial is not None:
            self.on_trial(trial.number, attrs)
        objectives = self.spec.objectives
        return tuple(attrs[o.metric] for o in objectives) if len(objectives) > 1 else attrs[objectives[0].metric]

    def _upload(self, trial: optuna.Trial, folder: Path) -> None:
        """The run folder into the artifact store, before the trial is told: a trial COMPLETE in the storage has its
        folder where every reader can fetch it. A store that refuses it fails the trial, with the reason (the folder
        stays on this machine)."""
        from rankprune.artifacts import upload_run

        url, store = self.artifacts
        try:
            upload_run(trial, store, url, folder)
        except optuna.exceptions.UpdateFinishedTrialError:
            raise
        except Exception as exc:  # boto3's own errors (credentials, endpoint, a bucket that is not there) among them
            reason = f"its run folder could not be uploaded to {url}: {type(exc).__name__}: {_first_line(exc)}"
            trial.set_user_attr("fail_reason", reason)
            raise TrialFailed(reason) from None


def make_objective(spec: StudySpec, root: Path, study_name: str, on_trial: Callable[[int, dict], None] | None = None,
                   artifacts: tuple[str, Any] | None = None):
    from rankprune.job import execute

    trials = _Trials(spec, root, study_name, on_trial, artifacts)

    def objective(trial: optuna.Trial):
        ready = trials.prepare(trial)
        try:
            [[result]] = execute([ready.job], prepared=[ready])
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: Optuna marks the trial failed and stops the study
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C or SIGTERM) before it finished")
            raise
        except BaseException as exc:
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {_first_line(exc)}")
            raise
        return trials.conclude(trial, ready.config, ready.data, ready.run, result.summary)

    return objective


def _cell_of(trial) -> tuple:
    """A grid trial's cell: its parameters (an enqueued, not yet started retry: the ones it was given)."""
    params = trial.params or trial.system_attrs.get("fixed_params", {})
    return tuple(sorted(params.items()))


def _grid_cells(spec: StudySpec) -> int:
    return math.prod(len(v) for v in _grid(spec).values())


def complete_trials(study: optuna.Study) -> int:
    """How many COMPLETE trials the study holds, whichever worker ran them (read from the storage)."""
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


class _Goal:
    """When a run stops: after `n_trials` trials of this process, once the study holds `until` COMPLETE trials
    (counted in the storage before each trial or batch, so other workers' trials count too), or, with `until`
    and no trial cap, after FAILED_IN_A_ROW failed trials in a row (a whole batch if that is larger)."""

    def __init__(self, n_trials: int | None, until: int | None, batch: int):
        self.n_trials, self.until = n_trials, until
        self.patience = max(FAILED_IN_A_ROW, batch) if n_trials is None else None
        self.ran = self.failed_in_a_row = 0
        self.last_failure = ""

    def left(self, study: optuna.Study) -> int:
        """Trials this process may still ask for now."""
        if self.patience is not None and self.failed_in_a_row >= self.patience:
            return 0
        caps = [] if self.n_trials is None else [self.n_trials - self.ran]
        if self.until is not None:
            caps.append(self.until - complete_trials(study))
        return max(0, min(caps))

    def record(self, trial: optuna.trial.FrozenTrial) -> None:
        self.ran += 1
        if trial.state == optuna.trial.TrialState.COMPLETE:
            self.failed_in_a_row = 0
        else:
            self.failed_in_a_row += 1
            self.last_failure = str(trial.user_attrs.get("fail_reason", trial.state.name.lower()))

    def check(self, study: optuna.Study) -> None:
        """StudyStalled if the run stopped because its trials kept failing."""
        if self.patience is not None and self.failed_in_a_row >= self.patience:
            raise StudyStalled(f"the last {self.failed_in_a_row} trials all failed (the last: {self.last_failure}); "
                               f"the study holds {complete_trials(study)} of the {self.until} complete trials asked for")


def retry_interrupted(study: optuna.Study) -> list[int]:
    """Enqueue a retry of every trial that Ctrl-C or SIGTERM failed (its fail_reason starts with INTERRUPTED), or that
    failed with no reason at all, which is how Optuna's fail_stale_trials fails a trial whose worker was killed
    outright (its heartbeats stopped; every failure rankprune tells carries a reason), and that has none yet: the
    same parameters, user attribute retry_of = its number. Each is retried once; a retry that is interrupted or
    killed in turn gets a retry of its own. The retries are new trials with run folders of their own, run before
    any new point (Optuna pops enqueued trials first). Returns the numbers of the retried trials."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}  # WAITING retries (enqueued, not yet run) included
    numbers, lost = [], []
    for t in trials:
        reason = t.user_attrs.get("fail_reason")
        if (t.state == optuna.trial.TrialState.FAIL and (reason is None or str(reason).startswith(INTERRUPTED))
                and t.number not in retried):
            if not t.params:  # killed between its ask and its parameters: which cell it held is found below
                lost.append(t)
                continue
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            numbers.append(t.number)
    for t in lost:
        # A grid trial killed before its parameters were drawn spent its grid number (GridSampler counts a finished
        # trial's number as visited), and no trial holds that cell's parameters. Its retry carries the same number,
        # as Optuna's RetryFailedTrialCallback carries a trial's system attributes, so the sampler draws that cell.
        # (Taking "a cell no trial holds" instead ran one cell twice and left another never run: such cells include
        # those the sampler has yet to hand out.)
        if "grid_id" not in t.system_attrs:
            continue  # killed before the sampler numbered it: it spent nothing
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING, user_attrs={"retry_of": t.number},
            system_attrs={k: t.system_attrs[k] for k in ("grid_id", "search_space") if k in t.system_attrs}))
        numbers.append(t.number)
    return numbers


def optimize_batched(study: optuna.Study, spec: StudySpec, root: Path, study_name: str, n_trials: int | None, batch: int,
                     max_members: int | None = None, callbacks: list | None = None, on_trial=None,
                     until: int | None = None, storage: optuna.storages.BaseStorage | None = None,
                     artifacts: tuple[str, Any] | None = None) -> None:
    """Run n_trials trials (or until the study holds `until` complete ones: _Goal) `batch` at a time: ask Optuna
    for a batch of trials, make each one's network, train every trial of one depth together
    (evolve_depth_together: members of one family and batch key share each step), and tell Optuna each result.
    Every trial keeps its own run folder and user attributes; a trial that diverges or cannot run fails alone.
    A batch asks for no more trials than are left to run, and a grid study for no more than it has cells left.
    Ctrl-C or SIGTERM fails every asked trial not yet told, whatever depth it was waiting in. With the `storage` the
    study was opened on, every asked trial sends heartbeats until it is told (_Heartbeats). `artifacts`: (URL, store)
    of an Optuna artifact store every finished trial's run folder is uploaded to (artifacts.upload_run)."""
    trials = _Trials(spec, root, study_name, on_trial, artifacts)
    goal = _Goal(n_trials, until, batch)
    grid = spec.sampler == "grid"

    def cells_left() -> int:
        """A grid's cells no trial holds, counted again before every batch: other workers take cells meanwhile, and
        once none is left GridSampler hands out the cells of RUNNING trials again, a dead worker's included (a cell
        run two or three times). A failed trial still holds its cell: an interrupted or killed one is run again
        only by its retry (retry_interrupted, counted here while it is WAITING), never by the sampler as well."""
        all_ = study.get_trials(deepcopy=False)
        holding = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.PRUNED,
                   optuna.trial.TrialState.FAIL)
        taken = {_cell_of(t) for t in all_ if t.state in holding} - {()}
        # A numbered trial without parameters (asked, killed before its first one) holds a cell no parameters name,
        # until its retry (which carries its number: retry_interrupted) has drawn them.
        drawn = {t.user_attrs.get("retry_of") for t in all_ if t.params}
        unnamed = sum(1 for t in all_ if t.state in holding and not _cell_of(t) and "grid_id" in t.system_attrs
                      and t.number not in drawn)
        waiting = sum(1 for t in all_ if t.state == optuna.trial.TrialState.WAITING)
        return max(0, _grid_cells(spec) - len(taken) - unnamed) + waiting

    told: set[int] = set()

    def tell(trial, **kw):
        # skip_if_finished: a trial another worker failed meanwhile (its heartbeats were judged stopped, and it is
        # retried) stays as that worker left it. A grid's stop outside optimize() is _GridWithRetries'.
        frozen = study.tell(trial, skip_if_finished=True, **kw)
        told.add(trial.number)
        goal.record(frozen)
        for callback in callbacks or []:
            callback(study, frozen)

    def fail(trials_: list, reason: str) -> None:
        for trial in trials_:
            if trial.number not in told:
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # failed by another worker
                    trial.set_user_attr("fail_reason", reason)
                tell(trial, state=optuna.trial.TrialState.FAIL)

    with warnings.catch_warnings():
        # Optuna warns that heartbeats run only inside optimize(); a batch's trials get ours (_Heartbeats).
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        while (left := min(goal.left(study), cells_left() if grid else goal.left(study))) > 0:
            asked = [mark_asked(study.ask(), storage) for _ in range(min(batch, left))]
            try:
                with _Heartbeats(storage, study.study_name, asked, told):
                    _run_asked(asked, trials, tell, fail, max_members)
            except BaseException as exc:  # the study stops, as optimize() stops on it; no asked trial stays RUNNING
                fail(asked, f"{INTERRUPTED} (Ctrl-C or SIGTERM) before it finished" if isinstance(exc, KeyboardInterrupt)
                     else f"{type(exc).__name__}: {_first_line(exc)}")
                raise
    goal.check(study)


class _Heartbeats:
    """Optuna's heartbeats for a batch's trials, which optimize() would send for one trial at a time: a thread records
    one for every asked trial not yet told, every heartbeat interval of the storage, through the storage's public
    record_heartbeat. A worker killed outright (SIGKILL, a scheduler's limit) then leaves trials whose heartbeats
    stop, which fail_stale_trials fails and run_study retries (retry_interrupted); without them its trials stayed
    RUNNING for ever. No storage heartbeat configured: nothing is sent."""

    def __init__(self, storage: optuna.storages.BaseStorage | None, study_name: str, asked: list, told: set[int]):
        import threading

        self.storage = storage
        self.interval = heartbeat_interval(storage)
        self.told, self.stop = told, threading.Event()
        study_id = storage.get_study_id_from_name(study_name) if self.interval else None
        self.ids = {t.number: self.storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
                    for t in asked} if self.interval else {}
        self.thread = threading.Thread(target=self._beat, daemon=True, name="rankprune-heartbeats")

    def _beat_once(self) -> None:
        for number, trial_id in self.ids.items():
            if number not in self.told:
                try:
                    record_heartbeat(self.storage, trial_id)
                except Exception:  # a storage gone away: the trials' own tell will say so
                    pass

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            self._beat_once()

    def __enter__(self) -> "_Heartbeats":
        if self.interval:
            # The first heartbeat at once, before any work: Optuna finds stale only a trial that has sent one, so a
            # worker killed before its first would have left the trial RUNNING for ever.
            self._beat_once()
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


def _run_asked(asked: list, trials: _Trials, tell, fail, max_members: int | None) -> None:
    """One batch of asked trials: make each, train each depth's together, tell each its result."""
    from rankprune.job import DiskError, execute

    ready = []
    for trial in asked:
        try:
            ready.append((trial, trials.prepare(trial)))
        except TrialFailed:
            tell(trial, state=optuna.trial.TrialState.FAIL)
    by_depth: dict[int, list] = {}
    for trial, p in ready:
        by_depth.setdefault((p.job.config.model.family, len(p.job.initial_widths)), []).append((trial, p))
    for group in by_depth.values():
        try:
            results = execute([p.job for _, p in group], prepared=[p for _, p in group], max_members=max_members)
        except (DiskError, KeyboardInterrupt):
            raise  # the study stops: every later trial would meet the same disk
        except Exception as exc:  # one batch's error fails its trials, not the study
            fail([trial for trial, _ in group], f"{type(exc).__name__}: {_first_line(exc)}")
            continue
        for (trial, p), [result] in zip(group, results):
            try:
                tell(trial, values=trials.conclude(trial, p.config, p.data, p.run, result.summary))
            except TrialFailed:
                tell(trial, state=optuna.trial.TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                # Another worker failed it while it trained (its heartbeats were judged stopped: a paused worker,
                # clocks apart) and retries it; its run folder keeps what it finished, the storage the retry's result.
                tell(trial, state=optuna.trial.TrialState.FAIL)


def sampler_seed(spec: StudySpec, storage_url: str, seed: int | None, existing_trials: int = 0) -> int:
    """The seed this worker's sampler gets.

    The base is --seed, else the file's seed, so a study is reproducible from its file and the
    sequence of commands that ran it. A study continued in a new process mixes in how many trials it
    already holds: re-seeded alike, the sampler would draw its first points again (random and TPE's
    start-up trials), repeating finished trials. On a server storage several workers share one study
    at once, so each also mixes in its host and process id.

    The grid sampler takes the base seed alone: it shuffles its cells by the seed and numbers them in that
    order, so every process of a study must shuffle alike or the numbers name other cells (cells run twice,
    others never); it draws no points, so there is nothing to repeat.
    """
    base = spec.seed if seed is None else seed
    if SAMPLER_ALIASES.get(spec.sampler.lower(), spec.sampler) == "GridSampler":
        return base
    keys = [base, existing_trials]
    if seed is None and not storage_url.startswith("sqlite"):
        keys += [os.getpid(), *socket.gethostname().encode()]
    if keys == [base, 0]:
        return base  # a new study from its file: the file's seed as written
    return int(np.random.SeedSequence(keys).generate_state(1)[0] & 0x7FFFFFFF)


def check_grid_seed(study: optuna.Study, spec: StudySpec, seed: int) -> None:
    """A grid study numbers its cells in the order its seed shuffles them, and every worker must number them alike:
    the first worker records the seed (user attribute grid_seed), and a worker given another one is refused in one
    line. Two workers of one grid at --seed 0 and --seed 1 ran 7 of 24 cells twice and 6 never (issue 22's grid)."""
    if SAMPLER_ALIASES.get(spec.sampler.lower(), spec.sampler) != "GridSampler":
        return
    recorded = study.user_attrs.get("grid_seed")
    if recorded is None:
        study.set_user_attr("grid_seed", seed)
    elif recorded != seed:
        raise ConfigError(f"study {study.study_name!r} numbers its grid's cells by seed {recorded}; --seed {seed} would "
                          f"number them otherwise (cells run twice, others never): give --seed {recorded} or leave it out "
                          "where the file's seed is that")


def check_choices_unchanged(study: optuna.Study, spec: StudySpec, storage_url: str) -> None:
    """A one-line ConfigError where the file gives a parameter other choices than the study's trials were run over
    (a wider grid, more seeds in a suite): Optuna refuses to change a categorical parameter's choices within a
    study, and would otherwise fail the first new trial with a traceback."""
    stored: dict[str, tuple] = {}
    for t in study.get_trials(deepcopy=False):
        for name, dist in t.distributions.items():
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                stored.setdefault(name, tuple(dist.choices))
    for key, value in spec.space.items():
        if isinstance(value, dict) and "choices" in value and key in stored and tuple(value["choices"]) != stored[key]:
            raise ConfigError(
                f"study {study.study_name!r} in {_redact(storage_url)} ran {key} over {list(stored[key])}; this file gives "
                f"{list(value['choices'])}, and an Optuna study cannot change a parameter's choices: run the new grid "
                "as a study of its own (another study.name), or go back to the study's choices")


def run_study(
    spec: StudySpec, storage_url: str, root: Path, n_trials: int | None = None, study_name: str | None = None,
    seed: int | None = None, callbacks: list | None = None, on_trial=None, batch: int = 1, max_members: int | None = None,
    until: int | None = None, allow_other_tables: bool = False,
    on_start: Callable[[int, list[int]], None] | None = None, artifact_store: str | None = None,
) -> optuna.Study:
    """Create or resume the study and run trials in this process: n_trials of them, or until the study holds
    `until` COMPLETE trials in all (with both, whichever comes first; with neither, the file's n_trials). With
    batch > 1, that many at a time trained together (optimize_batched).

    Trials that an earlier run's Ctrl-C or SIGTERM failed are retried first, once each (retry_interrupted); the
    retries count among the trials run. `on_start(planned, retried)` is called before the first trial with the
    number of trials planned (with `until`, those still missing; failures add more) and the retried trials'
    numbers. StudyStalled where `until` without n_trials stops because its trials keep failing.

    `artifact_store` (a folder, file:PATH or s3://BUCKET[/PREFIX]: rankprune.artifacts) uploads every finished trial's
    run folder to that Optuna artifact store, so that readers without the artifact root fetch it from there."""
    if n_trials is None and until is None:
        n_trials = spec.n_trials
    artifacts = None
    if artifact_store is not None:  # a store it cannot open: one line before the study is touched
        from rankprune.artifacts import open_store, store_url

        artifacts = (store_url(artifact_store), open_store(artifact_store, create=True))
    storage = open_storage(storage_url, spec.heartbeat_interval, spec.grace_period, allow_other_tables)
    study_name = study_name or spec.name
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        directions=[o.direction for o in spec.objectives],
        load_if_exists=True,
    )
    check_choices_unchanged(study, spec, storage_url)
    chosen_seed = sampler_seed(spec, storage_url, seed, len(study.get_trials(deepcopy=False)))
    check_grid_seed(study, spec, chosen_seed)
    study.sampler = make_sampler(spec, chosen_seed)
    study.set_metric_names([o.metric for o in spec.objectives])
    study.set_user_attr("mode", spec.mode)
    study.set_user_attr("space", spec.space)
    check_artifact_store(study, artifacts)
    fail_stale_trials(study, storage)  # a killed worker's trials, whose heartbeats stopped: FAIL
    planned = _Goal(n_trials, until, batch).left(study)
    retried = retry_interrupted(study) if planned > 0 else []
    if on_start is not None:
        on_start(planned, retried)
    if planned == 0:
        return study
    if batch > 1 or spec.sampler == "grid" or isinstance(storage, HeartbeatJournal):
        # A grid goes through the batched runner even one trial at a time: it counts the cells no trial holds before
        # every ask, where optimize() would let GridSampler hand out a cell a dead worker's RUNNING trial holds (it
        # re-runs running cells once none is left), and that cell then ran twice or three times (three workers,
        # one killed: tests/test_postgres.py). A journal's trials get their heartbeats only there (_Heartbeats):
        # optimize() sends Optuna's, which only its RDB storage keeps.
        optimize_batched(study, spec, root, study_name, n_trials, batch, max_members, callbacks, on_trial, until, storage,
                         artifacts)
        return study
    goal = _Goal(n_trials, until, batch)

    def stop_when_done(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        goal.record(trial)
        if goal.left(study) == 0:
            study.stop()

    study.optimize(make_objective(spec, root, study_name, on_trial, artifacts), n_trials=n_trials, catch=(TrialFailed,),
                   callbacks=[*(callbacks or []), stop_when_done])
    goal.check(study)
    return study
