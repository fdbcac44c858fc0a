"""Property-based tests (hypothesis, fixed budget and seed).

- every operator, on every backend: its samples with each input laid out at random
  (C order, Fortran order, negative strides, a strided view) give the reference
  forward, and gradients that match finite differences;
- the broadcasting binary ops over random mutually broadcastable shapes (0-size and
  1-element included) in float32 and float64, against NumPy.
"""
from __future__ import annotations

import numpy
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import gpuops
from backends import BACKENDS
from opinfo import F32, F64
from records import RECORDS

BUDGET = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow,
                                         HealthCheck.function_scoped_fixture])
LAYOUTS = ("c", "fortran", "reversed", "strided")


def _lay_out(backend, x: numpy.ndarray, layout: str):
    """``x`` on ``backend`` with the same values in the given memory layout."""
    if layout == "strided":
        return backend.asarray(x, contiguous=False)
    dev = backend.asarray(x)
    xp = backend.xp()
    if layout == "fortran" and dev.ndim:  # (asfortranarray makes a 0-d array 1-d)
        return xp.asfortranarray(dev)
    if layout == "reversed" and dev.ndim:
        return xp.ascontiguousarray(dev[::-1])[::-1]
    return dev


def _prepare(record, sample, layouts, backend, dtype):
    host, dev = [], []
    for k, x in enumerate(sample.inputs, 1):
        if not isinstance(x, numpy.ndarray) or k in record.int_inputs:
            host.append(x)
            dev.append(backend.asarray(x) if isinstance(x, numpy.ndarray) else x)
            continue
        x = x.astype(dtype)
        host.append(x)
        dev.append(_lay_out(backend, x, layouts[(k - 1) % len(layouts)]))
    return tuple(host), tuple(dev)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.name)
@BUDGET
@given(data=st.data())
def test_any_layout(record, backend, data):
    samples = list(record.samples(numpy.random.default_rng(0)))
    sample = data.draw(st.sampled_from(samples), label="sample")
    layouts = data.draw(st.lists(st.sampled_from(LAYOUTS), min_size=1, max_size=4),
                        label="layouts")
    dtype = F64
    host, dev = _prepare(record, sample, layouts, backend, dtype)
    op = record.op
    with backend.active():
        y = op.forward(*dev, **sample.params)
        numpy.testing.assert_allclose(backend.to_numpy(y), record.ref(*host, **sample.params),
                                      *record.tolerance(dtype), equal_nan=True)
        rng = numpy.random.default_rng(5)
        gy = rng.standard_normal(numpy.shape(y))
        for k, grad in op.grads.items():
            xk = host[k - 1]
            gx = backend.to_numpy(grad(*dev, y, _lay_out(backend, gy, layouts[0]),
                                       **sample.params))
            v = rng.standard_normal(numpy.shape(xk))
            eps = record.fd_eps

            def f(shift):
                moved = list(dev)
                moved[k - 1] = (backend.asarray(xk + shift * v) if isinstance(xk, numpy.ndarray)
                                else float(xk + shift * v))
                return float(numpy.sum(backend.to_numpy(op.forward(*moved, **sample.params))
                                       * gy))

            numeric = (f(eps) - f(-eps)) / (2 * eps)
            analytic = float(numpy.sum(gx * v))
            rtol, atol = record.fd_tol
            assert abs(numeric - analytic) <= atol + rtol * max(abs(numeric), abs(analytic)), \
                f"{record.name}_wrt_x{k}: {analytic} vs finite differences {numeric}"


BINARY = {"add": numpy.add, "sub": numpy.subtract, "mul": numpy.multiply}


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("name", sorted(BINARY))
@BUDGET
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=5,
                                                 min_side=0, max_side=4),
       dtype=st.sampled_from([F32, F64]), seed=st.integers(0, 2**32 - 1))
def test_broadcasting_binary(name, backend, shapes, dtype, seed):
    rng = numpy.random.default_rng(seed)
    s1, s2 = shapes.input_shapes
    x1 = rng.standard_normal(s1).astype(dtype)
    x2 = rng.standard_normal(s2).astype(dtype)
    forward = getattr(gpuops, name)
    with backend.active():
        d1, d2 = backend.asarray(x1), backend.asarray(x2)
        y = forward(d1, d2)
        expected = BINARY[name](x1.astype(F64), x2.astype(F64))
        rtol, atol = (2e-6, 1e-6) if dtype == F32 else (1e-12, 1e-12)
        numpy.testing.assert_allclose(backend.to_numpy(y), expected, rtol=rtol, atol=atol)
        gy = rng.standard_normal(y.shape).astype(dtype)
        sign = -1.0 if name == "sub" else 1.0
        for k, (xk, other) in enumerate(((x1, x2), (x2, x1)), 1):
            g = getattr(gpuops, f"{name}_wrt_x{k}")(d1, d2, y, backend.asarray(gy))
            full = gy.astype(F64) * (other.astype(F64) if name == "mul" else
                                     (sign if k == 2 else 1.0))
            full = numpy.broadcast_to(full, y.shape)
            lead = full.ndim - xk.ndim
            axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(xk.shape)
                                               if s == 1 and full.shape[lead + i] != 1)
            expected_g = full.sum(axis=axes).reshape(xk.shape)
            assert g.shape == xk.shape and g.dtype == xk.dtype
            numpy.testing.assert_allclose(backend.to_numpy(g), expected_g,
                                          rtol=rtol * 10, atol=atol * 100)
