import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from backends import BACKENDS, skipped_backends  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "emu: runs CUDA kernels on the CPU emulator")


def pytest_report_header(config):
    lines = [f"gpuops test backends: {', '.join(b.name for b in BACKENDS)}"]
    for name, reason in skipped_backends():
        lines.append(f"gpuops backend {name} not run: {reason}")
    return lines


def pytest_terminal_summary(terminalreporter):
    for name, reason in skipped_backends():
        terminalreporter.write_line(f"gpuops: backend {name} not run: {reason}")
