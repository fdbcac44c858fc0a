"""embedding beyond the generic record tests: PyTorch cross-checks, repeated ids, the
gradient's bitwise repeatability (no atomics), a large table with few ids, the two forward
kernels (16-byte words or elements), and ids outside [0, V) on each backend."""
from __future__ import annotations

import contextlib

import numpy
import pytest

import gpuops
from backends import BACKENDS, KERNEL_BACKENDS

F32, F64 = numpy.dtype(numpy.float32), numpy.dtype(numpy.float64)


def _table_and_ids(rng, rows, cols, shape, dtype=F32, id_dtype=numpy.int64):
    return (rng.standard_normal((rows, cols)).astype(dtype),
            rng.integers(0, rows, shape).astype(id_dtype))


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", [F32, F64], ids=lambda d: d.name)
@pytest.mark.parametrize("id_dtype", [numpy.int32, numpy.int64], ids=["int32", "int64"])
def test_matches_torch(backend, dtype, id_dtype):
    torch = pytest.importorskip("torch")
    rng = numpy.random.default_rng(0)
    table, ids = _table_and_ids(rng, 11, 12, (4, 9), dtype, id_dtype)  # 36 ids of 11: repeats
    gy = rng.standard_normal((4, 9, 12)).astype(dtype)
    weight = torch.tensor(table, requires_grad=True)
    expected = torch.nn.functional.embedding(torch.tensor(ids.astype(numpy.int64)), weight)
    expected.backward(torch.tensor(gy))
    with backend.active():
        y = gpuops.embedding(backend.asarray(ids), backend.asarray(table))
        g = gpuops.embedding_wrt_x2(backend.asarray(ids), backend.asarray(table), y,
                                    backend.asarray(gy))
    numpy.testing.assert_array_equal(backend.to_numpy(y), expected.detach().numpy())
    rtol = 1e-6 if dtype == F32 else 1e-14  # PyTorch may add the repeats in another order
    numpy.testing.assert_allclose(backend.to_numpy(g), weight.grad.numpy(), rtol=rtol,
                                  atol=rtol)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", [F32, F64], ids=lambda d: d.name)
def test_gradient_is_bitwise_repeatable_and_equals_numpy(backend, dtype):
    """Many repeats of few ids: the kernel sums each id's rows in position order, run to
    run, and in the order of NumPy's add.at (so the results are bitwise equal)."""
    rng = numpy.random.default_rng(1)
    table, ids = _table_and_ids(rng, 4, 8, (300,), dtype)
    gy = (rng.standard_normal((300, 8)) * 10.0 ** rng.integers(-6, 6, (300, 1))).astype(dtype)
    y = gpuops.embedding(ids, table)
    expected = gpuops.embedding_wrt_x2(ids, table, y, gy)
    with backend.active():
        args = backend.asarrays((ids, table, y, gy))
        runs = [backend.to_numpy(gpuops.embedding_wrt_x2(*args)) for _ in range(3)]
    for run in runs:
        assert run.tobytes() == expected.tobytes()


@contextlib.contextmanager
def _kernels_launched(backend):
    """The names of the kernels launched inside (on the emulator)."""
    from gpuops import emu
    launcher = emu.launcher()
    names: list[str] = []
    launch = launcher.launch

    def recording(family, kernel, *args, **kwargs):
        names.append(kernel)
        return launch(family, kernel, *args, **kwargs)

    launcher.launch = recording
    try:
        with backend.active():
            yield names
    finally:
        del launcher.launch


EMU = [b for b in KERNEL_BACKENDS if b.name == "emu"]


@pytest.mark.parametrize("backend", EMU, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype,sfx", [(F32, "f32"), (numpy.dtype(gpuops.bfloat16), "bf16")],
                         ids=["float32", "bfloat16"])
def test_word_copies_only_when_rows_and_arrays_are_aligned(backend, dtype, sfx):
    rng = numpy.random.default_rng(2)
    buffer = rng.standard_normal(6 * 8 + 1).astype(dtype)
    ids = numpy.array([[5, 0, 5], [2, 2, 1]])
    aligned = buffer[:48].reshape(6, 8)  # rows of 32 (float32) or 16 (bfloat16) bytes
    shifted = buffer[1:].reshape(6, 8)  # C-contiguous, one element past a 16-byte boundary
    out_shifted = numpy.zeros(2 * 3 * 8 + 1, dtype)[1:].reshape(2, 3, 8)
    cases = [(aligned, None, f"embedding_vec_{sfx}"), (shifted, None, f"embedding_{sfx}"),
             (aligned, out_shifted, f"embedding_{sfx}"), (aligned[:, :6], None, f"embedding_{sfx}")]
    for table, out, kernel in cases:
        with _kernels_launched(backend) as names:
            y = gpuops.embedding(ids, table, out=out)
        assert names == [kernel]
        numpy.testing.assert_array_equal(y, table[ids])


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_large_table_few_ids(backend):
    rng = numpy.random.default_rng(3)
    table, _ = _table_and_ids(rng, 3000, 8, ())
    ids = numpy.array([2999, 7, 0, 7, 1500])
    gy = rng.standard_normal((5, 8)).astype(F32)
    with backend.active():
        dev = backend.asarrays((ids, table))
        y = gpuops.embedding(*dev)
        g = backend.to_numpy(gpuops.embedding_wrt_x2(*dev, y, backend.asarray(gy)))
    numpy.testing.assert_array_equal(backend.to_numpy(y), table[ids])
    expected = numpy.zeros_like(table)
    expected[2999], expected[7], expected[0], expected[1500] = gy[0], gy[1] + gy[3], gy[2], gy[4]
    numpy.testing.assert_array_equal(g, expected)


BAD_IDS = numpy.array([[1, -1, 3], [4, 0, 9]])  # table of 4 rows: -1, 4 and 9 are outside


def test_out_of_range_ids_raise_on_numpy():
    table = numpy.arange(12.0).reshape(4, 3)
    out = numpy.full((2, 3, 3), 7.0)
    with pytest.raises(ValueError, match=r"embedding: ids \(x1\) must be in \[0, 4\).*"
                                         r"got \[-1, 4, 9\]"):
        gpuops.embedding(BAD_IDS, table, out=out)
    numpy.testing.assert_array_equal(out, 7.0)
    gout = numpy.full((4, 3), 7.0)
    with pytest.raises(ValueError, match=r"embedding_wrt_x2: .*got \[-1, 4, 9\]"):
        gpuops.embedding_wrt_x2(BAD_IDS, table, out, numpy.ones((2, 3, 3)), out=gout)
    numpy.testing.assert_array_equal(gout, 7.0)
    # a negative id is not wrapped around (Python's table[-1] would be the last row)
    with pytest.raises(ValueError, match=r"got \[-1\]"):
        gpuops.embedding(numpy.array(-1), table)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("cols", [3, 4], ids=["elements", "words"])
def test_out_of_range_ids_on_kernels_give_nan_rows_and_no_gradient(backend, cols):
    """No wild read and no sync: the row of an id outside [0, V) is NaN (also for -1, which
    is not wrapped), and the gradient leaves the id out."""
    table = numpy.arange(4.0 * cols, dtype=F32).reshape(4, cols)
    gy = numpy.arange(6.0 * cols, dtype=F32).reshape(2, 3, cols)
    with backend.active():
        dev = backend.asarrays((BAD_IDS, table))
        y = backend.to_numpy(gpuops.embedding(*dev))
        g = backend.to_numpy(gpuops.embedding_wrt_x2(*dev, backend.asarray(y),
                                                     backend.asarray(gy)))
    bad = (BAD_IDS < 0) | (BAD_IDS >= 4)
    assert numpy.isnan(y[bad]).all()
    numpy.testing.assert_array_equal(y[~bad], table[BAD_IDS[~bad]])
    expected = numpy.zeros_like(table)
    expected[1], expected[3], expected[0] = gy[0, 0], gy[0, 2], gy[1, 1]
    numpy.testing.assert_array_equal(g, expected)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("dtype,value", [(numpy.dtype(numpy.float16), 1.0),
                                         (numpy.dtype(gpuops.bfloat16), 1.0),
                                         (numpy.dtype(gpuops.bfloat16), 1e5)],
                         ids=["float16", "bfloat16", "bfloat16-1e5"])
def test_sixteen_bit_gradient_sums_in_float32(backend, dtype, value):
    """embedding_wrt_x2 in 16 bits adds in float32 and rounds once: 300 ids of row 0 with
    gy = 1 sum to 300 in bfloat16 (a bfloat16 running sum would stop at 256, where 257
    rounds back to 256), 3000 in float16 (one would stop at 2048), gy = 1e5 to 3e7 (past
    float16's range); the result is the exact float64 sum rounded once, bit for bit."""
    count = 3000 if dtype == numpy.float16 else 300  # ids of row 0; row 1 has 5, row 2 none
    ids = numpy.random.default_rng(0).permutation(numpy.repeat([0, 1], [count, 5]))
    table = numpy.zeros((3, 4), dtype)
    gy = numpy.full((count + 5, 4), value, dtype)
    gy[:, 1] = -gy[:, 1]
    expected = numpy.zeros((3, 4))
    numpy.add.at(expected, ids, gy.astype(F64))
    with backend.active():
        dids, dtable = backend.asarray(ids), backend.asarray(table)
        g = gpuops.embedding_wrt_x2(dids, dtable, gpuops.embedding(dids, dtable),
                                    backend.asarray(gy))
    assert g.dtype == dtype
    numpy.testing.assert_array_equal(backend.to_numpy(g).astype(F64),
                                     expected.astype(dtype).astype(F64))
