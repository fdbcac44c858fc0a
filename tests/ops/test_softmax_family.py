"""softmax, log_softmax and softmax_cross_entropy beyond the generic tests: extreme and
equal logits, labels out of range (CPU: ValueError; kernels: NaN rows, no stray
access), ignore_index, reductions, and agreement between the three operators."""
from __future__ import annotations

import numpy
import pytest

import gpuops
from backends import BACKENDS, KERNEL_BACKENDS

EXTREME = numpy.array([[1e4, -1e4, 0.0, 1e4], [-1e4, -1e4, -1e4, -1e4],
                       [3.0, 3.0, 3.0, 3.0], [1e4, 1e4 - 1, 1e4 - 2, -1e4]])


def _dtypes(backend):
    return [numpy.float32, numpy.float64, numpy.float16, gpuops.bfloat16]


def _tolerance(dtype):
    """(rtol, atol) of a probability: one 16-bit rounding (2^-11 float16, 2^-8 bfloat16)."""
    return {numpy.dtype(numpy.float16): (1e-2, 1e-3),
            numpy.dtype(gpuops.bfloat16): (2e-2, 4e-3)}.get(numpy.dtype(dtype), (1e-5, 1e-7))


def _softmax64(x, axis=-1):
    e = numpy.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("cols", [4, 700, 1500])  # warp kernel, block kernel for f64, block
def test_extreme_and_equal_logits_are_finite_and_exact(backend, cols):
    for dtype in _dtypes(backend):
        # the reference from the rounded inputs (1e4 - 1 is 1e4 in half, max 65504)
        x64 = numpy.tile(EXTREME, (1, cols // 4)).astype(dtype).astype(numpy.float64)
        expected = _softmax64(x64)
        shifted = x64 - x64.max(axis=1, keepdims=True)
        log_expected = shifted - numpy.log(numpy.exp(shifted).sum(axis=1, keepdims=True))
        rtol, atol = _tolerance(dtype)
        with backend.active():
            x = backend.asarray(x64.astype(dtype))
            y = gpuops.softmax(x)
            ly = gpuops.log_softmax(x)
            gy = backend.asarray(numpy.ones_like(x64).astype(dtype))
            g = gpuops.softmax_wrt_x1(x, y, gy)
            lg = gpuops.log_softmax_wrt_x1(x, ly, gy)
        y, ly, g, lg = (backend.to_numpy(v).astype(numpy.float64) for v in (y, ly, g, lg))
        for v in (y, ly, g, lg):
            assert numpy.isfinite(v).all(), f"{dtype}: NaN or Inf"
        numpy.testing.assert_allclose(y, expected, rtol=rtol, atol=atol)
        numpy.testing.assert_allclose(ly, log_expected, rtol=rtol, atol=atol)
        # with gy = 1: softmax's gradient is y (1 - Σ y) = 0, log_softmax's 1 - cols · y
        numpy.testing.assert_allclose(g, 0.0, atol=10 * atol)
        numpy.testing.assert_allclose(lg, 1 - cols * expected, rtol=rtol, atol=cols * atol)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_softmax_rows_sum_to_one_along_any_axis(backend):
    x = numpy.random.default_rng(0).standard_normal((3, 4, 5)) * 5
    for axis in range(-3, 3):
        with backend.active():
            y = backend.to_numpy(gpuops.softmax(backend.asarray(x), axis=axis))
        numpy.testing.assert_allclose(y.sum(axis=axis), 1.0, rtol=1e-12)
        numpy.testing.assert_allclose(y, _softmax64(x, axis), rtol=1e-12)


# ---- cross-entropy --------------------------------------------------------------

def _ce_call(backend, x, t, **params):
    with backend.active():
        dx, dt = backend.asarray(x), backend.asarray(t)
        y = gpuops.softmax_cross_entropy(dx, dt, **params)
        gy = 1.0 if params.get("reduction", "mean") != "none" else backend.asarray(
            numpy.ones(tuple(y.shape), x.dtype))
        g = gpuops.softmax_cross_entropy_wrt_x1(dx, dt, y, gy, **params)
    return backend.to_numpy(y), backend.to_numpy(g)


@pytest.mark.parametrize("bad", [5, -1, -101, 2**40])
def test_labels_out_of_range_raise_on_the_cpu(bad):
    x = numpy.zeros((3, 5))
    t = numpy.array([0, bad, 4])
    with pytest.raises(ValueError, match=rf"softmax_cross_entropy: labels must be in \[0, 5\).*"
                                         rf"{bad}.*rows \[1\]"):
        gpuops.softmax_cross_entropy(x, t)
    with pytest.raises(ValueError, match="softmax_cross_entropy_wrt_x1: labels"):
        gpuops.softmax_cross_entropy_wrt_x1(x, t, numpy.zeros(()), 1.0)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("cols", [5, 1200])  # warp and block kernels
def test_labels_out_of_range_give_nan_rows_on_kernel_backends(backend, cols):
    """The GPU behaviour (run here on the emulator, which checks every access): the bad
    rows' loss and gradient are NaN, the other rows are unaffected."""
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal((4, cols))
    t = numpy.array([1, cols, 2, -7])
    y, g = _ce_call(backend, x, t, reduction="none")
    good, _ = _ce_call(backend, x, numpy.array([1, 0, 2, 0]), reduction="none")
    assert numpy.isnan(y[[1, 3]]).all() and numpy.isnan(g[[1, 3]]).all()
    numpy.testing.assert_allclose(y[[0, 2]], good[[0, 2]], rtol=1e-12)
    assert numpy.isfinite(g[[0, 2]]).all()
    mean, _ = _ce_call(backend, x, t)
    assert numpy.isnan(mean)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("label_dtype", [numpy.int32, numpy.int64])
def test_ignore_index_and_reductions(backend, label_dtype):
    rng = numpy.random.default_rng(1)
    x = rng.standard_normal((6, 4))
    t = numpy.array([0, -100, 3, 2, -100, 1], dtype=label_dtype)
    none, g_none = _ce_call(backend, x, t, reduction="none")
    total, g_sum = _ce_call(backend, x, t, reduction="sum")
    mean, g_mean = _ce_call(backend, x, t, reduction="mean")
    assert none.shape == (6,) and total.shape == () and mean.shape == ()
    assert isinstance(total, numpy.ndarray) and isinstance(mean, numpy.ndarray)
    numpy.testing.assert_array_equal(none[[1, 4]], 0.0)
    numpy.testing.assert_array_equal(g_none[[1, 4]], 0.0)
    logp = numpy.log(_softmax64(x))
    counted = [0, 2, 3, 5]
    numpy.testing.assert_allclose(none[counted], -logp[counted, t[counted]], rtol=1e-12)
    numpy.testing.assert_allclose(total, none.sum(), rtol=1e-12)
    numpy.testing.assert_allclose(mean, none.sum() / 4, rtol=1e-12)  # over counted rows
    numpy.testing.assert_allclose(g_sum, g_none, rtol=1e-12)
    numpy.testing.assert_allclose(g_mean, g_none / 4, rtol=1e-12)
    # another ignore_index: -100 is then an out-of-range label on the CPU
    y, _ = _ce_call(backend, x, numpy.where(t < 0, 3, t).astype(label_dtype), ignore_index=3,
                    reduction="none")
    numpy.testing.assert_array_equal(y[[1, 2, 4]], 0.0)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_every_row_ignored(backend):
    x = numpy.ones((3, 4))
    t = numpy.full(3, -100)
    mean, g = _ce_call(backend, x, t)
    assert numpy.isnan(mean)  # 0 / 0, as PyTorch
    numpy.testing.assert_array_equal(g, 0.0)
    total, _ = _ce_call(backend, x, t, reduction="sum")
    assert total == 0.0


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_cross_entropy_agrees_with_log_softmax(backend):
    """loss = -log_softmax(x)[t], and the fused gradient is log_softmax's gradient with
    gy = -onehot(t) (softmax - onehot, seed 003)."""
    rng = numpy.random.default_rng(2)
    x = rng.standard_normal((9, 1100)) * 4
    t = rng.integers(0, 1100, 9)
    onehot = numpy.zeros_like(x)
    onehot[numpy.arange(9), t] = 1
    loss, g = _ce_call(backend, x, t, reduction="none")
    with backend.active():
        dx = backend.asarray(x)
        ly = gpuops.log_softmax(dx)
        lg = gpuops.log_softmax_wrt_x1(dx, ly, backend.asarray(-onehot))
    numpy.testing.assert_allclose(loss, -backend.to_numpy(ly)[numpy.arange(9), t], rtol=1e-12)
    numpy.testing.assert_allclose(g, backend.to_numpy(lg), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_cross_entropy_extreme_logits(backend):
    x = numpy.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, 0.0]], numpy.float32)
    t = numpy.array([1, 0, 2])
    loss, g = _ce_call(backend, x, t, reduction="none")
    assert numpy.isfinite(loss).all() and numpy.isfinite(g).all()
    numpy.testing.assert_allclose(loss, [2e4, 2e4 + numpy.log(2), numpy.log(3)], rtol=1e-6)


# ---- class weights (PyTorch's cross_entropy(weight=)) -------------------------------

def _torch_ce(x, t, weight, **params):
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    tw = None if weight is None else torch.tensor(weight)
    y = torch.nn.functional.cross_entropy(tx, torch.tensor(t), weight=tw, **params)
    y.backward(torch.ones_like(y))
    return y.detach().numpy(), tx.grad.numpy()


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("cols", [5, 300, 1200])  # warp E=1, warp E=16 (f64), block
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_class_weights_match_torch(backend, cols, reduction):
    rng = numpy.random.default_rng(4)
    x = rng.standard_normal((7, cols)) * 3
    t = rng.integers(0, cols, 7)
    t[[2, 5]] = -100
    weight = rng.uniform(0.1, 3.0, cols)
    y, g = _ce_call(backend, x, t, reduction=reduction, weight=weight)
    ty, tg = _torch_ce(x, t, weight, reduction=reduction)
    numpy.testing.assert_allclose(y, ty, rtol=1e-12)
    numpy.testing.assert_allclose(g, tg, rtol=1e-10, atol=1e-15)
    # all ones: the unweighted values
    y1, g1 = _ce_call(backend, x, t, reduction=reduction, weight=numpy.ones(cols))
    y0, g0 = _ce_call(backend, x, t, reduction=reduction)
    numpy.testing.assert_allclose(y1, y0, rtol=1e-14)
    numpy.testing.assert_allclose(g1, g0, rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_class_weights_mean_divides_by_the_weight_of_counted_rows(backend):
    x = numpy.zeros((4, 3))  # every row's unweighted loss is log 3
    t = numpy.array([0, 2, -100, 2])
    w = numpy.array([2.0, 10.0, 0.5])
    none, _ = _ce_call(backend, x, t, reduction="none", weight=w)
    mean, g = _ce_call(backend, x, t, weight=w)
    numpy.testing.assert_allclose(none, numpy.log(3) * numpy.array([2.0, 0.5, 0.0, 0.5]))
    numpy.testing.assert_allclose(mean, numpy.log(3) * 3.0 / 3.0)  # (2+.5+.5) / (2+.5+.5)
    numpy.testing.assert_array_equal(g[2], 0.0)
    numpy.testing.assert_allclose(g[0], 2.0 / 3.0 * (numpy.full(3, 1 / 3) - [1, 0, 0]))
    # zero total weight: 0/0 = NaN, as PyTorch
    zero, _ = _ce_call(backend, x, t, weight=numpy.zeros(3))
    assert numpy.isnan(zero)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_class_weights_dtype_inputs_untouched_and_out_aliasing_weight(backend):
    rng = numpy.random.default_rng(5)
    x = rng.standard_normal((4, 4)).astype(numpy.float32)
    t = numpy.array([0, 3, 1, 1])
    w64 = rng.uniform(0.5, 2.0, 4)
    copies = (x.copy(), t.copy(), w64.copy())
    y, g = _ce_call(backend, x, t, reduction="none", weight=w64)
    assert y.dtype == numpy.float32 and g.dtype == numpy.float32  # weight takes x1's dtype
    for a, b in zip((x, t, w64), copies):
        numpy.testing.assert_array_equal(a, b)
    w32 = w64.astype(numpy.float32)
    expected, _ = _ce_call(backend, x, t, reduction="none", weight=w32)
    with backend.active():
        dw = backend.asarray(w32)
        result = gpuops.softmax_cross_entropy(backend.asarray(x), backend.asarray(t),
                                              reduction="none", weight=dw, out=dw)
        assert result is dw
        numpy.testing.assert_array_equal(backend.to_numpy(dw), expected)
        # the gradient's out aliasing the weights: x1 (4, 4) and a weight of 16 classes
        w16 = backend.asarray(rng.uniform(0.5, 2.0, 16).astype(numpy.float32))
        x16 = backend.asarray(rng.standard_normal((1, 16)).astype(numpy.float32))
        t16 = backend.asarray(numpy.array([7]))
        y16 = gpuops.softmax_cross_entropy(x16, t16, weight=w16)
        ref = gpuops.softmax_cross_entropy_wrt_x1(x16, t16, y16, 1.0, weight=w16.copy())
        out = w16.reshape(1, 16)
        assert gpuops.softmax_cross_entropy_wrt_x1(x16, t16, y16, 1.0, weight=w16,
                                                   out=out) is out
        numpy.testing.assert_array_equal(backend.to_numpy(out), backend.to_numpy(ref))


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_bfloat16_logits_past_float16_range(backend):
    """bfloat16 has float32's exponent: logits of ±1e30 (inf in float16) are finite, and
    the max subtraction keeps the softmax exact: rows [1e30, 1e30 - spacing, -1e30]."""
    x = numpy.array([[1e30, 0.99e30, -1e30], [-3e38, -3e38, -3e38]]).astype(gpuops.bfloat16)
    x64 = x.astype(numpy.float64)
    expected = _softmax64(x64)
    with backend.active():
        dx = backend.asarray(x)
        y = backend.to_numpy(gpuops.softmax(dx)).astype(numpy.float64)
        ly = backend.to_numpy(gpuops.log_softmax(dx)).astype(numpy.float64)
    # 1, 0, 0 and thirds: the reference rounded once to bfloat16
    rounded = expected.astype(gpuops.bfloat16).astype(numpy.float64)
    numpy.testing.assert_array_equal(y, rounded)
    shifted = x64 - x64.max(axis=1, keepdims=True)
    log_expected = shifted - numpy.log(numpy.exp(shifted).sum(axis=1, keepdims=True))
    assert numpy.isfinite(ly).all() and ly[0, 0] == 0.0
    numpy.testing.assert_array_equal(ly[1], log_expected[1].astype(gpuops.bfloat16))
    numpy.testing.assert_allclose(ly[0, 1:], shifted[0, 1:], rtol=2 ** -8)  # log 1 = 0 aside


# ---- softmax / log_softmax dtype= (PyTorch: x1 cast to dtype first) -------------------

@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("cols", [7, 1500])  # warp and block kernels
def test_dtype_casts_first_and_gradient_casts_back(backend, name, cols):
    rng = numpy.random.default_rng(6)
    forward, grad = getattr(gpuops, name), getattr(gpuops, f"{name}_wrt_x1")
    bf16 = gpuops.bfloat16
    pairs = [(numpy.float32, numpy.float64), (numpy.float64, numpy.float32),
             (numpy.float16, numpy.float32), (numpy.float32, numpy.float16),
             (numpy.float16, numpy.float64), (bf16, numpy.float32), (numpy.float32, bf16),
             (numpy.float16, bf16)]
    for src, dst in pairs:
        x = (rng.standard_normal((3, cols)) * 4).astype(src)
        gy = rng.standard_normal((3, cols)).astype(dst)
        with backend.active():
            dx, dgy = backend.asarray(x), backend.asarray(gy)
            y = forward(dx, dtype=dst, axis=-1)
            ref_y = forward(dx.astype(dst), axis=-1)
            g = grad(dx, y, dgy, dtype=dst)
            ref_g = grad(dx.astype(dst), y, dgy)
            y0 = forward(backend.asarray(x.T), axis=0, dtype=numpy.dtype(dst))  # axis moved
            out = backend.xp().full(x.shape, 7, dtype=src)
            assert grad(dx, y, dgy, dtype=dst, out=out) is out
            assert grad(dx, y, dgy, dtype=dst, out=dx) is dx  # x1 is not read
        assert y.dtype == dst and g.dtype == src, (src, dst)
        numpy.testing.assert_array_equal(backend.to_numpy(y), backend.to_numpy(ref_y))
        if backend.name == "numpy" and numpy.dtype(dst).itemsize == 2:
            # NumPy computes a 16-bit call in float32 and returns gx in src's dtype without
            # the rounding to dst the kernels (and PyTorch) apply before the cast back
            numpy.testing.assert_allclose(backend.to_numpy(g), backend.to_numpy(ref_g),
                                          rtol=2 * _tolerance(dst)[0], atol=1e-6)
        else:
            numpy.testing.assert_array_equal(backend.to_numpy(g),
                                             backend.to_numpy(ref_g).astype(src))
        numpy.testing.assert_allclose(backend.to_numpy(y0).T.astype(numpy.float64),
                                      backend.to_numpy(y).astype(numpy.float64),
                                      rtol=_tolerance(dst)[0], atol=1e-6)
        numpy.testing.assert_array_equal(backend.to_numpy(out), backend.to_numpy(g))
        numpy.testing.assert_array_equal(backend.to_numpy(dx), backend.to_numpy(g))


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_dtype_matches_torch(backend, name):
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(7)
    src = numpy.float16 if backend.name != "numpy" else numpy.float32
    x = (rng.standard_normal((5, 40)) * 4).astype(src)
    gy = rng.standard_normal((5, 40)).astype(numpy.float64)
    tx = torch.tensor(x, requires_grad=True)
    ty = getattr(torch.nn.functional, name)(tx, dim=-1, dtype=torch.float64)
    ty.backward(torch.tensor(gy))
    with backend.active():
        dx = backend.asarray(x)
        y = getattr(gpuops, name)(dx, dtype=numpy.float64)
        g = getattr(gpuops, f"{name}_wrt_x1")(dx, y, backend.asarray(gy), dtype="float64")
    numpy.testing.assert_allclose(backend.to_numpy(y), ty.detach().numpy(), rtol=1e-13)
    assert g.dtype == src
    numpy.testing.assert_array_equal(backend.to_numpy(g), tx.grad.numpy())


def test_dtype_errors():
    x = numpy.ones((2, 3), numpy.float32)
    # float16 is computed on every backend (the NumPy backend widens it to float32)
    assert gpuops.softmax(x, dtype=numpy.float16).dtype == numpy.float16
    with pytest.raises(TypeError, match="log_softmax_wrt_x1: x1 must be a NumPy or CuPy"):
        gpuops.log_softmax_wrt_x1([1.0], x, x, dtype=numpy.float64)
    with pytest.raises(TypeError, match="softmax_wrt_x1: x1 has dtype int64"):
        gpuops.softmax_wrt_x1(numpy.ones((2, 3), numpy.int64), x, x, dtype=numpy.float32)


# ---- logits (N, C, d1, ...) with labels (N, d1, ...) (PyTorch's K-dimensional case) ----

@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("shape", [(3, 5, 4), (2, 7, 3, 2), (2, 1100, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_extra_axes_match_torch(backend, shape, reduction):
    rng = numpy.random.default_rng(11)
    x = rng.standard_normal(shape) * 3
    t = rng.integers(0, shape[1], (shape[0], *shape[2:]))
    t.flat[1] = -100
    weight = rng.uniform(0.1, 3.0, shape[1])
    for w in (None, weight):
        y, g = _ce_call(backend, x, t, reduction=reduction, weight=w)
        ty, tg = _torch_ce(x, t, w, reduction=reduction)
        assert y.shape == ty.shape
        numpy.testing.assert_allclose(y, ty, rtol=1e-12)
        numpy.testing.assert_allclose(g, tg, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_extra_axes_equal_the_rows_and_any_out_layout(backend):
    """(N, C, d) is the (N d, C) rows of the class axis moved last; "none" and the gradient
    are written through non-contiguous out views."""
    rng = numpy.random.default_rng(12)
    x = rng.standard_normal((3, 6, 4))
    t = rng.integers(0, 6, (3, 4))
    rows = numpy.moveaxis(x, 1, -1).reshape(12, 6)
    y_rows, g_rows = _ce_call(backend, rows, t.reshape(-1), reduction="none")
    with backend.active():
        dx, dt = backend.asarray(x), backend.asarray(t)
        out = backend.xp().zeros((4, 3)).T  # a transposed (3, 4) view
        y = gpuops.softmax_cross_entropy(dx, dt, reduction="none", out=out)
        assert y is out
        gy = backend.asarray(numpy.ones((3, 4)))
        gout = backend.xp().zeros((6, 3, 4)).transpose(1, 0, 2)
        g = gpuops.softmax_cross_entropy_wrt_x1(dx, dt, y, gy, reduction="none", out=gout)
        assert g is gout
    numpy.testing.assert_allclose(backend.to_numpy(y), y_rows.reshape(3, 4), rtol=1e-14)
    numpy.testing.assert_allclose(backend.to_numpy(g),
                                  numpy.moveaxis(g_rows.reshape(3, 4, 6), -1, 1), rtol=1e-14)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("op", ["softmax", "log_softmax", "softmax_cross_entropy"])
def test_plus_inf_in_a_long_row_gives_nan_as_in_numpy(backend, op):
    """A +inf logit in a row long enough for the block-per-row kernels (online max and sum):
    NumPy's e^(x - m) is e^(inf - inf) = NaN there, so the row is NaN; the kernels agree."""
    x = numpy.random.default_rng(0).standard_normal((3, 1100))
    x[0, 5] = numpy.inf
    x[1, 7] = x[1, 9] = numpy.inf
    args = (x, numpy.array([1, 2, 3])) if op == "softmax_cross_entropy" else (x,)
    params = {"reduction": "none"} if op == "softmax_cross_entropy" else {}
    with numpy.errstate(all="ignore"):
        expected = getattr(gpuops, op)(*args, **params)
        with backend.active():
            got = backend.to_numpy(getattr(gpuops, op)(*backend.asarrays(args), **params))
    numpy.testing.assert_array_equal(numpy.isnan(got), numpy.isnan(expected))
    finite = ~numpy.isnan(expected)
    numpy.testing.assert_allclose(got[finite], expected[finite], rtol=1e-12, atol=1e-300)


# ---- label_smoothing and probability targets (PyTorch's cross_entropy) -----------------

def _torch_ce_full(x, t, **kw):
    """torch's loss and its gradients wrt the logits and (probability) targets, float64."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    xt = torch.tensor(x, requires_grad=True)
    probs = t.dtype.kind == "f"
    tt = torch.tensor(t, requires_grad=probs)
    if kw.get("weight") is not None:
        kw = dict(kw, weight=torch.tensor(kw["weight"]))
    y = F.cross_entropy(xt, tt, **kw)
    gy = numpy.random.default_rng(5).standard_normal(tuple(y.shape))
    y.backward(torch.tensor(gy))
    return (y.detach().numpy(), gy, xt.grad.numpy(),
            tt.grad.numpy() if probs else None)


def _ce_all(backend, x, t, gy, **kw):
    with backend.active():
        dx, dt, dgy = backend.asarray(x), backend.asarray(t), backend.asarray(gy)
        y = gpuops.softmax_cross_entropy(dx, dt, **kw)
        g1 = gpuops.softmax_cross_entropy_wrt_x1(dx, dt, y, dgy, **kw)
        g2 = (gpuops.softmax_cross_entropy_wrt_x2(dx, dt, y, dgy, **kw)
              if t.dtype.kind == "f" else None)
        return tuple(None if a is None else backend.to_numpy(a) for a in (y, g1, g2))


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("shape", [(6, 5), (2, 7, 3, 2), (3, 1100)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("targets", ["labels", "probabilities"])
def test_label_smoothing_and_probabilities_match_torch(backend, shape, reduction, targets):
    rng = numpy.random.default_rng(21)
    x = rng.standard_normal(shape) * 3
    if targets == "labels":
        t = rng.integers(0, shape[1], (shape[0], *shape[2:]))
        t.flat[1] = -100
    else:
        t = rng.uniform(0, 1, shape)
    weight = rng.uniform(0.1, 3.0, shape[1])
    for w in (None, weight):
        for eps in (0.0, 0.2, 1.0):
            kw = {"reduction": reduction, "weight": w, "label_smoothing": eps}
            ty, gy, tg1, tg2 = _torch_ce_full(x, t, **kw)
            y, g1, g2 = _ce_all(backend, x, t, gy, **kw)
            assert y.shape == ty.shape
            numpy.testing.assert_allclose(y, ty, rtol=1e-11)
            numpy.testing.assert_allclose(g1, tg1, rtol=1e-10, atol=1e-14)
            if targets == "probabilities":
                numpy.testing.assert_allclose(g2, tg2, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_one_hot_probabilities_equal_labels(backend):
    """One-hot float targets give the labels' loss and gradient (no ignored rows; "mean"
    over the rows equals the labels' mean when unweighted), smoothing included."""
    rng = numpy.random.default_rng(22)
    x = rng.standard_normal((7, 5))
    t = rng.integers(0, 5, 7)
    onehot = numpy.eye(5)[t]
    gy = numpy.ones(())
    for eps in (0.0, 0.3):
        y_l, g_l, _ = _ce_all(backend, x, t, gy, label_smoothing=eps)
        y_p, g_p, _ = _ce_all(backend, x, onehot, gy, label_smoothing=eps)
        numpy.testing.assert_allclose(y_p, y_l, rtol=1e-13)
        numpy.testing.assert_allclose(g_p, g_l, rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_probabilities_mean_divides_by_rows_not_weights(backend):
    rng = numpy.random.default_rng(23)
    x = rng.standard_normal((4, 3))
    q = rng.uniform(0, 1, (4, 3))
    w = numpy.array([0.5, 2.0, 4.0])
    with backend.active():
        args = backend.asarrays((x, q))
        total = gpuops.softmax_cross_entropy(*args, weight=backend.asarray(w), reduction="sum")
        mean = gpuops.softmax_cross_entropy(*args, weight=backend.asarray(w))
        empty = gpuops.softmax_cross_entropy(*backend.asarrays((x[:0], q[:0])))
        empty_sum = gpuops.softmax_cross_entropy(*backend.asarrays((x[:0], q[:0])),
                                                 reduction="sum")
    assert float(backend.to_numpy(mean)) == pytest.approx(float(backend.to_numpy(total)) / 4,
                                                          rel=1e-14)
    assert numpy.isnan(backend.to_numpy(empty))  # 0/0, as PyTorch
    assert float(backend.to_numpy(empty_sum)) == 0.0


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_label_smoothing_every_row_ignored_and_labels_out_of_range(backend):
    x = numpy.random.default_rng(24).standard_normal((3, 4))
    ignored = numpy.full(3, -100)
    with backend.active():
        dx = backend.asarray(x)
        y = gpuops.softmax_cross_entropy(dx, backend.asarray(ignored), label_smoothing=0.2)
        s = gpuops.softmax_cross_entropy(dx, backend.asarray(ignored), label_smoothing=0.2,
                                         reduction="sum")
        g = gpuops.softmax_cross_entropy_wrt_x1(dx, backend.asarray(ignored), y, 1.0,
                                                label_smoothing=0.2)
    assert numpy.isnan(backend.to_numpy(y))  # 0/0, as PyTorch
    assert float(backend.to_numpy(s)) == 0.0
    numpy.testing.assert_array_equal(backend.to_numpy(g), numpy.zeros((3, 4)))
    bad = numpy.array([0, 4, 1])
    if backend.name == "numpy":
        with pytest.raises(ValueError, match=r"\[4\] at rows \[1\]"):
            gpuops.softmax_cross_entropy(x, bad, label_smoothing=0.1)
    else:
        with backend.active():
            y = backend.to_numpy(gpuops.softmax_cross_entropy(
                backend.asarray(x), backend.asarray(bad), label_smoothing=0.1, reduction="none"))
        assert numpy.isnan(y[1]) and numpy.isfinite(y[[0, 2]]).all()


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_probabilities_dtypes_inputs_untouched_and_out_aliasing(backend):
    rng = numpy.random.default_rng(25)
    x = rng.standard_normal((5, 4)).astype(numpy.float32)
    q = rng.uniform(0, 1, (5, 4))  # float64 targets: NumPy promotion
    w = rng.uniform(0.5, 2, 4).astype(numpy.float32)
    before = [a.copy() for a in (x, q, w)]
    expected = _ce_all(backend, x.astype(numpy.float64), q, numpy.ones(5),
                       reduction="none", weight=w.astype(numpy.float64))
    with backend.active():
        dx, dq, dw = backend.asarrays((x, q, w))
        y = gpuops.softmax_cross_entropy(dx, dq, weight=dw, reduction="none")
        assert y.dtype == numpy.float64
        gy = backend.asarray(numpy.ones(5))
        g1 = gpuops.softmax_cross_entropy_wrt_x1(dx, dq, y, gy, weight=dw, reduction="none")
        g2 = gpuops.softmax_cross_entropy_wrt_x2(dx, dq, y, gy, weight=dw, reduction="none")
        assert g1.dtype == numpy.float32 and g2.dtype == numpy.float64
        out = backend.asarray(q.copy())  # out= the targets themselves
        g2_alias = gpuops.softmax_cross_entropy_wrt_x2(dx, out, y, gy, weight=dw,
                                                       reduction="none", out=out)
        assert g2_alias is out
        for a, b in zip((dx, dq, dw), before):
            numpy.testing.assert_array_equal(backend.to_numpy(a), b)
    numpy.testing.assert_allclose(backend.to_numpy(y), expected[0], rtol=1e-6)
    numpy.testing.assert_allclose(backend.to_numpy(g1), expected[1], rtol=1e-5, atol=1e-6)
    numpy.testing.assert_allclose(backend.to_numpy(g2), expected[2], rtol=1e-6)
    numpy.testing.assert_allclose(backend.to_numpy(g2_alias), expected[2], rtol=1e-6)


def test_cross_entropy_targets_errors():
    x = numpy.zeros((4, 3))
    t = numpy.array([0, 1, 2, 0])
    y = gpuops.softmax_cross_entropy(x, t)
    with pytest.raises(TypeError, match="wrt_x2: x2 has dtype int64: integer class labels "
                                        "have no gradient"):
        gpuops.softmax_cross_entropy_wrt_x2(x, t, y, 1.0)
    with pytest.raises(ValueError, match="ignore_index is not supported with probability"):
        gpuops.softmax_cross_entropy(x, numpy.ones((4, 3)), ignore_index=0)
    with pytest.raises(TypeError, match=r"shape of x1 \(4, 3\) \(class probabilities\) but "
                                        "dtype int32"):
        gpuops.softmax_cross_entropy(x, numpy.zeros((4, 3), numpy.int32))
    for bad in (1.01, -1e-9, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="label_smoothing must be in"):
            gpuops.softmax_cross_entropy(x, t, label_smoothing=bad)
    with pytest.raises(TypeError, match="label_smoothing must be a float"):
        gpuops.softmax_cross_entropy(x, t, label_smoothing=None)
    # 0 and 1 are accepted, ints too
    for eps in (0, 1, numpy.float32(0.5)):
        assert numpy.isfinite(gpuops.softmax_cross_entropy(x, t, label_smoothing=eps))


def test_tensor_cross_entropy_backward_reaches_probability_targets():
    from gpuops.autograd import Tensor
    rng = numpy.random.default_rng(26)
    x, q = rng.standard_normal((4, 3)), rng.uniform(0, 1, (4, 3))
    tx, tq = Tensor(x, requires_grad=True), Tensor(q, requires_grad=True)
    loss = tx.cross_entropy(tq, label_smoothing=0.1)
    loss.backward()
    y = gpuops.softmax_cross_entropy(x, q, label_smoothing=0.1)
    numpy.testing.assert_allclose(
        tx.grad, gpuops.softmax_cross_entropy_wrt_x1(x, q, y, 1.0, label_smoothing=0.1))
    numpy.testing.assert_allclose(
        tq.grad, gpuops.softmax_cross_entropy_wrt_x2(x, q, y, 1.0, label_smoothing=0.1))
    # integer labels: only the logits get a gradient; smoothing reaches it
    tx2 = Tensor(x, requires_grad=True)
    tx2.cross_entropy(numpy.array([0, 2, 1, 0]), label_smoothing=0.1).backward()
    assert tx2.grad.shape == (4, 3)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("cols", [33, 100, 200, 500])  # warp kernels E = 2, 4, 8, 16
def test_bfloat16_warp_kernels_match_numpy(backend, cols):
    """The bfloat16 warp kernels (the records' small samples reach E = 1 and the block
    kernel) against the NumPy backend: both compute in float32 and round once."""
    bf16 = gpuops.bfloat16
    rng = numpy.random.default_rng(8)
    x = (rng.standard_normal((3, cols)) * 3).astype(bf16)
    gy = rng.standard_normal((3, cols)).astype(bf16)
    for name in ("softmax", "log_softmax"):
        forward, grad = getattr(gpuops, name), getattr(gpuops, f"{name}_wrt_x1")
        y_cpu = forward(x)
        g_cpu = grad(x, y_cpu, gy)
        with backend.active():
            dx = backend.asarray(x)
            y = forward(dx)
            g = grad(dx, backend.asarray(y_cpu), backend.asarray(gy))
        assert y.dtype == g.dtype == bf16
        for got, want in ((y, y_cpu), (g, g_cpu)):
            numpy.testing.assert_allclose(backend.to_numpy(got).astype(numpy.float64),
                                          want.astype(numpy.float64), rtol=2 ** -7, atol=1e-4)
