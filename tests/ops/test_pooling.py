"""max_pool2d / avg_pool2d beyond the generic record tests: the first-maximum rule for
ties, padding that is never the maximum, NaN, the average's divisor in ceil mode, dilated
windows without input elements, unbatched inputs, and (when PyTorch is installed) agreement
with torch.nn.functional over every stride/padding combination tried, with and without
the options (ceil_mode, dilation, count_include_pad, divisor_override, unbatched)."""
from __future__ import annotations

import itertools

import numpy
import pytest

import gpuops
from backends import BACKENDS


def _pool(backend, name, x, gy, **params):
    with backend.active():
        dx = backend.asarray(x)
        y = getattr(gpuops, name)(dx, **params)
        g = getattr(gpuops, f"{name}_wrt_x1")(dx, y, backend.asarray(gy), **params)
        return backend.to_numpy(y), backend.to_numpy(g)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_ties_send_the_gradient_to_the_first_maximum(backend, dtype):
    x = numpy.ones((1, 1, 4, 4), dtype)
    gy = numpy.arange(1, 10, dtype=dtype).reshape(1, 1, 3, 3)
    y, g = _pool(backend, "max_pool2d", x, gy, kernel_size=2, stride=1)
    numpy.testing.assert_array_equal(y, numpy.ones((1, 1, 3, 3)))
    expected = numpy.zeros((4, 4))
    expected[:3, :3] = gy[0, 0]  # window (oh, ow) starts at (oh, ow): its first element
    numpy.testing.assert_array_equal(g[0, 0], expected)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_overlapping_windows_sum_on_a_shared_maximum(backend):
    x = numpy.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 5.0
    gy = numpy.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    _, g = _pool(backend, "max_pool2d", x, gy, kernel_size=2, stride=1)
    expected = numpy.zeros((3, 3))
    expected[1, 1] = 10.0
    numpy.testing.assert_array_equal(g[0, 0], expected)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("fill", [-1.0, -numpy.inf])
def test_padding_is_never_the_maximum(backend, fill):
    x = numpy.full((1, 1, 2, 2), fill)
    gy = numpy.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    y, g = _pool(backend, "max_pool2d", x, gy, kernel_size=2, padding=1, stride=1)
    numpy.testing.assert_array_equal(y, numpy.full((1, 1, 3, 3), fill))
    # each window's first real element: (0,0) for windows (0,0) (0,1) (1,0) (1,1), ...
    gy2 = gy[0, 0]
    expected = [[gy2[0, 0] + gy2[0, 1] + gy2[1, 0] + gy2[1, 1], gy2[0, 2] + gy2[1, 2]],
                [gy2[2, 0] + gy2[2, 1], gy2[2, 2]]]
    numpy.testing.assert_array_equal(g[0, 0], expected)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_nan_propagates_and_takes_the_gradient(backend):
    x = numpy.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = numpy.nan
    gy = numpy.ones((1, 1, 2, 2))
    y, g = _pool(backend, "max_pool2d", x, gy, kernel_size=2)
    assert numpy.isnan(y[0, 0, 0, 0]) and not numpy.isnan(y[0, 0, 1:, 1:]).any()
    assert g[0, 0, 0, 1] == 1.0 and g[0, 0, 1, 1] == 0.0


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_ceil_mode_windows_past_the_padding_are_not_counted(backend, count_include_pad):
    # 4x4, kernel 3, stride 2, padding 1, ceil_mode: OH = 3; window 2 covers rows 3..5, of
    # which row 3 is input, row 4 padding and row 5 past the padded input (never counted)
    x = numpy.arange(16.0).reshape(1, 1, 4, 4)
    gy = numpy.ones((1, 1, 3, 3))
    y, g = _pool(backend, "avg_pool2d", x, gy, kernel_size=3, stride=2, padding=1,
                 ceil_mode=True, count_include_pad=count_include_pad)
    rows = [3, 3, 2] if count_include_pad else [2, 3, 1]  # per window, likewise columns
    starts, ends = [0, 1, 3], [2, 4, 4]  # the input rows each window reads
    expected = numpy.array([[x[0, 0, starts[a]:ends[a], starts[b]:ends[b]].sum()
                             / (rows[a] * rows[b]) for b in range(3)] for a in range(3)])
    numpy.testing.assert_allclose(y[0, 0], expected, rtol=1e-14)
    expected_g = numpy.zeros((4, 4))
    for a in range(3):
        for b in range(3):
            expected_g[starts[a]:ends[a], starts[b]:ends[b]] += 1.0 / (rows[a] * rows[b])
    numpy.testing.assert_allclose(g[0, 0], expected_g, rtol=1e-14)
    y, _ = _pool(backend, "avg_pool2d", x, gy, kernel_size=3, stride=2, padding=1,
                 ceil_mode=True, count_include_pad=count_include_pad, divisor_override=2)
    numpy.testing.assert_allclose(y[0, 0], expected * numpy.multiply.outer(rows, rows) / 2,
                                  rtol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_dilated_window_without_input_is_minus_inf_and_passes_no_gradient(backend):
    # 2x2, kernel 2, dilation 3, padding 1: the one window reads rows (and columns) -1 and 2
    x = numpy.arange(4.0).reshape(1, 1, 2, 2)
    y, g = _pool(backend, "max_pool2d", x, numpy.ones((1, 1, 1, 1)), kernel_size=2,
                 stride=1, padding=1, dilation=3)
    numpy.testing.assert_array_equal(y, numpy.full((1, 1, 1, 1), -numpy.inf))
    numpy.testing.assert_array_equal(g, numpy.zeros((1, 1, 2, 2)))


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("name, params", [
    ("max_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "dilation": (1, 2),
                    "ceil_mode": True}),
    ("avg_pool2d", {"kernel_size": (2, 3), "stride": (2, 3), "padding": 1, "ceil_mode": True,
                    "count_include_pad": False})])
def test_unbatched_is_a_batch_of_one(backend, name, params):
    rng = numpy.random.default_rng(1)
    x = rng.standard_normal((3, 7, 6))
    y4, g4 = _pool(backend, name, x[None], numpy.ones((1, 3, 4, 3)), **params)
    y3, g3 = _pool(backend, name, x, numpy.ones((3, 4, 3)), **params)
    assert y3.shape == (3, 4, 3) and g3.shape == x.shape
    numpy.testing.assert_array_equal(y3, y4[0])
    numpy.testing.assert_array_equal(g3, g4[0])


def _fits(H, W, k, s, p, d=1, ceil_mode=False):
    """Whether PyTorch accepts the case: padding at most half the kernel, output >= 1."""
    kk, pp, dd = ((v, v) if isinstance(v, int) else v for v in (k, p, d))
    ss = kk if s is None else (s, s) if isinstance(s, int) else s
    if pp[0] > kk[0] // 2 or pp[1] > kk[1] // 2:
        return False
    axes = ((H, kk[0], ss[0], pp[0], dd[0]), (W, kk[1], ss[1], pp[1], dd[1]))
    if any(_size(n, c, t, q, e, ceil_mode) < 1 for n, c, t, q, e in axes):
        return False
    # PyTorch's max_pool2d backward reads out of bounds when a dilated window holds no
    # input element (tested on its own below): left out here
    return all(any(0 <= o * t - q + i * e < n for i in range(c))
               for n, c, t, q, e in axes for o in range(_size(n, c, t, q, e, ceil_mode)))


def _size(n, k, s, p, d, ceil_mode):
    """PyTorch's output size along one axis (an independent transcription)."""
    size = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    return size - 1 if ceil_mode and (size - 1) * s >= n + p else size


def _torch_cases():
    for (H, W), k, s, p in itertools.product([(5, 7), (6, 6), (1, 1), (4, 9)],
                                             [1, 2, 3, (2, 3)], [None, 1, 2, (1, 2), 3],
                                             [0, 1, (0, 1)]):
        if _fits(H, W, k, s, p):
            yield (H, W), k, s, p, {}


def _option_cases(name):
    """Cases of the options beyond the defaults: ceil_mode (both), dilation (max),
    count_include_pad and divisor_override (average), unbatched inputs (both)."""
    options = [{"ceil_mode": True}]
    if name == "max_pool2d":
        options += [{"dilation": 2}, {"dilation": (1, 3)}, {"dilation": (2, 1), "ceil_mode": True}]
    else:
        options += [{"count_include_pad": False}, {"count_include_pad": False, "ceil_mode": True},
                    {"divisor_override": 3}, {"divisor_override": -2, "ceil_mode": True},
                    {"count_include_pad": False, "divisor_override": 5}]
    for (H, W), k, s, p, opts in itertools.product(
            [(5, 7), (6, 6), (1, 1), (4, 9), (2, 3)], [1, 2, 3, (2, 3)], [None, 1, 2, (1, 2), 3],
            [0, 1, (0, 1)], options):
        if _fits(H, W, k, s, p, opts.get("dilation", 1), opts.get("ceil_mode", False)):
            yield (H, W), k, s, p, opts


def _check_against_torch(backend, name, cases, batch=(2,)):
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(0)
    for (H, W), k, s, p, opts in cases:
        x = rng.standard_normal((*batch, 2, H, W))
        x[(0,) * (len(batch) + 1)] = numpy.round(x[(0,) * (len(batch) + 1)])  # ties
        tx = torch.tensor(x, requires_grad=True)
        ty = getattr(torch.nn.functional, name)(tx, k, s, p, **opts)
        gy = rng.standard_normal(tuple(ty.shape))
        ty.backward(torch.tensor(gy))
        y, g = _pool(backend, name, x, gy, kernel_size=k, stride=s, padding=p, **opts)
        where = f"{name} H,W={H},{W} kernel={k} stride={s} padding={p} {opts} batch={batch}"
        assert y.shape == tuple(ty.shape), where
        numpy.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12,
                                      err_msg=where)
        numpy.testing.assert_allclose(g, tx.grad.numpy(), rtol=1e-12, atol=1e-12, err_msg=where)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
def test_matches_pytorch(backend, name):
    cases = list(_torch_cases())
    if backend.name != "numpy":
        cases = cases[::7]  # the emulator is slow: a spread subset
    _check_against_torch(backend, name, cases)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
def test_options_match_pytorch(backend, name):
    cases = list(_option_cases(name))
    if backend.name != "numpy":
        cases = cases[::11]  # the emulator is slow: a spread subset
    _check_against_torch(backend, name, cases)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
def test_unbatched_matches_pytorch(backend, name):
    cases = list(_torch_cases())[::5] + list(_option_cases(name))[::17]
    if backend.name != "numpy":
        cases = cases[::5]
    _check_against_torch(backend, name, cases, batch=())


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype,scale", [(numpy.dtype(numpy.float16), 6e4),
                                         (numpy.dtype(gpuops.bfloat16), 1e30)],
                         ids=["float16", "bfloat16"])
def test_sixteen_bit_windows_in_float32(backend, dtype, scale):
    """16-bit pooling computes in float32 and rounds once: a 2x2 average of values near
    float16's largest (6e4; their sum, 2.4e5, would overflow float16) or at 1e30 (bfloat16
    has float32's range) is the exact float64 mean rounded once (the float32 sum of four
    16-bit values and the division by 4 are exact), bit for bit; the max and the
    gradients (gy/4, gy routed to the maximum) too."""
    rng = numpy.random.default_rng(7)
    x = (scale * rng.uniform(0.9, 1.0, (1, 2, 4, 6))).astype(dtype)
    gy = rng.standard_normal((1, 2, 2, 3)).astype(dtype)
    x64, gy64 = x.astype(numpy.float64), gy.astype(numpy.float64)
    windows = x64.reshape(1, 2, 2, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(1, 2, 2, 3, 4)
    # the gradient goes to each window's first maximum (row-major; bfloat16 rounding ties)
    first = numpy.eye(4)[windows.argmax(axis=-1)] * gy64[..., None]
    for name, y_want, g_want in [
            ("avg_pool2d", windows.mean(axis=-1),
             numpy.repeat(numpy.repeat(gy64 / 4, 2, 2), 2, 3)),
            ("max_pool2d", windows.max(axis=-1),
             first.reshape(1, 2, 2, 3, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(x.shape))]:
        y, g = _pool(backend, name, x, gy, kernel_size=2)
        assert y.dtype == dtype and g.dtype == dtype
        numpy.testing.assert_array_equal(y, y_want.astype(dtype), err_msg=name)
        numpy.testing.assert_array_equal(g, g_want.astype(dtype), err_msg=name)
