"""Where a result came from: versions, git revision, machine, command line."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["environment"]


def _git_revision() -> str | None:
    """HEAD of the checkout rankprune runs from, with '+dirty' if it has uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(device: str, seed: int) -> dict:
    import torch

    info = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "seed": seed,
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "git_revision": _git_revision(),
        "platform": platform.platform(),
        "versions": {
            "python": platform.python_version(),
            "rankprune": _version("rankprune") or __import__("rankprune").__version__,
            "torch": torch.__version__,  # with its build tag (+cpu, +cu130), which metadata drops
            **{name: _version(name) for name in ("torchvision", "numpy", "scipy", "optuna", "scikit-learn")},
        },
    }
    return info
