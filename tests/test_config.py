"""Configuration: --layers parsing, dict round trips, validation."""

from __future__ import annotations

import json

import pytest

from rankprune.config import ConfigError, RunConfig, load_toml, parse_layers


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2..5", (2, 3, 4, 5)), ("2,3,5", (2, 3, 5)), ("4", (4,)), ("3..3", (3,)), (" 1..2 ", (1, 2)), ("5,2", (5, 2))],
)
def test_parse_layers_forms(text, expected):
    assert parse_layers(text) == expected


@pytest.mark.parametrize("text", ["5..2", "x", "0", "2,2", "", "2..", "..5", "1..3..5", "2,,3", "-1", "0..3", "2.5"])
def test_parse_layers_rejects(text):
    with pytest.raises(ConfigError) as info:
        parse_layers(text)
    assert "\n" not in str(info.value)


def test_defaults_validate():
    assert RunConfig().validate() == RunConfig()


def test_round_trip_through_dict_and_json():
    cfg = RunConfig().replace(
        data={"dataset": "digits", "data_dir": "/tmp/x", "download": False, "train_fraction": 0.5},
        model={"width": 17},
        train={"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "precision": "bf16"},
        rank={"measure": "energy:0.99", "min_width": 3},
        evolve={"layers": (1, 3, 4), "max_iterations": 2, "wd_decay": 0.5},
        seed=7,
        device="cuda:1",
    )
    d = cfg.to_dict()
    assert d["evolve"]["layers"] == [1, 3, 4]  # a plain list, as JSON stores it
    assert RunConfig.from_dict(d) == cfg
    assert RunConfig.from_dict(json.loads(json.dumps(d))) == cfg
    assert RunConfig.from_dict(json.loads(json.dumps(d))).evolve.layers == (1, 3, 4)


def test_from_dict_of_a_partial_dict_keeps_defaults():
    cfg = RunConfig.from_dict({"model": {"width": 9}, "seed": 4})
    assert cfg.model.width == 9 and cfg.seed == 4
    assert cfg.train == RunConfig().train


@pytest.mark.parametrize(
    "d",
    [{"nope": 1}, {"train": {"lrr": 0.1}}, {"model": {"width": 8, "depth": 3}}, {"evolve": {"layer": [2]}}, {"train": 3}],
)
def test_from_dict_rejects_unknown_keys_and_non_tables(d):
    with pytest.raises(ConfigError):
        RunConfig.from_dict(d)


def test_replace_leaves_the_original_alone():
    cfg = RunConfig()
    other = cfg.replace(train={"lr": 0.5}, seed=3)
    assert (other.train.lr, other.seed) == (0.5, 3)
    assert (cfg.train.lr, cfg.seed) == (RunConfig().train.lr, 0)
    assert other.train.momentum == cfg.train.momentum


@pytest.mark.parametrize(
    "sections",
    [
        {"train": {"weight_decay": -1e-4}},
        {"train": {"weight_decay": float("nan")}},
        {"train": {"lr": 0.0}},
        {"train": {"optimizer": "rmsprop"}},
        {"train": {"max_epochs": 0}},
        {"model": {"width": 0}},
        {"rank": {"measure": "bogus"}},
        {"rank": {"measure": "energy"}},
        {"rank": {"min_width": 0}},
        {"data": {"dataset": "nope"}},
        {"data": {"train_fraction": 0.0}},
        {"data": {"val_fraction": 1.0}},
        {"evolve": {"layers": ()}},
        {"evolve": {"layers": (0, 2)}},
        {"evolve": {"max_iterations": 0}},
        {"evolve": {"rebuild": "copy"}},
        {"device": "tpu"},
    ],
)
def test_validate_rejects(sections):
    with pytest.raises(ConfigError) as info:
        RunConfig().replace(**sections).validate()
    assert "\n" not in str(info.value)


def test_load_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('seed = 5\n[model]\nwidth = 12\n[evolve]\nlayers = [2, 3]\n')
    cfg = RunConfig.from_dict(load_toml(path))
    assert (cfg.seed, cfg.model.width, cfg.evolve.layers) == (5, 12, (2, 3))


@pytest.mark.parametrize("content", [None, "[model\nwidth = "])
def test_load_toml_errors_name_the_file(tmp_path, content):
    path = tmp_path / "c.toml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match="c.toml"):
        load_toml(path)
