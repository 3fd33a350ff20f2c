"""One job, one lifecycle: the single path every run of the controller takes.

A Job says what to run and where: a resolved config, the folder its results go to, and how that folder may be
used (new, resumed, or overwritten). `execute(jobs)` runs one job, or several in lockstep (the seeds of
replicates, a batch of study trials), and is the only place that

  1. checks everything before anything is written: the config, each folder (new, resumable under the one resume
     rule, or a rankprune result to replace) and that it can be written, the data (loaded once per data
     config), the family's inputs, the probes, and every depth's network against the device's memory and the
     disk;
  2. holds each folder for the session (runfolder.RunFolder.session): its lock, config.json, environment.json,
     data.json and status.json, running -> finished | interrupted | failed;
  3. turns SIGTERM into an interrupt, as Ctrl-C is, so finished work is kept and the folder says interrupted;
  4. turns a disk error (a full disk, a read-only or failing file system) into a one-line DiskError, after the
     folder is marked failed with the reason and its lock released, leaving a folder `--resume` continues once
     the disk is fixed.

The command line (evolve, evolve --seeds, study run), the Python API, replicates and studies all call it.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Mapping, Sequence

from rankprune.config import ConfigError, RunConfig
from rankprune.runfolder import CONFIG, ENVIRONMENT, RESUMABLE, RunFolder, RunFolderError, config_key
from rankprune.sizing import NetworkSize, check_fits, free_disk, human_bytes, network_size

__all__ = ["Job", "Terminated", "DiskError", "execute", "prepare", "load_data", "resume_config", "stored_config",
           "interrupts_on_sigterm", "Prepared"]


@dataclass(frozen=True)
class Job:
    """What to run and where. `config` is the requested config; a resume continues the folder's stored config
    (resume_config says which requested settings may differ)."""

    config: RunConfig
    folder: Path
    resume: bool = False
    overwrite: bool = False
    tags: Mapping[str, Any] = field(default_factory=dict)  # columns every row starts with ({"seed": S})
    provenance: Mapping[str, Any] = field(default_factory=dict)  # added to environment.json (a study trial's name)
    initial_widths: tuple[int, ...] | None = None  # one depth's starting widths (a study's sample); None: the config's

    @property
    def key(self) -> str:
        """The hash of what the config computes (runfolder.config_key): the default folder's name ends with it."""
        return config_key(self.config.to_dict())


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is; the command line exits 143 (128 + SIGTERM) rather than 130."""


class DiskError(ConfigError):
    """The disk refused a write during a run (full, read-only, failing): one line; the run is marked failed."""


# --- the one resume rule ----------------------------------------------------------------------------------
def stored_config(folder: Path) -> RunConfig:
    """A run folder's config.json as a RunConfig; a truncated, foreign or mistyped one is a ConfigError."""
    run = RunFolder(folder)
    try:
        stored = run.read(CONFIG)
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"cannot resume {folder}: its {CONFIG} is not valid JSON (truncated or edited?)") from None
    except OSError as exc:
        raise ConfigError(f"cannot resume {folder}: cannot read its {CONFIG} ({exc.strerror or exc})") from None
    if not isinstance(stored, dict):
        raise ConfigError(f"cannot resume {folder}: its {CONFIG} is not a rankprune config")
    try:
        return RunConfig.from_stored(stored).validate()
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"cannot resume {folder}: its {CONFIG} is not a usable rankprune config ({exc})") from None


def resume_config(stored: RunConfig, requested: RunConfig, folder: Path,
                  names: Mapping[tuple[str | None, str], str] | None = None) -> RunConfig:
    """The config a resume continues under: the stored one, with the requested settings taken where they may
    change (runfolder.RESUMABLE: where the data lies, whether it may be downloaded, a larger iteration cap; and
    the device), and a ConfigError naming every other requested difference at once. `names` gives a setting's
    name as the user typed it (a flag); otherwise it is named section.key."""
    stored_d, requested_d = stored.to_dict(), requested.to_dict()
    conflicts, accepted = [], {}
    for section, values in requested_d.items():
        pairs = values.items() if isinstance(values, dict) else [(None, values)]
        for key, value in pairs:
            where = (section, key) if key is not None else (None, section)
            now = stored_d[section][key] if key is not None else stored_d[section]
            if value == now:
                continue
            name = (names or {}).get(where) or (f"{section}.{key}" if key is not None else section)
            if where == ("evolve", "max_iterations") and value < now:
                conflicts.append(f"{name} {value} (the run has {now}; it can only grow)")
            elif where in RESUMABLE:
                accepted.setdefault(section, {})[key] = value
            elif where == (None, "device"):
                accepted["device"] = value  # the same computation elsewhere; environment.json records each session's
            elif where != (None, "format_version"):
                conflicts.append(f"{name} {value} (the run has {now})")
    if conflicts:
        raise ConfigError(f"cannot resume {folder} with other settings: {'; '.join(conflicts)}; "
                          "drop them, or start a new run in another folder")
    return stored.replace(**accepted).validate()


# --- the checks, before anything is written ---------------------------------------------------------------
@dataclass
class Prepared:
    """A job that passed every check: its folder (checked, not yet written), the config it runs under, its data,
    and its starting networks."""

    job: Job
    run: RunFolder
    config: RunConfig
    changed: bool  # a resume whose config differs from the stored one (a RESUMABLE setting): config.json is rewritten
    data: Any  # data.Splits
    sizes: list[NetworkSize]
    notes: list[str] = field(default_factory=list)  # warnings to show before the run starts


def load_data(cfg: RunConfig):
    """The run's data (data.load, with the config's data seed); missing data is a one-line ConfigError."""
    from rankprune import data as data_mod

    try:
        return data_mod.load(cfg.data, cfg.data_seed, cfg.device)
    except data_mod.DataError as exc:
        hint = "" if cfg.data.dataset == "tensors" else "; give --data-dir DIR, or use --dataset digits offline"
        raise ConfigError(f"{exc}{hint}") from None


def _open(job: Job) -> tuple[RunFolder, RunConfig, bool, list[str]]:
    """The job's folder, checked for how it is to be used, and the config it runs under; writes nothing."""
    run = RunFolder.check(job.folder, resume=job.resume, overwrite=job.overwrite, tags=dict(job.tags))
    cfg = job.config.validate().resolved()
    if not job.resume:
        return run, cfg, False, []
    stored = stored_config(run.path)
    cfg = resume_config(stored.resolved(), cfg, run.path)
    notes = []
    started = (run.read(ENVIRONMENT, {}) or {}).get("torch_threads")
    import torch

    if started is not None and started != torch.get_num_threads():
        notes.append(f"{run.path} was started with {started} torch threads and this resume has {torch.get_num_threads()}: "
                     "sums are added in another order, so what is trained from here will not be bit-identical to an "
                     f"uninterrupted run (set OMP_NUM_THREADS={started} to match)")
    return run, cfg, cfg != stored.resolved(), notes


def _sizes(cfg: RunConfig, data, initial_widths: tuple[int, ...] | None) -> list[NetworkSize]:
    from rankprune.evolve import starting_widths

    if initial_widths is not None:
        return [network_size(cfg, data.input_shape, data.n_classes, list(initial_widths))]
    return [network_size(cfg, data.input_shape, data.n_classes, starting_widths(cfg, data, d)) for d in cfg.evolve.layers]


def prepare(jobs: Sequence[Job], data: Any = None) -> list[Prepared]:
    """Every check of `execute`, writing nothing: each folder and config, the data (`data`: one data.Splits for
    every job, a list of one per job, or None to load each distinct data config once), the family's inputs, the
    probes, and every starting network against the device's memory (all jobs at once, as lockstep holds them)
    and the disk. A ConfigError names the first problem."""
    from rankprune import data as data_mod
    from rankprune.models import get_family
    from rankprune.probes import check_probes

    given = list(data) if isinstance(data, (list, tuple)) else [data] * len(jobs)
    loaded: dict[tuple, Any] = {}
    prepared = []
    for job, splits in zip(jobs, given):
        run, cfg, changed, notes = _open(job)
        if splits is None:
            key = (cfg.data, cfg.data_seed, cfg.device)
            if key not in loaded:
                loaded[key] = load_data(cfg)
            splits = loaded[key]
        get_family(cfg.model.family).check_input(splits.input_shape)  # a CNN needs images
        depth = None if job.initial_widths is None else get_family(cfg.model.family).depth_of(list(job.initial_widths))
        if job.initial_widths is not None and [depth] != list(cfg.evolve.layers):
            raise ConfigError(f"initial widths {list(job.initial_widths)} need the one depth {depth}, "
                              f"not layers {list(cfg.evolve.layers)}")
        sizes = _sizes(cfg, splits, job.initial_widths)
        check_probes(cfg, min(s.parameters for s in sizes))
        from rankprune.scaling import lazy_decay_warning

        warnings = [w for w in (data_mod.small_validation_warning(splits), lazy_decay_warning(cfg)) if w]
        prepared.append(Prepared(job, run, cfg, changed, splits, sizes, notes + warnings))
    if prepared:
        _check_capacity(prepared)
    return prepared


def _check_capacity(prepared: list[Prepared]) -> None:
    """Refuse what cannot fit in memory (lockstep jobs hold their networks at once) and what the disk cannot hold
    (a note where the whole run's weights may not fit, an error where not even the first depth's can)."""
    devices = {p.config.device for p in prepared}
    for device in devices:
        mine = [p for p in prepared if p.config.device == device]
        check_fits([s for p in mine for s in p.sizes], len(mine), device)
    for p in prepared:
        free = free_disk(p.run.path)
        if free is None:
            continue
        first, total = p.sizes[0].disk, sum(s.disk for s in p.sizes)
        if first > free:
            raise ConfigError(f"{p.run.path}: the first depth's saved weights need about {human_bytes(first)} and its "
                              f"file system has {human_bytes(free)} free; free some space or give --out on another disk")
        if total > free:
            p.notes.append(f"the saved weights of every depth may need up to {human_bytes(total)} and {p.run.path}'s file "
                           f"system has {human_bytes(free)} free")


def describe_sizes(prepared: Prepared) -> str:
    """One line: every depth's starting widths and parameter count, and the memory and disk estimates."""
    parts = []
    for s in prepared.sizes[:6]:
        widths = s.widths if len(s.widths) <= 6 else f"[{s.widths[0]} x{len(s.widths)}]"
        parts.append(f"depth {s.depth} {widths} {s.parameters:,} parameters")
    if len(prepared.sizes) > 6:
        parts.append(f"... {len(prepared.sizes) - 6} more depths")
    memory = max(s.memory for s in prepared.sizes)
    disk = sum(s.disk for s in prepared.sizes)
    return (f"starting networks: {'; '.join(parts)}; about {human_bytes(memory)} of memory to train the largest, "
            f"at most {human_bytes(disk)} of saved weights")


# --- signals and disk errors --------------------------------------------------------------------------------
def _terminate(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def interrupts_on_sigterm() -> Iterator[None]:
    """SIGTERM (what `kill` and batch schedulers send) unwinds like Ctrl-C, so finished work is kept and the folder
    says interrupted; the handler before it is back afterwards (a notebook keeps its own). Outside the main
    thread, or inside an outer use of this, it changes nothing."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is _terminate:
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# errnos that say the disk, not the program, refused: full, over quota, read-only, failing, a file too large
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG, errno.EACCES, errno.EPERM}


def _disk_error(exc: OSError, folders: list[Path]) -> DiskError:
    where = exc.filename or (folders[0] if folders else "the run folder")
    kept = [f for f in folders if f.is_dir() and (f / CONFIG).is_file()]
    if not kept:  # the start failed and removed what it had made
        return DiskError(f"cannot write {where}: {exc.strerror or exc}; nothing was kept; once the disk has room (or "
                         "is writable), run the command again")
    named = ", ".join(str(f) for f in kept[:3]) + (f" and {len(kept) - 3} more" if len(kept) > 3 else "")
    return DiskError(f"cannot write {where}: {exc.strerror or exc}; {named} is marked failed and unlocked; once "
                     "the disk has room (or is writable), continue it with --resume")


# --- the one execute --------------------------------------------------------------------------------------
def execute(jobs: Sequence[Job], *, data: Any = None, reporters: Sequence | None = None,
            contexts: Sequence[Callable[[], ContextManager]] = (), max_members: int | None = None,
            say: Callable[[str], None] | None = None, warn: Callable[[str], None] | None = None,
            prepared: list[Prepared] | None = None) -> list[list]:
    """Run `jobs` (one, or several in lockstep) through the lifecycle and return each one's DepthResults.

    `data`: see prepare. `reporters`: one evolve.Reporter per job (a live view). `contexts`: factories of context
    managers entered once every check has passed and before any folder is written (the live view, a replicates
    folder's own lock and index). `say`: where the lines a user should see go (the folders, the starting networks,
    what an --overwrite removed); `warn`: where warnings go. `prepared`: the result of prepare(jobs) when the
    caller already ran the checks. Raises ConfigError (one line) for anything found before the run, DiskError for
    a disk that refuses a write during it, KeyboardInterrupt (Terminated for SIGTERM) when interrupted."""
    from rankprune.evolve import NullReporter, Replica, evolve_together
    from rankprune.provenance import environment

    with interrupts_on_sigterm():
        prepared = prepared if prepared is not None else prepare(jobs, data)
        for p in prepared:
            for note in p.notes:
                if warn is not None:
                    warn(note)
        if say is not None and len(prepared) == 1:
            say(f"run folder: {prepared[0].run.path}")
        if say is not None and prepared and all(p.sizes == prepared[0].sizes for p in prepared):
            say(describe_sizes(prepared[0]) + (f" (each of {len(prepared)} runs)" if len(prepared) > 1 else ""))
        folders = [p.run.path for p in prepared]
        try:
            with contextlib.ExitStack() as stack:
                for make in contexts:
                    stack.enter_context(make())
                replicas = []
                for i, p in enumerate(prepared):
                    env = environment(p.config.device, p.config.seed) | dict(p.job.provenance)
                    stack.enter_context(p.run.session(p.config.to_dict(), env, p.data.describe(), resume=p.job.resume,
                                                      overwrite=p.job.overwrite, config_changed=p.changed))
                    if p.run.replaced is not None and say is not None:
                        say(_replaced_line(p.run))
                    reporter = reporters[i] if reporters is not None else NullReporter()
                    initial = list(p.job.initial_widths) if p.job.initial_widths is not None else None
                    replicas.append(Replica(p.config, p.data, p.run, reporter, initial))
                return evolve_together(replicas, max_members)
        except OSError as exc:
            if exc.errno not in _DISK_ERRNOS:
                raise
            raise _disk_error(exc, folders) from None


def _replaced_line(run: RunFolder) -> str:
    removed, kept = run.replaced
    return replaced_line(run.path, removed, kept)


def replaced_line(path: Path, removed: list[Path], kept: list[Path]) -> str:
    """What an --overwrite did, in one line: how many of rankprune's files it removed, and the user's it kept."""
    line = f"--overwrite: removed the earlier result in {path} ({len(removed)} files of rankprune's)"
    if kept:
        names = ", ".join(str(f.relative_to(path)) for f in kept[:5]) + (f" and {len(kept) - 5} more" if len(kept) > 5 else "")
        line += f"; kept {len(kept)} file(s) that are not rankprune's: {names}"
    return line
