"""--label-noise: a seeded fraction of training labels replaced; validation and test never touched."""

from __future__ import annotations

import math

import pytest
import torch

from rankprune.config import ConfigError, RunConfig
from rankprune.data import load
from rankprune.runfolder import ITERATIONS


def digits(noise: float, seed: int = 0, **data):
    cfg = RunConfig().replace(data={"dataset": "digits", "label_noise": noise, **data}, seed=seed).validate()
    return load(cfg.data, cfg.seed)


@pytest.mark.parametrize("noise", [0.1, 0.25, 0.5])
@pytest.mark.parametrize("seed", [0, 7])
def test_the_fraction_relabelled_is_p_and_only_training_labels_move(noise, seed):
    clean, noisy = digits(0.0, seed), digits(noise, seed)
    n, k = len(noisy.train), noisy.n_classes
    assert len(noisy.relabelled) == round(noise * n)
    # inputs, validation and test are exactly the noise-free run's
    for a, b in ((clean.train.x, noisy.train.x), (clean.val.x, noisy.val.x), (clean.val.y, noisy.val.y),
                 (clean.test.x, noisy.test.x), (clean.test.y, noisy.test.y)):
        assert torch.equal(a, b)
    assert torch.equal(noisy.true_labels, clean.train.y)
    changed = (noisy.train.y != clean.train.y).nonzero().flatten()
    assert set(changed.tolist()) <= set(noisy.relabelled.tolist())  # nothing outside the drawn rows moved
    # a uniformly random class keeps the true one with probability 1/k: changed ~ Binomial(relabelled, 1 - 1/k)
    m, p = len(noisy.relabelled), 1 - 1 / k
    assert abs(len(changed) - m * p) <= 4 * math.sqrt(m * p * (1 - p))
    assert int(noisy.train.y.max()) < k and int(noisy.train.y.min()) >= 0


def test_the_same_seed_relabels_the_same_rows_and_another_seed_other_rows():
    a, b, c = digits(0.25, 3), digits(0.25, 3), digits(0.25, 4)
    assert torch.equal(a.relabelled, b.relabelled) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.true_labels[a.relabelled], c.true_labels[c.relabelled[: len(a.relabelled)]]) or \
        not torch.equal(a.relabelled, c.relabelled)


def test_no_noise_records_nothing():
    d = digits(0.0)
    assert d.relabelled is None and "label_noise" not in d.describe()


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_noise_outside_0_1_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="label noise"):
        RunConfig().replace(data={"label_noise": bad}).validate()


def test_every_iteration_reports_memorisation_and_the_run_records_the_rows(tmp_path, tiny_config, run_controller):
    run = run_controller(tiny_config(data={"label_noise": 0.3}, evolve={"layers": (1,), "max_iterations": 2}), tmp_path / "run")
    data = digits(0.3)
    for row in run.rows(ITERATIONS):
        for key in ("train_acc_relabelled", "train_acc_relabelled_true", "train_acc_clean"):
            assert 0 <= row[key] <= 1
        n, m = len(data.train), len(data.relabelled)
        # the overall training accuracy is the rows' mix of the two (against the labels trained on)
        assert row["train_acc"] == pytest.approx((m * row["train_acc_relabelled"] + (n - m) * row["train_acc_clean"]) / n)
    clean = run_controller(tiny_config(evolve={"layers": (1,), "max_iterations": 1}), tmp_path / "clean")
    assert all("train_acc_clean" not in r for r in clean.rows(ITERATIONS))


def test_the_cli_records_the_relabelled_rows_in_data_json(tmp_path):
    import json

    from rankprune.cli import main

    out = tmp_path / "run"
    assert main(["evolve", "--dataset", "digits", "--layers", "1", "--width", "16", "--max-iterations", "1",
                 "--max-epochs", "2", "--label-noise", "0.2", "--seed", "5", "--out", str(out)]) == 0
    recorded = json.loads((out / "data.json").read_text())["label_noise"]
    data = digits(0.2, seed=5)
    assert recorded["rows"] == data.relabelled.tolist() and recorded["relabelled"] == len(data.relabelled)
    assert recorded["label_changed"] == int((data.train.y != data.true_labels).sum())
    assert json.loads((out / "config.json").read_text())["data"]["label_noise"] == 0.2
