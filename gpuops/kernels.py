"""The Python<->CUDA contract: kernel sources, names, shared constants, the launcher
interface and the argument helpers.

Operators never call CuPy to run a kernel: they call ``launcher.launch`` (through
:meth:`gpuops.call.Call.launch`) with a family (the ``cuda/<family>.cu`` file), a
kernel name from :func:`kernel_name`, grid, block, arguments and dynamic shared
memory. Two launchers implement that interface:
:class:`gpuops.cupy_launcher.CupyLauncher` (NVRTC + the GPU) and the CPU emulator
of ``gpuops.emu`` (g++ + OS threads), so the same operator code drives both.

Argument rules (CuPy does not check them): sizes are ``numpy.int64`` (the
kernels index with ``long long``), float parameters are scalars of the
kernel's dtype (:func:`scalar`), arrays are C-contiguous with exactly the
pointer's dtype.
"""
from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from typing import Any, Protocol, Sequence

import ml_dtypes
import numpy

# Options shared by the loader and the NVRTC compile check. IEEE subnormals and correctly
# rounded division / square root are NVRTC's defaults, stated so that they stay
# (the NumPy backend keeps subnormals; tests/ops/test_numerics.py).
NVRTC_OPTIONS = ("--std=c++17", "--ftz=false", "--prec-div=true", "--prec-sqrt=true")

# Numbers both sides depend on, declared once: :func:`source` prepends them to every
# kernel source as ``#define NAME value``, and the launch code reads them from here.
CONSTANTS: dict[str, int] = {
    "GEMM_THREADS": 256,  # threads per block of the GEMM kernels (cuda/matmul.cu)
    "TRANSPOSE_TILE": 32,  # cuda/transpose.cu: a block moves TILE x TILE elements...
    "TRANSPOSE_TILE_ROWS": 8,  # ...with (TILE, TILE_ROWS) threads
    # Fused epilogue activations of the GEMM (linear, conv2d): the ``act`` argument.
    "ACT_NONE": 0, "ACT_RELU": 1, "ACT_SIGMOID": 2, "ACT_TANH": 3,
    # cuda/attention.cu: query/key rows per tile (float16, float32; float64), and threads
    # per row (a block is TILE x THREADS_PER_ROW threads)
    "ATTENTION_TILE": 16, "ATTENTION_TILE_F64": 8, "ATTENTION_THREADS_PER_ROW": 8,
    # its float16 tensor-core forward: query rows (4 warps of 16) and keys per tile
    "ATTENTION_TC_ROWS": 64, "ATTENTION_TC_KEYS": 32,
    # cuda/softmax.cu, cuda/loss.cu block-per-row kernels: float32 values of a row held in
    # registers per thread and array (half as many doubles); gpuops/ops/_rows.py
    "ROW_HELD": 16,
}
# Threads per block of the 1-D grid-stride kernels: launch-side only (those kernels read
# blockDim, so no source depends on the number).
BLOCK = 256

_HERE = Path(__file__).resolve().parent
_DTYPE = type(numpy.dtype(numpy.float32))
_SUFFIX = {numpy.dtype(numpy.float16): "f16", numpy.dtype(ml_dtypes.bfloat16): "bf16",
           numpy.dtype(numpy.float32): "f32", numpy.dtype(numpy.float64): "f64"}
_SIXTEEN_BIT = (numpy.dtype(numpy.float16), numpy.dtype(ml_dtypes.bfloat16))
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

    defines = "".join(f"#define {name} {value}\n" for name, value in CONSTANTS.items())
    return defines + _INCLUDE.sub(expand, path.read_text())


_STRIDED = re.compile(r"^// gpuops-strided: (\S+): (.+)$", re.M)


def strided_params(text: str) -> dict[str, tuple[str, ...]]:
    """Pointer parameters that the kernels of a source ``text`` address through element
    strides passed beside them, declared next to the kernels as
    ``// gpuops-strided: <kernel-name glob>: <param>, <param>``. Only these may take
    non-contiguous views (the emulator rejects any other non-contiguous array)."""
    return {pattern: tuple(p.strip() for p in names.split(","))
            for pattern, names in _STRIDED.findall(text)}


def suffix(dtype: Any) -> str:
    """Kernel name suffix for a dtype: ``f16``, ``bf16``, ``f32``, ``f64``."""
    return _SUFFIX[numpy.dtype(dtype)]


def kernel_name(base: str, dtype: Any) -> str:
    """The ``extern "C"`` name of kernel ``base`` for ``dtype``: ``<base>_<f16|bf16|f32|f64>``,
    the one naming rule of every family's kernels."""
    return f"{base}_{_SUFFIX[dtype if type(dtype) is _DTYPE else numpy.dtype(dtype)]}"


def scalar(dtype: Any, value: float) -> numpy.generic:
    """A float parameter as a NumPy scalar of the kernel's dtype.

    The 16-bit kernels (float16, bfloat16) take float parameters as ``float``: they compute
    in float32, and a parameter is not rounded to 16 bits (the NumPy backend takes it the
    same way: :meth:`gpuops.call.Call.scalar`).
    """
    dt = numpy.dtype(dtype)
    return numpy.float32(value) if dt in _SIXTEEN_BIT else dt.type(value)


# Dividends and divisors of cuda/gpuops.cuh's FastDiv (32-bit unsigned): a tensor of more
# elements divides with the 64-bit division (its magic word is 0).
FASTDIV_MAX = 2**32 - 1


def fastdiv_magic(divisor: int, max_dividend: int) -> numpy.uint64:
    """The magic word of ``FastDiv`` (cuda/gpuops.cuh) for dividing any integer in
    ``[0, max_dividend]`` by ``divisor``: ``(m << 32) | l`` with ``l = ceil(log2 divisor)``
    and ``m = floor(2^32 (2^l - divisor) / divisor) + 1`` (Granlund and Montgomery), or 0 —
    the kernel's 64-bit division — when either number exceeds :data:`FASTDIV_MAX` (or the
    divisor is below 1: a kernel over no elements never divides)."""
    d, top = int(divisor), int(max_dividend)
    if d < 1 or d > FASTDIV_MAX or top > FASTDIV_MAX:
        return numpy.uint64(0)
    shift = (d - 1).bit_length()
    magic = (2**32 * (2**shift - d)) // d + 1
    return numpy.uint64(magic << 32 | shift)


def fastdiv(divisor: int, max_dividend: int) -> tuple[numpy.int64, numpy.uint64]:
    """A kernel's ``FASTDIV_PARAM`` arguments: the divisor and its magic word."""
    return numpy.int64(divisor), fastdiv_magic(divisor, max_dividend)


class Launcher(Protocol):
    """Runs a kernel of ``cuda/<family>.cu``; the one interface every backend implements."""

    # Read-only properties: a launcher may compute them (CupyLauncher asks the device).
    @property
    def name(self) -> str: ...

    @property
    def max_blocks(self) -> int:
        """Grid-stride kernels need no more blocks than this."""
        ...

    @property
    def tensor_cores(self) -> bool:
        """Whether the mma.sync (sm_80+) kernels may be launched."""
        ...

    def launch(self, family: str, kernel: str, grid: Sequence[int], block: Sequence[int],
               args: Sequence[Any], shared_mem: int = 0) -> None: ...


def grid_1d(launcher: Launcher, n: int, block: int = BLOCK) -> tuple[int]:
    """Blocks for a grid-stride loop over ``n`` items (at least one block)."""
    return (max(1, min(math.ceil(n / block), launcher.max_blocks)),)
