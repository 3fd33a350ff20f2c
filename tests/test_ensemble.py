"""Batched ensembles (models/batched.py, ensemble.py, evolve_together): a member trained in a batch is the same
configuration trained alone, up to floating-point summation order; padded units stay out of everything."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rankprune.cli import main
from rankprune.config import TrainConfig
from rankprune.data import load
from rankprune.ensemble import Member, batch_key, train_batch, train_members
from rankprune.evolve import Replica, evolve, evolve_together
from rankprune.models import get_family
from rankprune.runfolder import DEPTHS, EPOCHS, ITERATIONS, RunFolder
from rankprune.scaling import center_and_scale
from rankprune.train import train_to_saturation
from rankprune.study import trial_folder

# Different widths (padding in every hidden layer), seeds, weight decays and learning rates per member.
SPECS = [([24, 12], 1, 5e-3, 0.05), ([16, 12], 2, 1e-3, 0.08), ([24, 7], 3, 0.0, 0.05), ([9, 5], 4, 2e-3, 0.03),
         ([20, 16], 5, 5e-3, 0.05)]


@pytest.fixture(scope="module")
def digits():
    return load(__import__("rankprune.config", fromlist=["DataConfig"]).DataConfig(dataset="digits"), 0)


def _train_cfg(lr: float, **kw) -> TrainConfig:
    return TrainConfig(lr=lr, max_epochs=6, patience=2, lr_drops=1, saturate="accuracy", samples_per_epoch="pass", **kw)


def _members(digits, specs, family="mlp", records=None):
    fam = get_family(family)
    out = []
    for i, (widths, seed, wd, lr) in enumerate(specs):
        model = fam.build(digits.input_shape, widths, digits.n_classes, seed)
        on_epoch = None if records is None else records.setdefault(i, []).append
        out.append(Member(model, _train_cfg(lr), wd, 100 + seed, on_epoch))
    return out


@pytest.mark.parametrize("k", [1, 2, 5])
def test_a_member_in_a_batch_trains_as_it_would_alone(digits, k):
    specs = SPECS[:k]
    alone_records, batch_records = {}, {}
    alone = _members(digits, specs, records=alone_records)
    for m in alone:
        train_to_saturation(m.model, digits, m.cfg, m.weight_decay, m.seed, m.on_epoch)
    batched = _members(digits, specs, records=batch_records)
    results = {}
    train_batch(batched, digits, results.__setitem__)  # the batched step even for K = 1
    for i, (a, b) in enumerate(zip(alone, batched)):
        assert results[i].epochs == len(alone_records[i]) == len(batch_records[i])
        for ra, rb in zip(alone_records[i], batch_records[i]):
            assert abs(ra["val_acc"] - rb["val_acc"]) <= 0.002 and abs(ra["test_acc"] - rb["test_acc"]) <= 0.002
            assert ra["lr"] == pytest.approx(rb["lr"])  # its own learning-rate drops
        for pa, pb in zip(a.model.parameters(), b.model.parameters()):
            assert pa.shape == pb.shape
            assert torch.allclose(pa, pb, atol=1e-4), f"member {i} drifted from its lone run"
            assert pb.is_contiguous()  # released: storage of its own again, not a view of the batch


def test_padded_units_stay_zero_and_members_keep_their_own_widths(digits):
    members = _members(digits, SPECS[:3])
    net = get_family("mlp").batched([m.model for m in members])
    assert net.widths == [24, 12]
    x = digits.train.x[:64].flatten(1).expand(3, 64, -1).contiguous()
    net(x).sum().backward()
    for p, m in enumerate(members):  # the MLP stacks weights as (K, in, out): a hidden unit is a column
        h = m.model.widths[0]
        assert torch.all(net.weights[0][p][:, h:] == 0) and torch.all(net.weights[0].grad[p][:, h:] == 0)
        assert torch.all(net.weights[1].grad[p][h:, :] == 0)  # the next layer never reads padding
    # A member's own network reads its block: the batch's output for member k is its network's output.
    with torch.no_grad():
        for k, m in enumerate(members):
            assert torch.allclose(net(x)[k], m.model(x[k]), atol=1e-5)


def test_a_cnn_member_in_a_batch_trains_as_it_would_alone(digits):
    specs = [([6, 4], 1, 1e-3, 0.02), ([3, 4], 2, 1e-3, 0.02)]
    alone, batched = _members(digits, specs, "cnn"), _members(digits, specs, "cnn")
    for m in alone:
        train_to_saturation(m.model, digits, m.cfg, m.weight_decay, m.seed)
    train_members(batched, digits)
    for a, b in zip(alone, batched):
        for pa, pb in zip(a.model.parameters(), b.model.parameters()):
            assert torch.allclose(pa, pb, atol=1e-4)


def test_settings_that_cannot_share_a_step_train_alone(digits):
    base = _members(digits, SPECS[:2])
    assert batch_key(base[0]) == batch_key(base[1]) is not None
    other_batch = Member(base[1].model, TrainConfig(batch_size=32), 0.0, 1)
    adam = Member(base[1].model, TrainConfig(optimizer="adam"), 0.0, 1)
    assert batch_key(other_batch) != batch_key(base[0]) and batch_key(adam) is None
    scaled = _members(digits, SPECS[:1])[0]
    center_and_scale(scaled.model, 4.0)
    assert batch_key(scaled) is None


def test_a_diverging_member_stops_alone_and_the_others_go_on(digits):
    members = _members(digits, SPECS[:3])
    members[1].cfg = _train_cfg(1e6)  # diverges at once
    results = train_members(members, digits)
    assert results[1].stop_reason == "diverged" and results[1].epochs == 1
    assert all(results[i].stop_reason != "diverged" and results[i].epochs > 1 for i in (0, 2))


def _replica_configs(tiny_config, seeds):
    base = tiny_config(evolve={"layers": (2,), "max_iterations": 3}, train={"max_epochs": 4, "lr_drops": 1},
                       data={"seed": 0})
    return [base.replace(seed=s) for s in seeds]


def test_replicas_in_lockstep_reproduce_their_single_runs(tiny_config, tmp_path):
    configs = _replica_configs(tiny_config, [0, 3, 7])
    data = load(configs[0].data, configs[0].data_seed)
    replicas = [Replica(c, data, RunFolder(tmp_path / f"seed-{c.seed}", tags={"seed": c.seed})) for c in configs]
    for r in replicas:
        r.run.path.mkdir()
        (r.run.path / "weights").mkdir()
    evolve_together(replicas)
    for c, r in zip(configs, replicas):
        single = RunFolder(tmp_path / f"single-{c.seed}")
        single.path.mkdir()
        (single.path / "weights").mkdir()
        evolve(c, load(c.data, c.data_seed), single)
        together, alone = r.run.rows(ITERATIONS), single.rows(ITERATIONS)
        assert [row["widths"] for row in together] == [row["widths"] for row in alone]
        for a, b in zip(together, alone):
            assert abs(a["val_acc"] - b["val_acc"]) <= 0.002 and abs(a["test_acc"] - b["test_acc"]) <= 0.002
        assert all(row["seed"] == c.seed for row in together + r.run.rows(EPOCHS))


def _evolve_seeds(tmp_path, *extra):
    return main(["evolve", "--dataset", "digits", "--layers", "2", "--width", "24", "--max-epochs", "4",
                 "--patience", "2", "--max-iterations", "2", "--seeds", "0..2", "--out", str(tmp_path / "reps"), *extra])


def test_evolve_seeds_writes_a_run_per_seed_and_the_spread(tmp_path, capsys):
    assert _evolve_seeds(tmp_path) == 0
    doc = json.loads((tmp_path / "reps/replicates.json").read_text())
    assert doc["seeds"] == [0, 1, 2] and doc["data_seed"] == 0
    summary = doc["summary"]["2"]
    totals = []
    for s in (0, 1, 2):
        depths = json.loads((tmp_path / f"reps/seed-{s}/depths.json").read_text())
        cfg = json.loads((tmp_path / f"reps/seed-{s}/config.json").read_text())
        assert cfg["seed"] == s and cfg["data"]["seed"] == 0
        totals.append(sum(depths["2"]["widths"]))
    assert summary["total_width"]["mean"] == pytest.approx(sum(totals) / 3)
    assert summary["total_width"]["min"] == min(totals) and summary["seeds"] == [0, 1, 2]
    assert "mean ± sd over seeds" in capsys.readouterr().out
    # The report of the folder: the spread per depth, every seed, and the per-iteration figure.
    assert main(["report", str(tmp_path / "reps")]) == 0
    report = (tmp_path / "reps/report/report.md").read_text()
    # over the seeds whose total is measured, the censored ones (a width at a bound) counted beside: units.spread_text
    from rankprune.units import spread_text, widths_text

    assert spread_text(summary["censoring"]["total_width"], extent=True) in report
    for s in (0, 1, 2):
        chosen = json.loads((tmp_path / f"reps/seed-{s}/depths.json").read_text())["2"]
        assert f"| {s}      | 2       | {widths_text(chosen['widths'], chosen.get('censored'))}" in report
    assert (tmp_path / "reps/report/figures/replicates_per_iteration.png").stat().st_size > 0


def test_an_interrupted_seeds_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    assert _evolve_seeds(tmp_path) == 0
    reference = {s: RunFolder(tmp_path / f"reps/seed-{s}").rows(ITERATIONS) for s in (0, 1, 2)}
    other = tmp_path / "again"
    other.mkdir()
    import rankprune.evolve.loop as loop

    real, calls = loop._record, {"n": 0}

    def interrupt_after_four(*args):
        real(*args)
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_record", interrupt_after_four)
    assert _evolve_seeds(other) == 130
    kept = sum(len(RunFolder(other / f"reps/seed-{s}").rows(ITERATIONS)) for s in (0, 1, 2))
    assert kept == 4  # every member-iteration that finished is on disk
    monkeypatch.setattr(loop, "_record", real)
    assert main(["evolve", "--out", str(other / "reps"), "--resume"]) == 0
    for s in (0, 1, 2):
        rows = RunFolder(other / f"reps/seed-{s}").rows(ITERATIONS)
        assert [r["widths"] for r in rows] == [r["widths"] for r in reference[s]]
        assert all(math.isclose(a["val_acc"], b["val_acc"], abs_tol=0.002) for a, b in zip(rows, reference[s]))
        assert json.loads((other / f"reps/seed-{s}" / DEPTHS).read_text())


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "3..1"], "bad --seeds"),
    (["--seeds", "0,0"], "appears twice"),
    (["--seeds", "0..1", "--seed", "4"], "not both"),
    (["--seeds", "0..1", "--batch-members", "0"], "--batch-members"),
])
def test_bad_seeds_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    assert main(["evolve", "--dataset", "digits", "--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


# --- studies: --batch K asks K trials at once and trains each depth's trials together --------------------------
def _study(tmp_path, name, space, n_trials, batch, sampler="random"):
    from studyfiles import tiny_study_toml

    (tmp_path / f"{name}.toml").write_text(tiny_study_toml(name, sampler, n_trials, max_epochs=3, space=space))
    root = tmp_path / "runs"
    assert main(["study", "run", str(tmp_path / f"{name}.toml"), "--root", str(root), "--batch", str(batch)]) == 0
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{root}/studies.sqlite3"), root


def test_a_batched_study_gives_each_trial_what_it_gets_alone(tmp_path):
    from rankprune.config import RunConfig
    from rankprune.evolve import NullReporter, evolve_depth

    study, root = _study(tmp_path, "batched", 'depth = { choices = [1, 2] }\nwidth = { low = 8, high = 24 }\n'
                                              '"train.lr" = { low = 0.03, high = 0.1, log = true }\n', 5, 5)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 5 and all(t.state.name == "COMPLETE" for t in trials)
    for t in trials:
        folder = trial_folder(t.user_attrs["run_folder"], t.user_attrs["artifact_root"])
        cfg = RunConfig.from_stored(json.loads((folder / "config.json").read_text()))
        alone = RunFolder(tmp_path / f"alone-{t.number}")
        (alone.path / "weights").mkdir(parents=True)
        widths = t.user_attrs["initial_widths"]
        result = evolve_depth(cfg, load(cfg.data, cfg.data_seed), alone, len(widths), NullReporter(), initial_widths=widths)
        assert result.summary["widths"] == t.user_attrs["widths"]
        assert abs(result.summary["val_acc"] - t.user_attrs["val_acc"]) <= 0.002


def test_a_batched_grid_study_runs_each_cell_once(tmp_path):
    study, _ = _study(tmp_path, "grid", 'depth = { choices = [1, 2] }\nwidth = 16\n"train.lr" = { choices = [0.05, 0.1] }\n', 10, 3,
                      sampler="grid")
    cells = [(t.params["depth"], t.params["train.lr"]) for t in study.get_trials(deepcopy=False)]
    assert sorted(cells) == [(1, 0.05), (1, 0.1), (2, 0.05), (2, 0.1)]


def test_a_diverging_trial_fails_alone_in_its_batch(tmp_path):
    study, _ = _study(tmp_path, "nan", 'depth = 1\n"train.lr" = { choices = [0.05, 1000000.0] }\n', 6, 6)
    states = {t.number: (t.params["train.lr"], t.state.name) for t in study.get_trials(deepcopy=False)}
    assert {lr for lr, _ in states.values()} == {0.05, 1e6}  # both kinds were drawn into the one batch
    assert all(state == ("FAIL" if lr == 1e6 else "COMPLETE") for lr, state in states.values())


@pytest.mark.parametrize("family, specs", [("mlp", SPECS[:3]), ("cnn", [([6, 4], 1, 0.0, 0.02), ([3, 4], 2, 0.0, 0.02)])])
def test_a_batch_measures_each_members_own_spectrum(digits, family, specs):
    import numpy as np

    from rankprune.measure import measure_layers, recorded_measures

    members = _members(digits, specs, family)
    net = get_family(family).batched([m.model for m in members])
    measures = recorded_measures("numerical:0.02")
    for member, values in zip(members, net.singular_values()):
        own = measure_layers(member.model, measures)
        assert [len(v) for v in values] == [len(v) for v in own.singular_values]  # padding adds nothing
        for v, o in zip(values, own.singular_values):
            assert np.allclose(v, o, atol=1e-5 * o[0])
        ranks = measure_layers(member.model, measures, singular=values).ranks
        for spec in own.ranks:  # counts equal; the continuous measures (effective, stable) to float32 rounding
            assert ranks[spec] == pytest.approx(own.ranks[spec], rel=1e-5), spec
    with torch.no_grad():
        net.weights[0][1].fill_(float("nan"))
    assert net.singular_values()[1] is None and net.singular_values()[0] is not None


def test_the_default_batch_follows_the_device_and_the_members_size():
    from rankprune.ensemble import CPU_BATCH_MAX_PARAMETERS, GPU_MAX_MEMBERS, default_batch_members, member_bytes

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert default_batch_members(cpu, CPU_BATCH_MAX_PARAMETERS) == 16
    assert default_batch_members(cpu, CPU_BATCH_MAX_PARAMETERS + 1) == 1  # wide networks lose in a CPU batch
    lenet = member_bytes(266_610, 128, 784 + 400)
    assert default_batch_members(cuda, 266_610, lenet, free=80 * 2**30) == GPU_MAX_MEMBERS
    assert default_batch_members(cuda, 266_610, lenet, free=64 * lenet) == 32  # half the free memory
    assert default_batch_members(cuda, 266_610, lenet, free=lenet) == 1


def test_the_api_runs_replicates_as_the_cli_does(tiny_config, tmp_path):
    import rankprune as rp

    cfg = tiny_config(evolve={"layers": (1,), "max_iterations": 2})
    reps = rp.run_seeds(cfg, seeds=(4, 5), out=tmp_path / "reps", progress=False)
    assert reps.seeds == (4, 5) and set(reps.runs) == {4, 5}
    assert reps.runs[5].config.seed == 5 and reps.runs[5].config.data.seed == 4  # the first seed's data
    totals = [sum(reps.runs[s].depths.iloc[0]["widths"]) for s in (4, 5)]
    row = reps.summary.iloc[0]
    assert row["depth"] == 1 and row["total_width_mean"] == pytest.approx(sum(totals) / 2)
    with pytest.raises(rp.ConfigError, match="not empty"):
        rp.run_seeds(cfg, seeds=(4, 5), out=tmp_path / "reps", progress=False)


def test_members_are_packed_by_size_so_padding_stays_small(digits):
    from rankprune.ensemble import MAX_PADDING, pack

    fam = get_family("mlp")
    widths = [[500], [8], [480], [9], [2000], [2100]]
    members = [Member(fam.build(digits.input_shape, w, digits.n_classes, s), _train_cfg(0.05), 0.0, s)
               for s, w in enumerate(widths)]
    chunks = pack(members, list(range(len(members))), digits)
    assert sorted(map(sorted, chunks)) == [[0, 2], [1, 3], [4, 5]]
    for chunk in chunks:
        padded = max(members[i].model.widths[0] for i in chunk)
        assert padded * len(chunk) <= MAX_PADDING * sum(members[i].model.widths[0] for i in chunk) + 1e-9
    assert pack(members, [0, 2], digits, max_members=1) == [[2], [0]]


def test_an_interrupted_batched_study_leaves_no_trial_running(tmp_path, monkeypatch):
    """Ctrl-C while the batch's first depth trains fails that depth's trials and those of the depths still waiting."""
    import optuna

    import rankprune.evolve.loop as loop
    from studyfiles import tiny_study_toml

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "evolve_depth_together", interrupted)
    (tmp_path / "s.toml").write_text(tiny_study_toml("cut", "grid", 4, space='depth = { choices = [1, 2] }\nwidth = 8\n'
                                                                          '"train.lr" = { choices = [0.05, 0.1] }\n'))
    root = tmp_path / "runs"
    assert main(["study", "run", str(tmp_path / "s.toml"), "--root", str(root), "--batch", "4"]) == 130
    trials = optuna.load_study(study_name="cut", storage=f"sqlite:///{root}/studies.sqlite3").get_trials(deepcopy=False)
    assert len(trials) == 4 and {t.params["depth"] for t in trials} == {1, 2}
    assert all(t.state.name == "FAIL" and "interrupted" in t.user_attrs["fail_reason"] for t in trials)
