"""Stand-ins for the GPU side of a kernel launch, for measuring and testing the Python in
front of it on a machine without a GPU.

- :class:`RecordingLauncher`: a :class:`gpuops.kernels.Launcher` that records each launch
  and runs nothing. Under :func:`gpuops.backend.use_cpu_launcher` an operator call on
  NumPy arrays takes the kernel path (argument checks, output allocation, grid sizes,
  kernel names) and stops where the GPU would start.
- :func:`fake_cupy`: a module with the few names :class:`gpuops.cupy_launcher.CupyLauncher`
  uses (``cuda.runtime.getDevice``, ``cuda.Device``, ``RawModule``), counting how often
  each is reached, so the launcher's caching can be measured and tested without CuPy; and
  those a CUDA-graph capture uses (``cuda.Stream`` with ``begin_capture``/``end_capture``,
  ``Graph.launch``, ``cuda.using_allocator``, ``get_default_memory_pool``, ``empty`` and
  ``set``), recording their order, so gpuops.graph's CuPy path can be followed without CuPy.
"""
from __future__ import annotations

import contextlib
import types
from collections import Counter
from typing import Any, Iterator, Sequence

# An H200's geometry, what the fake device reports.
SM_COUNT = 132
COMPUTE_CAPABILITY = "90"


class RecordingLauncher:
    """Records ``(family, kernel, grid, block, shared_mem)`` per launch; runs nothing."""

    name = "recording"
    max_blocks = SM_COUNT * 32
    tensor_cores = True

    def __init__(self, record: bool = True) -> None:
        self.record = record
        self.launches: list[tuple[str, str, tuple, tuple, int]] = []

    def launch(self, family: str, kernel: str, grid: Sequence[int], block: Sequence[int],
               args: Sequence[Any], shared_mem: int = 0) -> None:
        if self.record:
            self.launches.append((family, kernel, tuple(grid), tuple(block), shared_mem))


def fake_cupy() -> types.ModuleType:
    """A fresh fake ``cupy`` module. ``module.counts`` counts ``Device`` objects built,
    ``RawModule`` compiles, ``get_function`` look-ups and kernel calls;
    ``module.cuda.runtime.current`` is the device ``getDevice`` answers (set it to switch)."""
    counts: Counter = Counter()
    runtime = types.SimpleNamespace(current=0)
    runtime.getDevice = lambda: runtime.current

    class Device:
        def __init__(self, device_id: int | None = None) -> None:
            counts["Device"] += 1
            self.id = runtime.current if device_id is None else device_id
            self.attributes = {"MultiProcessorCount": SM_COUNT}
            self.compute_capability = COMPUTE_CAPABILITY

    class Function:
        def __init__(self, name: str) -> None:
            self.name = name

        def __call__(self, grid: tuple, block: tuple, args: tuple, shared_mem: int = 0) -> None:
            counts["call"] += 1

    class RawModule:
        def __init__(self, code: str, options: tuple = ()) -> None:
            self.code = code

        def compile(self) -> None:
            counts["compile"] += 1

        def get_function(self, name: str) -> Function:
            counts["get_function"] += 1
            counts[f"get_function:{name}"] += 1
            return Function(name)

    # Stream capture (gpuops.graph): what a capture did, in order, in ``module.events``.
    events: list = []

    class Graph:
        def launch(self, stream: Any = None) -> None:
            events.append("graph.launch")

    class Stream:
        capturing = False

        def __init__(self, non_blocking: bool = False) -> None:
            counts["Stream"] += 1

        def __enter__(self) -> "Stream":
            events.append("stream.enter")
            return self

        def __exit__(self, *exc: Any) -> None:
            events.append("stream.exit")

        def begin_capture(self) -> None:
            assert not self.capturing, "begin_capture while capturing"
            self.capturing = True
            events.append("begin_capture")

        def end_capture(self) -> Graph:
            assert self.capturing, "end_capture without begin_capture"
            self.capturing = False
            events.append("end_capture")
            return Graph()

        def synchronize(self) -> None:
            events.append("synchronize")

    class Pool:
        def malloc(self, size: int) -> tuple:
            counts["malloc"] += 1
            return ("memory", size)

    class DeviceArray:
        """What ``cupy.empty`` gives here: shape and dtype, and what ``set`` copied in."""

        def __init__(self, shape: Any, dtype: Any) -> None:
            self.shape, self.dtype, self.host = shape, dtype, None

        def set(self, host: Any) -> None:
            events.append("set")
            self.host = host

    @contextlib.contextmanager
    def using_allocator(allocator: Any) -> Iterator[None]:
        events.append("allocator.on")
        module.allocator = allocator  # type: ignore[attr-defined]
        try:
            yield
        finally:
            module.allocator = None  # type: ignore[attr-defined]
            events.append("allocator.off")

    pool = Pool()
    current = Stream()
    module = types.ModuleType("cupy")
    module.counts = counts  # type: ignore[attr-defined]
    module.events = events  # type: ignore[attr-defined]
    module.cuda = types.SimpleNamespace(  # type: ignore[attr-defined]
        runtime=runtime, Device=Device, Stream=Stream, get_current_stream=lambda: current,
        using_allocator=using_allocator)
    module.RawModule = RawModule  # type: ignore[attr-defined]
    module.get_default_memory_pool = lambda: pool  # type: ignore[attr-defined]
    module.empty = DeviceArray  # type: ignore[attr-defined]
    return module
