"""Per-call overhead: what the call protocol and the autograd add in front of the math.

Tiny inputs (16 float32 elements), so the time is the Python in front of each
computation. Each case times ``CALLS`` calls in a loop; the harness prints the time of
one loop, so its milliseconds are microseconds per call. Baselines: the bare NumPy
expression and, when PyTorch is installed, the same call in PyTorch (CPU tensors;
CUDA tensors on a GPU run). Goals: an operator call costs at most 1.5 µs more than
the NumPy expression; the ``Tensor`` paths at most 2x PyTorch's.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy

import gpuops

from .harness import Case, Env

CALLS = 1000
ELEMENTS = 16


def _loop(fn: Callable[..., Any]) -> Callable[..., None]:
    def run(*inputs: Any) -> None:
        for _ in range(CALLS):
            fn(*inputs)
    return run


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
    return [
        Case("add", _loop(gpuops.add), (a, b), 0,
             _operator_reference(lambda m, u, v: u + v, lambda m, u, v: m.add(u, v)), note,
             torch_on_cpu=True),
        Case("relu", _loop(gpuops.relu), (a,), 0,
             _operator_reference(lambda m, u: m.maximum(u, 0), lambda m, u: m.relu(u)), note,
             torch_on_cpu=True),
        Case("softmax", _loop(gpuops.softmax), (a,), 0,
             _operator_reference(_numpy_softmax, _torch_softmax), note, torch_on_cpu=True),
        Case("Tensor add, with gradients", _tensor_add, (a, b), 0, _torch_tensor_add, note,
             torch_on_cpu=True),
        Case("(A*B).sum().backward()", _tensor_product_backward, (a, b), 0,
             _torch_product_backward, note, torch_on_cpu=True),
    ]
