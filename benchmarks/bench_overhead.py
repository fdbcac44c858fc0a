"""Per-call overhead: what the call protocol and the autograd add in front of the math.

Tiny inputs (16 float32 elements), so the time is the Python in front of each
computation. Each case times ``CALLS`` calls in a loop; the harness prints the time of
one loop, so its milliseconds are microseconds per call. Baselines: the bare NumPy
expression and, when PyTorch is installed, the same call in PyTorch (CPU tensors;
CUDA tensors on a GPU run). Goals: an operator call costs at most 1.5 µs more than
the NumPy expression; the ``Tensor`` paths at most 2x PyTorch's.

Without a GPU the kernel path is timed too, up to the point where the GPU would start
(issue 13 F): the same operators on NumPy arrays under
:func:`gpuops.backend.use_cpu_launcher` with a :class:`~benchmarks.launch_fakes.RecordingLauncher`
(argument checks, output allocation, grid and kernel names, the launch call; no
kernel runs), and through the real :class:`gpuops.cupy_launcher.CupyLauncher` over a
fake ``cupy`` whose kernels do nothing (adds the launcher's own per-launch work). That is
the Python a GPU call costs before CuPy's launch itself; PyTorch's eager CPU call of the
same op is the dispatch baseline beside it.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable, Iterator

import numpy

import gpuops
from gpuops import backend
from gpuops.kernels import Launcher

from .harness import Case, Env
from .launch_fakes import RecordingLauncher, fake_cupy

CALLS = 1000
ELEMENTS = 16


def _loop(fn: Callable[..., Any]) -> Callable[..., None]:
    def run(*inputs: Any) -> None:
        for _ in range(CALLS):
            fn(*inputs)
    return run


def _kernel_path(fn: Callable[..., Any], launcher: Launcher) -> Callable[..., None]:
    """``CALLS`` calls of ``fn`` on NumPy arrays through ``launcher``'s kernel path."""
    def run(*inputs: Any) -> None:
        if isinstance(launcher, RecordingLauncher):
            launcher.launches.clear()
        with backend.use_cpu_launcher(launcher):
            for _ in range(CALLS):
                fn(*inputs)
    return run


@contextlib.contextmanager
def _fake_cupy_module() -> Iterator[None]:
    """``import cupy`` finds the fake module inside this block (the CuPy launcher binds it
    at construction)."""
    saved = sys.modules.get("cupy")
    sys.modules["cupy"] = fake_cupy()
    try:
        yield
    finally:
        if saved is None:
            del sys.modules["cupy"]
        else:
            sys.modules["cupy"] = saved


def _fake_cupy_launcher() -> Launcher:
    from gpuops.cupy_launcher import CupyLauncher
    with _fake_cupy_module():
        return CupyLauncher()


def _launches_per_call(fn: Callable[..., Any], inputs: tuple) -> int:
    recorder = RecordingLauncher()
    with backend.use_cpu_launcher(recorder):
        fn(*inputs)
    return len(recorder.launches)


def _torch_softmax(m: Any, u: Any) -> Any:
    return m.softmax(u, dim=-1)


def _numpy_softmax(m: Any, u: Any) -> Any:
    e = m.exp(u - u.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _operator_reference(numpy_fn: Callable, torch_fn: Callable) -> Callable[..., None]:
    def reference(m: Any, *inputs: Any) -> None:
        fn = torch_fn if m.__name__ == "torch" else numpy_fn
        for _ in range(CALLS):
            fn(m, *inputs)
    return reference


def _tensor_add(a: Any, b: Any) -> None:
    x, y = gpuops.Tensor(a, requires_grad=True), gpuops.Tensor(b, requires_grad=True)
    for _ in range(CALLS):
        x + y


def _tensor_product_backward(a: Any, b: Any) -> None:
    for _ in range(CALLS):
        x, y = gpuops.Tensor(a, requires_grad=True), gpuops.Tensor(b, requires_grad=True)
        (x * y).sum().backward()


def _torch_tensor_add(m: Any, a: Any, b: Any) -> None:
    if m.__name__ != "torch":
        for _ in range(CALLS):
            a + b
        return
    x, y = a.clone().requires_grad_(), b.clone().requires_grad_()
    for _ in range(CALLS):
        x + y


def _torch_product_backward(m: Any, a: Any, b: Any) -> None:
    if m.__name__ != "torch":  # the NumPy forward and the two products of the backward
        for _ in range(CALLS):
            (a * b).sum()
            numpy.ones_like(a) * b, numpy.ones_like(b) * a
        return
    for _ in range(CALLS):
        x, y = a.detach().requires_grad_(), b.detach().requires_grad_()
        (x * y).sum().backward()


def cases(env: Env) -> list[Case]:
    a = env.random(ELEMENTS)
    b = env.random(ELEMENTS)
    note = f"time of {CALLS} calls: ms = µs per call"
    add = _operator_reference(lambda m, u, v: u + v, lambda m, u, v: m.add(u, v))
    relu = _operator_reference(lambda m, u: m.maximum(u, 0), lambda m, u: m.relu(u))
    softmax = _operator_reference(_numpy_softmax, _torch_softmax)
    kernel_path: list[Case] = []
    if not env.on_gpu:  # on a GPU the cases above take the real kernel path
        recorder = RecordingLauncher()
        cupy_launcher = _fake_cupy_launcher()
        for name, fn, inputs, reference in (("add", gpuops.add, (a, b), add),
                                            ("relu", gpuops.relu, (a,), relu),
                                            ("softmax", gpuops.softmax, (a,), softmax)):
            launches = _launches_per_call(fn, inputs)
            kernel_path += [
                Case(f"{name}, kernel path (recording launcher)", _kernel_path(fn, recorder),
                     inputs, 0, reference, f"{note}; {launches} launch(es) per call, none run",
                     torch_on_cpu=True),
                Case(f"{name}, kernel path (CupyLauncher, fake cupy)",
                     _kernel_path(fn, cupy_launcher), inputs, 0, reference,
                     f"{note}; the launcher's look-ups, a no-op kernel call", torch_on_cpu=True),
            ]
    return [
        Case("add", _loop(gpuops.add), (a, b), 0, add, note, torch_on_cpu=True),
        Case("relu", _loop(gpuops.relu), (a,), 0, relu, note, torch_on_cpu=True),
        Case("softmax", _loop(gpuops.softmax), (a,), 0, softmax, note, torch_on_cpu=True),
        Case("Tensor add, with gradients", _tensor_add, (a, b), 0, _torch_tensor_add, note,
             torch_on_cpu=True),
        Case("(A*B).sum().backward()", _tensor_product_backward, (a, b), 0,
             _torch_product_backward, note, torch_on_cpu=True),
    ] + kernel_path
