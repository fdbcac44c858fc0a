"""The native library (gpuops/native) built with its portable flags only: the loops a CPU
without AVX2, F16C or AVX-512 runs, which the machine's own build skips."""
from __future__ import annotations

import ctypes
from pathlib import Path

from gpuops import native


def portable_library(folder: Path) -> ctypes.CDLL:
    """casts.c and fused.c built into ``folder`` without the CPU-specific flags."""
    path = folder / "portable.so"
    native.compile_library(native.compiler(), native.PORTABLE_FLAGS, path)
    return ctypes.CDLL(str(path))
