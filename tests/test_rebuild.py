"""Rebuilding at new widths: next_widths never grows; rebuild gives complete, seeded networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rankprune.models import build_mlp, parameter_count
from rankprune.rebuild import interpolative_decomposition, REBUILDS, next_widths, rebuild


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
    rebuilt = rebuild(model, new, method, seed=1, inputs=torch.randn(200, 64))
    assert rebuilt.widths == new and (rebuilt.n_in, rebuilt.n_out) == (64, 10)
    dims = [64, *new, 10]
    assert [tuple(l.weight.shape) for l in rebuilt.linears] == [(b, a) for a, b in zip(dims[:-1], dims[1:])]
    assert sum(p.numel() for p in rebuilt.parameters()) == parameter_count(64, new, 10)
    assert rebuilt(torch.randn(3, 64)).shape == (3, 10)


def test_reinit_is_seeded():
    model = build_mlp(64, [32, 32], 10, seed=0)
    a, b, c = (rebuild(model, [8, 4], "reinit", seed=s) for s in (1, 1, 2))
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_warm_is_deterministic_for_given_inputs_and_depends_on_them():
    model = build_mlp(64, [32, 32], 10, seed=0)
    x = torch.randn(300, 64, generator=torch.Generator().manual_seed(0))
    a, b = (rebuild(model, [8, 4], "warm", seed=s, inputs=x) for s in (1, 2))
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))
    c = rebuild(model, [8, 4], "warm", seed=1, inputs=torch.randn(300, 64, generator=torch.Generator().manual_seed(1)))
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


@pytest.mark.parametrize("widths", [[32, 32], [48, 16, 24]])
def test_warm_at_full_width_reproduces_the_outputs(widths):
    model = build_mlp(64, widths, 10, seed=3)
    x = torch.randn(500, 64, generator=torch.Generator().manual_seed(0))
    rebuilt = rebuild(model, widths, "warm", seed=0, inputs=x)
    held_out = torch.randn(200, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (rebuilt(x) - model(x)).abs().max().item() < 1e-5
        assert (rebuilt(held_out) - model(held_out)).abs().max().item() < 1e-5


def test_warm_keeps_the_function_far_better_than_reinit():
    # A layer whose outputs span only 8 directions: shrinking it to 8 units loses (almost) nothing.
    torch.manual_seed(0)
    model = build_mlp(20, [32], 5, seed=0)
    with torch.no_grad():
        model.linears[0].weight.copy_(torch.randn(32, 8) @ torch.randn(8, 20) * 0.05)
        model.linears[0].bias.fill_(5.0)  # every unit active: the post-ReLU outputs are affine, rank 8 + 1
    x = torch.randn(400, 20)
    warm = rebuild(model, [9], "warm", seed=0, inputs=x)
    cold = rebuild(model, [9], "reinit", seed=0)
    with torch.no_grad():
        ref = model(x)
        assert (warm(x) - ref).abs().max().item() < 1e-4
        assert (cold(x) - ref).abs().max().item() > 1e-2


def test_interpolative_decomposition_spans_the_matrix():
    z = torch.randn(100, 6, dtype=torch.float64) @ torch.randn(6, 15, dtype=torch.float64)
    selected, t = interpolative_decomposition(z.numpy(), 6)
    assert len(set(selected.tolist())) == 6 and t.shape == (6, 15)
    assert abs(z.numpy()[:, selected] @ t - z.numpy()).max() < 1e-9


def test_warm_needs_inputs():
    with pytest.raises(ValueError, match="training inputs"):
        rebuild(build_mlp(8, [4], 2, seed=0), [2], "warm", seed=0)


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


def _mlp_and_rows(seed: int = 0):
    model = build_mlp(20, [16, 12], 5, seed=seed)
    g = torch.Generator().manual_seed(seed)
    return model, torch.randn(300, 20, generator=g), torch.randn(150, 20, generator=g)


def test_the_rebuild_cost_is_the_next_layers_pre_activation_error_on_held_out_rows():
    """Worked by hand for the first layer: the decomposition is fitted on `x`, its error measured on `held_out`."""
    from rankprune.rebuild import rebuild_with_cost

    model, x, held_out = _mlp_and_rows()
    new, cost = rebuild_with_cost(model, [6, 12], "warm", seed=0, inputs=x, heldout=held_out)
    m = model.double()
    with torch.no_grad():
        z_fit, z_out = torch.relu(m.linears[0](x.double())), torch.relu(m.linears[0](held_out.double()))
        selected, t = interpolative_decomposition(z_fit.numpy(), 6)
        exact = m.linears[1](z_out)
        approx = torch.from_numpy(z_out.numpy()[:, selected] @ t) @ m.linears[1].weight.T + m.linears[1].bias
        by_hand = float(torch.linalg.vector_norm(approx - exact) / torch.linalg.vector_norm(exact))
        assert cost.layer_errors[0] == pytest.approx(by_hand, rel=1e-9) and by_hand > 0
        assert cost.layer_errors[1] == pytest.approx(0.0, abs=1e-12)  # layer 2 kept all 12 units
        logits = float(torch.linalg.vector_norm(new.double()(held_out.double()) - m(held_out.double()))
                       / torch.linalg.vector_norm(m(held_out.double())))
        assert cost.output_error == pytest.approx(logits, rel=1e-5)
    # the network is the one rebuild() gives, and a rebuild that does not keep the function has no cost
    plain = rebuild(build_mlp(20, [16, 12], 5, seed=0), [6, 12], "warm", seed=0, inputs=x)
    assert all(torch.equal(a, b) for a, b in zip(new.parameters(), plain.parameters()))
    assert rebuild_with_cost(model, [6, 12], "reinit", seed=0, inputs=x, heldout=held_out)[1] is None


@pytest.mark.parametrize(("family", "shape"), [("mlp", (1, 8, 8)), ("cnn", (1, 8, 8))])
def test_the_rebuild_cost_is_zero_at_full_width_and_grows_as_layers_shrink(family, shape):
    from rankprune.models import get_family
    from rankprune.rebuild import rebuild_with_cost

    model = get_family(family).build(shape, [8, 6], 4, seed=0)
    g = torch.Generator().manual_seed(0)
    x, held_out = torch.randn(120, *shape, generator=g), torch.randn(60, *shape, generator=g)
    _, full = rebuild_with_cost(model, [8, 6], "warm", seed=0, inputs=x, heldout=held_out)
    assert max(full.layer_errors) < 1e-9 and full.output_error < 1e-9
    _, small = rebuild_with_cost(model, [3, 2], "warm", seed=0, inputs=x, heldout=held_out)
    assert len(small.layer_errors) == 2 and min(small.layer_errors) > 1e-3 and small.output_error > 1e-3
