"""Shapes and strides for kernel launches: broadcasting, dim coalescing, axes."""
from __future__ import annotations

import math
from typing import Any, Sequence

MAX_DIMS = 4  # kernels address operands through at most 4 (coalesced) dims


def broadcast_shape(op: str, *shapes: Sequence[int]) -> tuple:
    """NumPy's broadcast of ``shapes``, or ``ValueError`` naming ``op`` and the shapes."""
    if len(shapes) == 2 and shapes[0] == shapes[1]:
        return tuple(shapes[0])
    ndim = max((len(s) for s in shapes), default=0)
    result = []
    for i in range(ndim):
        sizes = {s[i - ndim + len(s)] for s in shapes if i - ndim + len(s) >= 0}
        sizes.discard(1)
        if len(sizes) > 1:
            raise ValueError(f"{op}: shapes {' and '.join(str(tuple(s)) for s in shapes)} "
                             "do not broadcast")
        result.append(sizes.pop() if sizes else 1)
    return tuple(result)


def element_strides(x: Any) -> tuple:
    """Strides of ``x`` in elements (NumPy and CuPy give bytes)."""
    return tuple(s // x.itemsize for s in x.strides)


def broadcast_strides(x: Any, shape: Sequence[int]) -> tuple:
    """Element strides that read ``x`` broadcast to ``shape`` (0 on broadcast dims)."""
    lead = len(shape) - x.ndim
    own = element_strides(x)
    return tuple(0 if i < lead or x.shape[i - lead] == 1 else own[i - lead]
                 for i in range(len(shape)))


def coalesce(shape: Sequence[int], *strides: Sequence[int]) -> tuple[list, list]:
    """Drop size-1 dims and merge neighbours that every operand walks as one.

    Returns the new shape and one stride list per operand; the flat row-major
    order over ``shape`` is unchanged.
    """
    dims: list[int] = []
    out: list[list[int]] = [[] for _ in strides]
    for i, d in enumerate(shape):
        if d == 1:
            continue
        if dims and all(s[i] * d == o[-1] for s, o in zip(strides, out)):
            dims[-1] *= d
            for s, o in zip(strides, out):
                o[-1] = s[i]
        else:
            dims.append(d)
            for s, o in zip(strides, out):
                o.append(s[i])
    return dims, out


def pad4(dims: Sequence[int], *strides: Sequence[int]) -> tuple | None:
    """Kernel arguments ``(d1, d2, d3), (s0..s3) per operand`` or None past 4 dims."""
    if len(dims) > MAX_DIMS:
        return None
    pad = MAX_DIMS - len(dims)
    full = [1] * pad + list(dims)
    return tuple(full[1:]), tuple(tuple([0] * pad + list(s)) for s in strides)


def prod(xs: Sequence[int]) -> int:
    return math.prod(xs)
