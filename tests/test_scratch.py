"""The scratch control (--scratch, evolve/scratch.py): a depth's chosen widths trained from a fresh initialisation
for the training FLOPs the controller spent, run for real on digits."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
import torch

from rankprune.cli import main
from rankprune.config import RunConfig, TrainConfig
from rankprune.data import load
from rankprune.evolve import Replica, evolve_together
from rankprune.evolve import scratch as scratch_mod
from rankprune.evolve.scratch import SCRATCH_EPOCH_CAP, SCRATCH_KEYS, epoch_flops, scratch_epochs
from rankprune.models import get_family
from rankprune.runfolder import CONFIG, DEPTHS, EPOCHS, ITERATIONS, SCRATCH, RunFolder, config_key
from rankprune.study import parse_spec, run_study, trial_attributes, trial_folder
from rankprune.train import train_to_saturation

CLOCK = {"scratch_seconds"}


def scratch_config(tiny_config, **sections):
    """One depth from width 32 that shrinks over a few iterations, with one learning-rate drop, and the control."""
    base = tiny_config(evolve={"layers": (1,), "max_iterations": 3, "scratch": True},
                       train={"max_epochs": 3, "patience": 1, "lr_drops": 1})
    return base.replace(**sections).validate()


def scratch_result(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k.startswith("scratch_") and k not in CLOCK}


def curve(run: RunFolder) -> list[dict]:
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in run.rows(SCRATCH)]


@pytest.fixture(scope="module")
def finished(tiny_config, run_controller, tmp_path_factory):
    """A finished run with the control: (its config, its folder)."""
    cfg = scratch_config(tiny_config)
    return cfg, run_controller(cfg, tmp_path_factory.mktemp("scratch") / "run")


def test_the_control_records_its_result_and_spends_the_depths_budget(finished, digits):
    cfg, run = finished
    summary = run.read(DEPTHS)["1"]
    assert set(SCRATCH_KEYS) <= set(summary)
    assert summary["scratch_budget_flops"] == summary["cumulative_flops"] > 0
    # whole epochs at the chosen network's FLOPs per epoch: within one epoch's FLOPs of the budget
    per_epoch = epoch_flops(cfg, digits, summary["widths"])
    assert abs(summary["scratch_flops"] - summary["scratch_budget_flops"]) <= per_epoch
    assert summary["scratch_flops"] == pytest.approx(summary["scratch_epochs"] * per_epoch)
    assert summary["scratch_train_stop"] == "max-epochs" and summary["scratch_capped"] is False
    rows = run.rows(SCRATCH)
    assert [r["epoch"] for r in rows] == list(range(1, summary["scratch_epochs"] + 1))  # the whole budget, no early stop
    assert all(r["depth"] == 1 and r["widths"] == summary["widths"] for r in rows)
    assert rows[-1]["cumulative_flops"] == summary["scratch_flops"]
    # scored at the end of the budget, not at its best epoch
    assert (rows[-1]["val_acc"], rows[-1]["test_acc"]) == (summary["scratch_val_acc"], summary["scratch_test_acc"])
    assert 0.5 < summary["scratch_test_acc"] <= 1  # it learned digits
    assert summary["scratch_epochs"] > 2  # enough epochs for the interrupt test below to stop it mid-way


def test_the_control_keeps_the_learning_rate_drops_and_the_base_weight_decay(digits):
    """A fixed budget still anneals on a plateau; only the plateau after the last drop no longer stops it."""
    cfg = TrainConfig(max_epochs=6, patience=1, min_delta=1.0, lr_drops=1, saturate="accuracy", weight_decay=5e-3)
    family = get_family("mlp")
    runs = {}
    for fixed in (False, True):
        model, lrs = family.build(digits.input_shape, [16], digits.n_classes, 0), []
        result = train_to_saturation(model, digits, cfg, 5e-3, 0, lambda r: lrs.append(r["lr"]), stop_at_saturation=not fixed)
        runs[fixed] = (result, lrs)
    assert runs[False][0].epochs < 6 and runs[False][0].stop_reason == "saturated"
    assert runs[True][0].epochs == 6 and runs[True][0].stop_reason == "max-epochs"
    assert sorted(set(runs[True][1])) == [pytest.approx(0.005), 0.05]


def test_the_budget_becomes_whole_epochs_under_a_cap(tiny_config, digits):
    cfg = scratch_config(tiny_config)
    per_epoch = epoch_flops(cfg, digits, [10])
    assert scratch_epochs(cfg, digits, [10], 4.4 * per_epoch) == (4, False)
    assert scratch_epochs(cfg, digits, [10], 0.1 * per_epoch) == (1, False)  # at least one epoch
    assert scratch_epochs(cfg, digits, [10], 1e6 * per_epoch) == (SCRATCH_EPOCH_CAP * cfg.train.max_epochs, True)


def test_the_same_seed_gives_the_same_control(finished, run_controller, tmp_path):
    cfg, run = finished
    again = run_controller(cfg, tmp_path / "again")
    assert scratch_result(again.read(DEPTHS)["1"]) == scratch_result(run.read(DEPTHS)["1"])
    assert curve(again) == curve(run)
    other = run_controller(cfg.replace(seed=1), tmp_path / "other")
    assert curve(other) != curve(run)


def test_the_control_starts_from_its_own_initialisation(tiny_config, run_controller, tmp_path, monkeypatch):
    """Not the controller's first network: with one iteration and no shrink the two have the same widths."""
    cfg = scratch_config(tiny_config, evolve={"max_iterations": 1, "rebuild": "reinit"}, rank={"min_width": 32})
    started = {}
    real = scratch_mod.train_to_saturation

    def spy(model, *args, **kwargs):
        started.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(scratch_mod, "train_to_saturation", spy)
    run = run_controller(cfg, tmp_path / "run")
    summary = run.read(DEPTHS)["1"]
    assert summary["widths"] == summary["initial_widths"] == [32]
    first = run.load_weights(1, 0, start=True)
    assert started.keys() == first.keys()
    assert not any(torch.equal(started[k], first[k]) for k in first)


def test_off_by_default_adds_nothing(tiny_config, run_controller, tmp_path):
    cfg = tiny_config(evolve={"layers": (1,), "max_iterations": 2})
    assert cfg.evolve.scratch is False
    run = run_controller(cfg, tmp_path / "run")
    assert not any(k.startswith("scratch") for k in run.read(DEPTHS)["1"])
    assert not (run.path / SCRATCH).exists()
    # a config.json from before the setting reads as off, and names the same default folder as it did
    stored = cfg.to_dict()
    del stored["evolve"]["scratch"]
    assert RunConfig.from_stored(stored).evolve.scratch is False
    assert config_key(stored) == config_key(cfg.to_dict()) != config_key(cfg.replace(evolve={"scratch": True}).to_dict())


def test_a_resume_never_retrains_a_finished_control(finished, run_controller, tmp_path, monkeypatch):
    cfg, done = finished
    folder = tmp_path / "run"
    shutil.copytree(done.path, folder)
    before = {name: (folder / name).read_bytes() for name in (SCRATCH, DEPTHS, ITERATIONS)}

    def refuse(*args, **kwargs):
        raise AssertionError("the control was trained again")

    monkeypatch.setattr(scratch_mod, "train_to_saturation", refuse)
    run_controller(cfg, folder)
    assert {name: (folder / name).read_bytes() for name in before} == before


def test_a_run_interrupted_in_the_control_redoes_only_the_control(finished, run_controller, tmp_path, monkeypatch):
    cfg, uninterrupted = finished
    real = scratch_mod.train_to_saturation

    def interrupted(model, data, train_cfg, weight_decay, seed, on_epoch, **kwargs):
        def stop_after_two(record):
            on_epoch(record)
            if record["epoch"] == 2:
                raise KeyboardInterrupt

        return real(model, data, train_cfg, weight_decay, seed, stop_after_two, **kwargs)

    monkeypatch.setattr(scratch_mod, "train_to_saturation", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_controller(cfg, tmp_path / "run")
    run = RunFolder(tmp_path / "run")
    assert len(run.rows(SCRATCH)) == 2 and run.read(DEPTHS) is None
    iterations, epochs = (run.path / ITERATIONS).read_bytes(), (run.path / EPOCHS).read_bytes()

    monkeypatch.setattr(scratch_mod, "train_to_saturation", real)
    run_controller(cfg, run.path)
    assert (run.path / ITERATIONS).read_bytes() == iterations and (run.path / EPOCHS).read_bytes() == epochs
    # the torn attempt's epochs are gone; what is left is exactly the uninterrupted run's
    assert curve(run) == curve(uninterrupted)
    assert scratch_result(run.read(DEPTHS)["1"]) == scratch_result(uninterrupted.read(DEPTHS)["1"])


def test_replicas_in_lockstep_each_train_their_control(tiny_config, tmp_path):
    configs = [scratch_config(tiny_config, data={"seed": 0}, seed=s) for s in (0, 3)]
    data = load(configs[0].data, configs[0].data_seed)
    replicas = [Replica(c, data, RunFolder(tmp_path / f"seed-{c.seed}", tags={"seed": c.seed})) for c in configs]
    for r in replicas:
        r.run.path.mkdir()
        r.run.write(CONFIG, r.cfg.to_dict())
    results = evolve_together(replicas)
    for c, r, [depth] in zip(configs, replicas, results):
        assert set(SCRATCH_KEYS) <= set(depth.summary) and r.run.read(DEPTHS)["1"] == depth.summary
        rows = r.run.rows(SCRATCH)
        assert len(rows) == depth.summary["scratch_epochs"] and {row["seed"] for row in rows} == {c.seed}
    assert curve(replicas[0].run) != curve(replicas[1].run)


def test_study_trials_carry_the_control(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(textwrap.dedent("""\
        [study]
        name = "scratch"
        mode = "evolve"
        sampler = "random"
        n_trials = 2

        [base.data]
        dataset = "digits"
        [base.train]
        max_epochs = 2
        patience = 1
        lr_drops = 0
        [base.rank]
        measure = "numerical:0.2"
        [base.evolve]
        max_iterations = 2
        max_drop = 1.0

        [space]
        depth = 1
        width = { low = 8, high = 16 }
        "evolve.scratch" = { choices = [true] }
        """))
    study = run_study(parse_spec(path), f"sqlite:///{tmp_path / 'studies.sqlite3'}", tmp_path / "root", 2, batch=2)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 2
    for t in trials:
        depths = json.loads((trial_folder(t.user_attrs["run_folder"], t.user_attrs["artifact_root"]) / DEPTHS).read_text())
        assert {k: t.user_attrs[k] for k in SCRATCH_KEYS} == {k: depths["1"][k] for k in SCRATCH_KEYS}


def test_trial_attributes_carry_the_control_only_where_it_ran():
    summary = {
        "ranks": [3.0], "widths": [4], "initial_widths": [8], "rank_measure": "numerical", "layer_ranks": {},
        "parameters": 310, "train_acc": 0.9, "val_acc": 0.85, "test_acc": 0.8, "train_loss": 0.3, "test_loss": 0.5,
        "generalisation_gap": 0.1, "epochs": 7, "iterations": 2, "stop_reason": "fixed-point",
        "cumulative_seconds": 1.5, "cumulative_flops": 1e6,
    }
    plain = trial_attributes(summary, "mlp", (64,), 10, Path("/runs/t"))
    assert not any(k.startswith("scratch") for k in plain)
    control = {"scratch_test_acc": 0.78, "scratch_val_acc": 0.8, "scratch_epochs": 9, "scratch_flops": 9e5,
               "scratch_budget_flops": 1e6, "scratch_capped": False}
    attrs = trial_attributes({**summary, **control}, "mlp", (64,), 10, Path("/runs/t"))
    assert {k: attrs[k] for k in control} == control


def test_the_command_line_flag_turns_it_on(tmp_path):
    out = tmp_path / "out"
    argv = ["--dataset", "digits", "--width", "16", "--layers", "1", "--max-epochs", "2", "--patience", "2",
            "--max-iterations", "2", "--rank", "numerical:0.2"]
    assert main(["evolve", *argv, "--scratch", "--out", str(out)]) == 0
    assert json.loads((out / CONFIG).read_text())["evolve"]["scratch"] is True
    assert set(SCRATCH_KEYS) <= set(json.loads((out / DEPTHS).read_text())["1"])
    assert (out / SCRATCH).is_file()


def test_the_run_report_shows_the_control_beside_the_chosen_network(finished):
    from rankprune.report.run import _depth_table

    _cfg, run = finished
    depths = run.read(DEPTHS)
    column = "test acc % from scratch, same FLOPs"
    table = _depth_table(depths)
    s = depths["1"]
    assert table[column].tolist() == [f"{100 * s['scratch_test_acc']:.2f} ({s['scratch_epochs']} epochs)"]
    plain = {k: {n: v for n, v in d.items() if not n.startswith("scratch")} for k, d in depths.items()}
    assert column not in _depth_table(plain)
