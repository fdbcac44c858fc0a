"""Optimizer steps as operators: ``sgd_step`` and ``adam_step`` (kernels in cuda/optim.cu;
the classes that hold parameters and state are in :mod:`gpuops.optim`).

``sgd_step`` and ``adam_step`` update lists of arrays in place with the exact
rules of ``torch.optim.SGD``, ``Adam`` and ``AdamW`` (formulas in
docs/operators.md). On a kernel backend (CuPy, or the CPU emulator) one step is
one fused launch of ``cuda/optim.cu`` per dtype over every tensor, addressed
through a table of device pointers; the NumPy implementation works in place
with two scratch buffers per call instead of per-expression temporaries.

They have no gradient, so they are not in ``gpuops.OPERATORS`` (whose generic
tests differentiate every entry); tests/layers/test_optim.py tests them.
"""
from __future__ import annotations

import collections
import functools
import math
import threading
import weakref
from typing import Any, Iterator, Mapping, Sequence

import ml_dtypes
import numpy

from ..backend import FLOAT_DTYPES
from ..call import Call, Signature
from ..graph import upload
from ..kernels import BLOCK, scalar

__all__ = ["sgd_step", "adam_step", "clip_grad_norm", "unscale_grads"]

FAMILY = "optim"
CHUNK = 4096  # elements per block-chunk of the fused kernels
Array = Any


# ---- validation and the pointer table --------------------------------------------

def _flatten_lists(op: str, lists: dict[str, Sequence | None]) -> tuple[tuple, list]:
    """The layout (``(label, length)`` of each list) and the arrays of parallel lists, in
    order; each list a list or tuple, all of one length (lists that are None are left out)."""
    layout = []
    values: list = []
    length = None
    for label, arrays in lists.items():
        if arrays is None:
            continue
        if not isinstance(arrays, (list, tuple)):
            raise TypeError(f"{op}: {label} must be a list of arrays, got {type(arrays).__name__}")
        if length is None:
            length = len(arrays)
        elif len(arrays) != length:
            raise ValueError(f"{op}: {label} has {len(arrays)} arrays; expected {length} "
                             "(one per parameter)")
        layout.append((label, length))
        values += arrays
    return tuple(layout), values


@functools.lru_cache(maxsize=64)
def _signature(op: str, layout: tuple, dtypes: tuple = FLOAT_DTYPES,
               kernel_dtypes: tuple | None = None) -> Signature:
    """The signature of a call over parallel lists of ``layout`` (inputs ``label[i]``),
    made once per layout (a step of the same parameters binds the same one)."""
    names = [f"{label}[{i}]" for label, length in layout for i in range(length)]
    return Signature(op, FAMILY, names, dtypes=dtypes, kernel_dtypes=kernel_dtypes)


def _check_lists(op: str, lists: dict[str, Sequence | None]) -> tuple[Call | None, list[list]]:
    """Validate parallel lists of arrays: same lengths, backends, and per-tensor shape/dtype."""
    layout, values = _flatten_lists(op, lists)
    if not values:
        return None, []
    call = _signature(op, layout).bind(*values)
    present = [a for a in lists.values() if a is not None]
    for i, group in enumerate(zip(*present)):
        first = group[0]
        shape, dtype = first.shape, first.dtype
        for (label, _), x in zip(layout, group):
            if x.shape != shape or x.dtype != dtype:
                raise ValueError(f"{op}: {label}[{i}] has shape {tuple(x.shape)} and dtype "
                                 f"{x.dtype}; expected {tuple(shape)} and {dtype} "
                                 f"like params[{i}]")
    return call, [list(a) for a in present]


def _check_param(op: str, name: str, value: Any, low: float, high: float = math.inf,
                 high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{op}: {name} must be a number, got {type(value).__name__}")
    ok = low <= value < high if high_open else low <= value <= high
    if not ok or math.isnan(value):
        bound = f"[{low}, {high})" if high_open else f"[{low}, {high}]"
        raise ValueError(f"{op}: {name}={value} is outside {bound}")
    return float(value)


def _pointer(x: Array) -> int:
    """The address of an array's first element (CuPy device pointer, or NumPy host address:
    the emulator runs kernels in this process, so host addresses work the same way)."""
    return int(x.ctypes.data) if isinstance(x, numpy.ndarray) else int(x.data.ptr)


POINTER_ROWS = 5  # pointer rows of the chunk table (cuda/optim.cu)
TABLE_CACHE = 32  # chunk tables kept (keyed by the arrays' addresses, sizes and dtypes)
_tables: collections.OrderedDict[tuple, tuple] = collections.OrderedDict()
_tables_lock = threading.Lock()


def _chunk_tables(call: Call, kernel: str, rows: list, key: int = 0,
                  fresh: tuple = (1,)) -> list[tuple[numpy.dtype, Array, int, int]]:
    """Per dtype of the non-empty tensors of ``rows[key]`` (rows: params, grads, state1,
    state2, 16-bit params; a row a kernel does not use may be None or left out):
    ``(dtype, table, n_tensors, n_chunks)``, the device table of cuda/optim.cu (pointers,
    sizes, each chunk's tensor and start).

    A table depends only on the arrays' addresses, sizes and dtypes, so it is built and
    uploaded once and reused (:data:`_tables`, the last :data:`TABLE_CACHE` tables). The
    rows of ``fresh`` (the gradients: new arrays every step, which a memory pool places at
    the addresses of the step before) are keyed by their addresses; the other rows
    (parameters, optimizer state: the same arrays step after step) by the arrays' identities,
    checked through weak references so that a recycled ``id`` never matches. So an optimizer
    stepping the same parameters uploads nothing per step, and another parameter list, a
    model moved, or gradients at other addresses get a new table."""
    held: list = []
    keys: list = []
    for r, group in enumerate(rows):
        if group is None:
            keys.append(None)
        elif r in fresh:
            for i, x in enumerate(group):
                if x.size and not x.flags.c_contiguous:
                    raise ValueError(f"{kernel}: arrays must be C-contiguous on the "
                                     f"{call.backend.name} backend (tensor {i} is not)")
            keys.append(tuple([_pointer(x) for x in group]))
        else:
            keys.append(tuple([id(x) for x in group]))
            held += group
    identity = (call.backend.name, key, tuple(keys),
                tuple([(p.size, p.dtype) for p in rows[key]]))
    with _tables_lock:
        entry = _tables.get(identity)
        if entry is not None and all([ref() is x for ref, x in zip(entry[0], held)]):
            _tables.move_to_end(identity)
            return entry[1]
    index = [i for i, p in enumerate(rows[key]) if p.size]
    for group in rows:
        if group is not None:
            for i in index:
                if not group[i].flags.c_contiguous:
                    raise ValueError(f"{kernel}: arrays must be C-contiguous on the "
                                     f"{call.backend.name} backend (tensor {i} is not)")
    tables = list(_build_tables(call, rows, key, index))
    with _tables_lock:
        _tables[identity] = ([weakref.ref(x) for x in held], tables)
        while len(_tables) > TABLE_CACHE:
            _tables.popitem(last=False)
    return tables


def _build_tables(call: Call, rows: list, key: int,
                  index: list[int]) -> Iterator[tuple[numpy.dtype, Array, int, int]]:
    """The tables of :func:`_chunk_tables` (tensors ``index`` of ``rows[key]``), uploaded
    (:func:`gpuops.graph.upload`: after the capture when a CUDA graph is being captured)."""
    by_dtype: dict[numpy.dtype, list[int]] = {}
    for i in index:
        by_dtype.setdefault(numpy.dtype(rows[key][i].dtype), []).append(i)
    for dtype, members in by_dtype.items():
        n_tensors = len(members)
        sizes = numpy.array([rows[key][i].size for i in members], dtype=numpy.int64)
        chunks_per = -(-sizes // CHUNK)
        chunk_tensor = numpy.repeat(numpy.arange(n_tensors, dtype=numpy.int64), chunks_per)
        first = numpy.cumsum(chunks_per) - chunks_per
        chunk_start = (numpy.arange(chunk_tensor.size, dtype=numpy.int64)
                       - numpy.repeat(first, chunks_per)) * CHUNK
        pointers = [[_pointer(group[i]) for i in members] if group is not None
                    else [0] * n_tensors for group in rows]
        while len(pointers) < POINTER_ROWS:
            pointers.append([0] * n_tensors)
        table = numpy.concatenate([numpy.array(pointers, dtype=numpy.uint64).view(numpy.int64)
                                   .reshape(-1), sizes, chunk_tensor, chunk_start])
        yield dtype, upload(call.xp, table), n_tensors, int(chunk_tensor.size)


def _launch(call: Call, kernel: str, rows: list, scalars: tuple, key: int = 0) -> None:
    """One fused launch per dtype of ``rows[key]`` over the tensors of ``rows`` (params,
    grads, state1, state2, 16-bit params); float scalars in float32 for 16-bit kernels."""
    for dtype, table, n_tensors, n_chunks in _chunk_tables(call, kernel, rows, key):
        grid = (max(1, min(n_chunks, call.max_blocks)),)
        args = (table, numpy.int64(n_tensors), numpy.int64(n_chunks), numpy.int64(CHUNK),
                *[scalar(dtype, s) if isinstance(s, float) else s for s in scalars])
        call.launch(kernel, grid, (BLOCK,), args, dtype=dtype)


class _Scratch:
    """Two flat buffers per dtype, sized for the largest tensor of one NumPy call."""

    def __init__(self, rows: list[list]) -> None:
        self._flat: dict[numpy.dtype, tuple] = {}
        for p in rows[0]:
            dt = numpy.dtype(p.dtype)
            n = max(p.size, self._flat.get(dt, (numpy.empty(0),))[0].size)
            self._flat[dt] = (numpy.empty(n, dt), numpy.empty(n, dt))

    def get(self, like: Array) -> tuple:
        a, b = self._flat[numpy.dtype(like.dtype)]
        return a[:like.size].reshape(like.shape), b[:like.size].reshape(like.shape)


# ---- 16-bit parameters with float32 master weights -----------------------------------

SIXTEEN_BIT = (numpy.dtype(numpy.float16), numpy.dtype(ml_dtypes.bfloat16))
F32 = numpy.dtype(numpy.float32)
_ANY_FLOAT = FLOAT_DTYPES + SIXTEEN_BIT
# The 16-bit dtypes cuda/optim.cu has kernels for (master-weight steps, unscaling).
KERNEL_SIXTEEN_BIT = SIXTEEN_BIT


def _check_master(op: str, params: Sequence, grads: Sequence, master_params: Sequence,
                  states: Mapping[str, Sequence | None]) -> tuple[Call | None, list]:
    """Validate a master-weight step: 16-bit ``params`` and ``grads`` of one dtype per
    tensor, float32 ``master_params`` and states of the same shapes. Returns the call and
    the rows ``[master, grads, state1, state2, params]`` (None for an unused state)."""
    lists = {"params": params, "grads": grads, "master_params": master_params, **states}
    layout, values = _flatten_lists(op, lists)
    if not values:
        return None, []
    call = _signature(op, layout, _ANY_FLOAT, FLOAT_DTYPES + KERNEL_SIXTEEN_BIT).bind(*values)
    for i, p in enumerate(params):
        if p.dtype not in SIXTEEN_BIT:
            raise ValueError(f"{op}: params[{i}] has dtype {p.dtype}; master_params are for "
                             "float16 or bfloat16 parameters")
        for label, arrays in lists.items():
            if arrays is None:
                continue
            x = arrays[i]
            want = p.dtype if label in ("params", "grads") else F32
            if tuple(x.shape) != tuple(p.shape) or x.dtype != want:
                raise ValueError(f"{op}: {label}[{i}] has shape {tuple(x.shape)} and dtype "
                                 f"{x.dtype}; expected {tuple(p.shape)} and {want}")
    state_rows: list[list | None] = [list(a) if a is not None else None
                                     for a in states.values()]
    while len(state_rows) < 2:
        state_rows.append(None)
    return call, [list(master_params), list(grads), *state_rows, list(params)]


def _round_into(params: list, master: list) -> None:
    """Each 16-bit parameter set to its float32 master rounded to nearest even."""
    for p, w in zip(params, master):
        p[...] = w.astype(p.dtype)


# ---- SGD ---------------------------------------------------------------------

def sgd_step(params: list, grads: list, velocities: list | None, *, lr: float,
             momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
             master_params: list | None = None) -> list:
    """One step of ``torch.optim.SGD`` (dampening 0), in place on ``params`` and ``velocities``.

    Per tensor: ``g = grad + wd·p``; with momentum ``b = momentum·b + g`` and
    ``g = g + momentum·b`` (Nesterov) or ``g = b``; then ``p -= lr·g``. Velocities start at
    zero (then the first step gives ``b = g``, as torch's first step does); they may be
    None when ``momentum == 0``. Returns ``params``.

    ``master_params`` (float32 arrays like the float16/bfloat16 ``params``): the step is
    taken on the masters in float32 (``grads`` of the params' dtype widened exactly,
    float32 velocities) and each parameter is set to its master rounded once to 16 bits;
    on the kernel backends one launch per 16-bit dtype does both.
    """
    op = "sgd_step"
    lr = _check_param(op, "lr", lr, 0.0)
    momentum = _check_param(op, "momentum", momentum, 0.0)
    weight_decay = _check_param(op, "weight_decay", weight_decay, 0.0)
    if nesterov and momentum == 0:
        raise ValueError(f"{op}: nesterov=True needs momentum > 0 (got momentum={momentum})")
    if velocities is None and momentum != 0:
        raise ValueError(f"{op}: momentum={momentum} needs velocities (a zero-initialized "
                         "array per parameter)")
    states = {"velocities": velocities if momentum else None}
    if master_params is not None:
        call, rows = _check_master(op, params, grads, master_params, states)
    else:
        call, rows = _check_lists(op, {"params": params, "grads": grads, **states})
    if call is None:
        return params
    scalars = (lr, momentum, weight_decay, numpy.int32(bool(nesterov)))
    if call.uses_kernels:
        if master_params is not None:
            _launch(call, "sgd_step_master", rows, scalars, key=4)
        else:
            _launch(call, "sgd_step", rows, scalars)
        return params
    if master_params is not None:
        rows = [rows[0], [g.astype(F32) for g in rows[1]], rows[2]]
    scratch = _Scratch(rows)
    for i, (p, g) in enumerate(zip(rows[0], rows[1])):
        if p.size == 0:
            continue
        t1, t2 = scratch.get(p)
        if weight_decay:
            numpy.multiply(p, weight_decay, out=t1)
            t1 += g
            g = t1
        if momentum:
            b = rows[2][i]
            b *= momentum
            b += g
            if nesterov:
                numpy.multiply(b, momentum, out=t2)
                t2 += g
                g = t2
            else:
                g = b
        numpy.multiply(g, lr, out=t2)
        p -= t2
    if master_params is not None:
        _round_into(params, rows[0])
    return params


# ---- Adam / AdamW ----------------------------------------------------------------

def adam_step(params: list, grads: list, m: list, v: list, *, step: int, lr: float = 1e-3,
              beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
              weight_decay: float = 0.0, decoupled: bool = False,
              master_params: list | None = None) -> list:
    """One step of ``torch.optim.Adam`` (``decoupled=False``) or ``AdamW`` (``True``), in place.

    ``step`` is the 1-based number of this step (bias correction). Per tensor:
    AdamW ``p *= 1 - lr·wd`` / Adam ``g += wd·p``; ``m += (1-β1)(g - m)``;
    ``v = β2·v + (1-β2)·g²``; ``p -= lr/(1-β1^step) · m / (√v/√(1-β2^step) + eps)``.
    ``m`` and ``v`` start at zero. Returns ``params``.

    ``master_params`` (float32 arrays like the float16/bfloat16 ``params``): as in
    :func:`sgd_step`, the update runs on the float32 masters with float32 ``m`` and ``v``,
    and each parameter gets its master rounded once (one launch per 16-bit dtype).
    """
    op = "adam_step"
    if isinstance(step, bool) or not isinstance(step, (int, numpy.integer)) or step < 1:
        raise ValueError(f"{op}: step must be an integer >= 1 (the number of this step), "
                         f"got {step!r}")
    lr = _check_param(op, "lr", lr, 0.0)
    beta1 = _check_param(op, "beta1", beta1, 0.0, 1.0, high_open=True)
    beta2 = _check_param(op, "beta2", beta2, 0.0, 1.0, high_open=True)
    eps = _check_param(op, "eps", eps, 0.0)
    weight_decay = _check_param(op, "weight_decay", weight_decay, 0.0)
    if master_params is not None:
        call, rows = _check_master(op, params, grads, master_params, {"m": m, "v": v})
    else:
        call, rows = _check_lists(op, {"params": params, "grads": grads, "m": m, "v": v})
    if call is None:
        return params
    step_size = lr / (1.0 - beta1 ** int(step))
    bc2_sqrt = math.sqrt(1.0 - beta2 ** int(step))
    if call.uses_kernels:
        scalars = (beta2, 1.0 - beta1, 1.0 - beta2, eps, weight_decay, 1.0 - lr * weight_decay,
                   step_size, bc2_sqrt, numpy.int32(bool(decoupled)))
        if master_params is not None:
            _launch(call, "adam_step_master", rows, scalars, key=4)
        else:
            _launch(call, "adam_step", rows, scalars)
        return params
    if master_params is not None:
        rows = [rows[0], [g.astype(F32) for g in rows[1]], rows[2], rows[3]]
    scratch = _Scratch(rows)
    for p, g, mi, vi in zip(*rows):
        if p.size == 0:
            continue
        t1, t2 = scratch.get(p)
        if weight_decay:
            if decoupled:
                p *= 1.0 - lr * weight_decay
            else:
                numpy.multiply(p, weight_decay, out=t1)
                t1 += g
                g = t1
        numpy.subtract(g, mi, out=t2)       # m = lerp(m, g, 1 - β1)
        t2 *= 1.0 - beta1
        mi += t2
        numpy.square(g, out=t2)             # v = β2 v + (1 - β2) g²
        t2 *= 1.0 - beta2
        vi *= beta2
        vi += t2
        numpy.sqrt(vi, out=t2)              # denominator √v / √(1 - β2^t) + eps
        t2 /= bc2_sqrt
        t2 += eps
        numpy.divide(mi, t2, out=t2)
        t2 *= step_size
        p -= t2
    if master_params is not None:
        _round_into(params, rows[0])
    return params


# ---- loss scaling --------------------------------------------------------------------

def _grad_list(op: str, grads: Any) -> list:
    """``grads`` (one array, or a list or tuple of arrays) as a non-empty list."""
    if hasattr(grads, "shape") and hasattr(grads, "dtype"):
        grads = [grads]
    if not isinstance(grads, (list, tuple)):
        raise TypeError(f"{op}: grads must be a list of arrays, got {type(grads).__name__}")
    if not grads:
        raise ValueError(f"{op}: grads is empty; expected at least one gradient array")
    return list(grads)


def unscale_grads(grads: Any, inv_scale: float) -> Array:
    """``g *= inv_scale`` in place for every gradient (``GradScaler.unscale_``), and whether
    any value was inf or NaN before: a float32 array ``[1.0]`` or ``[0.0]`` on the
    gradients' backend (torch's ``found_inf``; reading it waits for the device).

    Each value is multiplied in the accumulation type (float32 for 16-bit, float64 for
    float64) and rounded once; non-finite values are multiplied too (as torch does). Kernel
    backends: per dtype one fused launch of ``grad_unscale`` over the chunk table writes
    each chunk's flag (a block-wide OR), then one block ORs the flags in a fixed order into
    the result (``grad_found_inf``): no atomics, no host wait.
    """
    op = "unscale_grads"
    grads = _grad_list(op, grads)
    if isinstance(inv_scale, bool) or not isinstance(inv_scale, (int, float, numpy.floating)) \
            or not (math.isfinite(inv_scale) and inv_scale > 0):
        raise ValueError(f"{op}: inv_scale={inv_scale!r} must be a finite number > 0")
    call = Signature(op, FAMILY, [f"grads[{i}]" for i in range(len(grads))],
                     dtypes=_ANY_FLOAT,
                     kernel_dtypes=FLOAT_DTYPES + KERNEL_SIXTEEN_BIT).bind(*grads)
    xp = call.xp
    if call.uses_kernels:
        tables = _chunk_tables(call, op, [grads], fresh=(0,))
        n_chunks = sum(t[3] for t in tables)
        flags = xp.zeros(max(n_chunks, 1), dtype=numpy.int32)
        offset = 0
        for dtype, table, n_tensors, chunks in tables:
            grid = (max(1, min(chunks, call.max_blocks)),)
            call.launch("grad_unscale", grid, (BLOCK,),
                        (table, numpy.int64(n_tensors), numpy.int64(chunks), numpy.int64(CHUNK),
                         scalar(dtype, float(inv_scale)), flags[offset:offset + chunks]),
                        dtype=dtype)
            offset += chunks
        found = xp.empty(1, dtype=numpy.float32)
        call.launch("grad_found_inf", (1,), (BLOCK,), (flags, numpy.int64(n_chunks), found),
                    dtype=numpy.float32)
        return found
    found_inf = False
    with numpy.errstate(invalid="ignore", over="ignore"):
        for g in grads:
            if g.size == 0:
                continue
            acc = numpy.float64 if g.dtype == numpy.float64 else numpy.float32
            wide = g if g.dtype == acc else g.astype(acc)
            found_inf = found_inf or not bool(numpy.isfinite(wide).all())
            if g.dtype == acc:
                g *= acc(inv_scale)
            else:
                g[...] = (wide * acc(inv_scale)).astype(g.dtype)
    return numpy.array([1.0 if found_inf else 0.0], dtype=numpy.float32)


# ---- gradient clipping -------------------------------------------------------------

CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_: clip_coef = max_norm / (total_norm + 1e-6)


def clip_grad_norm(grads: Any, max_norm: float, *, norm_type: float = 2.0,
                   error_if_nonfinite: bool = False) -> Array:
    """``torch.nn.utils.clip_grad_norm_`` on arrays: the L2 norm of all of ``grads`` taken
    together, and every gradient scaled in place when it exceeds ``max_norm``.

    ``norm = sqrt(sum_k sum_i g_k[i]^2)``; ``coef = min(max_norm / (norm + 1e-6), 1)``;
    ``g_k *= coef`` (nothing is written when ``coef`` is 1). Returns ``norm`` as a 0-d array
    on the gradients' backend, of their promoted dtype (torch returns a 0-d tensor; a
    Python float would wait for the device). ``grads``: a list or tuple of float16, bfloat16,
    float32 or float64 arrays of one backend (dtypes may differ; empty arrays count 0), or
    one array.

    Squares are summed in float64 for every dtype (no overflow of a float32 square; float16
    loads widen exactly), and ``coef`` comes from that float64 norm, so it is right even
    when the returned float16 norm rounds to inf. A NaN or inf gradient makes ``norm`` NaN
    or inf and, as in torch, the gradients are scaled by NaN or 0 (inf · 0 = NaN);
    ``error_if_nonfinite=True`` raises ``RuntimeError`` first (a device sync) and writes
    nothing. Kernel backends: one fused launch per dtype writes each chunk's sum of squares
    to a float64 table, one block adds the table in a fixed order (no atomics: bitwise
    repeatable), one fused launch per dtype scales; the host never waits. Only
    ``norm_type=2`` is supported.
    """
    op = "clip_grad_norm"
    grads = _grad_list(op, grads)
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float, numpy.integer,
                                                                 numpy.floating)):
        raise TypeError(f"{op}: max_norm must be a number, got {type(max_norm).__name__}")
    if not math.isfinite(max_norm) or max_norm < 0:
        raise ValueError(f"{op}: max_norm={max_norm} must be finite and >= 0")
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float)) \
            or norm_type != 2:
        raise ValueError(f"{op}: norm_type={norm_type!r} is not supported (only 2, the L2 norm)")
    if not isinstance(error_if_nonfinite, (bool, numpy.bool_)):
        raise TypeError(f"{op}: error_if_nonfinite must be a bool, got {error_if_nonfinite!r}")
    call = Signature(op, FAMILY, [f"grads[{i}]" for i in range(len(grads))],
                     dtypes=_ANY_FLOAT).bind(*grads)
    max_norm = float(max_norm)
    if call.uses_kernels:
        return _clip_kernels(call, grads, max_norm, bool(error_if_nonfinite))
    total = 0.0
    for g in grads:
        flat = g.astype(numpy.float64).reshape(-1)
        total += float(numpy.dot(flat, flat))
    norm64 = math.sqrt(total)
    if error_if_nonfinite:
        _check_finite(op, norm64)
    coef = min(max_norm / (norm64 + CLIP_EPS), 1.0) if not math.isnan(norm64) else math.nan
    if coef != 1.0:
        with numpy.errstate(invalid="ignore", over="ignore"):
            for g in grads:  # float16 times a float32 factor, rounded once (as the kernels)
                factor = (numpy.float64 if g.dtype == numpy.float64 else numpy.float32)(coef)
                numpy.multiply(g, factor, out=g)
    with numpy.errstate(over="ignore"):
        return numpy.asarray(norm64, dtype=call.dtype)


def _clip_kernels(call: Call, grads: list, max_norm: float, error_if_nonfinite: bool) -> Array:
    """Per dtype one ``grad_sumsq`` launch (each chunk's sum of squares into one float64
    table), one block adding the table in order into ``[norm, coef]`` on the device, then
    per dtype one ``grad_scale`` launch; the same chunk tables serve both passes."""
    tables = _chunk_tables(call, call.op, [grads], fresh=(0,))
    n_chunks = sum(t[3] for t in tables)
    partial = call.xp.zeros(max(n_chunks, 1), dtype=numpy.float64)
    offset = 0
    for dtype, table, n_tensors, chunks in tables:
        grid = (max(1, min(chunks, call.max_blocks)),)
        call.launch("grad_sumsq", grid, (BLOCK,),
                    (table, numpy.int64(n_tensors), numpy.int64(chunks), numpy.int64(CHUNK),
                     partial[offset:offset + chunks]), dtype=dtype)
        offset += chunks
    norm_coef = call.xp.empty(2, dtype=numpy.float64)
    call.launch("grad_norm_finish", (1,), (BLOCK,),
                (partial, numpy.int64(n_chunks), numpy.float64(max_norm),
                 numpy.float64(CLIP_EPS), norm_coef), dtype=numpy.float64)
    with numpy.errstate(over="ignore"):  # float16 past 65504: inf, as the docstring says
        norm = norm_coef[:1].reshape(()).astype(call.dtype)  # 0-d, on the device
    if error_if_nonfinite:
        _check_finite(call.op, float(norm_coef[0]))
    for dtype, table, n_tensors, chunks in tables:
        grid = (max(1, min(chunks, call.max_blocks)),)
        call.launch("grad_scale", grid, (BLOCK,),
                    (table, numpy.int64(n_tensors), numpy.int64(chunks), numpy.int64(CHUNK),
                     norm_coef), dtype=dtype)
    return norm


def _check_finite(op: str, norm: float) -> None:
    if not math.isfinite(norm):
        raise RuntimeError(f"{op}: the total norm of the gradients is {norm}, so they cannot "
                           "be clipped (error_if_nonfinite=True); nothing was changed")
