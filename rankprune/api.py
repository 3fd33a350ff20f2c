"""The Python API, for notebooks: run the controller on a RunConfig or on your own tensors, read a run's
tables as pandas DataFrames, and load a saved network that takes raw inputs.

    import rankprune as rp
    run = rp.run(rp.RunConfig().replace(data={"dataset": "digits"}, evolve={"layers": (1, 2)}))
    run.depths                              # one row per depth: widths, accuracies, cost
    net = rp.load_network(run.path, depth=2)

Every run leaves the same run folder as `rankprune evolve` (so `rankprune report` draws it), with the
same lock, lifecycle and provenance; user errors are ConfigError with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from rankprune.config import ConfigError, RunConfig
from rankprune.models import family_of
from rankprune.runfolder import CONFIG, DATA, DEPTHS, EPOCHS, ITERATIONS, SPECTRA, STATUS, RunFolder, default_run_folder

__all__ = ["Run", "Replicates", "NormalisedNetwork", "run", "run_seeds", "run_tensors", "open_run", "load_network"]


@dataclass(frozen=True)
class Run:
    """A run folder's results. Tables are read when first asked for; a run still being written shows
    what it has so far (open it again for more)."""

    path: Path

    @cached_property
    def config(self) -> RunConfig:
        return RunConfig.from_stored(RunFolder(self.path).read(CONFIG))

    @property
    def status(self) -> str:
        return (RunFolder(self.path).read(STATUS) or {}).get("state", "not started")

    @cached_property
    def depths(self) -> pd.DataFrame:
        """One row per finished depth: why it stopped, the chosen widths, accuracies, cumulative cost."""
        summaries = RunFolder(self.path).read(DEPTHS, {}) or {}
        return pd.DataFrame([summaries[k] for k in sorted(summaries, key=int)])

    @cached_property
    def iterations(self) -> pd.DataFrame:
        return RunFolder(self.path).table(ITERATIONS)

    @cached_property
    def epochs(self) -> pd.DataFrame:
        return RunFolder(self.path).table(EPOCHS)

    @cached_property
    def spectra(self) -> pd.DataFrame:
        return RunFolder(self.path).table(SPECTRA)

    def network(self, depth: int, iteration: int | None = None) -> "NormalisedNetwork":
        """The chosen network of a depth (or an iteration's), ready for raw inputs: see load_network."""
        return load_network(self.path, depth, iteration)


class NormalisedNetwork(nn.Module):
    """A trained network with the normalisation its run trained under: feed it raw inputs (pixels scaled to
    [0, 1], or your tensors as you gave them), any shape with the sample's number of values (flat rows are
    reshaped to the run's input shape); it returns logits.

    A transformer (--model transformer) reads sequences of tokens instead (tasks.tokens: each task-projected input
    beside the previous label): the normalisation comes before a task's projection, so it cannot be applied to
    tokens; give it `tokens(project((raw - mean) / std), labels, n_classes)` (mean, std are attributes here) and
    it passes them to the network as they are, returning logits (B, T, classes)."""

    def __init__(self, network: nn.Module, mean: float, std: float):
        super().__init__()
        self.network, self.mean, self.std = network, float(mean), float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(len(x), *self.network.input_shape).to(torch.float32)
        if getattr(family_of(self.network), "reads_sequences", False):
            return self.network(x)
        return self.network((x - self.mean) / self.std)


def _messages(progress: bool):
    """Where the lifecycle's lines go from Python: the folder and sizes to stderr with progress on, warnings as
    Python warnings (a notebook shows them once; a script can filter them)."""
    import warnings

    from rich.console import Console

    console = Console(stderr=True) if progress else None
    say = (lambda line: console.print(line, soft_wrap=True, markup=False)) if console is not None else None
    return console, say, lambda line: warnings.warn(line, stacklevel=4)


def _execute(cfg: RunConfig, data, out: str | Path | None, resume: bool, overwrite: bool, progress: bool) -> Run:
    """What `rankprune evolve` does after parsing: job.execute, the one lifecycle (checks, folder rules, lock,
    resume rule, status, signals, disk errors) and the controller."""
    from rankprune.job import Job, execute
    from rankprune.live import LiveReporter

    cfg = cfg.validate().resolved()
    folder = Path(out) if out is not None else default_run_folder(cfg.to_dict())
    console, say, warn = _messages(progress)
    reporters, contexts = None, ()
    if console is not None:
        live = LiveReporter(cfg, console)
        reporters, contexts = [live], [lambda: live]
    execute([Job(cfg, folder, resume=resume, overwrite=overwrite)], data=data, reporters=reporters, contexts=contexts,
            say=say, warn=warn)
    return Run(folder)


def run(config: RunConfig | None = None, out: str | Path | None = None, *, resume: bool = False,
        overwrite: bool = False, progress: bool = True) -> Run:
    """Run the controller as `rankprune evolve` does, on the config's dataset (downloaded through torchvision
    unless config.data.download is False). `out`: the run folder (default runs/evolve-DATASET-HASH). `resume`
    continues the folder under its stored config; `config` may then differ only where `rankprune evolve --resume`
    accepts another value (data_dir, download, a larger max_iterations, the device), and a ConfigError names
    every other difference."""
    cfg = (config or RunConfig()).validate()
    return _execute(cfg, None, out, resume, overwrite, progress)


@dataclass(frozen=True)
class Replicates:
    """A replicates folder's results (rankprune evolve --seeds): each seed's Run, and the spread per depth."""

    path: Path
    seeds: tuple[int, ...]

    @cached_property
    def runs(self) -> dict[int, Run]:
        from rankprune.replicates import seed_folder

        return {s: Run(seed_folder(self.path, s)) for s in self.seeds}

    @cached_property
    def summary(self) -> pd.DataFrame:
        """One row per depth: seeds, and mean / sd / min / max of total width, test and validation accuracy,
        parameters and cumulative seconds over the seeds."""
        from rankprune.replicates import summarise

        rows = []
        for key, d in summarise(self.path, list(self.seeds)).items():
            row = {"depth": d["depth"], "seeds": d["seeds"], "stop_reasons": d["stop_reasons"],
                   "widths_mean": [w["mean"] for w in d["widths"]], "widths_sd": [w["sd"] for w in d["widths"]]}
            for what in ("total_width", "test_acc", "val_acc", "parameters", "cumulative_seconds"):
                row.update({f"{what}_{stat}": d[what][stat] for stat in ("mean", "sd", "min", "max")})
            rows.append(row)
        return pd.DataFrame(rows)


def run_seeds(config: RunConfig | None = None, seeds=(0, 1, 2), out: str | Path | None = None, *, resume: bool = False,
              overwrite: bool = False, progress: bool = True, batch_members: int | None = None) -> Replicates:
    """`rankprune evolve --seeds`: the config once per seed, sharing the data of config.data.seed (default the
    first seed), trained together in batches; one folder (default runs/evolve-DATASET-HASH of the config and
    seeds) with a run folder per seed. `resume` continues `out` under its stored config and seeds."""
    from rankprune.job import resume_config
    from rankprune.live import ReplicasReporter
    from rankprune.replicates import parse_seeds, resume_base, run_replicates

    seeds = parse_seeds(",".join(str(int(s)) for s in seeds)) if seeds else parse_seeds("")
    cfg = (config or RunConfig()).validate().resolved()
    cfg = cfg.replace(data={"seed": cfg.data.seed if cfg.data.seed is not None else seeds[0]})
    root = Path(out) if out is not None else default_run_folder({**cfg.to_dict(), "seeds": seeds})
    if resume:
        stored_seeds, stored = resume_base(root)
        if stored_seeds != seeds:
            raise ConfigError(f"cannot resume {root} with other seeds (it has {stored_seeds})")
        cfg = resume_config(stored.resolved(), cfg, root)
    console, say, warn = _messages(progress)
    live = ReplicasReporter(cfg, seeds, console) if console is not None else None
    run_replicates(cfg, seeds, root, resume=resume, overwrite=overwrite, max_members=batch_members, live=live,
                   say=say, warn=warn)
    return Replicates(root, tuple(seeds))


def run_tensors(config: RunConfig | None = None, *, train: tuple, val: tuple, test: tuple,
                out: str | Path | None = None, resume: bool = False, overwrite: bool = False,
                progress: bool = True) -> Run:
    """Run the controller on your own data: each of train, val and test is (x, y), x of any shape (N, ...)
    with float features, y integer class labels from 0. Inputs are normalised with the training split's mean
    and standard deviation (recorded with the run; load_network applies them). config.data's dataset,
    fractions and folder do not apply and are recorded as dataset "tensors"."""
    from rankprune import data as data_mod

    cfg = (config or RunConfig()).replace(data={"dataset": "tensors", "data_dir": None, "download": False,
                                                "train_fraction": 1.0}).validate()
    splits = data_mod.from_tensors(train, val, test, cfg.device)
    return _execute(cfg, splits, out, resume, overwrite, progress)


def open_run(path: str | Path) -> Run:
    """The results of an existing run folder (finished, interrupted or still being written)."""
    if not (Path(path) / CONFIG).is_file():
        raise ConfigError(f"{path} is not a run folder (no {CONFIG})")
    return Run(Path(path))


def load_network(path: str | Path, depth: int, iteration: int | None = None) -> NormalisedNetwork:
    """A saved network, in eval mode on the CPU: the architecture from the run's JSON (the chosen widths in
    depths.json, or the iteration's row), the weights from its state_dict, and the normalisation from
    data.json, so it takes raw inputs."""
    run = open_run(path)
    folder = RunFolder(run.path)
    described = folder.read(DATA)
    if not described:
        raise ConfigError(f"{path} has no {DATA} (made before rankprune recorded it): its normalisation is unknown")
    layers = run.config.evolve.layers
    if depth not in layers:
        raise ConfigError(f"depth {depth} was never run in {path} (its depths: {', '.join(map(str, layers))})")
    if iteration is None:
        finished = folder.read(DEPTHS, {}) or {}
        summary = finished.get(str(depth))
        if summary is None:
            raise ConfigError(f"depth {depth} has not finished yet in {path}; give a finished iteration, or one of the "
                              f"finished depths: {', '.join(sorted(finished, key=int)) or 'none yet'}")
        widths = summary["widths"]
    else:
        rows = [r for r in folder.rows(ITERATIONS) if r["depth"] == depth and r["iteration"] == iteration]
        if not rows:
            raise ConfigError(f"depth {depth} has no finished iteration {iteration} in {path}")
        widths = rows[0]["widths"]
    # runs from before input_shape was recorded were MLPs on flattened inputs
    input_shape = tuple(described.get("input_shape") or (described["n_features"],))
    network = folder.load_network(run.config.model.family, input_shape, widths, described["n_classes"], depth, iteration)
    norm = described["normalisation"]
    return NormalisedNetwork(network, norm["mean"], norm["std"]).eval()
