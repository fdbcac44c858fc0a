"""The wheel carries the kernel sources, every package file and the licence, and an
installed gpuops finds them; ``pytest --collect-only`` of the suite succeeds.

Builds the wheel once (``pip wheel`` of a copy of the project, so the checkout gets no
``build/`` or ``*.egg-info``), then checks its contents and metadata and imports gpuops
from the unpacked wheel in a fresh process started elsewhere. The build needs setuptools:
the installed one when it can build wheels, else pip's isolated build fetches it. The
sdist is built from the same copy (``python -m build --sdist``) when ``build`` is installed.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import types
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT_FILES = ("pyproject.toml", "README.md", "LICENSE")
SKIPPED_PARTS = {"__pycache__"}
SKIPPED_SUFFIXES = {".pyc", ".pyo", ".so", ".o"}


def _shipped(folder: Path) -> list[Path]:
    """Files under ``folder`` that belong in the wheel (no caches, no build products)."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not SKIPPED_PARTS & set(p.parts)
                  and p.suffix not in SKIPPED_SUFFIXES and not p.name.startswith("."))


def _can_build_without_isolation() -> bool:
    """The installed setuptools can build: pyproject.toml's build-system asks for >= 77 (a
    licence expression and license-files), which builds wheels without ``wheel``."""
    try:
        import setuptools
    except ImportError:
        return False
    major = int(setuptools.__version__.split(".")[0])
    return major >= 77


def _copy_project(work: Path) -> Path:
    source = work / "src"
    source.mkdir()
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, source / name)
    for folder in ("gpuops", "cuda"):
        shutil.copytree(ROOT / folder, source / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.o"))
    return source


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = _copy_project(work)
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--quiet",
               "--wheel-dir", str(work / "dist")]
    if _can_build_without_isolation():
        command.append("--no-build-isolation")
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    (built,) = (work / "dist").glob("gpuops-*.whl")
    return built


# The wheel and sdist tests take about a minute: a build (maybe fetching setuptools).
slow = pytest.mark.slow


def _wheel_metadata(wheel: Path):
    archive = zipfile.ZipFile(wheel)
    (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    return Parser().parsestr(archive.read(name).decode())


@slow
def test_wheel_contains_every_kernel_source(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = [p for p in (ROOT / "cuda").iterdir() if p.suffix in (".cu", ".cuh")]
    assert sources, "no cuda/*.cu in the checkout"
    missing = sorted(f"gpuops/cuda/{p.name}" for p in sources
                     if f"gpuops/cuda/{p.name}" not in names)
    assert not missing, f"{wheel.name} lacks kernel sources: {missing}"


@slow
def test_wheel_contains_every_package_file(wheel):
    """Every module, subpackage (gpuops.emu, ...) and data file under gpuops/, and py.typed."""
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = [p.relative_to(ROOT).as_posix() for p in _shipped(ROOT / "gpuops")]
    assert "gpuops/py.typed" in expected
    missing = sorted(set(expected) - names)
    assert not missing, (f"{wheel.name} lacks {len(missing)} package files (list the "
                         f"subpackages / package-data in pyproject.toml): {missing}")


@slow
def test_wheel_contains_the_license(wheel):
    """LICENSE (MIT) is in the wheel's .dist-info and named by the metadata (PEP 639)."""
    archive = zipfile.ZipFile(wheel)
    licenses = [n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    assert licenses, f"{wheel.name} lacks LICENSE: {sorted(archive.namelist())[-10:]}"
    assert archive.read(licenses[0]) == (ROOT / "LICENSE").read_bytes()
    metadata = _wheel_metadata(wheel)
    assert metadata["License-Expression"] == "MIT"
    assert "LICENSE" in metadata.get_all("License-File", [])


@slow
def test_wheel_metadata(wheel):
    """threadpoolctl is a core dependency (training limits BLAS threads with it), and the
    classifiers name the supported Pythons and CUDA."""
    metadata = _wheel_metadata(wheel)
    core = [r for r in metadata.get_all("Requires-Dist", []) if "extra ==" not in r]
    assert any(r.replace(" ", "").startswith("threadpoolctl>=3") for r in core), core
    classifiers = set(metadata.get_all("Classifier", []))
    for version in ("3.10", "3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert {"Operating System :: OS Independent", "Environment :: GPU :: NVIDIA CUDA",
            "Topic :: Scientific/Engineering :: Artificial Intelligence"} <= classifiers
    assert metadata["Requires-Python"] == ">=3.10"


@slow
def test_sdist_contains_the_license(tmp_path):
    if importlib.util.find_spec("build") is None:
        pytest.skip("the 'build' package is not installed (it is in the test extra)")
    source = _copy_project(tmp_path)
    command = [sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path / "dist"),
               str(source)]
    if _can_build_without_isolation():
        command.append("--no-isolation")
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    (built,) = (tmp_path / "dist").glob("gpuops-*.tar.gz")
    with tarfile.open(built) as archive:
        names = archive.getnames()
    assert any(n.endswith("/LICENSE") and n.count("/") == 1 for n in names), names


@slow
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


def test_collect_only_passes():
    """``pytest --collect-only`` of the whole suite runs no test, so the emulator's kernel
    coverage check (tests/support/emu_coverage.py) must not fail it (it did: exit 1, "FAILED: 274
    kernels of cuda/ never ran"). A few seconds: collection only."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    output = done.stdout + done.stderr
    failed = [line for line in output.splitlines() if "FAILED" in line]
    assert done.returncode == 0 and not failed, (
        f"{' '.join(command[1:])} exited {done.returncode}:\n" + "\n".join(failed)[:2000]
        + "\n" + output[-2000:])


@pytest.mark.parametrize("options, args, expected", [
    ({}, [], ""),
    ({"collectonly": True}, [], "--collect-only"),
    ({"setupplan": True, "setuponly": True}, [], "--setup-plan"),
    ({"showfixtures": True}, [], "--fixtures"),
    ({"keyword": "relu"}, [], "-k relu"),
    ({"markexpr": "not slow"}, [], "-m not slow"),
    ({"markexpr": "emu"}, [], ""),
    ({}, ["tests/infrastructure/test_cli.py"], "only "),
])
def test_partial_runs_do_not_enforce_kernel_coverage(options, args, expected):
    """Only a run of the whole suite enforces the emulator's kernel coverage."""
    import emu_coverage  # tests/ is on sys.path (conftest.py)
    option = types.SimpleNamespace(**{"keyword": "", "markexpr": "", **options})
    config = types.SimpleNamespace(option=option,
                                   args=[str(ROOT / a) for a in args] or [str(ROOT / "tests")])
    session = types.SimpleNamespace(config=config, shouldfail=False, shouldstop=False)
    why = emu_coverage.partial_run(session)
    assert why.startswith(expected) if expected else why == ""
