"""Shared fixtures: tiny configurations on scikit-learn's bundled digits, and run-folder helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rankprune.config import RunConfig
from rankprune.data import load
from rankprune.evolve import NullReporter, evolve
from rankprune.runfolder import CONFIG, RunFolder

# One intra-op thread: the networks here are at most 64 wide, where a second thread buys nothing,
# and on a shared 2-core machine two spinning OpenMP threads per process made a controller run
# 20-30x slower (94 s instead of 3.4 s for the same run). Results are unchanged.
torch.set_num_threads(1)

# The real MNIST subset (8,000 train + 2,000 test digits) lies beside the repository in CI
# (../shared from the repository root); a user's clone has none.
MNIST10K = Path(__file__).resolve().parents[2] / "shared/data/mnist10k"


def _tiny_config(**sections) -> RunConfig:
    base = RunConfig().replace(
        data={"dataset": "digits"},
        model={"width": 32},
        train={"max_epochs": 3, "patience": 2, "lr_drops": 0, "weight_decay": 5e-3, "batch_size": 64},
        rank={"measure": "numerical:0.2", "min_width": 1},
        evolve={"layers": (1, 2), "max_iterations": 3, "max_drop": 1.0, "width_tol": 0.0},
        seed=0,
    )
    return base.replace(**sections).validate()


@pytest.fixture(scope="session")
def tiny_config():
    """tiny_config(**sections) -> RunConfig: a digits run small enough for a unit test.

    Width 32, depths 1 and 2, 3 epochs, at most 3 iterations, an exact fixed point (width_tol 0) and
    no accuracy-drop stop (max_drop 1: the 144-image validation split moves 0.7% per image).
    Sections override it as RunConfig.replace does: tiny_config(model={"width": 64}, seed=3).
    """
    return _tiny_config


@pytest.fixture(scope="session")
def mnist10k() -> Path:
    """The MNIST subset's folder (a torchvision data_dir); skips the test where it is absent."""
    if not (MNIST10K / "MNIST" / "raw").is_dir():
        pytest.skip(f"no MNIST subset at {MNIST10K}")
    return MNIST10K


@pytest.fixture(scope="session")
def digits():
    """Digits splits for seed 0 (the split depends on the seed; tests that vary it load their own)."""
    return load(_tiny_config().data, seed=0)


@pytest.fixture(scope="session")
def run_controller():
    """run_controller(cfg, path, reporter=None) -> RunFolder: the real controller, in the folder `path`.

    Creates the folder and writes config.json as the CLI does, then calls evolve.evolve. Calling it
    again on the same path continues (resumes) that folder. Datasets are loaded once per (data, seed).
    """
    cache: dict[tuple, object] = {}

    def run(cfg: RunConfig, path: Path, reporter=None) -> RunFolder:
        key = (cfg.data, cfg.seed)
        if key not in cache:
            cache[key] = load(cfg.data, cfg.seed)
        folder = RunFolder(path)
        if not (folder.path / CONFIG).is_file():
            folder.create(overwrite=False)
            folder.write(CONFIG, cfg.to_dict())
        evolve(cfg, cache[key], folder, reporter or NullReporter())
        return folder

    return run
