"""Measuring a network: one rank per weight matrix for every recorded measure."""

from __future__ import annotations

import pytest
import torch

from rankprune.measure import measure_layers, recorded_measures
from rankprune.models import build_mlp
from rankprune.rank import DEFAULT_RECORDED, parse_measure


@pytest.mark.parametrize("driving", ["numerical", "numerical:0.05", "effective", "energy:0.9", "energy:0.95", "stable"])
def test_recorded_measures_are_the_defaults_plus_the_driving_one_once(driving):
    specs = [m.spec for m in recorded_measures(driving)]
    assert specs[: len(DEFAULT_RECORDED)] == list(DEFAULT_RECORDED)
    assert parse_measure(driving).spec in specs
    assert len(specs) == len(set(specs))


def test_measure_layers_on_known_weights():
    model = build_mlp(4, [3], 2, seed=0)
    with torch.no_grad():
        model.linears[0].weight.copy_(torch.tensor([[2.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 0]]))
        model.linears[1].weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
    spectra = measure_layers(model, recorded_measures("numerical:0.4"))
    assert spectra.ranks["numerical"] == [2, 2]
    assert spectra.ranks["numerical:0.4"] == [2, 2]
    assert spectra.ranks["stable"] == [pytest.approx(1.25), pytest.approx(2.0)]
    assert spectra.ranks["energy:0.9"] == [2, 2]
    assert spectra.spectral_norm == [pytest.approx(2.0), pytest.approx(1.0)]
    assert spectra.frobenius_norm == [pytest.approx(5**0.5), pytest.approx(2**0.5)]
    assert spectra.grad_rank == [None, None]  # no backward pass yet
    assert [len(s) for s in spectra.singular_values] == [3, 2]


def test_measure_layers_row_after_a_backward_pass():
    model = build_mlp(8, [6, 5], 3, seed=0)
    model(torch.randn(1, 8)).sum().backward()  # one sample: every gradient has rank <= 1
    row = measure_layers(model, recorded_measures("effective")).row()
    for spec in (*DEFAULT_RECORDED, "effective"):
        assert len(row[f"rank_{spec}"]) == 3  # one per weight matrix, output layer included
    assert all(g is not None and g <= 1 for g in row["grad_rank"])
    assert set(row) >= {"spectral_norm", "frobenius_norm", "grad_rank"}
