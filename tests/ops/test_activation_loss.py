"""Activations and elementwise losses beyond the generic tests: the conventions at the
kinks (relu'(0), leaky_relu'(0), mae'(0)), the tails of sigmoid/tanh/BCE, the 1/n of
the means, gy as a Python float, empty means."""
from __future__ import annotations

import numpy
import pytest

import gpuops
from backends import BACKENDS


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_gradients_at_the_kinks(backend):
    x = numpy.array([-1.0, 0.0, -0.0, 2.0])
    gy = numpy.full(4, 3.0)
    with backend.active():
        dx, dg = backend.asarray(x), backend.asarray(gy)
        relu_g = gpuops.relu_wrt_x1(dx, gpuops.relu(dx), dg)
        leaky_g = gpuops.leaky_relu_wrt_x1(dx, gpuops.leaky_relu(dx, slope=0.1), dg, slope=0.1)
        mae_g = gpuops.mae_wrt_x1(dx, dx, gpuops.mae(dx, dx), 1.0)
    numpy.testing.assert_array_equal(backend.to_numpy(relu_g), [0, 0, 0, 3])  # relu'(0) = 0
    numpy.testing.assert_allclose(backend.to_numpy(leaky_g), [0.3, 0.3, 0.3, 3])
    numpy.testing.assert_array_equal(backend.to_numpy(mae_g), 0.0)  # mae'(x1 = x2) = 0


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_sigmoid_tanh_tails(backend, dtype):
    x = numpy.array([-1000.0, -100.0, -30.0, 30.0, 100.0, 1000.0], dtype)
    x64 = x.astype(numpy.float64)
    with backend.active():
        dx = backend.asarray(x)
        ones = backend.asarray(numpy.ones_like(x))
        s = gpuops.sigmoid(dx)
        gs = backend.to_numpy(gpuops.sigmoid_wrt_x1(dx, s, ones))
        t = gpuops.tanh(dx)
        gt = backend.to_numpy(gpuops.tanh_wrt_x1(dx, t, ones))
        s = backend.to_numpy(s)
    assert numpy.isfinite(s).all() and numpy.isfinite(gs).all() and numpy.isfinite(gt).all()
    tiny = numpy.finfo(dtype).tiny  # below it, subnormals carry few digits
    numpy.testing.assert_allclose(s, numpy.exp(-numpy.logaddexp(0, -x64)), rtol=1e-6,
                                  atol=tiny)
    # σ'(±30) = 9.4e-14: not 0, which is what y(1 - y) of a rounded y gives
    e = numpy.exp(-numpy.abs(x64))
    numpy.testing.assert_allclose(gs, e / (1 + e) ** 2, rtol=1e-6, atol=tiny)
    e2 = numpy.exp(-2 * numpy.abs(x64))
    numpy.testing.assert_allclose(gt, 4 * e2 / (1 + e2) ** 2, rtol=1e-6, atol=tiny)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_bce_with_logits_extreme_logits(backend):
    x = numpy.array([-200.0, -50.0, 0.0, 50.0, 200.0], numpy.float32)
    t = numpy.array([1.0, 0.0, 0.5, 1.0, 0.0], numpy.float32)
    with backend.active():
        y = backend.to_numpy(gpuops.bce_with_logits(backend.asarray(x), backend.asarray(t),
                                                    reduction="none"))
    numpy.testing.assert_allclose(y, [200.0, 0.0, numpy.log(2), 0.0, 200.0], rtol=1e-6,
                                  atol=1e-20)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("name", ["mse", "mae", "bce_with_logits"])
def test_mean_is_sum_over_n_and_so_are_gradients(backend, name):
    rng = numpy.random.default_rng(0)
    x1, x2 = rng.standard_normal((7, 9)), rng.uniform(0, 1, (7, 9))
    forward = getattr(gpuops, name)
    with backend.active():
        d1, d2 = backend.asarray(x1), backend.asarray(x2)
        mean, total = forward(d1, d2), forward(d1, d2, reduction="sum")
        for k in (1, 2):
            grad = getattr(gpuops, f"{name}_wrt_x{k}")
            g_mean = backend.to_numpy(grad(d1, d2, mean, 2.0))  # gy as a Python float
            g_sum = backend.to_numpy(grad(d1, d2, total, backend.asarray(numpy.array(2.0)),
                                          reduction="sum"))
            numpy.testing.assert_allclose(g_mean, g_sum / 63, rtol=1e-12)
    numpy.testing.assert_allclose(backend.to_numpy(mean), backend.to_numpy(total) / 63,
                                  rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_mean_of_nothing_is_nan_and_sum_is_zero(backend):
    empty = numpy.zeros((0, 3))
    with backend.active():
        d = backend.asarray(empty)
        assert numpy.isnan(backend.to_numpy(gpuops.mse(d, d)))
        assert backend.to_numpy(gpuops.mae(d, d, reduction="sum")) == 0.0
        assert gpuops.bce_with_logits(d, d, reduction="none").shape == (0, 3)


def test_mse_gradient_has_the_one_over_n_the_seed_drops():
    """Seed 000 gives d mse / dp = 2 (p - t); with the 1/n of its own definition it is
    2 (p - t) / n (checked here against a central difference in float64)."""
    rng = numpy.random.default_rng(1)
    p, t = rng.standard_normal(10), rng.standard_normal(10)
    g = gpuops.mse_wrt_x1(p, t, gpuops.mse(p, t), 1.0)
    numpy.testing.assert_allclose(g, 2 * (p - t) / 10, rtol=1e-12)
    e = numpy.zeros(10)
    e[3] = 1e-6
    numeric = (float(gpuops.mse(p + e, t)) - float(gpuops.mse(p - e, t))) / 2e-6
    assert numeric == pytest.approx(g[3], rel=1e-6)


# ---- bce_with_logits weight / pos_weight (PyTorch's options) --------------------------

@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("w_shape,p_shape", [((6,), (6,)), ((4, 1), None), (None, (6,)),
                                             ((3, 4, 6), (1, 6))])
def test_bce_weight_and_pos_weight_match_torch(backend, reduction, w_shape, p_shape):
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(8)
    x = rng.uniform(-20, 20, (3, 4, 6))
    t = rng.uniform(0, 1, (3, 4, 6))
    w = None if w_shape is None else rng.uniform(0.1, 3.0, w_shape)
    p = None if p_shape is None else rng.uniform(0.1, 5.0, p_shape)
    tx, tt = torch.tensor(x, requires_grad=True), torch.tensor(t, requires_grad=True)
    ty = torch.nn.functional.binary_cross_entropy_with_logits(
        tx, tt, weight=None if w is None else torch.tensor(w),
        pos_weight=None if p is None else torch.tensor(p), reduction=reduction)
    gy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(gy))
    params = {"reduction": reduction, "weight": w, "pos_weight": p}
    with backend.active():
        dx, dt, dgy = backend.asarray(x), backend.asarray(t), backend.asarray(gy)
        y = gpuops.bce_with_logits(dx, dt, **params)
        g1 = gpuops.bce_with_logits_wrt_x1(dx, dt, y, dgy, **params)
        g2 = gpuops.bce_with_logits_wrt_x2(dx, dt, y, dgy, **params)
    numpy.testing.assert_allclose(backend.to_numpy(y), ty.detach().numpy(), rtol=1e-12)
    numpy.testing.assert_allclose(backend.to_numpy(g1), tx.grad.numpy(), rtol=1e-10,
                                  atol=1e-15)
    numpy.testing.assert_allclose(backend.to_numpy(g2), tt.grad.numpy(), rtol=1e-10,
                                  atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_bce_unit_weights_give_the_unweighted_loss(backend):
    rng = numpy.random.default_rng(9)
    x, t = rng.uniform(-30, 30, (5, 7)), rng.uniform(0, 1, (5, 7))
    with backend.active():
        dx, dt = backend.asarray(x), backend.asarray(t)
        ones = backend.asarray(numpy.ones(7))
        for reduction in ("none", "sum"):
            plain = gpuops.bce_with_logits(dx, dt, reduction=reduction)
            unit = gpuops.bce_with_logits(dx, dt, reduction=reduction, weight=ones,
                                          pos_weight=ones)
            numpy.testing.assert_allclose(backend.to_numpy(unit), backend.to_numpy(plain),
                                          rtol=1e-12)
            gy = backend.asarray(numpy.ones(numpy.shape(plain)))
            for k in (1, 2):
                grad = getattr(gpuops, f"bce_with_logits_wrt_x{k}")
                numpy.testing.assert_allclose(
                    backend.to_numpy(grad(dx, dt, plain, gy, reduction=reduction, weight=ones,
                                          pos_weight=ones)),
                    backend.to_numpy(grad(dx, dt, plain, gy, reduction=reduction)),
                    rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_bce_weights_untouched_dtype_and_out_aliasing_them(backend):
    rng = numpy.random.default_rng(10)
    x = rng.uniform(-5, 5, (4, 4)).astype(numpy.float32)
    t = rng.uniform(0, 1, (4, 4)).astype(numpy.float32)
    w64, p64 = rng.uniform(0.5, 2, (4, 4)), rng.uniform(0.5, 4, 4)
    copies = [a.copy() for a in (x, t, w64, p64)]
    with backend.active():
        dx, dt = backend.asarray(x), backend.asarray(t)
        y = gpuops.bce_with_logits(dx, dt, reduction="none", weight=backend.asarray(w64),
                                   pos_weight=backend.asarray(p64))
        assert y.dtype == numpy.float32  # the weights take x1's dtype
        w, p = (backend.asarray(a.astype(numpy.float32)) for a in (w64, p64))
        expected = backend.to_numpy(gpuops.bce_with_logits(dx, dt, reduction="none",
                                                           weight=w.copy(), pos_weight=p))
        assert gpuops.bce_with_logits(dx, dt, reduction="none", weight=w, pos_weight=p,
                                      out=w) is w
        numpy.testing.assert_array_equal(backend.to_numpy(w), expected)
        w = backend.asarray(w64.astype(numpy.float32))
        gy = backend.asarray(numpy.ones((4, 4), numpy.float32))
        expected = backend.to_numpy(gpuops.bce_with_logits_wrt_x2(
            dx, dt, y, gy, reduction="none", weight=w.copy(), pos_weight=p))
        assert gpuops.bce_with_logits_wrt_x2(dx, dt, y, gy, reduction="none", weight=w,
                                             pos_weight=p, out=w) is w
        numpy.testing.assert_array_equal(backend.to_numpy(w), expected)
    for a, b in zip((x, t, w64, p64), copies):
        numpy.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_16bit_mse_mae_range_and_one_rounding(backend):
    """mse/mae of 16-bit inputs: terms in float32, the sum in double, one rounding.
    bfloat16 has float32's exponent: (300 - (-300))^2 = 360000 is finite (float16: inf),
    and a mean over 3 terms is the rounded mean, not a sum of rounded terms."""
    u = numpy.array([300.0, 1.0, 2.0])
    v = numpy.array([-300.0, 0.5, -1.0])
    for dtype in (numpy.float16, gpuops.bfloat16):
        a, b = u.astype(dtype), v.astype(dtype)
        d = a.astype(numpy.float64) - b.astype(numpy.float64)
        with numpy.errstate(over="ignore"), backend.active():
            mse = backend.to_numpy(gpuops.mse(backend.asarray(a), backend.asarray(b)))
            mae = backend.to_numpy(gpuops.mae(backend.asarray(a), backend.asarray(b),
                                              reduction="sum"))
            expected = numpy.array(numpy.mean(d * d)).astype(dtype)
        assert mse.dtype == numpy.dtype(dtype)
        assert mse.tobytes() == expected.tobytes()
        assert mae.tobytes() == numpy.array(numpy.abs(d).sum()).astype(dtype).tobytes()
        assert numpy.isinf(float(mse)) == (dtype == numpy.float16)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_bfloat16_elementwise_contiguous_kernels_match_numpy(backend):
    """The bfloat16 binary kernels on contiguous same-shape operands (the records' small
    16-bit samples broadcast), alpha, and pow's gradient wrt an unbroadcast x2, against
    the NumPy backend (float32 arithmetic, one rounding: equal up to the rounding)."""
    bf16 = gpuops.bfloat16
    rng = numpy.random.default_rng(9)
    a = rng.uniform(0.5, 2.0, (4, 33)).astype(bf16)
    b = rng.uniform(0.5, 2.0, (4, 33)).astype(bf16)
    gy = rng.standard_normal((4, 33)).astype(bf16)
    calls = [(gpuops.add, {}), (gpuops.sub, {}), (gpuops.mul, {}), (gpuops.div, {}),
             (gpuops.add, {"alpha": 0.7}), (gpuops.sub, {"alpha": 1.3})]
    for fn, params in calls:
        want = fn(a, b, **params)
        with backend.active():
            got = backend.to_numpy(fn(backend.asarray(a), backend.asarray(b), **params))
        assert got.dtype == bf16
        numpy.testing.assert_allclose(got.astype(numpy.float64), want.astype(numpy.float64),
                                      rtol=2 ** -8)
    y = gpuops.pow(a, b)
    want = gpuops.pow_wrt_x2(a, b, y, gy)
    with backend.active():
        got = backend.to_numpy(gpuops.pow_wrt_x2(*(backend.asarray(v) for v in (a, b, y, gy))))
    numpy.testing.assert_allclose(got.astype(numpy.float64), want.astype(numpy.float64),
                                  rtol=2 ** -8, atol=1e-6)
