"""Compile kernel sources to CUBIN with NVRTC through ctypes and read ptxas' resource report.

NVRTC ships on PyPI (``nvidia-cuda-nvrtc-cu12``) and needs no GPU, no driver and no
nvcc: this module only loads ``libnvrtc.so.12`` and calls its C API. Used by
``tests/infrastructure/test_nvrtc_compile.py``; ``python tests/support/nvrtc.py [family ...]`` prints the
per-kernel table for a quick look.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

ARCHS = ("sm_80", "sm_90")
VERBOSE = "--ptxas-options=-v"  # ptxas' resource report; NVRTC 12.x accepts it (as -Xptxas -v)
LIBRARY_ENV = "GPUOPS_NVRTC_LIB"  # a path to libnvrtc.so.* that overrides the PyPI package


class NvrtcUnavailable(RuntimeError):
    """No loadable NVRTC library (the reason is the message)."""


def library_path() -> Path:
    """``$GPUOPS_NVRTC_LIB``, else ``libnvrtc.so.12`` from the ``nvidia-cuda-nvrtc-cu12`` wheel."""
    override = os.environ.get(LIBRARY_ENV)
    if override:
        return Path(override)
    try:
        spec = importlib.util.find_spec("nvidia.cuda_nvrtc")
    except ModuleNotFoundError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise NvrtcUnavailable(
            "NVRTC not found: pip install nvidia-cuda-nvrtc-cu12 (in the 'test' extra) "
            f"or set {LIBRARY_ENV} to a libnvrtc.so")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "lib" / "libnvrtc.so.12"
        if candidate.is_file():
            return candidate
    raise NvrtcUnavailable(f"nvidia.cuda_nvrtc is installed but has no lib/libnvrtc.so.12 "
                           f"(looked in {list(spec.submodule_search_locations)})")


_library: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    """The loaded NVRTC library (loaded once), or :class:`NvrtcUnavailable`."""
    global _library
    if _library is None:
        path = library_path()
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as error:
            raise NvrtcUnavailable(f"cannot load {path}: {error}") from error
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        lib.nvrtcCreateProgram.argtypes = [
            ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
            ctypes.c_void_p, ctypes.c_void_p]
        lib.nvrtcCompileProgram.argtypes = [ctypes.c_void_p, ctypes.c_int,
                                            ctypes.POINTER(ctypes.c_char_p)]
        lib.nvrtcDestroyProgram.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        for name in ("nvrtcGetProgramLogSize", "nvrtcGetCUBINSize"):
            getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]
        lib.nvrtcGetProgramLog.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        _library = lib
    return _library


def version() -> str:
    major, minor = ctypes.c_int(), ctypes.c_int()
    library().nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return f"{major.value}.{minor.value}"


@dataclass
class CompileResult:
    ok: bool  # NVRTC_SUCCESS and a non-empty CUBIN
    status: str  # NVRTC's result string
    log: str  # compiler diagnostics and the ptxas report
    cubin_bytes: int


def compile_cubin(source: str, options: list[str], name: str = "kernel.cu") -> CompileResult:
    """Compile ``source`` with NVRTC; ``options`` must name a real arch (sm_XX) for a CUBIN."""
    lib = library()
    program = ctypes.c_void_p()
    status = lib.nvrtcCreateProgram(ctypes.byref(program), source.encode(), name.encode(), 0,
                                    None, None)
    if status != 0:
        raise RuntimeError(f"nvrtcCreateProgram: {lib.nvrtcGetErrorString(status).decode()}")
    try:
        encoded = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        status = lib.nvrtcCompileProgram(program, len(options), encoded)
        log_size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(program, ctypes.byref(log_size))
        log = ctypes.create_string_buffer(log_size.value)
        lib.nvrtcGetProgramLog(program, log)
        cubin_size = ctypes.c_size_t()
        if status != 0 or lib.nvrtcGetCUBINSize(program, ctypes.byref(cubin_size)) != 0:
            cubin_size.value = 0
        return CompileResult(status == 0 and cubin_size.value > 0,
                             lib.nvrtcGetErrorString(status).decode(),
                             log.value.decode(errors="replace"), cubin_size.value)
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(program))


@dataclass
class KernelUsage:
    """ptxas' resources of one entry function; ``callees``: non-inlined device functions
    (e.g. libdevice's trig slow path) whose stack and spills count against it."""

    name: str
    arch: str
    registers: int = 0
    shared_bytes: int = 0  # static shared memory ("smem"); dynamic shared memory is not known here
    local_bytes: int = 0  # "lmem"
    stack_frame: int = 0  # own frame plus the largest callee frame
    cumulative_stack: int = 0
    spill_stores: int = 0  # own plus callees'
    spill_loads: int = 0
    callees: list[str] = field(default_factory=list)


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
_PROPERTIES = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_AMOUNT = re.compile(r"(\d+) bytes (smem|lmem|cumulative stack size)")


def parse_ptxas(log: str) -> dict[str, KernelUsage]:
    """Per-kernel usage from a ``-v`` ptxas report (the format of CUDA 11 to 13)."""
    kernels: dict[str, KernelUsage] = {}
    current: KernelUsage | None = None
    properties_of: str | None = None
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            current = kernels.setdefault(m.group(1), KernelUsage(m.group(1), m.group(2)))
            properties_of = None
        elif m := _PROPERTIES.search(line):
            properties_of = m.group(1)
        elif (m := _FRAME.search(line)) and current is not None and properties_of is not None:
            frame, stores, loads = map(int, m.groups())
            if properties_of == current.name:
                current.stack_frame += frame
            else:
                current.callees.append(properties_of)
                current.stack_frame = max(current.stack_frame, frame)
            current.spill_stores += stores
            current.spill_loads += loads
            properties_of = None
        elif (m := _USED.search(line)) and current is not None:
            current.registers = int(m.group(1))
            for amount, what in _AMOUNT.findall(line):
                if what == "smem":
                    current.shared_bytes = int(amount)
                elif what == "lmem":
                    current.local_bytes = int(amount)
                else:
                    current.cumulative_stack = int(amount)
    return kernels


def table(usages: list[KernelUsage]) -> str:
    """A fixed-width table: one kernel per line."""
    head = f"{'kernel':<28} {'arch':<6} {'regs':>4} {'smem':>6} {'stack':>5} {'spill st':>8} " \
           f"{'spill ld':>8} {'lmem':>5}"
    rows = [head, "-" * len(head)]
    for u in sorted(usages, key=lambda u: (u.name, u.arch)):
        rows.append(f"{u.name:<28} {u.arch:<6} {u.registers:>4} {u.shared_bytes:>6} "
                    f"{max(u.stack_frame, u.cumulative_stack):>5} {u.spill_stores:>8} "
                    f"{u.spill_loads:>8} {u.local_bytes:>5}")
    return "\n".join(rows)


if __name__ == "__main__":  # pragma: no cover - a developer's shortcut
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from gpuops import kernels as _kernels

    for family in sys.argv[1:] or _kernels.families():
        for arch in ARCHS:
            result = compile_cubin(_kernels.source(family),
                                   [*_kernels.NVRTC_OPTIONS, f"--gpu-architecture={arch}",
                                    VERBOSE], f"{family}.cu")
            print(f"== {family} {arch}: {result.status}, {result.cubin_bytes} bytes CUBIN")
            print(table(list(parse_ptxas(result.log).values())) if result.ok else result.log)
