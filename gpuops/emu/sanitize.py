"""Run Python (the test suite, or a script) with the emulated kernels under a sanitizer.

AddressSanitizer (``address``: out-of-bounds reads and writes of inputs, outputs,
shared memory) and ThreadSanitizer (``thread``: data races, e.g. a missing
``__syncthreads``) need their runtime loaded before anything else, so the Python
process is started anew with ``LD_PRELOAD`` set to g++'s ``libasan.so`` /
``libtsan.so`` and ``GPUOPS_EMU_SANITIZE`` telling the emulator to build its
libraries with ``-fsanitize=address`` / ``thread`` (cached apart from the plain
ones)::

    python -m gpuops.emu sanitize address            # the emulated test suite (-m emu)
    python -m gpuops.emu sanitize thread -- tests/ops/test_ops.py -k softmax

A report makes the run fail: ASan stops at the first error, TSan prints every race
and exits with status 66.
"""
from __future__ import annotations

import os
import subprocess
import sys

from . import build

MODES = ("address", "thread")
_LIBRARY = {"address": "libasan.so", "thread": "libtsan.so"}


def runtime_library(mode: str) -> str:
    """Path of the sanitizer runtime that g++ links for ``mode``."""
    if mode not in MODES:
        raise ValueError(f"sanitizer mode {mode!r}; expected one of {', '.join(MODES)}")
    cxx = build.compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++): the emulator cannot run")
    path = subprocess.run([cxx, f"-print-file-name={_LIBRARY[mode]}"], capture_output=True,
                          text=True, check=True).stdout.strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        raise RuntimeError(f"{cxx} has no {_LIBRARY[mode]} (install its sanitizer runtime, "
                           f"e.g. the libasan/libtsan package of your gcc)")
    return path


def environment(mode: str, base: dict | None = None) -> dict:
    """Environment for a Python subprocess whose emulated kernels run under ``mode``."""
    env = dict(os.environ if base is None else base)
    env["LD_PRELOAD"] = runtime_library(mode)
    env["GPUOPS_EMU_SANITIZE"] = mode
    env["PYTHONMALLOC"] = "malloc"  # Python objects through malloc, seen by ASan
    if mode == "address":
        # Python itself leaks by design at exit; report errors, not leaks.
        env.setdefault("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=0:halt_on_error=1")
    else:
        env.setdefault("TSAN_OPTIONS", "halt_on_error=0:exitcode=66:report_signal_unsafe=0")
        # OpenBLAS' worker threads (NumPy's float64 references) are not instrumented: TSan
        # reports their hand-offs as races. One BLAS thread keeps the reports to the kernels.
        env["OPENBLAS_NUM_THREADS"] = "1"
    return env


def run(mode: str, argv: list[str]) -> int:
    """Run ``python <argv>`` (the real interpreter, not a wrapper script) under ``mode``."""
    return subprocess.call([sys.executable, *argv], env=environment(mode))


def main(argv: list[str]) -> int:
    """``sanitize MODE [-- pytest args]`` (default args: ``-m emu -q``) or
    ``run MODE script.py [args]``."""
    usage = ("usage: python -m gpuops.emu sanitize {address,thread} [-- PYTEST ARGS]\n"
             "       python -m gpuops.emu run {address,thread} SCRIPT [ARGS]\n"
             "       python -m gpuops.emu info")
    if argv[:1] == ["info"]:
        print(f"compiler   {build.compiler() or 'none (the emulator cannot run)'}")
        print(f"cache      {build.cache_dir()}")
        for mode in MODES:
            try:
                print(f"{mode:<10} {runtime_library(mode)}")
            except RuntimeError as error:
                print(f"{mode:<10} unavailable: {error}")
        return 0
    if len(argv) < 2 or argv[0] not in ("sanitize", "run") or argv[1] not in MODES:
        print(usage, file=sys.stderr)
        return 2
    command, mode, rest = argv[0], argv[1], argv[2:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    if command == "sanitize":
        return run(mode, ["-m", "pytest", *(rest or ["-m", "emu", "-q"])])
    if not rest:
        print(usage, file=sys.stderr)
        return 2
    return run(mode, rest)
