"""``out`` that shares memory with an input: every operator and every gradient, on every
backend, must give what it gives with a fresh ``out`` (the call protocol computes into
a fresh buffer and copies when ``out`` overlaps an input).

Two overlaps per input of the result's dtype:
- ``out`` is the input itself (``out=x``, ``out=gy``), when the shapes agree;
- ``out`` and the input are views of one buffer shifted by one element (``out=x[1:]``
  with the input ``x[:-1]``, like ``add(x[:-1], x[1:], out=x[1:])``).
"""
from __future__ import annotations

import numpy
import pytest

from backends import BACKENDS
from opinfo import F64
from records import RECORDS


def _cases():
    for record in RECORDS:
        for backend in BACKENDS:
            for fn in ["forward", *sorted(record.op.grads)]:
                yield pytest.param(record, backend, fn,
                                   id=f"{record.name}-{backend.name}-"
                                      f"{fn if fn == 'forward' else f'wrt_x{fn}'}",
                                   marks=backend.marks)


def _call(record, fn, args, params, out=None):
    function = record.op.forward if fn == "forward" else record.op.grads[fn]
    return function(*args, **params, out=out) if out is not None else function(*args, **params)


def _arguments(record, backend, fn, sample):
    """The float64 arguments of ``fn`` on ``backend``: the forward inputs, then y and gy."""
    inputs = backend.asarrays(record.cast(sample.inputs, F64))
    if fn == "forward":
        return list(inputs)
    y = record.op.forward(*inputs, **sample.params)
    gy = backend.asarray(numpy.random.default_rng(3).standard_normal(tuple(y.shape)))
    return [*inputs, y, gy]


def _float_positions(record, args, dtype):
    return [i for i, a in enumerate(args) if hasattr(a, "dtype") and a.dtype == dtype
            and a.size > 0 and (i + 1) not in record.int_inputs]


@pytest.mark.parametrize("record,backend,fn", list(_cases()))
def test_out_aliasing_an_input(record, backend, fn):
    sample = record.small_sample(min_elements=2)
    params = sample.params
    checked = 0
    with backend.active():
        args = _arguments(record, backend, fn, sample)
        expected = backend.to_numpy(_call(record, fn, args, params))
        shape = expected.shape
        xp = backend.xp()
        for i in _float_positions(record, args, numpy.dtype(expected.dtype)):
            where = f"{record.name} {fn}: out aliasing argument {i + 1}"
            if tuple(args[i].shape) == shape:  # out=x itself
                same = [a.copy() if hasattr(a, "copy") else a for a in args]
                result = _call(record, fn, same, params, out=same[i])
                assert result is same[i], where
                numpy.testing.assert_array_equal(backend.to_numpy(result), expected,
                                                 err_msg=f"{where} (out is it)")
                checked += 1
            # out and the input: views of one buffer, one element apart
            n_in, n_out = args[i].size, expected.size
            buffer = xp.zeros(max(n_in, n_out) + 1, dtype=expected.dtype)
            shifted = list(args)
            shifted[i] = buffer[1:1 + n_in].reshape(args[i].shape)
            shifted[i][...] = args[i]
            out = buffer[:n_out].reshape(shape)
            result = _call(record, fn, shifted, params, out=out)
            assert result is out, where
            numpy.testing.assert_array_equal(backend.to_numpy(out), expected,
                                             err_msg=f"{where} (shifted overlapping views)")
            checked += 1
    if not _float_positions(record, args, numpy.dtype(expected.dtype)):
        pytest.skip(f"{record.name} {fn}: no input of the result's dtype to alias")
    assert checked
