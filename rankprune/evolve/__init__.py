"""The rank-pruning controller: train -> measure -> rebuild -> retrain, until the widths stop changing.

For each depth L: start from L hidden layers of the initial width, train to saturation, measure every
layer's rank, give hidden layer l the width of rank(W_l) (never more than it has), multiply the weight
decay by wd_decay, and repeat. A depth ends at a fixed point (the widths did not change: the network's
convergent rank), when they converged (the total hidden width shrank by at most width_tol of itself), at
max_iterations, when validation accuracy falls below the best iteration so far by more than max_drop and more
than drop_z standard errors of the two accuracies' difference (so that noise on a small validation split
does not stop it), or when training diverges; with the warm rebuild one anneal iteration then finishes the chosen network.

The depth's result is its *chosen* iteration: the last one whose validation accuracy is within that tolerance
of the best, so an accuracy drop reports the narrowest network that still held accuracy. Every decision uses
validation data; the test split is only recorded. Every iteration's seeds derive from (seed, depth,
iteration), so a resumed run continues exactly as an uninterrupted one would have.

    phases.py     the rules: pure functions of a depth's iteration history
    iteration.py  one iteration: make the network, train it with the probes measuring, its row
    loop.py       per depth: resume, `while next phase: run one iteration`, the summary; several replicas in
                  lockstep, their iterations trained together (ensemble.py)
    scratch.py    --scratch: the chosen widths trained from a fresh initialisation for the depth's FLOPs
"""

from rankprune.evolve.loop import (DepthResult, NullReporter, Replica, Reporter, evolve, evolve_depth,
                                   evolve_depth_together, evolve_together, rewind_to_complete_round, starting_widths)
from rankprune.evolve.phases import DEPTH_STOP_REASONS
from rankprune.seeds import derive_seed

__all__ = ["Reporter", "NullReporter", "DepthResult", "Replica", "evolve", "evolve_together", "evolve_depth",
           "evolve_depth_together", "starting_widths", "rewind_to_complete_round", "derive_seed",
           "DEPTH_STOP_REASONS"]
