"""The analysis layer against hand-computed and scipy-reference values on small synthetic tables."""
from math import comb

import pytest

from rankprune.analysis import mcnemar_exact


def test_mcnemar_exact_against_the_binomial_sum_by_hand():
    # b=8, c=2: P(B >= 8) for B ~ Binomial(10, 1/2) = (C(10,8) + C(10,9) + C(10,10)) / 2^10 = 56/1024
    assert mcnemar_exact(8, 2) == pytest.approx(56 / 1024)
    assert mcnemar_exact(8, 2, alternative="two-sided") == pytest.approx(112 / 1024)
    # the other direction: the first classifier worse, so "greater" is far from significant
    assert mcnemar_exact(2, 8) == pytest.approx(sum(comb(10, k) for k in range(2, 11)) / 1024)
    assert mcnemar_exact(0, 0) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)
