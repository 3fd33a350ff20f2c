"""Measurements the controller runs during a depth, each adding columns to the rows it writes.

A probe is registered once (PROBES, in the order they run) and made anew for every iteration; the
controller calls `epoch(ctx)` after every epoch and `iteration(ctx)` once the iteration has trained, and
merges the dicts they return into the epoch and iteration rows. A new measurement is a new module here
that calls `register`; the controller is not edited. An optional measurement defines `wanted(cfg)` and is
made only when the run's config asks for it (config.ProbeConfig).
"""

from rankprune.probes.base import PROBES, Probe, ProbeContext, check_probes, make_probes, register
# Importing a probe's module registers it; they run in this order.
from rankprune.probes import spectra  # noqa: E402,F401  isort: skip
from rankprune.probes import activations  # noqa: E402,F401  isort: skip
from rankprune.probes import reference  # noqa: E402,F401  isort: skip
from rankprune.probes import memorisation  # noqa: E402,F401  isort: skip
from rankprune.probes import tasks  # noqa: E402,F401  isort: skip
from rankprune.probes import movement  # noqa: E402,F401  isort: skip
from rankprune.probes import hessian  # noqa: E402,F401  isort: skip

__all__ = ["PROBES", "Probe", "ProbeContext", "check_probes", "make_probes", "register"]
