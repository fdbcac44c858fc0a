"""Run the CUDA kernels of ``cuda/*.cu`` on the CPU: a testing backend.

``emu.launcher()`` implements :class:`gpuops.kernels.Launcher` with g++ and OS
threads, so the wrappers in ``gpuops/`` drive the very kernels a GPU runs, on
NumPy buffers, with the same grid, block, arguments and shared memory::

    from gpuops import backend, emu
    with backend.use_cpu_launcher(emu.launcher()):
        y = gpuops.exp(x)          # runs exp_f32 of cuda/elementwise.cu

Not imported by ``import gpuops``. See ``cuda_emu.h`` (what device code may use)
and ``runtime.cpp`` (execution model, error detection); :mod:`.build` compiles,
:mod:`.signatures` checks arguments, :mod:`.sanitize` runs under ASan/TSan.

Memory counters (:mod:`.counters`): a launch in the counting build mode returns a
:class:`LaunchReport` (requests, sectors, shared-memory bank conflicts under Nsight
Compute's metric names, the worst source line)::

    with emu.profile() as reports:   # the operators' kernels, through the emu backend
        gpuops.exp(x)
    print(reports[0])
    report = emu.load("k.cu", counters=True).launch("k", grid, block, args)  # any source

Errors a GPU would hang on or silently get wrong raise instead: ``TypeError`` for
arguments that do not match the kernel's C signature, ``ValueError`` for an
impossible launch configuration, :class:`EmuKernelError` for a divergent barrier,
a shuffle reading an exited lane, an out-of-bounds index into a fixed-size array,
a failed ``assert``, a deadlock or a kernel without progress (watchdog).
"""
from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import os
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy

from .. import kernels as _kernels
from . import build, counters, signatures
from .build import EmuBuildError, cache_dir, compiler
from .counters import CounterOverflow, LaunchReport

__all__ = ["EmuKernelError", "EmuBuildError", "EmuLauncher", "Module", "launcher", "load",
           "kernel_names", "gpu_only_kernel_names", "launched", "cache_dir", "compiler",
           "sanitize_mode", "profile", "LaunchReport", "CounterOverflow"]

MAX_BLOCKS = 4  # small, so that grid-stride loops take several turns
MAX_DYNAMIC_SHARED = 227 * 1024  # per block, opt-in maximum of sm_80/sm_90
WATCHDOG_SECONDS = float(os.environ.get("GPUOPS_EMU_WATCHDOG", "10"))
# Counting mode: records kept per launch at most (32 bytes each), split among the threads.
MAX_RECORDS = int(os.environ.get("GPUOPS_EMU_COUNT_MAX_RECORDS", str(2**24)))
COUNT_SLOWDOWN = 10  # the counting mode's watchdog waits this much longer
_SANITIZER_RUNTIME = {"address": "libasan", "thread": "libtsan"}

class EmuKernelError(RuntimeError):
    """A kernel did something a GPU would hang on or get wrong (the message says what)."""


class _Spec(ctypes.Structure):  # gpuops_emu_launch_spec of cuda_emu.h / runtime.cpp
    _fields_ = [("thread_entry", ctypes.c_void_p), ("kernel", ctypes.c_void_p),
                ("args", ctypes.c_void_p), ("grid", ctypes.c_uint * 3),
                ("block", ctypes.c_uint * 3), ("shared_mem", ctypes.c_ulonglong),
                ("dynamic_shared", ctypes.c_void_p), ("dynamic_capacity", ctypes.c_ulonglong),
                ("static_shared_begin", ctypes.c_void_p), ("static_shared_end", ctypes.c_void_p),
                ("watchdog_seconds", ctypes.c_double), ("error", ctypes.c_char_p),
                ("error_size", ctypes.c_ulonglong)]


def sanitize_mode() -> str:
    """``GPUOPS_EMU_SANITIZE``: '' (default), 'address' or 'thread'."""
    mode = os.environ.get("GPUOPS_EMU_SANITIZE", "")
    if mode not in build.MODES:
        raise ValueError(f"GPUOPS_EMU_SANITIZE={mode!r}; expected 'address', 'thread' or unset")
    return mode


def _check_sanitizer_loaded(mode: str) -> None:
    if not mode:
        return
    with open("/proc/self/maps") as maps:
        if _SANITIZER_RUNTIME[mode] in maps.read():
            return
    raise RuntimeError(f"GPUOPS_EMU_SANITIZE={mode} needs {_SANITIZER_RUNTIME[mode]} preloaded "
                       f"into Python; run through `python -m gpuops.emu sanitize {mode} ...`")


_runtimes: dict[str, ctypes.CDLL] = {}
_runtime_lock = threading.Lock()


def _runtime(mode: str) -> ctypes.CDLL:
    with _runtime_lock:
        if mode not in _runtimes:
            _check_sanitizer_loaded(mode)
            path = build.runtime_library(mode)
            _runtimes[mode] = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        return _runtimes[mode]


# Arguments of launches whose threads never returned (they may still touch them).
_runaway_args: list = []


class Module:
    """One compiled source: its kernels, launchable by name."""

    def __init__(self, label: str, source: str, mode: str | None = None) -> None:
        self.label = label
        self.mode = sanitize_mode() if mode is None else mode
        self.counting = self.mode == build.COUNT  # launches return a LaunchReport
        _runtime("" if self.counting else self.mode)
        path, self.kernels = build.kernel_library(label, source, self.mode)
        self.path = path
        self.strided = _kernels.strided_params(source)  # kernel glob -> strided parameters
        self._lib = ctypes.CDLL(str(path))
        self._lib.gpuops_emu_launch.argtypes = [ctypes.POINTER(_Spec)]
        self._lib.gpuops_emu_launch.restype = ctypes.c_int
        self._entries: dict[str, tuple[int, tuple[int, ...]]] = {}
        for name, kernel in self.kernels.items():
            sizes = (ctypes.c_uint * 256)()
            arity = getattr(self._lib, f"gpuops_emu_n_{name}")(sizes)
            if arity != len(kernel.params):
                raise EmuBuildError(f"{label}.{name}: parsed {len(kernel.params)} parameters "
                                    f"from the source but the compiler sees {arity}")
            stub = ctypes.cast(getattr(self._lib, f"gpuops_emu_k_{name}"), ctypes.c_void_p).value
            if stub is None:
                raise EmuBuildError(f"{label}.{name}: the compiled library's entry point "
                                    f"gpuops_emu_k_{name} is a null pointer")
            self._entries[name] = (stub, tuple(sizes[:arity]))
        if self.counting:
            self._lib.gpuops_emu_count_begin.argtypes = [
                ctypes.POINTER(ctypes.c_ulonglong), ctypes.c_int, ctypes.c_ulonglong,
                ctypes.c_ulonglong]
            self._lib.gpuops_emu_count_end.restype = ctypes.c_longlong
            self._lib.gpuops_emu_count_copy.argtypes = [ctypes.c_void_p]
            self._count_lock = threading.Lock()
            self._sites: dict[int, counters.Site] = {}

    def launch(self, kernel: str, grid: Sequence[int], block: Sequence[int],
               args: Sequence[Any], shared_mem: int = 0, *,
               watchdog: float | None = None,
               indirect: Sequence[Any] = ()) -> LaunchReport | None:
        """Run ``kernel``; in the counting mode, return its :class:`LaunchReport`.

        ``indirect``: arrays the kernel reaches through pointers that an argument holds
        (not arguments themselves: cuda/optim.cu's pointer table); the counting mode counts
        their accesses as global memory, as it does the array arguments'."""
        where = f"emu: {self.label}.{kernel}"
        if kernel not in self._entries:
            raise ValueError(f"{where}: no such extern \"C\" __global__ kernel in {self.label} "
                             f"(kernels: {', '.join(sorted(self._entries)) or 'none'})")
        stub, sizes = self._entries[kernel]
        strided = {name for pattern, names in self.strided.items()
                   if fnmatch.fnmatchcase(kernel, pattern) for name in names}
        signatures.check_args(where, self.kernels[kernel], args, sizes, strided)
        grid3, block3 = _dims(where, "grid", grid), _dims(where, "block", block)
        if grid3[1] > 65535 or grid3[2] > 65535 or grid3[0] > 2**31 - 1:
            raise ValueError(f"{where}: grid {tuple(grid)} exceeds CUDA's (2^31-1, 65535, 65535)")
        if block3[0] * block3[1] * block3[2] > 1024 or block3[2] > 64:
            raise ValueError(f"{where}: block {tuple(block)} has more than 1024 threads "
                             f"(or z > 64)")
        if isinstance(shared_mem, bool) or not isinstance(shared_mem, (int, numpy.integer)) \
                or shared_mem < 0:
            raise ValueError(f"{where}: shared_mem must be a non-negative int, got {shared_mem!r}")
        if shared_mem > MAX_DYNAMIC_SHARED:
            raise ValueError(f"{where}: shared_mem of {shared_mem} bytes exceeds the "
                             f"{MAX_DYNAMIC_SHARED} a block may have (227 KiB, sm_90)")
        # cuLaunchKernel's convention: an array of pointers to the argument values.
        holders: list[ctypes.c_void_p | ctypes.Array[ctypes.c_char]] = []
        for arg in args:
            if isinstance(arg, numpy.ndarray):
                holders.append(ctypes.c_void_p(arg.ctypes.data))
            else:
                holders.append(ctypes.create_string_buffer(numpy.asarray(arg).tobytes()))
        argv = (ctypes.c_void_p * max(1, len(holders)))(
            *[ctypes.cast(ctypes.pointer(h), ctypes.c_void_p) for h in holders])
        error = ctypes.create_string_buffer(8192)
        spec = _Spec(kernel=stub, args=ctypes.cast(argv, ctypes.c_void_p),
                     grid=(ctypes.c_uint * 3)(*grid3), block=(ctypes.c_uint * 3)(*block3),
                     shared_mem=int(shared_mem),
                     watchdog_seconds=(WATCHDOG_SECONDS * (COUNT_SLOWDOWN if self.counting else 1)
                                       if watchdog is None else watchdog),
                     error=ctypes.cast(error, ctypes.c_char_p), error_size=len(error))
        if not self.counting:
            self._run(spec, where, grid, block, args, holders, argv, error)
            return None
        with self._count_lock:
            ranges = counters.global_ranges(args, indirect)
            flat = (ctypes.c_ulonglong * max(1, 2 * len(ranges)))(
                *[bound for span in ranges for bound in span])
            threads = block3[0] * block3[1] * block3[2]
            if self._lib.gpuops_emu_count_begin(flat, len(ranges), int(shared_mem),
                                                max(1, MAX_RECORDS // threads)):
                raise ValueError(f"{where}: more than 4096 distinct arrays to count")
            try:
                self._run(spec, where, grid, block, args, holders, argv, error)
            finally:
                total = self._lib.gpuops_emu_count_end()
            if total < 0:
                raise CounterOverflow(f"{where}: more than {MAX_RECORDS} accesses to count "
                                      f"(GPUOPS_EMU_COUNT_MAX_RECORDS); launch a smaller case")
            records = numpy.empty(total, counters.RECORD)
            if total:
                self._lib.gpuops_emu_count_copy(records.ctypes.data)
        new = sorted({int(pc) for pc in numpy.unique(records["pc"])} - set(self._sites))
        self._sites.update(counters.symbolize(self.path, new))
        return counters.analyse(records, self._sites, label=self.label, kernel=kernel,
                                grid=grid3, block=block3, shared_mem=int(shared_mem))

    def _run(self, spec: _Spec, where: str, grid: Sequence[int], block: Sequence[int],
             args: Sequence[Any], holders: list, argv: Any, error: Any) -> None:
        status = self._lib.gpuops_emu_launch(ctypes.byref(spec))
        if status == 2:
            _runaway_args.append((args, holders, argv))
        if status != 0:
            message = error.value.decode(errors="replace")
            raise EmuKernelError(f"{where} (grid {tuple(grid)}, block {tuple(block)}): {message}")


def _dims(where: str, what: str, dims: Sequence[int]) -> tuple[int, int, int]:
    dims = tuple(dims)
    if not 1 <= len(dims) <= 3 or any(isinstance(d, bool) or not isinstance(d, (int, numpy.integer))
                                      or d < 1 for d in dims):
        raise ValueError(f"{where}: {what} must be 1 to 3 positive ints, got {dims!r}")
    x, y, z = [int(d) for d in dims] + [1] * (3 - len(dims))
    return x, y, z


_modules: dict[tuple[str, str, str], Module] = {}
_modules_lock = threading.Lock()
_family_locks: dict[tuple[str, str], threading.Lock] = {}


def load(source: str | os.PathLike, *, label: str | None = None,
         counters: bool = False) -> Module:
    """Compile a CUDA source (a path to a ``.cu`` file, or its text) for the emulator.

    ``counters``: the counting build (its launches return a :class:`LaunchReport`);
    not under a sanitizer. Memoized per process on the text; g++ output is cached on disk.
    """
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source
                                           and source.endswith((".cu", ".cuh"))):
        path = Path(source)
        text, label = path.read_text(), label or path.stem
    else:
        text, label = str(source), label or "source"
    mode = sanitize_mode()
    if counters:
        if mode:
            raise ValueError(f"emu: the counting mode cannot run under GPUOPS_EMU_SANITIZE={mode}")
        mode = build.COUNT
    key = (label, mode, text)
    with _modules_lock:
        lock = _family_locks.setdefault((label, mode), threading.Lock())
    with lock:  # one compile per source even when threads race here
        module = _modules.get(key)
        if module is None:
            module = Module(label, text, mode)
            with _modules_lock:
                _modules[key] = module
    return module


_launched: set[tuple[str, str]] = set()
_launched_lock = threading.Lock()


def launched() -> set[tuple[str, str]]:
    """(family, kernel) of every kernel of ``cuda/`` that a recording launcher ran in this
    process (the test suite's kernel coverage)."""
    with _launched_lock:
        return set(_launched)


def kernel_names(family: str) -> list[str]:
    """The kernels of ``cuda/<family>.cu`` that the emulator compiles."""
    return sorted(signatures.kernels(build.preprocess(_kernels.source(family))))


def gpu_only_kernel_names(family: str) -> list[str]:
    """The kernels of ``cuda/<family>.cu`` that only NVRTC sees (none should be)."""
    gpu = signatures.kernels(build.preprocess(_kernels.source(family), emu=False))
    return sorted(set(gpu) - set(kernel_names(family)))


class EmuLauncher:
    """The :class:`gpuops.kernels.Launcher` of the emulator (``name`` 'emu').

    ``record``: add launched kernels to :func:`launched` (the coverage the test suite
    checks). ``max_blocks`` is small so that grid-stride loops run several rounds.
    ``counters``: run the counting build; each launch appends its :class:`LaunchReport`
    (labelled with the family) to ``reports``; ``indirect``: arrays every launch may reach
    through a pointer table (see :meth:`Module.launch`).
    """

    name = "emu"

    def __init__(self, max_blocks: int = MAX_BLOCKS, record: bool = True,
                 tensor_cores: bool = False, counters: bool = False,
                 indirect: Sequence[Any] = ()) -> None:
        self.max_blocks = max_blocks
        self.record = record
        self.counters = counters
        self.indirect = list(indirect)
        self.reports: list[LaunchReport] = []
        # The emulator runs the tensor-core kernel too (mma.sync modelled in cuda_emu.h),
        # but slowly: the shared launcher takes the SIMT float16 path, as a pre-sm_80 GPU.
        self.tensor_cores = tensor_cores

    def module(self, family: str) -> Module:
        return load(_kernels.source(family), label=family, counters=self.counters)

    def launch(self, family: str, kernel: str, grid: Sequence[int], block: Sequence[int],
               args: Sequence[Any], shared_mem: int = 0) -> None:
        module = self.module(family)
        report = module.launch(kernel, grid, block, args, shared_mem,
                               indirect=self.indirect if self.counters else ())
        if report is not None:
            self.reports.append(report)
        if self.record:
            with _launched_lock:
                _launched.add((family, kernel))


_default: EmuLauncher | None = None


def launcher() -> EmuLauncher:
    """The shared recording launcher (what the test suite's ``emu`` backend uses)."""
    global _default
    if _default is None:
        _default = EmuLauncher()
    return _default


@contextlib.contextmanager
def profile(max_blocks: int = MAX_BLOCKS, tensor_cores: bool = False,
            indirect: Sequence[Any] = ()) -> Iterator[list[LaunchReport]]:
    """Run the operators called inside on the counting emulator (this thread, NumPy
    inputs); yields the list that each kernel launch appends its report to::

        with emu.profile() as reports:
            gpuops.softmax(x)
        for report in reports:
            print(report)

    ``indirect``: the arrays the kernels reach through a pointer table rather than as
    arguments (the optimizer steps' parameters, gradients and states), so that their
    accesses count as global memory::

        with emu.profile(indirect=[*params, *grads, *velocities]) as reports:
            gpuops.sgd_step(params, grads, velocities, lr=0.1, momentum=0.9)
    """
    from .. import backend

    counting = EmuLauncher(max_blocks=max_blocks, record=False, tensor_cores=tensor_cores,
                           counters=True, indirect=indirect)
    with backend.use_cpu_launcher(counting):
        yield counting.reports
