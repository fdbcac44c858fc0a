"""Matrix products: ``matmul``, the fused ``linear`` layer, and their gradients.

Kernels in cuda/matmul.cu: one tiled GEMM per dtype that reads its operands through
element strides (transposed, strided and batch-broadcast operands need no copies),
sums an optional reduction batch into the same output (the gradient of an operand
broadcast over batches), and applies bias + activation in its epilogue. float16 and
bfloat16 run on the tensor cores (mma.sync .f16 / .bf16, float32 accumulation, one
rounding of the result) when the launcher has them (sm_80+), else on the SIMT kernel
(16-bit loads, float32 accumulation). float32 runs on the SIMT kernels, or on TF32 tensor
cores after ``set_matmul_precision("high")`` (off by default; see there).
The NumPy backend computes in float32/float64 only.

Decisions (see docs/operators.md): ``matmul`` follows NumPy for 1-d operands (a 1-d x1
is a row (1, n), a 1-d x2 a column (n, 1), the unit axis removed from the result; two
vectors give a 0-d result; gradients have the operands' shapes), 0-d operands raise
``ValueError``; ``linear`` takes
x1 of shape (..., in_features), any number of leading dims (a 1-d x1 is one row);
``linear_wrt_x3`` raises ``ValueError`` when the forward had no bias (x3 None).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy

from .. import kernels
from ..backend import ALL_FLOAT_DTYPES, BFLOAT16, NUMPY, SIXTEEN_BIT_DTYPES, Backend
from ..call import Call, Signature, check_shape
from ..cupy_launcher import BLOCKS_PER_SM
from ..registry import register
from . import _layout, _math
from .reduction import sum_to_shape

__all__ = ["matmul", "matmul_wrt_x1", "matmul_wrt_x2",
           "linear", "linear_wrt_x1", "linear_wrt_x2", "linear_wrt_x3",
           "set_matmul_precision", "get_matmul_precision"]

FAMILY = "matmul"
Array = Any

# The GEMM epilogue's ``act`` codes (ACT_* in cuda/matmul.cu), from gpuops.kernels.CONSTANTS.
ACTIVATIONS = {None: kernels.CONSTANTS["ACT_NONE"], "relu": kernels.CONSTANTS["ACT_RELU"],
               "sigmoid": kernels.CONSTANTS["ACT_SIGMOID"], "tanh": kernels.CONSTANTS["ACT_TANH"]}
BIAS_NONE, BIAS_PER_COLUMN, BIAS_PER_ROW = 0, 1, 2

_GEMM_THREADS = kernels.CONSTANTS["GEMM_THREADS"]
_MAX_GRID_YZ = 65535


@dataclass(frozen=True)
class Tiles:
    """One GEMM kernel's tile configuration: ``kernel`` (base name), BM x BN outputs per
    block, BK of K per step, ``vec`` elements per vector load, ``threads`` per block, the
    blocks an SM holds at once (``per_sm``: the kernel's __launch_bounds__ minimum) and, for
    the SIMT kernels, ``store`` elements per vector store of C (a thread's column group:
    16 bytes of the accumulation type, at most TN)."""
    kernel: str
    bm: int
    bn: int
    bk: int
    vec: int
    threads: int = _GEMM_THREADS
    per_sm: int = 1
    store: int = 1


# dtype -> the SIMT kernels' tile configurations, largest first (cuda/matmul.cu)
_SIMT = {numpy.dtype(numpy.float32): (Tiles("gemm", 128, 128, 8, 4, store=4),
                                      Tiles("gemm_small", 64, 64, 8, 4, store=4),
                                      Tiles("gemm_tiny", 32, 32, 8, 2, store=2)),
         numpy.dtype(numpy.float64): (Tiles("gemm", 64, 64, 8, 2, store=2),),
         numpy.dtype(numpy.float16): (Tiles("gemm", 64, 64, 8, 1, store=4),),
         BFLOAT16: (Tiles("gemm", 64, 64, 8, 1, store=4),)}
# gemm_tc_f16, gemm_tc_bf16: 4 warps of 64x64, __launch_bounds__(128, 2) (TC_THREADS)
_TENSOR_CORE = (Tiles("gemm_tc", 128, 128, 32, 8, threads=128, per_sm=2),)
# gemm_tc_f32 (TF32, set_matmul_precision("high")): the same geometry, 16 floats of K a step
_TENSOR_CORE_TF32 = (Tiles("gemm_tc", 128, 128, 16, 4, threads=128, per_sm=2),)

# The float32 matmul precision (torch.set_float32_matmul_precision's two upper levels).
_PRECISIONS = ("highest", "high")
_precision = "highest"


def set_matmul_precision(precision: str) -> None:
    """How float32 matrix products (matmul, linear, conv2d and their gradients) run on the
    kernels, as ``torch.set_float32_matmul_precision``: ``"highest"`` (the default) float32
    products and sums; ``"high"`` TF32 tensor cores where the launcher has them (sm_80+):
    each input rounded to 10 fraction bits (to nearest, ties away), exact products, float32
    sums, so an output's error grows by about 2^-10 of sum |a||b|. "high" applies to the
    products whose operands are both k-contiguous (or strided), e.g. linear's forward
    x Wᵀ; the others, and every product on GPUs without tensor cores or on the NumPy
    backend, stay float32. Process-wide, like PyTorch's."""
    global _precision
    if precision not in _PRECISIONS:
        raise ValueError(f"set_matmul_precision: precision must be 'highest' or 'high', "
                         f"got {precision!r}")
    _precision = precision


def get_matmul_precision() -> str:
    """The float32 matmul precision: "highest" or "high" (:func:`set_matmul_precision`)."""
    return _precision
# A split takes at least this much of K (the reduction steps of its range, times BK), so
# that its partial tile's round trip through the workspace stays small next to its loads.
_MIN_SPLIT_K = 64
_MAX_WORKSPACE_BYTES = 64 << 20


@dataclass(frozen=True)
class Plan:
    """How one GEMM is launched: the tiles, the number of K splits, the grid."""
    tiles: Tiles
    splits: int
    grid: tuple[int, int, int]

    @property
    def blocks(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]


def sm_count(launcher: Any) -> int:
    """The launcher's multiprocessors: its ``sm_count`` attribute where it has one (a test
    may set it on an emulator launcher to force splits), else ``max_blocks`` /
    BLOCKS_PER_SM (what CupyLauncher and RecordingLauncher derive it from), at least 1."""
    return int(getattr(launcher, "sm_count", 0)) or max(1, launcher.max_blocks // BLOCKS_PER_SM)


def wave_efficiency(blocks: int, slots: int) -> float:
    """blocks / (waves x slots), waves = ceil(blocks / slots): the share of the GPU's
    resident-block slots (SMs x blocks per SM) a launch occupies."""
    return blocks / (max(1, math.ceil(blocks / slots)) * slots)


def plan(launcher: Any, dtype: Any, m: int, n: int, k: int, nz: int = 1, nr: int = 1,
         tf32: bool = False) -> Plan:
    """The tiles and K splits of C[nz](m, n) = Σ_{nr} A(m, k) B(k, n) on ``launcher``.

    For each tile configuration of the dtype: the output blocks (tiles times batches) and,
    while they are fewer than the SMs, the splits of the nr * ceil(k / BK) reduction steps:
    ``min(SMs // blocks, steps // ceil(64 / BK))`` (every SM a block, each split >= 64 of
    K; the workspace kept under 64 MiB). From the largest tiles down to the first that
    fill the SMs unsplit, the configuration whose blocks fill the GPU's block slots best
    (wave efficiency over SMs x ``per_sm`` slots, in steps of 5%) wins, the larger tiles on
    a tie (more reuse of each loaded value). ``tf32``: a float32 product on the TF32
    tensor-core kernel (the caller checked the precision and the layouts). The
    tensor-core kernel's second resident
    block per SM is not split for: it hides the first one's latency when there are tiles
    enough, and a split costs a round trip of its partial tile through the workspace."""
    dtype = numpy.dtype(dtype)
    sms = sm_count(launcher)
    options: tuple[Tiles, ...]
    if dtype in SIXTEEN_BIT_DTYPES and launcher.tensor_cores:
        options = _TENSOR_CORE
    elif tf32 and dtype == numpy.float32 and launcher.tensor_cores:
        options = _TENSOR_CORE_TF32
    else:
        options = _SIMT[dtype]
    steps_k = math.ceil(k / options[0].bk)  # every configuration's BK is the same
    acc_bytes = 8 if dtype == numpy.float64 else 4
    room = _MAX_WORKSPACE_BYTES // max(1, nz * m * (n + 1) * acc_bytes)
    best: tuple | None = None
    for tiles in options:
        output_blocks = math.ceil(m / tiles.bm) * math.ceil(n / tiles.bn) * nz
        splits = 1
        if 0 < output_blocks < sms:
            splits = max(1, min(sms // output_blocks,
                                nr * steps_k // math.ceil(_MIN_SPLIT_K / tiles.bk), room))
        score = round(wave_efficiency(output_blocks * splits, sms * tiles.per_sm) * 20)
        if best is None or score > best[0]:
            best = (score, tiles, splits)
        if output_blocks >= sms:  # fills the SMs unsplit: no smaller tiles
            break
    assert best is not None
    _, tiles, splits = best
    zblocks = max(1, min(nz, _MAX_GRID_YZ // splits))
    grid = (math.ceil(n / tiles.bn), max(1, min(math.ceil(m / tiles.bm), _MAX_GRID_YZ)),
            zblocks * splits)
    return Plan(tiles, splits, grid)


# ---- the GEMM launcher shared by matmul, linear and conv2d ---------------------

def _address(x: Array) -> int:
    if isinstance(x, numpy.ndarray):
        return x.__array_interface__["data"][0]
    return x.data.ptr  # CuPy


_VECTOR, _ASYNC = 2, 4  # load mode bits (cuda/matmul.cu: TC_MODE_*)


def _mode(rows_stride: int, k_stride: int, batch_strides: tuple, vec: int, *xs: Array) -> int:
    """The kernel's load mode of one operand (and of its prologue's aux, same strides):
    bit 0 walks the row (m or n) dim with consecutive threads (it is the contiguous one),
    bit 1 allows vector loads of ``vec`` elements (stride 1 along the walk, every other
    stride and the bases aligned)."""
    along_row = rows_stride == 1 and k_stride != 1
    unit, other = (rows_stride, k_stride) if along_row else (k_stride, rows_stride)
    aligned = (vec > 1 and unit == 1 and other % vec == 0
               and all(s % vec == 0 for s in batch_strides)
               and all(_address(x) % (vec * x.itemsize) == 0 for x in xs))
    return int(along_row) | (_VECTOR if aligned else 0)


_counters = threading.local()


def _tile_counters(backend: Backend, count: int) -> Array:
    """At least ``count`` zeroed uint32 counters for the split GEMM's tiles: one buffer per
    (thread, launcher, device), allocated zeroed once and grown when too short; each split
    launch leaves the counters it used at 0 again (cuda/matmul.cu: the last block of a tile
    resets it). Per thread, so that launches from several threads (on the emulator, or on
    each thread's stream) never share a counter."""
    xp = backend.xp
    device = 0 if xp is numpy else xp.cuda.runtime.getDevice()
    key = (id(backend.kernel_launcher), device)
    table = _counters.__dict__.setdefault("buffers", {})
    buffer = table.get(key)
    if buffer is None or buffer.size < count:
        buffer = table[key] = xp.zeros(max(count, 256), numpy.uint32)
    return buffer


@dataclass(frozen=True)
class _Geometry:
    """What a GEMM launch derives from its operands' layout (not their contents): the plan,
    the kernel and the integer arguments, the workspace and counters it needs."""
    plan: Plan
    kernel: str
    sizes: tuple  # m, n, k, the strides and batch geometry, splits (int64 arguments)
    modes: tuple  # a_mode, b_mode, c_vec (int32 arguments)
    workspace: int  # accumulator elements of the split partials (0: none)
    counters: int  # tile counters of a split launch
    acc: type  # the accumulation dtype


# _Geometry by layout key (see gemm): a training step's GEMMs repeat their shapes, so the
# Python of planning a launch runs once per layout. Bounded: cleared when it grows past
# _GEOMETRIES_KEPT (rare layouts stay correct, they are only planned again).
_geometries: dict = {}
_GEOMETRIES_KEPT = 4096


def gemm(backend: Backend, a: Array, b: Array, c: Array, *, bias: Array | None = None,
         bias_mode: int = BIAS_NONE, act: int = ACTIVATIONS[None], aux: Array | None = None,
         a_act: int = ACTIVATIONS[None], db: Array | None = None) -> Array:
    """``c = act(a' @ b + bias)`` on the kernel backend ``backend``, a' = a · act'(aux)
    (``a_act``, the prologue; a' = a without it), and ``db`` = the row sums of a' (Σ_k).

    ``a`` (*batch, M, K) and ``b`` (*batch, K, N): views of one dtype with the same
    batch shape (broadcast views, stride 0, welcome). ``c`` (*cbatch, M, N): C-contiguous,
    same dtype; ``cbatch`` is ``batch`` with some dims reduced (size 1 there, or leading
    dims dropped): the products over those dims are summed into ``c``. ``aux``: the
    shape and element strides of ``a``. ``db``: C-contiguous, (*cbatch, M), not with
    a reduction batch. The kernels are this family's (cuda/matmul.cu) whichever operator
    calls; :func:`plan` picks the tiles and the K splits.
    """
    xp = backend.xp
    launcher = backend.kernel_launcher
    # The layout: shapes, strides, the bases' alignment (vector loads), the launcher's SMs.
    key = (c.dtype, a.shape, a.strides, b.shape, b.strides, c.shape, _address(a) % 16,
           _address(b) % 16, _address(c) % 16,
           None if aux is None else (aux.shape, aux.strides, _address(aux) % 16),
           db is None, sm_count(launcher), launcher.tensor_cores, _precision)
    geometry = _geometries.get(key)
    if geometry is None:
        if aux is not None and (aux.shape != a.shape
                                or _layout.element_strides(aux) != _layout.element_strides(a)):
            raise ValueError("gemm: aux must have the shape and strides of a")
        geometry = _geometry(launcher, a, b, c, aux, db)
        if isinstance(geometry, str):  # the layouts that take copies or a separate sum
            return _gemm_rearranged(geometry, backend, a, b, c, bias, bias_mode, act, aux,
                                    a_act, db)
        if geometry is not None:
            if len(_geometries) >= _GEOMETRIES_KEPT:
                _geometries.clear()
            _geometries[key] = geometry
    if geometry is None:  # an empty product
        return c
    p = geometry.plan
    # Pointers a launch does not read or write are given ``c`` (never dereferenced).
    ws = (xp.empty(geometry.workspace, geometry.acc) if geometry.workspace
          else c if c.dtype == geometry.acc else xp.empty(0, geometry.acc))
    counts = _tile_counters(backend, geometry.counters)
    i64, i32 = numpy.int64, numpy.int32
    args = (a, b, c, c if bias is None else bias, c if aux is None else aux,
            c if db is None else db, ws, counts, *geometry.sizes, *geometry.modes,
            i32(BIAS_NONE if bias is None else bias_mode), i32(act),
            i32(ACTIVATIONS[None] if aux is None else a_act), i32(db is not None))
    launcher.launch(FAMILY, geometry.kernel, p.grid, (p.tiles.threads,), args)
    return c


def _geometry(launcher: Any, a: Array, b: Array, c: Array, aux: Array | None,
              db: Array | None) -> _Geometry | str | None:
    """The launch geometry of :func:`gemm`'s operands; None for an empty product; "copy"
    when more than two kept batch dims need contiguous copies, "sum" when interleaved
    reduced batch dims need the full products summed."""
    batch = tuple(a.shape[:-2])
    m, k = a.shape[-2:]
    n = b.shape[-1]
    cbatch = tuple(c.shape[:-2])
    lead = len(batch) - len(cbatch)
    sa, sb = _layout.element_strides(a), _layout.element_strides(b)
    kept = [i for i in range(len(batch)) if i >= lead and cbatch[i - lead] == batch[i]]
    reduced = [i for i in range(len(batch)) if i not in kept]
    kept_dims, (ka, kb) = _layout.coalesce([batch[i] for i in kept], [sa[i] for i in kept],
                                           [sb[i] for i in kept])
    red_dims, (rda, rdb) = _layout.coalesce([batch[i] for i in reduced],
                                            [sa[i] for i in reduced], [sb[i] for i in reduced])
    if db is not None and red_dims:
        raise ValueError("gemm: row sums (db) with a reduction batch")
    if len(kept_dims) > 2:
        return "copy"
    if len(red_dims) > 1:
        return "sum"
    nz = math.prod(kept_dims)
    if nz == 0 or m == 0 or n == 0:
        return None
    nz2 = kept_dims[-1] if kept_dims else 1
    za1, za2 = ([0, 0] + ka)[-2:]
    zb1, zb2 = ([0, 0] + kb)[-2:]
    nr = red_dims[0] if red_dims else 1
    ra, rb = (rda[0], rdb[0]) if red_dims else (0, 0)
    sam, sak = sa[-2:]
    sbk, sbn = sb[-2:]
    dtype = numpy.dtype(c.dtype)
    # TF32 when asked for and both operands stage K-major (gemm_tc_f32 has no m- or
    # n-contiguous tiles: cuda/matmul.cu)
    tf32 = (_precision == "high" and not (sam == 1 and sak != 1)
            and not (sbn == 1 and sbk != 1))
    p = plan(launcher, dtype, m, n, k, nz, nr, tf32)
    vec = p.tiles.vec
    a_mode = _mode(sam, sak, (za1, za2, ra), vec, *((a,) if aux is None else (a, aux)))
    b_mode = _mode(sbn, sbk, (zb1, zb2, rb), vec, b)
    if p.tiles.kernel == "gemm_tc":
        # cp.async (bit 2) for an operand that allows 16-byte vectors (contiguous along its
        # inner dim, every stride and base aligned) and has no prologue to apply; the
        # epilogue's stores are 4 values (8 bytes) wide.
        a_mode |= _ASYNC if a_mode & _VECTOR and aux is None else 0
        b_mode |= _ASYNC if b_mode & _VECTOR else 0
        c_vec = int(n % 4 == 0 and _address(c) % (4 * c.itemsize) == 0)
    else:
        store = p.tiles.store  # C's rows take vectors of ``store`` elements
        c_vec = int(n % store == 0 and _address(c) % (store * c.itemsize) == 0)
    acc = numpy.float64 if dtype == numpy.float64 else numpy.float32
    rows = nz * m if db is not None else 0
    i64, i32 = numpy.int64, numpy.int32
    sizes = tuple(i64(v) for v in (m, n, k, sam, sak, sbk, sbn, nz, nz2, za1, za2, zb1, zb2,
                                   nr, ra, rb, p.splits))
    return _Geometry(p, kernels.kernel_name(p.tiles.kernel, dtype), sizes,
                     (i32(a_mode), i32(b_mode), i32(c_vec)),
                     p.splits * (nz * m * n + rows) if p.splits > 1 else 0,
                     p.grid[0] * math.ceil(m / p.tiles.bm) * nz if p.splits > 1 else 1, acc)


def _gemm_rearranged(how: str, backend: Backend, a: Array, b: Array, c: Array,
                     bias: Array | None, bias_mode: int, act: int, aux: Array | None,
                     a_act: int, db: Array | None) -> Array:
    """:func:`gemm` of the layouts its kernel does not take directly: "copy" (contiguous
    copies make every kept batch dim one), "sum" (full products, then summed over the
    interleaved reduced dims)."""
    xp = backend.xp
    if how == "copy":
        return gemm(backend, xp.ascontiguousarray(a), xp.ascontiguousarray(b), c, bias=bias,
                    bias_mode=bias_mode, act=act,
                    aux=None if aux is None else xp.ascontiguousarray(aux), a_act=a_act, db=db)
    full = xp.empty(tuple(a.shape[:-2]) + (a.shape[-2], b.shape[-1]), c.dtype)
    gemm(backend, a, b, full, aux=aux, a_act=a_act)
    return sum_to(backend, full, c)


def sum_to(backend: Backend, g: Array, out: Array) -> Array:
    """:func:`gpuops.ops.reduction.sum_to_shape` on the kernel backend ``backend``, 16-bit
    floats summed in float32 (the reduction kernels have no 16-bit variant; float32
    accumulation is what the GEMM does too)."""
    if numpy.dtype(g.dtype) not in SIXTEEN_BIT_DTYPES:
        return sum_to_shape(backend, g, out)
    wide = backend.xp.empty(out.shape, numpy.float32)
    sum_to_shape(backend, g.astype(numpy.float32), wide)
    out[...] = wide
    return out


def _check_activation(op: str, activation: Any) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"{op}: activation must be one of None, 'relu', 'sigmoid', 'tanh'; "
                         f"got {activation!r}")


# ---- matmul: y = x1 @ x2; gx1 = gy @ x2ᵀ, gx2 = x1ᵀ @ gy (summed over broadcast batches) ----
# NumPy computes with numpy.matmul; the kernels read the (batch-broadcast, transposed)
# operands through strides, and sum a gradient's broadcast batches inside the GEMM.

def _matmul_shapes(op: str, x1: Array, x2: Array) -> tuple:
    """(batch shape, M, K, N) of x1 @ x2 (a 1-d x1 as (1, K), a 1-d x2 as (K, 1)), or
    ValueError naming ``op`` and the shapes."""
    if x1.ndim < 1 or x2.ndim < 1:
        raise ValueError(f"{op}: x1 and x2 need at least 1 dim, got shapes {tuple(x1.shape)} "
                         f"and {tuple(x2.shape)}")
    s1 = tuple(x1.shape) if x1.ndim > 1 else (1,) + tuple(x1.shape)
    s2 = tuple(x2.shape) if x2.ndim > 1 else tuple(x2.shape) + (1,)
    if s1[-1] != s2[-2]:
        raise ValueError(f"{op}: shapes {tuple(x1.shape)} and {tuple(x2.shape)} do not match "
                         f"for a matrix product (x1.shape[-1] = {x1.shape[-1]} != "
                         f"x2.shape[{-2 if x2.ndim > 1 else 0}] = {s2[-2]})")
    try:
        batch = _layout.broadcast_shape(op, s1[:-2], s2[:-2])
    except ValueError:
        raise ValueError(f"{op}: batch dims of {tuple(x1.shape)} and {tuple(x2.shape)} "
                         "do not broadcast") from None
    return batch, s1[-2], s1[-1], s2[-1]


def _result_shape(x1: Array, x2: Array, batch: tuple, m: int, n: int) -> tuple:
    """batch + (m, n) without the unit axes of a 1-d x1 (m) or x2 (n), as NumPy's matmul."""
    return batch + ((m,) if x1.ndim > 1 else ()) + ((n,) if x2.ndim > 1 else ())


def _as_matrices(xp: Any, x1: Array, x2: Array, *results: Array) -> tuple:
    """x1 and x2 as matrices (a 1-d x1 a row, a 1-d x2 a column) and ``results`` (of the
    product's shape: y, gy) with those unit axes back: views, no copies."""
    if x2.ndim == 1:
        x2 = x2[:, None]
        results = tuple(xp.expand_dims(r, -1) for r in results)
    if x1.ndim == 1:
        x1 = x1[None, :]
        results = tuple(xp.expand_dims(r, -2) for r in results)
    return (x1, x2, *results)


def _matmul_cpu(x1: Array, x2: Array, y: Array) -> None:
    numpy.matmul(x1, x2, out=y)  # NumPy's own 1-d rules


def _matmul_gpu(call: Call, x1: Array, x2: Array, y: Array) -> None:
    x1, x2, y = _as_matrices(call.xp, x1, x2, y)
    batch, (m, k), n = y.shape[:-2], x1.shape[-2:], x2.shape[-1]
    a = call.xp.broadcast_to(x1.astype(call.dtype, copy=False), batch + (m, k))
    b = call.xp.broadcast_to(x2.astype(call.dtype, copy=False), batch + (k, n))
    gemm(call.backend, a, b, y)


# The gradients get x1, x2, y, gy as matrices (_as_matrices) and write gx through a view with
# the unit axis of a 1-d operand back (``unit``: -2 for a 1-d x1, -1 for a 1-d x2, else None).

def _matmul_wrt_x1_cpu(x1: Array, x2: Array, y: Array, gy: Array, gx1: Array,
                       unit: int | None) -> None:
    gx1 = gx1 if unit is None else numpy.expand_dims(gx1, unit)
    sum_to_shape(NUMPY, numpy.matmul(gy, numpy.swapaxes(x2, -1, -2)), gx1)


def _matmul_wrt_x1_gpu(call: Call, x1: Array, x2: Array, y: Array, gy: Array,
                       gx1: Array, unit: int | None) -> None:
    xp = call.xp
    gx1 = gx1 if unit is None else xp.expand_dims(gx1, unit)
    k, n = x2.shape[-2:]
    x2t = xp.broadcast_to(xp.swapaxes(x2.astype(call.dtype, copy=False), -1, -2),
                          gy.shape[:-2] + (n, k))
    gemm(call.backend, gy.astype(call.dtype, copy=False), x2t, gx1)


def _matmul_wrt_x2_cpu(x1: Array, x2: Array, y: Array, gy: Array, gx2: Array,
                       unit: int | None) -> None:
    gx2 = gx2 if unit is None else numpy.expand_dims(gx2, unit)
    sum_to_shape(NUMPY, numpy.matmul(numpy.swapaxes(x1, -1, -2), gy), gx2)


def _matmul_wrt_x2_gpu(call: Call, x1: Array, x2: Array, y: Array, gy: Array,
                       gx2: Array, unit: int | None) -> None:
    xp = call.xp
    gx2 = gx2 if unit is None else xp.expand_dims(gx2, unit)
    m, k = x1.shape[-2:]
    x1t = xp.broadcast_to(xp.swapaxes(x1.astype(call.dtype, copy=False), -1, -2),
                          gy.shape[:-2] + (k, m))
    gemm(call.backend, x1t, gy.astype(call.dtype, copy=False), gx2)


MATMUL = Signature("matmul", FAMILY, ("x1", "x2"), kernel_dtypes=ALL_FLOAT_DTYPES, strided=True)
_MATMUL_GRADIENT = {k: (Signature(f"matmul_wrt_x{k}", FAMILY, ("x1", "x2", "y", "gy"),
                                  kernel_dtypes=ALL_FLOAT_DTYPES, strided=True), cpu, gpu)
                    for k, cpu, gpu in ((1, _matmul_wrt_x1_cpu, _matmul_wrt_x1_gpu),
                                        (2, _matmul_wrt_x2_cpu, _matmul_wrt_x2_gpu))}


def matmul(x1: Array, x2: Array, *, out: Array | None = None) -> Array:
    """y = x1 @ x2 with NumPy semantics (batch dims broadcast; a 1-d x1 is a row, a 1-d x2
    a column, their unit axis removed from y; two 1-d operands give a 0-d y)."""
    call = MATMUL.bind(x1, x2)
    x1, x2 = call.inputs
    batch, m, _, n = _matmul_shapes(call.op, x1, x2)
    return call.run(out, _result_shape(x1, x2, batch, m, n), _matmul_cpu, _matmul_gpu)


def _matmul_gradient(k: int, x1: Array, x2: Array, y: Array, gy: Array,
                     out: Array | None) -> Array:
    signature, cpu, gpu = _MATMUL_GRADIENT[k]
    call = signature.bind(x1, x2, y, gy)
    x1, x2, y, gy = call.inputs
    batch, m, _, n = _matmul_shapes(call.op, x1, x2)
    shape = _result_shape(x1, x2, batch, m, n)
    check_shape(call.op, "y", y, shape)
    check_shape(call.op, "gy", gy, shape)
    xk = (x1, x2)[k - 1]
    unit = None if xk.ndim > 1 else (-2, -1)[k - 1]
    return call.run(out, xk.shape, cpu, gpu, unit, dtype=xk.dtype,
                    inputs=_as_matrices(call.xp, x1, x2, y, gy))


def matmul_wrt_x1(x1: Array, x2: Array, y: Array, gy: Array, *,
                  out: Array | None = None) -> Array:
    """gy @ x2ᵀ, summed over the batch dims along which x1 was broadcast (x1's shape,
    1-d for a 1-d x1)."""
    return _matmul_gradient(1, x1, x2, y, gy, out)


def matmul_wrt_x2(x1: Array, x2: Array, y: Array, gy: Array, *,
                  out: Array | None = None) -> Array:
    """x1ᵀ @ gy, summed over the batch dims along which x2 was broadcast (x2's shape,
    1-d for a 1-d x2)."""
    return _matmul_gradient(2, x1, x2, y, gy, out)


# ---- linear: y = act(x1 @ x2ᵀ + x3), x1's leading dims as rows ----------------------
# Gradients through g = gy · act'(pre-activation), read from y: gx1 = g @ x2,
# gx2 = gᵀ @ x1 (over all rows), gx3 = Σ_rows g.

def _linear_shapes(op: str, x1: Array, x2: Array, x3: Array | None) -> None:
    if x1.ndim < 1 or x2.ndim != 2 or x1.shape[-1] != x2.shape[1]:
        raise ValueError(f"{op}: x1 must be (..., in_features) and x2 (out_features, "
                         f"in_features); got shapes {tuple(x1.shape)} and {tuple(x2.shape)}")
    if x3 is not None and tuple(x3.shape) != (x2.shape[0],):
        raise ValueError(f"{op}: x3 (bias) must have shape ({x2.shape[0]},) to match "
                         f"x2 {tuple(x2.shape)}; got {tuple(x3.shape)}")


def _linear_cpu(x1: Array, x2: Array, x3: Array | None, y: Array,
                activation: str | None) -> None:
    numpy.matmul(x1, x2.T, out=y)
    if x3 is not None:
        y += x3
    if activation == "relu":
        numpy.maximum(y, 0, out=y)
    elif activation == "sigmoid":
        _math.sigmoid(y.copy(), out=y)
    elif activation == "tanh":
        numpy.tanh(y, out=y)


def _linear_gpu(call: Call, x1: Array, x2: Array, x3: Array | None, y: Array,
                activation: str | None) -> None:
    out_features, in_features = x2.shape
    rows = math.prod(x1.shape[:-1])
    a = x1.astype(call.dtype, copy=False).reshape(rows, in_features)
    bias = call.contiguous(x3)
    gemm(call.backend, a, x2.astype(call.dtype, copy=False).T, y.reshape(rows, out_features),
         bias=bias, bias_mode=BIAS_NONE if bias is None else BIAS_PER_COLUMN,
         act=ACTIVATIONS[activation])


def _pre_activation_grad_cpu(y: Array, gy: Array, activation: str | None,
                             dtype: numpy.dtype) -> Array:
    """gy · act'(pre-activation), from the output y (relu 1[y>0], sigmoid y(1-y), tanh 1-y²)."""
    if activation is None:
        return gy.astype(dtype, copy=False)
    g = numpy.empty(y.shape, dtype)  # act'(y), then times gy, in g (no temporaries)
    if activation == "relu":
        numpy.greater(y, 0, out=g)  # 1[y > 0] as 1.0 / 0.0
    elif activation == "sigmoid":
        numpy.subtract(1, y, out=g)
        g *= y
    else:  # tanh
        numpy.multiply(y, y, out=g)
        numpy.subtract(1, g, out=g)
    g *= gy
    return g


def _linear_wrt_x1_cpu(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                       gx1: Array, activation: str | None, dtype: numpy.dtype) -> None:
    numpy.matmul(_pre_activation_grad_cpu(y, gy, activation, dtype), x2, out=gx1)


def _linear_wrt_x2_cpu(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                       gx2: Array, activation: str | None, dtype: numpy.dtype) -> None:
    out_features, in_features = x2.shape
    rows = math.prod(x1.shape[:-1])
    g = _pre_activation_grad_cpu(y, gy, activation, dtype).reshape(rows, out_features)
    numpy.matmul(g.T, x1.reshape(rows, in_features), out=gx2)


def _linear_wrt_x3_cpu(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                       gx3: Array, activation: str | None, dtype: numpy.dtype) -> None:
    g = _pre_activation_grad_cpu(y, gy, activation, dtype)
    sum_to_shape(NUMPY, g.reshape(math.prod(x1.shape[:-1]), x2.shape[0]), gx3)


def _linear_grads_gpu(call: Call, x1: Array, x2: Array, y: Array, gy: Array,
                      gx1: Array | None, gx2: Array | None, gx3: Array | None,
                      activation: str | None) -> None:
    """The gradients asked for (C-contiguous outputs of the call's dtype, None where not
    needed), one GEMM each, gx2 and gx3 one GEMM together; g = gy · act'(y) is the A
    operand's prologue (never stored), gx3 the row sums of the weight GEMM's A = gᵀ."""
    xp, dtype = call.xp, call.dtype
    out_features, in_features = x2.shape
    rows = math.prod(x1.shape[:-1])
    g = gy.astype(dtype, copy=False).reshape(rows, out_features)
    aux, a_act = None, ACTIVATIONS[activation]
    if activation is not None:
        aux = y.astype(dtype, copy=False).reshape(rows, out_features)
        if _layout.element_strides(aux) != _layout.element_strides(g):
            g, aux = call.contiguous(g), call.contiguous(aux)
    gt, auxt = g.T, None if aux is None else aux.T
    if gx1 is not None:
        gemm(call.backend, g, x2.astype(dtype, copy=False), gx1.reshape(rows, in_features),
             aux=aux, a_act=a_act)
    if gx2 is not None and gx2.size:
        gemm(call.backend, gt, x1.astype(dtype, copy=False).reshape(rows, in_features), gx2,
             aux=auxt, a_act=a_act, db=gx3)
    elif gx3 is not None:
        # The bias gradient alone (or with an empty weight): the row sums of the weight
        # GEMM's A operand, with one column of g as B (an (out, 1) product thrown away).
        gemm(call.backend, gt, g[:, :1], xp.empty((out_features, 1), dtype), aux=auxt,
             a_act=a_act, db=gx3)


def _linear_wrt_x1_gpu(call: Call, x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                       gx1: Array, activation: str | None, dtype: numpy.dtype) -> None:
    _linear_grads_gpu(call, x1, x2, y, gy, gx1, None, None, activation)


def _linear_wrt_x2_gpu(call: Call, x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                       gx2: Array, activation: str | None, dtype: numpy.dtype) -> None:
    _linear_grads_gpu(call, x1, x2, y, gy, None, gx2, None, activation)


def _linear_wrt_x3_gpu(call: Call, x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                       gx3: Array, activation: str | None, dtype: numpy.dtype) -> None:
    _linear_grads_gpu(call, x1, x2, y, gy, None, None, gx3, activation)


LINEAR = Signature("linear", FAMILY, ("x1", "x2", "x3"), optional=("x3",),
                   kernel_dtypes=ALL_FLOAT_DTYPES, strided=True)
_LINEAR_GRADIENT = {k: (Signature(f"linear_wrt_x{k}", FAMILY, ("x1", "x2", "x3", "y", "gy"),
                                  optional=("x3",), kernel_dtypes=ALL_FLOAT_DTYPES, strided=True),
                        cpu, gpu)
                    for k, cpu, gpu in ((1, _linear_wrt_x1_cpu, _linear_wrt_x1_gpu),
                                        (2, _linear_wrt_x2_cpu, _linear_wrt_x2_gpu),
                                        (3, _linear_wrt_x3_cpu, _linear_wrt_x3_gpu))}


def linear(x1: Array, x2: Array, x3: Array | None = None, *, activation: str | None = None,
           out: Array | None = None) -> Array:
    """y = act(x1 @ x2ᵀ + x3): x1 (..., in), weight x2 (out, in), bias x3 (out,) or None,
    activation None, "relu", "sigmoid" or "tanh" (fused into the GEMM's epilogue)."""
    _check_activation(LINEAR.op, activation)
    call = LINEAR.bind(x1, x2, x3)
    x1, x2, x3 = call.inputs
    _linear_shapes(call.op, x1, x2, x3)
    return call.run(out, x1.shape[:-1] + (x2.shape[0],), _linear_cpu, _linear_gpu, activation)


def _linear_gradient(k: int, x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array,
                     activation: str | None, out: Array | None) -> Array:
    signature, cpu, gpu = _LINEAR_GRADIENT[k]
    _check_activation(signature.op, activation)
    call = signature.bind(x1, x2, x3, y, gy)
    x1, x2, x3, y, gy = call.inputs
    _linear_shapes(call.op, x1, x2, x3)
    if k == 3 and x3 is None:
        raise ValueError(f"{call.op}: x3 is None (the forward had no bias), so there is no "
                         "bias gradient to compute")
    check_shape(call.op, "y", y, x1.shape[:-1] + (x2.shape[0],))
    check_shape(call.op, "gy", gy, x1.shape[:-1] + (x2.shape[0],))
    xk = (x1, x2, x3)[k - 1]
    return call.run(out, xk.shape, cpu, gpu, activation, call.dtype, dtype=xk.dtype)


def linear_wrt_x1(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, *,
                  activation: str | None = None, out: Array | None = None) -> Array:
    """g @ x2 with g = gy · act'(pre-activation)."""
    return _linear_gradient(1, x1, x2, x3, y, gy, activation, out)


def linear_wrt_x2(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, *,
                  activation: str | None = None, out: Array | None = None) -> Array:
    """gᵀ @ x1 (rows of x1's leading dims summed) with g = gy · act'(pre-activation)."""
    return _linear_gradient(2, x1, x2, x3, y, gy, activation, out)


def linear_wrt_x3(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, *,
                  activation: str | None = None, out: Array | None = None) -> Array:
    """Σ_rows g with g = gy · act'(pre-activation); ValueError when x3 is None."""
    return _linear_gradient(3, x1, x2, x3, y, gy, activation, out)


LINEAR_BACKWARD = Signature("linear_backward", FAMILY, ("x1", "x2", "x3", "y", "gy"),
                            optional=("x3",), kernel_dtypes=ALL_FLOAT_DTYPES, strided=True)


def linear_backward(x1: Array, x2: Array, x3: Array | None, y: Array, gy: Array, *,
                    activation: str | None = None,
                    needs: tuple = (True, True, True)) -> tuple:
    """(gx1, gx2, gx3) of :func:`linear`, None where ``needs`` (one bool per input) says
    no, each equal to its ``linear_wrt_x<k>``. On the kernels one GEMM per needed gradient,
    gx2 and gx3 from one GEMM (act' in the GEMMs' operand prologue, the bias gradient the
    row sums of the weight GEMM's operand); the NumPy backend calls the per-input
    functions. Autograd calls it (the registry's fused ``backward``)."""
    _check_activation(LINEAR_BACKWARD.op, activation)
    if len(needs) != 3:
        raise ValueError(f"{LINEAR_BACKWARD.op}: needs must hold 3 bools (x1, x2, x3), "
                         f"got {needs!r}")
    need1, need2, need3 = (bool(n) for n in needs)
    call = LINEAR_BACKWARD.bind(x1, x2, x3, y, gy)
    if not call.uses_kernels:
        return tuple(grad(x1, x2, x3, y, gy, activation=activation) if need else None
                     for grad, need in zip((linear_wrt_x1, linear_wrt_x2, linear_wrt_x3),
                                           (need1, need2, need3)))
    x1, x2, x3, y, gy = call.inputs
    _linear_shapes(call.op, x1, x2, x3)
    if need3 and x3 is None:
        raise ValueError(f"{call.op}: x3 is None (the forward had no bias), so there is no "
                         "bias gradient to compute")
    check_shape(call.op, "y", y, x1.shape[:-1] + (x2.shape[0],))
    check_shape(call.op, "gy", gy, x1.shape[:-1] + (x2.shape[0],))
    xp, dtype = call.xp, call.dtype
    grads = [xp.empty(x.shape, dtype) if need else None
             for x, need in zip((x1, x2, x3), (need1, need2, need3))]
    gx1, gx2, gx3 = grads
    if any(g is not None and g.size for g in grads):
        _linear_grads_gpu(call, x1, x2, y, gy, gx1, gx2, gx3, activation)
    return tuple(None if g is None else g.astype(x.dtype, copy=False)
                 for g, x in zip(grads, (x1, x2, x3)))


register(FAMILY, matmul, matmul_wrt_x1, matmul_wrt_x2)
register(FAMILY, linear, linear_wrt_x1, linear_wrt_x2, linear_wrt_x3,
         backward=linear_backward)
