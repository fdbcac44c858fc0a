"""conv2d's options beyond the generic record tests: groups (depthwise included) agree with
one convolution per group, "same" keeps the spatial size and pads like PyTorch (the odd one
at the bottom / right), "valid" is padding 0, an unbatched input is a batch of one; and,
when PyTorch is installed, forward and all three gradients match torch.nn.functional.conv2d
over groups, padding strings, unbatched inputs, strides and dilations."""
from __future__ import annotations

import numpy
import pytest

import gpuops
from backends import BACKENDS

_GRADS = ("conv2d_wrt_x1", "conv2d_wrt_x2", "conv2d_wrt_x3")


def _conv(backend, x, w, b, gy=None, **params):
    """y and (when gy is given) the three gradients, as float64 NumPy arrays."""
    with backend.active():
        dx, dw, db = backend.asarray(x), backend.asarray(w), backend.asarray(b)
        y = gpuops.conv2d(dx, dw, db, **params)
        grads = () if gy is None else tuple(
            backend.to_numpy(getattr(gpuops, name)(dx, dw, db, y, backend.asarray(gy), **params))
            for name in _GRADS)
        return (backend.to_numpy(y),) + grads


def _data(rng, xs, ws):
    return rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_groups_are_independent_convolutions(backend):
    rng = numpy.random.default_rng(1)
    x, w, b = _data(rng, (2, 6, 5, 4), (4, 3, 3, 2))
    gy = rng.standard_normal((2, 4, 5, 4))
    y, g1, g2, g3 = _conv(backend, x, w, b, gy, groups=2, padding="same")
    for k in range(2):
        c, o = slice(3 * k, 3 * k + 3), slice(2 * k, 2 * k + 2)
        yk, g1k, g2k, g3k = _conv(backend, x[:, c], w[o], b[o], gy[:, o], padding="same")
        numpy.testing.assert_allclose(y[:, o], yk, rtol=1e-12, atol=1e-12)
        numpy.testing.assert_allclose(g1[:, c], g1k, rtol=1e-12, atol=1e-12)
        numpy.testing.assert_allclose(g2[o], g2k, rtol=1e-12, atol=1e-12)
        numpy.testing.assert_allclose(g3[o], g3k, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_depthwise_is_a_per_channel_correlation(backend):
    x = numpy.arange(2 * 3 * 3, dtype=numpy.float64).reshape(1, 2, 3, 3)
    w = numpy.stack([numpy.ones((1, 2, 2)), -numpy.eye(2)[None]])  # (2, 1, 2, 2)
    (y,) = _conv(backend, x, w, numpy.zeros(2), groups=2)
    c0, c1 = x[0, 0], x[0, 1]
    expected0 = c0[:-1, :-1] + c0[:-1, 1:] + c0[1:, :-1] + c0[1:, 1:]
    expected1 = -(c1[:-1, :-1] + c1[1:, 1:])
    numpy.testing.assert_array_equal(y[0], numpy.stack([expected0, expected1]))


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("kernel,dilation", [((3, 3), 1), ((4, 2), 1), ((2, 3), (3, 2)),
                                             ((1, 1), 1)])
def test_same_keeps_the_size_and_pads_the_odd_one_at_the_end(backend, kernel, dilation):
    rng = numpy.random.default_rng(2)
    x, w, b = _data(rng, (1, 2, 6, 7), (3, 2) + kernel)
    (y,) = _conv(backend, x, w, b, padding="same", dilation=dilation)
    assert y.shape == (1, 3, 6, 7)
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    th, tw = dh * (kernel[0] - 1), dw * (kernel[1] - 1)
    padded = numpy.pad(x, ((0, 0), (0, 0), (th // 2, th - th // 2), (tw // 2, tw - tw // 2)))
    (expected,) = _conv(backend, padded, w, b, dilation=dilation)
    numpy.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_valid_is_padding_zero_and_unbatched_is_a_batch_of_one(backend):
    rng = numpy.random.default_rng(3)
    x, w, b = _data(rng, (3, 6, 5), (4, 3, 3, 2))
    gy = rng.standard_normal((4, 2, 2))
    got = _conv(backend, x, w, b, gy, padding="valid", stride=2)
    batched = _conv(backend, x[None], w, b, gy[None], padding=0, stride=2)
    assert [a.shape for a in got] == [(4, 2, 2), x.shape, w.shape, b.shape]
    for a, e in zip(got, (batched[0][0], batched[1][0], batched[2], batched[3])):
        numpy.testing.assert_array_equal(a, e)


# ---- PyTorch ----------------------------------------------------------------------

_TORCH_CASES = [
    # (x shape, w shape, params)
    ((2, 4, 6, 5), (6, 2, 3, 3), {"groups": 2, "padding": 1}),
    ((2, 3, 7, 6), (3, 1, 3, 3), {"groups": 3, "stride": 2, "dilation": (2, 1)}),
    ((1, 4, 5, 5), (8, 1, 2, 3), {"groups": 4, "padding": "same"}),
    ((2, 6, 5, 6), (4, 3, 4, 2), {"groups": 2, "padding": "same", "dilation": (1, 3)}),
    ((2, 2, 5, 6), (3, 2, 2, 2), {"padding": "same"}),
    ((1, 2, 6, 6), (3, 2, 3, 3), {"padding": "same", "dilation": 2}),
    ((2, 3, 7, 5), (2, 3, 3, 2), {"padding": "valid", "stride": (2, 1)}),
    ((6, 6, 5), (4, 3, 3, 3), {"groups": 2, "padding": "same"}),
    ((2, 5, 5), (2, 1, 3, 3), {"groups": 2, "stride": 2, "padding": (1, 2)}),
    ((3, 5, 4), (5, 3, 2, 2), {"padding": "valid"}),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("case", range(len(_TORCH_CASES)))
def test_matches_pytorch(backend, case):
    torch = pytest.importorskip("torch")
    xs, ws, params = _TORCH_CASES[case]
    rng = numpy.random.default_rng(case)
    x, w, b = _data(rng, xs, ws)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, **params)
    gy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(gy))
    got = _conv(backend, x, w, b, gy, **params)
    expected = [ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()]
    for a, e in zip(got, expected):
        assert a.shape == e.shape
        numpy.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-10)


def test_errors_match_pytorch_rejections():
    """Every call PyTorch rejects for these options, conv2d rejects too (ValueError)."""
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(4)
    calls = [((1, 4, 5, 5), (3, 2, 3, 3), {"groups": 2}),       # O not divisible
             ((1, 3, 5, 5), (4, 1, 3, 3), {"groups": 2}),       # C not divisible
             ((1, 4, 5, 5), (4, 4, 3, 3), {"groups": 2}),       # x2 channels != C / groups
             ((1, 2, 5, 5), (2, 2, 3, 3), {"padding": "same", "stride": 2}),
             ((1, 2, 5, 5), (2, 2, 3, 3), {"padding": "full"}),
             ((1, 2, 2, 2), (2, 2, 3, 3), {"padding": "valid"})]
    for xs, ws, params in calls:
        x, w, b = _data(rng, xs, ws)
        with pytest.raises((RuntimeError, ValueError)):
            torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), **params)
        with pytest.raises(ValueError, match="conv2d"):
            gpuops.conv2d(x, w, b, **params)
