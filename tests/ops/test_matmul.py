"""matmul / linear / conv2d beyond the generic record tests: operand layouts the
GEMM reads through strides (transposed, reversed, broadcast, misaligned), linear
and conv2d without a bias, the fused epilogue against the unfused composition,
conv2d's image chunking, and the float16 / bfloat16 tensor-core GEMM (emulated, and on GPUs
from sm_80)."""
from __future__ import annotations

import contextlib
import re
import sys
from unittest import mock

import numpy
import pytest

import gpuops
from backends import BACKENDS, KERNEL_BACKENDS
from gpuops.ops import conv as conv_module
from records import RECORDS

RNG = numpy.random.default_rng(7)

# Views built on the backend from a float64 base: (base shape, view, description).
LAYOUTS = [
    ((9, 5), lambda x, xp: x.T, "transposed"),
    ((7, 5), lambda x, xp: x[::-1], "reversed rows"),
    ((5, 14), lambda x, xp: x[:, ::2], "every other column"),
    ((1 + 7 * 5,), lambda x, xp: x[1:].reshape(7, 5), "misaligned by one element"),
    ((7, 5), lambda x, xp: xp.broadcast_to(x, (3, 7, 5)), "broadcast batch (stride 0)"),
    ((3, 2, 7, 5), lambda x, xp: x[:, 1], "batch slice"),
]


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("left", LAYOUTS, ids=lambda l: l[2])
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_matmul_reads_strided_operands(backend, left, dtype):
    base1 = RNG.standard_normal(left[0]).astype(dtype)
    a_np = left[1](base1, numpy)
    m, k = a_np.shape[-2:]
    base2 = RNG.standard_normal((6, k)).astype(dtype)  # x2 = base2ᵀ: k-contiguous
    b_np = base2.T
    expected = numpy.einsum("...mk,kn->...mn", a_np.astype(numpy.float64),
                            b_np.astype(numpy.float64))
    gy = RNG.standard_normal(expected.shape).astype(dtype)
    with backend.active():
        xp = backend.xp()
        a = left[1](backend.asarray(base1), xp)
        b = backend.asarray(base2).T
        y = gpuops.matmul(a, b)
        g1 = gpuops.matmul_wrt_x1(a, b, y, backend.asarray(gy))
        g2 = gpuops.matmul_wrt_x2(a, b, y, backend.asarray(gy))
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == numpy.float32 else dict(rtol=1e-12, atol=1e-12)
    numpy.testing.assert_allclose(backend.to_numpy(y), expected, **tol)
    g64 = gy.astype(numpy.float64)
    full1 = numpy.einsum("...mn,kn->...mk", g64, b_np.astype(numpy.float64))
    numpy.testing.assert_allclose(backend.to_numpy(g1), full1, **tol)
    full2 = numpy.einsum("bmk,bmn->kn", a_np.astype(numpy.float64).reshape(-1, m, k),
                         g64.reshape(-1, m, g64.shape[-1]))
    numpy.testing.assert_allclose(backend.to_numpy(g2), full2, **tol)


def _act(z, activation):
    return {None: z, "relu": numpy.maximum(z, 0), "sigmoid": 1 / (1 + numpy.exp(-z)),
            "tanh": numpy.tanh(z)}[activation]


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("activation", [None, "relu", "sigmoid", "tanh"])
def test_linear_without_bias(backend, activation):
    x, w = RNG.standard_normal((2, 5, 7)), RNG.standard_normal((3, 7)) / 3
    pre = numpy.einsum("bri,oi->bro", x, w)
    expected = _act(pre, activation)
    gy = RNG.standard_normal(expected.shape)
    slope = {None: 1, "relu": pre > 0, "sigmoid": expected * (1 - expected),
             "tanh": 1 - expected ** 2}[activation]
    g = gy * slope
    with backend.active():
        xb, wb, gyb = (backend.asarray(v) for v in (x, w, gy))
        y = gpuops.linear(xb, wb, activation=activation)
        gx = gpuops.linear_wrt_x1(xb, wb, None, y, gyb, activation=activation)
        gw = gpuops.linear_wrt_x2(xb, wb, None, y, gyb, activation=activation)
        with pytest.raises(ValueError, match="linear_wrt_x3: x3 is None"):
            gpuops.linear_wrt_x3(xb, wb, None, y, gyb, activation=activation)
    numpy.testing.assert_allclose(backend.to_numpy(y), expected, rtol=1e-12, atol=1e-12)
    numpy.testing.assert_allclose(backend.to_numpy(gx), numpy.einsum("bro,oi->bri", g, w),
                                  rtol=1e-12, atol=1e-12)
    numpy.testing.assert_allclose(backend.to_numpy(gw), numpy.einsum("bro,bri->oi", g, x),
                                  rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_linear_epilogue_equals_unfused_composition(backend, activation):
    x, w, b = (RNG.standard_normal((9, 6)).astype(numpy.float32),
               RNG.standard_normal((5, 6)).astype(numpy.float32),
               RNG.standard_normal(5).astype(numpy.float32))
    with backend.active():
        xb, wb, bb = (backend.asarray(v) for v in (x, w, b))
        fused = backend.to_numpy(gpuops.linear(xb, wb, bb, activation=activation))
        plain = backend.to_numpy(gpuops.matmul(xb, backend.xp().ascontiguousarray(wb.T)))
    numpy.testing.assert_allclose(fused, _act(plain.astype(numpy.float64) + b, activation),
                                  rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_conv2d_without_bias(backend):
    x, w = RNG.standard_normal((2, 3, 6, 5)), RNG.standard_normal((4, 3, 3, 2))
    params = {"stride": (2, 1), "padding": 1}
    with backend.active():
        xb, wb = backend.asarray(x), backend.asarray(w)
        bias = backend.asarray(numpy.zeros(4))
        y = gpuops.conv2d(xb, wb, **params)
        y_zero_bias = gpuops.conv2d(xb, wb, bias, **params)
        gy = backend.asarray(RNG.standard_normal(y.shape))
        pairs = [(gpuops.conv2d_wrt_x1(xb, wb, None, y, gy, **params),
                  gpuops.conv2d_wrt_x1(xb, wb, bias, y, gy, **params)),
                 (gpuops.conv2d_wrt_x2(xb, wb, None, y, gy, **params),
                  gpuops.conv2d_wrt_x2(xb, wb, bias, y, gy, **params))]
        with pytest.raises(ValueError, match="conv2d_wrt_x3: x3 is None"):
            gpuops.conv2d_wrt_x3(xb, wb, None, y, gy, **params)
    numpy.testing.assert_array_equal(backend.to_numpy(y), backend.to_numpy(y_zero_bias))
    for without, with_zero in pairs:
        numpy.testing.assert_array_equal(backend.to_numpy(without), backend.to_numpy(with_zero))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
def test_conv2d_chunks_images(backend, monkeypatch):
    """Batches larger than the im2col budget are processed in chunks, same results."""
    x, w, b = (RNG.standard_normal((5, 2, 5, 4)), RNG.standard_normal((3, 2, 2, 2)),
               RNG.standard_normal(3))
    with backend.active():
        xb, wb, bb = (backend.asarray(v) for v in (x, w, b))
        y = gpuops.conv2d(xb, wb, bb, padding=1)
        gy = backend.asarray(RNG.standard_normal(y.shape))
        whole = [backend.to_numpy(v) for v in (
            y, gpuops.conv2d_wrt_x1(xb, wb, bb, y, gy, padding=1),
            gpuops.conv2d_wrt_x2(xb, wb, bb, y, gy, padding=1))]
        monkeypatch.setattr(conv_module, "_COLS_BYTES", 2 * 2 * 2 * 2 * 6 * 5 * 8)  # 2 images
        chunked = [backend.to_numpy(v) for v in (
            gpuops.conv2d(xb, wb, bb, padding=1),
            gpuops.conv2d_wrt_x1(xb, wb, bb, y, gy, padding=1),
            gpuops.conv2d_wrt_x2(xb, wb, bb, y, gy, padding=1))]
    for a, c in zip(whole, chunked):
        numpy.testing.assert_allclose(c, a, rtol=1e-12, atol=1e-12)


VECTOR_CASES = [((5,), (5,)), ((3,), (3, 4)), ((2, 3), (3,)), ((4,), (2, 4, 3)),
                ((2, 3, 4), (4,)), ((0,), (0,))]


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("s1,s2", VECTOR_CASES, ids=lambda s: "x".join(map(str, s)))
def test_matmul_of_vectors_follows_numpy(backend, s1, s2):
    """A 1-d x1 is a row, a 1-d x2 a column, the unit axes removed (NumPy's matmul): the
    result's shape and values are numpy.matmul's, gradients have the operands' shapes."""
    x1, x2 = RNG.standard_normal(s1), RNG.standard_normal(s2)
    expected = numpy.matmul(x1, x2)
    with backend.active():
        a, b = backend.asarray(x1), backend.asarray(x2)
        y = gpuops.matmul(a, b)
        gy = backend.asarray(numpy.ones(expected.shape))
        g1, g2 = gpuops.matmul_wrt_x1(a, b, y, gy), gpuops.matmul_wrt_x2(a, b, y, gy)
        out = backend.xp().zeros(expected.shape)
        assert gpuops.matmul(a, b, out=out) is out
    assert tuple(y.shape) == expected.shape and tuple(g1.shape) == s1 and tuple(g2.shape) == s2
    numpy.testing.assert_allclose(backend.to_numpy(y), expected, rtol=1e-12, atol=1e-12)
    numpy.testing.assert_allclose(backend.to_numpy(out), expected, rtol=1e-12, atol=1e-12)
    # gradients of <matmul(x1, x2), 1> by hand: the total of the products that use each element
    a = x1[None, :] if x1.ndim == 1 else x1
    b = x2[:, None] if x2.ndim == 1 else x2
    batch = numpy.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    ref1 = numpy.broadcast_to(b.sum(axis=-1), batch + b.shape[-2:-1])
    ref1 = numpy.broadcast_to(ref1[..., None, :], batch + a.shape[-2:])
    ref2 = numpy.broadcast_to(a.sum(axis=-2), batch + a.shape[-1:])
    ref2 = numpy.broadcast_to(ref2[..., :, None], batch + b.shape[-2:])
    ref1 = ref1.reshape((-1,) + a.shape).sum(axis=0) if a.ndim < len(batch) + 2 else ref1
    ref2 = ref2.reshape((-1,) + b.shape).sum(axis=0) if b.ndim < len(batch) + 2 else ref2
    numpy.testing.assert_allclose(backend.to_numpy(g1), ref1.reshape(s1), rtol=1e-12, atol=1e-12)
    numpy.testing.assert_allclose(backend.to_numpy(g2), ref2.reshape(s2), rtol=1e-12, atol=1e-12)


def test_matmul_of_vectors_matches_pytorch():
    torch = pytest.importorskip("torch")
    for s1, s2 in VECTOR_CASES:
        x1, x2 = RNG.standard_normal(s1), RNG.standard_normal(s2)
        t1 = torch.tensor(x1, requires_grad=True)
        t2 = torch.tensor(x2, requires_grad=True)
        ty = torch.matmul(t1, t2)
        gy = RNG.standard_normal(tuple(ty.shape))
        ty.backward(torch.tensor(gy))
        y = gpuops.matmul(x1, x2)
        assert y.shape == tuple(ty.shape)
        numpy.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
        numpy.testing.assert_allclose(gpuops.matmul_wrt_x1(x1, x2, y, gy), t1.grad.numpy(),
                                      rtol=1e-12, atol=1e-12)
        numpy.testing.assert_allclose(gpuops.matmul_wrt_x2(x1, x2, y, gy), t2.grad.numpy(),
                                      rtol=1e-12, atol=1e-12)


def test_matmul_rejects_0d_operands_with_a_clear_message():
    with pytest.raises(ValueError, match=r"matmul: x1 and x2 need at least 1 dim.*\(\)"):
        gpuops.matmul(numpy.ones((2, 3)), numpy.ones(()))


def test_linear_accepts_a_single_row_and_leading_dims():
    w, b = RNG.standard_normal((4, 3)), RNG.standard_normal(4)
    x = RNG.standard_normal((2, 5, 3))
    numpy.testing.assert_allclose(gpuops.linear(x[0, 0], w, b), w @ x[0, 0] + b, rtol=1e-12)
    assert gpuops.linear(x, w, b).shape == (2, 5, 4)



@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
def test_out_that_is_an_input(backend):
    """``out`` may be an input: linear's bias with a 1-d x1 (the result has the bias's
    shape), and matmul's x1 past one 128 tile (no block reads what another wrote)."""
    x, w, b = RNG.standard_normal(6), RNG.standard_normal((4, 6)), RNG.standard_normal(4)
    a, c = RNG.standard_normal((130, 130)), RNG.standard_normal((130, 130))
    with backend.active():
        bb = backend.asarray(b.copy())
        y = gpuops.linear(backend.asarray(x), backend.asarray(w), bb, activation="tanh", out=bb)
        ab = backend.asarray(a.copy())
        z = gpuops.matmul(ab, backend.asarray(c), out=ab)
    assert y is bb and z is ab
    numpy.testing.assert_allclose(backend.to_numpy(y), numpy.tanh(w @ x + b), rtol=1e-12,
                                  atol=1e-12)
    numpy.testing.assert_allclose(backend.to_numpy(z), a @ c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("padding", [10 ** 12, (0, 10 ** 12), (10 ** 7, 10 ** 7)])
def test_conv2d_rejects_a_padding_no_memory_holds(backend, padding):
    """Checked before any buffer is allocated: a ValueError naming conv2d and the padding,
    not a MemoryError or NumPy's 'array is too big'."""
    x, w = RNG.standard_normal((1, 2, 5, 5)), RNG.standard_normal((3, 2, 3, 3))
    with backend.active():
        xb, wb = backend.asarray(x), backend.asarray(w)
        with pytest.raises(ValueError, match=rf"conv2d: padding {re.escape(repr(padding))} "
                                             "asks for an impossible buffer"):
            gpuops.conv2d(xb, wb, padding=padding)
        gy = backend.asarray(numpy.ones((1, 3, 3, 3)))
        with pytest.raises(ValueError, match=r"conv2d_wrt_x2: padding .* impossible buffer"):
            gpuops.conv2d_wrt_x2(xb, wb, None, gy, gy, padding=padding)


@contextlib.contextmanager
def _gemm_path(backend, tensor_cores: bool):
    """Calls inside launch the 16-bit tensor-core GEMM (``tensor_cores``) or the SIMT one:
    on the emulator through a launcher that says so (the shared one takes the SIMT path);
    on a GPU by overriding what its launcher says (tensor cores need sm_80)."""
    if backend.name == "emu":
        from gpuops import emu
        with gpuops.backend.use_cpu_launcher(emu.EmuLauncher(tensor_cores=tensor_cores)):
            yield
        return
    launcher = gpuops.backend.gpu_backend().launcher
    if tensor_cores and not launcher.tensor_cores:
        pytest.skip("the GPU predates sm_80 (no mma.sync.m16n8k16)")
    with backend.active(), mock.patch.object(type(launcher), "tensor_cores",
                                             property(lambda self: tensor_cores)):
        yield


# The 16-bit dtypes of the tensor-core GEMM: (dtype, one rounding: 2^-11, 2^-8).
SIXTEEN_BIT = {"float16": (numpy.dtype(numpy.float16), 2.0 ** -11),
               "bfloat16": (numpy.dtype(gpuops.bfloat16), 2.0 ** -8)}


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("shape", [(1, 1, 1), (33, 40, 20), (130, 72, 136)])
@pytest.mark.parametrize("name", SIXTEEN_BIT)
def test_16bit_tensor_core_path(backend, shape, name):
    """gemm_tc_f16 / gemm_tc_bf16 (mma.sync m16n8k16, float32 accumulation): several row and
    column tiles, ragged edges and a K that ends inside a step; B row-major for matmul and
    (n, k) for linear's weight. The error stays at the dtype's rounding of the result."""
    dtype, u = SIXTEEN_BIT[name]
    m, k, n = shape
    a = RNG.standard_normal((m, k)).astype(dtype)
    bt = RNG.standard_normal((n, k)).astype(dtype)
    bias = RNG.standard_normal(n).astype(dtype)
    exact = a.astype(numpy.float64) @ bt.T.astype(numpy.float64)
    scale = numpy.abs(a.astype(numpy.float64)) @ numpy.abs(bt.T.astype(numpy.float64))
    with _gemm_path(backend, tensor_cores=True):
        y = backend.to_numpy(gpuops.matmul(backend.asarray(a), backend.asarray(bt.T.copy())))
        z = backend.to_numpy(gpuops.linear(backend.asarray(a), backend.asarray(bt),
                                           backend.asarray(bias), activation="relu"))
    assert y.dtype == dtype and z.dtype == dtype
    y, z = y.astype(numpy.float64), z.astype(numpy.float64)
    # float32 sums of k exact products (k 2^-24 of the scale), then one rounding (u)
    acc = k * 2.0 ** -24
    assert numpy.all(numpy.abs(y - exact) <= acc * scale + 2 * u * numpy.abs(exact) + 1e-6)
    ref = numpy.maximum(exact + bias.astype(numpy.float64), 0)
    assert numpy.all(numpy.abs(z - ref) <= acc * (scale + numpy.abs(bias.astype(numpy.float64)))
                     + 2 * u * ref + 1e-6)


def _sequential_float32(a, b):
    """a @ b as float32 sums in k order from 0 (the products of 16-bit values are exact in
    float32), as float32."""
    a32, b32 = a.astype(numpy.float32), b.astype(numpy.float32)
    acc = numpy.zeros((a.shape[0], b.shape[1]), numpy.float32)
    for kk in range(a.shape[1]):
        acc += a32[:, kk, None] * b32[None, kk, :]
    return acc


@pytest.mark.parametrize("name", SIXTEEN_BIT)
def test_emulated_16bit_gemms_are_the_float32_sum_in_k_order(name):
    """The emulator's mma model (float16 and bfloat16 twins: exact widening, exact products,
    the sum in k order) and the SIMT kernel give, bit for bit, the float32 sum in k order
    rounded once: a wrong fragment layout or a wrong widening could not pass. K = 40 spans
    two mma k-steps of the first 32-wide tile and a ragged second tile."""
    if not any(b.name == "emu" for b in KERNEL_BACKENDS):
        pytest.skip("the emulator cannot build here")
    backend = next(b for b in KERNEL_BACKENDS if b.name == "emu")
    dtype, _ = SIXTEEN_BIT[name]
    rng = numpy.random.default_rng(11)
    a = rng.standard_normal((33, 40)).astype(dtype)
    b = rng.standard_normal((40, 20)).astype(dtype)
    expected = _sequential_float32(a, b).astype(dtype).view(numpy.uint16)
    for tensor_cores in (True, False):
        with _gemm_path(backend, tensor_cores):
            y = backend.to_numpy(gpuops.matmul(backend.asarray(a), backend.asarray(b)))
        numpy.testing.assert_array_equal(y.view(numpy.uint16), expected,
                                         err_msg=f"tensor_cores={tensor_cores}")


GEMM_RECORDS = [r for r in RECORDS if r.name in ("matmul", "linear", "conv2d")]


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
@pytest.mark.parametrize("record", GEMM_RECORDS, ids=lambda r: r.name)
@pytest.mark.parametrize("name", SIXTEEN_BIT)
def test_tensor_core_path_matches_simt_path(record, backend, name):
    """Every float16 sample of matmul, linear and conv2d (batched, broadcast, strided
    operands, reduction batches in the gradients, bias and activation epilogues), forward
    and gradients, through the tensor-core GEMM and through the SIMT one: both sum in
    float32, so they agree to the 16-bit rounding. bfloat16 (CI time): the three smallest
    samples."""
    dtype, _ = SIXTEEN_BIT[name]
    rtol, atol = record.tolerance(dtype)
    samples = list(record.samples(numpy.random.default_rng(0)))
    if name == "bfloat16":
        samples = sorted(samples, key=lambda s: sum(numpy.size(x) for x in s.inputs))[:3]
    for sample in samples:
        inputs = record.cast(sample.inputs, dtype)
        results = []
        for tensor_cores in (False, True):
            with _gemm_path(backend, tensor_cores):
                dev = backend.asarrays(inputs)
                y = record.op.forward(*dev, **sample.params)
                # the same upstream gradient on both paths (same seed, same shape)
                gy = numpy.random.default_rng(1).standard_normal(y.shape).astype(dtype)
                outs = [y] + [g(*dev, y, backend.asarray(gy), **sample.params)
                              for g in record.op.grads.values()]
                results.append([backend.to_numpy(o).astype(numpy.float64) for o in outs])
        for simt, tc in zip(*results):
            numpy.testing.assert_allclose(tc, simt, rtol=rtol, atol=atol,
                                          err_msg=f"{record.name} {sample.name}")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS, ids=lambda b: b.name)
def test_gemm_loops_when_the_grid_is_capped(backend, monkeypatch):
    """Row tiles and batches past the grid's y/z limit are taken in turns by the blocks."""
    matmul_module = sys.modules["gpuops.ops.matmul"]
    monkeypatch.setattr(matmul_module, "_MAX_GRID_YZ", 1)
    a, b = RNG.standard_normal((3, 131, 5)), RNG.standard_normal((2, 1, 5, 7))
    with backend.active():
        y = backend.to_numpy(gpuops.matmul(backend.asarray(a), backend.asarray(b)))
    numpy.testing.assert_allclose(y, numpy.einsum("bmk,cxkn->cbmn", a, b), rtol=1e-12,
                                  atol=1e-12)
