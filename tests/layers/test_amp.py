"""Mixed precision: gpuops.autocast (the policy table, gradients in float32, the cast cache),
GradScaler (torch.amp.GradScaler's rules, a forced overflow), the fused unscale kernel,
float32 master weights of 16-bit parameters (sgd_step/adam_step master_params=, SGD/Adam/
AdamW), nn layers in 16 bits.

References: float64 arithmetic on the 16-bit-rounded values written out below, and
torch.amp.GradScaler itself when torch is importable (CPU).
"""
from __future__ import annotations

import threading

import ml_dtypes
import numpy
import pytest

import gpuops
from gpuops import Tensor, amp, nn
from gpuops.amp import GradScaler, autocast
from gpuops.ops.optim import CHUNK, unscale_grads
from gpuops.optim import SGD, Adam, AdamW
from backends import BACKENDS

BF16 = numpy.dtype(ml_dtypes.bfloat16)
F16 = numpy.dtype(numpy.float16)
HALVES = [pytest.param(BF16, id="bf16"), pytest.param(F16, id="f16")]


def _backend_params():
    for backend in BACKENDS:
        yield pytest.param(backend, id=backend.name, marks=backend.marks)


def _rng(seed=0):
    return numpy.random.default_rng(seed)


def _f32(shape, seed=0):
    return _rng(seed).standard_normal(shape).astype(numpy.float32)


# ---- autocast policy -----------------------------------------------------------------

@pytest.mark.parametrize("half", HALVES)
def test_policy_dtypes(half):
    x = Tensor(_f32((4, 6)))
    w = Tensor(_f32((3, 6), 1), requires_grad=True)
    b = Tensor(_f32((3,), 2), requires_grad=True)
    labels = numpy.array([0, 2, 1, 0])
    with autocast(half):
        assert amp.is_autocast_enabled() and amp.get_autocast_dtype() == half
        y = x.linear(w, b)                              # lower
        assert y.dtype == half
        assert (x @ w.T).dtype == half                   # matmul: lower
        assert y.relu().dtype == half                   # promote, one dtype: unchanged
        assert (y + x[:, :3]).dtype == numpy.float32    # promote: the widest
        assert y.softmax().dtype == numpy.float32       # float32 class
        assert y.sum().dtype == numpy.float32
        assert y.softmax_cross_entropy(labels).dtype == numpy.float32
        assert y.layer_norm(Tensor(numpy.ones(3, numpy.float32)),
                            Tensor(numpy.zeros(3, numpy.float32))).dtype == numpy.float32
        x64 = Tensor(_f32((4, 6)).astype(numpy.float64))
        assert (x64 @ x64.T).dtype == numpy.float64     # float64 is left alone
    assert not amp.is_autocast_enabled()
    assert x.linear(w, b).dtype == numpy.float32        # outside: no cast


def test_policy_table_covers_the_issue_list():
    lower = {k for k, v in amp.POLICY.items() if v == "lower"}
    float32 = {k for k, v in amp.POLICY.items() if v == "float32"}
    assert lower == {"matmul", "linear", "conv2d", "attention"}
    assert {"sum", "mean", "softmax", "log_softmax", "softmax_cross_entropy", "bce_with_logits",
            "mse", "mae", "batch_norm", "layer_norm", "rms_norm", "lrn"} == float32
    assert set(amp.POLICY) <= set(gpuops.OPERATORS)


def test_mixed_16_bit_inputs_promote_to_float32():
    a = Tensor(_f32((5,)).astype(BF16))
    b = Tensor(_f32((5,), 1).astype(F16))
    with autocast(BF16):
        y = a + b
    assert y.dtype == numpy.float32
    expected = a.data.astype(numpy.float32) + b.data.astype(numpy.float32)
    numpy.testing.assert_array_equal(y.data, expected)


def test_enabled_false_nesting_and_errors():
    x = Tensor(_f32((2, 3)))
    with autocast(BF16):
        with autocast(BF16, enabled=False):
            assert (x @ x.T).dtype == numpy.float32
        with autocast(F16):
            assert (x @ x.T).dtype == F16
        assert (x @ x.T).dtype == BF16
    with pytest.raises(ValueError, match="autocast: dtype"):
        with autocast(numpy.float32):
            pass
    with pytest.raises(TypeError, match="enabled"):
        with autocast(BF16, enabled=1):
            pass


def test_autocast_is_thread_local():
    x = Tensor(_f32((2, 3)))
    seen = {}
    inside, done = threading.Event(), threading.Event()

    def other():
        inside.wait()
        seen["other"] = (x @ x.T).dtype
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with autocast(BF16):
        inside.set()
        done.wait()
        seen["this"] = (x @ x.T).dtype
    thread.join()
    assert seen == {"other": numpy.float32, "this": BF16}


@pytest.mark.parametrize("half", HALVES)
def test_gradient_reaches_float32_parameter(half):
    """d/dW of mean(softmax_cross_entropy(x W^T + b)) with the linear in 16 bits: the gradient
    is float32 and equals the float64 computation on the 16-bit-rounded operands, rounded
    like the 16-bit linear output and its 16-bit input gradients."""
    x = _f32((8, 5))
    w0, b0 = _f32((4, 5), 1), _f32((4,), 2)
    labels = _rng(3).integers(0, 4, 8)
    w = Tensor(w0, requires_grad=True)
    b = Tensor(b0, requires_grad=True)
    with autocast(half):
        loss = Tensor(x).linear(w, b).softmax_cross_entropy(labels).sum()
    loss.backward()
    assert w.grad.dtype == numpy.float32 and b.grad.dtype == numpy.float32
    r = lambda a: numpy.asarray(a, numpy.float64).astype(half).astype(numpy.float64)  # noqa: E731
    z = r(r(x) @ r(w0).T + r(b0))
    p = numpy.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    gz = p.copy()
    gz[numpy.arange(8), labels] -= 1
    gz = r(gz / 8)  # the mean over 8 rows; the gradient arriving at the 16-bit output is 16-bit
    tol = 4 * float(ml_dtypes.finfo(half).eps)
    numpy.testing.assert_allclose(w.grad, gz.T @ r(x), rtol=tol, atol=tol)
    numpy.testing.assert_allclose(b.grad, gz.sum(axis=0), rtol=tol, atol=tol)
    # without autocast the same graph is float32 end to end, and close to the 16-bit one
    w32 = Tensor(w0, requires_grad=True)
    Tensor(x).linear(w32, Tensor(b0)).softmax_cross_entropy(labels).sum().backward()
    numpy.testing.assert_allclose(w.grad, w32.grad, atol=8 * float(ml_dtypes.finfo(half).eps))


def test_cast_cache_per_region():
    w = Tensor(_f32((3, 4)), requires_grad=True)
    x = Tensor(_f32((2, 4), 1))
    with autocast(BF16):
        first = amp._cast(w, BF16)
        assert amp._cast(w, BF16) is first            # cached within the region
        y = x.linear(w) + x.linear(w)                  # both uses share the one cast
        assert y.creator.inputs[0].creator.inputs[1] is first
        y.sum().backward()                             # frees the cast's node...
        assert amp._cast(w, BF16) is not first         # ...so a fresh one is made
        c = Tensor(_f32((3, 4)))                       # no gradient: not cached
        assert amp._cast(c, BF16) is not amp._cast(c, BF16)
    numpy.testing.assert_allclose(w.grad, 2 * numpy.ones((2, 3), numpy.float32).T
                                  @ x.data.astype(BF16).astype(numpy.float32), rtol=1e-2)
    with autocast(BF16):
        assert amp._cast(w, BF16) is not first         # a new region: a new cache


def test_batchnorm_and_conv_under_autocast():
    nn.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 16, 3))
    x = Tensor(_f32((2, 1, 4, 4)))
    with autocast(BF16):
        y = model(x)
        loss = y.softmax_cross_entropy(numpy.array([0, 2])).mean()
    assert y.dtype == BF16 and loss.dtype == numpy.float32
    loss.backward()
    for p in model.parameters():
        assert p.grad is not None and p.grad.dtype == numpy.float32
        assert numpy.isfinite(p.grad).all()
    assert model[1].running_mean.dtype == numpy.float32


# ---- GradScaler ------------------------------------------------------------------------

def _model_and_optimizer(lr=0.1):
    w = Tensor(numpy.array([1.0, -2.0, 3.0], numpy.float32), requires_grad=True)
    return w, SGD([w], lr=lr)


def test_scaler_scales_unscales_and_steps():
    w, opt = _model_and_optimizer()
    scaler = GradScaler(init_scale=1024.0)
    loss = (w * w).sum()
    scaled = scaler.scale(loss)
    assert float(scaled.item()) == 1024.0 * float(loss.item())
    scaled.backward()
    numpy.testing.assert_array_equal(w.grad, 1024.0 * 2 * w.data)
    scaler.unscale_(opt)
    numpy.testing.assert_array_equal(w.grad, 2 * w.data)
    before = w.data.copy()
    scaler.step(opt)
    numpy.testing.assert_allclose(w.data, before - 0.1 * 2 * before, rtol=1e-6)
    scaler.update()
    assert scaler.get_scale() == 1024.0


@pytest.mark.parametrize("bad", [numpy.inf, -numpy.inf, numpy.nan])
def test_forced_overflow_is_skipped_and_the_scale_backs_off(bad):
    w, opt = _model_and_optimizer()
    scaler = GradScaler(init_scale=2.0 ** 16, growth_interval=3)
    for _ in range(2):  # two good steps: the growth tracker counts them
        opt.zero_grad()
        scaler.scale((w * w).sum()).backward()
        scaler.step(opt)
        scaler.update()
    assert scaler.state_dict()["_growth_tracker"] == 2
    before = w.data.copy()
    opt.zero_grad()
    scaler.scale((w * w).sum()).backward()
    w.grad[1] = bad  # an overflowing gradient
    scaler.step(opt)
    numpy.testing.assert_array_equal(w.data, before)  # skipped
    scaler.update()
    assert scaler.get_scale() == 2.0 ** 15
    assert scaler.state_dict()["_growth_tracker"] == 0


def test_overflow_in_float16_backward_is_skipped():
    """A float16 loss scaled past 65504 overflows in the backward itself."""
    w = Tensor(numpy.array([300.0, 1.0], numpy.float32), requires_grad=True)
    opt = SGD([w], lr=0.1)
    scaler = GradScaler(init_scale=2.0 ** 16)
    with autocast(F16):
        y = Tensor(numpy.ones((1, 2), numpy.float32)).linear(w.reshape(1, 2))
    scaler.scale(y.sum()).backward()
    scaler.unscale_(opt)
    before = w.data.copy()
    scaler.step(opt)
    scaler.update()
    numpy.testing.assert_array_equal(w.data, before)
    assert scaler.get_scale() == 2.0 ** 15


def test_scale_grows_after_growth_interval_good_steps():
    w, opt = _model_and_optimizer(lr=0.0)
    scaler = GradScaler(init_scale=4.0, growth_factor=2.0, growth_interval=3)
    scales = []
    for _ in range(7):
        opt.zero_grad()
        scaler.scale((w * w).sum()).backward()
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
    assert scales == [4.0, 4.0, 8.0, 8.0, 8.0, 16.0, 16.0]


def test_scaler_protocol_errors_and_state_dict():
    w, opt = _model_and_optimizer()
    scaler = GradScaler(init_scale=8.0, growth_interval=5)
    with pytest.raises(AssertionError, match="No inf checks"):
        scaler.update()
    scaler.scale((w * w).sum()).backward()
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called"):
        scaler.step(opt)
    with pytest.raises(RuntimeError, match="after step"):
        scaler.unscale_(opt)
    scaler.update()
    state = scaler.state_dict()
    assert state == {"scale": 8.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                     "growth_interval": 5, "_growth_tracker": 1}
    other = GradScaler()
    other.load_state_dict(state)
    assert other.state_dict() == state
    with pytest.raises(RuntimeError, match="empty"):
        other.load_state_dict({})
    with pytest.raises(ValueError, match="growth_factor"):
        GradScaler(growth_factor=1.0)
    with pytest.raises(ValueError, match="growth_interval"):
        GradScaler(growth_interval=0)


def test_disabled_scaler_passes_through():
    w, opt = _model_and_optimizer()
    scaler = GradScaler(enabled=False)
    loss = (w * w).sum()
    assert scaler.scale(loss) is loss
    loss.backward()
    before = w.data.copy()
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 1.0 and scaler.state_dict() == {}
    assert not numpy.array_equal(w.data, before)
    with pytest.raises(RuntimeError, match="disabled"):
        scaler.load_state_dict({"scale": 2.0})


def test_scale_sequence_matches_torch():
    torch = pytest.importorskip("torch")
    pattern = [False, False, True, False, False, False, True, True, False, False, False, False]
    ours = GradScaler(init_scale=256.0, growth_interval=3)
    theirs = torch.amp.GradScaler("cpu", init_scale=256.0, growth_interval=3)
    w, opt = _model_and_optimizer(lr=0.01)
    tw = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    topt = torch.optim.SGD([tw], lr=0.01)
    for overflow in pattern:
        opt.zero_grad()
        topt.zero_grad()
        ours.scale((w * w).sum()).backward()
        theirs.scale((tw * tw).sum()).backward()
        if overflow:
            w.grad[0] = numpy.inf
            with torch.no_grad():
                tw.grad[0] = float("inf")
        ours.step(opt)
        theirs.step(topt)
        ours.update()
        theirs.update()
        assert ours.get_scale() == theirs.get_scale()
        numpy.testing.assert_allclose(w.data, tw.detach().numpy(), rtol=1e-6)
    assert ours.state_dict()["_growth_tracker"] == theirs.state_dict()["_growth_tracker"]


# ---- the fused unscale kernel ------------------------------------------------------------

def _grads(dtypes, seed=0):
    shapes = [(CHUNK + 37,), (5, 3), (0,), (2 * CHUNK,)]
    return [_f32(s, seed + i).astype(d) for i, (s, d) in enumerate(zip(shapes, dtypes))]


@pytest.mark.parametrize("backend", list(_backend_params()))
@pytest.mark.parametrize("dtypes", [(numpy.float32,) * 4, (F16, BF16, numpy.float32,
                                                           numpy.float64)], ids=["f32", "mixed"])
def test_unscale_grads(backend, dtypes):
    grads = _grads(dtypes)
    inv = 2.0 ** -10
    expected = [(g.astype(numpy.float64) * inv).astype(g.dtype) for g in grads]
    with backend.active():
        on = [backend.asarray(g) for g in grads]
        found = unscale_grads(on, inv)
        assert backend.to_numpy(found).tolist() == [0.0]
        for g, e in zip(on, expected):
            got = backend.to_numpy(g)
            assert got.dtype == e.dtype
            numpy.testing.assert_array_equal(got.astype(numpy.float64), e.astype(numpy.float64))


@pytest.mark.parametrize("backend", list(_backend_params()))
@pytest.mark.parametrize("where", [(0, CHUNK + 30), (1, 7), (3, 2 * CHUNK - 1), (3, 0)])
@pytest.mark.parametrize("bad", [numpy.inf, numpy.nan])
def test_unscale_grads_finds_non_finite(backend, where, bad):
    grads = _grads((F16, BF16, numpy.float32, numpy.float64), seed=4)
    tensor, index = where
    grads[tensor].reshape(-1)[index] = bad
    with backend.active():
        on = [backend.asarray(g.copy()) for g in grads]
        found = unscale_grads(on, 0.5)
        assert backend.to_numpy(found).tolist() == [1.0]
        # the other values are unscaled all the same (as torch does)
        got = backend.to_numpy(on[tensor]).reshape(-1).astype(numpy.float64)
        want = grads[tensor].reshape(-1).astype(numpy.float64) * 0.5
        keep = numpy.arange(want.size) != index
        numpy.testing.assert_array_equal(got[keep], want[keep])


def test_unscale_grads_bad_arguments():
    with pytest.raises(ValueError, match="unscale_grads: grads is empty"):
        unscale_grads([], 0.5)
    with pytest.raises(ValueError, match="inv_scale"):
        unscale_grads([numpy.zeros(3, numpy.float32)], float("inf"))
    with pytest.raises(TypeError, match="unscale_grads"):
        unscale_grads([numpy.zeros(3, numpy.int32)], 0.5)


# ---- master weights ------------------------------------------------------------------------

def _half_case(half, seed=0):
    shapes = [(CHUNK + 5,), (3, 4), (0,), (7,)]
    master = [_f32(s, seed + i) for i, s in enumerate(shapes)]
    grads = [_f32(s, seed + 10 + i).astype(half) for i, s in enumerate(shapes)]
    return master, grads


@pytest.mark.parametrize("backend", list(_backend_params()))
@pytest.mark.parametrize("half", HALVES)
@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, True, 0.01)])
def test_sgd_step_master(backend, half, momentum, nesterov, wd):
    master, grads = _half_case(half)
    ref = [m.astype(numpy.float64) for m in master]
    bufs_ref = [numpy.zeros_like(r) for r in ref]
    with backend.active():
        on_master = [backend.asarray(m) for m in master]
        params = [backend.asarray(m.astype(half)) for m in master]
        bufs = [backend.asarray(numpy.zeros_like(m)) for m in master] if momentum else None
        on_grads = [backend.asarray(g) for g in grads]
        for _ in range(3):
            gpuops.sgd_step(params, on_grads, bufs, lr=0.1, momentum=momentum,
                            nesterov=nesterov, weight_decay=wd, master_params=on_master)
            for p, g, b in zip(ref, grads, bufs_ref):
                g64 = g.astype(numpy.float64) + wd * p
                if momentum:
                    b[...] = momentum * b + g64
                    g64 = g64 + momentum * b if nesterov else b
                p -= 0.1 * g64
        for m, p, r in zip(on_master, params, ref):
            m, p = backend.to_numpy(m), backend.to_numpy(p)
            assert m.dtype == numpy.float32 and p.dtype == half
            numpy.testing.assert_allclose(m, r, rtol=2e-6, atol=2e-6)
            numpy.testing.assert_array_equal(p, m.astype(half))  # one rounding of the master


@pytest.mark.parametrize("backend", list(_backend_params()))
@pytest.mark.parametrize("half", HALVES)
@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_step_master(backend, half, decoupled):
    master, grads = _half_case(half, seed=20)
    ref = [m.astype(numpy.float64) for m in master]
    m_ref = [numpy.zeros_like(r) for r in ref]
    v_ref = [numpy.zeros_like(r) for r in ref]
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-8, 0.1
    with backend.active():
        on_master = [backend.asarray(m) for m in master]
        params = [backend.asarray(m.astype(half)) for m in master]
        ms = [backend.asarray(numpy.zeros_like(m)) for m in master]
        vs = [backend.asarray(numpy.zeros_like(m)) for m in master]
        on_grads = [backend.asarray(g) for g in grads]
        for step in (1, 2, 3):
            gpuops.adam_step(params, on_grads, ms, vs, step=step, lr=lr, weight_decay=wd,
                             decoupled=decoupled, master_params=on_master)
            for p, g, m, v in zip(ref, grads, m_ref, v_ref):
                g64 = g.astype(numpy.float64)
                if decoupled:
                    p *= 1 - lr * wd
                else:
                    g64 = g64 + wd * p
                m[...] = b1 * m + (1 - b1) * g64
                v[...] = b2 * v + (1 - b2) * g64 * g64
                p -= lr * (m / (1 - b1 ** step)) / (numpy.sqrt(v / (1 - b2 ** step)) + eps)
        for m, p, r in zip(on_master, params, ref):
            m, p = backend.to_numpy(m), backend.to_numpy(p)
            numpy.testing.assert_allclose(m, r, rtol=1e-5, atol=1e-5)
            numpy.testing.assert_array_equal(p, m.astype(half))
        for m, r in zip(ms, m_ref):
            assert backend.to_numpy(m).dtype == numpy.float32


def test_master_step_bad_arguments():
    master = [numpy.zeros(3, numpy.float32)]
    with pytest.raises(ValueError, match="master_params are for float16 or bfloat16"):
        gpuops.sgd_step([numpy.zeros(3, numpy.float32)], [numpy.zeros(3, numpy.float32)], None,
                        lr=0.1, master_params=master)
    with pytest.raises(ValueError, match="master_params\\[0\\] has shape"):
        gpuops.sgd_step([numpy.zeros(3, BF16)], [numpy.zeros(3, BF16)], None, lr=0.1,
                        master_params=[numpy.zeros(3, numpy.float64)])
    with pytest.raises(ValueError, match="grads\\[0\\] has shape"):
        gpuops.adam_step([numpy.zeros(3, BF16)], [numpy.zeros(3, F16)],
                         [numpy.zeros(3, numpy.float32)], [numpy.zeros(3, numpy.float32)],
                         step=1, master_params=master)


@pytest.mark.parametrize("half", HALVES)
def test_small_updates_accumulate_in_the_master(half):
    """lr·g below half a 16-bit unit: a 16-bit parameter alone would never move."""
    p = nn.Parameter(numpy.ones(4, half))
    opt = SGD([p], lr=1e-4)
    for _ in range(100):
        p.grad = numpy.ones(4, half)
        opt.step()
    master = opt._masters[0]
    numpy.testing.assert_allclose(master, 1 - 100 * 1e-4, rtol=1e-5)
    numpy.testing.assert_array_equal(p.data, master.astype(half))
    assert float(p.data[0]) < 1.0
    alone = numpy.ones(4, half)
    for _ in range(100):
        alone = (alone.astype(numpy.float32) - numpy.float32(1e-4)).astype(half)
    assert float(alone[0]) == 1.0


@pytest.mark.parametrize("opt_class", [SGD, Adam, AdamW])
def test_optimizer_mixes_float32_and_16_bit_parameters(opt_class):
    """The float32 parameters step as before; each 16-bit one through its master, with
    float32 state; the state dict holds the masters and loads them back."""
    a = nn.Parameter(_f32((3, 2)))
    b = nn.Parameter(_f32((5,), 1).astype(BF16))
    c = nn.Parameter(_f32((4,), 2).astype(F16))
    kwargs = {"momentum": 0.9} if opt_class is SGD else {}
    opt = opt_class([a, b, c], lr=0.01, **kwargs)
    ref = opt_class([nn.Parameter(a.data.copy()), nn.Parameter(b.data.astype(numpy.float32)),
                     nn.Parameter(c.data.astype(numpy.float32))], lr=0.01, **kwargs)
    for step in range(3):
        grads = [_f32(t.shape, 10 + step + i).astype(t.dtype) for i, t in enumerate((a, b, c))]
        for t, g in zip((a, b, c), grads):
            t.grad = g
        for t, g in zip(ref.params, grads):
            t.grad = g.astype(numpy.float32)
        opt.step()
        ref.step()
    numpy.testing.assert_array_equal(a.data, ref.params[0].data)
    for i, t in ((1, b), (2, c)):
        numpy.testing.assert_allclose(opt._masters[i], ref.params[i].data, rtol=1e-6, atol=1e-7)
        numpy.testing.assert_array_equal(t.data, opt._masters[i].astype(t.dtype))
    state = opt.state_dict()
    assert {"master.1", "master.2"} <= set(state) and "master.0" not in state
    fresh = opt_class([nn.Parameter(a.data.copy()), nn.Parameter(numpy.zeros(5, BF16)),
                       nn.Parameter(numpy.zeros(4, F16))], lr=0.01, **kwargs)
    fresh.load_state_dict(state)
    numpy.testing.assert_array_equal(fresh._masters[1], opt._masters[1])
    numpy.testing.assert_array_equal(fresh.params[2].data, c.data)
    bad = dict(state)
    bad["master.1"] = numpy.zeros(6, numpy.float32)
    with pytest.raises(ValueError, match="master.1 has shape"):
        fresh.load_state_dict(bad)


@pytest.mark.parametrize("backend", [b for b in _backend_params() if b.values[0].name != "numpy"])
def test_optimizer_16_bit_on_kernels_matches_numpy(backend):
    """One fused launch per 16-bit dtype: the kernels give NumPy's masters and parameters."""
    results = []
    for active in (None, backend):
        p = [nn.Parameter(_f32((CHUNK + 3,)).astype(BF16)), nn.Parameter(_f32((6,)).astype(F16))]
        opt = AdamW(p, lr=0.01)
        ctx = active.active() if active is not None else numpy.errstate()
        with ctx:
            for step in range(2):
                for i, t in enumerate(p):
                    t.grad = _f32(t.shape, 5 + step + i).astype(t.dtype)
                opt.step()
        results.append(([t.data.copy() for t in p], [opt._masters[i].copy() for i in (0, 1)]))
    (p_np, m_np), (p_k, m_k) = results
    for a, b in zip(m_np, m_k):
        numpy.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(p_np, p_k):
        assert (a.astype(numpy.float32) != b.astype(numpy.float32)).mean() < 0.01


# ---- nn layers in 16 bits -------------------------------------------------------------------

@pytest.mark.parametrize("half", HALVES)
@pytest.mark.parametrize("make", [
    lambda dt: nn.Linear(6, 4, dtype=dt),
    lambda dt: nn.Conv2d(2, 3, 3, dtype=dt),
    lambda dt: nn.Embedding(10, 4, dtype=dt),
    lambda dt: nn.LayerNorm(4, dtype=dt),
    lambda dt: nn.RMSNorm(4, dtype=dt),
    lambda dt: nn.BatchNorm2d(3, dtype=dt),
    lambda dt: nn.MultiheadAttention(8, 2, dtype=dt),
], ids=["Linear", "Conv2d", "Embedding", "LayerNorm", "RMSNorm", "BatchNorm2d", "MHA"])
def test_layer_dtype(half, make):
    """Parameters in the dtype, initialised as the float32 layer's and rounded."""
    nn.manual_seed(3)
    layer = make(half)
    nn.manual_seed(3)
    reference = make(numpy.float32)
    for (name, p), (_, r) in zip(layer.named_parameters(), reference.named_parameters()):
        assert p.dtype == half, name
        numpy.testing.assert_array_equal(p.data, r.data.astype(half))
    state = layer.state_dict()
    again = make(half)
    again.load_state_dict(state)
    for p, q in zip(layer.parameters(), again.parameters()):
        numpy.testing.assert_array_equal(p.data, q.data)


def test_gpt_in_bfloat16_trains_with_master_weights():
    from gpuops.gpt import GPT
    nn.manual_seed(0)
    model = GPT(16, 8, 1, 2, 16, dtype=BF16)
    assert {p.dtype for p in model.parameters()} == {BF16}
    opt = AdamW(model.parameters(), lr=1e-2)
    x = _rng(1).integers(0, 16, (4, 8))
    losses = []
    for _ in range(5):
        loss = model.loss(x, numpy.roll(x, -1, axis=1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    assert losses[-1] < losses[0]
    assert {m.dtype for m in opt._masters.values()} == {numpy.dtype(numpy.float32)}
