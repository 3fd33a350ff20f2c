"""--alpha: output scaling alpha * (f - f_0) with the learning rate / alpha^2 (lazy training)."""

from __future__ import annotations

import copy

import pytest
import torch

from rankprune.losses import per_sample
from rankprune.models import get_family
from rankprune.runfolder import EPOCHS, ITERATIONS
from rankprune.scaling import center_and_scale, scale_of


def _tiny(digits, seed=0):
    return get_family("mlp").build(digits.input_shape, [16], digits.n_classes, seed, torch.device("cpu"))


def test_a_scaled_network_starts_at_zero_output_and_keeps_its_parameters(digits):
    model = _tiny(digits)
    n_params, keys = len(list(model.parameters())), set(model.state_dict())
    plain = model(digits.train.x[:32]).detach()
    center_and_scale(model, 100.0)
    assert torch.count_nonzero(model(digits.train.x[:32])) == 0
    assert len(list(model.parameters())) == n_params and set(model.state_dict()) == keys  # f_0 is not a parameter
    with torch.no_grad():
        model.weights()[-1].add_(0.01)
    moved = model(digits.train.x[:32]).detach()
    unscaled = copy.deepcopy(model)
    center_and_scale(unscaled, 1.0)  # re-centring replaces the hook rather than stacking a second one
    assert scale_of(unscaled) == 1.0 and torch.count_nonzero(unscaled(digits.train.x[:32])) == 0
    assert not torch.equal(moved, plain) and moved.abs().max() > 0


def _first_step(digits, alpha, lr=0.003):
    model = center_and_scale(_tiny(digits), alpha)
    x, y = digits.train.x[:64], digits.train.y[:64]
    probe = digits.val.x[:64]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr / alpha**2)
    per_sample("cross-entropy", model(x), y).mean().backward()
    optimizer.step()
    return model(probe).detach()


def test_the_first_step_in_function_space_is_the_same_for_alpha_1_and_100(digits):
    one, hundred = _first_step(digits, 1.0), _first_step(digits, 100.0)
    assert one.abs().max() > 1e-3  # the step moved the output
    assert torch.allclose(one, hundred, atol=1e-3)


def test_a_scaled_run_divides_the_learning_rate_and_records_movement(tmp_path, tiny_config, run_controller):
    cfg = tiny_config(model={"alpha": 10.0}, probes={"movement": True}, evolve={"layers": (1,), "max_iterations": 2})
    run = run_controller(cfg, tmp_path / "run")
    epochs = run.rows(EPOCHS)
    assert all(e["lr"] == pytest.approx(cfg.train.lr / 100) for e in epochs if e["iteration"] == 0)
    assert all(e["movement"][0] > 0 for e in epochs)
    assert len(run.rows(ITERATIONS)) >= 1
    # every shrink iteration after the first restarts the scaled output at zero, discarding what the warm rebuild
    # kept of the function, and says so (the rebuild's own error is the plain network's)
    for r in run.rows(ITERATIONS):
        assert r["output_recentred"] == (r["phase"] == "shrink" and r["iteration"] > 0)
        assert (r["rebuild_error"] is not None) == r["output_recentred"]


@pytest.mark.parametrize("alpha", ["0", "-1", "nan"])
def test_a_non_positive_alpha_is_one_line_and_writes_nothing(tmp_path, capsys, alpha):
    from rankprune.cli import main

    out = tmp_path / "run"
    code = main(["evolve", "--dataset", "digits", "--layers", "1", "--alpha", alpha, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--alpha" in err and len(err.splitlines()) == 1 and not out.exists()


def test_alpha_with_weight_decay_warns_and_without_it_does_not():
    from rankprune.config import RunConfig
    from rankprune.scaling import lazy_decay_warning

    lazy = RunConfig().replace(model={"alpha": 100.0}, train={"weight_decay": 5e-3})
    assert "weight decay 0.005" in lazy_decay_warning(lazy) and "--weight-decay 0" in lazy_decay_warning(lazy)
    assert "the default weight decay" in lazy_decay_warning(RunConfig().replace(model={"alpha": 100.0}))
    assert lazy_decay_warning(lazy.replace(train={"weight_decay": 0.0})) is None
    assert lazy_decay_warning(RunConfig().replace(train={"weight_decay": 5e-3})) is None  # no alpha
