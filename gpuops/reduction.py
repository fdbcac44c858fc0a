"""Reductions. Kernels in cuda/reduction.cu."""
from __future__ import annotations

from typing import Any

from . import _layout
from .backend import Backend
from .kernels import finish, grid_1d, result_buffer, size, suffix

_SUM_BLOCK = 256


def sum_to_shape(backend: Backend, g: Any, out: Any) -> Any:
    """Sum ``g`` over the axes along which ``out.shape`` was broadcast to ``g.shape``.

    The reverse of broadcasting (the seeds' ``collapse``): used by every gradient
    of an input that was broadcast. Writes into ``out`` (any layout, any float
    dtype: the sum is taken in ``g``'s dtype and cast) and returns it.
    """
    shape = tuple(out.shape)
    if tuple(g.shape) == shape:
        out[...] = g
        return out
    lead = g.ndim - len(shape)
    reduced = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape)
                                         if s == 1 and g.shape[lead + i] != 1)
    if not backend.uses_kernels:
        out[...] = g.sum(axis=reduced).reshape(shape)
        return out
    target = result_buffer(backend, out, g.dtype)
    _launch_sum(backend, g, reduced, target)
    return finish(out, target)


def _launch_sum(backend: Backend, x: Any, axes: tuple, y: Any) -> None:
    """Launch ``sum_axes``: ``y`` (C-contiguous) = ``x`` summed over ``axes``."""
    n_out = y.size
    if n_out == 0:
        return
    if x.size == 0:
        y[...] = 0
        return
    strides = _layout.element_strides(x)
    keep = [i for i in range(x.ndim) if i not in axes]
    red = list(axes)
    keep_dims, (keep_strides,) = _layout.coalesce([x.shape[i] for i in keep],
                                                  [strides[i] for i in keep])
    red_dims, (red_strides,) = _layout.coalesce([x.shape[i] for i in red],
                                                [strides[i] for i in red])
    kept = _layout.pad4(keep_dims, keep_strides)
    reduced = _layout.pad4(red_dims, red_strides)
    if kept is None or reduced is None:
        # Past 4 dims on either side: one transposed copy makes it (n_out, n_red).
        x = backend.xp.ascontiguousarray(x.transpose(keep + red))
        n_red = x.size // n_out
        kept = (1, 1, 1), ((0, 0, 0, n_red),)
        reduced = (1, 1, 1), ((0, 0, 0, 1),)
    n_red = x.size // n_out
    (k1, k2, k3), (ks,) = kept
    (r1, r2, r3), (rs,) = reduced
    args = (x, y, size(n_out), size(n_red), size(k1), size(k2), size(k3),
            *map(size, ks), size(r1), size(r2), size(r3), *map(size, rs))
    backend.launcher.launch("reduction", f"sum_axes_{suffix(x.dtype)}",
                            grid_1d(backend.launcher, n_out, 1), (_SUM_BLOCK,), args)
