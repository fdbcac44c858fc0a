"""Kernel sources, the launcher interface and the CuPy launcher.

Operators never call CuPy to run a kernel: they call ``backend.launcher.launch``
with a family (the ``cuda/<family>.cu`` file), a kernel name, grid, block,
arguments and dynamic shared memory. Two launchers implement that interface:
:class:`CupyLauncher` (NVRTC + the GPU) and the CPU emulator of
``gpuops.emu`` (g++ + OS threads), so the same wrapper code drives both.

Argument rules (CuPy does not check them): sizes are ``numpy.int64`` (the
kernels index with ``long long``), float parameters are scalars of the
kernel's dtype (:func:`scalar`), arrays are C-contiguous with exactly the
pointer's dtype.
"""
from __future__ import annotations

import functools
import math
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy

if TYPE_CHECKING:  # pragma: no cover
    from .backend import Backend

# Options shared by the loader and the NVRTC compile check. IEEE subnormals and correctly
# rounded division / square root are NVRTC's defaults, stated so that they stay
# (the NumPy backend keeps subnormals; tests/test_numerics.py).
NVRTC_OPTIONS = ("--std=c++17", "--ftz=false", "--prec-div=true", "--prec-sqrt=true")
BLOCK = 256  # threads per block for 1-D kernels

_HERE = Path(__file__).resolve().parent
_SUFFIX = {numpy.dtype(numpy.float16): "f16", numpy.dtype(numpy.float32): "f32",
           numpy.dtype(numpy.float64): "f64"}
_INCLUDE = re.compile(r'^#include "([A-Za-z0-9_]+\.cuh)"\s*$', re.M)


def cuda_dir() -> Path:
    """The folder of the ``.cu`` sources: inside an installed package, or the checkout's ``cuda/``."""
    installed = _HERE / "cuda"
    if any(installed.glob("*.cu")):
        return installed
    return _HERE.parent / "cuda"


def families() -> list[str]:
    """Every kernel family, i.e. every ``cuda/*.cu`` file, by name."""
    return sorted(p.stem for p in cuda_dir().glob("*.cu"))


@functools.lru_cache(maxsize=None)
def source(family: str) -> str:
    """The source of ``cuda/<family>.cu`` with its project headers inlined.

    Inlining (instead of ``-I``) makes the text complete, so CuPy's disk cache,
    keyed on the source text, sees header changes too.
    """
    folder = cuda_dir()
    path = folder / f"{family}.cu"
    if not path.is_file():
        raise FileNotFoundError(f"no kernel source {path}")
    seen: set[str] = set()

    def expand(match: re.Match) -> str:
        name = match.group(1)
        if name in seen:
            return ""
        seen.add(name)
        return _INCLUDE.sub(expand, (folder / name).read_text())

    return _INCLUDE.sub(expand, path.read_text())


def suffix(dtype: Any) -> str:
    """Kernel name suffix for a dtype: ``f32``, ``f64``, ``f16``."""
    return _SUFFIX[numpy.dtype(dtype)]


def scalar(dtype: Any, value: float) -> numpy.generic:
    """A float parameter as a NumPy scalar of the kernel's dtype.

    float16 kernels take float parameters as ``float`` (they compute in float32).
    """
    dt = numpy.dtype(dtype)
    return numpy.float32(value) if dt == numpy.float16 else dt.type(value)


def size(n: int) -> numpy.int64:
    return numpy.int64(n)


def contiguous(backend: "Backend", x: Any, dtype: Any) -> Any:
    """``x`` as a C-contiguous array of ``dtype`` (a copy only when needed)."""
    return backend.xp.ascontiguousarray(x, dtype=dtype)


def result_buffer(backend: "Backend", out: Any, dtype: Any) -> Any:
    """Where a kernel computing in ``dtype`` may write: ``out`` itself, or a
    C-contiguous stand-in that :func:`finish` copies (and casts) into ``out``."""
    if out.flags.c_contiguous and out.dtype == dtype:
        return out
    return backend.xp.empty(out.shape, dtype)


def finish(out: Any, target: Any) -> Any:
    """Copy a stand-in from :func:`result_buffer` into ``out``; return ``out``."""
    if target is not out:
        out[...] = target
    return out



class Launcher(Protocol):
    """Runs a kernel of ``cuda/<family>.cu``; the one interface every backend implements."""

    name: str
    max_blocks: int  # grid-stride kernels need no more blocks than this
    tensor_cores: bool  # whether the mma.sync (sm_80+) kernels may be launched

    def launch(self, family: str, kernel: str, grid: Sequence[int], block: Sequence[int],
               args: Sequence[Any], shared_mem: int = 0) -> None: ...


def grid_1d(launcher: Launcher, n: int, block: int = BLOCK) -> tuple[int]:
    """Blocks for a grid-stride loop over ``n`` items (at least one block)."""
    return (max(1, min(math.ceil(n / block), launcher.max_blocks)),)


class CupyLauncher:
    """Compiles each family with NVRTC through ``cupy.RawModule`` and launches on the GPU.

    Modules are built once per (device, family) and memoized; CuPy's on-disk
    cache (``CUPY_CACHE_DIR``) makes a second process skip the compile.
    """

    name = "cupy"

    def __init__(self) -> None:
        import cupy
        self._cupy = cupy
        self._modules: dict[tuple[int, str], Any] = {}
        self._lock = threading.Lock()
        self._max_blocks: dict[int, int] = {}

    @property
    def max_blocks(self) -> int:
        device = self._cupy.cuda.Device()
        if device.id not in self._max_blocks:
            sms = device.attributes["MultiProcessorCount"]
            self._max_blocks[device.id] = sms * 32
        return self._max_blocks[device.id]

    @property
    def tensor_cores(self) -> bool:
        """The float16 tensor-core GEMM uses mma.sync.m16n8k16, an sm_80 (Ampere) instruction."""
        return int(self._cupy.cuda.Device().compute_capability) >= 80

    def module(self, family: str) -> Any:
        key = (self._cupy.cuda.Device().id, family)
        module = self._modules.get(key)
        if module is None:
            with self._lock:  # one compile per module even when threads race here
                module = self._modules.get(key)
                if module is None:
                    module = self._cupy.RawModule(code=source(family), options=NVRTC_OPTIONS)
                    module.compile()
                    self._modules[key] = module
        return module

    def launch(self, family: str, kernel: str, grid: Sequence[int], block: Sequence[int],
               args: Sequence[Any], shared_mem: int = 0) -> None:
        function = self.module(family).get_function(kernel)
        function(tuple(grid), tuple(block), tuple(args), shared_mem=shared_mem)


def cache_dir() -> str:
    """CuPy's kernel cache directory (where compiled modules persist across processes)."""
    return os.environ.get("CUPY_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cupy",
                                                         "kernel_cache"))
