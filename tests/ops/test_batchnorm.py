"""batch_norm beyond its record (training mode): evaluation mode (running_mean=,
running_var=) against closed forms and finite differences, the running-statistics update,
nn.BatchNorm1d / nn.BatchNorm2d, and PyTorch when it is importable."""
from __future__ import annotations

import numpy
import pytest

import gpuops
from backends import BACKENDS
from gpuops import nn
from gpuops.ops.normalization import update_running_stats

F32, F64 = numpy.dtype(numpy.float32), numpy.dtype(numpy.float64)
TOL = {F32: dict(rtol=2e-5, atol=2e-6), F64: dict(rtol=1e-11, atol=1e-12)}


def _data(shape, axis=1, seed=0):
    rng = numpy.random.default_rng(seed)
    C = shape[axis]
    return (2 * rng.standard_normal(shape) + 0.5, rng.uniform(0.5, 1.5, C),
            rng.standard_normal(C), rng.standard_normal(C), rng.uniform(0.2, 3.0, C))


def _view(v, ndim, axis):
    return v.reshape((1,) * axis + (-1,) + (1,) * (ndim - axis - 1))


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("shape,axis", [((4, 3, 5), 1), ((6, 4), 1), ((2, 3, 2, 5), -1),
                                        ((3, 2), 0), ((0, 3), 1)], ids=str)
def test_evaluation_mode_closed_form(backend, dtype, shape, axis):
    x, w, b, rm, rv = _data(shape, axis)
    ax = axis % len(shape)
    eps = 1e-3
    sigma = numpy.sqrt(_view(rv, x.ndim, ax) + eps)
    xhat = (x - _view(rm, x.ndim, ax)) / sigma
    gy = numpy.random.default_rng(9).standard_normal(shape)
    red = tuple(i for i in range(x.ndim) if i != ax)
    expected = {0: xhat * _view(w, x.ndim, ax) + _view(b, x.ndim, ax),
                1: _view(w, x.ndim, ax) / sigma * gy,
                2: (gy * xhat).sum(axis=red), 3: gy.sum(axis=red)}
    kw = dict(axis=axis, eps=eps)
    with backend.active():
        d = [backend.asarray(a.astype(dtype)) for a in (x, w, b, rm, rv, gy)]
        stats = dict(running_mean=d[3], running_var=d[4])
        y = gpuops.batch_norm(d[0], d[1], d[2], **kw, **stats)
        got = {0: y}
        for k in (1, 2, 3):
            got[k] = getattr(gpuops, f"batch_norm_wrt_x{k}")(d[0], d[1], d[2], y, d[5], **kw,
                                                               **stats)
    for k, value in got.items():
        assert value.dtype == dtype
        numpy.testing.assert_allclose(backend.to_numpy(value), expected[k], **TOL[dtype],
                                      err_msg=f"k={k}")


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_evaluation_mode_finite_differences(backend, k):
    x, w, b, rm, rv = _data((3, 4, 5), seed=1)
    stats = dict(running_mean=rm, running_var=rv, eps=0.01)
    rng = numpy.random.default_rng(k)
    gy = rng.standard_normal(x.shape)
    inputs = [x, w, b]
    v = rng.standard_normal(inputs[k - 1].shape)
    with backend.active():
        dev = [backend.asarray(a) for a in inputs]
        st = {**stats, "running_mean": backend.asarray(rm), "running_var": backend.asarray(rv)}
        y = gpuops.batch_norm(*dev, **st)
        g = backend.to_numpy(getattr(gpuops, f"batch_norm_wrt_x{k}")(*dev, y, backend.asarray(gy),
                                                                     **st))

        def f(shift):
            moved = list(dev)
            moved[k - 1] = backend.asarray(inputs[k - 1] + shift * v)
            return float(numpy.sum(backend.to_numpy(gpuops.batch_norm(*moved, **st)) * gy))

        numeric = (f(1e-6) - f(-1e-6)) / 2e-6
    assert abs(numeric - float(numpy.sum(g * v))) <= 1e-7 + 1e-6 * abs(numeric)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_evaluation_mode_errors(backend):
    x, w, b, rm, rv = _data((2, 3, 4))
    with backend.active():
        x, w, b = backend.asarray(x), backend.asarray(w), backend.asarray(b)
        with pytest.raises(ValueError, match=r"batch_norm: running_mean has shape \(4,\); "
                                             r"expected \(3,\)"):
            gpuops.batch_norm(x, w, b, running_mean=backend.asarray(numpy.zeros(4)),
                              running_var=backend.asarray(rv))
        with pytest.raises(ValueError, match=r"batch_norm_wrt_x2: running_var has shape"):
            gpuops.batch_norm_wrt_x2(x, w, b, x, x, running_mean=backend.asarray(rm),
                                     running_var=backend.asarray(numpy.ones((3, 1))))
        with pytest.raises(TypeError, match="batch_norm: running_var must be a NumPy or CuPy"):
            gpuops.batch_norm(x, w, b, running_mean=backend.asarray(rm), running_var=[1, 2, 3])
        with pytest.raises(ValueError, match="running_mean is given without running_var"):
            gpuops.batch_norm(x, w, b, running_mean=backend.asarray(rm))


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_split_reduction_is_deterministic_and_accurate(backend):
    """A per-channel count past the kernels' chunk (several partial sums per channel), a
    large common offset: the same bits on every call, the float64 statistics."""
    rng = numpy.random.default_rng(4)
    x = (1e4 + rng.standard_normal((8, 3, 1500))).astype(F32)
    w, b = numpy.ones(3, F32), numpy.zeros(3, F32)
    x64 = x.astype(F64)
    mean = x64.mean(axis=(0, 2), keepdims=True)
    expected = (x64 - mean) / numpy.sqrt(((x64 - mean) ** 2).mean(axis=(0, 2), keepdims=True)
                                         + 1e-5)
    with backend.active():
        d = [backend.asarray(a) for a in (x, w, b)]
        first = backend.to_numpy(gpuops.batch_norm(*d))
        again = backend.to_numpy(gpuops.batch_norm(*d))
    numpy.testing.assert_array_equal(first, again)
    # float32 holds the mean 1e4 + μ to half an ulp (4.9e-4); the variance is accurate
    # (E[x²] - E[x]² in float32 would be off by units)
    numpy.testing.assert_allclose(first, expected, atol=1.5e-3)
    numpy.testing.assert_allclose(first.astype(F64).std(axis=(0, 2)), 1.0, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 700)], ids=str)
def test_update_running_stats(backend, shape):
    x, _, _, rm, rv = _data(shape)
    M = x.size // shape[1]
    mean, var = x.mean(axis=(0, 2) if x.ndim == 3 else 0), x.var(axis=(0, 2) if x.ndim == 3 else 0)
    with backend.active():
        drm, drv = backend.asarray(rm.copy()), backend.asarray(rv.copy())
        update_running_stats(backend.asarray(x), drm, drv, momentum=0.25)
        numpy.testing.assert_allclose(backend.to_numpy(drm), 0.75 * rm + 0.25 * mean, rtol=1e-12)
        numpy.testing.assert_allclose(backend.to_numpy(drv), 0.75 * rv + 0.25 * var * M / (M - 1),
                                      rtol=1e-12)
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            update_running_stats(backend.asarray(x[:1, :, :1] if x.ndim == 3 else x[:1]),
                                 drm, drv)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_update_running_stats_bfloat16(backend):
    """bfloat16 x and running statistics: the batch statistics in float32 (512 values near
    1.2 per channel: sums past 256, where bfloat16's spacing is 2), then the update rounded
    once to bfloat16."""
    bf16 = numpy.dtype(gpuops.bfloat16)
    rng = numpy.random.default_rng(9)
    x = (1 + 0.4 * rng.uniform(size=(128, 2, 4))).astype(bf16)
    rm, rv = numpy.array([1.0, 2.0], bf16), numpy.array([0.5, 0.25], bf16)
    x64, rm64, rv64 = x.astype(F64), rm.astype(F64), rv.astype(F64)
    mean, var = x64.mean(axis=(0, 2)), x64.var(axis=(0, 2))
    with backend.active():
        drm, drv = backend.asarray(rm.copy()), backend.asarray(rv.copy())
        update_running_stats(backend.asarray(x), drm, drv, momentum=0.25)
        got_m, got_v = backend.to_numpy(drm), backend.to_numpy(drv)
    assert got_m.dtype == bf16 and got_v.dtype == bf16
    u = 2.0 ** -8
    numpy.testing.assert_allclose(got_m.astype(F64), 0.75 * rm64 + 0.25 * mean, rtol=u)
    numpy.testing.assert_allclose(got_v.astype(F64), 0.75 * rv64 + 0.25 * var * 512 / 511,
                                  rtol=u)


# ---- nn.BatchNorm1d / nn.BatchNorm2d --------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("layer,shape", [(nn.BatchNorm1d, (6, 3)), (nn.BatchNorm1d, (4, 3, 5)),
                                         (nn.BatchNorm2d, (2, 3, 4, 5))], ids=str)
def test_layer_running_statistics(backend, layer, shape):
    rng = numpy.random.default_rng(0)
    bn = layer(3, momentum=0.2)
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    red = tuple(i for i in range(len(shape)) if i != 1)
    M = numpy.prod(shape) // 3
    rm, rv = numpy.zeros(3), numpy.ones(3)
    with backend.active():
        for step in range(3):
            x = (rng.standard_normal(shape) * (step + 1) + step).astype(F32)
            y = bn(gpuops.Tensor(backend.asarray(x)))
            xm = x.astype(F64)
            mean, var = xm.mean(axis=red), xm.var(axis=red)
            rm = 0.8 * rm + 0.2 * mean
            rv = 0.8 * rv + 0.2 * var * M / (M - 1)
            expected = (xm - _view(mean, x.ndim, 1)) / numpy.sqrt(_view(var, x.ndim, 1) + 1e-5)
            numpy.testing.assert_allclose(backend.to_numpy(y.data), expected, rtol=1e-4,
                                          atol=1e-5)
        assert bn.num_batches_tracked == 3
        numpy.testing.assert_allclose(bn.running_mean, rm, rtol=1e-5, atol=1e-6)
        numpy.testing.assert_allclose(bn.running_var, rv, rtol=1e-5, atol=1e-6)
        bn.eval()
        x = rng.standard_normal(shape).astype(F32)
        y = bn(gpuops.Tensor(backend.asarray(x)))
        expected = (x - _view(rm, x.ndim, 1)) / numpy.sqrt(_view(rv, x.ndim, 1) + 1e-5)
        numpy.testing.assert_allclose(backend.to_numpy(y.data), expected, rtol=1e-4, atol=1e-5)
        assert bn.num_batches_tracked == 3  # evaluation updates nothing


def test_layer_momentum_none_is_a_cumulative_average():
    rng = numpy.random.default_rng(1)
    bn = nn.BatchNorm1d(2, momentum=None, dtype=F64)
    xs = [rng.standard_normal((5, 2)) + i for i in range(4)]
    for x in xs:
        bn(gpuops.Tensor(x))
    numpy.testing.assert_allclose(bn.running_mean, numpy.mean([x.mean(0) for x in xs], 0),
                                  rtol=1e-12)
    numpy.testing.assert_allclose(bn.running_var, numpy.mean([x.var(0, ddof=1) for x in xs], 0),
                                  rtol=1e-12)


def test_layer_without_affine_or_running_stats():
    rng = numpy.random.default_rng(2)
    x = rng.standard_normal((4, 3, 6))
    bn = nn.BatchNorm1d(3, affine=False, track_running_stats=False, dtype=F64)
    assert bn.parameters() == [] and bn.state_dict() == {}
    assert bn.running_mean is None and bn.running_var is None
    bn.eval()  # not tracked: the batch statistics in evaluation mode too
    t = gpuops.Tensor(x, requires_grad=True)
    y = bn(t)
    mean, var = x.mean(axis=(0, 2), keepdims=True), x.var(axis=(0, 2), keepdims=True)
    numpy.testing.assert_allclose(y.data, (x - mean) / numpy.sqrt(var + 1e-5), rtol=1e-12)
    y.sum().backward()  # Σ y is constant per channel: zero gradient
    numpy.testing.assert_allclose(t.grad, 0, atol=1e-12)


def test_layer_gradients_flow_to_parameters():
    rng = numpy.random.default_rng(3)
    x = rng.standard_normal((4, 2, 3, 3))
    bn = nn.BatchNorm2d(2, dtype=F64)
    t = gpuops.Tensor(x, requires_grad=True)
    gy = rng.standard_normal(x.shape)
    (bn(t) * gpuops.Tensor(gy)).sum().backward()
    xhat = (x - x.mean(axis=(0, 2, 3), keepdims=True)) / numpy.sqrt(
        x.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    numpy.testing.assert_allclose(bn.weight.grad, (gy * xhat).sum(axis=(0, 2, 3)), rtol=1e-10)
    numpy.testing.assert_allclose(bn.bias.grad, gy.sum(axis=(0, 2, 3)), rtol=1e-10)
    assert t.grad.shape == x.shape


def test_layer_state_dict_round_trip():
    rng = numpy.random.default_rng(4)
    a = nn.Sequential(nn.BatchNorm1d(3))
    for _ in range(2):
        a(gpuops.Tensor(rng.standard_normal((5, 3)).astype(F32)))
    state = a.state_dict()
    assert sorted(state) == ["layers.0.bias", "layers.0.num_batches_tracked",
                             "layers.0.running_mean", "layers.0.running_var", "layers.0.weight"]
    assert state["layers.0.num_batches_tracked"] == 2
    state["layers.0.running_mean"][...] = 99  # a copy: the layer is untouched
    assert not numpy.any(a[0].running_mean == 99)
    b = nn.Sequential(nn.BatchNorm1d(3))
    b.load_state_dict(a.state_dict())
    numpy.testing.assert_array_equal(b[0].running_mean, a[0].running_mean)
    numpy.testing.assert_array_equal(b[0].running_var, a[0].running_var)
    assert b[0].num_batches_tracked == 2
    bad = a.state_dict()
    bad["layers.0.running_var"] = numpy.ones(4)
    with pytest.raises(ValueError, match=r"layers.0.running_var has shape \(4,\)"):
        b.load_state_dict(bad)


def test_layer_errors():
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected 4D input \(got 3D input\)"):
        nn.BatchNorm2d(3)(gpuops.Tensor(numpy.ones((2, 3, 4), F32)))
    with pytest.raises(ValueError, match=r"BatchNorm1d: expected 2D or 3D input \(got 4D"):
        nn.BatchNorm1d(3)(gpuops.Tensor(numpy.ones((2, 3, 4, 1), F32)))
    with pytest.raises(ValueError, match="BatchNorm1d: input has 4 channels"):
        nn.BatchNorm1d(3)(gpuops.Tensor(numpy.ones((2, 4), F32)))
    with pytest.raises(ValueError, match="more than 1 value per channel when training"):
        nn.BatchNorm1d(3)(gpuops.Tensor(numpy.ones((1, 3), F32)))
    nn.BatchNorm1d(3).eval()(gpuops.Tensor(numpy.ones((1, 3), F32)))  # fine in evaluation
    with pytest.raises(ValueError, match=r"BatchNorm1d: eps=0.0 is outside \(0"):
        nn.BatchNorm1d(3, eps=0.0)
    with pytest.raises(ValueError, match="BatchNorm2d: num_features must be >= 1, got 0"):
        nn.BatchNorm2d(0)
    with pytest.raises(TypeError, match="BatchNorm2d: affine must be a bool, got 1"):
        nn.BatchNorm2d(2, affine=1)
    with pytest.raises(TypeError, match="BatchNorm1d: momentum must be"):
        nn.BatchNorm1d(2, momentum="0.1")


# ---- PyTorch ------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("shape", [(4, 3), (3, 4, 5), (2, 3, 4, 5)], ids=str)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_functional_matches_pytorch(backend, shape, training):
    torch = pytest.importorskip("torch")
    x, w, b, rm, rv = _data(shape, seed=5)
    gy = numpy.random.default_rng(6).standard_normal(shape)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.batch_norm(tx, torch.tensor(rm), torch.tensor(rv), tw, tb,
                                        training=training, eps=1e-4)
    ty.backward(torch.tensor(gy))
    stats = {} if training else None
    with backend.active():
        d = [backend.asarray(a) for a in (x, w, b)]
        if stats is None:
            stats = dict(running_mean=backend.asarray(rm), running_var=backend.asarray(rv))
        y = gpuops.batch_norm(*d, eps=1e-4, **stats)
        grads = [backend.to_numpy(getattr(gpuops, f"batch_norm_wrt_x{k}")(
            *d, y, backend.asarray(gy), eps=1e-4, **stats)) for k in (1, 2, 3)]
        y = backend.to_numpy(y)
    numpy.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-11)
    for g, t in zip(grads, (tx, tw, tb)):
        numpy.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("layer,shape", [("BatchNorm1d", (6, 3)), ("BatchNorm1d", (4, 3, 5)),
                                         ("BatchNorm2d", (2, 3, 4, 5))])
def test_layer_matches_pytorch(layer, shape, momentum):
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(7)
    ours = getattr(nn, layer)(3, momentum=momentum, dtype=F64)
    ref = getattr(torch.nn, layer)(3, momentum=momentum).double()
    for step in range(3):
        x = rng.standard_normal(shape) * 2 + step
        gy = rng.standard_normal(shape)
        t = gpuops.Tensor(x, requires_grad=True)
        (ours(t) * gpuops.Tensor(gy)).sum().backward()
        tx = torch.tensor(x, requires_grad=True)
        ty = ref(tx)
        ty.backward(torch.tensor(gy))
        numpy.testing.assert_allclose(t.grad, tx.grad.numpy(), rtol=1e-9, atol=1e-10)
    numpy.testing.assert_allclose(ours.running_mean, ref.running_mean.numpy(), rtol=1e-12)
    numpy.testing.assert_allclose(ours.running_var, ref.running_var.numpy(), rtol=1e-12)
    numpy.testing.assert_allclose(ours.weight.grad, ref.weight.grad.numpy(), rtol=1e-9,
                                  atol=1e-10)
    assert ours.num_batches_tracked == int(ref.num_batches_tracked)
    assert set(ours.state_dict()) == set(ref.state_dict())
    ours.eval()
    ref.eval()
    x = rng.standard_normal(shape)
    numpy.testing.assert_allclose(ours(gpuops.Tensor(x)).data,
                                  ref(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-11)


def test_layer_buffers_through_save_and_load(tmp_path):
    rng = numpy.random.default_rng(8)
    a = nn.Sequential(nn.BatchNorm2d(2))
    a(gpuops.Tensor(rng.standard_normal((3, 2, 2, 2)).astype(F32)))
    gpuops.save(a.state_dict(), tmp_path / "bn.safetensors")
    b = nn.Sequential(nn.BatchNorm2d(2))
    b.load_state_dict(gpuops.load(tmp_path / "bn.safetensors"))
    numpy.testing.assert_array_equal(b[0].running_var, a[0].running_var)
    assert b[0].num_batches_tracked == 1


# ---- 16 bits: float32 statistics and sums, bfloat16's range --------------------------------

BF16 = numpy.dtype(gpuops.bfloat16)


def _bn_reference(x, w, b, gy, mean, var, eps, training):
    """float64 y, gx, gw, gb of batch_norm over axis 1 of a 3-d x."""
    red = (0, 2)
    sigma = numpy.sqrt(var + eps)[None, :, None]
    xhat = (x - mean[None, :, None]) / sigma
    a = w[None, :, None] / sigma
    gx = a * gy
    if training:
        gx = gx - a * gy.mean(axis=red, keepdims=True) \
            - a * xhat * (gy * xhat).mean(axis=red, keepdims=True)
    return (xhat * w[None, :, None] + b[None, :, None], gx, (gy * xhat).sum(axis=red),
            gy.sum(axis=red))


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_bfloat16_statistics_and_sums_in_float32(backend, training):
    """bfloat16 batch_norm over 512 values per channel: channel 0 near 1.2 with gy near
    1.2 (their sums pass 256, where bfloat16's spacing is 2: sums kept in bfloat16 would
    be off by far more than one rounding), channel 1 at 1e5..1e6 (past float16's 65504): y and
    the three gradients within one rounding (2^-8, plus 2^-8 of each result's scale for the
    values that cancel) of the float64 reference on the rounded inputs; evaluation mode
    reads bfloat16 running statistics."""
    rng = numpy.random.default_rng(5)
    x = numpy.stack([1 + 0.4 * rng.uniform(size=(128, 4)),
                     1e5 * (5 + rng.standard_normal((128, 4)))], axis=1)
    gy = 1 + 0.4 * rng.uniform(size=x.shape)
    w, b = numpy.array([0.7, -1.3]), numpy.array([0.25, 2.0])
    rm, rv = numpy.array([1.1, 5e5]), numpy.array([0.02, 1e10])
    x, gy, w, b, rm, rv = (a.astype(BF16).astype(F64) for a in (x, gy, w, b, rm, rv))
    eps = 1e-5
    mean, var = (x.mean(axis=(0, 2)), x.var(axis=(0, 2))) if training else (rm, rv)
    stats = {}
    expected = _bn_reference(x, w, b, gy, mean, var, eps, training)
    with backend.active():
        dev = [backend.asarray(a, dtype=BF16) for a in (x, w, b)]
        if not training:
            stats = {"running_mean": backend.asarray(rm, dtype=BF16),
                     "running_var": backend.asarray(rv, dtype=BF16)}
        y = gpuops.batch_norm(*dev, eps=eps, **stats)
        dgy = backend.asarray(gy, dtype=BF16)
        results = [y] + [getattr(gpuops, f"batch_norm_wrt_x{k}")(*dev, y, dgy, eps=eps, **stats)
                         for k in (1, 2, 3)]
        results = [backend.to_numpy(r) for r in results]
    u = 2.0 ** -8
    for name, actual, want in zip(("y", "gx", "gw", "gb"), results, expected):
        assert actual.dtype == BF16, name
        for c in range(2):  # each channel at its own scale
            at = (slice(None), c) if want.ndim == 3 else c
            numpy.testing.assert_allclose(actual[at].astype(F64), want[at], rtol=2 * u,
                                          atol=u * numpy.abs(want[at]).max(),
                                          err_msg=f"{name}, channel {c}")
