"""The GEMM sized to the GPU (gpuops.ops.matmul.plan): tile choice by shape and SM count,
and the deterministic split-K (partial tiles in a workspace; the last block of a tile to
arrive adds the splits in a fixed order and applies the epilogue).

The emulator runs the splits through a launcher that reports a small SM count
(``sm_count``), so that tiny products split; every layout the GEMM reads (transposed
operands, batch broadcast, a reduction batch, bias + activation epilogue) is compared
with the float64 product, split and unsplit, in every dtype, the 16-bit ones on the
tensor-core kernels too."""
from __future__ import annotations

import numpy
import pytest

import gpuops
from benchmarks.launch_fakes import RecordingLauncher
from gpuops.ops import matmul as matmul_module

RNG = numpy.random.default_rng(18)
BF16 = numpy.dtype(gpuops.bfloat16)
# dtype -> unit roundoff of its accumulation (float32 for the 16-bit dtypes) and of a result
EPS = {numpy.dtype(numpy.float32): (2.0 ** -24, 2.0 ** -24),
       numpy.dtype(numpy.float64): (2.0 ** -53, 2.0 ** -53),
       numpy.dtype(numpy.float16): (2.0 ** -24, 2.0 ** -11),
       BF16: (2.0 ** -24, 2.0 ** -8)}


def _emu():
    emu = pytest.importorskip("gpuops.emu", reason="gpuops.emu missing")
    from gpuops.emu import build
    if build.compiler() is None:
        pytest.skip("no C++ compiler for the emulator")
    return emu


def _launcher(sms: int, tensor_cores: bool = False):
    """An emulator launcher that reports ``sms`` multiprocessors and notes its launches."""
    emu = _emu()

    class Noting(emu.EmuLauncher):
        def __init__(self) -> None:
            super().__init__(tensor_cores=tensor_cores)
            self.sm_count = sms
            self.kernels: list[tuple[str, tuple]] = []

        def launch(self, family, kernel, grid, block, args, shared_mem=0):
            self.kernels.append((kernel, tuple(grid)))
            super().launch(family, kernel, grid, block, args, shared_mem)

    return Noting()


@pytest.fixture
def splits(monkeypatch):
    """The K splits of every GEMM launched while the test runs, in order."""
    noted: list[int] = []
    original = matmul_module.plan

    def noting(*args, **kwargs):
        p = original(*args, **kwargs)
        noted.append(p.splits)
        return p

    monkeypatch.setattr(matmul_module, "plan", noting)
    monkeypatch.setattr(matmul_module, "_geometries", _Uncached())  # every launch plans
    return noted


class _Uncached(dict):
    """A launch-geometry cache that keeps nothing."""

    def __setitem__(self, key, value):
        pass


def test_launch_geometry_is_planned_once_per_layout(monkeypatch):
    """gemm plans a layout once (shapes, strides, alignment, SMs): the same layout again is
    not planned, another alignment or SM count is, and the launches are the same."""
    planned = []
    original = matmul_module.plan
    monkeypatch.setattr(matmul_module, "plan",
                        lambda *a, **k: planned.append(a[1:]) or original(*a, **k))
    monkeypatch.setattr(matmul_module, "_geometries", {})
    x = numpy.zeros((64, 40), numpy.float32)
    w = numpy.zeros((24, 40), numpy.float32)
    launcher = RecordingLauncher()
    with gpuops.backend.use_cpu_launcher(launcher):
        for _ in range(3):
            gpuops.linear(x, w)
        assert len(planned) == 1
        assert len(set(launcher.launches)) == 1 and len(launcher.launches) == 3
        gpuops.linear(numpy.zeros(64 * 40 + 1, numpy.float32)[1:].reshape(64, 40), w)
        assert len(planned) == 2  # a base 4 bytes off: vector loads decided again
    launcher.sm_count = 8
    with gpuops.backend.use_cpu_launcher(launcher):
        gpuops.linear(x, w)
    assert len(planned) == 3


# ---- the plan on an H200's 132 SMs (RecordingLauncher) ------------------------------

def test_plan_fills_the_sms_with_smaller_tiles_then_splits():
    h200 = RecordingLauncher()
    assert matmul_module.sm_count(h200) == 132
    f32 = numpy.float32
    big = matmul_module.plan(h200, f32, 4096, 4096, 4096)
    assert (big.tiles.kernel, big.splits, big.blocks) == ("gemm", 1, 32 * 32)
    # the MLP's 784 -> 256 layer at batch 512: 8 tiles of 128, 32 of 64, then 4 splits
    mlp = matmul_module.plan(h200, f32, 512, 256, 784)
    assert (mlp.tiles.kernel, mlp.splits, mlp.blocks) == ("gemm_small", 4, 128)
    # 256 -> 10 with K = 256: 16 tiles of 32, 4 splits (each >= 64 of K): half the SMs
    head = matmul_module.plan(h200, f32, 512, 10, 256)
    assert (head.tiles.kernel, head.splits, head.blocks) == ("gemm_tiny", 4, 64)
    # conv2d's weight gradient: 3 output tiles, the images a reduction batch of 512
    wgrad = matmul_module.plan(h200, f32, 32, 288, 784, nz=1, nr=512)
    assert (wgrad.tiles.kernel, wgrad.splits, wgrad.blocks) == ("gemm", 44, 132)
    # tensor cores: 8 tiles of 128; 25 steps of 32 in K, 2 per split at least -> 12 splits
    tc = matmul_module.plan(h200, numpy.float16, 512, 256, 784)
    assert (tc.tiles.kernel, tc.splits, tc.blocks) == ("gemm_tc", 12, 96)
    # a product with a short K is not split, however few its tiles: smaller tiles instead
    short = matmul_module.plan(h200, f32, 512, 256, 10)
    assert (short.tiles.kernel, short.splits, short.blocks) == ("gemm_tiny", 1, 128)
    # a larger tile split beats smaller tiles that fill fewer of the SMs' slots
    wide = matmul_module.plan(h200, f32, 256, 784, 512)
    assert (wide.tiles.kernel, wide.splits, wide.blocks) == ("gemm", 8, 112)


@pytest.mark.emu
@pytest.mark.parametrize("sms,shape,kernel", [(2, (128, 8, 64), "gemm_small_f32"),
                                              (4, (64, 8, 64), "gemm_tiny_f32")])
def test_smaller_float32_tiles_on_the_emulator(sms, shape, kernel):
    """The 64x64 and 32x32 float32 kernels, picked for a launcher of few SMs: ragged
    tiles, against the float64 product."""
    m, k, n = shape
    a, b = RNG.standard_normal((m, k)), RNG.standard_normal((k, n))
    launcher = _launcher(sms)
    with gpuops.backend.use_cpu_launcher(launcher):
        y = gpuops.matmul(a.astype(numpy.float32), b.astype(numpy.float32)[:, :7])
    assert [name for name, _ in launcher.kernels] == [kernel]
    exact = a @ b[:, :7]
    bound = (k + 1) * 2.0 ** -24 * (numpy.abs(a) @ numpy.abs(b[:, :7])) + 1e-6
    assert numpy.all(numpy.abs(y - exact) <= bound)


# ---- split and unsplit against the float64 product ----------------------------------

def _cases(dtype):
    """(name, build) with build(xp-less numpy arrays) -> (inputs, call, float64 reference,
    float64 scale, K summed per output)."""
    def plain():
        a, b = RNG.standard_normal((9, 256)), RNG.standard_normal((256, 7))
        return (a, b), lambda a, b: gpuops.matmul(a, b), 256

    def transposed():
        a, b = RNG.standard_normal((256, 9)), RNG.standard_normal((7, 256))
        return (a, b), lambda a, b: gpuops.matmul(a.T, b.T), 256

    def broadcast_batch():
        a, b = RNG.standard_normal((2, 9, 256)), RNG.standard_normal((256, 7))
        return (a, b), lambda a, b: gpuops.matmul(a, b), 256

    def reduction_batch():  # gx2 = Σ_b x1[b]ᵀ gy[b]: 16 images of 16 rows
        x1, x2 = RNG.standard_normal((16, 16, 5)), RNG.standard_normal((5, 6))
        gy = RNG.standard_normal((16, 16, 6))
        return (x1, x2, gy), lambda x1, x2, gy: gpuops.matmul_wrt_x2(x1, x2, gy, gy), 256

    def linear_bias_tanh():
        x, w, b = RNG.standard_normal((9, 256)), RNG.standard_normal((7, 256)), \
            RNG.standard_normal(7)
        return (x, w, b), lambda x, w, b: gpuops.linear(x, w, b, activation="tanh"), 257

    return {"plain": plain, "transposed": transposed, "broadcast batch": broadcast_batch,
            "reduction batch": reduction_batch, "linear bias tanh": linear_bias_tanh}


def _reference(name, inputs):
    """The float64 result and the float64 product of the absolute values (the scale)."""
    x = [v.astype(numpy.float64) for v in inputs]
    if name == "transposed":
        return x[0].T @ x[1].T, numpy.abs(x[0].T) @ numpy.abs(x[1].T)
    if name == "reduction batch":
        return (numpy.einsum("bmk,bmn->kn", x[0], x[2]),
                numpy.einsum("bmk,bmn->kn", numpy.abs(x[0]), numpy.abs(x[2])))
    if name == "linear bias tanh":
        pre = x[0] @ x[1].T + x[2]
        return numpy.tanh(pre), numpy.abs(x[0]) @ numpy.abs(x[1].T) + numpy.abs(x[2])
    return x[0] @ x[1], numpy.abs(x[0]) @ numpy.abs(x[1])


DTYPES = {"float32": (numpy.dtype(numpy.float32), False),
          "float64": (numpy.dtype(numpy.float64), False),
          "float16": (numpy.dtype(numpy.float16), False),
          "bfloat16": (BF16, False),
          "float16-tc": (numpy.dtype(numpy.float16), True),
          "bfloat16-tc": (BF16, True)}


@pytest.mark.emu
@pytest.mark.parametrize("split", [True, False], ids=["split", "unsplit"])
@pytest.mark.parametrize("case", list(_cases(numpy.float32)), ids=str)
@pytest.mark.parametrize("dtype_name", DTYPES)
def test_gemm_against_float64_product(dtype_name, case, split, splits):
    """Every layout, split over the SMs and not, within the float sum's error bound:
    |y - exact| <= (K + splits) eps_acc |a||b| + u |exact| (the sums of K products in the
    accumulation type, the splits' sum, one rounding of the result; tanh is 1-Lipschitz)."""
    dtype, tensor_cores = DTYPES[dtype_name]
    inputs, run, k = _cases(dtype)[case]()
    inputs = tuple(v.astype(dtype) for v in inputs)
    exact, scale = _reference(case, inputs)
    launcher = _launcher(8 if split else 1, tensor_cores)
    with gpuops.backend.use_cpu_launcher(launcher):
        y = run(*inputs)
    assert y.dtype == dtype and y.shape == exact.shape
    names = [kernel for kernel, _ in launcher.kernels]
    assert len(names) == len(splits) == 1, names  # one launch, split or not
    assert names[0].startswith("gemm_tc") == tensor_cores
    nsplit = splits[0]
    assert (nsplit > 1) == split, nsplit
    eps_acc, u = EPS[dtype]
    err = numpy.abs(y.astype(numpy.float64) - exact)
    bound = (k + nsplit) * eps_acc * scale + u * numpy.abs(exact) + 1e-300
    assert numpy.all(err <= bound), (err / bound).max()


@pytest.mark.emu
@pytest.mark.parametrize("dtype_name", ["float32", "float64", "float16-tc"])
def test_split_k_is_bitwise_repeatable(dtype_name, splits):
    """The same split product twice, bit for bit (no atomics: each split's partial tile is
    one block's sum in step order, the splits added in index order)."""
    dtype, tensor_cores = DTYPES[dtype_name]
    a = RNG.standard_normal((2, 5, 256)).astype(dtype)
    b = RNG.standard_normal((256, 7)).astype(dtype)
    bias = RNG.standard_normal(7).astype(dtype)
    results = []
    for _ in range(2):
        launcher = _launcher(16, tensor_cores)
        with gpuops.backend.use_cpu_launcher(launcher):
            results.append((gpuops.matmul(a, b), gpuops.linear(a, b.T, bias,
                                                                activation="sigmoid")))
    assert len(splits) == 4 and min(splits) > 1, splits
    with gpuops.backend.use_cpu_launcher(launcher) as backend:  # the tile counters reset
        assert not matmul_module._tile_counters(backend, 1).any()
    for first, second in zip(*results):
        assert first.tobytes() == second.tobytes()


@pytest.mark.emu
def test_conv2d_weight_gradient_splits_the_images(splits):
    """conv2d's weight gradient sums its images (a reduction batch) over several blocks."""
    x = RNG.standard_normal((8, 2, 6, 6))
    w = RNG.standard_normal((3, 2, 3, 3))
    gy = RNG.standard_normal((8, 3, 4, 4))
    expected = gpuops.conv2d_wrt_x2(x, w, None, gy, gy)  # NumPy, float64
    launcher = _launcher(8)
    with gpuops.backend.use_cpu_launcher(launcher):
        gw = gpuops.conv2d_wrt_x2(x, w, None, gy, gy)
    assert splits and splits[0] > 1, splits
    numpy.testing.assert_allclose(gw, expected, rtol=1e-12, atol=1e-12)
