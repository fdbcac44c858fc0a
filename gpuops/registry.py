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


OPERATORS: dict[str, Operator] = {}


def register(family: str, forward: Callable, *grads: Callable) -> None:
    """Record ``forward`` and its ``<name>_wrt_x<k>`` functions."""
    name = forward.__name__
    table = {}
    for grad in grads:
        prefix = f"{name}_wrt_x"
        if not grad.__name__.startswith(prefix):
            raise ValueError(f"gradient {grad.__name__} does not belong to {name}")
        table[int(grad.__name__[len(prefix):])] = grad
    if name in OPERATORS:
        raise ValueError(f"operator {name} registered twice")
    OPERATORS[name] = Operator(name, family, forward, table)
