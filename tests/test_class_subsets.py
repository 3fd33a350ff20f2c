"""--classes K: K classes in train, validation and test, relabelled 0..K-1; the output layer has K units."""

from __future__ import annotations

import pytest
import torch

from rankprune.config import ConfigError, RunConfig
from rankprune.data import load
from rankprune.runfolder import ITERATIONS


def digits(**data):
    cfg = RunConfig().replace(data={"dataset": "digits", **data}).validate()
    return load(cfg.data, cfg.seed)


@pytest.mark.parametrize("k", [2, 5, 10])
def test_the_first_k_classes_are_kept_in_every_split(k):
    full, part = digits(), digits(classes=k)
    assert part.n_classes == k and part.kept_classes == list(range(k))
    for name in ("train", "val", "test"):
        split = getattr(part, name)
        assert set(split.y.unique().tolist()) == set(range(k))
    # the test split is exactly the full test split's rows of those classes
    keep = full.test.y < k
    assert torch.equal(part.test.y, full.test.y[keep])
    # equal steps: the epoch budget is the full training split's, whatever the classes
    assert part.full_train_size == full.full_train_size


def test_a_seeded_choice_is_reproducible_and_relabelled_in_order():
    a, b = digits(classes=3, classes_seed=4), digits(classes=3, classes_seed=4)
    assert a.kept_classes == b.kept_classes and a.kept_classes == sorted(a.kept_classes)
    assert torch.equal(a.train.y, b.train.y)
    full = digits()
    original = torch.tensor(a.kept_classes)
    rows = torch.isin(full.test.y, original)
    assert torch.equal(original[a.test.y], full.test.y[rows])  # label i is kept_classes[i]
    choices = {tuple(digits(classes=3, classes_seed=s).kept_classes) for s in range(6)}
    assert len(choices) > 1


@pytest.mark.parametrize(("data", "match"), [({"classes": 1}, "at least 2"), ({"classes_seed": 3}, "give --classes"),
                                             ({"classes": 0}, "at least 2")])
def test_bad_class_settings_are_config_errors(data, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig().replace(data={"dataset": "digits", **data}).validate()


def test_more_classes_than_the_dataset_has_is_a_config_error():
    with pytest.raises(ConfigError, match="only 10 classes"):
        digits(classes=11)


def test_a_run_on_k_classes_has_k_outputs(tmp_path, tiny_config, run_controller):
    run = run_controller(tiny_config(data={"classes": 3}, evolve={"layers": (1,), "max_iterations": 1}), tmp_path / "run")
    state = run.load_weights(1, 0)
    assert state["linears.1.weight"].shape[0] == 3
    assert all(r["test_acc"] > 0.5 for r in run.rows(ITERATIONS))
