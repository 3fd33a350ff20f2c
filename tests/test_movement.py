"""--movement: relative weight movement from the iteration's start and the first initialisation, and the rank
of the change, against closed forms and in real runs."""

from __future__ import annotations

import pytest
import torch

from rankprune.config import RunConfig
from rankprune.data import load
from rankprune.models import get_family
from rankprune.probes import ProbeContext
from rankprune.probes.movement import MovementProbe, relative_movement
from rankprune.runfolder import EPOCHS, ITERATIONS, RunFolder


def test_relative_movement_is_the_frobenius_ratio():
    start = torch.ones(3, 4)  # ||start||_F = sqrt(12)
    now = start.clone()
    now[0, 0] += 3.0
    now[2, 1] -= 4.0  # the change has norm 5
    assert relative_movement(now, start) == pytest.approx(5 / 12**0.5)
    assert relative_movement(start, start) == 0.0


def _context(tmp_path, tiny_config, digits, model, iteration=0):
    cfg = tiny_config(probes={"movement": True})
    run = RunFolder(tmp_path / "run")
    run.create(overwrite=False)
    run.save_weights(model.state_dict(), 1, iteration, start=True)
    if iteration:
        run.save_weights(model.state_dict(), 1, 0, start=True)
    return ProbeContext(cfg, digits, run, model, 1, iteration, "fp32", digits.train.x[:8], cfg.train, 5e-3)


def test_movement_is_zero_at_the_start_and_matches_a_hand_made_low_rank_update(tmp_path, tiny_config, digits):
    model = get_family("mlp").build(digits.input_shape, [16], digits.n_classes, 0, torch.device("cpu"))
    ctx = _context(tmp_path, tiny_config, digits, model)
    probe = MovementProbe()
    row = probe.epoch(ctx).measure()  # a Later: measured beside the next epoch (probes/beside.py)
    assert row["movement"] == [0.0, 0.0] and row["movement_network"] == 0.0
    assert row["change_rank_numerical"] == [0, 0]  # a zero change has rank 0 under numpy's rule
    w0 = model.weights()[0].detach().clone()
    u, v = torch.randn(16, 1), torch.randn(1, 64)
    with torch.no_grad():
        model.weights()[0].add_(u @ v)  # a rank-1 update of the first layer only
    later = probe.epoch(ctx)
    with torch.no_grad():
        model.weights()[1].add_(1.0)  # the next epoch moves the network before the measurement runs...
    row = later.measure()  # ... and the measurement is of the weights at the epoch's end
    with torch.no_grad():
        model.weights()[1].sub_(1.0)
    assert row["movement"][0] == pytest.approx(float(torch.linalg.norm(u @ v) / torch.linalg.norm(w0)), rel=1e-5)
    assert row["movement"][1] == 0.0
    assert row["change_rank_numerical"] == [1, 0]
    assert row["movement_from_init"] == row["movement"]  # iteration 0: its start is the first initialisation
    everything = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert row["movement_network"] == pytest.approx(float(torch.linalg.norm(u @ v) / torch.linalg.norm(
        everything - torch.cat([(u @ v).flatten(), torch.zeros(everything.numel() - (u @ v).numel())]))), rel=1e-5)


def test_runs_record_movement_every_epoch_and_none_where_a_shrink_changed_the_shape(tmp_path, tiny_config, run_controller):
    cfg = tiny_config(probes={"movement": True}, evolve={"layers": (1,), "max_iterations": 2})
    run = run_controller(cfg, tmp_path / "run")
    epochs, iterations = run.rows(EPOCHS), run.rows(ITERATIONS)
    assert all(len(e["movement"]) == 2 and all(m > 0 for m in e["movement"]) for e in epochs)
    assert all(len(e["change_rank_numerical:0.2"]) == 2 for e in epochs)
    for it in iterations:
        last = [e for e in epochs if e["iteration"] == it["iteration"]][-1]
        assert it["movement"] == last["movement"]  # the iteration keeps where its training ended
        if it["iteration"] == 0:
            assert it["movement_from_init"] == it["movement"]
    shrunk = [it for it in iterations if it["iteration"] > 0 and it["widths"] != iterations[0]["widths"]]
    assert shrunk, "the tiny run should shrink at least once"
    assert all(it["movement_from_init"] == [None, None] and it["movement_network_from_init"] is None for it in shrunk)


def test_off_by_default_and_then_no_columns(tmp_path, tiny_config, run_controller):
    run = run_controller(tiny_config(evolve={"layers": (1,), "max_iterations": 1}), tmp_path / "run")
    assert RunConfig().probes.movement is False
    assert not any(k.startswith(("movement", "change_rank")) for e in run.rows(EPOCHS) for k in e)
