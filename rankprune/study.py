"""Optuna studies over initial architectures: the search space from a TOML file, the objective,
the storage, and the per-trial attributes that make convergent ranks comparable across networks.

A study file (see studies/*.toml) has these tables:

    [study]       name, mode ("survey" | "evolve"), sampler, seed, n_trials, objectives
    [base]        fixed parts of the run config, the same tables as `rankprune evolve --config`
    [space]       what each trial samples: depth, width, width_profile, and dotted config keys
                  ("train.lr", "evolve.wd_decay", "rank.measure", "seed", ...)
    [storage]     heartbeat_interval, grace_period (seconds)

A space entry is a fixed value, ``{ choices = [...] }``, or ``{ low = L, high = H, log = true,
step = S }`` (integers when low and high are both integers).

`survey` trains each sampled network once to saturation and measures its ranks (the controller
with one iteration); `evolve` runs the controller to its fixed point. Either way a trial leaves an
ordinary run folder under ROOT/studies/NAME/trial-NNNN.
"""

from __future__ import annotations

import contextlib
import dataclasses
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

__all__ = [
    "StudySpec",
    "TrialFailed",
    "parse_spec",
    "open_storage",
    "default_storage",
    "make_sampler",
    "sample_trial",
    "trial_attributes",
    "run_study",
    "load_study",
    "METRICS",
]

MODES = ("survey", "evolve")
PROFILES = ("constant", "funnel", "expand", "independent")
# Objective metrics: user attributes every finished trial has.
METRICS = (
    "test_acc", "val_acc", "train_acc", "test_loss", "train_loss", "generalisation_gap",
    "network_rank_sum", "network_rank_normalized", "network_rank_min", "rank_parameters",
    "parameters", "cumulative_seconds", "cumulative_flops", "epochs",
)
SAMPLER_ALIASES = {
    "tpe": "TPESampler", "random": "RandomSampler", "grid": "GridSampler", "nsga2": "NSGAIISampler",
    "nsga3": "NSGAIIISampler", "qmc": "QMCSampler", "cmaes": "CmaEsSampler", "gp": "GPSampler",
}
ARCHITECTURE_KEYS = ("depth", "width", "width_profile")


class TrialFailed(Exception):
    """A trial that cannot produce a result (invalid architecture, diverged); the study goes on."""


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
    name = study.get("name") or Path(path).stem
    mode = study.get("mode", "survey")
    if mode not in MODES:
        raise ConfigError(f"{where}: unknown mode {mode!r}; choose from {', '.join(MODES)}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"{where}: study name {name!r} may hold only letters, digits, '.', '_' and '-'")

    objectives = []
    for obj in study.get("objectives", [{"metric": "test_acc", "direction": "maximize"}]):
        if not isinstance(obj, dict) or set(obj) != {"metric", "direction"}:
            raise ConfigError(f"{where}: each objective is {{metric = ..., direction = ...}}")
        if obj["metric"] not in METRICS:
            raise ConfigError(f"{where}: unknown objective metric {obj['metric']!r}; choose from {', '.join(METRICS)}")
        if obj["direction"] not in ("maximize", "minimize"):
            raise ConfigError(f"{where}: objective direction must be maximize or minimize, got {obj['direction']!r}")
        objectives.append(Objective(obj["metric"], obj["direction"]))
    if not objectives:
        raise ConfigError(f"{where}: give at least one objective")

    if "depth" not in space:
        raise ConfigError(f"{where}: space.depth is required (a number or a distribution)")
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

    spec = StudySpec(
        name=name, mode=mode, objectives=tuple(objectives), base=base, space=space,
        sampler=study.get("sampler", "tpe"), sampler_options=study.get("sampler_options", {}),
        seed=int(study.get("seed", 0)), n_trials=int(study.get("n_trials", 10)),
        heartbeat_interval=int(storage.get("heartbeat_interval", 60)), grace_period=int(storage.get("grace_period", 180)),
    )
    make_sampler(spec, spec.seed)  # an unknown sampler or an ungriddable space fails here, before any study
    return spec


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


def _widths(depth: int, width: int, profile: str, trial: optuna.Trial, space: dict) -> list[int]:
    if profile == "constant":
        return [width] * depth
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
    depth = int(_suggest(trial, "depth", spec.space["depth"]))
    profile = _suggest(trial, "width_profile", spec.space.get("width_profile", "constant"))
    width = int(_suggest(trial, "width", spec.space["width"])) if "width" in spec.space else None
    changes: dict[str, dict] = {}
    top: dict[str, Any] = {}
    for key, value in spec.space.items():
        if key in ARCHITECTURE_KEYS:
            continue
        value = _suggest(trial, key, value)
        section, _, field_name = key.rpartition(".")
        if section:
            changes.setdefault(section, {})[field_name] = value
        else:
            top[field_name] = value
    cfg = RunConfig.from_dict(spec.base)
    if spec.mode == "survey":
        changes.setdefault("evolve", {})["max_iterations"] = 1
    changes.setdefault("evolve", {})["layers"] = (depth,)
    try:
        cfg = cfg.replace(**changes, **top).validate()
    except ConfigError as exc:
        raise TrialFailed(f"invalid configuration: {exc}") from None
    if cfg.model.params is not None:
        if depth < 1:
            raise TrialFailed(f"invalid architecture: depth {depth}")
        return cfg, None
    cfg = cfg.resolved()
    widths = _widths(depth, width if width is not None else cfg.model.width, profile, trial, spec.space)
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
    try:
        return cls(seed=seed, **options)
    except TypeError as exc:
        raise ConfigError(f"sampler {name}: {exc}") from None


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


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None) -> optuna.storages.RDBStorage:
    """An RDBStorage for any SQLAlchemy URL; a URL that cannot be opened is a one-line ConfigError.

    Workers that start together on an empty database race to create Optuna's tables, and the loser
    gets a duplicate-object error; the tables exist by then, so it simply tries again.
    """
    import sqlalchemy.exc

    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
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


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def load_study(name: str, storage: str, read_only: bool = False) -> optuna.Study:
    """An existing study. `read_only`: a SQLite file that does not exist is an error, never created."""
    if read_only and storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"no study storage at {storage.removeprefix('sqlite:///')}; pass --storage URL or --root")
    st = open_storage(storage)
    try:
        return optuna.load_study(study_name=name, storage=st)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(st)]
        raise ConfigError(f"no study {name!r} in {_redact(storage)}; it has: {', '.join(names) or 'none'}") from None


# --- the objective ----------------------------------------------------------------------------
def trial_attributes(summary: dict, family: str, input_shape: tuple[int, ...], n_out: int, run_folder: Path) -> dict:
    """What a finished trial records: the convergent rank in forms comparable across architectures."""
    from rankprune.models import get_family

    ranks = [int(math.ceil(r - 1e-9)) for r in summary["ranks"]]
    initial_widths = summary["initial_widths"]
    return {
        "family": family,
        "initial_widths": initial_widths,
        "widths": summary["widths"],
        "depth": len(initial_widths),
        "rank_measure": summary["rank_measure"],
        "ranks": ranks,
        "layer_ranks": summary["layer_ranks"],
        "network_rank_sum": sum(ranks),
        # as the original experiment printed it: the share of the hidden units the ranks account for
        "network_rank_normalized": sum(ranks) / sum(summary["widths"]),
        "network_rank_min": min(ranks),
        "rank_parameters": get_family(family).parameter_count(input_shape, [max(r, 1) for r in ranks], n_out),
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
    }


class _Trials:
    """How a trial is made and concluded, shared by one-at-a-time (Optuna's optimize) and batched (ask/tell)
    running: `prepare` samples its config and opens its run folder's settings, `conclude` turns its depth's
    summary into user attributes and the objective values."""

    def __init__(self, spec: StudySpec, root: Path, study_name: str, on_trial: Callable[[int, dict], None] | None = None):
        self.spec, self.root, self.study_name, self.on_trial = spec, root, study_name, on_trial
        self.cache: dict[tuple, Any] = {}

    def prepare(self, trial: optuna.Trial):
        """(config, data, initial widths, run folder) of a new trial; TrialFailed where it cannot run."""
        from rankprune import data as data_mod
        from rankprune.evolve import starting_widths
        from rankprune.models import get_family
        from rankprune.runfolder import RunFolder

        try:
            cfg, widths = sample_trial(trial, self.spec)
        except TrialFailed as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        key = (cfg.data, cfg.data_seed, cfg.device)
        if key not in self.cache:  # trials sharing a dataset and seed share its tensors (and can share a batch)
            if len(self.cache) >= 4:
                self.cache.clear()
            self.cache[key] = data_mod.load(cfg.data, cfg.data_seed, cfg.device)
        data = self.cache[key]
        run = RunFolder(self.root / "studies" / self.study_name / f"trial-{trial.number:04d}")
        try:  # a CNN on inputs without an image shape fails the trial, not the study
            get_family(cfg.model.family).check_input(data.input_shape)
        except ConfigError as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise TrialFailed(str(exc)) from None
        widths = widths or starting_widths(cfg, data, cfg.evolve.layers[0])
        trial.set_user_attr("initial_widths", widths)
        trial.set_user_attr("run_folder", str(run.path))
        return cfg, data, widths, run

    def session(self, trial: optuna.Trial, cfg: RunConfig, data, run):
        from rankprune.provenance import environment

        env = environment(cfg.device, cfg.seed) | {"study": self.spec.name, "trial": trial.number}
        return run.session(cfg.to_dict(), env, data.describe(), resume=False, overwrite=True)

    def conclude(self, trial: optuna.Trial, cfg: RunConfig, data, run, summary: dict):
        if summary["stop_reason"] == "diverged" and summary["iterations"] == 1:
            trial.set_user_attr("fail_reason", "diverged: the training loss became NaN or infinite")
            raise TrialFailed("diverged: the training loss became NaN or infinite")
        attrs = trial_attributes(summary, cfg.model.family, data.input_shape, data.n_classes, run.path)
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        if self.on_trial is not None:
            self.on_trial(trial.number, attrs)
        objectives = self.spec.objectives
        return tuple(attrs[o.metric] for o in objectives) if len(objectives) > 1 else attrs[objectives[0].metric]


def make_objective(spec: StudySpec, root: Path, study_name: str, on_trial: Callable[[int, dict], None] | None = None):
    from rankprune.evolve import NullReporter, evolve_depth

    trials = _Trials(spec, root, study_name, on_trial)

    def objective(trial: optuna.Trial):
        cfg, data, widths, run = trials.prepare(trial)
        try:
            with trials.session(trial, cfg, data, run):
                result = evolve_depth(cfg, data, run, len(widths), NullReporter(), initial_widths=widths)
                run.set_status("finished")
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: Optuna marks the trial failed and stops the study
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C or SIGTERM) before it finished")
            raise
        except BaseException as exc:
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {_first_line(exc)}")
            raise
        return trials.conclude(trial, cfg, data, run, result.summary)

    return objective


def _grid_cells(spec: StudySpec) -> int:
    return math.prod(len(v) for v in _grid(spec).values())


def optimize_batched(study: optuna.Study, spec: StudySpec, root: Path, study_name: str, n_trials: int, batch: int,
                     max_members: int | None = None, callbacks: list | None = None, on_trial=None) -> None:
    """Run n_trials trials `batch` at a time: ask Optuna for a batch of trials, make each one's network, train
    every trial of one depth together (evolve_depth_together: members of one family and batch key share each
    step), and tell Optuna each result. Every trial keeps its own run folder and user attributes; a trial that
    diverges or cannot run fails alone. A grid study asks for no more trials than it has cells left. Ctrl-C or
    SIGTERM fails every asked trial not yet told, whatever depth it was waiting in."""
    trials = _Trials(spec, root, study_name, on_trial)
    if spec.sampler == "grid":
        taken = sum(1 for t in study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.FAIL)
        n_trials = min(n_trials, max(0, _grid_cells(spec) - taken))
    done = 0

    told: set[int] = set()

    def tell(trial, **kw):
        # GridSampler stops the study from its after_trial once every cell is taken, which Optuna allows only inside
        # optimize(); the cap above already ends this loop there, so the stop is let through as it is in optimize.
        local = study._thread_local
        before, local.in_optimize_loop = local.in_optimize_loop, True
        try:
            frozen = study.tell(trial, **kw)
        finally:
            local.in_optimize_loop = before
        told.add(trial.number)
        for callback in callbacks or []:
            callback(study, frozen)

    def fail(trials_: list, reason: str) -> None:
        for trial in trials_:
            if trial.number not in told:
                trial.set_user_attr("fail_reason", reason)
                tell(trial, state=optuna.trial.TrialState.FAIL)

    with warnings.catch_warnings():
        # Optuna warns that heartbeats run only inside optimize(); a batch's trials get none (README, Studies).
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        while done < n_trials:
            asked = [study.ask() for _ in range(min(batch, n_trials - done))]
            done += len(asked)
            try:
                _run_asked(asked, trials, tell, fail, max_members)
            except BaseException as exc:  # the study stops, as optimize() stops on it; no asked trial stays RUNNING
                fail(asked, "interrupted (Ctrl-C or SIGTERM) before it finished" if isinstance(exc, KeyboardInterrupt)
                     else f"{type(exc).__name__}: {_first_line(exc)}")
                raise


def _run_asked(asked: list, trials: _Trials, tell, fail, max_members: int | None) -> None:
    """One batch of asked trials: make each, train each depth's together, tell each its result."""
    from rankprune.evolve import Replica, evolve_depth_together

    ready = []
    for trial in asked:
        try:
            ready.append((trial, *trials.prepare(trial)))
        except TrialFailed:
            tell(trial, state=optuna.trial.TrialState.FAIL)
    by_depth: dict[int, list] = {}
    for item in ready:
        by_depth.setdefault(len(item[3]), []).append(item)
    for depth, group in by_depth.items():
        try:
            with contextlib.ExitStack() as stack:
                for trial, cfg, data, widths, run in group:
                    stack.enter_context(trials.session(trial, cfg, data, run))
                replicas = [Replica(cfg, data, run, initial_widths=widths) for _, cfg, data, widths, run in group]
                results = evolve_depth_together(replicas, depth, max_members)
                for _, _, _, _, run in group:
                    run.set_status("finished")
        except Exception as exc:  # one batch's error fails its trials, not the study
            fail([trial for trial, *_ in group], f"{type(exc).__name__}: {_first_line(exc)}")
            continue
        for (trial, cfg, data, _widths, run), result in zip(group, results):
            try:
                tell(trial, values=trials.conclude(trial, cfg, data, run, result.summary))
            except TrialFailed:
                tell(trial, state=optuna.trial.TrialState.FAIL)


def sampler_seed(spec: StudySpec, storage_url: str, seed: int | None, existing_trials: int = 0) -> int:
    """The seed this worker's sampler gets.

    The base is --seed, else the file's seed, so a study is reproducible from its file and the
    sequence of commands that ran it. A study continued in a new process mixes in how many trials it
    already holds: re-seeded alike, the sampler would draw its first points again (random and TPE's
    start-up trials), repeating finished trials. On a server storage several workers share one study
    at once, so each also mixes in its host and process id.
    """
    base = spec.seed if seed is None else seed
    keys = [base, existing_trials]
    if seed is None and not storage_url.startswith("sqlite"):
        keys += [os.getpid(), *socket.gethostname().encode()]
    if keys == [base, 0]:
        return base  # a new study from its file: the file's seed as written
    return int(np.random.SeedSequence(keys).generate_state(1)[0] & 0x7FFFFFFF)


def run_study(
    spec: StudySpec, storage_url: str, root: Path, n_trials: int, study_name: str | None = None,
    seed: int | None = None, callbacks: list | None = None, on_trial=None, batch: int = 1, max_members: int | None = None,
) -> optuna.Study:
    """Create or resume the study and run n_trials more trials in this process; with batch > 1, that many at a
    time trained together (optimize_batched)."""
    storage = open_storage(storage_url, spec.heartbeat_interval, spec.grace_period)
    study_name = study_name or spec.name
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        directions=[o.direction for o in spec.objectives],
        load_if_exists=True,
    )
    study.sampler = make_sampler(spec, sampler_seed(spec, storage_url, seed, len(study.get_trials(deepcopy=False))))
    study.set_metric_names([o.metric for o in spec.objectives])
    study.set_user_attr("mode", spec.mode)
    study.set_user_attr("space", spec.space)
    if batch > 1:
        optimize_batched(study, spec, root, study_name, n_trials, batch, max_members, callbacks, on_trial)
    else:
        study.optimize(make_objective(spec, root, study_name, on_trial), n_trials=n_trials, catch=(TrialFailed,), callbacks=callbacks)
    return study
