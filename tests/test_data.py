"""Datasets in memory: seeded splits, fractions, the batch iterator, missing-data errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from rankprune.config import DataConfig
from rankprune.data import DataError, Split, batches, expected_files, load, small_validation_warning

DIGITS = DataConfig(dataset="digits")


def grey_levels(split: Split, lo: float, hi: float) -> np.ndarray:
    """Undo the scalar normalisation: digits pixels are the integers 0..16, and lo/hi are where 0 and 16 went."""
    return np.rint((split.x.numpy() - lo) / (hi - lo) * 16).astype(np.int64)


def all_levels(splits) -> tuple[np.ndarray, ...]:
    xs = torch.cat([splits.train.x, splits.val.x, splits.test.x])
    lo, hi = float(xs.min()), float(xs.max())
    return tuple(grey_levels(s, lo, hi) for s in (splits.train, splits.val, splits.test))


def rows(a: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in a}


def test_digits_splits_partition_the_dataset():
    splits = load(DIGITS, seed=0)
    train, val, test = all_levels(splits)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1294, 144, 359)
    assert (splits.n_features, splits.n_classes) == (64, 10)
    # Digits has no duplicate images, so each row identifies its sample: disjoint, and all 1,797 used.
    original = load_digits().data.astype(np.int64)
    assert len(rows(original)) == len(original)
    assert not rows(train) & rows(val) and not rows(train) & rows(test) and not rows(val) & rows(test)
    assert rows(train) | rows(val) | rows(test) == rows(original)
    # Labels travel with their images.
    label_of = {r.tobytes(): y for r, y in zip(original, load_digits().target)}
    for levels, split in zip((train, val, test), (splits.train, splits.val, splits.test)):
        assert [label_of[r.tobytes()] for r in levels] == split.y.tolist()


def test_digits_is_normalised_on_the_training_split():
    splits = load(DIGITS, seed=0)
    assert splits.train.x.dtype == torch.float32 and splits.train.y.dtype == torch.int64
    assert float(splits.train.x.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(splits.train.x.std()) == pytest.approx(1.0, abs=1e-4)


def test_same_seed_same_split():
    a, b = load(DIGITS, seed=3), load(DIGITS, seed=3)
    for sa, sb in zip((a.train, a.val, a.test), (b.train, b.val, b.test)):
        assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y)


def test_different_seed_different_train_and_val_but_the_same_test():
    a, b = load(DIGITS, seed=0), load(DIGITS, seed=1)
    (a_train, a_val, a_test), (b_train, b_val, b_test) = all_levels(a), all_levels(b)
    assert rows(a_train) != rows(b_train)
    assert rows(a_val) != rows(b_val)
    # The test split is fixed whatever the seed, so runs with different seeds are compared on it.
    assert np.array_equal(a_test, b_test) and torch.equal(a.test.y, b.test.y)


@pytest.mark.parametrize(("fraction", "n_train", "n_val"), [(0.5, 647, 144), (0.1, 129, 144), (1.0, 1294, 144)])
def test_train_fraction_shrinks_train(fraction, n_train, n_val):
    splits = load(DataConfig(dataset="digits", train_fraction=fraction), seed=0)
    assert (len(splits.train), len(splits.val)) == (n_train, n_val)
    assert len(splits.test) == 359  # the test split is never fractioned


def test_val_fraction_sets_the_validation_size():
    splits = load(DataConfig(dataset="digits", val_fraction=0.25), seed=0)
    assert (len(splits.train), len(splits.val)) == (1078, 360)


@pytest.mark.parametrize(("n", "batch_size"), [(100, 7), (64, 64), (65, 64), (5, 10), (1, 1)])
def test_batches_cover_every_index_once_per_epoch(n, batch_size):
    split = Split(torch.arange(n, dtype=torch.float32).unsqueeze(1) * 10, torch.arange(n))
    generator = torch.Generator().manual_seed(0)
    orders = []
    for _epoch in range(3):
        got = list(batches(split, batch_size, generator))
        sizes = [len(y) for _x, y in got]
        assert all(s == batch_size for s in sizes[:-1]) and 0 < sizes[-1] <= batch_size
        ys = torch.cat([y for _x, y in got])
        xs = torch.cat([x for x, _y in got])
        assert sorted(ys.tolist()) == list(range(n))
        assert torch.equal(xs.squeeze(1), ys.float() * 10)  # x and y stay paired
        orders.append(ys.tolist())
    if n > 5:
        assert orders[0] != orders[1]  # a fresh permutation each epoch


def test_batches_order_is_seeded():
    split = Split(torch.zeros(50, 1), torch.arange(50))
    first = [y.tolist() for _x, y in batches(split, 8, torch.Generator().manual_seed(5))]
    again = [y.tolist() for _x, y in batches(split, 8, torch.Generator().manual_seed(5))]
    other = [y.tolist() for _x, y in batches(split, 8, torch.Generator().manual_seed(6))]
    assert first == again
    assert first != other


def test_mnist10k_loads(mnist10k):
    splits = load(DataConfig(dataset="mnist", data_dir=str(mnist10k), download=False), seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (7200, 800, 2000)
    assert (splits.n_features, splits.n_classes) == (784, 10)
    assert splits.train.x.shape == (7200, 1, 28, 28) and splits.train.x.dtype == torch.float32  # images keep their shape
    assert splits.input_shape == (1, 28, 28)
    assert float(splits.train.x.mean()) == pytest.approx(0.0, abs=1e-4)
    assert set(splits.test.y.unique().tolist()) == set(range(10))


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist", "kmnist"])
def test_missing_data_without_download_is_one_line_naming_folder_and_files(tmp_path, dataset):
    with pytest.raises(DataError) as info:
        load(DataConfig(dataset=dataset, data_dir=str(tmp_path), download=False), seed=0)
    message = str(info.value)
    assert "\n" not in message
    raw, names = expected_files(dataset, tmp_path)
    assert str(raw) in message and str(tmp_path) in message
    assert names and all(name in message for name in names)
    # no command's flag here: `evolve` and `study run` each add the hint that fits them
    assert "--dataset" not in message


def test_missing_mnist_message_names_the_four_idx_files(tmp_path):
    with pytest.raises(DataError) as info:
        load(DataConfig(dataset="mnist", data_dir=str(tmp_path), download=False), seed=0)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert name in str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in str(info.value)


def test_splits_record_their_normalisation_and_sizes(digits):
    described = digits.describe()
    assert (described["n_train"], described["n_val"], described["n_test"]) == (len(digits.train), len(digits.val), len(digits.test))
    assert described["n_train_pool"] == described["n_train"] + described["n_val"]  # train fraction 1
    assert (described["n_features"], described["n_classes"]) == (64, 10)
    # the recorded mean and std turn raw [0, 1] inputs into exactly what the network trained on
    from sklearn.datasets import load_digits

    raw = torch.from_numpy(load_digits().data.astype("float32") / 16.0)
    normalised = (raw - described["normalisation"]["mean"]) / described["normalisation"]["std"]
    rows = {tuple(r.tolist()) for r in normalised.round(decimals=4)}
    assert all(tuple(r.flatten().tolist()) in rows for r in digits.test.x[:20].round(decimals=4))
    assert described["input_shape"] == [1, 8, 8]
    assert json.loads(json.dumps(described)) == described  # JSON as it stands


@pytest.mark.parametrize("val_fraction, warned", [(0.05, True), (0.1, False)])
def test_a_tiny_validation_split_is_warned_about(val_fraction, warned):
    splits = load(DataConfig(dataset="digits", val_fraction=val_fraction), seed=4)
    message = small_validation_warning(splits)
    assert (message is not None) == warned
    if warned:
        assert str(len(splits.val)) in message and "\n" not in message


def test_digits_read_from_the_package_file_equal_scikit_learns_load_digits():
    """The digits are read from scikit-learn's data file without importing sklearn.datasets (1.5 s of every
    command's start); they must be exactly what load_digits returns."""
    import numpy as np
    from sklearn.datasets import load_digits

    from rankprune.data import _digits_table

    table, bunch = _digits_table(), load_digits()
    assert np.array_equal(table[:, :64], bunch.data) and np.array_equal(table[:, 64].astype(int), bunch.target)


@pytest.mark.parametrize("fraction", [1.0, 0.25, 1 / 16])
def test_the_validation_split_comes_from_the_pool_whatever_the_train_fraction(fraction):
    """Issue 19: carved from the train fraction, 1/16 of digits validated on 9 images; drawn from the pool first, every
    fraction validates on the same 144, and at fraction 1 the split is the one runs have always had."""
    from rankprune.config import DataConfig

    pool = load(DataConfig(dataset="digits", train_fraction=fraction), seed=3)
    full = load(DataConfig(dataset="digits"), seed=3)
    assert len(pool.val) == len(full.val) == 144 and torch.equal(pool.val.y, full.val.y)
    assert len(pool.train) == max(1, round(fraction * 1294))
    assert pool.describe()["validation_from"] == "pool" and pool.describe()["n_val"] == 144
    old = load(DataConfig(dataset="digits", train_fraction=fraction, validation="fraction"), seed=3)
    assert len(old.val) == max(1, round(0.1 * round(fraction * 1438)))  # what format 3 did, kept for its runs
    if fraction == 1.0:
        assert torch.equal(old.train.x, pool.train.x) and torch.equal(old.val.y, pool.val.y)


def test_a_config_of_format_3_keeps_its_validation_split_on_resume():
    from rankprune.config import RunConfig

    stored = RunConfig().to_dict()
    stored["format_version"] = 3
    del stored["data"]["validation"]
    assert RunConfig.from_stored(stored).data.validation == "fraction"
    assert RunConfig().data.validation == "pool"
