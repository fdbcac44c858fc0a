"""``python -m gpuops info`` and ``python -m gpuops demo`` in a fresh process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy

import gpuops
from backends import available_backends
from gpuops import kernels

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m gpuops ARGS`` with this checkout importable, from ``cwd`` (default: a
    folder that is not the checkout, so nothing is found by accident)."""
    environment = {**os.environ, **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", "gpuops", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=environment)


def _fields(stdout: str) -> dict[str, str]:
    """``key   value`` lines (keys may be two words: ``test backends``)."""
    fields = {}
    for line in stdout.splitlines():
        for key in ("gpuops", "python", "numpy", "cupy", "gpu", "test backends",
                    "kernel sources", "kernel cache"):
            if line.startswith(key + " "):
                fields[key] = line[len(key):].strip()
                break
    return fields


def test_info(tmp_path):
    cache = tmp_path / "cupy-cache"
    done = _run("info", env={"CUPY_CACHE_DIR": str(cache)}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    fields = _fields(done.stdout)
    assert fields["gpuops"] == gpuops.__version__
    assert fields["numpy"] == numpy.__version__
    assert fields["python"] == ".".join(map(str, sys.version_info[:3]))
    if gpuops.gpu_available():
        import cupy
        assert fields["cupy"] == cupy.__version__ and fields["gpu"].startswith("yes: ")
    else:
        assert fields["gpu"] == "no usable CUDA GPU"
    suite = {b.name for b in available_backends()}
    assert set(fields["test backends"].split(", ")) == suite
    assert fields["kernel sources"] == (f"{kernels.cuda_dir()} "
                                        f"({', '.join(kernels.families())})")
    assert fields["kernel cache"] == str(cache)


def test_info_default_cache_dir(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CUPY_CACHE_DIR"}
    env["HOME"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-m", "gpuops", "info"], capture_output=True,
                          text=True, timeout=300, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    assert _fields(done.stdout)["kernel cache"] == str(tmp_path / ".cupy" / "kernel_cache")


def test_demo(tmp_path):
    done = _run("demo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    where = "GPU (CuPy kernels)" if gpuops.gpu_available() else "CPU (NumPy)"
    assert lines[0] == f"backend: {where}"
    assert "d(sum(x + b))/db = [4. 4. 4.]" in lines  # 4 rows of ones summed per column
    assert lines[-1] == "d(sum(sin x))/dx == cos x: True"


def test_unknown_command_fails_with_usage(tmp_path):
    done = _run("no-such-command", cwd=tmp_path)
    assert done.returncode == 2 and "usage: python -m gpuops" in done.stderr


def test_unknown_train_option_fails_with_the_train_usage(tmp_path):
    done = _run("train", "--no-such-option", "3", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == ("python -m gpuops train: error: unrecognized arguments: "
                           "--no-such-option 3 (see python -m gpuops train --help)\n")
