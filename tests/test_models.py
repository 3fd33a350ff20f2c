"""Networks built from widths: shapes, parameter and FLOP counts, seeded initialisation."""

from __future__ import annotations

import pytest
import torch

from rankprune.models import MLP, build_mlp, forward_flops, parameter_count

SHAPES = [(64, [32], 10), (64, [32, 7], 10), (784, [5, 5, 5], 10), (3, [1], 2), (8, [], 4)]


@pytest.mark.parametrize(("n_in", "widths", "n_out"), SHAPES)
def test_shapes_follow_the_widths(n_in, widths, n_out):
    model = build_mlp(n_in, widths, n_out, seed=0)
    dims = [n_in, *widths, n_out]
    assert [tuple(l.weight.shape) for l in model.linears] == [(b, a) for a, b in zip(dims[:-1], dims[1:])]
    assert [tuple(l.bias.shape) for l in model.linears] == [(b,) for b in dims[1:]]
    x = torch.randn(6, n_in)
    assert model(x).shape == (6, n_out)
    assert [h.shape for h in model.hidden(x)] == [(6, w) for w in widths]
    assert all(bool((h >= 0).all()) for h in model.hidden(x))  # post-ReLU


@pytest.mark.parametrize(("n_in", "widths", "n_out"), SHAPES)
def test_parameter_count_matches_the_built_model(n_in, widths, n_out):
    model = build_mlp(n_in, widths, n_out, seed=0)
    assert parameter_count(n_in, widths, n_out) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("n_in", "widths", "n_out"), SHAPES)
def test_forward_flops_are_two_per_weight(n_in, widths, n_out):
    model = build_mlp(n_in, widths, n_out, seed=0)
    assert forward_flops(n_in, widths, n_out) == 2 * sum(l.weight.numel() for l in model.linears)


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = (build_mlp(64, [16, 8], 10, seed=s) for s in (3, 3, 4))
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)


def test_building_does_not_move_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    build_mlp(64, [32, 32], 10, seed=9)
    assert torch.equal(torch.rand(5), expected)


def test_mlp_records_its_widths():
    model = MLP(10, [4, 3], 2)
    assert (model.n_in, model.widths, model.n_out) == (10, [4, 3], 2)
    assert len(model.linears) == 3
