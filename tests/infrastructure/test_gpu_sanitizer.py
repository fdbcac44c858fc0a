"""compute-sanitizer flags the planted bugs of tests/infrastructure/gpu_kernels/planted_bugs.cu.

The same tool runs the GPU suite (README, "Checking kernels with compute-sanitizer"):
    compute-sanitizer --tool memcheck --error-exitcode 1 python -m pytest -m gpu -x -q
    compute-sanitizer --tool racecheck --error-exitcode 1 python -m pytest -m gpu -x -q
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gpuops

SANITIZER = shutil.which("compute-sanitizer") or next(
    (str(p) for p in Path("/usr/local/cuda/bin").glob("compute-sanitizer") if p.exists()), None)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpuops.gpu_available(), reason="no usable CUDA GPU"),
    pytest.mark.skipif(SANITIZER is None, reason="compute-sanitizer not found"),
]

LAUNCH = """
import cupy, sys
src = open({path!r}).read()
mod = cupy.RawModule(code=src)
y = cupy.zeros(256, dtype=cupy.float32)
if sys.argv[1] == "oob":
    mod.get_function("out_of_bounds_write")((1,), (256,), (y, cupy.int64(255)))
else:
    mod.get_function("shared_memory_race")((1,), (256,), (y,))
cupy.cuda.Device().synchronize()
"""


def _sanitize(tool: str, case: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "launch.py"
    script.write_text(LAUNCH.format(path=str(Path(__file__).parent / "gpu_kernels" /
                                             "planted_bugs.cu")))
    return subprocess.run([SANITIZER, "--tool", tool, "--error-exitcode", "3", sys.executable,
                           str(script), case], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CUPY_CACHE_DIR": str(tmp_path / "cache")})


def test_memcheck_flags_out_of_bounds_write(tmp_path):
    run = _sanitize("memcheck", "oob", tmp_path)
    assert run.returncode == 3, run.stdout + run.stderr
    assert "Invalid __global__ write" in run.stdout + run.stderr


def test_racecheck_flags_shared_memory_race(tmp_path):
    run = _sanitize("racecheck", "race", tmp_path)
    assert run.returncode == 3, run.stdout + run.stderr
    assert "hazard" in (run.stdout + run.stderr).lower()
