"""What the command-line tests check again and again: a refusal is one line and exit status 2, never a traceback,
and it leaves every file as it was."""

from __future__ import annotations

from pathlib import Path


def tree(path: Path) -> dict[str, bytes]:
    """Every file under `path` with its bytes: equal before and after means nothing was written or deleted."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def one_line_error(capsys, code: int) -> str:
    """The one stderr line of a refused command (exit status 2, no traceback)."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def last_line_error(capsys, code: int, command: str = "evolve") -> str:
    """The error that ended a command that had started (its progress lines come first): exit 2, no traceback."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    line = [line for line in err.splitlines() if line.strip()][-1]
    assert line.startswith(f"rankprune {command}: error: "), err
    return line
