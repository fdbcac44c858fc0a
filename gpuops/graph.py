"""CUDA graphs of training steps: a whole step captured once, then replayed
(``python -m gpuops train --cuda-graph``).

An eager step pays its host work every time: Python, argument checks and one launch call
per kernel (``python -m benchmarks.step_launches``). A graph pays it once, at
:func:`capture`; each :meth:`StepGraph.replay` is one graph launch on the GPU
(``cupy.cuda.Stream.begin_capture``/``end_capture``, ``cupy.cuda.Graph.launch``).

A captured step is a fixed list of launches with fixed arguments, so it is only valid
under these conditions (how each is checked):

1. **Kernels.** The CuPy backend. On the CPU, the same capture runs as a model over a CPU
   launcher (the emulator, ``gpuops.backend.use_cpu_launcher``): :class:`CapturingLauncher`
   records ``(kernel, grid, block, args)`` during the capture instead of running them and
   a replay launches the list. The NumPy code has no kernels: :class:`GraphError`.
2. **Warm-up first.** At least one eager step before :func:`capture` (modules compiled,
   optimizer state and chunk tables made; the caller's duty).
3. **Fixed inputs.** The step reads its inputs from the static buffers given to
   :func:`capture`; a replay computes on whatever was copied into them. A batch of another
   shape cannot be replayed (the training loop runs the last partial batch eagerly).
4. **The same launches every step.** The step is captured twice and the two launch lists
   must agree kernel by kernel in grid, block, shared memory, every scalar argument and
   every array's shape and dtype (checked on both backends; :class:`GraphError` names the
   first difference). A host scalar that changes per step would be frozen in the graph:
   Adam's bias correction ``1 - β^t``, a dropout seed drawn per call, a step counter.
5. **Hyperparameters fixed after the capture.** ``guard()`` (the optimizer's param groups)
   is compared at every replay (checked): a learning rate changed as a Python float (a
   scheduler) would not reach the graph, so the replay refuses.
6. **No host syncs in the step** (``.item()``, ``float()``, a host check of device data):
   CUDA refuses them during a capture, so they fail at :func:`capture` on a GPU. The CPU
   model cannot see them (its arrays are host memory): checked on a GPU only.
7. **No uploads in the step.** A host-to-device copy made while capturing (the optimizer's
   chunk table for the captured gradients: :func:`upload`) goes into an array allocated in
   the capture and is made right after it, before any replay: the graph reads it.
8. **Memory.** Every allocation made while capturing on CuPy is held while the graph lives
   (a private pool, as PyTorch's graphs have), so no array outside the graph is given a
   block the graph writes. GPU only (the CPU model keeps every captured argument alive).
9. **Array-module operations are replayed on a GPU, not in the model.** ``xp`` calls in
   the captured step (``xp.zeros/ones`` fills, ``astype`` casts, ``a[...] = b`` copies) are
   nodes of the CUDA graph on CuPy; the model runs them once, at the capture. The two agree
   when the step has none whose result changes from step to step, as the float32 MLP step
   (its one: the ones seeding backward). A cast of each step's data (float64 inputs to a
   float32 model) is such an operation: the model would replay stale values.

Not supported (refused by ``train --cuda-graph``): a GradScaler (float16: ``found_inf`` read
on the host each step), several processes (the gradients' all-reduce runs on the host),
Adam/AdamW (condition 4), dropout (the CNN: condition 4).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator, Sequence

import numpy

from . import backend as _backend

__all__ = ["GraphError", "CapturingLauncher", "StepGraph", "capture", "upload"]

Array = Any
_state = threading.local()


class GraphError(RuntimeError):
    """A step that cannot be captured or replayed as a CUDA graph, and why."""


def upload(xp: Any, host: numpy.ndarray) -> Array:
    """``xp.asarray(host)``: a host array copied to the device. While a step is being
    captured on CuPy the copy is deferred (condition 7): the device array is allocated now
    (the graph's launches take its address) and filled right after the capture."""
    pending = getattr(_state, "uploads", None)
    if pending is None or xp is numpy:
        return xp.asarray(host)
    device = xp.empty(host.shape, host.dtype)
    pending.append((device, numpy.array(host)))
    return device


@contextlib.contextmanager
def _deferred_uploads() -> Iterator[None]:
    pending: list[tuple[Array, numpy.ndarray]] = []
    _state.uploads = pending
    try:
        yield
    finally:
        _state.uploads = None
        for device, host in pending:
            device.set(host)


class CapturingLauncher:
    """A launcher in front of ``inner``: while :attr:`recording` is a list, each launch is
    appended to it as ``(family, kernel, grid, block, args, shared_mem)`` and, unless
    ``passthrough`` (CuPy: the stream capture records it too), not run. Everything else
    (``name``, ``max_blocks``, ``tensor_cores``, ...) is ``inner``'s."""

    def __init__(self, inner: Any, passthrough: bool = False) -> None:
        self.inner = inner
        self.passthrough = passthrough
        self.recording: list | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def max_blocks(self) -> int:
        return self.inner.max_blocks

    @property
    def tensor_cores(self) -> bool:
        return self.inner.tensor_cores

    def launch(self, family: str, kernel: str, grid: Sequence[int], block: Sequence[int],
               args: Sequence[Any], shared_mem: int = 0) -> None:
        if self.recording is not None:
            self.recording.append((family, kernel, tuple(grid), tuple(block), tuple(args),
                                   shared_mem))
            if not self.passthrough:
                return
        self.inner.launch(family, kernel, grid, block, args, shared_mem)


class StepGraph:
    """A captured step: :meth:`replay` runs it again on the static inputs and returns its
    outputs (the same arrays every time, rewritten by each replay)."""

    def __init__(self, launch: Callable[[], None], outputs: Any, launches: int,
                 guard: Callable[[], Any] | None, keep: Any) -> None:
        self._launch = launch
        self.outputs = outputs
        self.launches = launches  # kernel launches in one replay
        self._guard = guard
        self._snapshot = None if guard is None else guard()
        self._keep = keep  # what the graph reads and writes: alive while it lives

    def replay(self) -> Any:
        if self._guard is not None:
            now = self._guard()
            if now != self._snapshot:
                raise GraphError(f"the captured step's settings changed since the capture "
                                 f"({self._snapshot!r} -> {now!r}): a CUDA graph replays the "
                                 "values it was captured with; capture again, or keep them "
                                 "constant (a learning rate in device memory)")
        self._launch()
        return self.outputs


def capture(step: Callable[..., Any], inputs: Sequence[Array],
            guard: Callable[[], Any] | None = None) -> StepGraph:
    """``step(*inputs)`` (one training step reading the static buffers ``inputs``, after at
    least one eager step) captured as a graph; ``guard()`` returns what must not change
    between replays (condition 5). The capture runs nothing on the device: the first
    :meth:`StepGraph.replay` is the first step it computes."""
    xp = _backend.get_array_module(*inputs)
    if xp is numpy:
        launcher = _backend.cpu_backend().launcher
        if launcher is None:
            raise GraphError("a CUDA graph needs kernels: CuPy arrays, or NumPy arrays under "
                             "gpuops.backend.use_cpu_launcher (the CPU model)")
        recordings = []
        for _ in range(2):
            capturing = CapturingLauncher(launcher)
            capturing.recording = []
            with _backend.use_cpu_launcher(capturing), _deferred_uploads():
                outputs = step(*inputs)
            recordings.append(capturing.recording)
        _compare(*recordings)
        launches = recordings[1]

        def replay() -> None:
            for family, kernel, grid, block, args, shared_mem in launches:
                launcher.launch(family, kernel, grid, block, args, shared_mem)

        return StepGraph(replay, outputs, len(launches), guard, launches)
    return _capture_cupy(xp, step, inputs, guard)


def _capture_cupy(cp: Any, step: Callable[..., Any], inputs: Sequence[Array],
                  guard: Callable[[], Any] | None) -> StepGraph:
    """Conditions 4, 7, 8 on CuPy: two stream captures on a side stream with every
    allocation held, their launch lists compared; the second graph is kept."""
    original = _backend.gpu_backend()
    pool = cp.get_default_memory_pool()
    stream = cp.cuda.Stream(non_blocking=True)
    cp.cuda.get_current_stream().synchronize()  # the warm-up step is done
    captures = []
    for _ in range(2):
        held: list = []

        def allocate(size: int, held: list = held) -> Any:
            memory = pool.malloc(size)
            held.append(memory)
            return memory

        capturing = CapturingLauncher(original.launcher, passthrough=True)
        capturing.recording = []
        _backend._cupy_backend = _backend.Backend("cupy", cp, capturing)
        try:
            with _deferred_uploads(), stream, cp.cuda.using_allocator(allocate):
                stream.begin_capture()
                try:
                    outputs = step(*inputs)
                finally:
                    graph = stream.end_capture()
        except Exception as e:
            raise GraphError(f"the step could not be captured ({type(e).__name__}: {e}); "
                             "a host sync (.item(), float(), a host check) or an operation "
                             "CUDA graphs do not record is in it") from e
        finally:
            _backend._cupy_backend = original
        captures.append((capturing.recording, outputs, graph, held))
    _compare(captures[0][0], captures[1][0])
    recording, outputs, graph, held = captures[1]
    stream.synchronize()
    return StepGraph(lambda: graph.launch(), outputs, len(recording), guard,
                     (graph, held, recording, stream))


def _compare(first: list, second: list) -> None:
    """Condition 4: two captures of the step launch the same kernels with the same grids,
    blocks, scalars and array shapes; else GraphError naming the first difference."""
    if len(first) != len(second):
        raise GraphError(f"the step launches {len(first)} kernels, then {len(second)}: it is "
                         "not the same every step, so it cannot be replayed as a graph")
    for n, (a, b) in enumerate(zip(first, second)):
        if a[:4] != b[:4] or a[5] != b[5] or len(a[4]) != len(b[4]):
            raise GraphError(f"launch {n} of the step is {a[1]} grid={a[2]}, then {b[1]} "
                             f"grid={b[2]}: it is not the same every step")
        for k, (x, y) in enumerate(zip(a[4], b[4])):
            if _argument(x) != _argument(y):
                raise GraphError(
                    f"argument {k} of {a[1]} (launch {n} of the step) changes from step to "
                    f"step ({x!r} then {y!r}): a graph would replay the "
                    "first value (a per-step host scalar: Adam's bias correction, a dropout "
                    "seed, a step counter)")


def _argument(x: Any) -> Any:
    """What must agree between two captures: a scalar's value and dtype, an array's shape
    and dtype (its address may differ: a temporary of each capture)."""
    if hasattr(x, "shape") and hasattr(x, "ndim") and not isinstance(x, numpy.generic):
        return ("array", tuple(x.shape), str(x.dtype))
    if isinstance(x, numpy.generic):
        return (str(x.dtype), x.tobytes())  # bit for bit (a NaN equals itself)
    return (type(x).__name__, x)
