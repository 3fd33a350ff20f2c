"""One contract suite run against every model family (models.FAMILIES): build, measure, keep units, the
warm rebuild of every group (units, bilinear and rotation folds), parameter and FLOP counts against what torch
counts; and --params against its closed form."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rankprune.config import ConfigError
from rankprune.models import FAMILIES, get_family, width_for_parameters
from rankprune.rebuild import rebuild

# Input shapes each family is checked on: images of two sizes and channel counts, flat features for the MLP, and
# sequences (positions, token features) for the transformer.
SHAPES = {"mlp": [(1, 8, 8), (20,)], "cnn": [(1, 8, 8), (3, 12, 12)], "transformer": [(6, 14), (11, 9)]}
# Widths per group: one per hidden layer, or a transformer's residual then (query-key, value-output, feed-forward)
# per block, unequal so that a wrong group order shows.
WIDTHS = {"mlp": ([6], [7, 5], [5, 6, 4]), "cnn": ([6], [7, 5], [5, 6, 4]),
          "transformer": ([6, 5, 4, 12], [8, 4, 5, 10, 6, 3, 7])}
CASES = [(name, shape, widths) for name in FAMILIES for shape in SHAPES[name] for widths in WIDTHS[name]]


def test_every_registered_family_is_covered():
    assert set(SHAPES) == set(FAMILIES)


def test_every_group_has_a_name_and_a_fold_the_rebuild_knows():
    for name, family in FAMILIES.items():
        for widths in WIDTHS[name]:
            groups = family.groups(widths)
            assert len(groups) == len(widths) and len({g.name for g in groups}) == len(groups)
            assert {g.fold for g in groups} <= {"units", "bilinear", "rotation"}
            assert family.depth_of(family.start_widths(5, family.depth_of(widths))) == family.depth_of(widths)


def inputs(shape, n=50, seed=0):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def out_shape(name, shape, n=50):
    return (n, shape[0], 10) if name == "transformer" else (n, 10)


def counted_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs torch's own counter finds in one sample's forward pass, attention through the math kernel (whose matmuls
    it counts; the fused CPU kernel it does not)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x[:1])
    return counter.get_total_flops()


@pytest.mark.parametrize(("name", "shape", "widths"), CASES)
def test_build_forward_hidden_and_weights_follow_the_widths(name, shape, widths):
    family = get_family(name)
    model = family.build(shape, widths, 10, seed=0)
    x = inputs(shape)
    assert model(x).shape == out_shape(name, shape)
    assert (model.family, model.input_shape, model.widths, model.n_out) == (name, shape, widths, 10)
    hidden = model.hidden(x)
    groups = family.groups(widths)
    assert [h.shape[1] for h in hidden] == widths
    assert all(h.shape[0] >= 50 for h, g in zip(hidden, groups) if g.fold == "units")  # a row per sample (and position)
    if name != "transformer":
        assert all(bool((h >= 0).all()) for h in hidden)  # post-ReLU
    weights = model.weights()
    assert len(weights) == len(widths) + 1 and weights[-1].shape[0] == 10  # the output layer's last
    assert all(w.shape[0] == width for w, width, g in zip(weights, widths, groups) if g.fold == "units")


@pytest.mark.parametrize(("name", "shape", "widths"), CASES)
def test_parameter_and_flop_counts_match_the_built_network(name, shape, widths):
    family = get_family(name)
    model = family.build(shape, widths, 10, seed=0)
    assert family.parameter_count(shape, widths, 10) == sum(p.numel() for p in model.parameters())
    assert family.forward_flops(shape, widths, 10) == counted_flops(model, inputs(shape))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_same_seed_same_network_and_the_global_rng_is_untouched(name):
    family, shape = get_family(name), SHAPES[name][0]
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    a, b, c = (family.build(shape, family.start_widths(6, 2), 10, seed=s) for s in (1, 1, 2))
    assert torch.equal(torch.rand(3), expected)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        # every randomly initialised tensor differs between seeds (LayerNorm's ones and zeros do not)
        assert torch.equal(pa, pb) and (not torch.equal(pa, pc) or bool((pa == pa.flatten()[0]).all()))


@pytest.mark.parametrize(("name", "shape", "widths"), CASES)
def test_the_warm_rebuild_at_full_width_reproduces_outputs_on_held_out_inputs(name, shape, widths):
    model = get_family(name).build(shape, widths, 10, seed=0).double()
    fitted = rebuild(model, widths, "warm", seed=0, inputs=inputs(shape, 200, seed=1).double())
    held_out = inputs(shape, 100, seed=2).double()
    torch.testing.assert_close(fitted(held_out), model(held_out), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("name", "shape", "widths"), CASES)
def test_rebuilds_shrink_to_the_new_widths_with_every_shape_agreeing(name, shape, widths):
    model = get_family(name).build(shape, widths, 10, seed=0)
    smaller = [max(2, w - 2) for w in widths]
    for method in ("warm", "reinit"):
        new = rebuild(model, smaller, method, seed=3, inputs=inputs(shape, 200, seed=1))
        assert new.widths == smaller and model.widths == widths  # the original is untouched
        assert new(inputs(shape)).shape == out_shape(name, shape) and torch.isfinite(new(inputs(shape))).all()
        assert sum(p.numel() for p in new.parameters()) == get_family(name).parameter_count(shape, smaller, 10)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_keep_units_folds_the_dropped_units_into_the_next_layer(name):
    """Duplicate a unit (two identical rows): dropping one copy and folding it into the other's weight in the
    next layer must leave the function unchanged, exactly as the rebuild's T does. For every group folded unit by
    unit."""
    shape, family = SHAPES[name][0], get_family(name)
    widths = family.start_widths(4, 2)
    for g, group in enumerate(family.groups(widths)):
        if group.fold != "units":
            continue
        model = family.build(shape, widths, 10, seed=0).double()
        rows = model.weights()[g]
        owner = next(m for m in model.modules() if getattr(m, "weight", None) is rows)  # whose rows are the units
        with torch.no_grad():
            rows[1].copy_(rows[0])
            owner.bias[1] = owner.bias[0]
        x = inputs(shape).double()
        before = model(x)
        n = widths[g]
        keep = torch.tensor([0, *range(2, n)])
        fold = torch.zeros(n - 1, n, dtype=torch.float64)
        fold[0, 0] = fold[0, 1] = 1.0  # unit 1 is read as a copy of unit 0
        fold[torch.arange(1, n - 1), torch.arange(2, n)] = 1.0
        model.keep_units(g, keep, fold)
        assert model.widths[g] == n - 1 and sum(model.widths) == sum(widths) - 1
        torch.testing.assert_close(model(x), before, atol=1e-10, rtol=0)


# --- --params: a parameter-matched initial width ----------------------------------------------------------
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("params", [10_000, 266_610, 1_000_000])
def test_params_picks_the_mlp_width_of_the_closed_form(depth, params):
    """An MLP with d inputs, L hidden layers of width h and n outputs has
    N = h*d + (L-1)*h^2 + n*h + (L*h + n) parameters (the last bracket: biases); h is its positive root."""
    d, n = 784, 10
    a, b, c = depth - 1, d + n + depth, n - params
    root = -c / b if a == 0 else (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
    h = width_for_parameters(get_family("mlp"), (1, 28, 28), depth, n, params)
    assert h in (math.floor(root), math.ceil(root))
    count = get_family("mlp").parameter_count((1, 28, 28), [h] * depth, n)
    assert abs(count - params) <= abs(get_family("mlp").parameter_count((1, 28, 28), [h + 1] * depth, n) - params)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_params_picks_the_nearest_cnn_width(depth):
    family = get_family("cnn")
    h = width_for_parameters(family, (1, 28, 28), depth, 10, 50_000)
    counts = {w: family.parameter_count((1, 28, 28), [w] * depth, 10) for w in (h - 1, h, h + 1)}
    assert abs(counts[h] - 50_000) == min(abs(v - 50_000) for v in counts.values())


def test_bad_family_and_params_are_config_errors():
    with pytest.raises(ConfigError, match="unknown model family 'nosuch'"):
        get_family("nosuch")
    with pytest.raises(ConfigError, match="at least 1"):
        width_for_parameters(get_family("mlp"), (64,), 2, 10, 0)
    with pytest.raises(ConfigError, match="needs images"):
        get_family("cnn").check_input((20,))
    with pytest.raises(ConfigError, match="at least 4x4"):
        get_family("cnn").check_input((1, 3, 3))


def test_activation_inputs_take_only_the_images_the_row_cap_needs():
    from rankprune.models import activation_inputs

    cnn = get_family("cnn").build((1, 28, 28), [4, 4], 10, seed=0)
    x = torch.randn(4096, 1, 28, 28)
    few = activation_inputs(cnn, x, limit=4900)
    assert len(few) == 100  # the last block reads 7x7 = 49 positions an image: 100 images give 4,900 rows
    assert min(z.shape[0] for z in cnn.hidden(few)) >= 4900
    mlp = get_family("mlp").build((20,), [4], 10, seed=0)
    assert len(activation_inputs(mlp, torch.randn(300, 20), limit=4900)) == 300  # a row per sample: all of them


def test_weight_decay_defaults_to_the_familys_unless_given():
    from rankprune.config import RunConfig
    from rankprune.models import FAMILIES

    for name, family in FAMILIES.items():
        data = {"tasks": 4} if getattr(family, "reads_sequences", False) else {}  # a transformer reads tasks' sequences
        cfg = RunConfig().replace(model={"family": name}, data=data).validate().resolved()
        assert cfg.train.weight_decay == family.default_weight_decay
        given = RunConfig().replace(model={"family": name}, data=data, train={"weight_decay": 0.0}).validate().resolved()
        assert given.train.weight_decay == 0.0  # an explicit 0 is not "not given"
    assert FAMILIES["mlp"].default_weight_decay == 5e-3  # the original experiment's


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_params_picks_the_nearest_transformer_model_width(depth):
    """--params for a transformer sets its model width d, every group following it (start_widths)."""
    family = get_family("transformer")
    d = width_for_parameters(family, (32, 74), depth, 10, 50_000)
    counts = {w: family.parameter_count((32, 74), family.start_widths(w, depth), 10) for w in (d - 1, d, d + 1)}
    assert abs(counts[d] - 50_000) == min(abs(v - 50_000) for v in counts.values())
    assert family.start_widths(d, depth)[:4] == [d, d, d, 4 * d]
