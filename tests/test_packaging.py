"""What a user installs: a wheel built from the checkout installs into a fresh virtualenv and runs the quick
start; its metadata does not pin torch; the license and the citation agree with the package; `import
rankprune` lists its public names without importing torch."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

import rankprune

ROOT = Path(__file__).resolve().parents[1]
GUARD_S = 300  # a hung child fails its test instead of the suite; not a timing assertion
# The quick start of README.md, made small: one depth of width 16, one iteration of at most 2 epochs.
QUICK_START = ["evolve", "--dataset", "digits", "--width", "16", "--layers", "1", "--max-iterations", "1",
               "--max-epochs", "2"]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# --- the license and the citation ---------------------------------------------------------------------------
def test_the_citation_and_the_license_agree_with_the_package():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    project = pyproject()["project"]
    assert cff["cff-version"] == "1.2.0"
    assert {"message", "title", "authors", "version", "license", "date-released"} <= set(cff)
    assert cff["version"] == rankprune.__version__ == project["version"]
    assert cff["license"] == project["license"] == "MIT"
    assert cff["authors"] == [{"name": "The rankprune authors"}]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "the rankprune authors" in text
    assert project["license-files"] == ["LICENSE"]


# --- the public names ---------------------------------------------------------------------------------------
def test_dir_lists_every_public_name_and_each_resolves():
    names = dir(rankprune)
    for name in rankprune.__all__:
        assert name in names
        assert getattr(rankprune, name) is not None


def test_dir_of_rankprune_does_not_import_torch():
    done = subprocess.run([sys.executable, "-c", "import rankprune, sys; names = dir(rankprune); "
                           "print('load_network' in names, 'torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=GUARD_S)
    assert done.stdout.split() == ["True", "False"], done.stderr


# --- the wheel ----------------------------------------------------------------------------------------------
def _can_build_here() -> str | None:
    """Why a wheel cannot be built here without downloading anything, or None."""
    if importlib.util.find_spec("pip") is None:
        return "pip is not installed"
    if tuple(int(p) for p in importlib.metadata.version("pip").split(".")[:2]) < (22, 3):
        return "pip is older than 22.3 (no --python)"
    if importlib.util.find_spec("setuptools") is None:
        return "setuptools is not installed (the build backend)"
    needed = next(r for r in pyproject()["build-system"]["requires"] if r.startswith("setuptools"))
    have = importlib.metadata.version("setuptools")
    if tuple(int(p) for p in re.findall(r"\d+", have)[:1]) < tuple(int(p) for p in re.findall(r"\d+", needed)[:1]):
        return f"setuptools {have} is older than the build needs ({needed})"
    return None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the checkout (pip builds in the source tree, and the checkout is shared),
    with the test interpreter's setuptools: no build isolation, so nothing is downloaded."""
    why = _can_build_here()
    if why:
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "rankprune", src / "rankprune", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(tmp / "dist"), str(src)],
                          capture_output=True, text=True, timeout=GUARD_S)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = (tmp / "dist").glob("rankprune-*.whl")
    return built


def test_the_wheel_holds_every_module_the_license_and_no_pinned_torch(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    modules = {n for n in names if n.endswith(".py")}
    checkout = {p.relative_to(ROOT).as_posix() for p in (ROOT / "rankprune").rglob("*.py")}
    assert modules == checkout
    dist_info = f"rankprune-{rankprune.__version__}.dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, flags=re.M)
    torch_requirements = [r for r in requires if re.match(r"torch(vision)?\b", r)]
    assert len(torch_requirements) == 2 and not any("==" in r for r in torch_requirements), torch_requirements
    assert "License-Expression: MIT" in metadata


def test_the_sdist_holds_the_license(tmp_path):
    why = _can_build_here()
    if why:
        pytest.skip(why)
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "rankprune", src / "rankprune", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    done = subprocess.run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                           "print(build_meta.build_sdist(sys.argv[1]))", str(tmp_path / "dist")],
                          cwd=src, capture_output=True, text=True, timeout=GUARD_S)
    assert done.returncode == 0, done.stdout + done.stderr
    name = done.stdout.split()[-1]
    with tarfile.open(tmp_path / "dist" / name) as sdist:
        assert f"{name.removesuffix('.tar.gz')}/LICENSE" in sdist.getnames()


def _requirement_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)


def _fresh_venv(path: Path) -> Path:
    """A virtualenv without pip (pip installs into it from outside, through --python); its python."""
    done = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], capture_output=True, text=True,
                          timeout=GUARD_S)
    if done.returncode != 0:
        pytest.skip(f"cannot create a virtualenv here: {done.stderr.strip()}")
    return path / "bin" / "python"


def _site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, timeout=GUARD_S, check=True)
    return Path(out.stdout.strip())


def _child_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    # One OpenMP thread: see conftest.py (a shared 2-core machine).
    return {**env, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def _check_installed_and_run_the_quick_start(venv: Path, tmp: Path) -> None:
    """rankprune in `venv` comes from its own site-packages (not the checkout), and its command runs the quick
    start, small, to a finished run folder."""
    cwd = tmp / "elsewhere"  # not the checkout: its rankprune/ must not be importable from the current folder
    cwd.mkdir()
    env = _child_env(venv)
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import importlib.metadata as m, rankprune, rankprune.cli; "
                            "print(rankprune.__file__); print(rankprune.cli.__file__); "
                            "print(m.distribution('rankprune').locate_file(''))"],
                           cwd=cwd, env=env, capture_output=True, text=True, timeout=GUARD_S)
    assert where.returncode == 0, where.stderr
    site = _site_packages(venv / "bin" / "python").resolve()
    for line in where.stdout.split():
        assert Path(line).resolve().is_relative_to(site), (line, site)  # the wheel's files, not the editable checkout
    out = tmp / "out"
    done = subprocess.run([str(venv / "bin" / "rankprune"), *QUICK_START, "--out", str(out)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=GUARD_S)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((out / "status.json").read_text())["state"] == "finished"
    assert set(json.loads((out / "depths.json").read_text())) == {"1"}


def test_the_wheel_installs_into_a_fresh_virtualenv_and_runs_the_quick_start(wheel, tmp_path):
    python = _fresh_venv(tmp_path / "venv")
    # rankprune from the wheel; its dependencies from where the test interpreter has them, through a .pth file,
    # so that no torch is downloaded or copied. Paths listed in a .pth are added to sys.path after the venv's
    # own site-packages, and .pth files in them are not run: the checkout's editable install stays inactive.
    site = _site_packages(python)
    places = {str(importlib.metadata.distribution(_requirement_name(r)).locate_file("").resolve())
              for r in pyproject()["project"]["dependencies"]}
    (site / "test_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(places)))
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                           "-q", str(wheel)], capture_output=True, text=True, timeout=GUARD_S)
    assert done.returncode == 0, done.stdout + done.stderr
    _check_installed_and_run_the_quick_start(tmp_path / "venv", tmp_path)


@pytest.mark.slow
def test_pip_installs_the_wheel_with_its_dependencies_into_a_bare_virtualenv(wheel, tmp_path):
    """`pip install WHEEL` into a virtualenv that has nothing: pip resolves every dependency (here from the
    machine's local package folders and index; elsewhere from PyPI) and the quick start runs."""
    python = _fresh_venv(tmp_path / "venv")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    _check_installed_and_run_the_quick_start(tmp_path / "venv", tmp_path)
