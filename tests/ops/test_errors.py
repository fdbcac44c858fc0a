"""Wrong calls raise a clear error naming the operator and the bad value, and leave
the inputs and ``out`` untouched.

Generic wrong calls are derived from each record's samples (integer, bool and list
inputs; NumPy subclasses whose meaning the operators do not honour: masked arrays and
``numpy.matrix``; ``out`` of the wrong shape, dtype or type, read-only, or a subclass;
``gy`` of the wrong shape);
operator-specific ones come from the record's ``error_inputs``. Every operator in
the registry must have both.
"""
from __future__ import annotations

import re

import numpy
import pytest

from backends import BACKENDS
from opinfo import F32, ErrorInput, OpInfo, Sample
from records import RECORDS


def _valid_sample(record: OpInfo) -> Sample:
    """The first sample whose float inputs are all non-empty arrays."""
    for sample in record.samples(numpy.random.default_rng(0)):
        floats = [x for k, x in enumerate(sample.inputs, 1)
                  if k not in record.int_inputs and x is not None]
        if all(isinstance(x, numpy.ndarray) and x.ndim >= 1 and x.size > 0 for x in floats):
            return sample
    raise AssertionError(f"{record.name}: no sample with non-empty array inputs")


def _snapshot(xs):
    return [None if not isinstance(x, numpy.ndarray) else x.copy() for x in xs]


def _assert_untouched(before, xs):
    for b, x in zip(before, xs):
        if b is not None:
            numpy.testing.assert_array_equal(x, b, err_msg="a rejected call modified its input")


def _call(record: OpInfo, fn, inputs: tuple, params: dict, sample: Sample, sample_inputs: tuple,
          **kw):
    """Call the forward (fn == "forward") or gradient k; y and gy come from a valid
    call unless ``inputs`` carry them (forward inputs + 2)."""
    op = record.op
    if fn == "forward":
        return op.forward(*inputs, **params, **kw)
    if len(inputs) == len(sample_inputs) + 2:  # the call gives its own y and gy
        return op.grads[fn](*inputs, **params, **kw)
    valid = record.cast(sample_inputs, F32)
    y = op.forward(*valid, **sample.params)
    gy = kw.pop("gy", None)
    if gy is None:
        gy = numpy.ones_like(y)
    return op.grads[fn](*inputs, y, gy, **params, **kw)


def _generic_errors(record: OpInfo):
    """(fn, inputs, kwargs, exc, message regex) for wrong calls any operator must reject."""
    sample = _valid_sample(record)
    inputs = record.cast(sample.inputs, F32)
    fns = ["forward", *sorted(record.op.grads)]
    for k, x in enumerate(inputs, 1):
        if k in record.int_inputs or not isinstance(x, numpy.ndarray):
            continue
        for bad, what in ((x.astype(numpy.int64), "int64"), (x > 0, "bool"),
                          (x.tolist(), "list")):
            moved = list(inputs)
            moved[k - 1] = bad
            for fn in fns:
                yield fn, tuple(moved), {}, TypeError, what
        subclasses = [(numpy.ma.masked_array(x, mask=x > 0), "MaskedArray.*subclass")]
        if x.ndim == 2:
            subclasses.append((x.view(numpy.matrix), "matrix.*subclass"))
        for bad, what in subclasses:
            moved = list(inputs)
            moved[k - 1] = bad
            for fn in fns:
                yield fn, tuple(moved), {}, TypeError, what
    y = record.op.forward(*inputs, **sample.params)
    read_only = numpy.zeros(y.shape, y.dtype)
    read_only.flags.writeable = False
    yield "forward", inputs, {"out": read_only}, ValueError, "out is read-only"
    yield "forward", inputs, {"out": numpy.ma.masked_array(numpy.zeros(y.shape, y.dtype))}, \
        TypeError, "MaskedArray"
    yield "forward", inputs, {"out": numpy.empty(y.shape + (2,), y.dtype)}, ValueError, \
        re.escape(str(tuple(y.shape) + (2,)))
    yield "forward", inputs, {"out": numpy.empty(y.shape, numpy.float64)}, TypeError, "float64"
    yield "forward", inputs, {"out": [0.0]}, TypeError, "list"
    for k in sorted(record.op.grads):
        bad_gy = numpy.ones(y.shape + (2,), y.dtype)
        yield k, inputs, {"gy": bad_gy}, ValueError, re.escape(str(tuple(bad_gy.shape)))


def _generic_cases():
    for record in RECORDS:
        for i, (fn, inputs, kw, exc, match) in enumerate(_generic_errors(record)):
            yield pytest.param(record, fn, inputs, kw, exc, match, id=f"{record.name}-{i}")


@pytest.mark.parametrize("record,fn,inputs,kw,exc,match", list(_generic_cases()))
def test_generic_wrong_call(record, fn, inputs, kw, exc, match):
    sample = _valid_sample(record)
    before = _snapshot(inputs)
    out = kw.get("out")
    out_before = out.copy() if isinstance(out, numpy.ndarray) else None
    name = record.name if fn == "forward" else f"{record.name}_wrt_x{fn}"
    with pytest.raises(exc) as info:
        _call(record, fn, inputs, sample.params, sample, sample.inputs, **dict(kw))
    message = str(info.value)
    assert name in message, f"message does not name {name}: {message!r}"
    assert re.search(match, message), f"message does not show {match!r}: {message!r}"
    _assert_untouched(before, inputs)
    if out_before is not None:
        numpy.testing.assert_array_equal(out, out_before)


def _specific_cases():
    for record in RECORDS:
        if record.error_inputs is None:
            continue
        for i, err in enumerate(record.error_inputs(numpy.random.default_rng(0))):
            yield pytest.param(record, err, id=f"{record.name}-{i}")


@pytest.mark.parametrize("record,err", list(_specific_cases()))
@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_specific_wrong_call(record, err: ErrorInput, backend):
    sample = _valid_sample(record)
    inputs = tuple(backend.asarray(x) if isinstance(x, numpy.ndarray) else x
                   for x in err.inputs)
    name = record.name if err.fn == "forward" else f"{record.name}_wrt_x{err.fn}"
    with backend.active(), pytest.raises(err.exc) as info:
        _call(record, err.fn, inputs, err.params, sample,
              tuple(backend.asarray(x) if isinstance(x, numpy.ndarray) else x
                    for x in sample.inputs))
    message = str(info.value)
    assert name in message, f"message does not name {name}: {message!r}"
    assert re.search(err.match, message), f"message does not show {err.match!r}: {message!r}"


def test_every_operator_has_specific_error_inputs():
    missing = sorted(r.name for r in RECORDS if r.error_inputs is None)
    assert not missing, f"records without error_inputs: {missing}"


@pytest.mark.gpu
@pytest.mark.skipif(not any(b.name == "cupy" for b in BACKENDS), reason="no usable CUDA GPU")
@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.name)
def test_mixed_numpy_and_cupy_inputs(record):
    import cupy
    sample = _valid_sample(record)
    inputs = record.cast(sample.inputs, F32)
    arrays = [k for k, x in enumerate(inputs, 1) if isinstance(x, numpy.ndarray)]
    if len(arrays) < 2:
        pytest.skip(f"{record.name} takes one array")
    mixed = tuple(cupy.asarray(x) if k == arrays[0] else x for k, x in enumerate(inputs, 1))
    with pytest.raises(TypeError, match=f"{record.name}.*mixed NumPy and CuPy"):
        record.op.forward(*mixed, **sample.params)
