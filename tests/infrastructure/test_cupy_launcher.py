"""The CuPy launcher's caching, on a fake ``cupy`` (benchmarks/launch_fakes.py): however many
launches, one ``Device`` object per device, one compile per (device, family), one
``get_function`` per (device, kernel). Runs without CuPy or a GPU."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy
import pytest

import gpuops
from gpuops import backend, cupy_launcher

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.launch_fakes import SM_COUNT, fake_cupy  # noqa: E402


@pytest.fixture
def cupy(monkeypatch):
    module = fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", module)
    return module


def test_launches_look_up_once(cupy):
    launcher = cupy_launcher.CupyLauncher()
    for _ in range(50):
        launcher.launch("elementwise", "add_f32", (4,), (256,), ())
        launcher.launch("elementwise", "relu_f32", (4,), (256,), ())
        launcher.launch("activation", "relu_f32", (4,), (256,), ())
        assert launcher.max_blocks == SM_COUNT * 32
        assert launcher.tensor_cores
    assert cupy.counts["call"] == 150
    assert cupy.counts["Device"] == 1
    assert cupy.counts["compile"] == 2  # elementwise, activation
    assert cupy.counts["get_function"] == 3
    assert cupy.counts["get_function:relu_f32"] == 2  # one per family


def test_each_device_has_its_own_handles(cupy):
    launcher = cupy_launcher.CupyLauncher()
    for device in (0, 1, 0, 1):
        cupy.cuda.runtime.current = device
        for _ in range(10):
            launcher.launch("elementwise", "add_f32", (1,), (256,), ())
            launcher.max_blocks
    assert cupy.counts["Device"] == 2
    assert cupy.counts["compile"] == 2
    assert cupy.counts["get_function"] == 2
    assert cupy.counts["call"] == 40


def test_threads_racing_on_a_first_launch_compile_once(cupy):
    launcher = cupy_launcher.CupyLauncher()
    start = threading.Barrier(8)

    def work():
        start.wait()
        for _ in range(20):
            launcher.launch("softmax", "softmax_rows_f32", (1,), (128,), ())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cupy.counts["call"] == 160
    assert (cupy.counts["Device"], cupy.counts["compile"], cupy.counts["get_function"]) == (1, 1, 1)


@pytest.mark.parametrize("op,arity", [("add", 2), ("relu", 1), ("softmax", 1)])
def test_operator_calls_reach_the_launcher_without_lookups(cupy, op, arity):
    """An operator's calls through the launcher (NumPy arrays on the kernel path; the fake
    kernels write nothing): the look-ups happen on the first call only."""
    launcher = cupy_launcher.CupyLauncher()
    x = numpy.ones((4, 8), numpy.float32)
    with backend.use_cpu_launcher(launcher):
        getattr(gpuops, op)(*[x] * arity)
        first = dict(cupy.counts)
        for _ in range(30):
            getattr(gpuops, op)(*[x] * arity)
    assert first["call"] >= 1
    assert cupy.counts["call"] == 31 * first["call"]
    for name in ("Device", "compile", "get_function"):
        assert cupy.counts[name] == first[name], name
