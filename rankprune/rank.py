"""Rank measures: pure functions of a matrix's singular values.

Every measure takes the singular values in descending order (as numpy and torch return them)
and the shape and dtype-epsilon the matrix had, and returns a float. Integer-valued measures
(numerical, energy) return whole numbers; continuous ones (effective, stable) do not, and the
rebuild rounds them (see `width_from_rank`).

Measures are named by a spec string: ``numerical``, ``numerical:1e-3`` (relative tolerance),
``effective``, ``stable``, ``energy:0.99``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

__all__ = [
    "RankMeasure",
    "parse_measure",
    "MEASURE_NAMES",
    "numerical_rank",
    "effective_rank",
    "stable_rank",
    "energy_rank",
    "singular_values",
    "gram_singular_values",
    "sketched_numerical_rank",
    "measure_all",
    "width_from_rank",
    "DEFAULT_RECORDED",
    "MIN_RTOL",
    "FLOAT32_RTOL",
]


def numerical_rank(s: np.ndarray, shape: tuple[int, int], eps: float, rtol: float | None = None) -> float:
    """Count of singular values above a tolerance.

    With ``rtol=None`` this is numpy's ``matrix_rank`` rule: tol = sigma_max * max(M, N) * eps,
    where eps belongs to the dtype the matrix was stored in (float32 weights use float32's eps even
    though we take their SVD in float64). With ``rtol`` set: count of sigma_i > rtol * sigma_max.
    """
    if s.size == 0 or s[0] == 0:
        return 0.0
    tol = s[0] * (max(shape) * eps if rtol is None else rtol)
    return float(np.count_nonzero(s > tol))


def effective_rank(s: np.ndarray) -> float:
    """Roy & Vetterli (2007): exp of the Shannon entropy of p_i = sigma_i / sum(sigma)."""
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(math.exp(-(p * np.log(p)).sum()))


def stable_rank(s: np.ndarray) -> float:
    """||W||_F^2 / ||W||_2^2 = sum(sigma_i^2) / sigma_max^2 (Rudelson & Vershynin 2007)."""
    if s.size == 0 or s[0] == 0:
        return 0.0
    return float((s**2).sum() / s[0] ** 2)


def energy_rank(s: np.ndarray, fraction: float) -> float:
    """Smallest k whose sigma_1^2..sigma_k^2 hold at least `fraction` of sum(sigma_i^2)."""
    energy = np.cumsum(s.astype(np.float64) ** 2)
    if energy.size == 0 or energy[-1] == 0:
        return 0.0
    # A relative slack keeps fraction=1.0 from failing on the last float's rounding.
    k = int(np.searchsorted(energy, fraction * energy[-1] * (1 - 1e-12), side="left")) + 1
    return float(min(k, s.size))


@dataclass(frozen=True)
class RankMeasure:
    """A named rank measure with its parameter, e.g. ``energy:0.99``."""

    name: str
    param: float | None = None

    @property
    def spec(self) -> str:
        return self.name if self.param is None else f"{self.name}:{self.param:g}"

    def __call__(self, s: np.ndarray, shape: tuple[int, int], eps: float) -> float:
        if not np.isfinite(s).all():  # a diverged matrix has no rank worth reporting
            return float("nan")
        if self.name == "numerical":
            return numerical_rank(s, shape, eps, self.param)
        if self.name == "effective":
            return effective_rank(s)
        if self.name == "stable":
            return stable_rank(s)
        if self.name == "energy":
            return energy_rank(s, self.param)
        raise AssertionError(self.name)  # parse_measure admits nothing else


# The smallest relative tolerance every decomposition here resolves: sqrt(float64 eps) = 1.49e-8. Activation
# matrices and a batch's weight spectra go through the eigenvalues of a float64 Gram matrix, which squares the
# condition number: singular values under about this fraction of the largest come back wrong (measured on
# matrices with known singular values down to 1e-10: 784 x 784, 64 x 576, 200 x 200 and 4,096 x 200, the first
# value off by more than 10% lay at 3e-9 to 1.3e-8 of the largest, and counts above 1.5e-8 were exact or off by
# one). A single network's weights, decomposed in float32, resolve only down to about 1e-6 (the same matrices:
# counts exact at 1e-6, off by 1-11 at 1.2e-7 to 3e-7); below FLOAT32_RTOL they are decomposed in float64
# (measure.svd_dtype), so that every path resolves every tolerance it is given.
MIN_RTOL = math.sqrt(float(np.finfo(np.float64).eps))
FLOAT32_RTOL = 1e-6

# Parameter rules per measure: (takes a parameter?, required?, valid range check, message).
_RULES: dict[str, tuple[bool, bool, Callable[[float], bool], str]] = {
    "numerical": (True, False, lambda v: MIN_RTOL <= v < 1,
                  f"a relative tolerance in [{MIN_RTOL:.2g}, 1): below {MIN_RTOL:.2g} of the largest singular value "
                  "(sqrt of float64's eps) the float64 Gram eigendecomposition behind activation ranks and batched "
                  "spectra cannot resolve singular values"),
    "effective": (False, False, lambda v: True, ""),
    "stable": (False, False, lambda v: True, ""),
    "energy": (True, True, lambda v: 0 < v <= 1, "an energy fraction in (0, 1]"),
}
MEASURE_NAMES = tuple(_RULES)


def parse_measure(spec: str) -> RankMeasure:
    """Parse ``name`` or ``name:param``; raise ValueError with a one-line reason."""
    name, _, raw = spec.strip().partition(":")
    if name not in _RULES:
        raise ValueError(f"unknown rank measure {spec!r}; choose from numerical[:RTOL], effective, stable, energy:Q")
    takes, required, ok, what = _RULES[name]
    if not raw:
        if required:
            raise ValueError(f"rank measure {name!r} needs {what}, e.g. {name}:0.99")
        return RankMeasure(name)
    if not takes:
        raise ValueError(f"rank measure {name!r} takes no parameter (got {spec!r})")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"rank measure {spec!r}: {raw!r} is not a number") from None
    if not ok(value):
        raise ValueError(f"rank measure {spec!r}: the parameter must be {what}")
    return RankMeasure(name, value)


# Measures recorded at every evaluation, whichever one drives the shrinking.
DEFAULT_RECORDED = ("numerical", "effective", "stable", "energy:0.9", "energy:0.99")


def singular_values(matrix: torch.Tensor, dtype: torch.dtype = torch.float64) -> np.ndarray:
    """Singular values of a matrix, descending, from an SVD in `dtype` on the CPU, as float64.

    float32 is what numpy's own matrix_rank computes for a float32 matrix, and a float32 weight holds no
    more digits than that; it is somewhat faster (784 x 784: 64 against 70 ms, four in a row 256 against 290
    ms; benchmarks/results/svd_options.md).
    A matrix holding NaN or infinity (a diverged network) gets NaN singular values instead of the
    LinAlgError that LAPACK would raise.
    """
    m = matrix.detach().to("cpu", dtype)
    if not torch.isfinite(m).all():
        return np.full(min(m.shape), np.nan)
    return torch.linalg.svdvals(m).to(torch.float64).numpy()


def gram_singular_values(matrix: torch.Tensor) -> np.ndarray:
    """Singular values of a tall (or wide) matrix from the eigenvalues of its small float64 Gram matrix.

    For an activation matrix (4,096 x 784) this is 2x faster than its SVD. Squaring the condition number
    loses singular values below about MIN_RTOL = 1.5e-8 x the largest, which is why parse_measure refuses a
    relative tolerance below it (numpy's rule for float32 data is far above it: max(M, N) x 1.2e-7 relative).
    """
    m = matrix.detach().to("cpu", torch.float64)
    if not torch.isfinite(m).all():
        return np.full(min(m.shape), np.nan)
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    return torch.linalg.eigvalsh(gram).flip(0).clamp_min(0).sqrt().numpy()


def sketched_numerical_rank(matrix: torch.Tensor, eps: float, sketch: int, seed: int = 0) -> float:
    """numpy's matrix_rank of a matrix expected to have rank below `sketch`, without its full SVD.

    A loss gradient over B rows has rank at most B for a linear layer (a sum of B outer products), so a
    784 x 784 gradient of a batch of 64 needs only a 784 x `sketch` range: a seeded Gaussian sketch Y = G W,
    Q = qr(Y), and the singular values s of Q^T G (Halko, Martinsson and Tropp 2011). The residual
    R = G - Q Q^T G is bounded in norm, and by Weyl's inequality every singular value of G lies within
    ||R||_2 <= ||R||_F of one of s (or of 0). The count is returned only when no singular value is that close to
    the tolerance (which itself is known to within ||R||), so it is numpy's count; otherwise, and whenever
    the matrix is too small for a sketch to pay, the full SVD decides. float64 throughout.
    """
    m = matrix.detach().to("cpu", torch.float64)
    if not torch.isfinite(m).all():
        return float("nan")
    shape = tuple(m.shape)
    if m.shape[0] < m.shape[1]:
        m = m.T  # sketch the smaller side's range
    if 2 * sketch >= m.shape[1]:
        return numerical_rank(singular_values(m), shape, eps)
    omega = torch.randn(m.shape[1], sketch, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q, _ = torch.linalg.qr(m @ omega)
    core = q.T @ m
    s = torch.linalg.svdvals(core).numpy()
    # ||R||_F^2 = ||G||_F^2 - ||Q^T G||_F^2 (Q has orthonormal columns), without forming R; the float64
    # cancellation leaves an error of a few eps64 x ||G||_F^2, added so that `spread` stays an upper bound.
    # It resolves a residual of about 1e-8 ||G||_F, far under numpy's tolerance (max(M, N) x eps32 x sigma_max).
    total, kept = float(m.square().sum()), float(core.square().sum())
    spread = math.sqrt(max(total - kept, 0.0) + 8 * float(np.finfo(np.float64).eps) * total)
    if s.size == 0 or s[0] == 0:
        return numerical_rank(singular_values(m), shape, eps)
    low, high = s[0] * max(shape) * eps, (s[0] + spread) * max(shape) * eps
    ambiguous = spread >= low or np.any((s > low - spread) & (s <= high))
    if ambiguous:
        return numerical_rank(singular_values(m), shape, eps)
    return float(np.count_nonzero(s > high))


def measure_all(
    s: np.ndarray, shape: tuple[int, int], eps: float, measures: list[RankMeasure]
) -> dict[str, float]:
    """Every measure of one matrix, keyed by spec."""
    return {m.spec: m(s, shape, eps) for m in measures}


def width_from_rank(rank: float, current: int, min_width: int) -> int:
    """The hidden width a layer gets from its rank: max(min_width, ceil(rank)), never above `current`.

    Continuous measures round up, so a layer whose effective rank is 12.3 keeps 13 units.
    """
    return int(min(current, max(min_width, math.ceil(rank - 1e-9))))
