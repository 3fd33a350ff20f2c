"""Rebuilding at new widths: next_widths never grows; rebuild gives complete, seeded networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rankprune.models import build_mlp, parameter_count
from rankprune.rebuild import REBUILDS, next_widths, rebuild


@pytest.mark.parametrize(
    ("widths", "ranks", "min_width", "expected"),
    [
        ([64, 64], [12.0, 40.0], 1, [12, 40]),
        ([64, 64], [12.3, 63.01], 1, [13, 64]),
        ([64, 32], [100.0, 33.0], 1, [64, 32]),  # a rank above the width keeps the width
        ([64, 64], [0.0, 2.0], 4, [4, 4]),
        ([8], [8.0], 1, [8]),
    ],
)
def test_next_widths(widths, ranks, min_width, expected):
    assert next_widths(widths, ranks, min_width) == expected


@pytest.mark.parametrize("seed", range(10))
def test_next_widths_never_grows(seed):
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(1, 6))
    widths = [int(w) for w in rng.integers(1, 100, depth)]
    ranks = [float(r) for r in rng.uniform(0, 150, depth)]
    new = next_widths(widths, ranks, min_width=int(rng.integers(1, 10)))
    assert len(new) == depth
    assert all(1 <= n <= w for n, w in zip(new, widths))


def test_next_widths_needs_one_rank_per_hidden_layer():
    with pytest.raises(ValueError):
        next_widths([8, 8], [3.0, 3.0, 3.0], 1)  # the output layer's rank must not be passed


@pytest.mark.parametrize("method", sorted(REBUILDS))
@pytest.mark.parametrize("new", [[16, 8], [1, 1], [32, 32], [5, 32]])
def test_rebuild_gives_every_shape_of_the_new_widths(method, new):
    model = build_mlp(64, [32, 32], 10, seed=0)
    rebuilt = rebuild(model, new, method, seed=1)
    assert rebuilt.widths == new and (rebuilt.n_in, rebuilt.n_out) == (64, 10)
    dims = [64, *new, 10]
    assert [tuple(l.weight.shape) for l in rebuilt.linears] == [(b, a) for a, b in zip(dims[:-1], dims[1:])]
    assert sum(p.numel() for p in rebuilt.parameters()) == parameter_count(64, new, 10)
    assert rebuilt(torch.randn(3, 64)).shape == (3, 10)


@pytest.mark.parametrize("method", sorted(REBUILDS))
def test_rebuild_is_seeded(method):
    model = build_mlp(64, [32, 32], 10, seed=0)
    a, b, c = (rebuild(model, [8, 4], method, seed=s) for s in (1, 1, 2))
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_reinit_starts_fresh_at_the_same_widths():
    # reinit ignores the old weights: a rebuild at unchanged widths is a new initialisation.
    model = build_mlp(64, [16], 10, seed=0)
    rebuilt = rebuild(model, [16], "reinit", seed=1)
    assert torch.equal(rebuilt.linears[0].weight, build_mlp(64, [16], 10, seed=1).linears[0].weight)
    assert not torch.equal(rebuilt.linears[0].weight, model.linears[0].weight)


@pytest.mark.parametrize("new", [[33, 32], [32, 33], [64, 64]])
def test_rebuild_refuses_growing_widths(new):
    model = build_mlp(64, [32, 32], 10, seed=0)
    with pytest.raises(ValueError, match="never grow"):
        rebuild(model, new, "reinit", seed=1)
