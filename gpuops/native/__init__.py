"""Native 16-bit conversions for the NumPy backend (:func:`gpuops.call.widen`,
:func:`gpuops.call.narrow`): ``casts.c`` compiled at first use by the system C compiler
(``$CC``, else ``cc`` or ``gcc`` on PATH) with ``-O3 -shared -fPIC``, plus ``-mavx2``,
``-mf16c`` and AVX-512 (F, BW, VL) where the CPU has them, and loaded with ctypes. Bit for
bit NumPy's float16 casts and ml_dtypes' bfloat16 casts (checked on every 16-bit pattern
and dense float32 patterns: tests/infrastructure/test_sixteen_bit_casts.py), at 0.05 to
0.08 ns per element (2^17 elements, F16C and AVX-512) against NumPy's float16 casts' 1 to
1.5 and ml_dtypes' bfloat16 rounding's 0.33. ``fused.c`` (built into the same library) runs
the operators' fused 16-bit forms (:mod:`gpuops.native.fused`).

The library is cached in ``GPUOPS_NATIVE_CACHE`` (default ``~/.cache/gpuops/native``)
under a name hashing the source, the compiler's version, the flags and the CPU's flags:
one build per machine and compiler, shared by processes (written to a temporary file and
renamed into place, so a concurrent build or reader never sees half a file; a lock keeps
one build per process). ``GPUOPS_NATIVE=0`` turns the native path off. Any failure (no
compiler, a compile error, a library that does not load) turns it off silently for the
process: the callers then use their NumPy code, with the same results.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy

from ..cachefile import build_once

__all__ = ["widen", "narrow", "available", "cache_dir"]

_SOURCES = [Path(__file__).with_name(name) for name in ("casts.c", "fused.c")]
_FLOAT32 = numpy.dtype(numpy.float32)
_FLOAT16 = numpy.dtype(numpy.float16)
_BFLOAT16 = numpy.dtype(ml_dtypes.bfloat16)
_lock = threading.Lock()
_loaded = False
_functions: dict[tuple[str, numpy.dtype], Any] = {}  # ("widen"|"narrow", 16-bit dtype)
# fused.c's functions once loaded (gpuops.native.fused)
fused_run: Any = None
lookup16: Any = None


def cache_dir() -> Path:
    """``GPUOPS_NATIVE_CACHE``, or ``~/.cache/gpuops/native``."""
    folder = os.environ.get("GPUOPS_NATIVE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "gpuops", "native")
    return Path(folder)


def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


# -fno-trapping-math lets the selects vectorize; -ffp-contract=off: no fused multiply-adds
# (fused.c's a*b+c is two roundings, as NumPy's two ufunc calls). Without the CPU's flags
# below these build the portable loops (what a CPU without AVX2/F16C runs).
PORTABLE_FLAGS = ["-O3", "-shared", "-fPIC", "-fno-trapping-math", "-ffp-contract=off"]


def compiler() -> str | None:
    """The C compiler: ``$CC``, else ``cc`` or ``gcc`` on PATH."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def compile_library(cc: str, flags: list[str], target: str | Path) -> None:
    """The sources compiled with ``flags`` into the shared library ``target``."""
    subprocess.run([cc, *flags, "-o", str(target), *map(str, _SOURCES)], capture_output=True,
                   check=True, timeout=300)


def _build() -> Path:
    """The compiled library, built unless the cache holds it (raises on any failure)."""
    cc = compiler()
    if cc is None:
        raise OSError("no C compiler")
    cpu = _cpu_flags()
    flags = list(PORTABLE_FLAGS)
    if "avx2" in cpu:
        flags.append("-mavx2")
        if "f16c" in cpu:
            flags.append("-mf16c")  # float16 by the F16C instructions (casts.c)
        if {"avx512f", "avx512bw", "avx512vl"} <= cpu:  # bfloat16 rounding: 0.15 -> 0.075 ns
            flags += ["-mavx512f", "-mavx512bw", "-mavx512vl"]
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True,
                             timeout=60).stdout.splitlines()[0]
    parts = [*(path.read_bytes() for path in _SOURCES), version.encode(),
             " ".join(flags).encode(), " ".join(sorted(cpu)).encode()]
    digest = hashlib.sha256(b"\0".join(parts)).hexdigest()[:20]
    return build_once(cache_dir() / f"casts-{digest}.so",
                      lambda tmp: compile_library(cc, flags, tmp))


def _load() -> None:
    """Fill :data:`_functions` once per process (left empty when disabled or on failure)."""
    global _loaded, fused_run, lookup16
    with _lock:
        if _loaded:
            return
        try:
            if os.environ.get("GPUOPS_NATIVE", "1") != "0":
                library = ctypes.CDLL(str(_build()))
                for (name, dtype), symbol in {("widen", _FLOAT16): "widen_f16",
                                              ("narrow", _FLOAT16): "narrow_f16",
                                              ("widen", _BFLOAT16): "widen_bf16",
                                              ("narrow", _BFLOAT16): "narrow_bf16"}.items():
                    function = getattr(library, symbol)
                    function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
                    function.restype = None
                    _functions[name, dtype] = function
                fused_run = library.fused_run
                fused_run.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                                      ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                      ctypes.c_void_p, ctypes.c_int64, ctypes.c_size_t]
                fused_run.restype = ctypes.c_int
                lookup16 = library.lookup16
                lookup16.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                     ctypes.c_size_t]
                lookup16.restype = None
        except Exception:  # no compiler, a compile error, no library: the NumPy path
            _functions.clear()
            fused_run = lookup16 = None
        _loaded = True


def available() -> bool:
    """Whether the native conversions are in use in this process (builds them at first call)."""
    if not _loaded:
        _load()
    return bool(_functions)


def _usable(a: Any) -> bool:
    flags = a.flags
    return flags.c_contiguous and flags.aligned


_char_at = ctypes.c_char.from_buffer


def _address(a: Any) -> int:
    """The address of a C-contiguous array's data: through the buffer protocol (a fifth of
    ``a.ctypes.data``'s time, which counts at 3 calls per chunk), which wants a writable
    array of one element or more; else ``a.ctypes.data``."""
    try:
        return ctypes.addressof(_char_at(a))
    except (TypeError, ValueError):
        return int(a.ctypes.data)


def widen(x: Any, out: Any) -> bool:
    """``x`` (float16 or bfloat16) widened into ``out`` (float32, x's size) if both are
    C-contiguous and aligned and the native path is in use; whether it was done."""
    if not _loaded:
        _load()
    function = _functions.get(("widen", x.dtype))
    if function is None or out.dtype != _FLOAT32 or not (_usable(x) and _usable(out)):
        return False
    function(_address(x), _address(out), x.size)
    return True


def narrow(y: Any, out: Any) -> bool:
    """``y`` (float32) rounded into ``out`` (float16 or bfloat16, y's size) as
    :func:`widen`; whether it was done."""
    if not _loaded:
        _load()
    function = _functions.get(("narrow", out.dtype))
    if function is None or y.dtype != _FLOAT32 or not (_usable(y) and _usable(out)):
        return False
    function(_address(y), _address(out), y.size)
    return True
