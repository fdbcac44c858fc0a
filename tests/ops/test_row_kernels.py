"""The row kernels' geometry (gpuops/ops/_rows.py, cuda/rowwise.cuh): several short rows per
warp (W-lane groups), a block per row holding the row in registers or streaming it, 16-byte
or scalar loads, and the softmax over an axis that is not the last (no transposed copies).

Every strategy in every kernel dtype (float16, bfloat16, float32, float64) against the NumPy
backend, for softmax, log_softmax, their gradients and the cross-entropy row kernels (the
records reach bfloat16 only on their two smallest samples); the kernel each shape selects;
and the misaligned rows (a view 1 element into its buffer) that take the scalar loads."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy
import pytest

import gpuops
from backends import KERNEL_BACKENDS
from gpuops import backend as _backend
from gpuops.ops import _rows
from gpuops.ops.loss import softmax_cross_entropy_with_grad
from opinfo import BF16, F16, F32, F64

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from launch_fakes import RecordingLauncher  # noqa: E402

DTYPES = (F64, F32, F16, BF16)
# |error| bounds against the NumPy backend, which computes 16 bits in float32 too: the
# results differ by the order of the sums and one rounding to the dtype.
TOL = {F64: 1e-12, F32: 2e-6, F16: 2e-3, BF16: 1.6e-2}

# (shape, axis, the forward's kernel, the gradient's kernel) in float32
SOFTMAX_SHAPES = [
    ((9, 1), -1, "lanes2", "lanes2"), ((9, 3), -1, "lanes4", "lanes4"),
    ((9, 8), -1, "lanes8", "lanes8"), ((5, 16), -1, "lanes16", "lanes16"),
    ((4, 20), -1, "warp1", "warp1"), ((3, 33), -1, "warp2", "warp2"),
    ((2, 1200), -1, "block", "block"),  # held by the forward and the gradient, 16-byte loads
    ((1, 3001), -1, "block", "block"),  # held by the forward, streamed by the gradient; scalar
    ((1, 4100), -1, "block", "block"),  # streamed by both, 16-byte loads
    ((3, 6, 1), 1, "lanes8", "lanes8"),  # inner 1: rows
    # other axes: a warp per outer position for inner < 32 (inner 3: 10 lanes per inner
    # position; inner 17: one; n = 2 < 10: lanes without elements), else a thread per position
    ((2, 6, 3), 1, "axis_warp", "axis_warp"), ((4, 3, 2), 0, "axis_warp", "axis_warp"),
    ((3, 2, 3), 1, "axis_warp", "axis_warp"), ((5, 9, 5), 1, "axis_warp", "axis_warp"),
    ((2, 5, 17), 1, "axis_warp", "axis_warp"), ((2, 5, 40), 1, "axis", "axis"),
]


def _launches(fn):
    recorder = RecordingLauncher()
    with _backend.use_cpu_launcher(recorder):
        fn()
    return [(kernel, grid, block) for _, kernel, grid, block, *_ in recorder.launches]


@pytest.mark.parametrize("shape,axis,forward,gradient", SOFTMAX_SHAPES)
def test_softmax_kernel_by_shape(shape, axis, forward, gradient):
    x = numpy.ones(shape, F32)
    for name in ("softmax", "log_softmax"):
        op = getattr(gpuops, name)
        grad = getattr(gpuops, f"{name}_wrt_x1")
        assert [k for k, *_ in _launches(lambda: op(x, axis=axis))] == [f"{name}_{forward}_f32"]
        assert [k for k, *_ in _launches(lambda: grad(x, x, x, axis=axis))] == \
            [f"{name}_wrt_x1_{gradient}_f32"]


@pytest.mark.parametrize("cols,threads", [(1025, 96), (1200, 96), (3000, 192), (4096, 256),
                                          (4097, 256), (100000, 256)])
def test_block_threads_hold_the_row(cols, threads):
    """The fewest warps whose registers (held() values each) cover the row, at most 256."""
    ((_, grid, block),) = _launches(lambda: gpuops.softmax(numpy.ones((3, cols), F32)))
    assert (grid, block) == ((3,), (threads,))
    assert _rows.held(F32, 1) == 16 and _rows.held(F64, 1) == 8 and _rows.held(F16, 2) == 8


@pytest.mark.parametrize("rows,cols,width", [(1, 1, 2), (5, 2, 2), (33, 3, 4), (17, 8, 8),
                                             (9, 16, 16)])
def test_short_rows_share_a_warp(rows, cols, width):
    """32 / W rows per warp, 4 warps per block: a grid of ceil(rows / (128 / W)) blocks."""
    ((kernel, grid, block),) = _launches(lambda: gpuops.softmax(numpy.ones((rows, cols), F32)))
    assert kernel == f"softmax_lanes{width}_f32"
    assert (grid, block) == ((-(-rows // (128 // width)),), (128,))


def _softmax_results(x, gy, axis):
    out = []
    for name in ("softmax", "log_softmax"):
        y = getattr(gpuops, name)(x, axis=axis)
        out += [y, getattr(gpuops, f"{name}_wrt_x1")(x, y, gy, axis=axis)]
    return out


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_every_softmax_strategy_matches_numpy(backend, dtype):
    rng = numpy.random.default_rng(3)
    for shape, axis, *_ in SOFTMAX_SHAPES:
        x = (rng.standard_normal(shape) * 3).astype(dtype)
        gy = rng.standard_normal(shape).astype(dtype)
        want = _softmax_results(x, gy, axis)
        with backend.active():
            got = _softmax_results(backend.asarray(x), backend.asarray(gy), axis)
        for k, (g, w) in enumerate(zip(got, want)):
            g = backend.to_numpy(g)
            assert g.dtype == w.dtype
            scale = max(1.0, float(numpy.abs(w.astype(F64)).max()))
            numpy.testing.assert_allclose(g.astype(F64), w.astype(F64), rtol=0,
                                          atol=TOL[dtype] * scale,
                                          err_msg=f"{shape} axis {axis}, result {k}")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", (F32, F16), ids=lambda d: d.name)
def test_misaligned_rows_take_scalar_loads(backend, dtype):
    """A C-contiguous view 1 element into its buffer: no row starts 16-byte aligned, so the
    block kernels take the scalar layout (another summation order than an aligned copy's:
    the values are compared with NumPy's)."""
    rng = numpy.random.default_rng(4)
    cols = 1600  # a multiple of every vector width: only the alignment decides
    base = (rng.standard_normal(2 * cols + 1) * 3).astype(dtype)
    x = base[1:].reshape(2, cols)
    gy = numpy.ascontiguousarray(x[::-1])
    labels = rng.integers(0, cols, 2)
    want = [*_softmax_results(x, gy, -1), *softmax_cross_entropy_with_grad(x, labels)]
    with backend.active():
        dbase = backend.asarray(base)
        dx = dbase[1:].reshape(2, cols)
        got = [*_softmax_results(dx, backend.asarray(gy), -1),
               *softmax_cross_entropy_with_grad(dx, backend.asarray(labels))]
    for g, w in zip(got, want):
        numpy.testing.assert_allclose(backend.to_numpy(g).astype(F64), w.astype(F64), rtol=0,
                                      atol=TOL[dtype] * max(1.0, float(numpy.abs(w).max())))


# (rows, classes): W lanes 2, 4, 8, 16, a warp, a block holding the row (1100: 16-byte
# loads in float32, scalar in 16 bits), a block streaming it (float64 past 2048 classes,
# others past 4096)
CE_SHAPES = [(7, 1), (13, 3), (9, 8), (11, 16), (6, 20), (5, 33), (3, 1100), (2, 3000),
             (1, 4500)]


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_every_cross_entropy_strategy_matches_numpy(backend, dtype):
    """Forward, gradient and the fused kernel, with weights, label smoothing and ignored
    rows (some groups of a warp skip theirs)."""
    rng = numpy.random.default_rng(5)
    for rows, cols in CE_SHAPES:
        x = (rng.standard_normal((rows, cols)) * 3).astype(dtype)
        labels = rng.integers(0, cols, rows)
        labels[rng.uniform(size=rows) < 0.3] = -100
        gy = rng.standard_normal(rows).astype(dtype)
        for params in ({"reduction": "none"},
                       {"reduction": "mean", "weight": rng.uniform(0.5, 2.0, cols),
                        "label_smoothing": 0.2}):
            def run(x, labels, gy):
                y = gpuops.softmax_cross_entropy(x, labels, **params)
                g = gpuops.softmax_cross_entropy_wrt_x1(
                    x, labels, y, gy if params["reduction"] == "none" else gy[:1].reshape(()),
                    **params)
                return [y, g, *softmax_cross_entropy_with_grad(x, labels, **params)]
            want = run(x, labels, gy)
            with backend.active():
                got = run(backend.asarray(x), backend.asarray(labels), backend.asarray(gy))
            for k, (g, w) in enumerate(zip(got, want)):
                scale = max(1.0, float(numpy.abs(w.astype(F64)).max()))
                numpy.testing.assert_allclose(backend.to_numpy(g).astype(F64), w.astype(F64),
                                              rtol=0, atol=TOL[dtype] * scale,
                                              err_msg=f"{rows}x{cols} {params}, result {k}")


@pytest.mark.parametrize("cols,kernel", [(1, "lanes2"), (3, "lanes4"), (8, "lanes8"),
                                         (16, "lanes16"), (17, "warp1"), (3000, "block")])
def test_cross_entropy_kernel_by_classes(cols, kernel):
    x = numpy.ones((4, cols), F32)
    labels = numpy.zeros(4, numpy.int64)
    launched = [k for k, *_ in _launches(lambda: softmax_cross_entropy_with_grad(x, labels))]
    assert launched == [f"softmax_cross_entropy_with_grad_{kernel}_f32"]
