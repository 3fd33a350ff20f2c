"""The report of a dynamics experiment folder (dynamics/folder.py): report.md and figures/ beside its units."""

from __future__ import annotations

from pathlib import Path

from rankprune.config import ConfigError
from rankprune.dynamics.folder import EXPERIMENT, ExperimentFolder, load_units
from rankprune.report.document import _check_figure_options, _Document

__all__ = ["render_experiment"]

TITLES = {"jamming": "The jamming transition (Geiger, Spigler et al. 2019)",
          "lazy": "Lazy training (Chizat, Oyallon and Bach 2019)"}


def render_experiment(path: str | Path, fmt: str = "png", dpi: float = 110) -> Path:
    """Write PATH/report.md and PATH/figures/ from the units finished so far; returns the report's path."""
    _check_figure_options(fmt, dpi)
    path = Path(path)
    stored = ExperimentFolder(path, "", {}).stored() if path.is_dir() else None
    if stored is None:
        raise ConfigError(f"{path} is not a dynamics experiment folder (no {EXPERIMENT})")
    kind, settings, env = stored["kind"], stored["settings"], stored.get("environment", {})
    units = load_units(path)
    doc = _Document(path, fmt, dpi)
    versions = env.get("versions", {})
    doc.add(f"# {TITLES.get(kind, kind)}", "",
            f"Folder `{path}`: {len(units)} finished networks. Last run: `{' '.join(env.get('command', []))}` "
            f"(git {env.get('git_revision')}, torch {versions.get('torch')}, {env.get('device_name')}, "
            f"{env.get('torch_threads')} threads), {env.get('created')}.", "")
    if kind == "jamming":
        from rankprune.report.jamming import sections

        sections(doc, units, settings)
    elif kind == "lazy" and settings.get("experiment") == "landscape":
        from rankprune.report.lazy import landscape_section

        landscape_section(doc)
    elif kind == "lazy":
        from rankprune.report.lazy import sections

        sections(doc, units, settings)
    else:
        raise ConfigError(f"{path} holds an experiment of unknown kind {kind!r}")
    return doc.write()
