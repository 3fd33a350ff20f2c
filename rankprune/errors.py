"""The one user-error type: its message is one line for the user, and the CLI turns it into exit status 2.

A module of its own, at the bottom of the import graph, so that every layer (models, data, config) can
raise it without importing another.
"""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration value that cannot be used; its message is one line for the user."""
