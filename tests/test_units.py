"""One unit for training compute across the CLI, the report's tables and its figures."""

from __future__ import annotations

import pytest

from rankprune.units import tflop


@pytest.mark.parametrize("flops, text", [
    (1.36e10, "0.0136"),  # a digits run: 3 significant figures, not 0.00
    (5e11, "0.500"),
    (1.234e12, "1.23"),
    (4.56e13, "45.6"),
    (4.564e14, "456"),
    (1.2345e15, "1,234"),
    (0.0, "0"),
    (None, ""),
    (float("nan"), ""),
])
def test_flops_read_as_tflop_to_three_significant_figures(flops, text):
    assert tflop(flops) == text
