"""The tensor-core GEMM (gemm_tc_f16, gemm_tc_bf16 in cuda/matmul.cu) against the SIMT GEMM
and the float64 product, layout by layout, on the emulator (its exact models of ldmatrix,
cp.async and mma.sync).

Each case calls :func:`gpuops.ops.matmul.gemm` directly with operands built in one layout:
A k-contiguous or m-contiguous, B k-contiguous or n-contiguous, each aligned (the cp.async
path, mode bit 2) or not (the register path), strided, batched with a broadcast operand,
with a reduction batch, bias + activation epilogues, the act' prologue (aux) with the row
sums (db), and split over the SMs (bitwise repeatable). The launch's load modes are checked,
so a case cannot silently take another path than the one it names.

Both kernels sum float32 products of 16-bit values in k order, so without a prologue and
unsplit they agree bit for bit; the prologue's product is rounded to 16 bits by the tensor-
core kernel (the 16-bit g it multiplies) and kept in float by the SIMT one, and a split
changes the order: those are held to the error bound against float64 only.
"""
from __future__ import annotations

import numpy
import pytest

import gpuops
from gpuops.ops import matmul as matmul_module

pytestmark = pytest.mark.emu

BF16 = numpy.dtype(gpuops.bfloat16)
# dtype -> unit roundoff of one rounding to it
UNIT = {numpy.dtype(numpy.float16): 2.0 ** -11, BF16: 2.0 ** -8}
ACC = 2.0 ** -24  # float32 accumulation
ASYNC, VECTOR, ALONG_ROW = 4, 2, 1  # load mode bits (cuda/matmul.cu TC_MODE_*)
ACT = matmul_module.ACTIVATIONS


def _emu():
    emu = pytest.importorskip("gpuops.emu", reason="gpuops.emu missing")
    from gpuops.emu import build
    if build.compiler() is None:
        pytest.skip("no C++ compiler for the emulator")
    return emu


def _launcher(tensor_cores: bool, sms: int = 1):
    """An emulator launcher that notes each launch's kernel, block and (a_mode, b_mode)."""
    emu = _emu()

    class Noting(emu.EmuLauncher):
        def __init__(self) -> None:
            super().__init__(tensor_cores=tensor_cores)
            self.sm_count = sms
            self.noted: list[tuple] = []

        def launch(self, family, kernel, grid, block, args, shared_mem=0):
            modes = tuple(int(v) for v in args[-7:-5])  # a_mode, b_mode (GEMM_PARAMS)
            self.noted.append((kernel, tuple(grid), tuple(block), modes))
            super().launch(family, kernel, grid, block, args, shared_mem)

    return Noting()


def _view(rng, rows: int, cols: int, layout: str, dtype) -> numpy.ndarray:
    """A (rows, cols) operand of ``dtype`` in ``layout``: "row" (C order, cols contiguous),
    "col" (the transpose of a C-order (cols, rows) array), "strided" (every other column
    of a wider array: neither dim contiguous), "offset" (C order, one element past a
    16-byte boundary: no vector loads)."""
    if layout == "row":
        return rng.standard_normal((rows, cols)).astype(dtype)
    if layout == "col":
        return rng.standard_normal((cols, rows)).astype(dtype).T
    if layout == "strided":
        return rng.standard_normal((rows, 2 * cols)).astype(dtype)[:, ::2]
    assert layout == "offset"
    return rng.standard_normal(rows * cols + 1).astype(dtype)[1:].reshape(rows, cols)


def _slope(act: str | None, u: numpy.ndarray) -> numpy.ndarray:
    """act'(pre-activation) from the activation's output u (float64)."""
    if act == "relu":
        return (u > 0).astype(numpy.float64)
    if act == "sigmoid":
        return u * (1 - u)
    if act == "tanh":
        return 1 - u * u
    return numpy.ones_like(u)


def _activate(act: str | None, v: numpy.ndarray) -> numpy.ndarray:
    if act == "relu":
        return numpy.maximum(v, 0)
    if act == "sigmoid":
        return 1 / (1 + numpy.exp(-v))
    if act == "tanh":
        return numpy.tanh(v)
    return v


# name -> (m, k, n, A layout, B layout, expected (a_mode, b_mode) bits on the TC path).
# A "row" is k-contiguous, "col" m-contiguous; B (k, n) "row" is n-contiguous, "col"
# k-contiguous. 72/40/24: every stride a multiple of 8 values (16 bytes): cp.async;
# 70/38/22: none is: the register path with scalar loads; K = 40 and 38 end inside a step.
LAYOUTS = {
    "A k-major, B n-major, cp.async": (72, 40, 24, "row", "row", (ASYNC, ASYNC | ALONG_ROW)),
    "A k-major, B k-major, cp.async": (72, 40, 24, "row", "col", (ASYNC, ASYNC)),
    "A m-major, B n-major, cp.async": (72, 40, 24, "col", "row",
                                       (ASYNC | ALONG_ROW, ASYNC | ALONG_ROW)),
    "A m-major, B k-major, cp.async": (72, 40, 24, "col", "col", (ASYNC | ALONG_ROW, ASYNC)),
    "A k-major, B n-major, registers": (70, 38, 22, "row", "row", (0, ALONG_ROW)),
    "A k-major, B k-major, registers": (70, 38, 22, "row", "col", (0, 0)),
    "A m-major, B n-major, registers": (70, 38, 22, "col", "row", (ALONG_ROW, ALONG_ROW)),
    "A m-major, B k-major, registers": (70, 38, 22, "col", "col", (ALONG_ROW, 0)),
    "misaligned bases, registers": (72, 40, 24, "offset", "offset", (0, ALONG_ROW)),
    "strided, two row tiles": (130, 40, 24, "strided", "strided", (0, 0)),
}
DTYPES = {"float16": numpy.dtype(numpy.float16), "bfloat16": BF16}


def _run(tensor_cores, a, b, c_shape, dtype, sms=1, launcher=None, **kwargs):
    """gemm on ``launcher`` (a fresh noting one by default): (c, db or None, the launches
    noted)."""
    launcher = launcher or _launcher(tensor_cores, sms)
    c = numpy.full(c_shape, numpy.nan, dtype)
    db = kwargs.pop("db_shape", None)
    db = None if db is None else numpy.full(db, numpy.nan, dtype)
    with gpuops.backend.use_cpu_launcher(launcher) as backend:
        matmul_module.gemm(backend, a, b, c, db=db, **kwargs)
    return c, db, launcher.noted


def _check_bound(y, exact, bound, what):
    err = numpy.abs(y.astype(numpy.float64) - exact)
    assert numpy.all(err <= bound), f"{what}: error / bound up to {(err / bound).max():.3g}"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_layouts_against_simt_and_float64(dtype_name, layout):
    """Every operand layout: the expected load modes, bit for bit the SIMT result, and
    within the float32 sum's bound of the float64 product."""
    dtype = DTYPES[dtype_name]
    m, k, n, a_layout, b_layout, modes = LAYOUTS[layout]
    rng = numpy.random.default_rng(len(layout))
    a = _view(rng, m, k, a_layout, dtype)
    b = _view(rng, k, n, b_layout, dtype)
    tc, _, noted = _run(True, a, b, (m, n), dtype)
    simt, _, simt_noted = _run(False, a, b, (m, n), dtype)
    assert [(kernel, block) for kernel, _, block, _ in noted] == \
        [(f"gemm_tc_{'f16' if dtype_name == 'float16' else 'bf16'}", (128,))]
    assert noted[0][3][0] & (ASYNC | ALONG_ROW) == modes[0]
    assert noted[0][3][1] & (ASYNC | ALONG_ROW) == modes[1]
    assert not simt_noted[0][0].startswith("gemm_tc")
    numpy.testing.assert_array_equal(tc.view(numpy.uint16), simt.view(numpy.uint16))
    a64, b64 = a.astype(numpy.float64), b.astype(numpy.float64)
    exact = a64 @ b64
    _check_bound(tc, exact, k * ACC * (numpy.abs(a64) @ numpy.abs(b64))
                 + UNIT[dtype] * numpy.abs(exact) + 1e-300, layout)


@pytest.mark.parametrize("dtype_name", DTYPES)
def test_batches_and_reduction_batch(dtype_name):
    """Output batches (2 x 3, B broadcast over them: stride 0) and a reduction batch (4
    products summed into one output, A m-contiguous as a weight gradient's xᵀ)."""
    dtype = DTYPES[dtype_name]
    rng = numpy.random.default_rng(5)
    a = rng.standard_normal((2, 3, 40, 24)).astype(dtype)
    b = numpy.broadcast_to(rng.standard_normal((24, 16)).astype(dtype), (2, 3, 24, 16))
    tc, _, noted = _run(True, a, b, (2, 3, 40, 16), dtype)
    simt, _, _ = _run(False, a, b, (2, 3, 40, 16), dtype)
    assert noted[0][0].startswith("gemm_tc")
    numpy.testing.assert_array_equal(tc.view(numpy.uint16), simt.view(numpy.uint16))
    exact = a.astype(numpy.float64) @ b.astype(numpy.float64)
    scale = numpy.abs(a.astype(numpy.float64)) @ numpy.abs(b.astype(numpy.float64))
    _check_bound(tc, exact, 24 * ACC * scale + UNIT[dtype] * numpy.abs(exact) + 1e-300,
                 "batches")
    x = rng.standard_normal((4, 16, 40)).astype(dtype)  # 4 images of 16 rows
    gy = rng.standard_normal((4, 16, 24)).astype(dtype)
    xt = numpy.swapaxes(x, -1, -2)  # (4, 40, 16): m-contiguous A
    tc, _, noted = _run(True, xt, gy, (40, 24), dtype)
    simt, _, _ = _run(False, xt, gy, (40, 24), dtype)
    assert noted[0][0].startswith("gemm_tc") and noted[0][3][0] & ALONG_ROW
    numpy.testing.assert_array_equal(tc.view(numpy.uint16), simt.view(numpy.uint16))
    x64, g64 = x.astype(numpy.float64), gy.astype(numpy.float64)
    exact = numpy.einsum("bmk,bmn->kn", x64, g64)
    scale = numpy.einsum("bmk,bmn->kn", numpy.abs(x64), numpy.abs(g64))
    _check_bound(tc, exact, 64 * ACC * scale + UNIT[dtype] * numpy.abs(exact) + 1e-300,
                 "reduction batch")


EPILOGUES = [("bias per column, relu", matmul_module.BIAS_PER_COLUMN, "relu"),
             ("bias per row, sigmoid", matmul_module.BIAS_PER_ROW, "sigmoid"),
             ("no bias, tanh", matmul_module.BIAS_NONE, "tanh")]


@pytest.mark.parametrize("epilogue", EPILOGUES, ids=lambda e: e[0])
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_bias_and_activation_epilogues(dtype_name, epilogue):
    """act(A B + bias) with the bias per column (linear) or per row (conv2d), on C rows
    whose 4-value stores are vectors (N = 24) and on ragged ones (N = 22): bit for bit the
    SIMT epilogue, and within bound of float64 (the activations are 1-Lipschitz)."""
    dtype = DTYPES[dtype_name]
    _, bias_mode, act = epilogue
    rng = numpy.random.default_rng(9)
    for n in (24, 22):
        a = rng.standard_normal((72, 40)).astype(dtype)
        b = rng.standard_normal((n, 40)).astype(dtype).T
        bias = rng.standard_normal(72 if bias_mode == matmul_module.BIAS_PER_ROW
                                   else n).astype(dtype)
        kwargs = dict(bias=None if bias_mode == matmul_module.BIAS_NONE else bias,
                      bias_mode=bias_mode, act=ACT[act])
        tc, _, noted = _run(True, a, b, (72, n), dtype, **kwargs)
        simt, _, _ = _run(False, a, b, (72, n), dtype, **kwargs)
        assert noted[0][0].startswith("gemm_tc")
        numpy.testing.assert_array_equal(tc.view(numpy.uint16), simt.view(numpy.uint16))
        a64, b64, bias64 = (v.astype(numpy.float64) for v in (a, b, bias))
        pre = a64 @ b64
        if bias_mode == matmul_module.BIAS_PER_COLUMN:
            pre = pre + bias64
        elif bias_mode == matmul_module.BIAS_PER_ROW:
            pre = pre + bias64[:, None]
        exact = _activate(act, pre)
        _check_bound(tc, exact, 40 * ACC * (numpy.abs(a64) @ numpy.abs(b64) + 8)
                     + UNIT[dtype] * numpy.abs(exact) + 1e-300, f"{epilogue[0]} n={n}")


@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("a_layout", ["row", "col"])
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_prologue_and_row_sums(dtype_name, a_layout, act):
    """A' = A · act'(aux) (linear's backward: A = gy, aux = y, in A's layout: k-contiguous
    as for gx1 = g W, m-contiguous as for gW = gᵀ x) through the register path, and the
    row sums db = Σ_k A' (the bias gradient), against float64 and the SIMT kernel."""
    dtype = DTYPES[dtype_name]
    rng = numpy.random.default_rng(3)
    m, k, n = 40, 72, 24
    gy = _view(rng, m, k, a_layout, dtype)
    y = _activate(act, rng.standard_normal(gy.shape)).astype(dtype)
    aux = y if a_layout == "row" else numpy.ascontiguousarray(y.T).T  # gy's strides
    b = rng.standard_normal((k, n)).astype(dtype)
    kwargs = dict(aux=aux, a_act=ACT[act], db_shape=(m,))
    tc, tc_db, noted = _run(True, gy, b, (m, n), dtype, **kwargs)
    simt, simt_db, _ = _run(False, gy, b, (m, n), dtype, **kwargs)
    assert noted[0][0].startswith("gemm_tc")
    assert not noted[0][3][0] & ASYNC and noted[0][3][0] & VECTOR  # registers, 16-byte loads
    u = UNIT[dtype]
    a_exact = gy.astype(numpy.float64) * _slope(act, aux.astype(numpy.float64))
    b64 = b.astype(numpy.float64)
    exact, scale = a_exact @ b64, numpy.abs(a_exact) @ numpy.abs(b64)
    # float32 sums, the prologue's product rounded once (TC) or kept (SIMT), one rounding
    bound = (k * ACC + u) * scale + u * numpy.abs(exact) + 1e-300
    for name, got in (("tc", tc), ("simt", simt)):
        _check_bound(got, exact, bound, f"{name} product")
    rows, row_scale = a_exact.sum(axis=1), numpy.abs(a_exact).sum(axis=1)
    row_bound = (k * ACC + u) * row_scale + u * numpy.abs(rows) + 1e-300
    for name, got in (("tc", tc_db), ("simt", simt_db)):
        _check_bound(got, rows, row_bound, f"{name} row sums")


@pytest.mark.parametrize("a_layout", ["row", "col"])
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_split_k_with_prologue_bias_and_row_sums(dtype_name, a_layout):
    """Split over 8 SMs (the last block of each tile adds the partials in split order and
    applies the epilogue): bitwise the same on a second run, within bound of float64, the
    row sums too; the tile counters are left at zero."""
    dtype = DTYPES[dtype_name]
    rng = numpy.random.default_rng(4)
    m, k, n = 40, 256, 24
    gy = _view(rng, m, k, a_layout, dtype)
    y = rng.uniform(0.05, 0.95, gy.shape).astype(dtype)  # sigmoid outputs
    aux = y if a_layout == "row" else numpy.ascontiguousarray(y.T).T
    b = rng.standard_normal((k, n)).astype(dtype)
    bias = rng.standard_normal(n).astype(dtype)
    kwargs = dict(aux=aux, a_act=ACT["sigmoid"], bias=bias,
                  bias_mode=matmul_module.BIAS_PER_COLUMN, act=ACT["tanh"], db_shape=(m,))
    launcher = _launcher(True, 8)
    first = _run(True, gy, b, (m, n), dtype, launcher=launcher, **dict(kwargs))
    second = _run(True, gy, b, (m, n), dtype, launcher=launcher, **dict(kwargs))
    kernel, grid, _, _ = first[2][0]
    assert kernel.startswith("gemm_tc") and grid[2] > 1, grid  # split over blockIdx.z
    for one, two in zip(first[:2], second[:2]):
        assert one.tobytes() == two.tobytes()
    u = UNIT[dtype]
    a_exact = gy.astype(numpy.float64) * _slope("sigmoid", aux.astype(numpy.float64))
    b64 = b.astype(numpy.float64)
    exact = numpy.tanh(a_exact @ b64 + bias.astype(numpy.float64))
    scale = numpy.abs(a_exact) @ numpy.abs(b64) + numpy.abs(bias.astype(numpy.float64))
    splits = grid[2]
    _check_bound(first[0], exact, ((k + splits) * ACC + u) * scale + u * numpy.abs(exact)
                 + 1e-300, "split product")
    rows, row_scale = a_exact.sum(axis=1), numpy.abs(a_exact).sum(axis=1)
    _check_bound(first[1], rows, ((k + splits) * ACC + u) * row_scale + u * numpy.abs(rows)
                 + 1e-300, "split row sums")
    with gpuops.backend.use_cpu_launcher(launcher) as backend:
        assert not matmul_module._tile_counters(backend, 1).any()


# ---- TF32: float32 on the tensor cores after set_matmul_precision("high") -------------------

TF32_UNIT = 2.0 ** -11  # cvt.rna.tf32: 10 fraction bits, to nearest


@pytest.fixture
def high_precision():
    """set_matmul_precision("high") for the test, "highest" again after it."""
    assert gpuops.get_matmul_precision() == "highest"  # the default
    gpuops.set_matmul_precision("high")
    yield
    gpuops.set_matmul_precision("highest")


def test_matmul_precision_is_checked_and_highest_by_default():
    assert gpuops.get_matmul_precision() == "highest"
    with pytest.raises(ValueError, match=r"set_matmul_precision: .*'medium'"):
        gpuops.set_matmul_precision("medium")
    assert gpuops.get_matmul_precision() == "highest"


# name -> (m, k, n, A layout, B layout): both operands staged K-major (A (m, k) with k
# contiguous or strided, B (k, n) k-contiguous or strided): cp.async (72/40/24) or the
# register path (70/38/22 scalar loads, strided).
TF32_LAYOUTS = {"cp.async": (72, 40, 24, "row", "col"),
                "registers": (70, 38, 22, "row", "col"),
                "strided": (130, 40, 24, "strided", "strided")}


@pytest.mark.parametrize("layout", TF32_LAYOUTS)
def test_tf32_layouts_against_float64(high_precision, layout):
    """gemm_tc_f32 (mma m16n8k8 .tf32): within the TF32 bound of the float64 product (each
    input rounded to 10 fraction bits: 2 x 2^-11 per product, then float32 sums)."""
    m, k, n, a_layout, b_layout = TF32_LAYOUTS[layout]
    rng = numpy.random.default_rng(8)
    a = _view(rng, m, k, a_layout, numpy.float32)
    b = _view(rng, k, n, b_layout, numpy.float32)
    tc, _, noted = _run(True, a, b, (m, n), numpy.float32)
    assert [(kernel, block) for kernel, _, block, _ in noted] == [("gemm_tc_f32", (128,))]
    assert not (noted[0][3][0] | noted[0][3][1]) & ALONG_ROW
    a64, b64 = a.astype(numpy.float64), b.astype(numpy.float64)
    exact = a64 @ b64
    scale = numpy.abs(a64) @ numpy.abs(b64)
    _check_bound(tc, exact, (2 * TF32_UNIT + k * ACC) * scale + ACC * numpy.abs(exact)
                 + 1e-300, layout)
    # not float32's result: the inputs were rounded (the kernel cannot be the SIMT one)
    gpuops.set_matmul_precision("highest")
    simt, _, simt_noted = _run(True, a, b, (m, n), numpy.float32)
    gpuops.set_matmul_precision("high")
    assert simt_noted[0][0] == "gemm_f32" and not numpy.array_equal(tc, simt)


def test_tf32_epilogue_prologue_row_sums_and_split(high_precision):
    """Bias + activation, the act' prologue with the row sums, split over 8 SMs and
    bitwise repeatable, on gemm_tc_f32."""
    rng = numpy.random.default_rng(12)
    m, k, n = 40, 256, 24
    gy = rng.standard_normal((m, k)).astype(numpy.float32)
    y = rng.uniform(0.05, 0.95, (m, k)).astype(numpy.float32)
    b = rng.standard_normal((n, k)).astype(numpy.float32).T  # k-contiguous
    bias = rng.standard_normal(n).astype(numpy.float32)
    kwargs = dict(aux=y, a_act=ACT["sigmoid"], bias=bias,
                  bias_mode=matmul_module.BIAS_PER_COLUMN, act=ACT["tanh"], db_shape=(m,))
    launcher = _launcher(True, 8)
    first = _run(True, gy, b, (m, n), numpy.float32, launcher=launcher, **dict(kwargs))
    second = _run(True, gy, b, (m, n), numpy.float32, launcher=launcher, **dict(kwargs))
    kernel, grid, _, _ = first[2][0]
    assert kernel == "gemm_tc_f32" and grid[2] > 1, (kernel, grid)
    for one, two in zip(first[:2], second[:2]):
        assert one.tobytes() == two.tobytes()
    a_exact = gy.astype(numpy.float64) * _slope("sigmoid", y.astype(numpy.float64))
    b64 = b.astype(numpy.float64)
    exact = numpy.tanh(a_exact @ b64 + bias.astype(numpy.float64))
    scale = numpy.abs(a_exact) @ numpy.abs(b64) + numpy.abs(bias.astype(numpy.float64))
    splits = grid[2]
    # the prologue's float32 product (1 u), its TF32 rounding and B's, the sums
    _check_bound(first[0], exact, (2 * TF32_UNIT + (k + splits + 1) * ACC) * scale
                 + ACC * numpy.abs(exact) + 1e-300, "split product")
    rows, row_scale = a_exact.sum(axis=1), numpy.abs(a_exact).sum(axis=1)
    # the row sums add the prologue's float32 values (not TF32-rounded)
    _check_bound(first[1], rows, (k + splits + 1) * ACC * row_scale + ACC * numpy.abs(rows)
                 + 1e-300, "split row sums")


def test_tf32_only_for_k_major_operands_and_cached_per_precision(high_precision):
    """An m- or n-contiguous operand keeps float32's SIMT kernel under "high" (bit for bit
    "highest"), and the launch-geometry cache plans the same layout again when the
    precision changes."""
    rng = numpy.random.default_rng(13)
    a = rng.standard_normal((72, 40)).astype(numpy.float32)
    b = rng.standard_normal((40, 24)).astype(numpy.float32)  # n-contiguous
    high, _, noted = _run(True, a, b, (72, 24), numpy.float32)
    assert noted[0][0] == "gemm_f32"
    gpuops.set_matmul_precision("highest")
    highest, _, _ = _run(True, a, b, (72, 24), numpy.float32)
    numpy.testing.assert_array_equal(high, highest)
    bt = numpy.ascontiguousarray(b.T).T  # k-contiguous: planned once per precision
    _, _, noted = _run(True, a, bt, (72, 24), numpy.float32)
    assert noted[0][0] == "gemm_f32"
    gpuops.set_matmul_precision("high")
    _, _, noted = _run(True, a, bt, (72, 24), numpy.float32)
    assert noted[0][0] == "gemm_tc_f32"
