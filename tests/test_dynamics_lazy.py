"""Lazy training (rankprune/dynamics/lazy.py, landscape.py): movement against hand-computed values, what trains,
the logged steps, output scaling, reproducibility, the closed-form landscape, the exponent fit, and a report
section drawn from tiny units."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from rankprune.config import ConfigError
from rankprune.dynamics import landscape, lazy
from rankprune.dynamics.steps import Movement, log_steps

torch.set_num_threads(1)


def _unit(settings: lazy.LazySettings, key: str) -> dict:
    return dict(lazy.units(settings))[key]()


def test_relative_movement_matches_a_hand_computed_value():
    model = lazy.ShallowMLP(2)
    with torch.no_grad():
        first, last = model.layers[0], model.layers[2]
        first.weight.copy_(torch.tensor([[3.0], [4.0]]))  # ||W1|| = 5
        first.bias.zero_()
        last.weight.copy_(torch.tensor([[1.0, 0.0]]))  # ||W2|| = 1
        last.bias.zero_()
    moved = Movement(model)
    with torch.no_grad():
        first.weight += torch.tensor([[0.0], [1.0]])  # change of norm 1
        last.weight += torch.tensor([[0.0, 2.0]])  # change of norm 2
    m = moved(model)
    assert m["movement"] == pytest.approx([1 / 5, 2 / 1])
    assert m["movement_network"] == pytest.approx(math.sqrt(1 + 4) / math.sqrt(25 + 1))


def test_shallow_mlp_has_the_notebooks_parameter_count():
    assert sum(p.numel() for p in lazy.ShallowMLP(10).parameters()) == 31


def test_sine_features_train_their_last_layer_only():
    with pytest.raises(ConfigError):
        lazy.SineFeatures(7)
    model = lazy.SineFeatures(8).double()
    names = [n for n, _ in model.named_parameters()]
    assert names == ["lout.weight", "lout.bias"]
    lout = {id(p) for p in model.lout.parameters()}
    assert {id(p) for p in lazy.optimizer(model, 0.01).param_groups[0]["params"]} == lout
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = lazy.points(15, 0)
    phi_before = model.phi(x).clone()
    rows = lazy.train(model, x, y, lr=0.01, steps=5, checkpoints=5)
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert torch.equal(model.phi(x), phi_before)  # the features are fixed
    assert len(rows[-1]["movement"]) == 1 and rows[-1]["movement"][0] > 0


def test_rows_are_logged_at_exactly_the_asked_steps():
    x, y = lazy.points(10, 0)
    model = lazy.ShallowMLP(5).double()
    rows = lazy.train(model, x, y, lr=0.001, steps=100, checkpoints=5)
    assert [r["step"] for r in rows] == log_steps(100, 5) == [0, 1, 3, 10, 32, 100]
    assert set(rows[0]) == {"step", "loss", "movement", "movement_network"}
    assert rows[0]["movement_network"] == 0.0


def test_alpha_starts_at_zero_output_and_large_alpha_barely_moves():
    settings = lazy.LazySettings(experiment="alpha", seeds=(0,), steps=300, checkpoints=10)
    small, large = _unit(settings, "alpha-a1-seed0"), _unit(settings, "alpha-a1000-seed0")
    for u in (small, large):
        assert all(v == 0.0 for v in u["start_y"])  # alpha (f - f_0) is exactly zero at the start
        assert u["rows"][0]["loss"] == pytest.approx(float(np.mean(np.square(u["y_train"]))))
    assert large["lr"] == pytest.approx(0.01 / 1000 ** 2)
    assert large["final"]["movement_network"] < small["final"]["movement_network"] / 100
    assert large["final"]["movement"][-1] < small["final"]["movement"][-1] / 100


def test_the_same_seed_gives_the_same_unit():
    settings = lazy.LazySettings(experiment="widths", seeds=(0, 1), steps=20, checkpoints=5)
    assert _unit(settings, "widths-h10-seed1") == _unit(settings, "widths-h10-seed1")
    assert _unit(settings, "widths-h10-seed0")["rows"] != _unit(settings, "widths-h10-seed1")["rows"]
    a, b = lazy.points(15, 3), lazy.points(15, 3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (15, 1) and a[1].shape == (15,) and float(a[0].abs().max()) <= 1


def test_every_experiment_has_well_formed_keys():
    keys = {e: [k for k, _ in lazy.units(lazy.LazySettings(experiment=e))] for e in lazy.EXPERIMENTS}
    for experiment, mine in keys.items():
        assert len(mine) == len(set(mine)) and all(re.fullmatch(r"[A-Za-z0-9_.=-]+", k) for k in mine)
    assert len(keys["widths"]) == 12 and "widths-h100-seed2" in keys["widths"]
    assert len(keys["bad-init"]) == 6 and "bad-init-bad-seed0" in keys["bad-init"]


@pytest.mark.parametrize("change", [{"experiment": "nope"}, {"seeds": ()}, {"seeds": (1, 1)}, {"steps": 0},
                                    {"target": "hard"}, {"noise": -1.0}, {"decay_to_init": math.nan}])
def test_bad_settings_are_one_line_errors(change):
    with pytest.raises(ConfigError) as err:
        lazy.LazySettings(**change).validate()
    assert "\n" not in str(err.value)


def test_settings_round_trip_to_a_dict():
    s = lazy.LazySettings(experiment="alpha", seeds=(4,), steps=7)
    assert lazy.LazySettings(**{**s.to_dict(), "seeds": tuple(s.to_dict()["seeds"])}) == s


def test_the_linearised_loss_is_exactly_quadratic_in_w():
    for alpha in (1, 100, 10_000):
        ws = np.linspace(*landscape.window(alpha), 9)
        lin = landscape.linear_loss(ws, alpha)
        coef = np.polyfit(ws - landscape.W0, lin, 2)
        assert np.max(np.abs(np.polyval(coef, ws - landscape.W0) - lin)) <= 1e-9 * max(1.0, np.max(lin))
        x, y = landscape.DATA[0]
        assert coef[0] == pytest.approx(landscape.f(x, landscape.W0) ** 2 / 2)
        assert landscape.linear_loss(landscape.W0, alpha) == pytest.approx(y ** 2 / 2 / alpha ** 2)
        assert landscape.loss(landscape.W0, alpha) == pytest.approx(y ** 2 / 2 / alpha ** 2)
    panels = landscape.landscape(count=11)
    assert [p["alpha"] for p in panels] == list(landscape.ALPHAS) and panels[0]["w"].shape == (11,)


def test_exponent_recovers_a_known_slope():
    # per-seed slopes -0.6, -0.5, -0.4, -0.5 of the last layer (mean -0.5), -1 for the whole network
    units = []
    for seed, slope in enumerate((-0.6, -0.5, -0.4, -0.5)):
        scale = 0.5 + seed
        for a in (1, 10, 100, 1000):
            units.append({"seed": seed, "alpha": a, "final": {"movement": [1.0, scale * a ** slope],
                                                              "movement_network": 2 * scale * a ** -1.0}})
    units.append({"seed": 9, "width": 5, "final": {"movement": [1.0], "movement_network": 1.0}})  # not by alpha
    fit = lazy.exponent(units, "alpha")
    last = fit["last_layer"]
    assert last["slope"] == pytest.approx(-0.5) and last["seeds"] == 4
    assert [p["slope"] for p in last["per_seed"]] == pytest.approx([-0.6, -0.5, -0.4, -0.5])
    half = 3.182446305284263 * math.sqrt(0.02 / 3) / 2  # t(0.975, 3) s / sqrt(4)
    assert (last["low"], last["high"]) == pytest.approx((-0.5 - half, -0.5 + half))
    assert fit["network"]["slope"] == pytest.approx(-1.0)
    assert "Student" in fit["network"]["how"]
    with pytest.raises(ValueError):
        lazy.exponent(units, "depth")


def test_bad_init_steps_change_the_weights():
    settings = lazy.LazySettings(experiment="bad-init", seeds=(0,), steps=5, checkpoints=5)
    bad, good = _unit(settings, "bad-init-bad-seed0"), _unit(settings, "bad-init-good-seed0")
    assert bad["bad_rows"][-1]["step"] == 2 and bad["bad_rows"][-1]["movement_network"] > 0.01
    assert bad["init_y"] == good["init_y"]  # one network, two starts
    assert bad["start_y"] != bad["init_y"] and good["start_y"] == good["init_y"]
    assert bad["final"]["movement_network_from_init"] > bad["final"]["movement_network"]
    assert good["final"]["movement_network_from_init"] == pytest.approx(good["final"]["movement_network"])


def test_decay_to_init_pulls_towards_the_start():
    x, y = lazy.points(15, 0)
    free, held = (lazy.ShallowMLP(10).double() for _ in range(2))
    held.load_state_dict(free.state_dict())
    a = lazy.train(free, x, y, lr=0.01, steps=50, checkpoints=3)
    b = lazy.train(held, x, y, lr=0.01, steps=50, checkpoints=3, decay_to_init=5.0)
    assert b[-1]["movement_network"] < a[-1]["movement_network"]


def test_report_sections_draw_tiny_units(tmp_path):
    from rankprune.report.document import _Document
    from rankprune.report.lazy import landscape_section, sections

    settings = lazy.LazySettings(experiment="alpha", seeds=(0, 1), steps=5, checkpoints=5)
    units = [compute() for _, compute in lazy.units(settings)]
    doc = _Document(tmp_path)
    sections(doc, units, settings.to_dict())
    landscape_section(doc)
    text = doc.write().read_text()
    assert "## Lazy training: output scaling α" in text and "Figure not drawn" not in text
    assert "mean slope" in text and "Student's t over 2 seeds" in text
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {
        "lazy-alpha-dynamics.png", "lazy-alpha-fits.png", "lazy-alpha-exponent.png", "lazy-landscape.png"}
