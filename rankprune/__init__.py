"""rankprune: shrink networks to the rank of their weight matrices, and study convergent rank."""

__version__ = "0.1.0"
