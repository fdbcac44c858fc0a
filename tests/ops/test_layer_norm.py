"""layer_norm and rms_norm beyond their records (tests/records/normalization.py): the row
geometries of the kernels (one warp per row with 1 to 32 registers per lane, a block per row
past 1024 values, 512 for float64; rows not a multiple of 32), a large common offset (the
variance must not cancel away), bitwise repeatable weight gradients over split column sums,
and PyTorch when it is importable."""
from __future__ import annotations

import numpy
import pytest

import gpuops
from backends import BACKENDS, KERNEL_BACKENDS
from records.normalization import _norm_grad_b, _norm_grad_w, _norm_grad_x, _norm_ref

F16, F32, F64 = (numpy.dtype(t) for t in (numpy.float16, numpy.float32, numpy.float64))
EPS = {"layer_norm": 1e-5, "rms_norm": 1e-6}
RMS = {"layer_norm": False, "rms_norm": True}


def _inputs(op, shape, seed=0, offset=0.0):
    rng = numpy.random.default_rng(seed)
    C = shape[-1]
    x = offset + 2 * rng.standard_normal(shape)
    w = rng.uniform(0.5, 1.5, C) * rng.choice([-1.0, 1.0], C)
    return (x, w, rng.standard_normal(C)) if op == "layer_norm" else (x, w)


def _references(op, inputs, gy, eps):
    """The records' float64 references: y, then the gradient wrt each input."""
    rms = RMS[op]
    y = _norm_ref(rms, eps)(*inputs, eps=eps)
    grads = [_norm_grad_x(rms, eps)(*inputs, y, gy, eps=eps),
             _norm_grad_w(rms, eps)(*inputs, y, gy, eps=eps)]
    if not rms:
        grads.append(_norm_grad_b(*inputs, y, gy, eps=eps))
    return y, grads


def _run(backend, op, inputs, gy, dtype, **params):
    """y and every gradient computed on ``backend`` in ``dtype``, as float64 NumPy arrays."""
    forward = gpuops.OPERATORS[op].forward
    grads = gpuops.OPERATORS[op].grads
    with backend.active():
        dev = [backend.asarray(a, dtype=dtype) for a in inputs]
        y = forward(*dev, **params)
        g = backend.asarray(gy, dtype=dtype)
        out = [backend.to_numpy(grads[k](*dev, y, g, **params)) for k in sorted(grads)]
        return backend.to_numpy(y).astype(F64), [a.astype(F64) for a in out]


# Row lengths of each kernel: warp E = 1 (1, 31), 2 (33), 8 (200), 16 (400), 32 (1000;
# float64: the block kernel), block (1025, 1500).
GEOMETRY_COLS = [1, 31, 33, 200, 400, 1000, 1025, 1500]
# (measured on emu: largest errors 2e-3 (float16 y), 7e-7 (float32), 4e-15 (float64))
# bfloat16 (8 bits, u = 2^-8; measured 1.6e-2 y, 3.5e-3 scaled gradients): float16's tolerance
# in units of one rounding (rtol 20 u, atol 10 u)
GEOMETRY_TOL = {F16: dict(rtol=1e-2, atol=5e-3), F32: dict(rtol=1e-5, atol=5e-6),
                F64: dict(rtol=1e-12, atol=1e-12),
                numpy.dtype(gpuops.bfloat16): dict(rtol=20 * 2.0 ** -8, atol=10 * 2.0 ** -8)}


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", [F16, numpy.dtype(gpuops.bfloat16), F32, F64], ids=str)
@pytest.mark.parametrize("cols", GEOMETRY_COLS)
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_row_geometries(backend, dtype, cols, op):
    """Forward and every gradient of rows for each kernel strategy against the float64
    references (on the inputs rounded to ``dtype``); gradients scaled by their size."""
    inputs = tuple(a.astype(dtype).astype(F64) for a in _inputs(op, (3, cols), seed=cols))
    gy = numpy.random.default_rng(1).standard_normal((3, cols)).astype(dtype).astype(F64)
    y_ref, g_ref = _references(op, inputs, gy, EPS[op])
    y, grads = _run(backend, op, inputs, gy, dtype)
    numpy.testing.assert_allclose(y, y_ref, **GEOMETRY_TOL[dtype], err_msg=f"{op} y")
    for k, (got, want) in enumerate(zip(grads, g_ref), 1):
        # relative to the gradient's own scale (sums over 3 rows of values ~ 1; gx ~ 1/σ)
        scale = max(1.0, float(numpy.abs(want).max()))
        numpy.testing.assert_allclose(got / scale, want / scale, **GEOMETRY_TOL[dtype],
                                      err_msg=f"{op}_wrt_x{k}")


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype,offset", [(F32, 1e4), (F64, 1e8)], ids=str)
@pytest.mark.parametrize("cols", [100, 2000])
def test_large_offset_keeps_the_variance(backend, dtype, offset, cols):
    """x = offset + N(0, 1): mean(x²) - mean(x)² would lose every digit of the variance
    (float32 at 1e4: 1e8 ± 1 in 24 bits; float64 at 1e8: 1e16 ± 1 in 53 bits); the
    two-pass (warp, 100) and Welford (block, 2000) statistics keep it."""
    rng = numpy.random.default_rng(3)
    x = (offset + rng.standard_normal((4, cols))).astype(dtype)
    w, b = numpy.ones(cols, dtype), numpy.zeros(cols, dtype)
    x64 = x.astype(F64)  # the values the operator sees, exactly
    expected = _norm_ref(False, 1e-5)(x64, w.astype(F64), b.astype(F64))
    with backend.active():
        y = backend.to_numpy(gpuops.layer_norm(backend.asarray(x), backend.asarray(w),
                                               backend.asarray(b)))
    # the mean's sum rounds at dtype's resolution at the offset (float32 at 1e4: 1e-3) a few
    # times (a tree of sums); the naive formula's variance would be off by ~1
    resolution = offset * numpy.finfo(dtype).eps
    numpy.testing.assert_allclose(y.astype(F64), expected, rtol=0, atol=16 * resolution)
    assert abs(float(y.astype(F64).std(axis=-1).mean()) - 1.0) < 1e-3


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_weight_gradient_is_bitwise_repeatable(backend, op):
    """200 rows: 4 chunks of the column sums per column tile (at least 64 rows each), 40
    columns (a full and a partial tile): the same bits every call, and the right values."""
    inputs = _inputs(op, (200, 40), seed=4)
    gy = numpy.random.default_rng(5).standard_normal((200, 40))
    grads = gpuops.OPERATORS[op].grads
    with backend.active():
        dev = [backend.asarray(a, dtype=F32) for a in inputs]
        y = gpuops.OPERATORS[op].forward(*dev)
        g = backend.asarray(gy, dtype=F32)
        for k in sorted(grads)[1:]:  # the weight (and bias) gradients
            first = backend.to_numpy(grads[k](*dev, y, g))
            for _ in range(2):
                numpy.testing.assert_array_equal(backend.to_numpy(grads[k](*dev, y, g)), first)
            inputs32 = tuple(a.astype(F32).astype(F64) for a in inputs)
            want = _references(op, inputs32, gy.astype(F32).astype(F64), EPS[op])[1][k - 1]
            numpy.testing.assert_allclose(first, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_no_rows_and_empty_rows(backend, op):
    """As PyTorch: no rows give an empty y and zero weight/bias gradients; rows of 0 values
    give empty results of their shapes."""
    for shape in [(0, 4), (2, 0, 4), (3, 0)]:
        inputs = _inputs(op, shape)
        y, grads = _run(backend, op, inputs, numpy.ones(shape), F32)
        assert y.shape == shape
        assert grads[0].shape == shape
        for g in grads[1:]:
            assert g.shape == (shape[-1],)
            numpy.testing.assert_array_equal(g, 0.0)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("shape", [(5,), (4, 6), (2, 3, 7), (3, 1), (2, 3, 100)], ids=str)
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_matches_pytorch(backend, shape, op):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    eps = 1e-3
    inputs = _inputs(op, shape, seed=6)
    gy = numpy.random.default_rng(7).standard_normal(shape)
    tensors = [torch.tensor(a, requires_grad=True) for a in inputs]
    C = shape[-1]
    if op == "layer_norm":
        ty = F.layer_norm(tensors[0], (C,), tensors[1], tensors[2], eps)
    else:
        ty = F.rms_norm(tensors[0], (C,), tensors[1], eps)
    ty.backward(torch.tensor(gy))
    y, grads = _run(backend, op, inputs, gy, F64, eps=eps)
    numpy.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-11)
    for k, (got, t) in enumerate(zip(grads, tensors), 1):
        numpy.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-9, atol=1e-10,
                                      err_msg=f"{op}_wrt_x{k}")


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_default_eps(op):
    """layer_norm's default eps is 1e-5 (torch.nn.LayerNorm), rms_norm's 1e-6 (as asked of
    it; torch's rms_norm default is the dtype's eps): visible on a constant row."""
    x = numpy.full((1, 4), 3.0)
    w, b = numpy.ones(4), numpy.zeros(4)
    if op == "layer_norm":
        numpy.testing.assert_array_equal(gpuops.layer_norm(x, w, b), 0.0)
        # a row of ±1: σ = sqrt(1 + eps)
        y = gpuops.layer_norm(numpy.array([[1.0, -1.0]]), numpy.ones(2), numpy.zeros(2))
        numpy.testing.assert_allclose(y, [[1 / numpy.sqrt(1 + 1e-5), -1 / numpy.sqrt(1 + 1e-5)]],
                                      rtol=1e-15)
    else:
        numpy.testing.assert_allclose(gpuops.rms_norm(x, w), 3 / numpy.sqrt(9 + 1e-6),
                                      rtol=1e-15)


# ---- 16 bits: float32 statistics, bfloat16's range ------------------------------------------

BF16 = numpy.dtype(gpuops.bfloat16)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_bfloat16_rows_in_float32(backend, op):
    """bfloat16 rows of 100 values (the warp kernels with 4 values per lane): two near 1.2
    (their sums pass 64, where bfloat16's spacing is 0.5: sums kept in bfloat16 would be
    off by far more than one rounding), two at 1e15 (past float16's 65504; their squares,
    1e30, fit float32): every result within one rounding (2^-8, plus 2^-8 of the result's
    scale for those that cancel) of the float64 reference on the rounded inputs."""
    rng = numpy.random.default_rng(3)
    inputs = list(_inputs(op, (4, 100)))
    inputs[0] = numpy.concatenate([1 + 0.4 * rng.uniform(size=(2, 100)),
                                   1e15 * (3 + rng.standard_normal((2, 100)))])
    inputs = [a.astype(BF16).astype(F64) for a in inputs]
    gy = rng.standard_normal((4, 100)).astype(BF16).astype(F64)
    y_ref, grads_ref = _references(op, inputs, gy, EPS[op])
    y, grads = _run(backend, op, inputs, gy, BF16)
    u = 2.0 ** -8
    for actual, expected in [(y, y_ref), *zip(grads, grads_ref)]:
        assert numpy.isfinite(actual).all()
        numpy.testing.assert_allclose(actual, expected, rtol=2 * u,
                                      atol=u * numpy.abs(expected).max())
