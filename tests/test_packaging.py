"""The wheel carries the kernel sources and every package file, and an installed gpuops finds them.

Builds the wheel once (``pip wheel`` of a copy of the project, so the checkout gets no
``build/`` or ``*.egg-info``), then checks its contents and imports gpuops from the
unpacked wheel in a fresh process started elsewhere. The build needs setuptools: the
installed one when it can build wheels, else pip's isolated build fetches it.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = ("pyproject.toml", "README.md")
SKIPPED_PARTS = {"__pycache__"}
SKIPPED_SUFFIXES = {".pyc", ".pyo", ".so", ".o"}


def _shipped(folder: Path) -> list[Path]:
    """Files under ``folder`` that belong in the wheel (no caches, no build products)."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not SKIPPED_PARTS & set(p.parts)
                  and p.suffix not in SKIPPED_SUFFIXES and not p.name.startswith("."))


def _can_build_without_isolation() -> bool:
    """setuptools >= 70.1 builds wheels alone; older ones need the ``wheel`` package."""
    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    source.mkdir()
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, source / name)
    for folder in ("gpuops", "cuda"):
        shutil.copytree(ROOT / folder, source / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.o"))
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--quiet",
               "--wheel-dir", str(work / "dist")]
    if _can_build_without_isolation():
        command.append("--no-build-isolation")
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    (built,) = (work / "dist").glob("gpuops-*.whl")
    return built


pytestmark = pytest.mark.slow  # about a minute: a wheel build (maybe fetching setuptools)


def test_wheel_contains_every_kernel_source(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = [p for p in (ROOT / "cuda").iterdir() if p.suffix in (".cu", ".cuh")]
    assert sources, "no cuda/*.cu in the checkout"
    missing = sorted(f"gpuops/cuda/{p.name}" for p in sources
                     if f"gpuops/cuda/{p.name}" not in names)
    assert not missing, f"{wheel.name} lacks kernel sources: {missing}"


def test_wheel_contains_every_package_file(wheel):
    """Every module, subpackage (gpuops.emu, ...) and data file under gpuops/, and py.typed."""
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = [p.relative_to(ROOT).as_posix() for p in _shipped(ROOT / "gpuops")]
    assert "gpuops/py.typed" in expected
    missing = sorted(set(expected) - names)
    assert not missing, (f"{wheel.name} lacks {len(missing)} package files (list the "
                         f"subpackages / package-data in pyproject.toml): {missing}")


def test_installed_package_finds_its_kernels(wheel, tmp_path):
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    script = ("import gpuops, numpy\n"
              "from gpuops import kernels\n"
              "print(gpuops.__file__)\n"
              "print(kernels.cuda_dir())\n"
              "print(','.join(kernels.families()))\n"
              "assert 'extern \"C\"' in kernels.source('elementwise')\n"
              "print(gpuops.add(numpy.ones(3), numpy.ones(3)).tolist())\n")
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    done = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    module, folder, families, added = done.stdout.splitlines()
    assert Path(module).is_relative_to(unpacked), f"imported {module}, not the wheel's gpuops"
    assert Path(folder) == unpacked / "gpuops" / "cuda"
    expected = sorted(p.stem for p in (ROOT / "cuda").glob("*.cu"))
    assert families.split(",") == expected
    assert added == "[2.0, 2.0, 2.0]"
