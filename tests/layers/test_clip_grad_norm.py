"""gpuops.clip_grad_norm: the global L2 norm of a list of gradients and the in-place scaling
of torch.nn.utils.clip_grad_norm_, on NumPy and on the kernels (grad_sumsq, grad_norm_finish,
grad_scale of cuda/optim.cu).

References: the norm and the scaled gradients computed in float64 from the same values
below, and torch.nn.utils.clip_grad_norm_ itself when torch is installed.
"""
from __future__ import annotations

import math

import ml_dtypes
import numpy
import pytest

import gpuops
from gpuops import backend as _backend
from gpuops import emu as _emu
from gpuops.ops.optim import CHUNK
from backends import BACKENDS, KERNEL_BACKENDS

F16, F32, F64 = numpy.float16, numpy.float32, numpy.float64
BF16 = ml_dtypes.bfloat16
# odd sizes, an empty tensor, one just past a chunk (two chunks of one tensor)
SHAPES = [(3, 5), (0,), (7,), (1,), (2, 3, 3), (CHUNK + 3,), (0, 4), (129,)]
TOL = {F16: 2e-3, BF16: 1.6e-2, F32: 2e-6, F64: 1e-13}


def _params(backends):
    return [pytest.param(b, id=b.name, marks=b.marks) for b in backends]


def _grads(rng, shapes, dtypes, scale=1.0):
    return [(scale * rng.standard_normal(s)).astype(dt) for s, dt in zip(shapes, dtypes)]


def _reference(grads, max_norm):
    """(norm, scaled gradients) in float64 from the gradients' values (torch's rule)."""
    total = math.sqrt(sum(float((g.astype(F64) ** 2).sum()) for g in grads))
    coef = min(max_norm / (total + 1e-6), 1.0)
    return total, [g.astype(F64) * coef for g in grads]


def _clip(backend, host_grads, max_norm, **kwargs):
    """clip_grad_norm on ``backend``: (norm as returned, the gradients after, on the host)."""
    with backend.active():
        grads = [backend.asarray(g.copy()) for g in host_grads]  # numpy: no copy otherwise
        norm = gpuops.clip_grad_norm(grads, max_norm, **kwargs)
    return norm, [backend.to_numpy(g) for g in grads]


@pytest.mark.parametrize("backend", _params(BACKENDS))
@pytest.mark.parametrize("dtype", [F16, BF16, F32, F64])
@pytest.mark.parametrize("ratio", [0.01, 0.9, 1.1, 1e3])  # max_norm / norm: clipped or not
def test_matches_float64_reference(backend, dtype, ratio):
    rng = numpy.random.default_rng(0)
    host = _grads(rng, SHAPES, [dtype] * len(SHAPES))
    max_norm = ratio * _reference(host, 1.0)[0]
    norm, after = _clip(backend, host, max_norm)
    expected_norm, expected = _reference(host, max_norm)
    assert norm.shape == () and norm.dtype == dtype
    assert type(norm) is type(backend.asarray(numpy.zeros(())))
    numpy.testing.assert_allclose(float(norm), expected_norm, rtol=TOL[dtype])
    for a, e, h in zip(after, expected, host):
        assert a.dtype == dtype and a.shape == h.shape
        numpy.testing.assert_allclose(a.astype(F64), e, rtol=TOL[dtype], atol=1e-6)
    if max_norm > expected_norm:  # below the limit: untouched, bit for bit
        for a, h in zip(after, host):
            assert numpy.array_equal(a, h)
    else:
        total = math.sqrt(sum(float((a.astype(F64) ** 2).sum()) for a in after))
        # max_norm up to the 1e-6 of the rule
        expected_total = max_norm * expected_norm / (expected_norm + 1e-6)
        assert total == pytest.approx(expected_total, rel=10 * TOL[dtype])


@pytest.mark.parametrize("backend", _params(BACKENDS))
def test_many_tensors_and_mixed_dtypes(backend):
    """100 tensors of four dtypes (one launch per dtype on kernels): one global norm, the
    promoted dtype, every tensor scaled by the same factor."""
    rng = numpy.random.default_rng(1)
    shapes = [(int(n),) for n in rng.integers(0, 40, size=100)]
    dtypes = [(F16, BF16, F32, F64)[i % 4] for i in range(100)]
    host = _grads(rng, shapes, dtypes)
    norm, after = _clip(backend, host, 2.0)
    expected_norm, expected = _reference(host, 2.0)
    assert norm.dtype == F64
    numpy.testing.assert_allclose(float(norm), expected_norm, rtol=1e-13)
    for a, e, dt in zip(after, expected, dtypes):
        assert a.dtype == dt
        numpy.testing.assert_allclose(a.astype(F64), e, rtol=TOL[dt], atol=1e-6)
    # without float64 tensors the norm comes back as float32
    norm, _ = _clip(backend, [g for g in host if g.dtype != F64], 2.0)
    assert norm.dtype == F32


@pytest.mark.parametrize("backend", _params(BACKENDS))
def test_squares_do_not_overflow_or_underflow(backend):
    """float64 sums: float32 gradients of 1e30 (squares past float32's range) and 1e-30
    (squares below its subnormals) still give the right norm."""
    for value, max_norm in ((1e30, 1e34), (1e-30, 1.0)):  # norms below max_norm
        host = [numpy.full(300, value, dtype=F32), numpy.full(5, value, dtype=F32)]
        norm, after = _clip(backend, host, max_norm)
        numpy.testing.assert_allclose(float(norm), math.sqrt(305) * value, rtol=1e-6)
        assert all(numpy.array_equal(a, h) for a, h in zip(after, host))
    norm, after = _clip(backend, [numpy.full(300, 1e30, dtype=F32)], 1.0)
    numpy.testing.assert_allclose(after[0].astype(F64), numpy.full(300, 1 / math.sqrt(300)),
                                  rtol=1e-6)
    # float16: the returned norm rounds to inf past 65504, the clipping is still right
    host = [numpy.full(50, 30000.0, dtype=F16)]
    norm, after = _clip(backend, host, 1.0)
    assert float(norm) == math.inf
    numpy.testing.assert_allclose(after[0].astype(F64), numpy.full(50, 1 / math.sqrt(50)),
                                  rtol=1e-3)


@pytest.mark.parametrize("backend", _params(BACKENDS))
def test_zero_max_norm_empty_tensors_and_one_array(backend):
    rng = numpy.random.default_rng(2)
    host = _grads(rng, [(4, 3), (6,)], [F32, F32])
    norm, after = _clip(backend, host, 0.0)
    assert float(norm) > 0 and all(not a.any() for a in after)
    norm, after = _clip(backend, [numpy.zeros((0,)), numpy.zeros((3, 0))], 1.0)
    assert float(norm) == 0.0 and [a.shape for a in after] == [(0,), (3, 0)]
    norm, after = _clip(backend, [numpy.zeros(5)], 1.0)  # a zero norm: nothing to scale
    assert float(norm) == 0.0 and not after[0].any()
    with backend.active():  # one array instead of a list, as torch accepts one tensor
        g = backend.asarray(numpy.full(4, 3.0))
        norm = gpuops.clip_grad_norm(g, 1.0)
    assert float(norm) == 6.0
    numpy.testing.assert_allclose(backend.to_numpy(g), numpy.full(4, 3.0 / (6.0 + 1e-6)))


@pytest.mark.parametrize("backend", _params(BACKENDS))
def test_non_finite_norm_scales_like_torch(backend):
    """NaN anywhere: norm NaN, every gradient NaN; inf (no NaN): norm inf, coef 0, so the
    finite gradients become 0 and the infinite ones NaN (inf · 0), as torch does with
    error_if_nonfinite=False."""
    g = numpy.array([1.0, numpy.nan, 2.0])
    norm, after = _clip(backend, [g, numpy.ones(4)], 1.0)
    assert math.isnan(float(norm)) and all(numpy.isnan(a).all() for a in after)
    g = numpy.array([1.0, numpy.inf, 2.0], dtype=F32)
    norm, after = _clip(backend, [g, numpy.ones(4, dtype=F32)], 1.0)
    assert float(norm) == math.inf
    numpy.testing.assert_array_equal(after[0], [0.0, numpy.nan, 0.0])
    numpy.testing.assert_array_equal(after[1], numpy.zeros(4))
    with backend.active():
        grads = [backend.asarray(g.copy()), backend.asarray(numpy.ones(4, dtype=F32))]
        with pytest.raises(RuntimeError, match=r"clip_grad_norm: the total norm of the "
                                               r"gradients is inf, .*nothing was changed"):
            gpuops.clip_grad_norm(grads, 1.0, error_if_nonfinite=True)
    numpy.testing.assert_array_equal(backend.to_numpy(grads[0]), g)
    numpy.testing.assert_array_equal(backend.to_numpy(grads[1]), numpy.ones(4))
    norm, after = _clip(backend, [numpy.full(3, 2.0)], 1.0, error_if_nonfinite=True)
    assert float(norm) == pytest.approx(math.sqrt(12))


@pytest.mark.parametrize("backend", _params(KERNEL_BACKENDS))
def test_kernels_are_bitwise_repeatable_and_match_numpy(backend):
    """The fixed-order reduction gives the same bits on every run, and for the emulator
    whatever the grid (1 block or many); float64 sums match NumPy's to rounding."""
    rng = numpy.random.default_rng(3)
    shapes = [(2 * CHUNK + 5,), (31,), (CHUNK,), (3, 7)]
    host = _grads(rng, shapes, [F32, F64, F32, F16], scale=3.0)
    runs = [_clip(backend, host, 1.0) for _ in range(3)]
    if backend.name == "emu":
        for max_blocks in (1, 2):  # the default emulator launcher: 4
            with _backend.use_cpu_launcher(_emu.EmuLauncher(max_blocks=max_blocks)):
                grads = [g.copy() for g in host]
                runs.append((gpuops.clip_grad_norm(grads, 1.0), grads))
    first_norm, first = runs[0]
    for norm, after in runs[1:]:
        assert backend.to_numpy(norm).tobytes() == backend.to_numpy(first_norm).tobytes()
        for a, b in zip(after, first):
            assert backend.to_numpy(a).tobytes() == b.tobytes()
    cpu_norm, cpu_after = _clip(BACKENDS[0], host, 1.0)
    numpy.testing.assert_allclose(float(first_norm), float(cpu_norm), rtol=1e-14)
    for a, b, h in zip(first, cpu_after, host):
        numpy.testing.assert_allclose(a.astype(F64), b.astype(F64), rtol=TOL[h.dtype.type])


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("max_norm", [0.3, 100.0])
def test_matches_torch(dtype, max_norm):
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(4)
    host = _grads(rng, SHAPES, [dtype] * len(SHAPES))
    params = []
    for g in host:
        p = torch.zeros(g.shape, dtype=getattr(torch, numpy.dtype(dtype).name),
                        requires_grad=True)
        p.grad = torch.from_numpy(g.copy())
        params.append(p)
    expected_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    for backend in BACKENDS:
        norm, after = _clip(backend, host, max_norm)
        numpy.testing.assert_allclose(float(norm), float(expected_norm), rtol=TOL[dtype])
        for a, p in zip(after, params):
            numpy.testing.assert_allclose(a, p.grad.numpy(), rtol=2 * TOL[dtype], atol=1e-7)


@pytest.mark.parametrize("backend", _params(BACKENDS))
def test_errors_name_the_function_and_value(backend):
    g = numpy.ones(3)
    with backend.active():
        grads = [backend.asarray(g), backend.asarray(2 * g)]
        cases = [
            ((grads, float("nan")), {}, ValueError, r"clip_grad_norm: max_norm=nan must be "
                                                    r"finite and >= 0"),
            ((grads, float("inf")), {}, ValueError, "max_norm=inf must be finite"),
            ((grads, -1.0), {}, ValueError, r"max_norm=-1.0 must be finite and >= 0"),
            ((grads, True), {}, TypeError, "clip_grad_norm: max_norm must be a number, got bool"),
            ((grads, "1"), {}, TypeError, "max_norm must be a number, got str"),
            ((grads, 1.0), {"norm_type": 1}, ValueError,
             r"clip_grad_norm: norm_type=1 is not supported \(only 2"),
            ((grads, 1.0), {"norm_type": "inf"}, ValueError, "norm_type='inf' is not supported"),
            ((grads, 1.0), {"error_if_nonfinite": 1}, TypeError,
             "error_if_nonfinite must be a bool, got 1"),
            (([], 1.0), {}, ValueError, "clip_grad_norm: grads is empty"),
            (({"a": grads[0]}, 1.0), {}, TypeError,
             "clip_grad_norm: grads must be a list of arrays, got dict"),
            (([grads[0], 3.0], 1.0), {}, TypeError,
             r"clip_grad_norm: grads\[1\] must be a NumPy or CuPy array"),
            (([grads[0], backend.asarray(numpy.ones(2, dtype=numpy.int64))], 1.0), {},
             TypeError, r"clip_grad_norm: grads\[1\] has dtype int64"),
        ]
        for args, kwargs, error, message in cases:
            with pytest.raises(error, match=message):
                gpuops.clip_grad_norm(*args, **kwargs)
        if backend.name != "numpy":
            strided = backend.asarray(numpy.full(6, 5.0), contiguous=False)
            with pytest.raises(ValueError, match=r"clip_grad_norm: arrays must be "
                                                 r"C-contiguous .*tensor 1 is not"):
                gpuops.clip_grad_norm([grads[0], strided], 1.0)
            assert (backend.to_numpy(strided) == 5.0).all()
    assert all((backend.to_numpy(x) == v).all() for x, v in zip(grads, (g, 2 * g)))


def test_mixed_backends_are_an_error():
    if not gpuops.gpu_available():
        pytest.skip("needs CuPy and a GPU for a CuPy array")
    import cupy
    with pytest.raises(TypeError, match="clip_grad_norm: mixed NumPy and CuPy inputs"):
        gpuops.clip_grad_norm([numpy.ones(3), cupy.ones(3)], 1.0)


def test_exported_like_the_optimizer_steps():
    assert gpuops.clip_grad_norm is gpuops.optim.clip_grad_norm
    assert "clip_grad_norm" in gpuops.__all__ and "clip_grad_norm" not in gpuops.OPERATORS
