"""Typed, frozen configuration for a run, with validation and dict/TOML round-trips.

Everything downstream takes these objects, never an argparse Namespace. `RunConfig.to_dict()` is
what a run folder records as its resolved config, and `RunConfig.from_dict` reads it back (resume,
studies), rejecting unknown keys so a typo cannot silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankprune.errors import ConfigError
from rankprune.models import FAMILIES, get_family
from rankprune.rank import parse_measure
from rankprune.regression import PREFIX, TARGETS as REGRESSION_TARGETS, is_regression, task_name
from rankprune.saturation import SATURATE_RULES

__all__ = [
    "task_knobs",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "ProbeConfig",
    "RankConfig",
    "EvolveConfig",
    "RunConfig",
    "DATASETS",
    "PASS",
    "parse_layers",
    "parse_integers",
    "load_toml",
]

DATASETS = ("mnist", "fashion-mnist", "kmnist", "digits", "tensors")  # tensors: given through rankprune.run_tensors
OPTIMIZERS = ("sgd", "adam")
REBUILDS = ("reinit", "warm")
PRECISIONS = ("fp32", "bf16")
PASS = "pass"  # samples_per_epoch: one pass over the data used
VALIDATION_SPLITS = ("pool", "fraction")  # where the validation split comes from (DataConfig.validation)
DROP_TESTS = ("mcnemar", "unpaired")  # how an accuracy drop is tested (EvolveConfig.drop_test)
LOSS_NAMES = ("cross-entropy", "hinge", "mse")  # losses.LOSSES implements each
# A plain MLP or CNN (no residual connections, no normalisation) does not train at hundreds of layers; a depth
# beyond this is a typo (`--layers 1..100000`), and planning its network alone would take minutes.
MAX_DEPTH = 1000
MAX_RANGE = 100_000  # values one `A..B` range may give (--layers, --seeds)
MAX_SEED = 2**63 - 1  # torch's and numpy's generators take any seed in [0, 2**63); JSON and SQLite store it exactly


TASK_SAMPLINGS = ("augmented", "fixed")  # DataConfig.task_sampling (tasks.py)


def task_sampling_inert(data: dict) -> bool:
    """Whether a data section's task_sampling and task_samples change nothing a run computes: without --tasks they
    are never read, and "fixed" (or absent: a config of format 4 or older) is what every run before format 5 did.
    Comparisons of settings (a run folder's hash, a law's studies) leave them out then."""
    return data.get("tasks") is None or data.get("task_sampling", "fixed") == "fixed"


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist"
    data_dir: str | None = None  # None: the user cache folder (see data.default_data_dir)
    download: bool = True
    train_fraction: float = 1.0  # seeded fraction of the training set actually used
    # The validation split: val_fraction of the pool (the training set, of the kept classes), drawn before the
    # train fraction is taken, so its size does not depend on the fraction (at 1/512 of MNIST it would hold
    # about 12 images otherwise, and saturation, the accuracy-drop test and the anneal decision all read it).
    # "fraction": carved from the train fraction instead, as runs of config format 3 and older were.
    val_fraction: float = 0.1
    validation: str = "pool"
    # A seeded fraction of the training labels replaced by a uniformly random class (which may be the true
    # one); validation and test labels stay clean.
    label_noise: float = 0.0
    # Keep K classes (the first K, or a seeded choice when classes_seed is set) in every split, relabelled
    # 0..K-1 in the order of their original labels; None keeps them all.
    classes: int | None = None
    classes_seed: int | None = None
    # N augmented tasks (tasks.py): random projections of the input with label permutations; None: the plain
    # dataset, with no unseen-task evaluation. How they are drawn (task_sampling):
    #   "augmented" (the experiment's, format 5): the training split grows with N, min(n_train x N, task_samples)
    #     samples, each a random training image under a random one of N tasks generated on demand (no identity task);
    #     validation is every held-out image under log2 N of the training tasks, the test split every test image
    #     under the same seen tasks, and unseen_test every test image under log2 N tasks of another seed (each at
    #     most task_samples pairs);
    #   "fixed" (format 4 and older, what runs made then mean): every row of the fixed splits gets one of N tasks,
    #     task 0 the identity.
    tasks: int | None = None
    task_sampling: str = "augmented"
    # The cap on the samples of "augmented": the experiment drew min(60,000 N, 1,000,000). Every sample is held in
    # memory as float32 (data.py keeps whole splits as tensors): 200,000 MNIST samples are 0.63 GB, a million 3.1 GB.
    task_samples: int = 200_000
    # Sequences of this many examples of one task, as a transformer reads them (--model transformer; the experiment's
    # 100 positions). None: single samples (an MLP's or CNN's). The training split is min(n_train x N, task_samples)
    # examples, as sequences of one random task each, drawn afresh every epoch as the experiment drew them (a fixed
    # set of a few thousand sequences is memorised, task by task, and no in-context learning appears); validation and
    # test are the held-out images under log2 N seen (unseen) tasks, each task's images cut into sequences.
    sequence_length: int | None = None
    # Images shrunk to image_size x image_size by averaging pixel blocks (torch's "area" interpolation) before
    # anything else: a CPU-sized stand-in for full-resolution inputs (an augmented task's projection is d x d, so 8 x 8
    # MNIST draws them 150 times cheaper than 28 x 28). None: as shipped.
    image_size: int | None = None
    # --dataset regression:simple|middle|complex (regression.py): training points drawn on [-1, 1], and the
    # standard deviation of the Gaussian noise on their targets.
    points: int = 15
    noise: float = 0.0
    # The seed of the data's own draws: the train fraction and validation split, label noise, augmented tasks,
    # regression points. None: the run's seed. Replicates (--seeds) share one, so they differ only in
    # initialisation and data order, and train in one batch; --data-seed gives a single run the same data.
    seed: int | None = None

    def validate(self) -> None:
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"--data-seed must be an integer from 0 to {MAX_SEED}, got {self.seed}")
        if is_regression(self.dataset):
            if task_name(self.dataset) not in REGRESSION_TARGETS:
                raise ConfigError(f"unknown regression task {self.dataset!r}; choose from "
                                  f"{', '.join(PREFIX + t for t in REGRESSION_TARGETS)}")
            set_knobs = [flag for flag, on in (("--label-noise", self.label_noise), ("--classes", self.classes),
                                               ("--tasks", self.tasks), ("--train-fraction", self.train_fraction != 1.0), ("--image-size", self.image_size)) if on]
            if set_knobs:
                raise ConfigError(f"{', '.join(set_knobs)} apply to classification; a regression task takes --points and --noise")
        elif self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASETS)}, "
                              f"or {', '.join(PREFIX + t for t in REGRESSION_TARGETS)}")
        if isinstance(self.points, bool) or self.points < 2:
            raise ConfigError(f"--points must be at least 2, got {self.points}")
        if not (self.noise >= 0 and math.isfinite(self.noise)):
            raise ConfigError(f"--noise must be a non-negative standard deviation, got {self.noise}")
        if not 0 < self.train_fraction <= 1:
            raise ConfigError(f"train fraction must be in (0, 1], got {self.train_fraction}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"validation fraction must be in (0, 1), got {self.val_fraction}")
        if self.validation not in VALIDATION_SPLITS:
            raise ConfigError(f"unknown validation split {self.validation!r}; choose from {', '.join(VALIDATION_SPLITS)}")
        if self.classes is not None and self.classes < 2:
            raise ConfigError(f"--classes must be at least 2, got {self.classes}")
        if self.classes_seed is not None and self.classes is None:
            raise ConfigError("--classes-seed chooses which classes --classes keeps; give --classes too")
        if self.classes_seed is not None and not 0 <= self.classes_seed <= MAX_SEED:
            raise ConfigError(f"--classes-seed must be an integer from 0 to {MAX_SEED}, got {self.classes_seed}")
        if self.tasks is not None and self.tasks < 1:
            raise ConfigError(f"--tasks must be at least 1, got {self.tasks}")
        if self.task_sampling not in TASK_SAMPLINGS:
            raise ConfigError(f"unknown task sampling {self.task_sampling!r}; choose from {', '.join(TASK_SAMPLINGS)}")
        if isinstance(self.task_samples, bool) or self.task_samples < 1:
            raise ConfigError(f"--task-samples must be at least 1, got {self.task_samples}")
        if self.image_size is not None and (isinstance(self.image_size, bool) or self.image_size < 1):
            raise ConfigError(f"--image-size must be at least 1 pixel, got {self.image_size}")
        if self.sequence_length is not None:
            if isinstance(self.sequence_length, bool) or self.sequence_length < 2:
                raise ConfigError(f"--sequence-length must be at least 2, got {self.sequence_length}")
            if self.tasks is None or self.task_sampling != "augmented":
                raise ConfigError("sequences hold examples of one augmented task: --sequence-length needs --tasks N "
                                  "with --task-sampling augmented")
            if self.label_noise:
                raise ConfigError("--label-noise relabels single training samples; sequences are drawn afresh every "
                                  "epoch, so there is no fixed row to relabel: leave it out with --model transformer")
        if not (0 <= self.label_noise < 1):
            raise ConfigError(f"label noise must be a fraction in [0, 1), got {self.label_noise}")


@dataclass(frozen=True)
class ModelConfig:
    family: str = "mlp"  # a name in models.FAMILIES
    # Initial width of every hidden layer (units, or channels per conv block); None: the family's default
    # (784 for the MLP, as in the original experiment; 64 for the CNN), or the width --params implies.
    width: int | None = None
    # A parameter-matched start: every depth's initial (equal) width is the one whose network has about this
    # many parameters, as the jamming experiments match networks of different depths. Excludes width.
    params: int | None = None
    # Output scaling (scaling.py): the output is alpha * (f(x) - f_0(x)), f_0 the network where each iteration
    # started, with the learning rate divided by alpha^2; large alpha is the lazy regime. None: the plain network.
    alpha: float | None = None

    def validate(self) -> None:
        if self.alpha is not None and not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise ConfigError(f"--alpha must be a positive number, got {self.alpha}")
        if self.family not in FAMILIES:  # the registry is the one list of names
            raise ConfigError(f"unknown model family {self.family!r}; choose from {', '.join(FAMILIES)}")
        if self.width is not None and self.params is not None:
            raise ConfigError("--params sets the initial width; give --params or --width, not both")
        if self.width is not None and self.width < 1:
            raise ConfigError(f"width must be at least 1, got {self.width}")
        if self.params is not None and self.params < 1:
            raise ConfigError(f"--params must be at least 1, got {self.params}")


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9  # SGD only
    # None: the family's default (5e-3 for the MLP, as in the original experiment; 1e-3 for the CNN, which
    # underfits the MNIST subset at 5e-3: 88% training accuracy at depth 2).
    weight_decay: float | None = None
    batch_size: int = 64
    max_epochs: int = 40
    patience: int = 4  # epochs without a validation gain > min_delta before we call it saturated
    min_delta: float = 0.002  # accuracy, as a fraction
    lr_drops: int = 1  # plateaus that multiply lr by lr_drop_factor before one counts as saturation
    lr_drop_factor: float = 0.1
    precision: str = "fp32"  # bf16 autocasts matmuls; weights and SVDs stay fp32/fp64
    # Training samples one epoch draws. None: as many as the full training split has (before --train-fraction
    # and any other subsetting), cycling a smaller set through seeded reshuffles, so that every task gets
    # the same optimisation steps per epoch; "pass": one pass over whatever data is used; N: N samples.
    samples_per_epoch: int | str | None = None
    loss: str = "cross-entropy"  # a name in losses.LOSSES: cross-entropy | hinge | mse
    # What a plateau is (saturation.py): validation accuracy stopped rising, the hidden layers' driving rank
    # stopped moving by more than rank_tol units over `patience` epochs, or both. rank: an easy task saturates
    # in accuracy within a few epochs, before weight decay has removed the random initialisation's spectrum
    # (2 MNIST classes, width 256: "converged" at [256, 256] by accuracy, at [2, 2] by rank, same accuracy);
    # benchmarks/results/grid_saturate_tasks.md and grid_saturate.md. both, not rank alone: a rank pinned by
    # its matrix's shape (a 1-D input's first layer has rank 1) is flat from the first epoch, and rank alone
    # stopped such runs after 2 x patience epochs with the fit still improving.
    saturate: str = "both"
    rank_tol: int = 2

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"learning rate must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay is not None and not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ConfigError(f"weight decay must be non-negative, got {self.weight_decay}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        if self.max_epochs < 1:
            raise ConfigError(f"max epochs must be at least 1, got {self.max_epochs}")
        if self.patience < 1:
            raise ConfigError(f"patience must be at least 1, got {self.patience}")
        if self.lr_drops < 0:
            raise ConfigError(f"lr drops must be non-negative, got {self.lr_drops}")
        if not 0 < self.lr_drop_factor < 1:
            raise ConfigError(f"lr drop factor must be in (0, 1), got {self.lr_drop_factor}")
        if self.min_delta < 0:
            raise ConfigError(f"min delta must be non-negative, got {self.min_delta}")
        if self.samples_per_epoch is not None and self.samples_per_epoch != PASS and not (
                isinstance(self.samples_per_epoch, int) and self.samples_per_epoch >= 1):
            raise ConfigError(f"samples per epoch must be a whole number of samples >= 1 or {PASS!r}, "
                              f"got {self.samples_per_epoch!r}")
        if self.saturate not in SATURATE_RULES:
            raise ConfigError(f"unknown saturation rule {self.saturate!r}; choose from {', '.join(SATURATE_RULES)}")
        if isinstance(self.rank_tol, bool) or not (isinstance(self.rank_tol, int) and self.rank_tol >= 0):
            raise ConfigError(f"rank tolerance must be a whole number of units >= 0, got {self.rank_tol!r}")
        if self.loss not in LOSS_NAMES:
            raise ConfigError(f"unknown loss {self.loss!r}; choose from {', '.join(LOSS_NAMES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")


RANK_SOURCES = ("weights", "activations")


@dataclass(frozen=True)
class RankConfig:
    measure: str = "numerical:0.02"  # drives the shrinking; see rank.parse_measure
    min_width: int = 1
    # What the driving rank is measured on: each hidden layer's incoming weight matrix, or its post-activation
    # outputs on held-out rows (the validation inputs, measure.heldout_inputs), which is what the warm rebuild
    # preserves. None: the family's default (models: default_rank_source), filled in by RunConfig.resolved().
    source: str | None = None

    def validate(self) -> None:
        try:
            parse_measure(self.measure)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.min_width < 1:
            raise ConfigError(f"min width must be at least 1, got {self.min_width}")
        if self.source is not None and self.source not in RANK_SOURCES:
            raise ConfigError(f"unknown rank source {self.source!r}; choose from {', '.join(RANK_SOURCES)}")


@dataclass(frozen=True)
class EvolveConfig:
    layers: tuple[int, ...] = (2, 3, 4, 5)  # depths (hidden layers), one controller run each
    # A depth ends at a fixed point (its widths unchanged). With every stop rule off, the warm and the reinit
    # rebuild reached one within 1-14 shrink iterations on digits, the MNIST subset and a tabular set, 3 seeds each
    # (benchmarks/results/convergence*.md); a depth still shrinking at the cap is censored ("unconverged").
    max_iterations: int = 20
    max_drop: float = 0.015  # stop once validation accuracy is this far below the best iteration
    wd_decay: float = 1.0  # weight decay multiplier applied before every next iteration
    # An accuracy drop must also exceed this many standard errors of the difference of two validation
    # accuracies (phases.drop_tolerance); 0: max_drop alone, as before.
    drop_z: float = 2.0
    # How "significantly" is tested (phases.is_drop): mcnemar, paired on the validation images both iterations
    # were scored on; unpaired, the binomial standard error of two independent accuracies (format 3 and older).
    drop_test: str = "mcnemar"
    # The widths count as converged when the total hidden width shrinks by at most this fraction. 0 (the default):
    # only an exact fixed point counts. A relative tolerance means another thing on each dataset and seed: 5% stopped
    # warm runs 0-24% above their fixed point (the MNIST subset 9-15% after 2-3 iterations, digits 0-21% after
    # 9-12), reinit runs on digits 14-30% above (benchmarks/results/convergence*.md).
    width_tol: float = 0.0
    # warm: function-preserving (rebuild.warm), the default: from starts of 128 to 2048 units it ended within
    # 133-160 with no trend in the start (reinit: 103-218), and it was more accurate than reinit in every seed for
    # at most reinit's FLOPs (benchmarks/results/start_widths.md, rebuild_warm_vs_reinit.md); reinit: fresh
    # weights at the new widths, the original experiment's behaviour.
    rebuild: str = "warm"
    # Training rows the warm rebuild decomposes, and the activation ranks are measured on.
    rebuild_samples: int = 4096
    # The scratch control of Liu et al. 2019, "Rethinking the Value of Network Pruning" (Scratch-B): after each
    # depth, its chosen widths trained again from a fresh initialisation for the training FLOPs the controller
    # spent finding them (evolve/scratch.py). Whether the found architecture, or the weights it inherited,
    # carries its accuracy. Off by default: it spends the depth's training FLOPs a second time.
    scratch: bool = False

    def validate(self) -> None:
        if not self.layers:
            raise ConfigError("give at least one depth in --layers")
        if any(d < 1 for d in self.layers):
            raise ConfigError(f"every depth must be at least 1, got {list(self.layers)}")
        if max(self.layers) > MAX_DEPTH:
            raise ConfigError(f"depth {max(self.layers)} is more than {MAX_DEPTH:,} hidden layers, deeper than any "
                              "network this controller can train without residual connections; give depths up to that")
        if self.max_iterations < 1:
            raise ConfigError(f"max iterations must be at least 1, got {self.max_iterations}")
        if not 0 <= self.max_drop <= 1:
            raise ConfigError(f"max drop must be in [0, 1], got {self.max_drop}")
        if not (self.drop_z >= 0 and math.isfinite(self.drop_z)):
            raise ConfigError(f"--drop-z must be a non-negative number, got {self.drop_z}")
        if self.drop_test not in DROP_TESTS:
            raise ConfigError(f"unknown accuracy-drop test {self.drop_test!r}; choose from {', '.join(DROP_TESTS)}")
        if not (self.wd_decay >= 0 and math.isfinite(self.wd_decay)):
            raise ConfigError(f"weight decay decay must be non-negative, got {self.wd_decay}")
        if not 0 <= self.width_tol < 1:
            raise ConfigError(f"width tolerance must be in [0, 1), got {self.width_tol}")
        if self.rebuild_samples < 1:
            raise ConfigError(f"rebuild samples must be at least 1, got {self.rebuild_samples}")
        if self.rebuild not in REBUILDS:
            raise ConfigError(f"unknown rebuild {self.rebuild!r}; choose from {', '.join(REBUILDS)}")
        if not isinstance(self.scratch, bool):
            raise ConfigError(f"scratch must be true or false, got {self.scratch!r}")


@dataclass(frozen=True)
class ProbeConfig:
    """The optional measurements (rankprune/probes): off by default, and costing nothing when off."""

    # Relative movement of every weight matrix from the iteration's start and the run's first initialisation,
    # and the ranks of the change W_t - W_start, every epoch (probes/movement.py).
    movement: bool = False
    # The top K eigenvalues of the training loss's Hessian at the end of every iteration, by Lanczos on
    # Hessian-vector products (probes/hessian.py); 0: off.
    hessian_top: int = 0
    hessian_samples: int = 512  # training rows of the seeded fixed batch the Hessian is taken on
    hessian_full_max: int = 5000  # networks with at most this many parameters also get the full spectrum

    def validate(self) -> None:
        if isinstance(self.hessian_top, bool) or self.hessian_top < 0:
            raise ConfigError(f"--hessian-top must be a number of eigenvalues >= 1 (0: off), got {self.hessian_top}")
        if self.hessian_samples < 1:
            raise ConfigError(f"--hessian-samples must be at least 1, got {self.hessian_samples}")
        if self.hessian_full_max < 0:
            raise ConfigError(f"--hessian-full-max must be non-negative, got {self.hessian_full_max}")


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    rank: RankConfig = field(default_factory=RankConfig)
    evolve: EvolveConfig = field(default_factory=EvolveConfig)
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    seed: int = 0
    device: str = "cpu"

    def validate(self) -> "RunConfig":
        for part in (self.data, self.model, self.train, self.rank, self.evolve, self.probes):
            part.validate()
        if is_regression(self.data.dataset) and self.train.loss != "mse":
            raise ConfigError(f"a regression task trains with --loss mse, not {self.train.loss}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be an integer from 0 to {MAX_SEED}, got {self.seed}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"unknown device {self.device!r}; use cpu or cuda")
        sequences = getattr(get_family(self.model.family), "reads_sequences", False)
        if sequences and (self.data.tasks is None or self.data.task_sampling != "augmented"):
            raise ConfigError(f"--model {self.model.family} learns tasks in context from sequences of one task's "
                              "examples: give --tasks N (with --task-sampling augmented)")
        if not sequences and self.data.sequence_length is not None:
            raise ConfigError(f"--sequence-length is for --model transformer; --model {self.model.family} reads "
                              "single samples")
        return self

    @property
    def data_seed(self) -> int:
        """The seed data.load draws this run's data with: data.seed, or the run's seed."""
        return self.seed if self.data.seed is None else self.data.seed

    def resolved(self) -> "RunConfig":
        """Every default filled in that depends on another setting: the family's default width (unless
        --params chooses the width per depth), weight decay and rank source."""
        family, out = get_family(self.model.family), self
        if out.model.width is None and out.model.params is None:
            out = out.replace(model={"width": family.default_width})
        if out.train.weight_decay is None:
            out = out.replace(train={"weight_decay": family.default_weight_decay})
        if out.rank.source is None:
            out = out.replace(rank={"source": family.default_rank_source})
        if getattr(family, "reads_sequences", False) and out.data.sequence_length is None:
            out = out.replace(data={"sequence_length": family.default_sequence_length})
        return out

    def to_dict(self) -> dict[str, Any]:
        """The config as config.json records it, with the run-folder format it is written in."""
        from rankprune.records import FORMAT_VERSION

        d = dataclasses.asdict(self)
        d["evolve"]["layers"] = list(self.evolve.layers)
        return {"format_version": FORMAT_VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """Build from a nested dict (a config.json or TOML table); unknown keys are an error."""
        from rankprune.records import FORMAT_VERSION, config_format

        if not isinstance(d.get("format_version", 1), int) or isinstance(d.get("format_version"), bool):
            raise ConfigError(f"format_version must be an integer, got {d['format_version']!r}")
        if config_format(d) > FORMAT_VERSION:
            raise ConfigError(f"this config is format {config_format(d)}, written by a newer rankprune than this one "
                              f"(which reads up to format {FORMAT_VERSION}): upgrade rankprune")
        d = {k: v for k, v in d.items() if k != "format_version"}
        parts = {}
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        classes = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "rank": RankConfig, "evolve": EvolveConfig,
                   "probes": ProbeConfig}
        for key, value in d.items():
            if key not in sections:
                raise ConfigError(f"unknown config section {key!r}")
            if key in classes:
                if not isinstance(value, dict):
                    raise ConfigError(f"config section {key!r} must be a table")
                parts[key] = _build(classes[key], value, key)
            else:
                _check_type(key, value, {f.name: f.type for f in dataclasses.fields(cls)}[key])
                parts[key] = value
        return cls(**parts)

    @classmethod
    def from_stored(cls, d: dict[str, Any]) -> "RunConfig":
        """A run folder's config.json, of any format: settings added since it was written take the value the
        run was made with (records.upgrade_config), not today's default. A user's TOML goes to from_dict."""
        from rankprune.records import upgrade_config

        return cls.from_dict(upgrade_config(d))

    def replace(self, **sections: dict[str, Any]) -> "RunConfig":
        """A copy with fields of sections replaced: cfg.replace(train={"lr": 0.1}, seed=3)."""
        changes = {}
        for key, value in sections.items():
            if isinstance(value, dict):
                changes[key] = _build(type(getattr(self, key)), value, key, base=getattr(self, key))
            else:
                _check_type(key, value, {f.name: f.type for f in dataclasses.fields(RunConfig)}[key])
                changes[key] = value
        return dataclasses.replace(self, **changes)


# What each annotation (a string: this module uses postponed annotations) accepts. An int is a valid
# float; a bool is neither (True would silently become 1).
_TYPE_CHECKS = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "str | None": (lambda v: v is None or isinstance(v, str), "a string"),
    "int | None": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)), "an integer"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "int | str | None": (lambda v: v is None or isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)),
                         "a whole number or a word"),
    "float | None": (lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)), "a number"),
    "tuple[int, ...]": (lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
                        "a list of integers"),
}


def _check_type(name: str, value: Any, annotation: str) -> None:
    """ConfigError (one line) when a config value has the wrong type: `lr = "fast"`, `seed = 1.5`."""
    accepts, what = _TYPE_CHECKS[annotation]
    if not accepts(value):
        raise ConfigError(f"{name} must be {what}, got {value!r}")


def _build(kind: type, values: dict[str, Any], section: str, base: Any = None):
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown key {section}.{unknown[0]}; known: {', '.join(sorted(names))}")
    types = {f.name: f.type for f in dataclasses.fields(kind)}
    for key, value in values.items():
        _check_type(f"{section}.{key}", value, types[key])
    if "layers" in values:
        values = {**values, "layers": tuple(values["layers"])}
    return dataclasses.replace(base, **values) if base is not None else kind(**values)


class RangeError(ValueError):
    """A range that parses but cannot be used (backwards, or too long): its message says which."""


def parse_integers(text: str) -> list[int]:
    """`2..5` -> [2, 3, 4, 5]; `2,3,5` -> [2, 3, 5]; `4` -> [4]. ValueError on anything else (a range backwards too)."""
    text = text.strip()
    if ".." in text:
        lo, hi = (int(x) for x in text.split(".."))
        if lo > hi:
            raise RangeError(f"{text!r} runs backwards")
        if hi - lo >= MAX_RANGE:  # `1..10**18` must be an error, not a list that fills the memory
            raise RangeError(f"{text!r} spans more than {MAX_RANGE:,} values")
        return list(range(lo, hi + 1))
    return [int(x) for x in text.split(",")]


def parse_layers(text: str) -> tuple[int, ...]:
    """`2..5` -> (2, 3, 4, 5); `2,3,5` -> (2, 3, 5); `4` -> (4,). ConfigError on anything else."""
    text = text.strip()
    try:
        depths = tuple(parse_integers(text))
    except RangeError as exc:
        raise ConfigError(f"bad --layers: {exc}") from None
    except ValueError:
        raise ConfigError(f"bad --layers {text!r}: use a range like 2..5, a list like 2,3,5, or one depth like 4") from None
    if any(d < 1 for d in depths):
        raise ConfigError(f"bad --layers {text!r}: every depth must be at least 1")
    if any(d > MAX_DEPTH for d in depths):
        raise ConfigError(f"bad --layers {text!r}: depths go up to {MAX_DEPTH:,} hidden layers")
    if len(set(depths)) != len(depths):
        raise ConfigError(f"bad --layers {text!r}: a depth appears twice")
    return depths


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a ConfigError naming it."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder; give a TOML file") from None
    except OSError as exc:  # unreadable: permissions, an I/O error
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8; tomllib lets a decoding error through as it is
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}): TOML files are UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"malformed TOML in {path}: {exc}") from None


def task_knobs(config: dict) -> list[str]:
    """The task-complexity knobs of a config (as config.json stores it) set away from their defaults, then the
    epoch budget and the saturation rule: what the report's header and the live view
    name. Reads dicts, so an older run's config reads the same way."""
    data, train = config.get("data", {}), config.get("train", {})
    knobs = []
    if is_regression(data.get("dataset", "")):
        knobs.append(f"{data.get('points')} training points with noise sd {data.get('noise', 0.0):g}")
    if config.get("model", {}).get("alpha") is not None:
        knobs.append(f"output scaled by alpha {config['model']['alpha']:g} (learning rate / alpha^2)")
    if data.get("image_size"):
        knobs.append(f"images averaged down to {data['image_size']}x{data['image_size']} pixels")
    if data.get("train_fraction", 1.0) != 1.0:
        knobs.append(f"train fraction {data['train_fraction']:g}")
    if data.get("classes"):
        knobs.append(f"{data['classes']} classes" + (f" (seeded choice {data['classes_seed']})" if data.get("classes_seed") is not None else " (the first)"))
    if data.get("tasks"):
        # task_sampling absent: a config of format 4 or older, whose tasks were fixed (records.FORMAT_5_MEANT)
        if data.get("task_sampling", "fixed") == "fixed":
            knobs.append(f"{data['tasks']} augmented tasks (projections with label permutations; fixed splits, task 0 "
                         "the identity)")
        else:
            knobs.append(f"{data['tasks']} augmented tasks (projections with label permutations; up to "
                         f"{data.get('task_samples', 0):,} samples, evaluated on log2 N seen and unseen tasks)")
        if data.get("sequence_length"):
            knobs.append(f"sequences of {data['sequence_length']} examples of one task, the previous label beside each "
                         "input, drawn afresh every epoch")
    if data.get("label_noise", 0.0):
        knobs.append(f"label noise {data['label_noise']:g} (training labels only)")
    if train.get("loss", "cross-entropy") != "cross-entropy":
        knobs.append(f"{train['loss']} loss")
    samples = train.get("samples_per_epoch")
    knobs.append("one pass over the data per epoch" if samples == PASS else
                 f"{samples:,} samples per epoch" if samples else "as many samples per epoch as the full training split")
    rule, patience = train.get("saturate", "accuracy"), train.get("patience", 4)  # runs before --saturate: accuracy
    knobs.append({"accuracy": f"saturated when validation accuracy stops rising for {patience} epochs",
                  "rank": f"saturated when no driving rank moves by more than {train.get('rank_tol')} units over {patience} epochs",
                  "both": f"saturated when validation accuracy stops rising and no driving rank moves by more than "
                          f"{train.get('rank_tol')} units, over {patience} epochs"}[rule])
    return knobs
