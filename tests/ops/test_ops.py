"""Generic operator tests, generated from the OpInfo records × backends × dtypes × samples.

- forward vs the float64 reference (contiguous and strided inputs)
- each gradient vs central finite differences in float64 along a random direction
- each gradient vs the reference gradient
- ``out=`` is written and returned
- kernel backends (emu, cupy) agree with the NumPy backend

16-bit dtypes: every record runs in float16 and bfloat16 on the NumPy backend, and on the
kernel backends in those its ``gpu_dtypes`` names (the family's kernel instantiations).
float16 on kernels keeps every test kind (it predates the NumPy backend's 16-bit rule); the
other 16-bit cases run the forward and reference-gradient tests and the kernel-vs-NumPy
parity over each record's two smallest samples (the CI budget: :func:`_sixteen_bit_cases`).
"""
from __future__ import annotations

import numpy
import pytest

import gpuops
from backends import BACKENDS, KERNEL_BACKENDS, TestBackend
from gpuops.call import result_dtype
from opinfo import BF16, F64, SIXTEEN_BIT, SIXTEEN_BIT_PENDING, is_float, sample_id
from records import RECORDS


def _param(record, backend, dtype, i, sample, marks=()):
    return pytest.param(record, backend, numpy.dtype(dtype), sample,
                        id=f"{record.name}-{backend.name}-{numpy.dtype(dtype).name}-"
                           f"{i}:{sample_id(sample)}",
                        marks=(*backend.marks, *marks))


def _cases(float64_only: bool = False):
    """Every sample of every record, in the dtypes each backend computes natively: the
    record's ``dtypes`` on NumPy, its kernel dtypes but bfloat16 on the kernel backends."""
    for record in RECORDS:
        samples = list(record.samples(numpy.random.default_rng(0)))
        for backend in BACKENDS:
            dtypes = record.dtypes if backend.name == "numpy" else \
                [d for d in record.kernel_dtypes() if d != BF16]
            if float64_only:
                dtypes = [d for d in dtypes if d == F64]
            for dtype in dtypes:
                for i, sample in enumerate(samples):
                    yield _param(record, backend, dtype, i, sample)


def _small_samples(record, count: int = 2, min_elements: int = 8):
    """The ``count`` smallest samples whose float inputs hold ``min_elements`` or more each
    (the smallest ones when too few do), with their indices."""
    def size(item):
        floats = [numpy.size(x) for k, x in enumerate(item[1].inputs, 1)
                  if isinstance(x, numpy.ndarray) and k not in record.int_inputs]
        return (min(floats, default=min_elements) < min_elements,
                sum(numpy.size(x) for x in item[1].inputs))
    return sorted(enumerate(record.samples(numpy.random.default_rng(0))), key=size)[:count]


def _sixteen_bit_cases():
    """The 16-bit cases :func:`_cases` leaves out: float16 and bfloat16 on NumPy for every
    record, bfloat16 on the kernel backends where the record's kernels have it; over the
    two smallest samples."""
    for record in RECORDS:
        samples = _small_samples(record)
        for backend in BACKENDS:
            dtypes = SIXTEEN_BIT if backend.name == "numpy" else \
                [d for d in record.kernel_dtypes() if d == BF16]
            pending = SIXTEEN_BIT_PENDING.get(record.name)
            marks = (pytest.mark.xfail(reason=pending, strict=False),) if pending else ()
            for dtype in dtypes:
                for i, sample in samples:
                    yield _param(record, backend, dtype, i, sample, marks)


def _assert_close(actual, expected, tol, what: str) -> None:
    rtol, atol = tol
    numpy.testing.assert_allclose(numpy.asarray(actual, dtype=F64), expected, rtol=rtol,
                                  atol=atol, err_msg=what, equal_nan=True)


@pytest.mark.parametrize("record,backend,dtype,sample", list(_cases()))
@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "strided"])
def test_forward(record, backend, dtype, sample, contiguous):
    _check_forward(record, backend, dtype, sample, contiguous)


@pytest.mark.parametrize("record,backend,dtype,sample", list(_sixteen_bit_cases()))
def test_forward_16bit(record, backend, dtype, sample):
    _check_forward(record, backend, dtype, sample, True)


def _check_forward(record, backend, dtype, sample, contiguous):
    """The forward against the float64 reference on the same (``dtype``-rounded) inputs."""
    inputs = record.cast(sample.inputs, dtype)
    expected = record.ref(*record.cast(inputs, F64), **sample.params)
    with backend.active():
        y = record.op.forward(*backend.asarrays(inputs, contiguous), **sample.params)
    assert type(y) is type(backend.asarray(numpy.zeros(1)))
    expected_dtype = result_dtype([x.dtype for x in inputs
                                   if isinstance(x, numpy.ndarray) and is_float(x.dtype)])
    assert y.dtype == expected_dtype, f"{record.name}: dtype {y.dtype}, expected {expected_dtype}"
    assert tuple(y.shape) == numpy.shape(expected)
    _assert_close(backend.to_numpy(y), expected, record.tolerance(dtype), record.name)


def _with_grads(params):
    for param in params:
        record = param.values[0]
        for k in sorted(record.op.grads):
            yield pytest.param(*param.values, k, id=f"{param.id}-wrt_x{k}", marks=param.marks)


def _grad_cases(float64_only: bool = False):
    return _with_grads(_cases(float64_only=float64_only))


def _upstream(rng, y) -> numpy.ndarray:
    return rng.standard_normal(numpy.shape(y))


@pytest.mark.parametrize("record,backend,dtype,sample,k", list(_grad_cases(float64_only=True)))
def test_gradient_finite_differences(record, backend, dtype, sample, k):
    """<grad_k, v> equals (f(x + eps v) - f(x - eps v)) / 2 eps with f = <forward, gy>
    (float64 only: that is where finite differences are accurate)."""
    rng = numpy.random.default_rng(1)
    inputs = record.cast(sample.inputs, dtype)
    op = record.op
    with backend.active():
        dev = backend.asarrays(inputs)
        y = op.forward(*dev, **sample.params)
        gy = _upstream(rng, backend.to_numpy(y))
        gx = backend.to_numpy(op.grads[k](*dev, y, backend.asarray(gy), **sample.params))
        xk = inputs[k - 1]
        assert numpy.shape(gx) == numpy.shape(xk)
        v = rng.standard_normal(numpy.shape(xk))
        eps = record.fd_eps

        def f(shift):
            moved = list(inputs)
            moved[k - 1] = (numpy.asarray(xk + shift * v) if isinstance(xk, numpy.ndarray)
                            else float(xk + shift * v))
            out = op.forward(*backend.asarrays(tuple(moved)), **sample.params)
            return float(numpy.sum(backend.to_numpy(out) * gy))

        numeric = (f(eps) - f(-eps)) / (2 * eps)
    analytic = float(numpy.sum(gx * v))
    rtol, atol = record.fd_tol
    scale = max(abs(numeric), abs(analytic))
    assert abs(numeric - analytic) <= atol + rtol * scale, (
        f"{record.name}_wrt_x{k}: analytic {analytic!r} vs finite differences {numeric!r}")


@pytest.mark.parametrize("record,backend,dtype,sample,k",
                         list(_grad_cases()) + list(_with_grads(_sixteen_bit_cases())))
def test_gradient_reference(record, backend, dtype, sample, k):
    if k not in record.grad_refs:
        pytest.skip(f"{record.name} has no reference gradient for x{k} (checked by finite differences)")
    rng = numpy.random.default_rng(2)
    inputs = record.cast(sample.inputs, dtype)
    inputs64 = record.cast(inputs, F64)
    y64 = record.ref(*inputs64, **sample.params)
    gy = _upstream(rng, y64).astype(dtype)
    expected = record.grad_refs[k](*inputs64, y64, gy.astype(F64), **sample.params)
    with backend.active():
        dev = backend.asarrays(inputs)
        y = record.op.forward(*dev, **sample.params)
        gx = record.op.grads[k](*dev, y, backend.asarray(gy), **sample.params)
    xk = inputs[k - 1]
    expected_dtype = xk.dtype if isinstance(xk, numpy.ndarray) else numpy.dtype(dtype)
    assert gx.dtype == expected_dtype
    assert tuple(gx.shape) == numpy.shape(expected)
    _assert_close(backend.to_numpy(gx), expected, record.tolerance(dtype),
                  f"{record.name}_wrt_x{k}")


@pytest.mark.parametrize("record,backend,dtype,sample", list(_cases()))
def test_out_argument(record, backend, dtype, sample):
    inputs = record.cast(sample.inputs, dtype)
    with backend.active():
        dev = backend.asarrays(inputs)
        y = record.op.forward(*dev, **sample.params)
        out = backend.xp().full(y.shape, 7, dtype=y.dtype)
        returned = record.op.forward(*dev, **sample.params, out=out)
        assert returned is out
        numpy.testing.assert_array_equal(backend.to_numpy(out), backend.to_numpy(y))
        gy = backend.asarray(numpy.ones(numpy.shape(y)), dtype=y.dtype)
        for k, grad in record.op.grads.items():
            g = grad(*dev, y, gy, **sample.params)
            gout = backend.xp().full(g.shape, 7, dtype=g.dtype)
            assert grad(*dev, y, gy, **sample.params, out=gout) is gout
            numpy.testing.assert_array_equal(backend.to_numpy(gout), backend.to_numpy(g))




@pytest.mark.parametrize("record,backend,dtype,sample",
                         [p for p in [*_cases(), *_sixteen_bit_cases()]
                          if p.values[1].name != "numpy"])
def test_parity_with_numpy_backend(record, backend, dtype, sample):
    """The kernels give what the NumPy implementation gives, forward and gradients (in a
    16-bit dtype: both compute in float32 and round once)."""
    inputs = record.cast(sample.inputs, dtype)
    cpu_inputs = inputs
    cpu = TestBackend()
    y_cpu = record.op.forward(*cpu.asarrays(cpu_inputs), **sample.params)
    gy = _upstream(numpy.random.default_rng(3), y_cpu).astype(dtype)
    with backend.active():
        dev = backend.asarrays(inputs)
        y = record.op.forward(*dev, **sample.params)
        grads = {k: g(*dev, y, backend.asarray(gy), **sample.params)
                 for k, g in record.op.grads.items()}
    tol = record.tolerance(dtype)
    _assert_close(backend.to_numpy(y), y_cpu.astype(F64), tol, record.name)
    for k, g in grads.items():
        g_cpu = record.op.grads[k](*cpu.asarrays(cpu_inputs), y_cpu,
                                   gy.astype(y_cpu.dtype), **sample.params)
        _assert_close(backend.to_numpy(g), numpy.asarray(g_cpu, dtype=F64), tol,
                      f"{record.name}_wrt_x{k}")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=str)
def test_kernel_16bit_dtypes_are_declared(backend):
    """A record's kernel dtypes name exactly the 16-bit dtypes its operator's kernels take:
    the others are rejected with a TypeError naming the dtype (so a family that gains
    bfloat16 kernels has its records say so, and its 16-bit cases run)."""
    wrong = []
    for record in RECORDS:
        sample = record.small_sample(min_elements=1)
        for dtype in SIXTEEN_BIT:
            if dtype in record.kernel_dtypes():
                continue
            with backend.active():
                try:
                    record.op.forward(*backend.asarrays(record.cast(sample.inputs, dtype)),
                                      **sample.params)
                except TypeError as error:
                    if dtype.name in str(error):
                        continue
                wrong.append(f"{record.name} ({dtype.name})")
    assert not wrong, f"kernels take 16-bit dtypes their records do not declare: {wrong}"


def test_every_operator_has_a_record():
    recorded = {r.name for r in RECORDS}
    missing = sorted(set(gpuops.OPERATORS) - recorded)
    assert not missing, f"operators without a test record: {missing}"


def test_every_record_names_an_operator():
    unknown = sorted({r.name for r in RECORDS} - set(gpuops.OPERATORS))
    assert not unknown, f"records for unknown operators: {unknown}"
