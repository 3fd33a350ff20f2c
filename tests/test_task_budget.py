"""An equal optimisation budget: --samples-per-epoch cycles a smaller training set to the full set's steps."""

from __future__ import annotations

import pytest
import torch

from rankprune.config import ConfigError, RunConfig, TrainConfig
from rankprune.data import epoch_order, load
from rankprune.models import build_mlp
from rankprune.train import train_to_saturation


def one_epoch(cfg: RunConfig) -> dict:
    data = load(cfg.data, cfg.seed)
    records = []
    train = TrainConfig(max_epochs=1, samples_per_epoch=cfg.train.samples_per_epoch, weight_decay=5e-3)
    model = build_mlp(data.input_shape, [16], data.n_classes, seed=0)
    train_to_saturation(model, data, train, 5e-3, seed=1, on_epoch=records.append)
    return {**records[0], "n_train": len(data.train), "n_full": data.full_train_size}


def digits(fraction: float, samples=None) -> RunConfig:
    return RunConfig().replace(data={"dataset": "digits", "train_fraction": fraction},
                               train={"samples_per_epoch": samples}).validate().resolved()


def test_every_fraction_gets_the_full_sets_steps_per_epoch_by_default():
    full = one_epoch(digits(1.0))
    assert full["samples"] == full["n_train"] == full["n_full"]
    for fraction in (0.5, 0.25, 0.125):
        r = one_epoch(digits(fraction))
        assert r["n_train"] < full["n_train"] and r["n_full"] == full["n_full"]
        assert (r["steps"], r["samples"]) == (full["steps"], full["samples"])
        assert r["distinct_samples"] == r["n_train"]
        assert r["flops"] == pytest.approx(full["flops"])  # same network, same samples: same compute


def test_pass_gives_one_pass_over_the_data_used_and_n_gives_n():
    full, quarter = one_epoch(digits(1.0, "pass")), one_epoch(digits(0.25, "pass"))
    assert quarter["samples"] == quarter["n_train"] < full["samples"] == full["n_train"]
    assert quarter["steps"] == -(-quarter["n_train"] // 64)
    r = one_epoch(digits(0.25, 1000))
    assert r["samples"] == 1000 and r["steps"] == -(-1000 // 64) and r["distinct_samples"] == r["n_train"]


def test_an_epoch_longer_than_the_data_cycles_seeded_reshuffles():
    n, samples = 10, 25
    order = epoch_order(n, samples, torch.Generator().manual_seed(0))
    assert len(order) == samples
    assert sorted(order[:10].tolist()) == sorted(order[10:20].tolist()) == list(range(n))  # whole passes first
    assert len(set(order[20:].tolist())) == 5  # then part of a fresh pass, no row twice within it
    assert not torch.equal(order[:10], order[10:20])  # each pass reshuffled
    assert torch.equal(order, epoch_order(n, samples, torch.Generator().manual_seed(0)))
    # one pass is exactly the permutation a plain epoch draws (runs made before this setting are unchanged)
    assert torch.equal(epoch_order(n, n, torch.Generator().manual_seed(3)), torch.randperm(n, generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("bad", [0, -3, "passes", 1.5, True])
def test_a_bad_samples_per_epoch_is_a_config_error(bad):
    with pytest.raises(ConfigError):
        RunConfig.from_dict({"train": {"samples_per_epoch": bad}}).validate()


def test_the_cli_rejects_words_other_than_pass_in_one_line(tmp_path, capsys):
    from rankprune.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["evolve", "--dataset", "digits", "--layers", "1", "--samples-per-epoch", "often", "--out", str(tmp_path / "bad")])
    assert exit_.value.code == 2
    assert "--samples-per-epoch" in capsys.readouterr().err and not (tmp_path / "bad").exists()
