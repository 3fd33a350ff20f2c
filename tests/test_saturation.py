"""--saturate accuracy | rank | both: the plateau rules on hand-made epoch sequences, and in a real run."""

from __future__ import annotations

import json

import pytest

from rankprune.config import ConfigError, RunConfig
from rankprune.runfolder import CONFIG, EPOCHS, ITERATIONS
from rankprune.saturation import Saturation


def _epochs_until_plateau(rule, accs, ranks, patience=3, min_delta=0.002, rank_tol=2):
    s = Saturation(rule, patience, min_delta, rank_tol)
    for epoch, (acc, r) in enumerate(zip(accs, ranks), start=1):
        s.observe(acc, r)
        if s.plateaued:
            return epoch
    return None


# Accuracy flat from epoch 2; the rank keeps falling by 10 a epoch until epoch 6, then moves by 1.
ACCS = [0.90, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95]
RANKS = [[100, 50], [90, 50], [80, 50], [70, 50], [60, 50], [50, 50], [49, 50], [50, 49], [49, 49], [48, 49], [48, 49]]


def test_accuracy_rule_stops_while_the_rank_still_falls():
    assert _epochs_until_plateau("accuracy", ACCS, [None] * len(ACCS)) == 5  # epochs 3, 4, 5 without a gain


def test_rank_rule_waits_until_every_layer_is_within_tolerance_over_patience_epochs():
    # epochs 6..9 (patience + 1 = 4 measurements) span 50..49 and 50..49: within 2 units at epoch 9
    assert _epochs_until_plateau("rank", ACCS, RANKS) == 9
    # a tolerance of 0 needs four identical measurements: never here
    assert _epochs_until_plateau("rank", ACCS, RANKS, rank_tol=0) is None
    # a tolerance of 11: epochs 5..8 (60, 50, 49, 50) are the first window within it
    assert _epochs_until_plateau("rank", ACCS, RANKS, rank_tol=11) == 8


def test_one_moving_layer_is_enough_to_keep_training():
    ranks = [[10, 100 - 5 * e] for e in range(12)]
    assert _epochs_until_plateau("rank", [0.9] * 12, ranks) is None


def test_rank_rule_ignores_a_rising_accuracy_and_both_needs_the_two():
    rising = [0.5 + 0.02 * e for e in range(11)]
    flat_ranks = [[20, 20]] * 11
    assert _epochs_until_plateau("rank", rising, flat_ranks) == 4
    assert _epochs_until_plateau("both", rising, flat_ranks) is None
    assert _epochs_until_plateau("both", ACCS, RANKS) == 9
    accs_late = ACCS[:8] + [0.99, 0.99, 0.99]  # a late gain at epoch 9 restarts the accuracy count
    assert _epochs_until_plateau("both", accs_late, RANKS) is None


def test_restart_forgets_the_window():
    s = Saturation("rank", 2, 0.002, 0)
    for _ in range(3):
        s.observe(0.9, [5])
    assert s.plateaued
    s.restart()
    assert not s.plateaued
    s.observe(0.9, [5]), s.observe(0.9, [5])
    assert not s.plateaued
    s.observe(0.9, [5])
    assert s.plateaued


def test_both_asks_for_measured_later_ranks_only_once_accuracy_is_flat():
    # The controller hands the rule functions that wait for an epoch's ranks (measured beside the next epoch,
    # probes/beside.py); under `both` the epochs before accuracy is flat never wait for theirs.
    asked = []

    def later(epoch: int, ranks: tuple):
        return lambda: asked.append(epoch) or ranks

    s = Saturation("both", patience=2, min_delta=0.0)
    for epoch, acc in enumerate([0.5, 0.6, 0.7, 0.8], start=1):
        s.observe(acc, later(epoch, (10,)))
        assert not s.plateaued
    assert asked == []  # accuracy still rising: no rank was needed
    s.observe(0.8, later(5, (10,)))
    s.observe(0.8, later(6, (10,)))
    assert s.plateaued and asked == [4, 5, 6]  # the window's ranks, each asked once
    assert s.plateaued and asked == [4, 5, 6]


def test_rank_rules_refuse_to_run_without_ranks():
    with pytest.raises(ValueError, match="needs the driving ranks"):
        Saturation("both", 2, 0.0).observe(0.9, None)


@pytest.mark.parametrize("rule", ["rank", "both"])
def test_a_run_under_a_rank_rule_stops_only_once_the_driving_rank_is_flat(tmp_path, tiny_config, run_controller, rule):
    cfg = tiny_config(train={"saturate": rule, "rank_tol": 1, "patience": 2, "max_epochs": 30},
                      model={"width": 48}, evolve={"layers": (2,), "max_iterations": 2})
    run = run_controller(cfg, tmp_path / "run")
    epochs, iterations = run.rows(EPOCHS), run.rows(ITERATIONS)
    assert json.loads((run.path / CONFIG).read_text())["train"]["saturate"] == rule
    assert any(it["train_stop"] == "saturated" for it in iterations)
    for it in iterations:
        rows = [e for e in epochs if e["iteration"] == it["iteration"]]
        assert len(rows) == it["epochs"]
        if it["train_stop"] != "saturated":
            continue
        window = [e[f"rank_{cfg.rank.measure}"][:-1] for e in rows[-3:]]  # patience + 1 measurements
        assert len(window) == 3
        for layer in zip(*window):
            assert max(layer) - min(layer) <= 1
        if rule == "both":  # accuracy too: no gain > min_delta over the reference in the last two epochs
            accs = [e["val_acc"] for e in rows]
            assert max(accs[-2:]) <= max(accs[:-2]) + cfg.train.min_delta


def test_the_accuracy_rule_is_unchanged_by_the_seam(tmp_path, tiny_config, run_controller):
    """The accuracy rule stops where the accuracy rule alone says, whatever the ranks do (the rank window is
    never consulted): the epoch count equals the rule replayed on the recorded accuracies."""
    cfg = tiny_config(train={"saturate": "accuracy", "patience": 2, "max_epochs": 30}, evolve={"layers": (1,), "max_iterations": 2})
    run = run_controller(cfg, tmp_path / "run")
    for it in run.rows(ITERATIONS):
        accs = [e["val_acc"] for e in run.rows(EPOCHS) if e["iteration"] == it["iteration"]]
        replay = _epochs_until_plateau("accuracy", accs, [None] * len(accs), patience=2, min_delta=cfg.train.min_delta)
        assert replay == (it["epochs"] if it["train_stop"] == "saturated" else None)


@pytest.mark.parametrize("train", [{"saturate": "ranks"}, {"rank_tol": -1}, {"rank_tol": 1.5}, {"rank_tol": True}])
def test_a_bad_rule_or_tolerance_is_a_config_error(train):
    with pytest.raises(ConfigError):
        RunConfig.from_dict({"train": train}).validate()


@pytest.mark.parametrize("flags", [["--saturate", "loss"], ["--rank-tol", "-2"], ["--rank-tol", "two"]])
def test_the_cli_refuses_a_bad_rule_in_one_line_and_writes_nothing(tmp_path, capsys, flags):
    from rankprune.cli import main

    out = tmp_path / "bad"
    try:
        code = main(["evolve", "--dataset", "digits", "--layers", "1", *flags, "--out", str(out)])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and not out.exists()
