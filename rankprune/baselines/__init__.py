"""Controllers rankprune is compared against; no part of rankprune's own method.

    original.py    the original research notebook's loop (problem 2): rebuild at numpy's matrix_rank of every layer,
                   fresh weights, deciding on test accuracy; a suite runs it as a [[baseline]] (findings/baseline.py)
"""

from rankprune.baselines.original import OriginalResult, epoch_flops, train_original

__all__ = ["OriginalResult", "epoch_flops", "train_original"]
