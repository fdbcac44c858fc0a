"""Compile CUDA sources for the CPU emulator with g++, cached on disk by content hash.

A kernel library is the ``.cu`` text compiled as C++20 with ``cuda_emu.h``
prepended (``g++ -include``), ``GPUOPS_EMU`` defined, no fused multiply-adds
(``-ffp-contract=off``) and UBSan bounds checks (``-fsanitize=bounds``, reported
by the emulator as errors). It links against the runtime library
(``runtime.cpp``: worker pool, barriers, watchdog). Under a sanitizer mode
(``GPUOPS_EMU_SANITIZE=address`` or ``thread``) both are built with that sanitizer
too. The counting mode (``count``, :mod:`.counters`) builds the kernel library with
ThreadSanitizer's instrumentation (every memory access a call) and ``counters.h``
(those calls, recording), against the plain runtime. Every mode but ``address`` links
with :data:`SHARED_LINKER_SCRIPT`, which gathers all ``__shared__`` variables into the
section ``gpuops_shared`` (the runtime NaN-fills it before each block). Files live in
:func:`cache_dir` under names that contain a hash of everything that goes into
them, so a changed source, header, flag or compiler gives a new file and a second
process reuses the first one's build.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

from ..cachefile import build_once
from . import signatures

HERE = Path(__file__).resolve().parent
HEADER = HERE / "cuda_emu.h"
RUNTIME = HERE / "runtime.cpp"
LAUNCH_SPEC = HERE / "launch_spec.h"  # included by both
COUNTERS = HERE / "counters.h"  # included after HEADER in the counting mode

MODES = ("", "address", "thread")  # GPUOPS_EMU_SANITIZE values
COUNT = "count"  # the counting build mode (counters.py); its runtime is the plain one
_COMMON = ("-std=c++20", "-fPIC", "-pthread", "-ffp-contract=off", "-fno-fast-math",
           "-fvisibility=hidden", "-w")
# -O1: compile time matters as much as run time (each family is built once per cache).
_KERNEL_FLAGS = ("-O1", "-fsanitize=bounds", "-fno-sanitize-recover=bounds")
_RUNTIME_FLAGS = ("-O2",)
_SANITIZE_FLAGS = {"": ("-g0",), "address": ("-g", "-fsanitize=address", "-fno-omit-frame-pointer"),
                   "thread": ("-g", "-fsanitize=thread"),
                   # ThreadSanitizer's instrumentation without its runtime (compiled
                   # apart, linked without it: counters.h defines every hook): each load
                   # and store becomes a call __tsan_read4(addr) & co., each atomic
                   # __tsan_atomic*.
                   COUNT: ("-g", "-fsanitize=thread", "-fno-tree-sra",
                           "--param=tsan-instrument-func-entry-exit=0",
                           "-DGPUOPS_EMU_COUNT")}
# What the emulated source sees: what NVRTC defines, and GPUOPS_EMU (GPU-only code off).
_DEFINES = ("-D__CUDACC__", "-D__CUDACC_RTC__")
_EXTERN_SHARED = re.compile(r"\bextern(\s+)__shared__\b")
# `__shared__` is a function-local static in the section gpuops_shared (cuda_emu.h), but g++
# ignores the section attribute on the statics of template functions (block_reduce's
# partials, transpose's tiles): each lands in its own COMDAT section .bss._ZZ<function>...
# (`_ZZ`: a function-local entity). This script (ld's INSERT: the default script otherwise)
# puts those sections into gpuops_shared too and defines __start/__stop_gpuops_shared around
# them (ld provides those itself only when an input section is named gpuops_shared: a source
# whose __shared__ variables are all in templates has none), so the two span every
# __shared__ variable. Device code has no other function-local statics (the emulator's own
# are not in templates); guard variables are `_ZGVZ...`, thread_locals `.tbss`. Not under
# AddressSanitizer, which bounds-checks the statics instead (cuda_emu.h).
SHARED_LINKER_SCRIPT = """SECTIONS {
  gpuops_shared : {
    PROVIDE_HIDDEN(__start_gpuops_shared = .);
    *(gpuops_shared) *(.bss._ZZ*)
    PROVIDE_HIDDEN(__stop_gpuops_shared = .);
  }
} INSERT AFTER .data;
"""


class EmuBuildError(RuntimeError):
    """g++ could not preprocess or compile a source for the emulator."""


def cache_dir() -> Path:
    """``GPUOPS_EMU_CACHE``, or ``~/.cache/gpuops/emu``."""
    folder = os.environ.get("GPUOPS_EMU_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "gpuops", "emu")
    return Path(folder)


def compiler() -> str | None:
    """The C++ compiler: ``$CXX`` if set, else ``g++`` on PATH (None: the emulator cannot run)."""
    return os.environ.get("CXX") or shutil.which("g++")


@functools.lru_cache(maxsize=None)
def _compiler_version(cxx: str) -> str:
    return subprocess.run([cxx, "--version"], capture_output=True, text=True,
                          check=True).stdout.splitlines()[0]


def _run(command: list[str], what: str, stdin: str | None = None) -> str:
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, errors="replace")
    if done.returncode != 0:
        detail = done.stderr.strip()
        if len(detail) > 8000:
            detail = detail[:8000] + "\n[...]"
        raise EmuBuildError(f"{what} failed ({' '.join(command[:3])} ...):\n{detail}")
    return done.stdout


def preprocess(source: str, emu: bool = True) -> str:
    """``source`` after the preprocessor, as the emulator (``emu``) or NVRTC sees it."""
    cxx = compiler()
    if cxx is None:
        raise EmuBuildError("no C++ compiler (g++) for the emulator")
    defines = list(_DEFINES) + (["-DGPUOPS_EMU"] if emu else [])
    return _run([cxx, "-E", "-P", "-std=c++20", "-x", "c++", *defines, "-"], "preprocessing", stdin=source)


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:20]


_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _build(target: Path, command_for, what: str) -> Path:
    """Run ``command_for(tmp_path)`` to produce ``target`` unless it exists (atomic rename)."""
    with _locks_guard:
        lock = _locks.setdefault(str(target), threading.Lock())
    with lock:
        return build_once(target, lambda tmp: _run(command_for(tmp), what))


def _shared_script(mode: str) -> list[str]:
    """The linker flags that gather template functions' ``__shared__`` statics into
    gpuops_shared (:data:`SHARED_LINKER_SCRIPT`; none under AddressSanitizer)."""
    if mode == "address":
        return []
    script = build_once(cache_dir() / f"shared-{_digest(SHARED_LINKER_SCRIPT)}.ld",
                        lambda tmp: Path(tmp).write_text(SHARED_LINKER_SCRIPT))
    return [f"-Wl,-T,{script}"]


def runtime_library(mode: str) -> Path:
    """The runtime shared library for a sanitizer ``mode`` ('' for none), built if needed."""
    if mode == COUNT:
        mode = ""
    cxx = compiler()
    if cxx is None:
        raise EmuBuildError("no C++ compiler (g++) for the emulator")
    flags = [*_COMMON, *_RUNTIME_FLAGS, *_SANITIZE_FLAGS[mode]]
    text = RUNTIME.read_text()
    key = _digest(text, LAUNCH_SPEC.read_text(), " ".join(flags), _compiler_version(cxx))
    target = cache_dir() / f"runtime-{mode or 'plain'}-{key}.so"
    return _build(target, lambda tmp: [cxx, *flags, "-shared", str(RUNTIME), "-o", tmp],
                  "building the emulator runtime")


def emulated_text(source: str, preprocessed: str, kernels: list[str]) -> str:
    """The text g++ compiles: ``source`` with ``extern __shared__`` spelled so C++ accepts it
    (an ``extern`` array aliased to the dynamic shared buffer) and, after it, one
    launch stub per kernel (``GPUOPS_EMU_KERNEL``)."""
    trailer = ["", "// ---- added by gpuops.emu.build ----"]
    for name in signatures.extern_shared_names(preprocessed):
        trailer.append(f'__asm__(".globl {name}\\n.hidden {name}\\n'
                       f'.set {name}, gpuops_emu_dynamic_shared");')
    trailer += [f"GPUOPS_EMU_KERNEL({name})" for name in kernels]
    return _EXTERN_SHARED.sub(r"__gpuops_emu_extern_shared\1", source) + "\n".join(trailer) + "\n"


def kernel_library(label: str, source: str, mode: str) -> tuple[Path, dict[str, signatures.Kernel]]:
    """Build (or find) the library of ``source``; returns it and its kernels' signatures.

    ``label`` names the files (a family name, or a file stem for test kernels); ``mode``
    is one of :data:`MODES` or :data:`COUNT`.
    """
    cxx = compiler()
    if cxx is None:
        raise EmuBuildError("no C++ compiler (g++) for the emulator")
    preprocessed = preprocess(source)
    kernels = signatures.kernels(preprocessed)
    runtime = runtime_library(mode)
    text = emulated_text(source, preprocessed, list(kernels))
    flags = [*_COMMON, *_KERNEL_FLAGS, *_SANITIZE_FLAGS[mode], *_DEFINES, "-DGPUOPS_EMU"]
    headers = [HEADER] + ([COUNTERS] if mode == COUNT else [])
    key = _digest(text, *[h.read_text() for h in headers], LAUNCH_SPEC.read_text(),
                  " ".join(flags), runtime.name, _compiler_version(cxx),
                  SHARED_LINKER_SCRIPT if mode != "address" else "")
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", label)
    folder = cache_dir()
    target = folder / f"{safe}-{mode or 'plain'}-{key}.so"
    listing = folder / f"{safe}-{mode or 'plain'}-{key}.cu"  # what was compiled, for errors
    if not target.exists():
        build_once(listing, lambda tmp: Path(tmp).write_text(text))
    includes = [arg for h in headers for arg in ("-include", str(h))]
    if mode == COUNT and not target.exists():
        # g++ -fsanitize=thread would link libtsan, which must not load: compile, then link.
        obj = _build(target.with_suffix(".o"), lambda tmp: [
            cxx, *flags, *includes, "-x", "c++", str(listing), "-c", "-o", tmp],
            f"compiling {label} for the emulator's counting mode")
        link = [flag for flag in flags if flag != "-fsanitize=thread"]
        _build(target, lambda tmp: [cxx, *link, str(obj), "-shared", "-Wl,-z,defs",
                                    *_shared_script(mode), str(runtime), "-o", tmp],
               f"linking {label} (counting mode)")
        return target, kernels
    _build(target, lambda tmp: [cxx, *flags, *includes, "-x", "c++", str(listing),
                                "-x", "none", "-shared", "-Wl,-z,defs", *_shared_script(mode),
                                str(runtime), "-o", tmp],
           f"compiling {label} for the emulator")
    return target, kernels
