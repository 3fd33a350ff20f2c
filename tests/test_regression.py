"""--dataset regression:NAME: the lazy-training experiments' 1-D tasks, trained with MSE and scored by R^2."""

from __future__ import annotations

import json

import pytest
import torch

from rankprune.config import ConfigError, RunConfig
from rankprune.data import load
from rankprune.regression import TARGETS, score
from rankprune.runfolder import EPOCHS, ITERATIONS


def _data(task="middle", seed=0, **data):
    return load(RunConfig().replace(data={"dataset": f"regression:{task}", **data}, train={"loss": "mse"}).data, seed)


def test_r_squared_by_hand():
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])  # mean 2.5, SS_tot = 5
    assert score(y.unsqueeze(1), y) == 1.0
    assert score(torch.full((4, 1), 2.5), y) == 0.0
    assert score(torch.tensor([[1.0], [2.0], [3.0], [5.0]]), y) == pytest.approx(1 - 1 / 5)


@pytest.mark.parametrize("task", sorted(TARGETS))
def test_the_splits_are_the_function_with_noise_on_training_targets_only(task):
    d = _data(task, points=20, noise=0.1)
    f = TARGETS[task]
    assert len(d.train) == 20 and d.input_shape == (1,) and d.n_classes == 1
    for split in (d.train, d.val, d.test):
        assert split.x.min() >= -1 and split.x.max() <= 1 and split.y.dtype == torch.float32
    assert torch.allclose(d.val.y, f(d.val.x[:, 0]), atol=1e-6) and torch.allclose(d.test.y, f(d.test.x[:, 0]), atol=1e-6)
    residual = d.train.y - f(d.train.x[:, 0])
    assert 0.03 < float(residual.std()) < 0.2  # the noise, 0.1, from 20 draws
    again, other = _data(task, points=20, noise=0.1), _data(task, seed=1, points=20, noise=0.1)
    assert torch.equal(again.train.x, d.train.x) and torch.equal(again.train.y, d.train.y)
    assert not torch.equal(other.train.x, d.train.x)


def test_the_tasks_grow_in_wiggliness():
    x = torch.linspace(-1, 1, 2001)
    # total variation: how much each function goes up and down on [-1, 1]
    variation = {name: float(f(x).diff().abs().sum()) for name, f in TARGETS.items()}
    assert variation["simple"] < variation["middle"] < variation["complex"]


def test_a_regression_run_trains_with_mse_and_reports_r_squared(tmp_path):
    from rankprune.cli import main

    out = tmp_path / "run"
    code = main(["evolve", "--dataset", "regression:simple", "--points", "12", "--width", "32", "--layers", "1",
                 "--max-iterations", "1", "--weight-decay", "0", "--out", str(out)])
    assert code == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["loss"] == "mse" and cfg["data"]["points"] == 12
    rows = [json.loads(line) for line in (out / ITERATIONS).read_text().splitlines()]
    epochs = [json.loads(line) for line in (out / EPOCHS).read_text().splitlines()]
    assert all(e["samples"] == 4096 for e in epochs)  # an epoch cycles the 12 points
    assert rows[-1]["test_acc"] > 0.8  # R^2 of a sine fitted from 12 points
    assert rows[-1]["train_loss"] < 0.05


@pytest.mark.parametrize("flags, message", [
    (["--dataset", "regression:wiggly"], "unknown regression task"),
    (["--dataset", "regression:simple", "--label-noise", "0.1"], "--label-noise"),
    (["--dataset", "regression:simple", "--loss", "hinge"], "--loss mse"),
    (["--dataset", "regression:simple", "--model", "cnn"], "image"),
    (["--dataset", "regression:simple", "--points", "1"], "--points"),
    (["--dataset", "regression:simple", "--noise", "-1"], "--noise"),
])
def test_bad_regression_settings_are_one_line_and_write_nothing(tmp_path, capsys, flags, message):
    from rankprune.cli import main

    out = tmp_path / "run"
    code = main(["evolve", *flags, "--layers", "1", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and not out.exists()


def test_an_api_config_must_name_the_loss():
    with pytest.raises(ConfigError, match="--loss mse"):
        RunConfig().replace(data={"dataset": "regression:simple"}).validate()
