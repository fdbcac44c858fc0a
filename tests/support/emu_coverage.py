"""Kernel coverage of the emulator: every kernel of cuda/*.cu must run under ``emu``.

The emulator's shared launcher records each (family, kernel) it launched
(``gpuops.emu.launched()``); at the end of a session conftest.py compares that with
every kernel the emulator compiles (all ``extern "C" __global__`` functions of
cuda/*.cu after preprocessing with GPUOPS_EMU defined, i.e. without the GPU-only
ones). The report always says "N of M kernels ran under the emulator"; only a run
of the whole suite fails on a kernel that never ran, since a subset (``-k``, ``-m``, a
single file, ``-x`` stopping early) legitimately launches fewer, and ``--collect-only``,
``--setup-plan``, ``--fixtures`` and the like run no test at all.
"""
from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def partial_run(session) -> str:
    """Why this session is not a run of the whole suite ('' when it is)."""
    config = session.config
    option = config.option
    for flag, name in (("collectonly", "--collect-only"), ("setupplan", "--setup-plan"),
                       ("setuponly", "--setup-only"), ("showfixtures", "--fixtures"),
                       ("show_fixtures_per_test", "--fixtures-per-test")):
        if getattr(option, flag, False):
            return f"{name} (no test ran)"
    if getattr(config, "workerinput", None) is not None or getattr(option, "numprocesses", None):
        return "pytest-xdist (launches happen in workers)"
    if option.keyword:
        return f"-k {option.keyword}"
    if option.markexpr not in ("", "emu"):  # -m emu runs every emulated test
        return f"-m {option.markexpr}"
    if getattr(option, "deselect", None):
        return "--deselect"
    if getattr(option, "lf", False) or getattr(option, "stepwise", False):
        return "--lf/--sw"
    for arg in config.args:
        path = Path(str(arg).split("::")[0]).resolve()
        if "::" in str(arg) or not (path == TESTS or path in TESTS.parents):
            return f"only {arg}"
    if session.shouldfail or session.shouldstop:
        return "stopped early"
    return ""


def expected_kernels() -> set[tuple[str, str]]:
    from gpuops import emu, kernels
    return {(family, name) for family in kernels.families()
            for name in emu.kernel_names(family)}


def check(session) -> list[str]:
    """Report lines; sets a failing exit status when a full run missed a kernel."""
    from gpuops import emu
    expected = expected_kernels()
    ran = emu.launched() & expected
    missing = sorted(expected - ran)
    lines = [f"gpuops emu: {len(ran)} of {len(expected)} kernels ran under the emulator"]
    why = partial_run(session)
    if why:
        lines.append(f"gpuops emu: kernel coverage not enforced (partial run: {why})")
    elif missing:
        lines.append(f"gpuops emu: FAILED: {len(missing)} kernels of cuda/ never ran under the "
                     f"emulator: " + ", ".join(f"{f}.{k}" for f, k in missing))
        session.exitstatus = 1
    return lines
