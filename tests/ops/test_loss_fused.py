"""softmax_cross_entropy_with_grad (the training step's forward and backward in one launch)
against the unfused pair softmax_cross_entropy / softmax_cross_entropy_wrt_x1, its launch
count, the determinism of its in-launch total, and the Tensor cross-entropy that uses it
(registry forward_saving / backward); and the 16-bit losses' float32 weights."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy
import pytest

import gpuops
from backends import BACKENDS, KERNEL_BACKENDS
from gpuops import backend as _backend
from gpuops.ops import loss as _loss
from gpuops.ops.loss import softmax_cross_entropy_with_grad
from opinfo import BF16, F16, F32, F64, ROUNDING

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from launch_fakes import RecordingLauncher  # noqa: E402

DTYPES = (F64, F32, F16, BF16)
# (logits shape, reduction, weighted, ignore_index, fraction of ignored rows, smoothing)
CASES = [((8, 5), "mean", False, -100, 0.0, 0.0), ((37, 3), "sum", False, -100, 0.2, 0.0),
         ((16, 40), "mean", True, -1, 0.3, 0.0), ((10, 7), "none", True, -100, 0.2, 0.0),
         ((3, 200), "mean", False, -100, 0.0, 0.0),  # warp E = 8
         ((3, 1100), "mean", True, -100, 0.3, 0.0),  # one block per row
         ((2, 1100), "none", False, -100, 0.0, 0.0), ((2, 40, 3), "mean", True, 1, 0.3, 0.0),
         ((2, 7, 3, 2), "none", False, -100, 0.2, 0.0), ((0, 4), "sum", False, -100, 0.0, 0.0),
         ((0, 4), "mean", False, -100, 0.0, 0.0), ((6, 4), "mean", False, -100, 1.0, 0.0),
         # label smoothing: warp and block rows, weighted or not
         ((8, 5), "mean", False, -100, 0.3, 0.1), ((10, 40), "none", True, -100, 0.2, 0.5),
         ((3, 1100), "sum", True, -1, 0.3, 0.2), ((2, 6, 5), "mean", True, -100, 0.3, 1.0)]


def _case(shape, weighted, ignore, ignored, seed=0, eps=0.0):
    rng = numpy.random.default_rng(seed)
    x = rng.standard_normal(shape) * 3
    labels = rng.integers(0, shape[1], (shape[0], *shape[2:]))
    labels[rng.uniform(size=labels.shape) < ignored] = ignore
    params = {"ignore_index": ignore}
    if weighted:
        params["weight"] = rng.uniform(0.1, 3.0, shape[1])
    if eps:
        params["label_smoothing"] = eps
    return x, labels, params


def _tolerance(dtype):
    """The pair and the fused kernel compute the same float32/float64 terms in another
    order: a few ulps, or one rounding of the 16-bit result."""
    if dtype in (F16, BF16):
        return 2 * ROUNDING[dtype], 1e-6
    return (1e-6, 1e-7) if dtype == F32 else (1e-13, 1e-15)


def _pair(x, labels, reduction, params):
    y = gpuops.softmax_cross_entropy(x, labels, reduction=reduction, **params)
    gy = numpy.ones(y.shape, y.dtype) if reduction == "none" else 1.0
    return y, gpuops.softmax_cross_entropy_wrt_x1(x, labels, y, gy, reduction=reduction,
                                                  **params)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("shape,reduction,weighted,ignore,ignored,eps", CASES,
                         ids=[f"{'x'.join(map(str, c[0]))}-{c[1]}-{'w' if c[2] else 'nw'}"
                              f"-{c[4]}-smoothing{c[5]}" for c in CASES])
def test_with_grad_matches_the_pair(backend, dtype, shape, reduction, weighted, ignore,
                                    ignored, eps):
    x, labels, params = _case(shape, weighted, ignore, ignored, eps=eps)
    x = x.astype(dtype)
    with backend.active():
        dx, dt = backend.asarray(x), backend.asarray(labels)
        y, g = softmax_cross_entropy_with_grad(dx, dt, reduction=reduction, **params)
        y0, g0 = _pair(dx, dt, reduction, params)
    assert y.dtype == y0.dtype == dtype and g.dtype == dtype
    assert y.shape == y0.shape and g.shape == g0.shape == x.shape
    rtol, atol = _tolerance(dtype)
    for got, want in ((y, y0), (g, g0)):
        numpy.testing.assert_allclose(backend.to_numpy(got).astype(F64),
                                      backend.to_numpy(want).astype(F64), rtol=rtol,
                                      atol=atol, equal_nan=True)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("params", [{}, {"label_smoothing": 0.2}])
def test_with_grad_of_probabilities_is_the_pair(backend, params):
    rng = numpy.random.default_rng(4)
    x = rng.standard_normal((6, 5))
    target = rng.uniform(0, 1, (6, 5))
    with backend.active():
        dx, dt = backend.asarray(x), backend.asarray(target)
        for reduction in ("mean", "none"):
            y, g = softmax_cross_entropy_with_grad(dx, dt, reduction=reduction, **params)
            y0, g0 = _pair(dx, dt, reduction, params)
            numpy.testing.assert_array_equal(backend.to_numpy(y), backend.to_numpy(y0))
            numpy.testing.assert_array_equal(backend.to_numpy(g), backend.to_numpy(g0))


def _launches(fn):
    recorder = RecordingLauncher()
    with _backend.use_cpu_launcher(recorder):
        fn()
    return [kernel for _, kernel, *_ in recorder.launches]


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("cols,kernel", [(10, "lanes16"), (1000, "warp32"), (5000, "block")])
def test_with_grad_is_one_launch(reduction, cols, kernel, eps):
    """The pair launches the row losses, their total (not for "none") and the gradient;
    the fused function one kernel (the MLP's 512 x 10 logits: 3 launches -> 1)."""
    rng = numpy.random.default_rng(5)
    x = rng.standard_normal((512, cols)).astype(numpy.float32)
    labels = rng.integers(0, cols, 512)
    params = {"label_smoothing": eps}
    fused = _launches(lambda: softmax_cross_entropy_with_grad(x, labels, reduction=reduction,
                                                              **params))
    pair = _launches(lambda: _pair(x, labels, reduction, params))
    assert fused == [f"softmax_cross_entropy_with_grad_{kernel}_f32"]
    assert len(pair) == (2 if reduction == "none" else 3)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", [F32, BF16], ids=lambda d: d.name)
def test_in_launch_total_is_repeatable_and_the_ticket_wraps(backend, dtype):
    """Many blocks (the emulator's grid cap makes them grid-stride too): the last block's
    sum of the per-block partials is the same bits on every call, the ticket is back to 0
    after each launch, and the total equals the pair's within the summation order."""
    x, labels, params = _case((300, 6), True, -100, 0.1, seed=6)
    x = x.astype(dtype)
    with backend.active():
        dx, dt = backend.asarray(x), backend.asarray(labels)
        results = set()
        for _ in range(3):
            for reduction in ("sum", "mean"):
                y, _g = softmax_cross_entropy_with_grad(dx, dt, reduction=reduction, **params)
                results.add((reduction, backend.to_numpy(y).tobytes()))
        tickets = [backend.to_numpy(t) for t in _loss._tickets.table.values()]
        y0, _ = _pair(dx, dt, "mean", params)
        y, _ = softmax_cross_entropy_with_grad(dx, dt, reduction="mean", **params)
    assert len(results) == 2
    assert tickets and all((t == 0).all() for t in tickets)
    rtol, atol = _tolerance(dtype)
    numpy.testing.assert_allclose(backend.to_numpy(y).astype(F64),
                                  backend.to_numpy(y0).astype(F64), rtol=rtol, atol=atol)


def _tensor_step(x, labels, params, reduction):
    a = gpuops.Tensor(x, requires_grad=True)
    loss = a.cross_entropy(labels, reduction=reduction, **params)
    (loss * 3.0).sum().backward()
    return loss.data, a.grad


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", [F64, F32, BF16], ids=lambda d: d.name)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(16, 10), (2, 5, 3)], ids=["2d", "nd"])
def test_tensor_cross_entropy_backward_is_the_gradient(backend, dtype, reduction, shape):
    """Tensor's cross entropy (the fused forward saving its gradient, the backward scaling
    it by gy) gives the loss and gradient of the operator functions."""
    x, labels, params = _case(shape, True, -100, 0.2, seed=7, eps=0.1 if shape[0] == 2 else 0)
    x = x.astype(dtype)
    with backend.active():
        dx, dt = backend.asarray(x), backend.asarray(labels)
        y, gx = _tensor_step(dx, dt, params, reduction)
        y0 = gpuops.softmax_cross_entropy(dx, dt, reduction=reduction, **params)
        gy = backend.asarray(numpy.full(y0.shape, 3.0), dtype=dtype)
        g0 = gpuops.softmax_cross_entropy_wrt_x1(dx, dt, y0, gy, reduction=reduction,
                                                 **params)
    rtol, atol = _tolerance(dtype)
    numpy.testing.assert_allclose(backend.to_numpy(y).astype(F64),
                                  backend.to_numpy(y0).astype(F64), rtol=rtol, atol=atol)
    if dtype in (F16, BF16):  # the saved gradient is rounded, then scaled: two roundings
        rtol *= 2
    numpy.testing.assert_allclose(backend.to_numpy(gx).astype(F64),
                                  backend.to_numpy(g0).astype(F64), rtol=rtol, atol=atol)


def test_tensor_cross_entropy_launches_one_kernel_each_way():
    """A training step's loss: forward one launch (loss, total and gradient), backward one
    (the saved gradient times gy); the unfused operator took 4 (rows, total, scale,
    gradient) before this fusion."""
    rng = numpy.random.default_rng(8)
    x = rng.standard_normal((512, 10)).astype(numpy.float32)
    labels = rng.integers(0, 10, 512)
    recorder = RecordingLauncher()
    with _backend.use_cpu_launcher(recorder):
        a = gpuops.Tensor(x, requires_grad=True)
        loss = a.cross_entropy(labels)
        forward = [kernel for _, kernel, *_ in recorder.launches]
        loss.backward()
        backward = [kernel for _, kernel, *_ in recorder.launches][len(forward):]
    assert forward == ["softmax_cross_entropy_with_grad_lanes16_f32"]
    assert backward == ["softmax_cross_entropy_scale_grad_f32"]


def test_tensor_cross_entropy_without_gradient_runs_the_plain_forward():
    rng = numpy.random.default_rng(9)
    x = rng.standard_normal((8, 10)).astype(numpy.float32)
    labels = rng.integers(0, 10, 8)
    launches = _launches(lambda: gpuops.Tensor(x).cross_entropy(labels))
    assert launches == ["softmax_cross_entropy_lanes16_f32", "softmax_cross_entropy_total_f32"]


# ---- 16-bit losses: weights stay float32 ---------------------------------------------

def _bce64(x, t, w, p):
    log_sig, log_one_minus = -numpy.logaddexp(0.0, -x), -numpy.logaddexp(0.0, x)
    return -w * (p * t * log_sig + (1 - t) * log_one_minus)


def _ce64(x, labels, w):
    shifted = x - x.max(axis=1, keepdims=True)
    logp = shifted - numpy.log(numpy.exp(shifted).sum(axis=1, keepdims=True))
    return -w[labels] * logp[numpy.arange(len(labels)), labels]


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", [F16, BF16], ids=lambda d: d.name)
def test_16bit_weights_are_float32_and_each_result_one_rounding(backend, dtype):
    """Class weights, weight and pos_weight of a 16-bit call are used in float32 (on the
    emulator its signature check also refuses a 16-bit array for their float pointers):
    each loss term is the float64 value of the 16-bit inputs and the float32 weights
    within one rounding (and float32 arithmetic). The weights 1 + 0.9 u (u the rounding
    of ``dtype``) round to 1 in 16 bits: the bce terms they would give are further off."""
    rng = numpy.random.default_rng(10)
    u = ROUNDING[dtype]
    x = rng.uniform(-4, 4, (8, 5)).astype(dtype)
    t = rng.uniform(0, 1, (8, 5)).astype(dtype)
    w = (numpy.float32(1 + 0.9 * u) * rng.choice([1.0, 2.0, 4.0], 5)).astype(numpy.float32)
    labels = rng.integers(0, 5, 8)
    x64, t64, w64 = (a.astype(F64) for a in (x, t, w))
    w16 = w.astype(dtype).astype(F64)
    with backend.active():
        dx, dt, dw = backend.asarray(x), backend.asarray(t), backend.asarray(w)
        bce = backend.to_numpy(gpuops.bce_with_logits(dx, dt, weight=dw, pos_weight=dw,
                                                      reduction="none"))
        ce = backend.to_numpy(gpuops.softmax_cross_entropy(dx, backend.asarray(labels),
                                                           weight=dw, reduction="none"))
    for got, want in ((bce, _bce64(x64, t64, w64, w64)), (ce, _ce64(x64, labels, w64))):
        assert got.dtype == dtype
        error = numpy.abs(got.astype(F64) - want) / numpy.abs(want)
        assert error.max() <= u * (1 + 1e-3) + 1e-6
    # (the bce terms of 16-bit weight and pos_weight are off by about 1.8 u before rounding)
    rounded = _bce64(x64, t64, w16, w16)
    assert (numpy.abs(rounded - _bce64(x64, t64, w64, w64)) / numpy.abs(rounded)).max() > 1.5 * u


# ---- every row strategy and dtype under the emulator ---------------------------------
# (the records run every sample in float16 but only two small ones in bfloat16, and the
# fused kernel has no record): warp kernels E = 1, 2, 4, 8, 16, 32 and the block kernel.
ROW_COLS = (10, 40, 100, 200, 400, 1000, 1100)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_every_row_kernel_matches_numpy(backend, dtype):
    """The forward, total, gradient and fused kernels of every row geometry, and the fused
    backward's scale, against the NumPy backend (float32/float64 arithmetic there too)."""
    rtol, atol = _tolerance(dtype)
    for cols, eps in [(c, e) for c in ROW_COLS for e in (0.0, 0.2)]:
        x, labels, params = _case((5, cols), True, -100, 0.2, seed=cols, eps=eps)
        x = x.astype(dtype)
        want_y, want_g = _pair(x, labels, "mean", params)
        gy = numpy.full(5, 0.5, dtype)
        want_scaled = gpuops.softmax_cross_entropy_wrt_x1(x, labels, gy, gy,  # (y unread)
                                                          reduction="none", **params)
        with backend.active():
            dx, dt = backend.asarray(x), backend.asarray(labels)
            results = [*softmax_cross_entropy_with_grad(dx, dt, **params),
                       *_pair(dx, dt, "mean", params)]
            y, saved = softmax_cross_entropy_with_grad(dx, dt, reduction="none", **params)
            (scaled, _) = _loss._cross_entropy_backward(
                dx, dt, y, backend.asarray(gy), needs=(True, False), saved=saved,
                reduction="none", **params)
        for got, want in zip([*results, scaled], [want_y, want_g, want_y, want_g,
                                                  want_scaled]):
            numpy.testing.assert_allclose(backend.to_numpy(got).astype(F64),
                                          want.astype(F64), rtol=2 * rtol, atol=atol,
                                          err_msg=f"cols {cols}, label_smoothing {eps}")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
def test_bfloat16_bce_kernels_match_numpy(backend):
    """The bfloat16 bce kernels, weighted and not (the record's two small bfloat16 samples
    reach neither every reduction nor both), against the NumPy backend."""
    rng = numpy.random.default_rng(11)
    x = rng.uniform(-6, 6, (4, 9)).astype(BF16)
    t = rng.uniform(0, 1, (4, 9)).astype(BF16)
    w, p = rng.uniform(0.5, 2, 9), rng.uniform(0.5, 3, (4, 1))
    gy = rng.standard_normal((4, 9)).astype(BF16)
    for reduction, weights in [(r, k) for r in ("none", "sum", "mean") for k in (True, False)]:
        params = {"weight": w, "pos_weight": p, "reduction": reduction} if weights else \
            {"reduction": reduction}
        g = gy if reduction == "none" else numpy.asarray(1.5, BF16)
        want = [gpuops.bce_with_logits(x, t, **params)]
        want += [fn(x, t, want[0], g, **params) for fn in (gpuops.bce_with_logits_wrt_x1,
                                                          gpuops.bce_with_logits_wrt_x2)]
        with backend.active():
            dx, dt, dg = backend.asarray(x), backend.asarray(t), backend.asarray(g)
            y = gpuops.bce_with_logits(dx, dt, **params)
            got = [y] + [fn(dx, dt, y, dg, **params) for fn in (
                gpuops.bce_with_logits_wrt_x1, gpuops.bce_with_logits_wrt_x2)]
        for a, b in zip(got, want):
            assert a.dtype == BF16
            numpy.testing.assert_allclose(backend.to_numpy(a).astype(F64), b.astype(F64),
                                          rtol=2 * ROUNDING[BF16], atol=1e-6)
