import os
import sys

import pytest

# The shared helpers (tests/support: backends, opinfo, ...) and the records package
# (tests/records) import by plain name from every test folder.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "support"))
sys.path.insert(0, os.path.dirname(__file__))

from backends import BACKENDS, skipped_backends  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "emu: runs CUDA kernels on the CPU emulator")


def pytest_report_header(config):
    lines = [f"gpuops test backends: {', '.join(b.name for b in BACKENDS)}"]
    for name, reason in skipped_backends():
        lines.append(f"gpuops backend {name} not run: {reason}")
    return lines


def pytest_sessionfinish(session, exitstatus):
    # Kernel coverage of the emulator (tests/support/emu_coverage.py): fails a full run that
    # never launched some kernel of cuda/ under emu.
    if any(b.name == "emu" for b in BACKENDS) and exitstatus in (0, 1):
        import emu_coverage
        session.config._gpuops_emu_coverage = emu_coverage.check(session)


def pytest_terminal_summary(terminalreporter):
    for name, reason in skipped_backends():
        terminalreporter.write_line(f"gpuops: backend {name} not run: {reason}")
    for line in getattr(terminalreporter.config, "_gpuops_emu_coverage", []):
        terminalreporter.write_line(line)
