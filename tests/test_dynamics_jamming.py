"""The jamming experiment (dynamics/jamming.py) and the fixed-step loop it shares (dynamics/steps.py): the hinge
loss, N_Delta, find_h and the parity task against hand-computed values; checkpoints at the asked steps; the full
Hessian against autograd's; N*; and the command end to end on the bundled digits (resume, refusal, interrupt)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rankprune.cli import main
from rankprune.dynamics.jamming import (JammingSettings, find_h, fully_connected, hessian_spectrum, n_delta, n_star,
                                        parity_labels, parity_task, quadratic_hinge, weight_count)
from rankprune.dynamics.steps import Movement, log_steps, run_steps

DIGITS = dict(dataset="digits", points=200, dim=10)


def test_the_quadratic_hinge_and_n_delta_by_hand():
    f = torch.tensor([2.0, 0.5, 1.0, -1.0, 0.2])
    y = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0])
    # Delta = 1 - y f = -1, 0.5, 0, 0, 1.2 -> squared positive parts 0, 0.25, 0, 0, 1.44 over 5 constraints
    assert float(quadratic_hinge(f, y)) == pytest.approx((0.25 + 1.44) / 5)
    assert n_delta(f, y) == 4  # Delta >= 0: the three exactly at or inside the margin, and the wrong one
    # several outputs: every output's margin of every pattern is a constraint
    assert n_delta(torch.tensor([[2.0, -2.0], [0.0, 3.0]]), torch.tensor([[1.0, -1.0], [1.0, 1.0]])) == 1


def test_find_h_solves_the_weight_count_of_nn_jamming():
    assert find_h(1000, 2, 10) == 27 and weight_count(2, 10, 27) == 27 * 10 + 27 * 27 + 27 == 1026
    assert find_h(1100, 1, 10) == 100 and weight_count(1, 10, 100) == 1100
    for depth in (1, 2, 3, 5):
        for n in (300, 3000, 30000):
            h = find_h(n, depth, 10)
            # the nearest width: one unit more or less is no closer to n
            assert abs(weight_count(depth, 10, h) - n) <= min(abs(weight_count(depth, 10, h + d) - n) for d in (-1, 1))


def test_log_steps_are_log_spaced_whole_steps_with_zero_and_the_budget():
    assert log_steps(100, 5) == [0, 1, 3, 10, 32, 100]
    assert log_steps(4, 10) == [0, 1, 2, 3, 4]
    steps = log_steps(3000, 60)
    assert steps[0] == 0 and steps[-1] == 3000 and len(set(steps)) == len(steps) == 61
    assert steps == sorted(steps)


def test_run_steps_measures_exactly_at_the_asked_steps_and_stops_at_zero():
    taken = []
    rows = run_steps(taken.append, 50, [1, 7, 20], lambda s: {"value": s})
    assert [r["step"] for r in rows] == [0, 1, 7, 20, 50] and taken == list(range(50))
    rows = run_steps(lambda i: None, 50, [1, 7, 20], lambda s: {"loss": 0.0 if s >= 7 else 1.0},
                     stop=lambda r: r["loss"] == 0.0)
    assert [r["step"] for r in rows] == [0, 1, 7]


def test_movement_is_the_relative_frobenius_distance_from_the_start():
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))  # norm 5
    movement = Movement(model)
    with torch.no_grad():
        model.weight.add_(torch.tensor([[0.0, 3.0], [4.0, 0.0]]))  # a change of norm 5
    assert movement(model) == {"movement": [pytest.approx(1.0)], "movement_network": pytest.approx(1.0)}


def test_parity_labels_and_the_parity_task():
    assert parity_labels(torch.tensor([0, 1, 2, 3, 8, 9])).tolist() == [-1, 1, -1, 1, -1, 1]
    s = JammingSettings(**DIGITS)
    task = parity_task(s, seed=3)
    assert task.x.shape == (200, 10) and task.x.dtype == torch.float64
    assert task.y.tolist() == parity_labels(torch.tensor(task.digits)).tolist()
    assert float(task.y.sum()) == 0  # half of each parity
    # whitened principal components of the training patterns: mean 0, variance 1, uncorrelated
    cov = torch.cov(task.x.T)
    assert torch.allclose(cov, torch.eye(10, dtype=cov.dtype), atol=1e-8)
    assert task.x_test.shape[1] == 10 and set(task.y_test.unique().tolist()) == {-1.0, 1.0}
    again = parity_task(s, seed=3)
    assert torch.equal(again.x, task.x) and parity_task(s, seed=4).digits != task.digits


def test_the_network_starts_orthogonal_with_zero_biases_and_reproduces_from_its_seed():
    model = fully_connected(10, 16, 2, seed=5)
    first = model.hidden[0].weight  # 16 x 10: orthonormal columns
    assert torch.allclose(first.T @ first, torch.eye(10, dtype=first.dtype), atol=1e-12)
    assert all(float(layer.bias.detach().abs().max()) == 0 for layer in model.hidden)
    assert torch.equal(fully_connected(10, 16, 2, seed=5).out.weight, model.out.weight)
    assert not torch.equal(fully_connected(10, 16, 2, seed=6).out.weight, model.out.weight)


def test_the_full_hessian_matches_autograd_on_the_whole_training_set():
    task = parity_task(JammingSettings(**{**DIGITS, "points": 40, "dim": 3}), seed=0)
    model = fully_connected(3, 4, 2, seed=1)
    with torch.no_grad():  # large outputs, so that some patterns are satisfied and drop out of the products
        model.out.weight.mul_(30)
    params = list(model.parameters())
    shapes = [p.shape for p in params]
    flat = torch.cat([p.detach().reshape(-1) for p in params])

    def loss_of(vector):
        chunks, i = [], 0
        for shape in shapes:
            n = int(np.prod(shape))
            chunks.append(vector[i:i + n].reshape(shape))
            i += n
        x = task.x
        for k in range(2):
            x = torch.relu(x @ chunks[2 * k].T + chunks[2 * k + 1])
        f = (x @ chunks[4].T + chunks[5])[:, 0]
        return quadratic_hinge(f, task.y)  # the mean over all P, satisfied patterns included

    expected = np.linalg.eigvalsh(torch.autograd.functional.hessian(loss_of, flat).numpy())
    got = hessian_spectrum(model, task)
    assert got["parameters"] == len(flat) and 0 < got["active"] < 40
    assert np.allclose(sorted(got["eigenvalues"]), expected, atol=1e-10)


def test_n_star_interpolates_the_crossing_in_log_n_and_censors_at_the_grid_ends():
    # ratio 3 at N=100 and 0 at N=1000 -> 1 is a third of the way: N* = 100 * 10^(2/3)
    assert n_star([100, 1000, 10000], [3.0, 0.0, 0.0]) == (pytest.approx(100 * 10 ** (2 / 3)), "=")
    assert n_star([1000, 100, 10], [0.0, 3.0, 9.0])[0] == pytest.approx(100 * 10 ** (2 / 3))  # any order
    assert n_star([100, 1000], [0.5, 0.1]) == (100.0, "<")
    assert n_star([100, 1000], [5.0, 2.0]) == (1000.0, ">")


# --- the command ----------------------------------------------------------------------------------------------
ARGS = ["dynamics", "jamming", "--dataset", "digits", "--points", "200", "--depths", "2", "--params", "60,400",
        "--seeds", "0,1", "--steps", "40", "--checkpoints", "6", "--hessian-max", "300"]


def _units(folder):
    return {p.name: p.stat().st_mtime_ns for p in (folder / "units").glob("*.json")}


def test_the_command_runs_the_grid_writes_the_report_and_continues_without_repeating(tmp_path, capsys):
    out = tmp_path / "jam"
    assert main(ARGS + ["--out", str(out)]) == 0
    units = _units(out)
    assert set(units) == {f"jamming-L2-N{n}-seed{s}.json" for s in (0, 1) for n in (400, 60)}
    unit = json.loads((out / "units" / "jamming-L2-N60-seed0.json").read_text())
    assert [r["step"] for r in unit["rows"]][:3] == [0, 1, 2] and unit["rows"][-1]["step"] in (unit["steps_run"], 40)
    assert unit["N"] == weight_count(2, 10, unit["h"]) and unit["hessian"]["init"]["eigenvalues"]
    report = (out / "report.md").read_text()
    assert "N* per depth" in report and (out / "figures" / "jamming-phase-diagram.png").is_file()
    settings = json.loads((out / "experiment.json").read_text())
    assert settings["kind"] == "jamming" and settings["settings"]["steps"] == 40 and "versions" in settings["environment"]
    assert main(ARGS + ["--out", str(out)]) == 0  # again: nothing is trained twice
    assert _units(out) == units
    capsys.readouterr()
    # other settings in the same folder: refused in one line, nothing touched
    assert main(ARGS[:-8] + ["--seeds", "0,1", "--steps", "41", "--checkpoints", "6", "--hessian-max", "300",
                             "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "other settings" in err and "steps" in err and "\n" not in err
    assert _units(out) == units


@pytest.mark.parametrize("flags, words", [
    (["--points", "201"], "even"), (["--params", "3"], "no hidden unit"), (["--dataset", "cifar"], "unknown dataset"),
    (["--points", "20000"], "fewer than"), (["--optimizer", "lbfgs"], "adam or sgd"), (["--seeds", "x"], "--seeds"),
    (["--params", "60,60"], "repeats"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, flags, words):
    try:
        status = main(ARGS + flags + ["--out", str(tmp_path / "bad")])
    except SystemExit as exc:  # argparse's own complaint
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_an_interrupt_keeps_the_finished_networks(tmp_path, monkeypatch, capsys):
    import rankprune.dynamics.jamming as jamming

    real, calls = jamming.train_network, []

    def second_one_interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(jamming, "train_network", second_one_interrupted)
    out = tmp_path / "jam"
    assert main(ARGS + ["--out", str(out)]) == 130
    assert len(_units(out)) == 1 and "1 of 4 networks are finished and kept" in capsys.readouterr().err
    monkeypatch.setattr(jamming, "train_network", real)
    assert main(ARGS + ["--out", str(out)]) == 0 and len(_units(out)) == 4
