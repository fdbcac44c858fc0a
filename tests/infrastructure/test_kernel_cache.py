"""A second Python process does not recompile the kernels (CuPy's disk cache), on a GPU.

Two fresh processes share an empty ``CUPY_CACHE_DIR``: the first compiles the families
it uses and the cache folder gets files; the second must find them — NVRTC is made to
fail in it, no file is added or rewritten — and its results are right. Two processes
compiling into one cache at the same time leave it whole.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import gpuops

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not gpuops.gpu_available(),
                                 reason="needs CuPy and a usable CUDA GPU")]

# Runs operators of two families on the GPU and checks them against NumPy. With
# "forbid-compile", every NVRTC entry point of CuPy raises: a compile is a failure.
SCRIPT = r"""
import sys
import numpy, cupy
import cupy.cuda.compiler as compiler

if sys.argv[1] == "forbid-compile":
    def refuse(*args, **kwargs):
        raise AssertionError("kernel compiled again in a second process")
    for name in ("compile_using_nvrtc", "_compile_using_nvrtc"):
        if hasattr(compiler, name):
            setattr(compiler, name, refuse)

import gpuops
rng = numpy.random.default_rng(0)
x = rng.uniform(0.5, 2.0, (300, 7)).astype(numpy.float32)
b = rng.uniform(0.5, 2.0, 7).astype(numpy.float32)
dx, db = gpuops.to_gpu(x), gpuops.to_gpu(b)
y = gpuops.div(dx, db)                                   # elementwise family
gb = gpuops.div_wrt_x2(dx, db, y, cupy.ones_like(y))     # elementwise + reduction
numpy.testing.assert_allclose(gpuops.to_cpu(y), x / b, rtol=1e-6)
numpy.testing.assert_allclose(gpuops.to_cpu(gb), (-x / b ** 2).sum(axis=0), rtol=1e-5)
print("ok")
"""


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns
            for p in folder.rglob("*") if p.is_file()}


def _start(mode: str, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "CUPY_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("CUPY_CACHE_IN_MEMORY", None)  # that would skip the disk cache
    return subprocess.Popen([sys.executable, "-c", SCRIPT, mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _run(mode: str, cache: Path) -> subprocess.CompletedProcess:
    process = _start(mode, cache)
    stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_second_process_does_not_recompile(tmp_path):
    cache = tmp_path / "kernel_cache"
    first = _run("compile", cache)
    assert first.returncode == 0 and first.stdout.strip() == "ok", first.stderr
    after_first = _files(cache)
    assert after_first, f"the first process left no compiled kernels in {cache}"

    second = _run("forbid-compile", cache)
    assert second.returncode == 0 and second.stdout.strip() == "ok", second.stderr
    assert _files(cache) == after_first, "the second process added or rewrote cache files"


def test_two_processes_starting_together_share_the_cache(tmp_path):
    """Both compile into one empty cache at the same time (CuPy writes each file through a
    temporary and a rename); both are right, and a third process finds every kernel."""
    cache = tmp_path / "kernel_cache"
    racing = [_start("compile", cache) for _ in range(2)]
    for process in racing:
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0 and stdout.strip() == "ok", stderr
    third = _run("forbid-compile", cache)
    assert third.returncode == 0 and third.stdout.strip() == "ok", third.stderr
