"""The per-channel gradient sums of the axis ops (axis_<op>_wrt_x2) when a channel is split
over several blocks (chunks of at least 1024 positions, then the ordered finish): the
records' samples are too small to split. On the emulator (4 blocks at most, so a channel
of more than 1024 positions splits), against the float64 sums, and bitwise repeatable."""
from __future__ import annotations

import numpy
import pytest

import gpuops

emu = pytest.importorskip("gpuops.emu", reason="gpuops.emu missing")

# (shape, axis): a channel's positions split in 2 (chunk 600: whole rows of inner), 3, and 5
# chunks of 1000 that cut through rows (inner 1); the last: more channels than the target
CASES = [((2, 3, 600), 1), ((3, 2, 1000), 1), ((5000, 2), 1), ((4, 20, 300), 1)]
TERMS = {"add": lambda x1, c, gy: gy, "sub": lambda x1, c, gy: -gy,
         "mul": lambda x1, c, gy: gy * x1, "div": lambda x1, c, gy: -gy * x1 / (c * c)}


@pytest.fixture(scope="module")
def launcher():
    from gpuops.emu import build
    if build.compiler() is None:
        pytest.skip("no C++ compiler for the emulator")
    return emu.launcher()


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
@pytest.mark.parametrize("op", sorted(TERMS))
@pytest.mark.parametrize("shape, axis", CASES)
def test_split_channel_sums(launcher, shape, axis, op, dtype):
    rng = numpy.random.default_rng(5)
    x1 = rng.standard_normal(shape).astype(dtype)
    x2 = rng.uniform(0.5, 2.0, shape[axis]).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    view = [1] * len(shape)
    view[axis] = -1
    other = tuple(i for i in range(len(shape)) if i != axis)
    expected = TERMS[op](x1.astype(numpy.float64), x2.astype(numpy.float64).reshape(view),
                         gy.astype(numpy.float64)) * numpy.ones(shape)
    expected = expected.sum(axis=other)
    fn = getattr(gpuops, f"axis_{op}_wrt_x2")
    with gpuops.backend.use_cpu_launcher(launcher):
        got = fn(x1, x2, x1, gy, axis=axis)
        again = fn(x1, x2, x1, gy, axis=axis)
    assert got.dtype == dtype and got.shape == (shape[axis],)
    scale = numpy.abs(TERMS[op](x1.astype(numpy.float64), x2.astype(numpy.float64).reshape(view),
                                gy.astype(numpy.float64)) * numpy.ones(shape)).sum(axis=other)
    eps = numpy.finfo(dtype).eps
    assert numpy.all(numpy.abs(got - expected) <= 16 * eps * scale)
    assert numpy.array_equal(got, again)  # no atomics: the same bits every call
