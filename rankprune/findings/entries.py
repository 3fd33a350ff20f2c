"""Checks every table of a suite file shares ([[experiment]], [[law]], [[baseline]] and their nested tables): each
problem is a one-line ConfigError naming where it is."""

from __future__ import annotations

import re
from typing import Any

from rankprune.config import ConfigError

__all__ = ["check_entry", "check_question", "check_name"]


def check_entry(raw: Any, where: str, shape: str, known: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    """`raw` as a table with only `known` keys and every `required` one; `shape` says what a table looks like."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table{shape}")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]}; known: {', '.join(known)}")
    for key in required:
        if key not in raw:
            raise ConfigError(f"{where}: {key} is required")
    return raw


def check_question(value: Any, questions: dict[int, str], where: str) -> int:
    """A number of the suite's [questions]."""
    if not isinstance(value, int) or isinstance(value, bool) or value not in questions:
        known = ", ".join(map(str, questions)) or "none: add a [questions] table"
        raise ConfigError(f"{where}: question must be a number of [questions] ({known}), got {value!r}")
    return value


def check_name(value: Any, where: str, names: str) -> str:
    """An entry's name: letters, digits, '_', '.' or '-', since it `names` a file or folder."""
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
        raise ConfigError(f"{where}: name must be letters, digits, '_', '.' or '-' (it names {names}), got {value!r}")
    return value
