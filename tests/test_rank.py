"""Rank measures against closed forms and against numpy's matrix_rank."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rankprune.rank import (
    MEASURE_NAMES,
    RankMeasure,
    effective_rank,
    energy_rank,
    gram_singular_values,
    measure_all,
    numerical_rank,
    parse_measure,
    singular_values,
    sketched_numerical_rank,
    stable_rank,
    width_from_rank,
)

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


def svals(m: np.ndarray) -> np.ndarray:
    return singular_values(torch.from_numpy(np.ascontiguousarray(m)))


# --- closed forms ------------------------------------------------------------------------------
def test_numerical_rank_of_diag_1_1_0_is_2():
    s = svals(np.diag([1.0, 1.0, 0.0]))
    assert numerical_rank(s, (3, 3), EPS64) == 2


@pytest.mark.parametrize("n", [1, 2, 5, 17, 64])
def test_identity_is_full_rank_under_every_measure(n):
    s = svals(np.eye(n))
    assert numerical_rank(s, (n, n), EPS64) == n
    assert numerical_rank(s, (n, n), EPS64, rtol=0.5) == n
    assert effective_rank(s) == pytest.approx(n, rel=1e-12)
    assert stable_rank(s) == pytest.approx(n, rel=1e-12)
    assert energy_rank(s, 1.0) == n


@pytest.mark.parametrize(("n", "q", "expected"), [(10, 0.5, 5), (10, 0.9, 9), (10, 0.91, 10), (10, 0.99, 10), (4, 0.25, 1), (4, 0.26, 2)])
def test_energy_rank_of_identity_is_ceil_q_n(n, q, expected):
    # Every singular value carries 1/n of the energy, so Q of it needs ceil(Q n) of them.
    assert expected == math.ceil(q * n - 1e-9)
    assert energy_rank(svals(np.eye(n)), q) == expected


@pytest.mark.parametrize("shape", [(6, 6), (5, 9), (12, 3)])
def test_rank_one_matrix(shape):
    rng = np.random.default_rng(0)
    m = np.outer(rng.standard_normal(shape[0]), rng.standard_normal(shape[1]))
    s = svals(m)
    assert numerical_rank(s, shape, EPS64) == 1
    assert stable_rank(s) == pytest.approx(1.0, abs=1e-9)
    assert effective_rank(s) == pytest.approx(1.0, abs=1e-9)
    assert energy_rank(s, 0.999) == 1
    # The continuous measures round to one unit of width, not two.
    assert width_from_rank(effective_rank(s), current=shape[0], min_width=1) == 1


# A known spectrum: energies 9, 4, 1 (total 14; cumulative 9, 13, 14).
@pytest.mark.parametrize(("q", "expected"), [(0.5, 1), (9 / 14, 1), (0.65, 2), (13 / 14, 2), (0.93, 3), (1.0, 3)])
def test_energy_rank_on_a_known_spectrum(q, expected):
    assert energy_rank(np.array([3.0, 2.0, 1.0]), q) == expected


def test_effective_and_stable_rank_on_a_known_spectrum():
    s = np.array([3.0, 2.0, 1.0])
    p = s / s.sum()
    assert effective_rank(s) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert stable_rank(s) == pytest.approx(14 / 9)
    # Both lie strictly between 1 and the number of nonzero singular values.
    assert 1 < stable_rank(s) < effective_rank(s) < 3


@pytest.mark.parametrize("measure", ["numerical", "numerical:0.1", "effective", "stable", "energy:0.9"])
def test_zero_matrix_has_rank_zero(measure):
    s = svals(np.zeros((4, 3)))
    assert parse_measure(measure)(s, (4, 3), EPS64) == 0


def test_numerical_rtol_counts_values_above_rtol_times_sigma_max():
    s = np.array([10.0, 5.0, 1.0, 0.5, 0.01])
    assert numerical_rank(s, (5, 5), EPS64, rtol=0.05) == 3  # above 0.5
    assert numerical_rank(s, (5, 5), EPS64, rtol=0.04) == 4
    assert numerical_rank(s, (5, 5), EPS64, rtol=0.6) == 1


# --- numerical rank against numpy ----------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("n", "m"), [(40, 30), (30, 50), (64, 64)])
@pytest.mark.parametrize("k", [1, 3, 10, 29])
def test_numerical_rank_matches_numpy_matrix_rank(dtype, n, m, k):
    rng = np.random.default_rng(1000 * k + n + m)
    product = (rng.standard_normal((n, k)) @ rng.standard_normal((k, m))).astype(dtype)
    eps = float(np.finfo(dtype).eps)  # the eps of the dtype the matrix is stored in
    ours = numerical_rank(svals(product), product.shape, eps)
    assert ours == np.linalg.matrix_rank(product)
    assert ours == min(k, n, m)


def test_measures_accept_torch_float32_weights():
    # The SVD runs in float64 whatever the weight's dtype; the values come back descending.
    w = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
    s = singular_values(w)
    assert s.dtype == np.float64
    assert np.all(np.diff(s) <= 0)
    np.testing.assert_allclose(s, np.linalg.svd(w.double().numpy(), compute_uv=False), rtol=1e-10)


def test_float32_singular_values_agree_with_float64_to_float32_precision():
    w = torch.randn(300, 200, generator=torch.Generator().manual_seed(1)) / 20
    s32, s64 = singular_values(w, dtype=torch.float32), singular_values(w)
    assert s32.dtype == np.float64 and np.all(np.diff(s32) <= 0)
    np.testing.assert_allclose(s32, s64, rtol=0, atol=50 * EPS32 * s64[0])
    for m in (RankMeasure("numerical", 0.02), RankMeasure("effective"), RankMeasure("energy", 0.99)):
        assert m(s32, w.shape, EPS32) == pytest.approx(m(s64, w.shape, EPS32), rel=1e-5)


@pytest.mark.parametrize("shape", [(4096, 784), (500, 60), (60, 500)])
def test_gram_singular_values_match_the_svd(shape):
    z = torch.relu(torch.randn(*shape, generator=torch.Generator().manual_seed(2)))
    z[:, :5] = z[:, 5:10] * 2  # exact duplicates: rank deficiency the measures must see
    if shape[0] < shape[1]:
        z = torch.relu(torch.randn(*shape, generator=torch.Generator().manual_seed(2)))
        z[:5] = z[5:10] * 2
    ours, svd = gram_singular_values(z), svals(z.double().numpy())
    assert len(ours) == len(svd)
    np.testing.assert_allclose(ours, svd, rtol=0, atol=1e-6 * svd[0])
    for m in (RankMeasure("numerical"), RankMeasure("numerical", 0.02), RankMeasure("effective"), RankMeasure("stable")):
        # counts agree exactly; continuous measures to 1e-6 (the duplicates' zero singular values come back at
        # about 1e-8 of the largest, and an entropy sees them)
        assert m(ours, z.shape, EPS32) == pytest.approx(m(svd, z.shape, EPS32), rel=1e-6), m.spec
    assert RankMeasure("numerical")(ours, z.shape, EPS32) == min(shape) - 5


@pytest.mark.parametrize("rank", [0, 1, 5, 64, 71, 72, 80, 300])
@pytest.mark.parametrize("shape", [(784, 784), (300, 784), (784, 300)])
def test_a_sketched_numerical_rank_is_the_full_svds(rank, shape):
    """Below the sketch's size the count comes from the sketch; above it, the residual check falls back."""
    g = torch.Generator().manual_seed(rank)
    m = torch.randn(shape[0], rank, generator=g) @ torch.randn(rank, shape[1], generator=g)
    m = (m + 1e-7 * torch.randn(*shape, generator=g)).float()  # float32 rounding-level noise, as a gradient has
    full = numerical_rank(singular_values(m), shape, EPS32)
    assert sketched_numerical_rank(m, EPS32, sketch=72) == full
    assert full == min(rank, *shape) or rank == 0


def test_a_sketched_rank_of_a_real_gradient_is_the_full_svds():
    from rankprune.models import build_mlp
    from rankprune.train import batch_gradient

    g = torch.Generator().manual_seed(3)
    model = build_mlp(784, [784, 256], 10, seed=0)
    x, y = torch.randn(64, 784, generator=g), torch.randint(0, 10, (64,), generator=g)
    batch_gradient(model, x, y)
    for w in model.weights():
        assert sketched_numerical_rank(w.grad, EPS32, sketch=72) == numerical_rank(singular_values(w.grad), tuple(w.grad.shape), EPS32)
    assert math.isnan(sketched_numerical_rank(torch.full((784, 784), float("nan")), EPS32, 72))
    assert sketched_numerical_rank(torch.ones(784, 784), EPS32, 72) == 1


# --- parsing -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "name", "param"),
    [
        ("numerical", "numerical", None),
        ("numerical:0.05", "numerical", 0.05),
        ("numerical:1e-3", "numerical", 1e-3),
        ("effective", "effective", None),
        ("stable", "stable", None),
        ("energy:0.99", "energy", 0.99),
        ("energy:1", "energy", 1.0),
        (" energy:0.9 ", "energy", 0.9),
    ],
)
def test_parse_measure_accepts_good_specs(spec, name, param):
    m = parse_measure(spec)
    assert m == RankMeasure(name, param)
    assert m.name in MEASURE_NAMES
    assert parse_measure(m.spec) == m  # the spec a measure records parses back to it


@pytest.mark.parametrize(
    "spec",
    ["bogus", "", "Numerical", "energy", "energy:1.5", "energy:0", "energy:-0.5", "effective:3", "stable:2",
     "numerical:abc", "numerical:0", "numerical:1", "numerical:nan", "energy:inf"],
)
def test_parse_measure_rejects_bad_specs(spec):
    with pytest.raises(ValueError) as info:
        parse_measure(spec)
    assert "\n" not in str(info.value)


# --- the smallest tolerance the decompositions resolve --------------------------------------------
def _known_spectrum(rows: int, cols: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """A matrix with singular values log-spaced from 1 down to 1e-10, stored in `dtype`, and its own singular values
    (the float64 SVD of what is stored: float32's rounding moves the smallest)."""
    rng = np.random.default_rng(seed)
    k = min(rows, cols)
    u, _ = np.linalg.qr(rng.standard_normal((rows, k)))
    v, _ = np.linalg.qr(rng.standard_normal((cols, k)))
    matrix = torch.from_numpy((u * np.logspace(0, -10, k)) @ v.T).to(dtype)
    return matrix, np.linalg.svd(matrix.double().numpy(), compute_uv=False)


def test_the_gram_path_resolves_singular_values_down_to_min_rtol_and_no_further():
    from rankprune.rank import MIN_RTOL

    assert MIN_RTOL == pytest.approx(1.49e-8, rel=1e-2)  # sqrt of float64's eps
    for rows, cols in ((4096, 200), (200, 200)):
        matrix, exact = _known_spectrum(rows, cols)
        gram = gram_singular_values(matrix)
        above = exact >= 10 * MIN_RTOL * exact[0]
        np.testing.assert_allclose(gram[above], exact[above], rtol=0.05)
        # a decade under it, values come back wrong by more than themselves
        below = exact < 0.1 * MIN_RTOL * exact[0]
        assert (np.abs(gram - exact) / exact)[below].max() > 1


@pytest.mark.parametrize("spec", ["numerical:1e-9", "numerical:1e-8", "numerical:1.4e-8"])
def test_a_tolerance_below_what_the_decomposition_resolves_is_refused(spec):
    with pytest.raises(ValueError, match="resolve") as info:
        parse_measure(spec)
    assert "\n" not in str(info.value) and "1.5e-08" in str(info.value)
    assert parse_measure("numerical:1.5e-8").param == 1.5e-8


@pytest.mark.parametrize("flags", [["--rank", "numerical:1e-9"], ["--rtol", "1e-9"]])
def test_the_cli_refuses_it_in_one_line(tmp_path, capsys, flags):
    from rankprune.cli import main

    out = tmp_path / "run"
    assert main(["evolve", "--dataset", "digits", "--layers", "1", *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1.5e-08" in err and not out.exists()


def test_a_weight_is_decomposed_finely_enough_for_a_small_tolerance():
    """A float32 SVD resolves about 1e-6 of the largest singular value; below that the weights are decomposed in
    float64, so the count is the stored matrix's own."""
    from rankprune.measure import measure_layers
    from rankprune.models import build_mlp

    matrix, exact = _known_spectrum(200, 200, torch.float32)
    model = build_mlp(200, [200], 3, seed=0)
    with torch.no_grad():
        model.linears[0].weight.copy_(matrix)
    for rtol in (1e-7, 3e-8):
        m = parse_measure(f"numerical:{rtol:g}")
        assert measure_layers(model, [m]).ranks[m.spec][0] == np.count_nonzero(exact > rtol * exact[0])


def test_measure_all_keys_by_spec():
    s = np.array([2.0, 1.0])
    got = measure_all(s, (2, 2), EPS64, [parse_measure("numerical"), parse_measure("energy:0.5"), parse_measure("stable")])
    assert got == {"numerical": 2.0, "energy:0.5": 1.0, "stable": pytest.approx(1.25)}


# --- widths from ranks --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rank", "current", "min_width", "expected"),
    [
        (12.3, 64, 1, 13),  # continuous measures round up
        (12.0, 64, 1, 12),  # a whole number stays
        (12.0000000001, 64, 1, 12),  # float noise on a whole number does not add a unit
        (0.0, 64, 1, 1),  # never below min_width
        (2.2, 64, 8, 8),
        (100.0, 64, 1, 64),  # never above the current width
        (70.5, 64, 1, 64),
        (3.0, 4, 10, 4),  # min_width above current still never grows the layer
    ],
)
def test_width_from_rank(rank, current, min_width, expected):
    assert width_from_rank(rank, current, min_width) == expected


@pytest.mark.parametrize("seed", range(5))
def test_width_from_rank_bounds_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    for rank, current, min_width in zip(rng.uniform(0, 200, 50), rng.integers(1, 128, 50), rng.integers(1, 16, 50)):
        w = width_from_rank(float(rank), int(current), int(min_width))
        assert w <= current
        assert w >= min(min_width, current)
        assert w >= min(math.ceil(rank - 1e-9), current)
