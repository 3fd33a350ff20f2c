"""Datasets loaded once into memory as tensors, with seeded splits and a batch iterator.

No DataLoader and no per-sample transform: a whole dataset is one float32 tensor on the training
device, images as (N, C, H, W) and other data as (N, features), normalised once (a family that wants
flat rows, the MLP, flattens them itself), and a batch is `index_select` of a
slice of a seeded permutation (1.0-1.4x faster than fancy indexing on this CPU, and it keeps the
loop free of Python per-sample work; see ../shared/PERFORMANCE.md).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from rankprune.config import ConfigError, DataConfig
from rankprune.regression import EPOCH_SAMPLES, TEST_POINTS, VAL_POINTS, is_regression
from rankprune.regression import target as regression_target
from rankprune.seeds import CLASSES, LABEL_NOISE, REGRESSION, TASK_ROWS, TASKS, UNSEEN_ROWS, UNSEEN_TASKS, derive_seed
from rankprune.tasks import (TaskStream, apply_tasks, assign_tasks, draw_samples, draw_sequences, every_pair, every_sequence,
                             make_tasks, tokens)

__all__ = [
    "DataError", "Split", "Splits", "load", "raw_arrays", "from_tensors", "batches", "default_data_dir", "expected_files", "small_validation_warning",
    "MIN_VALIDATION_ROWS",
]

# Below this many validation rows one image moves validation accuracy by more than 1 point, so the
# saturation rule and every decision that reads it are mostly noise.
MIN_VALIDATION_ROWS = 100


class DataError(ConfigError):
    """Data that cannot be loaded; the message is one line naming the folder and what is missing.

    The message says nothing about how to get round it, since that depends on the command (a flag of
    `evolve`, a key of a study file): callers add their own hint.
    """


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (N, C, H, W) images or (N, features), float32, normalised
    y: torch.Tensor  # (N,) int64 class labels

    def __len__(self) -> int:
        return self.y.shape[0]


@dataclass(frozen=True)
class Splits:
    name: str
    train: Split
    val: Split
    test: Split  # touched only for reporting, never for a decision
    input_shape: tuple[int, ...]  # one sample's shape: (C, H, W) for images, (features,) otherwise
    n_classes: int
    # The normalisation applied to every split, from the training split only: x = (raw - mean) / std,
    # raw pixels scaled to [0, 1]. A saved network needs it to be used on new data.
    mean: float = 0.0
    std: float = 1.0
    n_train_pool: int = 0  # the training set's size before the train fraction and validation split
    validation: str | None = None  # where the validation split came from: "pool" or "fraction" (DataConfig)
    # The training split's size at train fraction 1 (before any subsetting): how many samples an epoch draws
    # by default, so that a fraction of the data gets as many optimisation steps as all of it. 0: len(train).
    n_train_full: int = 0
    # --label-noise: the training rows whose label was replaced (indices into train) and the labels they had.
    relabelled: torch.Tensor | None = None
    true_labels: torch.Tensor | None = None  # the training split's labels before any was replaced
    kept_classes: list[int] | None = None  # --classes: the original labels kept; label i is kept_classes[i]
    tasks: int | None = None  # --tasks: how many augmented tasks the splits hold (test holds the seen ones)
    unseen_test: Split | None = None  # --tasks: the test images under unseen tasks
    task_sampling: str | None = None  # --tasks: "augmented" or "fixed" (DataConfig.task_sampling)
    seen_eval_tasks: int | None = None  # "augmented": how many of the training tasks validation and test use
    # --sequence-length: each epoch's training sequences, drawn afresh (epoch -> Split); `train` is epoch 0's draw.
    train_draw: Callable[[int], Split] | None = None
    sequence_length: int | None = None

    def train_for(self, epoch: int) -> Split:
        """The training split epoch `epoch` (1-based) trains on: a fresh draw of sequences, or `train`."""
        return self.train if self.train_draw is None else self.train_draw(epoch)


    def _noise_record(self) -> dict:
        if self.relabelled is None:
            return {}
        idx = self.relabelled.cpu()
        changed = idx[self.train.y.cpu()[idx] != self.true_labels.cpu()[idx]]  # a random class can be the true one
        return {"label_noise": {"relabelled": len(idx), "label_changed": len(changed), "rows": idx.tolist(),
                                "changed_rows": changed.tolist(),  # the rows memorisation is scored on
                                "rows_are": "indices into the training split, in the order the run trains on"}}

    @property
    def full_train_size(self) -> int:
        return self.n_train_full or len(self.train)

    def samples_per_epoch(self, setting: int | str | None) -> int:
        """How many training samples one epoch draws under TrainConfig.samples_per_epoch."""
        if setting is None:
            return self.full_train_size
        if setting == "pass":
            return len(self.train)
        return int(setting)

    @property
    def n_features(self) -> int:
        return math.prod(self.input_shape)

    def describe(self) -> dict:
        """What a run folder records of its data (data.json): split sizes, shapes, normalisation."""
        return {
            "dataset": self.name,
            "n_train": len(self.train), "n_val": len(self.val), "n_test": len(self.test),
            "n_train_pool": self.n_train_pool, "n_train_full": self.full_train_size,
            **({"validation_from": self.validation} if self.validation else {}),
            **self._noise_record(),
            **({"classes": self.kept_classes} if self.kept_classes is not None else {}),
            **({"tasks": self.tasks, "n_test_unseen_tasks": len(self.unseen_test), "task_sampling": self.task_sampling,
                **({"eval_tasks": self.seen_eval_tasks} if self.seen_eval_tasks is not None else {})}
               if self.tasks is not None else {}),
            "input_shape": list(self.input_shape), "n_features": self.n_features, "n_classes": self.n_classes,
            "normalisation": {"mean": self.mean, "std": self.std,
                              "applies_to": "inputs scaled to [0, 1] (pixels / 255; digits / 16), of shape input_shape"},
        }


def shrink_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images (N, C, H, W) averaged down to (N, C, size, size) (area interpolation); ConfigError where that would
    enlarge them."""
    if size > min(x.shape[-2:]):
        raise ConfigError(f"--image-size {size} is larger than these {x.shape[-2]}x{x.shape[-1]} images; it only shrinks")
    return torch.nn.functional.interpolate(x, size=(size, size), mode="area")


def small_validation_warning(splits: Splits) -> str | None:
    """A one-line warning when the validation split is too small to decide anything on; None if it is fine."""
    n = splits.val.y.numel()  # a sequence's positions are each a prediction
    if n >= MIN_VALIDATION_ROWS:
        return None
    return (f"the validation split has only {n} rows (fewer than {MIN_VALIDATION_ROWS}): one image moves validation "
            f"accuracy by {100 / max(n, 1):.1f} points, so saturation and every decision are noisy; "
            + ("raise the train fraction or the validation fraction" if splits.validation == "fraction"
               else "raise the validation fraction (or use more classes)"))


_TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}


def default_data_dir() -> Path:
    """$RANKPRUNE_DATA, else $XDG_CACHE_HOME/rankprune/data, else ~/.cache/rankprune/data."""
    if os.environ.get("RANKPRUNE_DATA"):
        return Path(os.environ["RANKPRUNE_DATA"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "rankprune" / "data"


def expected_files(dataset: str, root: Path) -> tuple[Path, list[str]]:
    """The raw folder torchvision reads and the file names it expects there."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, _TORCHVISION[dataset])
    names = [Path(url).name.removesuffix(".gz") for url, _md5 in cls.resources]
    return root / cls.__name__ / "raw", names


def _torchvision_arrays(cfg: DataConfig, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision.datasets as tvd

    root = Path(cfg.data_dir) if cfg.data_dir else default_data_dir()
    raw, names = expected_files(cfg.dataset, root)
    cls = getattr(tvd, _TORCHVISION[cfg.dataset])
    try:
        ds = cls(str(root), train=train, download=cfg.download)
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError... when offline
        how = "could not be downloaded" if cfg.download else "is missing and downloading is off"
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{cfg.dataset} {how} ({detail}): expected {', '.join(names)} in {raw}") from None
    # ds.data is the whole split as one uint8 tensor (N, 28, 28): no per-sample transform needed.
    return ds.data.unsqueeze(1).float().div_(255.0), ds.targets.long()  # (N, 1, 28, 28)


def _digits_table() -> np.ndarray:
    """The digits as scikit-learn ships them: 1,797 rows of 64 grey levels and the label. Read from the package's
    data file without importing sklearn.datasets, which costs 1.5 s of a command's start (it imports most of
    scikit-learn); load_digits where that file is not where scikit-learn 1.x keeps it."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as fh:
                return np.loadtxt(fh, delimiter=",")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.column_stack([bunch.data, bunch.target])


def _digits_arrays(seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn's bundled 8x8 digits (1,797 images, 0..16 grey levels), 20% seeded test split."""
    table = _digits_table()
    x = torch.from_numpy(table[:, :64].astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)  # images, as torchvision's
    y = torch.from_numpy(table[:, 64].astype(np.int64))
    # The test split is fixed by a constant seed so that runs with different --seed share it.
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1797))
    n_test = len(y) // 5
    test, train = perm[:n_test], perm[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def raw_arrays(cfg: DataConfig, seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A classification dataset's (images, labels) of its training and test sets as shipped: images (N, 1, H, W)
    scaled to [0, 1], labels int64; nothing split, subset or normalised (`seed` fixes the digits' test split)."""
    if cfg.dataset == "digits":
        return _digits_arrays(seed)
    return _torchvision_arrays(cfg, train=True), _torchvision_arrays(cfg, train=False)


def load(cfg: DataConfig, seed: int, device: str | torch.device = "cpu") -> Splits:
    """Load a dataset into memory, carve a seeded train fraction and validation split, normalise.

    Normalisation uses the mean and standard deviation of the training split only (one scalar each,
    as torchvision's Normalize((0.1307,), (0.3081,)) does for MNIST).
    """
    cfg.validate()
    if cfg.data_dir and Path(cfg.data_dir).is_file():
        # Refused for every dataset, also those that never read it (digits, regression): a file given as the
        # data folder is a mistake that would otherwise pass unnoticed.
        raise ConfigError(f"--data-dir {cfg.data_dir} is a file, not a folder")
    if is_regression(cfg.dataset):
        return _regression_splits(cfg, seed, device)
    if cfg.dataset == "tensors":
        raise DataError("the tensors dataset is your own data, given through the Python API (rankprune.run_tensors); "
                        "from files choose mnist, fashion-mnist, kmnist or digits")
    (x_tr, y_tr), (x_te, y_te) = raw_arrays(cfg, seed)
    if cfg.image_size is not None:
        x_tr, x_te = (shrink_images(x, cfg.image_size) for x in (x_tr, x_te))

    n_pool = len(y_tr)
    n_full = n_pool - max(1, round(cfg.val_fraction * n_pool))  # the training split at fraction 1, all classes
    n_all_classes = int(max(y_tr.max(), y_te.max())) + 1
    kept = choose_classes(n_all_classes, cfg.classes, cfg.classes_seed)
    if kept is not None:
        (x_tr, y_tr), (x_te, y_te) = keep_classes(x_tr, y_tr, kept), keep_classes(x_te, y_te, kept)

    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y_tr), generator=g)
    if cfg.validation == "pool":  # validation first, from the whole pool: its size is the same at every fraction
        n_val = max(1, round(cfg.val_fraction * len(perm)))
        val_idx, rest = perm[:n_val], perm[n_val:]
        train_idx = rest[: max(1, round(cfg.train_fraction * len(rest)))]
    else:  # "fraction" (config format 3 and older): carved from the train fraction, so it shrinks with it
        perm = perm[: max(2, round(cfg.train_fraction * len(perm)))]
        n_val = max(1, round(cfg.val_fraction * len(perm)))
        val_idx, train_idx = perm[:n_val], perm[n_val:]

    x_train = x_tr[train_idx]
    mean, std = x_train.mean(), x_train.std().clamp_min(1e-8)

    def split(x: torch.Tensor, y: torch.Tensor) -> Split:
        return Split(((x - mean) / std).contiguous().to(device), y.contiguous().to(device))

    n_classes = n_all_classes if kept is None else len(kept)
    train, val, test = split(x_train, y_tr[train_idx]), split(x_tr[val_idx], y_tr[val_idx]), split(x_te, y_te)
    unseen = None
    seen_eval_tasks = None
    train_draw = None
    if cfg.sequence_length is not None:
        train, val, test, unseen, seen_eval_tasks, train_draw = _sequence_splits(cfg, seed, train, val, test, n_classes)
    elif cfg.tasks is not None and cfg.task_sampling == "augmented":
        train, val, test, unseen, seen_eval_tasks = _augmented_splits(cfg, seed, train, val, test, n_classes)
    elif cfg.tasks is not None:
        d = math.prod(x_tr.shape[1:])
        seen_tasks = make_tasks(cfg.tasks, d, n_classes, derive_seed(seed, TASKS), identity_first=True)
        unseen_tasks = make_tasks(cfg.tasks, d, n_classes, derive_seed(seed, UNSEEN_TASKS), identity_first=False)
        unseen = Split(*apply_tasks(test.x, test.y, assign_tasks(len(test), cfg.tasks, derive_seed(seed, UNSEEN_ROWS)), unseen_tasks))
        train, val, test = (Split(*apply_tasks(s.x, s.y, assign_tasks(len(s), cfg.tasks, derive_seed(seed, TASK_ROWS, i)), seen_tasks))
                            for i, s in enumerate((train, val, test)))
    y_train, relabelled, true_labels = relabel(train.y.cpu(), cfg.label_noise, n_classes, seed)
    return Splits(
        name=cfg.dataset,
        train=Split(train.x, y_train.to(device)),
        val=val,
        test=test,
        input_shape=tuple(train.x.shape[1:]) if train_draw is not None else tuple(x_tr.shape[1:]),
        n_classes=n_classes,
        mean=float(mean),
        std=float(std),
        n_train_pool=n_pool,
        validation=cfg.validation,
        n_train_full=len(train) if train_draw is not None else n_full,
        kept_classes=kept,
        relabelled=relabelled,
        true_labels=None if true_labels is None else true_labels.to(device),
        tasks=cfg.tasks,
        unseen_test=unseen,
        task_sampling=cfg.task_sampling if cfg.tasks is not None else None,
        seen_eval_tasks=seen_eval_tasks,
        train_draw=train_draw,
        sequence_length=cfg.sequence_length,
    )


def eval_task_count(n_tasks: int) -> int:
    """How many tasks the experiment evaluates on for N training tasks: log2 N, at least 1 (int(np.log2(N)))."""
    return max(1, int(math.log2(n_tasks)))


def _augmented_splits(cfg: DataConfig, seed: int, train: Split, val: Split, test: Split, n_classes: int):
    """--tasks N as the experiment draws them (tasks.py): the training split becomes min(n_train N, task_samples)
    samples of the training images under the N tasks; validation every held-out image under the first log2 N of the
    training tasks; test every test image under the same seen tasks; unseen test every test image under log2 N
    tasks of another stream. Each evaluation split is capped at task_samples pairs."""
    d = math.prod(train.x.shape[1:])
    seen = TaskStream(derive_seed(seed, TASKS), d, n_classes)
    unseen = TaskStream(derive_seed(seed, UNSEEN_TASKS), d, n_classes)
    k = eval_task_count(cfg.tasks)
    x, y, _ = draw_samples(train.x, train.y, cfg.tasks, min(len(train) * cfg.tasks, cfg.task_samples), seen,
                           derive_seed(seed, TASK_ROWS, 0))
    v = every_pair(val.x, val.y, min(k, cfg.tasks), seen, cfg.task_samples, derive_seed(seed, TASK_ROWS, 1))
    t = every_pair(test.x, test.y, min(k, cfg.tasks), seen, cfg.task_samples, derive_seed(seed, TASK_ROWS, 2))
    u = every_pair(test.x, test.y, k, unseen, cfg.task_samples, derive_seed(seed, UNSEEN_ROWS))
    return Split(x, y), Split(v[0], v[1]), Split(t[0], t[1]), Split(u[0], u[1]), min(k, cfg.tasks)


def _sequence_splits(cfg: DataConfig, seed: int, train: Split, val: Split, test: Split, n_classes: int):
    """--tasks N read as sequences (--sequence-length T, the transformer's): min(n_train N, task_samples) training
    examples as sequences of T examples of one random task each, drawn afresh every epoch (train_draw); validation
    the held-out images under log2 N of the training tasks, test the test images under the same tasks and unseen
    test under log2 N tasks of another stream, each task's images cut into sequences (tasks.every_sequence). Inputs
    are tokens (S, T, d + K), the previous label beside each input; labels (S, T)."""
    d, length = math.prod(train.x.shape[1:]), cfg.sequence_length
    seen = TaskStream(derive_seed(seed, TASKS), d, n_classes)
    unseen = TaskStream(derive_seed(seed, UNSEEN_TASKS), d, n_classes)
    k = min(eval_task_count(cfg.tasks), cfg.tasks)
    n_sequences = max(1, min(len(train) * cfg.tasks, cfg.task_samples) // length)
    short = min(len(val), len(test), len(train))
    if short < length:
        raise ConfigError(f"--sequence-length {length} is longer than a split has images ({short}): a sequence holds "
                          "distinct images of one task; give a shorter sequence or more data")

    def as_tokens(x: torch.Tensor, y: torch.Tensor) -> Split:
        return Split(tokens(x, y, n_classes).contiguous(), y.contiguous())

    def draw(epoch: int) -> Split:
        g = torch.Generator().manual_seed(derive_seed(seed, TASK_ROWS, 0, epoch))
        which = torch.randint(0, cfg.tasks, (n_sequences,), generator=g)
        return as_tokens(*draw_sequences(train.x, train.y, which, length, seen, derive_seed(seed, TASK_ROWS, 3, epoch)))

    v = as_tokens(*every_sequence(val.x, val.y, k, seen, length, cfg.task_samples, derive_seed(seed, TASK_ROWS, 1)))
    t = as_tokens(*every_sequence(test.x, test.y, k, seen, length, cfg.task_samples, derive_seed(seed, TASK_ROWS, 2)))
    u = as_tokens(*every_sequence(test.x, test.y, eval_task_count(cfg.tasks), unseen, length, cfg.task_samples,
                                  derive_seed(seed, UNSEEN_ROWS)))
    return draw(0), v, t, u, k, draw


def _regression_splits(cfg: DataConfig, seed: int, device: str | torch.device) -> Splits:
    """--points training inputs uniform on [-1, 1] with noisy targets, and noise-free validation and test sets,
    each on its own seeded draw (regression.py); inputs are not normalised (they are already on [-1, 1])."""
    f = regression_target(cfg.dataset)
    g = torch.Generator().manual_seed(derive_seed(seed, REGRESSION))

    def draw(n: int, noise: float) -> Split:
        x = torch.rand(n, 1, generator=g) * 2 - 1
        y = f(x[:, 0]) + noise * torch.randn(n, generator=g)
        return Split(x.contiguous().to(device), y.float().contiguous().to(device))

    train, val, test = draw(cfg.points, cfg.noise), draw(VAL_POINTS, 0.0), draw(TEST_POINTS, 0.0)
    # An epoch cycles the few points EPOCH_SAMPLES times over (64 steps at batch 64): one pass of 15 points
    # would be a single step, and saturation's patience would count steps rather than training.
    return Splits(name=cfg.dataset, train=train, val=val, test=test, input_shape=(1,), n_classes=1,
                  n_train_pool=cfg.points, n_train_full=EPOCH_SAMPLES)


def choose_classes(n_classes: int, keep: int | None, seed: int | None) -> list[int] | None:
    """The original labels --classes keeps, ascending: the first K, or K drawn by classes_seed; None for all."""
    if keep is None:
        return None
    if keep > n_classes:
        raise ConfigError(f"--classes {keep}: this dataset has only {n_classes} classes")
    if seed is None:
        return list(range(keep))
    g = torch.Generator().manual_seed(derive_seed(seed, CLASSES))
    return sorted(torch.randperm(n_classes, generator=g)[:keep].tolist())


def keep_classes(x: torch.Tensor, y: torch.Tensor, kept: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of the kept classes, labelled by their position in `kept` (0..K-1)."""
    lookup = torch.full((max(int(y.max()), *kept) + 1,), -1, dtype=y.dtype)
    lookup[torch.tensor(kept, dtype=torch.long)] = torch.arange(len(kept), dtype=y.dtype)
    mapped = lookup[y]
    rows = mapped >= 0
    return x[rows], mapped[rows]


def relabel(y: torch.Tensor, fraction: float, n_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(labels, relabelled rows, the labels before): round(fraction x N) seeded rows get a uniformly random class.

    The draw has its own stream (seeds.LABEL_NOISE), so the same seed relabels the same rows whatever else is set.
    """
    if fraction == 0:
        return y, None, None
    g = torch.Generator().manual_seed(derive_seed(seed, LABEL_NOISE))
    rows = torch.randperm(len(y), generator=g)[: round(fraction * len(y))].sort().values
    noisy = y.clone()
    noisy[rows] = torch.randint(0, n_classes, (len(rows),), generator=g, dtype=y.dtype)
    return noisy, rows, y


def from_tensors(train: tuple, val: tuple, test: tuple, device: str | torch.device = "cpu") -> Splits:
    """Splits from a user's own (x, y) pairs: x of shape (N, features) or (N, C, H, W) with float values, y
    integer classes 0..C-1. Normalised as load() normalises, with the training split's scalar mean and std."""
    parts = []
    for name, pair in (("train", train), ("val", val), ("test", test)):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ConfigError(f"{name} must be a pair (x, y)")
        x, y = (torch.as_tensor(v) for v in pair)
        if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or len(y) == 0:
            raise ConfigError(f"{name}: x must be (N, features...) and y (N,) with the same N > 0; got {tuple(x.shape)} and {tuple(y.shape)}")
        if not x.is_floating_point() or not torch.isfinite(x).all():
            raise ConfigError(f"{name}: x must hold finite floating-point features")
        if y.is_floating_point() or y.dtype == torch.bool or int(y.min()) < 0:
            raise ConfigError(f"{name}: y must hold integer class labels from 0")
        parts.append((x.to(torch.float32), y.to(torch.int64)))
    shapes = {tuple(x.shape[1:]) for x, _ in parts}
    if len(shapes) != 1:
        raise ConfigError(f"train, val and test have different sample shapes: {sorted(shapes)}")
    (x_train, _), n_classes = parts[0], int(max(int(y.max()) for _, y in parts)) + 1
    mean, std = x_train.mean(), x_train.std().clamp_min(1e-8)
    train_s, val_s, test_s = (Split(((x - mean) / std).contiguous().to(device), y.contiguous().to(device)) for x, y in parts)
    return Splits(name="tensors", train=train_s, val=val_s, test=test_s, input_shape=shapes.pop(), n_classes=n_classes,
                  mean=float(mean), std=float(std), n_train_pool=len(train_s) + len(val_s), n_train_full=len(train_s))


def epoch_order(n: int, samples: int, generator: torch.Generator) -> torch.Tensor:
    """The row order of one epoch of `samples` draws from n rows: seeded permutations laid end to end (a fresh
    reshuffle each pass), cut at `samples`. samples == n is one permutation, as a plain epoch is."""
    passes = -(-samples // n)
    return torch.cat([torch.randperm(n, generator=generator) for _ in range(passes)])[:samples]


def batches(split: Split, batch_size: int, generator: torch.Generator,
            samples: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (x, y) batches over seeded permutations (`samples` draws; default one pass); the last
    batch may be short."""
    n = len(split)
    # The order is drawn on the CPU generator so that CPU and CUDA runs see the same order.
    order = epoch_order(n, n if samples is None else samples, generator).to(split.x.device)
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        yield torch.index_select(split.x, 0, idx), torch.index_select(split.y, 0, idx)
