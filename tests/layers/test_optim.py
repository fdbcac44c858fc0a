"""Fused optimizer operators (sgd_step, adam_step) and the SGD/Adam/AdamW classes.

References: the update rules of torch.optim.SGD/Adam/AdamW written out in float64
below (textbook form, bias-corrected m̂ and v̂), and torch itself when installed.
"""
from __future__ import annotations

import math

import numpy
import pytest

import gpuops
from gpuops import Tensor
from gpuops.optim import SGD, Adam, AdamW
from backends import BACKENDS

SHAPES = [(3, 4), (5,), (0,), (1,), (7, 2, 3), (300,)]


def _ref_sgd(params, grads, bufs, lr, momentum, nesterov, wd):
    for p, g, b in zip(params, grads, bufs):
        g = g + wd * p
        if momentum:
            b[...] = momentum * b + g
            g = g + momentum * b if nesterov else b
        p -= lr * g


def _ref_adam(params, grads, ms, vs, step, lr, b1, b2, eps, wd, decoupled):
    for p, g, m, v in zip(params, grads, ms, vs):
        if decoupled:
            p *= 1 - lr * wd
        else:
            g = g + wd * p
        m[...] = b1 * m + (1 - b1) * g
        v[...] = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** step)
        v_hat = v / (1 - b2 ** step)
        p -= lr * m_hat / (numpy.sqrt(v_hat) + eps)


def _params_for(rng, shapes=SHAPES):
    return [rng.standard_normal(s) for s in shapes]


def _backend_params():
    for backend in BACKENDS:
        yield pytest.param(backend, id=backend.name, marks=backend.marks)


@pytest.mark.parametrize("backend", list(_backend_params()))
@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.0),
                                                  (0.9, True, 0.01), (0.5, False, 0.1)])
def test_sgd_step_matches_reference(backend, momentum, nesterov, wd):
    rng = numpy.random.default_rng(0)
    ref = _params_for(rng)
    ref_bufs = [numpy.zeros_like(p) for p in ref]
    with backend.active():
        params = [backend.asarray(p) for p in ref]
        bufs = [backend.asarray(b) for b in ref_bufs] if momentum else None
        for _ in range(4):
            grads = [rng.standard_normal(p.shape) for p in ref]
            out = gpuops.sgd_step(params, [backend.asarray(g) for g in grads], bufs, lr=0.1,
                                  momentum=momentum, nesterov=nesterov, weight_decay=wd)
            assert out is params
            _ref_sgd(ref, grads, ref_bufs, 0.1, momentum, nesterov, wd)
    for p, r in zip(params, ref):
        numpy.testing.assert_allclose(backend.to_numpy(p), r, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", list(_backend_params()))
@pytest.mark.parametrize("decoupled,wd", [(False, 0.0), (False, 0.05), (True, 0.05)])
def test_adam_step_matches_reference(backend, decoupled, wd):
    rng = numpy.random.default_rng(1)
    ref = _params_for(rng)
    ref_m = [numpy.zeros_like(p) for p in ref]
    ref_v = [numpy.zeros_like(p) for p in ref]
    with backend.active():
        params = [backend.asarray(p) for p in ref]
        ms = [backend.asarray(m) for m in ref_m]
        vs = [backend.asarray(v) for v in ref_v]
        for step in range(1, 6):
            grads = [rng.standard_normal(p.shape) for p in ref]
            gpuops.adam_step(params, [backend.asarray(g) for g in grads], ms, vs, step=step,
                             lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=wd,
                             decoupled=decoupled)
            _ref_adam(ref, grads, ref_m, ref_v, step, 0.01, 0.8, 0.99, 1e-6, wd, decoupled)
    for got, want in ((params, ref), (ms, ref_m), (vs, ref_v)):
        for p, r in zip(got, want):
            numpy.testing.assert_allclose(backend.to_numpy(p), r, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("backend", list(_backend_params()))
def test_float32_and_mixed_dtypes_in_one_call(backend):
    """Each dtype group is one fused launch; float32 tracks the float64 rule closely."""
    rng = numpy.random.default_rng(2)
    ref = _params_for(rng, [(4, 5), (3,)])
    dtypes = [numpy.float32, numpy.float64]
    ref_m = [numpy.zeros_like(p) for p in ref]
    ref_v = [numpy.zeros_like(p) for p in ref]
    with backend.active():
        params = [backend.asarray(p, dtype=d) for p, d in zip(ref, dtypes)]
        ms = [backend.asarray(m, dtype=d) for m, d in zip(ref_m, dtypes)]
        vs = [backend.asarray(v, dtype=d) for v, d in zip(ref_v, dtypes)]
        for step in (1, 2, 3):
            grads = [rng.standard_normal(p.shape) for p in ref]
            gpuops.adam_step(params, [backend.asarray(g, dtype=d) for g, d in zip(grads, dtypes)],
                             ms, vs, step=step, lr=0.1)
            _ref_adam(ref, grads, ref_m, ref_v, step, 0.1, 0.9, 0.999, 1e-8, 0.0, False)
    assert params[0].dtype == numpy.float32
    numpy.testing.assert_allclose(backend.to_numpy(params[0]), ref[0], rtol=1e-5, atol=1e-6)
    numpy.testing.assert_allclose(backend.to_numpy(params[1]), ref[1], rtol=1e-12)


@pytest.mark.parametrize("backend", list(_backend_params()))
@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.01),
                                                  (0.9, True, 0.01)])
def test_sgd_step_float32_matches_reference(backend, momentum, nesterov, wd):
    """float32 parameters, gradients and velocities (the f32 kernel) track the float64 rule."""
    rng = numpy.random.default_rng(7)
    ref = _params_for(rng)
    ref_bufs = [numpy.zeros_like(p) for p in ref]
    with backend.active():
        params = [backend.asarray(p, dtype=numpy.float32) for p in ref]
        bufs = ([backend.asarray(b, dtype=numpy.float32) for b in ref_bufs] if momentum
                else None)
        for _ in range(4):
            grads = [rng.standard_normal(p.shape) for p in ref]
            out = gpuops.sgd_step(params, [backend.asarray(g, dtype=numpy.float32)
                                           for g in grads], bufs, lr=0.1, momentum=momentum,
                                  nesterov=nesterov, weight_decay=wd)
            assert out is params
            _ref_sgd(ref, grads, ref_bufs, 0.1, momentum, nesterov, wd)
    got = [(params, ref)] + ([(bufs, ref_bufs)] if momentum else [])
    for arrays, want in got:
        for a, r in zip(arrays, want):
            assert a.dtype == numpy.float32
            numpy.testing.assert_allclose(backend.to_numpy(a), r, rtol=1e-5, atol=1e-5)


def test_many_tensors_and_chunks_numpy():
    """Many small tensors and one larger than a kernel chunk (the NumPy path, all sizes)."""
    rng = numpy.random.default_rng(3)
    shapes = [(int(n),) for n in rng.integers(1, 50, 150)] + [(gpuops.ops.optim.CHUNK * 2 + 3,)]
    ref = _params_for(rng, shapes)
    params = [p.copy() for p in ref]
    bufs, ref_bufs = [numpy.zeros_like(p) for p in ref], [numpy.zeros_like(p) for p in ref]
    grads = [rng.standard_normal(s) for s in shapes]
    gpuops.sgd_step(params, grads, bufs, lr=0.5, momentum=0.9)
    _ref_sgd(ref, grads, ref_bufs, 0.5, 0.9, False, 0.0)
    for p, r in zip(params, ref):
        numpy.testing.assert_allclose(p, r, rtol=1e-13)


def test_pointer_table_layout():
    """The table the kernels read: pointers, sizes, then (tensor, start) per chunk."""
    calls = []

    class Recorder:
        name, max_blocks, tensor_cores = "recorder", 4, False

        def launch(self, family, kernel, grid, block, args, shared_mem=0):
            calls.append((family, kernel, grid, block, args))

    from gpuops import backend as _backend
    chunk = gpuops.ops.optim.CHUNK
    params = [numpy.zeros(chunk + 1, numpy.float32), numpy.zeros(5, numpy.float32)]
    grads = [numpy.ones_like(p) for p in params]
    with _backend.use_cpu_launcher(Recorder()):
        gpuops.sgd_step(params, grads, None, lr=0.1)
    (family, kernel, grid, block, args), = calls
    assert (family, kernel, grid, block) == ("optim", "sgd_step_f32", (3,), (256,))
    table, n_tensors, n_chunks, chunk_arg = args[:4]
    assert (int(n_tensors), int(n_chunks), int(chunk_arg)) == (2, 3, chunk)
    assert list(table[:2]) == [p.ctypes.data for p in params]
    assert list(table[2:4]) == [g.ctypes.data for g in grads]
    assert list(table[8:10]) == [chunk + 1, 5]
    assert list(table[10:13]) == [0, 0, 1] and list(table[13:16]) == [0, chunk, 0]
    assert args[4].dtype == numpy.float32 and args[-1].dtype == numpy.int32


def test_bad_arguments():
    p = [numpy.zeros(3)]
    g = [numpy.zeros(3)]
    with pytest.raises(ValueError, match="sgd_step: lr"):
        gpuops.sgd_step(p, g, None, lr=-1.0)
    with pytest.raises(ValueError, match="nesterov"):
        gpuops.sgd_step(p, g, [numpy.zeros(3)], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="needs velocities"):
        gpuops.sgd_step(p, g, None, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="grads has 2 arrays"):
        gpuops.sgd_step(p, g * 2, None, lr=0.1)
    with pytest.raises(ValueError, match=r"grads\[0\] has shape \(4,\)"):
        gpuops.sgd_step(p, [numpy.zeros(4)], None, lr=0.1)
    with pytest.raises(TypeError, match="dtype int64"):
        gpuops.sgd_step([numpy.zeros(3, numpy.int64)], [numpy.zeros(3, numpy.int64)], None,
                        lr=0.1)
    with pytest.raises(TypeError, match="must be a list"):
        gpuops.sgd_step(p[0], g[0], None, lr=0.1)
    with pytest.raises(ValueError, match="step must be an integer >= 1"):
        gpuops.adam_step(p, g, [numpy.zeros(3)], [numpy.zeros(3)], step=0)
    with pytest.raises(ValueError, match="beta2=1.0"):
        gpuops.adam_step(p, g, [numpy.zeros(3)], [numpy.zeros(3)], step=1, beta2=1.0)
    with pytest.raises(TypeError, match="lr must be a number"):
        gpuops.adam_step(p, g, [numpy.zeros(3)], [numpy.zeros(3)], step=1, lr="0.1")
    assert p[0].tolist() == [0.0, 0.0, 0.0]  # nothing was written


def test_optimizers_are_not_registered_operators():
    assert "sgd_step" not in gpuops.OPERATORS and "adam_step" not in gpuops.OPERATORS


# ---- classes ------------------------------------------------------------------------------

def _quadratic_problem(rng):
    """Parameters and a loss Σ (p - target)² whose gradient is 2 (p - target)."""
    targets = [rng.standard_normal(s) for s in [(3, 2), (4,)]]
    params = [Tensor(rng.standard_normal(t.shape), requires_grad=True) for t in targets]
    return params, targets


def _set_grads(params, targets):
    for p, t in zip(params, targets):
        p.grad = 2 * (p.data - t)


@pytest.mark.parametrize("cls,kwargs", [(SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
                                        (Adam, dict(lr=0.05, weight_decay=0.01)),
                                        (AdamW, dict(lr=0.05))])
def test_classes_minimize_and_skip_missing_grads(cls, kwargs):
    rng = numpy.random.default_rng(4)
    params, targets = _quadratic_problem(rng)
    frozen = Tensor(numpy.ones(2), requires_grad=True)
    opt = cls(params + [frozen], **kwargs)
    start = sum(float(numpy.sum((p.data - t) ** 2)) for p, t in zip(params, targets))
    for _ in range(200):
        opt.zero_grad()
        assert all(p.grad is None for p in params)
        _set_grads(params, targets)
        opt.step()
    end = sum(float(numpy.sum((p.data - t) ** 2)) for p, t in zip(params, targets))
    assert end < 0.05 * start
    numpy.testing.assert_array_equal(frozen.data, numpy.ones(2))  # no grad: untouched
    if isinstance(opt, Adam):
        assert opt.steps == [200, 200, 0]


def test_optimizer_state_dict_round_trip():
    rng = numpy.random.default_rng(5)
    params, targets = _quadratic_problem(rng)
    opt = Adam(params, lr=0.1)
    for _ in range(3):
        _set_grads(params, targets)
        opt.step()
    state = opt.state_dict()
    params2 = [Tensor(p.data.copy(), requires_grad=True) for p in params]
    opt2 = Adam(params2, lr=0.1)
    opt2.load_state_dict(state)
    for o in (opt, opt2):
        _set_grads(o.params, targets)
        o.step()
    for a, b in zip(params, params2):
        numpy.testing.assert_array_equal(a.data, b.data)
    with pytest.raises(ValueError, match="m.0 has shape"):
        Adam([Tensor(numpy.ones(7), requires_grad=True), params[1]]).load_state_dict(state)


# ---- against torch --------------------------------------------------------------------------

@pytest.mark.parametrize("name,kwargs", [
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.1)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.02)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
])
def test_matches_torch(name, kwargs):
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(6)
    init = [rng.standard_normal(s) for s in [(3, 4), (5,)]]
    ours = [Tensor(p.copy(), requires_grad=True) for p in init]
    theirs = [torch.tensor(p.copy(), requires_grad=True) for p in init]
    opt = getattr(gpuops.optim, name)(ours, **kwargs)
    topt = getattr(torch.optim, name)(theirs, **kwargs)
    for _ in range(6):
        grads = [rng.standard_normal(p.shape) for p in init]
        for p, q, g in zip(ours, theirs, grads):
            p.grad = g.copy()
            q.grad = torch.tensor(g)
        opt.step()
        topt.step()
    for p, q in zip(ours, theirs):
        numpy.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_adamw_default_weight_decay_matches_torch():
    assert AdamW([Tensor(numpy.ones(1), requires_grad=True)]).weight_decay == 0.01
    assert math.isclose(Adam([Tensor(numpy.ones(1), requires_grad=True)]).weight_decay, 0.0)
