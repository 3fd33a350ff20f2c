"""rankprune: shrink networks to the rank of their weight matrices, and study convergent rank.

The Python API (see README, "From Python"): run the controller on a RunConfig or on your own tensors and
read the results as pandas tables; load a saved network. Loaded on first use, so `import rankprune` and
the command line start without importing torch.
"""

__version__ = "0.1.0"

__all__ = ["RunConfig", "ConfigError", "Run", "Replicates", "run", "run_seeds", "run_tensors", "open_run", "load_network", "__version__"]

_API = {"Run", "Replicates", "run", "run_seeds", "run_tensors", "open_run", "load_network", "NormalisedNetwork"}


def __getattr__(name: str):
    if name in _API:
        from rankprune import api

        return getattr(api, name)
    if name in ("RunConfig", "ConfigError"):
        from rankprune import config

        return getattr(config, name)
    raise AttributeError(f"module 'rankprune' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazily loaded names are not in the module's dict until first use; list them for dir(), tab
    # completion and help() without importing torch.
    return sorted(set(globals()) | set(__all__) | _API)
