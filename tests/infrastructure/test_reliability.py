"""Reliability: memory stays flat over many calls, results are bitwise repeatable,
threads get correct results, and (on a GPU) tensors past 2^31 elements work."""
from __future__ import annotations

import gc
import os
import threading
import tracemalloc
from collections import defaultdict

import numpy
import pytest

import gpuops
from backends import BACKENDS, KERNEL_BACKENDS
from opinfo import F32
from records import RECORDS


def _inputs(record, sample, backend, dtype=F32):
    return backend.asarrays(record.cast(sample.inputs, dtype))


def _call_all(record, sample, inputs, backend):
    op = record.op
    y = op.forward(*inputs, **sample.params)
    gy = backend.asarray(numpy.ones(numpy.shape(y)), dtype=y.dtype)
    return [y] + [g(*inputs, y, gy, **sample.params) for g in op.grads.values()]


def _families():
    by_family = defaultdict(list)
    for record in RECORDS:
        by_family[record.op.family].append(record)
    return sorted(by_family.items())


# 10,000 calls per family on NumPy and CuPy; fewer on the emulator, whose launches
# run thousands of OS threads each.
CALLS = {"numpy": 10_000, "cupy": 10_000, "emu": 200}
# Where the calls under test allocate: gpuops and NumPy's Python code (an allocation is
# filed under the innermost Python line, e.g. the gpuops line that calls into NumPy).
CALLED_CODE = [os.path.join(os.path.dirname(m.__file__), "*") for m in (gpuops, numpy)]


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("family,records", _families(), ids=lambda v: v if isinstance(v, str)
                         else "")
def test_memory_is_flat_over_many_calls(family, records, backend):
    cases = [(r, r.small_sample()) for r in records]  # few elements: many calls
    calls_per_round = sum(1 + len(r.op.grads) for r in records)
    rounds = max(4, CALLS[backend.name] // calls_per_round)
    with backend.active():
        prepared = [(r, s, _inputs(r, s, backend)) for r, s in cases]

        def run(n):
            for _ in range(n):
                for r, s, inputs in prepared:
                    _call_all(r, s, inputs, backend)

        # The first half settles what grows once (compiled kernels, caches); the second half
        # is measured in two quarters, and a leak grows in both. Something that grows once
        # more shows in one quarter only (seen in CI: a single 1.9 MB block, count +1, filed
        # under a NumPy line, after the rest of the suite had run in the process).
        settle = rounds // 2
        quarter = max(1, (rounds - settle) // 2)
        run(settle)
        gc.collect()
        if backend.name == "cupy":
            import cupy
            pool = cupy.get_default_memory_pool()
            used = [pool.used_bytes()]
            for _ in range(2):
                run(quarter)
                cupy.cuda.Device().synchronize()
                used.append(pool.used_bytes())
            assert min(used[1] - used[0], used[2] - used[1]) <= 1 << 19, used
            return
        tracemalloc.start()
        snapshots = [tracemalloc.take_snapshot()]
        for _ in range(2):
            run(quarter)
            gc.collect()
            snapshots.append(tracemalloc.take_snapshot())
        tracemalloc.stop()
    # Only what the calls under test allocated and kept: pytest, hypothesis or a thread
    # left by another test may allocate meanwhile too.
    ours = [tracemalloc.Filter(True, pattern) for pattern in CALLED_CODE]
    kept = [snapshot.filter_traces(ours) for snapshot in snapshots]
    growth = [kept[i + 1].compare_to(kept[i], "lineno") for i in range(2)]
    grown = [sum(stat.size_diff for stat in g) for g in growth]
    top = "\n".join(str(stat) for stat in sorted(growth[1], key=lambda s: -s.size_diff)[:3])
    assert min(grown) < 128 * 1024, (
        f"{family}: memory allocated by gpuops and NumPy grew by {grown} bytes in each of "
        f"two runs of {quarter} rounds; the largest sites of the second:\n{top}")


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.name)
def test_bitwise_repeatable(record, backend):
    """Same inputs (and seed) give bitwise-identical results run to run."""
    sample = max(record.samples(numpy.random.default_rng(0)),
                 key=lambda s: sum(numpy.size(x) for x in s.inputs))
    with backend.active():
        inputs = _inputs(record, sample, backend)
        first = [backend.to_numpy(r) for r in _call_all(record, sample, inputs, backend)]
        second = [backend.to_numpy(r) for r in _call_all(record, sample, inputs, backend)]
    for a, b in zip(first, second):
        assert a.tobytes() == b.tobytes(), f"{record.name}: results differ run to run"


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_threads_get_correct_results(backend):
    """8 threads calling operators at once (first kernel use included) all get right answers."""
    rng = numpy.random.default_rng(0)
    xs = [rng.standard_normal((37, 11)) for _ in range(8)]
    results: dict[int, object] = {}
    errors = []
    barrier = threading.Barrier(8)

    def work(i):
        try:
            with backend.active():
                x = backend.asarray(xs[i])
                barrier.wait()
                y = gpuops.add(gpuops.mul(x, x), x)
                results[i] = backend.to_numpy(y)
        except Exception as e:  # reported below, with the thread's index
            errors.append((i, e))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, x in enumerate(xs):
        numpy.testing.assert_allclose(results[i], x * x + x, rtol=1e-12)


GPU = [b for b in BACKENDS if b.name == "cupy"]
BIG = 2**31 + 1000  # past what a 32-bit index can address
SMALL = 5_001  # the same checks at a size every backend runs (they check the test too)


def _elementwise_and_reduction(backend, n):
    """add, the broadcast gradient of add (a sum of all n elements into one) and sum,
    with the last element distinct: a 32-bit index would miss or misplace it."""
    xp = backend.xp()
    x = xp.ones(n, dtype=xp.float32)
    x[-1] = 3.0
    y = gpuops.add(x, x)
    assert float(y[-1]) == 6.0 and float(y[-2]) == 2.0 and float(y[0]) == 2.0
    del y
    g = gpuops.add_wrt_x2(x, xp.ones(1, dtype=xp.float32), x, x)  # gy = x
    assert g.shape == (1,) and float(g[0]) == pytest.approx(n + 2.0, rel=1e-6)
    assert float(gpuops.sum(x)) == pytest.approx(n + 2.0, rel=1e-6)


def _softmax_long_row_and_many_rows(backend, n):
    """One row of n elements (the block kernel; its sums are in double, so the float32
    result keeps full precision) and n / 2 rows of 2 (the warp kernel, many rows)."""
    xp = backend.xp()
    e = float(numpy.e)
    long_row = xp.zeros((1, n), dtype=xp.float32)
    long_row[0, -1] = 1.0
    y = gpuops.softmax(long_row, axis=-1)
    assert float(y[0, -1]) == pytest.approx(e / (n - 1 + e), rel=1e-5)
    assert float(y[0, 0]) == pytest.approx(1 / (n - 1 + e), rel=1e-5)
    del y, long_row
    many_rows = xp.zeros((n // 2, 2), dtype=xp.float32)
    many_rows[-1, 1] = 1.0
    y = gpuops.softmax(many_rows, axis=-1)
    assert float(y[-1, 1]) == pytest.approx(e / (1 + e), rel=1e-6)
    assert float(y[-1, 0]) == pytest.approx(1 / (1 + e), rel=1e-6)
    assert float(y[0, 0]) == 0.5


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_last_elements_small(backend):
    with backend.active():
        _elementwise_and_reduction(backend, SMALL)
        _softmax_long_row_and_many_rows(backend, SMALL)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not GPU, reason="no usable CUDA GPU")
def test_big_elementwise_and_reduction():
    _elementwise_and_reduction(GPU[0], BIG)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not GPU, reason="no usable CUDA GPU")
def test_big_softmax_long_row_and_many_rows():
    _softmax_long_row_and_many_rows(GPU[0], BIG)


def _with_nonfinite(record, sample):
    """The sample with NaN, +inf and -inf as the first three values of each float input."""
    inputs = []
    for k, x in enumerate(sample.inputs, 1):
        if isinstance(x, numpy.ndarray) and k not in record.int_inputs and x.size >= 3:
            x = x.copy()
            x.reshape(-1)[:3] = (numpy.nan, numpy.inf, -numpy.inf)
        inputs.append(x)
    return tuple(inputs)


def _same_nonfinite(a, b) -> bool:
    a, b = numpy.asarray(a), numpy.asarray(b)
    return (numpy.array_equal(numpy.isnan(a), numpy.isnan(b))
            and numpy.array_equal(numpy.isposinf(a), numpy.isposinf(b))
            and numpy.array_equal(numpy.isneginf(a), numpy.isneginf(b)))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.name)
def test_nan_and_inf_propagate_as_in_numpy(record, backend):
    """Kernels put NaN, +inf and -inf where the NumPy implementation does (forward and
    gradients), for inputs holding NaN, +inf and -inf."""
    samples = list(record.samples(numpy.random.default_rng(0)))
    sample = max(samples, key=lambda s: min(
        [numpy.size(x) for k, x in enumerate(s.inputs, 1)
         if isinstance(x, numpy.ndarray) and k not in record.int_inputs] or [0]))
    inputs = _with_nonfinite(record, sample)
    op = record.op
    with numpy.errstate(all="ignore"):
        y = op.forward(*inputs, **sample.params)
        gy = numpy.ones(numpy.shape(y), dtype=y.dtype)
        grads = {k: g(*inputs, y, gy, **sample.params) for k, g in op.grads.items()}
        with backend.active():
            dev = backend.asarrays(inputs)
            y_dev = op.forward(*dev, **sample.params)
            assert _same_nonfinite(backend.to_numpy(y_dev), y), f"{record.name}: forward"
            for k, g in op.grads.items():
                g_dev = g(*dev, y_dev, backend.asarray(gy), **sample.params)
                assert _same_nonfinite(backend.to_numpy(g_dev), grads[k]), \
                    f"{record.name}_wrt_x{k}"
