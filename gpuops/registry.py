"""The registry of operators: name -> forward function and its gradients.

Each operator module registers its public functions here; the test suite
checks that every registered operator has a test record, and ``gpuops``
exports every registered function at the top level.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Operator:
    name: str
    family: str  # the cuda/<family>.cu file whose kernels it launches
    forward: Callable
    grads: dict[int, Callable] = field(default_factory=dict)  # k -> name_wrt_xk
    # Optional fusions used by autograd (PyTorch's derivatives.yaml with an output mask):
    # forward_saving(*inputs, **params) -> (y, saved) replaces ``forward`` when a gradient
    # will be needed (e.g. the cross-entropy's gradient computed in the same pass), and
    # backward(*inputs, y, gy, needs=(bool per input), [saved=saved,] **params) -> one
    # gradient per input (None where not needed) replaces the per-input ``grads`` calls.
    forward_saving: Callable | None = None
    backward: Callable | None = None


OPERATORS: dict[str, Operator] = {}


def register(family: str, forward: Callable, *grads: Callable,
             forward_saving: Callable | None = None, backward: Callable | None = None) -> None:
    """Record ``forward`` and its ``<name>_wrt_x<k>`` functions, and the optional fused
    ``forward_saving`` / ``backward`` autograd uses (see :class:`Operator`)."""
    name = forward.__name__
    table = {}
    for grad in grads:
        prefix = f"{name}_wrt_x"
        if not grad.__name__.startswith(prefix):
            raise ValueError(f"gradient {grad.__name__} does not belong to {name}")
        table[int(grad.__name__[len(prefix):])] = grad
    if name in OPERATORS:
        raise ValueError(f"operator {name} registered twice")
    OPERATORS[name] = Operator(name, family, forward, table, forward_saving, backward)
