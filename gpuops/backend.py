"""Backend selection: the one place that looks at array types.

A *backend* pairs an array module (where arrays live) with a kernel launcher
(who runs the CUDA code) or with no launcher (run the NumPy implementation):

========  ===========  ==========================================================
name      array module  computes with
========  ===========  ==========================================================
``numpy``  NumPy        the NumPy implementation of each operator
``cupy``   CuPy         the CUDA kernels of ``cuda/*.cu``, launched by CuPy
``emu``    NumPy        the same CUDA kernels run on the CPU (a testing backend;
                        selected with :func:`use_cpu_launcher`)
========  ===========  ==========================================================

:meth:`gpuops.call.Signature.bind` picks the backend of every operator call
(:func:`cpu_backend` for NumPy inputs, :func:`gpu_backend` for CuPy inputs).
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterator

import ml_dtypes
import numpy

if TYPE_CHECKING:  # pragma: no cover
    from .kernels import Launcher

FLOAT16 = numpy.dtype(numpy.float16)
BFLOAT16 = numpy.dtype(ml_dtypes.bfloat16)  # gpuops.bfloat16: 8 exponent bits, 7 fraction bits
# The float dtypes the NumPy code and the kernels compute in.
FLOAT_DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))
# The 16-bit storage dtypes: loaded as float32, computed in float32, rounded once on store
# (to nearest even), by the kernels and by the NumPy backend alike (gpuops.call).
SIXTEEN_BIT_DTYPES = (FLOAT16, BFLOAT16)
INT_DTYPES = (numpy.dtype(numpy.int32), numpy.dtype(numpy.int64))
# ``kernel_dtypes`` of a family whose kernels have a float16 instantiation...
HALF_DTYPES = FLOAT_DTYPES + (FLOAT16,)
# ...and of one whose kernels have both 16-bit instantiations (suffixes f16 and bf16).
ALL_FLOAT_DTYPES = FLOAT_DTYPES + SIXTEEN_BIT_DTYPES

_cupy_module: ModuleType | None = None
_cupy_checked = False
_state = threading.local()


def _cupy() -> ModuleType | None:
    """CuPy if it imports, else None (imported on first use, not with gpuops)."""
    global _cupy_module, _cupy_checked
    if not _cupy_checked:
        try:
            import cupy
            _cupy_module = cupy
        except Exception:  # ImportError, or a broken CUDA install
            _cupy_module = None
        _cupy_checked = True
    return _cupy_module


def _require_cupy(what: str) -> ModuleType:
    """CuPy, for code that only runs on CuPy arrays; RuntimeError naming ``what`` if it
    does not import."""
    cp = _cupy()
    if cp is None:
        raise RuntimeError(f"{what}: got a cupy.ndarray but CuPy does not import")
    return cp


def is_cupy_array(x: Any) -> bool:
    # Check the type's module first so NumPy-only callers never import CuPy.
    return type(x).__module__.startswith("cupy") and type(x).__name__ == "ndarray"


def gpu_available() -> bool:
    """True when CuPy imports and at least one CUDA device answers."""
    cp = _cupy()
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def get_array_module(*xs: Any) -> ModuleType:
    """``cupy`` if any argument is a CuPy array, else ``numpy``."""
    for x in xs:
        if is_cupy_array(x):
            return _require_cupy("get_array_module")
    return numpy


def to_gpu(x: Any) -> Any:
    """Copy a NumPy array to the current CUDA device (CuPy arrays pass through)."""
    cp = _cupy()
    if cp is None or not gpu_available():
        raise RuntimeError("to_gpu: no usable CUDA GPU (CuPy missing or no device)")
    return cp.asarray(x)


def to_cpu(x: Any) -> numpy.ndarray:
    """Copy a CuPy array to host memory (NumPy arrays pass through)."""
    if is_cupy_array(x):
        return x.get()
    return numpy.asarray(x)


@dataclass(frozen=True)
class Backend:
    """Where arrays live (``xp``) and who computes (``launcher``; None: NumPy code)."""

    name: str
    xp: ModuleType
    launcher: "Launcher | None"

    @property
    def uses_kernels(self) -> bool:
        return self.launcher is not None

    @property
    def kernel_launcher(self) -> "Launcher":
        """``launcher``, for code that launches kernels (reached only when ``uses_kernels``);
        RuntimeError on a backend that computes with the NumPy code."""
        launcher = self.launcher
        if launcher is None:
            raise RuntimeError(f"the {self.name} backend has no kernel launcher: it computes "
                               "with the NumPy code")
        return launcher


NUMPY = Backend("numpy", numpy, None)


# How many threads have a CPU launcher in effect: while none has, every thread computes
# NumPy arrays with NumPy and cpu_backend() needs no thread-local look-up.
_launcher_scopes = 0
_scopes_lock = threading.Lock()


def cpu_backend() -> Backend:
    """The backend of NumPy inputs in this thread: NumPy, or a CPU launcher's kernels."""
    if not _launcher_scopes:
        return NUMPY
    return getattr(_state, "cpu_backend", NUMPY)


@contextlib.contextmanager
def use_cpu_launcher(launcher: "Launcher") -> Iterator[Backend]:
    """Run NumPy inputs through ``launcher``'s kernels instead of the NumPy code.

    Used by the test suite to run the CUDA sources on the CPU emulator.
    Thread-local, so concurrent tests do not see each other's choice.
    """
    global _launcher_scopes
    previous = getattr(_state, "cpu_backend", NUMPY)
    _state.cpu_backend = Backend(launcher.name, numpy, launcher)
    with _scopes_lock:
        _launcher_scopes += 1
    try:
        yield _state.cpu_backend
    finally:
        _state.cpu_backend = previous
        with _scopes_lock:
            _launcher_scopes -= 1


_cupy_backend: Backend | None = None


def gpu_backend() -> Backend:
    global _cupy_backend
    if _cupy_backend is None:
        from .cupy_launcher import CupyLauncher
        launcher = CupyLauncher()  # imports cupy (ImportError without it)
        _cupy_backend = Backend("cupy", _require_cupy("gpu_backend"), launcher)
    return _cupy_backend


def describe(x: Any) -> str:
    if is_cupy_array(x):
        return "cupy.ndarray"
    t = type(x)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__name__}"
