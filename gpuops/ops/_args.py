"""Checks of operator parameters (not arrays: those are :mod:`gpuops.call`'s), one rule each.

Every check raises ``TypeError`` (wrong type) or ``ValueError`` (wrong value) naming the
operator, the parameter and the offending value, and returns the value normalized.
"""
from __future__ import annotations

import math
from typing import Any

import numpy


def finite_float(op: str, name: str, value: Any) -> float:
    """A finite Python int or float (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{op}: {name} must be a Python int or float, got {value!r}")
    try:
        result = float(value)
    except OverflowError:
        raise ValueError(f"{op}: {name} is beyond the float range") from None
    if not math.isfinite(result):
        raise ValueError(f"{op}: {name} must be finite, got {value!r}")
    return result


def integer(op: str, name: str, value: Any, minimum: int | None = None) -> int:
    """A Python or NumPy integer (not a bool), at least ``minimum`` when given."""
    if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, (int, numpy.integer)):
        raise TypeError(f"{op}: {name} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return int(value)


def pair(op: str, name: str, value: Any, minimum: int) -> tuple[int, int]:
    """``value`` (an int, or a tuple or list of two ints) as a pair, each at least
    ``minimum`` (PyTorch's rule for kernel_size, stride, padding, dilation)."""
    items = value if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or any(isinstance(v, (bool, numpy.bool_))
                              or not isinstance(v, (int, numpy.integer)) for v in items):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in items):
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return int(items[0]), int(items[1])


def boolean(op: str, name: str, value: Any) -> bool:
    """A Python bool (a NumPy bool too, taken as its value)."""
    if not isinstance(value, (bool, numpy.bool_)):
        raise TypeError(f"{op}: {name} must be a bool, got {value!r}")
    return bool(value)


def axis(op: str, value: Any, ndim: int) -> int:
    """An axis of an input with ``ndim`` dims (negative counts from the end), normalized."""
    if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, (int, numpy.integer)):
        raise TypeError(f"{op}: axis must be an int, got {value!r}")
    if not -ndim <= value < ndim:
        raise ValueError(f"{op}: axis {value} is out of range for an input with {ndim} dims")
    return int(value) % ndim
