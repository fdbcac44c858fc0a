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
from gpuops.optim import SGD, Adam, AdamW, lr_scheduler
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
    """The table the kernels read: five rows of pointers (params, grads, two states, the
    16-bit copy), sizes, then (tensor, start) per chunk."""
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
    assert list(table[4:10]) == [0] * 6  # no velocities, second state or 16-bit copy
    assert list(table[10:12]) == [chunk + 1, 5]
    assert list(table[12:15]) == [0, 0, 1] and list(table[15:18]) == [0, chunk, 0]
    assert len(table) == 18
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

def _step_both(torch, rng, init, gpuops_opt, torch_opt, steps):
    """``steps`` steps of both optimizers on the same random gradients; the parameters agree."""
    (opt, ours), (topt, theirs) = gpuops_opt, torch_opt
    for _ in range(steps):
        grads = [rng.standard_normal(p.shape) for p in init]
        for p, q, g in zip(ours, theirs, grads):
            p.grad = g.copy()
            q.grad = torch.tensor(g)
        opt.step()
        topt.step()
    for p, q in zip(ours, theirs):
        numpy.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-12, atol=1e-14)


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
    _step_both(torch, rng, init, (opt, ours), (topt, theirs), steps=6)


def test_adamw_default_weight_decay_matches_torch():
    assert AdamW([Tensor(numpy.ones(1), requires_grad=True)]).weight_decay == 0.01
    assert math.isclose(Adam([Tensor(numpy.ones(1), requires_grad=True)]).weight_decay, 0.0)


# ---- hyperparameter checks and failed steps ------------------------------------------------------

def _one_param(value=1.0, n=3):
    return Tensor(numpy.full(n, value), requires_grad=True)


@pytest.mark.parametrize("make,error,match", [
    (lambda p: Adam(p, lr=float("nan")), ValueError, r"Adam: lr=nan is outside \[0.0, inf\)"),
    (lambda p: Adam(p, lr=-1), ValueError, r"Adam: lr=-1.0 is outside"),
    (lambda p: Adam(p, lr="0.1"), TypeError, r"Adam: lr must be a number, got '0.1'"),
    (lambda p: Adam(p, betas=(0.9, 1.0)), ValueError, r"Adam: betas\[1\]=1.0 is outside"),
    (lambda p: Adam(p, betas=0.9), TypeError, r"Adam: betas must be a pair"),
    (lambda p: AdamW(p, eps=-1e-8), ValueError, r"AdamW: eps=-1e-08 is outside"),
    (lambda p: AdamW(p, weight_decay=float("inf")), ValueError, r"AdamW: weight_decay=inf"),
    (lambda p: SGD(p, lr=0.1, momentum=-0.5), ValueError, r"SGD: momentum=-0.5 is outside"),
    (lambda p: SGD(p, lr=0.1, nesterov=True), ValueError, r"SGD: nesterov=True needs momentum"),
    (lambda p: SGD(p, lr=0.1, nesterov=1), TypeError, r"SGD: nesterov must be a bool"),
    (lambda p: SGD([], lr=0.1), ValueError, r"SGD: got an empty parameter list"),
    (lambda p: SGD(p[0], lr=0.1), TypeError, r"SGD: params must be an iterable"),
    (lambda p: SGD([1.0], lr=0.1), TypeError, r"SGD: param_groups\[0\]: params must be Tensors"),
    (lambda p: SGD([{"params": p, "lr": -1}], lr=0.1), ValueError,
     r"SGD: param_groups\[0\]: lr=-1.0 is outside"),
    (lambda p: SGD([{"params": p, "betas": (0.9, 0.9)}], lr=0.1), ValueError,
     r"SGD: param_groups\[0\] has unknown option\(s\) \['betas'\]"),
    (lambda p: SGD([{"lr": 0.1}], lr=0.1), ValueError, r"SGD: param_groups\[0\] has no 'params'"),
    (lambda p: Adam([{"params": p}, {"params": p}]), ValueError,
     r"Adam: param_groups\[1\]: a parameter is already in param_groups\[0\]"),
    (lambda p: Adam([{"params": p}, p[0]]), TypeError, r"Adam: params mixes"),
])
def test_constructor_checks_hyperparameters(make, error, match):
    with pytest.raises(error, match=match):
        make([_one_param()])


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_failed_step_changes_nothing(cls):
    p, q = _one_param(1.0), _one_param(2.0, 2)
    opt = cls([{"params": [p]}, {"params": [q]}], lr=0.1, **(
        {"momentum": 0.9} if cls is SGD else {}))
    p.grad, q.grad = numpy.ones(3), numpy.ones(2)
    opt.step()
    state = opt.state_dict()
    data = [p.data.copy(), q.data.copy()]
    opt.param_groups[1]["lr"] = float("nan")  # e.g. a scheduler gone wrong
    with pytest.raises(ValueError, match=rf"{cls.__name__}: param_groups\[1\]: lr=nan"):
        opt.step()
    opt.param_groups[1]["lr"] = 0.1
    q.grad = numpy.ones(3)
    with pytest.raises(ValueError, match=rf"{cls.__name__}.step: the gradient of parameter 1 "
                                         r"has shape \(3,\)"):
        opt.step()
    numpy.testing.assert_array_equal(p.data, data[0])  # group 0 was not stepped either
    numpy.testing.assert_array_equal(q.data, data[1])
    for key, value in opt.state_dict().items():
        numpy.testing.assert_array_equal(value, state[key])
    if cls is not SGD:
        assert opt.steps == [1, 1]


def test_adam_lr_nan_set_later_does_not_count_the_step():
    p = _one_param()
    opt = Adam([p])
    opt.lr = float("nan")
    p.grad = numpy.ones(3)
    with pytest.raises(ValueError, match="Adam: lr=nan"):
        opt.step()
    assert opt.steps == [0]
    opt.lr = 0.1
    opt.step()
    assert opt.steps == [1]
    numpy.testing.assert_allclose(p.data, 0.9)  # the first Adam step moves by lr


def test_duplicate_parameters_in_one_list_are_stepped_once():
    p = _one_param()
    opt = SGD([p, p], lr=0.5)
    assert opt.params == [p] and opt.param_groups[0]["params"] == [p]
    p.grad = numpy.ones(3)
    opt.step()
    numpy.testing.assert_array_equal(p.data, 0.5)


# ---- state dicts --------------------------------------------------------------------------------

def _stepped(cls, shapes=((3,), (2,)), **kwargs):
    params = [Tensor(numpy.ones(s), requires_grad=True) for s in shapes]
    opt = cls(params, **kwargs)
    for p in params:
        p.grad = numpy.full(p.shape, 0.5)
    opt.step()
    return opt


def test_load_state_dict_rejects_another_optimizer_or_model():
    adam = _stepped(Adam, lr=0.1)
    sgd = _stepped(SGD, lr=0.1, momentum=0.9)
    fresh = _stepped(Adam, lr=0.2)
    before = fresh.state_dict()
    with pytest.raises(ValueError, match=r"Adam.load_state_dict: the state is of a SGD "
                                         r"optimizer, not Adam \(key 'type'\)"):
        fresh.load_state_dict(sgd.state_dict())
    with pytest.raises(ValueError, match="state is of a Adam optimizer, not AdamW"):
        _stepped(AdamW).load_state_dict(adam.state_dict())
    bigger = _stepped(Adam, shapes=((3,), (2,), (4,)))
    with pytest.raises(ValueError, match=r"Adam.load_state_dict: missing keys \['m.2', 'v.2'\]"):
        bigger.load_state_dict(adam.state_dict())
    x, y, z = (Tensor(numpy.ones(2), requires_grad=True) for _ in range(3))
    grouped = Adam([{"params": [x]}, {"params": [y, z]}]).state_dict()
    with pytest.raises(ValueError, match=r"groups.0.params is \[0\]; this optimizer's group 0 "
                                         r"holds parameters \[0, 1\]"):
        Adam([{"params": [x, y]}, {"params": [z]}]).load_state_dict(grouped)
    with pytest.raises(ValueError, match=r"unexpected keys \['m.2', 'v.2'\]"):
        fresh.load_state_dict(bigger.state_dict())
    other_shapes = _stepped(Adam, shapes=((3,), (5,)))
    with pytest.raises(ValueError, match=r"Adam.load_state_dict: m.1 has shape \(2,\); "
                                         r"expected \(5,\)"):
        other_shapes.load_state_dict(adam.state_dict())
    bad = {**adam.state_dict(), "groups.0.lr": numpy.array(-1.0)}
    with pytest.raises(ValueError, match=r"key 'groups.0.lr': lr=-1.0 is outside"):
        fresh.load_state_dict(bad)
    with pytest.raises(ValueError, match="steps must be 2 counts"):
        fresh.load_state_dict({**adam.state_dict(), "steps": numpy.array([1, 2, 3])})
    with pytest.raises(ValueError, match=r"missing keys \['groups.0.eps'\]"):
        fresh.load_state_dict({k: v for k, v in adam.state_dict().items()
                               if k != "groups.0.eps"})
    for key, value in fresh.state_dict().items():  # every failed load left it as it was
        numpy.testing.assert_array_equal(value, before[key])
    # SGD with and without momentum: the velocities are keys of one and not the other
    with pytest.raises(ValueError, match=r"unexpected keys \['velocities.0', 'velocities.1'\]"):
        _stepped(SGD, lr=0.1).load_state_dict(sgd.state_dict())


def test_state_dict_keys_groups_and_legacy_format():
    p, b = _one_param(), _one_param(n=2)
    opt = AdamW([{"params": [p]}, {"params": [b], "weight_decay": 0.0, "lr": 0.5}], lr=0.1,
                betas=(0.8, 0.9))
    state = opt.state_dict()
    assert set(state) == {"type", "steps", "m.0", "m.1", "v.0", "v.1"} | {
        f"groups.{g}.{k}" for g in (0, 1) for k in ("params", "lr", "betas", "eps",
                                                     "weight_decay")}
    assert str(state["type"]) == "AdamW"
    assert state["groups.1.params"].tolist() == [1]
    assert state["groups.0.betas"].tolist() == [0.8, 0.9]
    assert float(state["groups.1.lr"]) == 0.5 and float(state["groups.0.weight_decay"]) == 0.01
    opt2 = AdamW([{"params": [p]}, {"params": [b]}])
    opt2.load_state_dict(state)
    assert opt2.param_groups[1]["lr"] == 0.5 and opt2.param_groups[1]["weight_decay"] == 0.0
    assert opt2.param_groups[0]["betas"] == (0.8, 0.9)
    regrouped = AdamW([p, b])
    with pytest.raises(ValueError, match=r"missing keys \[\].*unexpected keys \['groups.1"):
        regrouped.load_state_dict(state)
    # the format before parameter groups: lr and the arrays
    legacy = {"lr": numpy.array(0.25), "steps": numpy.array([3, 3]), "m.0": numpy.ones(3),
              "m.1": numpy.ones(2), "v.0": numpy.ones(3), "v.1": numpy.ones(2)}
    opt3 = AdamW([p, b])
    opt3.load_state_dict(legacy)
    assert opt3.lr == 0.25 and opt3.steps == [3, 3]
    sgd = SGD([p, b], lr=0.1)
    sgd.load_state_dict({"lr": 0.3})
    assert sgd.lr == 0.3


def test_npz_round_trip_of_a_state_dict(tmp_path):
    opt = _stepped(SGD, lr=0.1, momentum=0.9, nesterov=True)
    numpy.savez(tmp_path / "s.npz", **opt.state_dict())
    with numpy.load(tmp_path / "s.npz") as f:  # no pickles needed
        state = {k: f[k] for k in f.files}
    again = _stepped(SGD, lr=0.2, momentum=0.5)
    again.load_state_dict(state)
    assert again.lr == 0.1 and again.momentum == 0.9 and again.nesterov is True
    for a, b in zip(again.velocities, opt.velocities):
        numpy.testing.assert_array_equal(a, b)


# ---- parameter groups ---------------------------------------------------------------------------

def test_param_groups_per_group_lr_and_weight_decay():
    rng = numpy.random.default_rng(7)
    init = [rng.standard_normal(s) for s in [(3, 2), (2,), (4,)]]
    params = [Tensor(x.copy(), requires_grad=True) for x in init]
    opt = SGD([{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.0, "lr": 0.3}],
              lr=0.1, momentum=0.9, weight_decay=0.05)
    assert [set(g) for g in opt.param_groups] == [
        {"params", "lr", "momentum", "nesterov", "weight_decay"}] * 2
    assert opt.param_groups[0]["weight_decay"] == 0.05 and opt.param_groups[1]["lr"] == 0.3
    assert opt.params == params
    ref = [x.copy() for x in init]
    bufs = [numpy.zeros_like(x) for x in init]
    for _ in range(3):
        grads = [rng.standard_normal(x.shape) for x in init]
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        _ref_sgd(ref[:1], grads[:1], bufs[:1], 0.1, 0.9, False, 0.05)
        _ref_sgd(ref[1:], grads[1:], bufs[1:], 0.3, 0.9, False, 0.0)
    for p, r in zip(params, ref):
        numpy.testing.assert_allclose(p.data, r, rtol=1e-12, atol=1e-14)
    opt.lr = 0.01  # sets every group, reads the first
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.01] and opt.lr == 0.01


def test_adam_param_groups_match_reference():
    rng = numpy.random.default_rng(8)
    init = [rng.standard_normal(s) for s in [(3, 2), (2,)]]
    params = [Tensor(x.copy(), requires_grad=True) for x in init]
    opt = AdamW([{"params": [params[0]], "betas": (0.8, 0.99)},
                 {"params": [params[1]], "weight_decay": 0.0}], lr=0.05)
    ref = [x.copy() for x in init]
    ms = [numpy.zeros_like(x) for x in init]
    vs = [numpy.zeros_like(x) for x in init]
    for step in range(1, 4):
        grads = [rng.standard_normal(x.shape) for x in init]
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        _ref_adam(ref[:1], grads[:1], ms[:1], vs[:1], step, 0.05, 0.8, 0.99, 1e-8, 0.01, True)
        _ref_adam(ref[1:], grads[1:], ms[1:], vs[1:], step, 0.05, 0.9, 0.999, 1e-8, 0.0, True)
    for p, r in zip(params, ref):
        numpy.testing.assert_allclose(p.data, r, rtol=1e-12, atol=1e-14)


def test_no_decay_on_biases_from_a_module():
    model = gpuops.nn.Sequential(gpuops.nn.Linear(3, 4), gpuops.nn.Linear(4, 2))
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    assert [len(g["params"]) for g in opt.param_groups] == [2, 2]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]


@pytest.mark.parametrize("name,defaults,groups", [
    ("SGD", dict(lr=0.1, momentum=0.9), [{}, {"lr": 0.02, "weight_decay": 0.1, "nesterov": True}]),
    ("Adam", dict(lr=0.01, weight_decay=0.02), [{"betas": (0.5, 0.9)}, {"weight_decay": 0.0}]),
    ("AdamW", dict(lr=0.01), [{"eps": 1e-3}, {"lr": 0.1, "weight_decay": 0.0}]),
])
def test_param_groups_match_torch(name, defaults, groups):
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(9)
    init = [rng.standard_normal(s) for s in [(3, 4), (5,), (2,)]]
    ours = [Tensor(p.copy(), requires_grad=True) for p in init]
    theirs = [torch.tensor(p.copy(), requires_grad=True) for p in init]
    split = lambda ps: [{"params": ps[:1], **groups[0]}, {"params": ps[1:], **groups[1]}]
    opt = getattr(gpuops.optim, name)(split(ours), **defaults)
    topt = getattr(torch.optim, name)(split(theirs), **defaults)
    _step_both(torch, rng, init, (opt, ours), (topt, theirs), steps=5)
    for g, tg in zip(opt.param_groups, topt.param_groups):
        for key, value in g.items():
            if key != "params":
                assert tg[key] == value, key


# ---- learning-rate schedulers -------------------------------------------------------------------

def _sgd(lrs=(0.1,), momentum=0.0):
    groups = [{"params": [Tensor(numpy.ones(2), requires_grad=True)], "lr": lr} for lr in lrs]
    return SGD(groups, lr=lrs[0], momentum=momentum)


def _run(opt, scheduler, n):
    """The learning rates of epochs 0..n (one optimizer step per epoch)."""
    out = [scheduler.get_last_lr()]
    for _ in range(n):
        for p in opt.params:
            p.grad = numpy.zeros(p.shape)
        opt.step()
        scheduler.step()
        out.append(scheduler.get_last_lr())
        assert out[-1] == [g["lr"] for g in opt.param_groups]
    return numpy.array(out)


def test_step_lr_closed_form():
    opt = _sgd((0.1, 0.5))
    lrs = _run(opt, lr_scheduler.StepLR(opt, step_size=3, gamma=0.5), 10)
    expected = [[b * 0.5 ** (e // 3) for b in (0.1, 0.5)] for e in range(11)]
    numpy.testing.assert_allclose(lrs, expected, rtol=1e-14)
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.5]


def test_linear_lr_closed_form():
    opt = _sgd((0.2,))
    lrs = _run(opt, lr_scheduler.LinearLR(opt, start_factor=0.25, end_factor=0.75,
                                          total_iters=4), 8)
    expected = [0.2 * (0.25 + 0.5 * min(e, 4) / 4) for e in range(9)]
    numpy.testing.assert_allclose(lrs[:, 0], expected, rtol=1e-14)


def test_cosine_annealing_closed_form():
    opt = _sgd((0.3,))
    lrs = _run(opt, lr_scheduler.CosineAnnealingLR(opt, T_max=7, eta_min=0.01), 14)
    expected = [0.01 + (0.3 - 0.01) * (1 + math.cos(math.pi * e / 7)) / 2 for e in range(15)]
    numpy.testing.assert_allclose(lrs[:, 0], expected, rtol=1e-12, atol=1e-15)


def test_cosine_with_linear_warmup_closed_form():
    opt = _sgd((0.1, 0.02))
    warmup, total = 5, 20
    scheduler = lr_scheduler.SequentialLR(
        opt, [lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=warmup),
              lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=1e-4)],
        milestones=[warmup])
    lrs = _run(opt, scheduler, total)

    def closed(base, e):
        if e < warmup:
            return base * (0.01 + 0.99 * e / warmup)
        return 1e-4 + (base - 1e-4) * (1 + math.cos(math.pi * (e - warmup) / (total - warmup))) / 2
    expected = [[closed(b, e) for b in (0.1, 0.02)] for e in range(total + 1)]
    numpy.testing.assert_allclose(lrs, expected, rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("anneal", ["cos", "linear"])
def test_one_cycle_closed_form_with_momentum(anneal):
    opt = _sgd((0.1,), momentum=0.9)
    total, pct = 20, 0.25
    scheduler = lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=total, pct_start=pct,
                                        anneal_strategy=anneal)
    momenta = [opt.momentum]
    lrs = [scheduler.get_last_lr()[0]]
    for _ in range(total - 1):
        opt.params[0].grad = numpy.ones(2)
        opt.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
        momenta.append(opt.momentum)

    def anneal_f(a, b, t):
        return b + (a - b) / 2 * (math.cos(math.pi * t) + 1) if anneal == "cos" \
            else a + (b - a) * t
    start, peak, low = 0.5 / 25, 0.5, 0.5 / 25 / 1e4
    end1 = pct * total - 1
    exp_lr, exp_m = [], []
    for e in range(total):
        if e <= end1:
            t = e / end1
            exp_lr.append(anneal_f(start, peak, t))
            exp_m.append(anneal_f(0.95, 0.85, t))
        else:
            t = (e - end1) / (total - 1 - end1)
            exp_lr.append(anneal_f(peak, low, t))
            exp_m.append(anneal_f(0.85, 0.95, t))
    numpy.testing.assert_allclose(lrs, exp_lr, rtol=1e-13)
    numpy.testing.assert_allclose(momenta, exp_m, rtol=1e-13)
    assert lrs[int(end1)] == pytest.approx(peak) and lrs[-1] == pytest.approx(low)
    with pytest.raises(ValueError, match="OneCycleLR: tried to step 21 times; total_steps is 20"):
        scheduler.step()
        scheduler.step()


def test_one_cycle_cycles_adam_beta1_and_three_phase():
    p = Tensor(numpy.ones(2), requires_grad=True)
    opt = Adam([p], betas=(0.9, 0.99))
    scheduler = lr_scheduler.OneCycleLR(opt, max_lr=[0.01], epochs=2, steps_per_epoch=5,
                                        three_phase=True, pct_start=0.3)
    assert opt.betas == (0.95, 0.99) and opt.lr == pytest.approx(0.01 / 25)
    lrs = [opt.lr]
    for _ in range(9):
        scheduler.step()
        lrs.append(opt.lr)
    assert lrs[2] == pytest.approx(0.01)  # peak at pct·total - 1
    assert lrs[4] == pytest.approx(0.01 / 25)  # back at the start at 2·pct·total - 2
    assert lrs[9] == pytest.approx(0.01 / 25 / 1e4)
    with pytest.raises(ValueError, match="cycle_momentum needs an optimizer with momentum"):
        lr_scheduler.OneCycleLR(_FakeOptimizer(), max_lr=0.1, total_steps=5)


class _FakeOptimizer(gpuops.optim.Optimizer):
    def __init__(self):
        super().__init__([Tensor(numpy.ones(1), requires_grad=True)], {"lr": 0.1})


def test_scheduled_lr_is_what_the_optimizer_uses():
    opt = _sgd((1.0,))
    scheduler = lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    p = opt.params[0]
    for k in range(3):
        before = p.data.copy()
        p.grad = numpy.ones(2)
        opt.step()
        numpy.testing.assert_allclose(before - p.data, 0.5 ** k)
        scheduler.step()


def test_scheduler_state_dict_and_errors():
    opt = _sgd((0.1,))
    scheduler = lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for _ in range(4):
        scheduler.step()
    state = scheduler.state_dict()
    assert state["last_epoch"] == 4 and "optimizer" not in state
    opt2 = _sgd((0.1,))
    opt2.load_state_dict(opt.state_dict())
    opt2.param_groups[0]["initial_lr"] = 0.1
    again = lr_scheduler.CosineAnnealingLR(opt2, T_max=10, last_epoch=3)
    again.load_state_dict(state)
    scheduler.step()
    again.step()
    assert again.get_last_lr() == scheduler.get_last_lr()
    with pytest.raises(KeyError, match=r"'initial_lr' is not specified in param_groups\[0\]"):
        lr_scheduler.StepLR(_sgd(), step_size=2, last_epoch=3)
    with pytest.raises(TypeError, match="StepLR: list is not a gpuops.optim Optimizer"):
        lr_scheduler.StepLR([], step_size=2)
    with pytest.raises(ValueError, match="StepLR: step_size must be >= 1, got 0"):
        lr_scheduler.StepLR(_sgd(), step_size=0)
    with pytest.raises(ValueError, match=r"LinearLR: start_factor=0.0 is outside \(0, 1\]"):
        lr_scheduler.LinearLR(_sgd(), start_factor=0.0)
    with pytest.raises(ValueError, match="CosineAnnealingLR: T_max must be >= 1"):
        lr_scheduler.CosineAnnealingLR(_sgd(), T_max=0)
    with pytest.raises(ValueError, match="OneCycleLR: give total_steps"):
        lr_scheduler.OneCycleLR(_sgd(momentum=0.9), max_lr=0.1)
    with pytest.raises(ValueError, match="OneCycleLR: anneal_strategy"):
        lr_scheduler.OneCycleLR(_sgd(momentum=0.9), max_lr=0.1, total_steps=5,
                                anneal_strategy="exp")
    with pytest.raises(ValueError, match="OneCycleLR: max_lr has 2 values for 1"):
        lr_scheduler.OneCycleLR(_sgd(momentum=0.9), max_lr=[0.1, 0.2], total_steps=5)
    o = _sgd()
    with pytest.raises(ValueError, match="SequentialLR: 1 schedulers need 0 milestones"):
        lr_scheduler.SequentialLR(o, [lr_scheduler.StepLR(o, 2)], milestones=[3])
    with pytest.raises(ValueError, match=r"SequentialLR: schedulers\[0\] \(StepLR\) belongs "
                                         "to another optimizer"):
        lr_scheduler.SequentialLR(o, [lr_scheduler.StepLR(_sgd(), 2)], milestones=[])


@pytest.mark.parametrize("name,kwargs,n", [
    ("StepLR", dict(step_size=3, gamma=0.3), 12),
    ("LinearLR", dict(start_factor=0.1, end_factor=0.9, total_iters=6), 10),
    ("CosineAnnealingLR", dict(T_max=6, eta_min=0.001), 15),
    ("OneCycleLR", dict(max_lr=0.4, total_steps=16), 15),
    ("OneCycleLR", dict(max_lr=[0.4, 0.1], total_steps=16, three_phase=True,
                        anneal_strategy="linear"), 15),
    ("warmup_cosine", {}, 20),
])
def test_schedulers_match_torch(name, kwargs, n):
    torch = pytest.importorskip("torch")

    def build(optim_mod, sched_mod, params):
        opt = optim_mod.SGD([{"params": params[:1]}, {"params": params[1:], "lr": 0.05}],
                            lr=0.1, momentum=0.9)
        if name == "warmup_cosine":
            sched = sched_mod.SequentialLR(
                opt, [sched_mod.LinearLR(opt, start_factor=0.1, total_iters=4),
                      sched_mod.CosineAnnealingLR(opt, T_max=16)], milestones=[4])
        else:
            sched = getattr(sched_mod, name)(opt, **kwargs)
        return opt, sched
    ours = [Tensor(numpy.ones(3), requires_grad=True) for _ in range(2)]
    theirs = [torch.ones(3, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    opt, sched = build(gpuops.optim, lr_scheduler, ours)
    topt, tsched = build(torch.optim, torch.optim.lr_scheduler, theirs)
    for _ in range(n):
        for p, q in zip(ours, theirs):
            p.grad = numpy.full(3, 0.5)
            q.grad = torch.full((3,), 0.5, dtype=torch.float64)
        opt.step()
        topt.step()
        sched.step()
        tsched.step()
        assert sched.get_last_lr() == tsched.get_last_lr()
        assert [g["momentum"] for g in opt.param_groups] == [
            g["momentum"] for g in topt.param_groups]
    for p, q in zip(ours, theirs):
        numpy.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-13)


def test_optimizer_zero_grad_set_to_none_false():
    p, q = _one_param(), _one_param()
    opt = SGD([p, q], lr=0.1)
    p.grad = numpy.ones(3)
    grad = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is grad and not grad.any() and q.grad is None
    opt.zero_grad()
    assert p.grad is None
    assert opt.defaults == {"lr": 0.1, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}


# ---- WarmupCosineLR (llm.c's GPT-2 schedule) ----------------------------------------------------

def _warmup_cosine(base, e, warmup, total, min_lr):
    """llm.c / build-nanogpt get_lr, written out."""
    if e < warmup:
        return base * (e + 1) / warmup
    if e > total:
        return min_lr
    return min_lr + (base - min_lr) * 0.5 * (1 + math.cos(math.pi * (e - warmup)
                                                         / (total - warmup)))


@pytest.mark.parametrize("warmup,total,min_lr", [(5, 20, 1e-3), (0, 7, 0.0), (1, 2, 0.01),
                                                 (3, 4, 0.0)])
def test_warmup_cosine_closed_form(warmup, total, min_lr):
    opt = _sgd((0.1, 0.02))
    scheduler = lr_scheduler.WarmupCosineLR(opt, warmup, total, min_lr=min_lr)
    lrs = _run(opt, scheduler, total + 5)
    expected = [[_warmup_cosine(b, e, warmup, total, min_lr) for b in (0.1, 0.02)]
                for e in range(total + 6)]
    numpy.testing.assert_allclose(lrs, expected, rtol=1e-14, atol=1e-17)
    if warmup:
        assert lrs[0, 0] == pytest.approx(0.1 / warmup)
        assert lrs[warmup - 1, 0] == pytest.approx(0.1, rel=1e-15)
    assert lrs[warmup, 0] == 0.1  # the peak twice (end of warmup, start of the decay)
    assert lrs[total, 0] == pytest.approx(min_lr, abs=1e-17)
    assert (lrs[total:, 0] == lrs[total, 0]).all()


def test_warmup_cosine_resume_jump_and_state_dict():
    opt = _sgd((0.3,))
    scheduler = lr_scheduler.WarmupCosineLR(opt, warmup_steps=4, total_steps=12, min_lr=0.01)
    for _ in range(6):
        scheduler.step()
    state = scheduler.state_dict()
    assert state["last_epoch"] == 6 and state["warmup_steps"] == 4 and "optimizer" not in state
    resumed = lr_scheduler.WarmupCosineLR(opt, 4, 12, min_lr=0.01, last_epoch=5)
    assert resumed.get_last_lr() == scheduler.get_last_lr()  # 5 + the constructor's step
    fresh = lr_scheduler.WarmupCosineLR(_sgd((0.3,)), 1, 2)
    fresh.load_state_dict(state)
    fresh.step()
    scheduler.step()
    assert fresh.get_last_lr() == pytest.approx(scheduler.get_last_lr(), rel=1e-15)
    scheduler.step(2)  # a jump: the closed form
    assert scheduler.get_last_lr() == [pytest.approx(0.3 * 3 / 4)]


def test_warmup_cosine_errors():
    with pytest.raises(ValueError, match="WarmupCosineLR: total_steps=5 must exceed "
                                         "warmup_steps=5"):
        lr_scheduler.WarmupCosineLR(_sgd(), 5, 5)
    with pytest.raises(ValueError, match="WarmupCosineLR: warmup_steps must be >= 0, got -1"):
        lr_scheduler.WarmupCosineLR(_sgd(), -1, 5)
    with pytest.raises(TypeError, match="WarmupCosineLR: warmup_steps must be an int, got 1.5"):
        lr_scheduler.WarmupCosineLR(_sgd(), 1.5, 5)
    with pytest.raises(ValueError, match="WarmupCosineLR: total_steps must be >= 1, got 0"):
        lr_scheduler.WarmupCosineLR(_sgd(), 0, 0)
    with pytest.raises(ValueError, match=r"WarmupCosineLR: min_lr=-0.1 is outside"):
        lr_scheduler.WarmupCosineLR(_sgd(), 1, 5, min_lr=-0.1)
    with pytest.raises(TypeError, match="WarmupCosineLR: list is not a gpuops.optim Optimizer"):
        lr_scheduler.WarmupCosineLR([], 1, 5)


def test_warmup_cosine_matches_torch_lambda_lr():
    torch = pytest.importorskip("torch")
    warmup, total, min_lr, n = 3, 10, 0.004, 14
    ours = [Tensor(numpy.ones(3), requires_grad=True)]
    theirs = [torch.ones(3, dtype=torch.float64, requires_grad=True)]
    opt = SGD(ours, lr=0.1)
    scheduler = lr_scheduler.WarmupCosineLR(opt, warmup, total, min_lr=min_lr)
    topt = torch.optim.SGD(theirs, lr=0.1)
    tsched = torch.optim.lr_scheduler.LambdaLR(
        topt, lambda e: _warmup_cosine(0.1, e, warmup, total, min_lr) / 0.1)
    assert scheduler.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-15)
    for _ in range(n):
        ours[0].grad = numpy.full(3, 0.5)
        theirs[0].grad = torch.full((3,), 0.5, dtype=torch.float64)
        opt.step()
        topt.step()
        scheduler.step()
        tsched.step()
        assert scheduler.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-15)
    numpy.testing.assert_allclose(ours[0].data, theirs[0].detach().numpy(), rtol=1e-14)


# ---- the chunk table: built and uploaded once per set of arrays ------------------------

class _TableRecorder:
    """A launcher that keeps each launch's arguments (the table is args[0])."""
    name, max_blocks, tensor_cores = "table-recorder", 4, False

    def __init__(self):
        self.tables = []

    def launch(self, family, kernel, grid, block, args, shared_mem=0):
        self.tables.append(args[0])


def _table_pointers(table, n):
    """The parameter, gradient and first-state pointer rows of a table of n tensors."""
    return [list(table[r * n:(r + 1) * n]) for r in range(3)]


def test_chunk_table_is_built_once_per_set_of_arrays():
    """The same parameters, states and gradients: one table object, uploaded once; new
    gradient arrays elsewhere, or another parameter list: a new table with their addresses."""
    from gpuops import backend as _backend
    rng = numpy.random.default_rng(5)
    params = [rng.standard_normal(s).astype(numpy.float32) for s in ((4, 3), (5,))]
    velocities = [numpy.zeros_like(p) for p in params]
    grads = [numpy.ones_like(p) for p in params]
    recorder = _TableRecorder()
    uploads = []
    with _backend.use_cpu_launcher(recorder):
        for _ in range(3):
            gpuops.sgd_step(params, grads, velocities, lr=0.1, momentum=0.9)
        assert recorder.tables[0] is recorder.tables[1] is recorder.tables[2]
        other_grads = [numpy.ones_like(p) for p in params]  # grads alive: other addresses
        gpuops.sgd_step(params, other_grads, velocities, lr=0.1, momentum=0.9)
        other_params = [p.copy() for p in params]
        gpuops.sgd_step(other_params, other_grads, velocities, lr=0.1, momentum=0.9)
        gpuops.sgd_step(params, grads, velocities, lr=0.1, momentum=0.9)  # the first again
        uploads = recorder.tables
    addresses = [[[a.ctypes.data for a in row] for row in rows] for rows in
                 ((params, grads, velocities), (params, other_grads, velocities),
                  (other_params, other_grads, velocities), (params, grads, velocities))]
    for table, expected in zip(uploads[2:], addresses):
        assert _table_pointers(table, 2) == expected
    assert uploads[3] is not uploads[2] and uploads[4] is not uploads[3]
    assert uploads[5] is uploads[0]  # still cached


def test_chunk_table_never_serves_a_recycled_identity():
    """Parameters that are views at new offsets of one buffer, made, stepped and dropped
    (Python recycles the view objects' ids; the addresses differ): every launch's table
    holds the live arrays' addresses."""
    from gpuops import backend as _backend
    recorder = _TableRecorder()
    buffer = numpy.zeros(4096, numpy.float32)
    grads = [numpy.ones(4, numpy.float32)]
    ids = set()
    for trial in range(40):
        params = [buffer[8 * trial:8 * trial + 4]]
        ids.add(id(params[0]))
        with _backend.use_cpu_launcher(recorder):
            gpuops.sgd_step(params, grads, None, lr=0.5)
        assert int(recorder.tables[-1][0]) == params[0].ctypes.data
        del params
    assert len(ids) < 40  # ids were recycled, so the identity alone would have matched


@pytest.mark.parametrize("backend", [pytest.param(b, id=b.name, marks=b.marks)
                                     for b in BACKENDS if b.name == "emu"])
def test_optimizer_steps_reuse_the_table_and_follow_new_parameters(backend):
    """SGD over Tensors on the emulator: steady steps (gradients kept) reuse one table;
    parameters given new data arrays get a new table, and the updates land in them."""
    rng = numpy.random.default_rng(7)
    start = [rng.standard_normal(s) for s in ((6, 4), (6,))]
    grads = [rng.standard_normal(s) for s in ((6, 4), (6,))]
    params = [Tensor(p.copy(), requires_grad=True) for p in start]
    ref = [p.copy() for p in start]
    ref_bufs = [numpy.zeros_like(p) for p in start]
    opt = SGD(params, lr=0.1, momentum=0.9, nesterov=True)
    tables = []
    original = gpuops.ops.optim._build_tables

    def counting(*args):
        for entry in original(*args):
            tables.append(entry[1])
            yield entry

    gpuops.ops.optim._build_tables = counting
    try:
        with backend.active():
            for p, g in zip(params, grads):
                p.grad = g
            for step in range(4):
                opt.step()
                _ref_sgd(ref, grads, ref_bufs, 0.1, 0.9, True, 0.0)
            assert len(tables) == 1
            for p in params:  # new data arrays (as load or a move would give)
                p.data = p.data.copy()
            opt.step()
            _ref_sgd(ref, grads, ref_bufs, 0.1, 0.9, True, 0.0)
            assert len(tables) == 2
            assert list(tables[1][:2]) == [p.data.ctypes.data for p in params]
    finally:
        gpuops.ops.optim._build_tables = original
    for p, r in zip(params, ref):
        numpy.testing.assert_allclose(p.data, r, rtol=1e-12)


def test_hyperparameters_edited_between_steps_are_checked_again():
    """Hyperparameters are re-checked only when a group's values changed since the last
    step; any edit (a new value, a list mutated in place, an array) is seen."""
    p = Tensor(numpy.zeros(3), requires_grad=True)
    p.grad = numpy.ones(3)
    opt = Adam([p], lr=0.1)
    opt.param_groups[0]["betas"] = [0.9, 0.999]  # a list, as a user may set
    opt.step()
    opt.param_groups[0]["betas"][1] = 1.5  # the list mutated in place
    with pytest.raises(ValueError, match=r"betas\[1\]=1.5"):
        opt.step()
    opt.param_groups[0]["betas"] = (0.9, 0.999)
    opt.param_groups[0]["lr"] = numpy.array([0.1, 0.2])
    with pytest.raises(TypeError, match="lr must be a number"):
        opt.step()
    opt.param_groups[0]["lr"] = 0.1
    opt.step()
    assert opt.steps == [2]
