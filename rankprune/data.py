"""Datasets loaded once into memory as tensors, with seeded splits and a batch iterator.

No DataLoader and no per-sample transform: a whole dataset is one float32 tensor of shape
(N, features) on the training device, normalised once, and a batch is `index_select` of a
slice of a seeded permutation (1.0-1.4x faster than fancy indexing on this CPU, and it keeps the
loop free of Python per-sample work; see ../shared/PERFORMANCE.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from rankprune.config import ConfigError, DataConfig

__all__ = ["DataError", "Split", "Splits", "load", "batches", "default_data_dir", "expected_files"]


class DataError(ConfigError):
    """Data that cannot be loaded; the message is one line naming the folder and what is missing."""


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (N, features) float32, normalised
    y: torch.Tensor  # (N,) int64 class labels

    def __len__(self) -> int:
        return self.y.shape[0]


@dataclass(frozen=True)
class Splits:
    name: str
    train: Split
    val: Split
    test: Split  # touched only for reporting, never for a decision
    n_features: int
    n_classes: int


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
        how = "could not be downloaded" if cfg.download else "is missing and --no-download was given"
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"{cfg.dataset} {how} ({detail}): expected {', '.join(names)} in {raw}; "
            "for an offline run use --dataset digits"
        ) from None
    # ds.data is the whole split as one uint8 tensor (N, 28, 28): no per-sample transform needed.
    return ds.data.reshape(len(ds.data), -1).float().div_(255.0), ds.targets.long()


def _digits_arrays(seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn's bundled 8x8 digits (1,797 images, 0..16 grey levels), 20% seeded test split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.data.astype(np.float32) / 16.0)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    # The test split is fixed by a constant seed so that runs with different --seed share it.
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1797))
    n_test = len(y) // 5
    test, train = perm[:n_test], perm[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def load(cfg: DataConfig, seed: int, device: str | torch.device = "cpu") -> Splits:
    """Load a dataset into memory, carve a seeded train fraction and validation split, normalise.

    Normalisation uses the mean and standard deviation of the training split only (one scalar each,
    as torchvision's Normalize((0.1307,), (0.3081,)) does for MNIST).
    """
    cfg.validate()
    if cfg.dataset == "digits":
        (x_tr, y_tr), (x_te, y_te) = _digits_arrays(seed)
    else:
        x_tr, y_tr = _torchvision_arrays(cfg, train=True)
        x_te, y_te = _torchvision_arrays(cfg, train=False)

    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y_tr), generator=g)
    perm = perm[: max(2, round(cfg.train_fraction * len(perm)))]
    n_val = max(1, round(cfg.val_fraction * len(perm)))
    val_idx, train_idx = perm[:n_val], perm[n_val:]

    x_train = x_tr[train_idx]
    mean, std = x_train.mean(), x_train.std().clamp_min(1e-8)

    def split(x: torch.Tensor, y: torch.Tensor) -> Split:
        return Split(((x - mean) / std).contiguous().to(device), y.contiguous().to(device))

    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    return Splits(
        name=cfg.dataset,
        train=split(x_train, y_tr[train_idx]),
        val=split(x_tr[val_idx], y_tr[val_idx]),
        test=split(x_te, y_te),
        n_features=x_tr.shape[1],
        n_classes=n_classes,
    )


def batches(split: Split, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of (x, y) batches over a seeded permutation; the last batch may be short."""
    n = len(split)
    # The permutation is drawn on the CPU generator so that CPU and CUDA runs see the same order.
    perm = torch.randperm(n, generator=generator).to(split.x.device)
    for i in range(0, n, batch_size):
        idx = perm[i : i + batch_size]
        yield torch.index_select(split.x, 0, idx), torch.index_select(split.y, 0, idx)
