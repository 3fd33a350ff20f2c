"""What a run will need, known before it starts: every depth's starting network, its parameter count, and
estimates of the memory training it takes and of the disk its saved weights take, against what the device
and the run folder's file system have. The lifecycle (job.py) shows this before a run starts and refuses a
run that cannot fit, so that `--width 10000000` is one line, not minutes of allocation and a crash.

The estimates are upper-bound sketches in bytes, not measurements: float32 weights with their gradient,
optimiser state, the previous iteration's network and a copy being saved; the activations of one training
batch and of one evaluation chunk; and the float64 matrices the rank measurement and the warm rebuild
decompose. No I/O but reading how much memory and disk there is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rankprune.config import ConfigError, RunConfig
from rankprune.models import get_family
from rankprune.models.base import MAX_ACTIVATION_ROWS

__all__ = ["NetworkSize", "network_size", "available_memory", "free_disk", "human_bytes", "check_fits"]

FLOAT32, FLOAT64 = 4, 8
EVAL_ROWS = 8192  # train.EVAL_CHUNK: rows per evaluation forward pass (train is not imported here: sizing is lower)


@dataclass(frozen=True)
class NetworkSize:
    """One depth's starting network and what training it takes."""

    depth: int
    widths: list[int]
    parameters: int
    held: int  # bytes each network holds while it trains (its state and its training batch's activations)
    passing: int  # bytes of the largest one-at-a-time step (an evaluation chunk, a decomposition), on top
    disk: int  # bytes of saved weights for the whole depth, at most

    @property
    def memory(self) -> int:
        """Bytes training this one network takes at its peak, estimated."""
        return self.held + self.passing


def network_size(cfg: RunConfig, input_shape: tuple[int, ...], n_out: int, widths: list[int]) -> NetworkSize:
    """The size of a depth's network at `widths` under `cfg` (resolved), with its memory and disk estimates."""
    family = get_family(cfg.model.family)
    parameters = family.parameter_count(input_shape, widths, n_out)
    per_sample = family.activations_per_sample(input_shape, widths, n_out)
    # weights, gradient, momentum (Adam: two moments), the previous iteration's network, a copy being saved
    states = 5 + (1 if cfg.train.optimizer == "adam" else 0)
    weights = states * parameters * FLOAT32
    # a training batch's activations, kept for backward, about three times over (forward, backward, temporaries)
    training = 3 * cfg.train.batch_size * per_sample * FLOAT32
    # evaluation takes EVAL_ROWS rows a pass; a sequence is as many rows as it has positions (train.evaluate)
    evaluation = max(1, EVAL_ROWS // (input_shape[0] if getattr(family, "reads_sequences", False) else 1)) * per_sample * FLOAT32
    # rank measurement: a weight matrix in float64 with its decomposition's workspace (bounded by all the
    # parameters); the warm rebuild and activation ranks: the widest layer's sampled activations in float64,
    # and the QR's copy
    widest = max(widths) if widths else 1
    spectra = 2 * parameters * FLOAT64
    rows = min(cfg.evolve.rebuild_samples, MAX_ACTIVATION_ROWS) if len(input_shape) == 3 else cfg.evolve.rebuild_samples
    rebuild = 3 * rows * widest * FLOAT64
    # every iteration saves where it began and where it ended, plus the anneal's, the reference copy's and the
    # depth's final network: 2 per iteration and 3 more, each at most the starting size (widths never grow)
    disk = (2 * cfg.evolve.max_iterations + 3) * parameters * FLOAT32
    return NetworkSize(family.depth_of(list(widths)), list(widths), parameters, weights + training, max(evaluation, spectra, rebuild), disk)


def available_memory(device: str) -> int | None:
    """Bytes this process could still allocate on `device`: CUDA's free memory, or the kernel's MemAvailable;
    None where it cannot be read."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def free_disk(path: Path) -> int | None:
    """Bytes free for an unprivileged writer on the file system `path` is (or would be) on; None if unknown."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KB'; 2.1e9 -> '2.1 GB' (powers of 1000, as disks and `free -h --si` count)."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB", "EB"):
        if abs(n) < 1000 or unit == "EB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def check_fits(sizes: list[NetworkSize], members: int, device: str) -> int | None:
    """ConfigError naming the depth and the figures when `members` networks of the largest of `sizes`, trained in
    lockstep (each holding its state and batch, one evaluating or decomposing at a time), cannot fit in the
    device's available memory; returns the available bytes (None: unknown, nothing refused)."""
    available = available_memory(device)
    if available is None or not sizes:
        return available
    largest = max(sizes, key=lambda s: s.memory)
    need = members * largest.held + largest.passing
    if need > available:
        who = f"{members} networks of depth {largest.depth}" if members > 1 else f"depth {largest.depth}"
        shown = largest.widths if len(largest.widths) <= 6 else f"[{largest.widths[0]}, ... x{len(largest.widths)}]"
        raise ConfigError(f"{who} at widths {shown} ({largest.parameters:,} parameters each) needs about "
                          f"{human_bytes(need)} of memory to train, more than the {human_bytes(available)} available "
                          f"on {device}; choose a smaller --width, --params or --layers")
    return available
