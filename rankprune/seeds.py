"""Seeds derived from (seed, depth, iteration, use), stable across runs and resumes."""

from __future__ import annotations

import numpy as np

__all__ = ["derive_seed", "INIT", "ORDER", "REBUILD", "SAMPLE", "GRAD", "REFERENCE", "HESSIAN_ROWS", "SCRATCH_INIT",
           "SCRATCH_ORDER", "ORIGINAL_INIT", "ORIGINAL_ORDER", "LABEL_NOISE", "CLASSES", "TASKS", "TASK_ROWS", "UNSEEN_TASKS",
           "UNSEEN_ROWS", "REGRESSION"]

# Keys of derive_seed's last argument, so two uses never share a stream.
INIT, ORDER, REBUILD, SAMPLE, GRAD, REFERENCE, HESSIAN_ROWS = 0, 1, 2, 3, 4, 5, 6
# The scratch control's init and data order (evolve/scratch.py), drawn as derive_seed(seed, depth, 0, key): keys of
# their own, not iteration 0's INIT and ORDER, so its network is not the controller's first one.
SCRATCH_INIT, SCRATCH_ORDER = 7, 8
# The original notebook's controller (baselines/original.py): its networks' init, derive_seed(seed, depth,
# meta-iteration, ORIGINAL_INIT), and its DataLoaders' shuffling, derive_seed(seed, depth, 0, ORIGINAL_ORDER).
ORIGINAL_INIT, ORIGINAL_ORDER = 9, 10
# Keys of the task's own draws, derive_seed(seed, key): one stream each, so that one knob's draws do not
# depend on whether another knob is set (nor on the order of flags).
LABEL_NOISE, CLASSES, TASKS, TASK_ROWS, UNSEEN_TASKS, UNSEEN_ROWS, REGRESSION = 100, 101, 102, 103, 104, 105, 106


def derive_seed(seed: int, *keys: int) -> int:
    """An independent 31-bit seed for a (seed, key...) tuple, stable across runs and resumes."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0] & 0x7FFFFFFF)
