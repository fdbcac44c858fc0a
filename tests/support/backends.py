"""The backends the shared suite runs on: ``numpy`` always, ``emu`` where the CPU
emulator of the CUDA kernels can build (a C++ compiler), ``cupy`` on a usable GPU.

A test backend moves float64 test data to where the backend computes
(``asarray``), back (``to_numpy``), and is entered as a context (``active``)
around the call under test.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any, Iterator

import numpy
import pytest

import gpuops
from gpuops import backend as _backend


class TestBackend:
    name = "numpy"
    marks: tuple = ()

    def xp(self):
        return numpy

    def asarray(self, x: Any, dtype: Any = None, contiguous: bool = True) -> Any:
        """``x`` on this backend; ``contiguous=False`` gives a strided view of the same values."""
        x = numpy.asarray(x, dtype=dtype)
        if not contiguous and x.ndim:
            big = numpy.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype)
            big[..., ::2] = x
            x = big[..., ::2]
        return self._put(x)

    def asarrays(self, xs: tuple, contiguous: bool = True) -> tuple:
        """The arrays of ``xs`` on this backend (see :meth:`asarray`); scalars and None kept."""
        return tuple(self.asarray(x, contiguous=contiguous) if isinstance(x, numpy.ndarray)
                     else x for x in xs)

    def _put(self, x: numpy.ndarray) -> Any:
        return x

    def to_numpy(self, x: Any) -> numpy.ndarray:
        return gpuops.to_cpu(x)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        yield

    def __repr__(self) -> str:
        return self.name


class CupyBackend(TestBackend):
    name = "cupy"
    marks = (pytest.mark.gpu,)

    def xp(self):
        import cupy
        return cupy

    def _put(self, x: numpy.ndarray) -> Any:
        import cupy
        if x.flags.c_contiguous or x.size == 0:
            return cupy.asarray(x)
        # keep the layout: copy the parent buffer and take the same view
        big = cupy.asarray(x.base if x.base is not None else x)
        return big[..., ::2]


def _emu_backend() -> TestBackend | None:
    """The emulator backend, when gpuops.emu exists and a compiler is present."""
    if os.environ.get("GPUOPS_TEST_EMU", "1") == "0" or shutil.which("g++") is None:
        return None
    try:
        from gpuops import emu
    except ImportError:
        return None

    class EmuBackend(TestBackend):
        name = "emu"
        marks = (pytest.mark.emu,)

        @contextlib.contextmanager
        def active(self) -> Iterator[None]:
            with _backend.use_cpu_launcher(emu.launcher()):
                yield

    return EmuBackend()


def available_backends() -> list[TestBackend]:
    found: list[TestBackend] = [TestBackend()]
    emu_backend = _emu_backend()
    if emu_backend is not None:
        found.append(emu_backend)
    if gpuops.gpu_available():
        found.append(CupyBackend())
    return found


def skipped_backends() -> list[tuple[str, str]]:
    """(backend, reason) for each backend this machine cannot run."""
    names = {b.name for b in available_backends()}
    reasons = []
    if "emu" not in names:
        reasons.append(("emu", "no g++, GPUOPS_TEST_EMU=0, or gpuops.emu missing"))
    if "cupy" not in names:
        reasons.append(("cupy", "no usable CUDA GPU (CuPy missing or no device)"))
    return reasons


BACKENDS = available_backends()
# The backends that run the CUDA kernels (the emulator, CuPy): the one definition tests use.
KERNEL_BACKENDS = [b for b in BACKENDS if b.name != "numpy"]
