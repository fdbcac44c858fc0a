"""cuda/mma.cuh's data movement and TF32 wrappers (ldmatrix, cp.async, to_tf32,
mma_m16n8k8_tf32) on the emulator, with exact expected values: the planted kernels of
emu_kernels/tensor_core_movement.cu against fragments built in NumPy from the PTX ISA's
layouts, the counting mode's shared-memory figures for a conflicting and a swizzled tile,
cp.async's zero fill and its strict completion (a read before the wait sees NaN), the
tf32 rounding against an independent float64 reference, and the NVRTC compile of the same
kernels for sm_80 and sm_90.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy
import pytest

emu = pytest.importorskip("gpuops.emu", reason="gpuops.emu missing")
if emu.compiler() is None:
    pytest.skip("no g++: the emulator cannot build kernels", allow_module_level=True)

from gpuops import kernels  # noqa: E402

pytestmark = pytest.mark.emu
KERNELS = Path(__file__).resolve().parent / "emu_kernels"
U16, U32, F32 = numpy.uint16, numpy.uint32, numpy.float32
WARP = ((1,), (32,))
# Under AddressSanitizer static shared memory is bounds-checked instead of NaN-filled and
# kept apart from the section the shared-address check knows.
needs_nan_filled_shared = pytest.mark.skipif(
    emu.sanitize_mode() == "address",
    reason="under GPUOPS_EMU_SANITIZE=address static shared memory is not NaN-filled")


@functools.lru_cache(maxsize=None)
def source() -> str:
    """tensor_core_movement.cu with cuda/'s headers inlined (as kernels.source does)."""
    seen: set[str] = set()

    def expand(match) -> str:
        name = match.group(1)
        if name in seen:
            return ""
        seen.add(name)
        return kernels._INCLUDE.sub(expand, (kernels.cuda_dir() / name).read_text())

    return kernels._INCLUDE.sub(expand, (KERNELS / "tensor_core_movement.cu").read_text())


@pytest.fixture(scope="module")
def module():
    return emu.load(source(), label="tensor_core_movement")


@pytest.fixture(scope="module")
def counting():
    return emu.load(source(), label="tensor_core_movement", counters=True)


def pack(lo: numpy.ndarray, hi: numpy.ndarray) -> numpy.ndarray:
    return lo.astype(U32) | (hi.astype(U32) << 16)


# ---- ldmatrix -----------------------------------------------------------------------------

def fragments(mats: numpy.ndarray) -> numpy.ndarray:
    """The PTX fragments of 8x8 matrices mats[i]: [lane, i] = row l/4, columns 2(l%4)+{0,1}."""
    lane = numpy.arange(32)
    row, col = lane // 4, 2 * (lane % 4)
    return numpy.stack([pack(m[row, col], m[row, col + 1]) for m in mats], axis=1)


def test_ldmatrix_fragments_follow_the_ptx_layout(module):
    m = numpy.arange(1, 257, dtype=U16) * 3  # row r = lane r: values 24 r + 3 .. distinct
    out = numpy.zeros(512, U32)
    module.launch("ldmatrix_forms", *WARP, (m, out))
    mats = m.reshape(4, 8, 8)  # matrix i = rows 8i .. 8i + 7
    got = out.reshape(4, 32, 4)
    numpy.testing.assert_array_equal(got[0], fragments(mats))
    numpy.testing.assert_array_equal(got[1], fragments(mats.transpose(0, 2, 1)))
    numpy.testing.assert_array_equal(got[2][:, :2], fragments(mats[:2]))  # lanes 16.. ignored
    numpy.testing.assert_array_equal(got[3][:, :2], fragments(mats[:2].transpose(0, 2, 1)))
    assert not got[2][:, 2:].any() and not got[3][:, 2:].any()


@pytest.mark.parametrize("b_kmajor", [1, 0])
def test_ldmatrix_feeds_mma_as_a_gemm_does(module, b_kmajor):
    """A (16x16) by ldmatrix_x4, B (16x8) by ldmatrix_x2_trans from k-major rows or by
    ldmatrix_x2 from n-major rows, through mma_m16n8k16: D = A B exactly (small integers)."""
    rng = numpy.random.default_rng(7)
    a = rng.integers(-8, 9, (16, 16)).astype(numpy.float16)
    b = rng.integers(-8, 9, (16, 8)).astype(numpy.float16)
    stored = b if b_kmajor else b.T.copy()
    d = numpy.zeros((16, 8), F32)
    module.launch("ldmatrix_mma", *WARP, (a.view(U16).ravel(), stored.view(U16).ravel(), d,
                                          numpy.int32(b_kmajor)))
    numpy.testing.assert_array_equal(d, a.astype(numpy.float64) @ b.astype(numpy.float64))


SH_LD, SH_ST = "smsp__sass_inst_executed_op_shared_ld.sum", "smsp__sass_inst_executed_op_shared_st.sum"
WAVES_LD = "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum"
WAVES_ST = "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_st.sum"
CONFLICTS_LD = "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum"
CONFLICTS_ST = "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum"
LD_REQ, LD_SEC = "l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum", \
    "l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum"


@pytest.mark.parametrize("swizzle, wavefronts", [(0, 32), (1, 4)])
def test_ldmatrix_bank_conflicts(counting, swizzle, wavefronts):
    """An 8 x 64 tile of 16-bit values read as four 8x8 matrices (matrix i = 16-byte chunk i
    of the 8 rows) by one ldmatrix_x4: one request of 32 lanes x 16 bytes, four
    quarter-warp phases (one matrix each). Rows 128 bytes apart put a matrix's 8 rows on
    the same 4 banks: 8 wavefronts per phase, 32 in all, 28 of them conflicts. XOR-swizzled
    chunks (c ^ row) cover all 32 banks: 4 wavefronts, none a conflict. The tile comes in
    by two cp.async per lane: 2 shared store requests, each quarter-warp one whole row
    (4 conflict-free wavefronts each), and 2 global load requests of 512 contiguous bytes
    (16 sectors each)."""
    src = numpy.arange(512, dtype=U16)
    out = numpy.zeros(128, U32)
    report = counting.launch("ldmatrix_banks", *WARP, (src, out, numpy.int32(swizzle)))
    m = report.metrics
    assert (m[SH_LD], m[WAVES_LD], m[CONFLICTS_LD]) == (1, wavefronts, wavefronts - 4)
    assert (m[SH_ST], m[WAVES_ST], m[CONFLICTS_ST]) == (2, 8, 0)
    assert (m[LD_REQ], m[LD_SEC]) == (2, 32)
    assert report.bank_conflict_ways("ld") == wavefronts / 4
    # thread-level accesses: 32 row loads, 64 cp.async loads and 64 stores, 128 stores of
    # out: the emulator's own tables (the ldmatrix rows posted to the warp) not at all
    assert report.accesses == 32 + 64 + 64 + 128
    # each access is reported at the kernel's line that calls the wrapper
    lines = {(inst.space, inst.op): inst.site.text for inst in report.instructions}
    assert lines[("shared", "ld")].startswith("ldmatrix_x4(frag, &tile[r]")
    assert lines[("shared", "st")].startswith("cp_async_16(&tile[r][8 * at]")
    assert lines[("global", "ld")] == lines[("shared", "st")]
    tile = src.reshape(8, 64)
    mats = numpy.stack([tile[:, 8 * i:8 * i + 8] for i in range(4)])
    numpy.testing.assert_array_equal(out.reshape(32, 4), fragments(mats))


@needs_nan_filled_shared
def test_ldmatrix_rejects_a_global_or_misaligned_address():
    module = emu.load(source() + """
extern "C" __global__ void ldmatrix_global(const unsigned short* m, unsigned* out) {
    unsigned r[4];
    ldmatrix_x4(r, m + 8 * threadIdx.x);
    out[threadIdx.x] = r[0];
}
extern "C" __global__ void ldmatrix_misaligned(unsigned* out) {
    __shared__ __align__(16) unsigned short tile[33][8];
    tile[threadIdx.x][0] = 0;
    __syncthreads();
    unsigned r[4];
    ldmatrix_x4(r, &tile[threadIdx.x][1]);
    out[threadIdx.x] = r[0];
}
""", label="tensor_core_movement_errors")
    out = numpy.zeros(32, U32)
    with pytest.raises(emu.EmuKernelError, match=r"ldmatrix: .* not a 16-byte row of the "
                                                 r"block's shared memory"):
        module.launch("ldmatrix_global", *WARP, (numpy.zeros(256, U16), out))
    with pytest.raises(emu.EmuKernelError, match=r"ldmatrix: .* not 16-byte aligned"):
        module.launch("ldmatrix_misaligned", *WARP, (out,))


def test_dynamic_shared_memory_rows(module):
    """cp.async and ldmatrix on `extern __shared__` rows: within the launch's dynamic bytes
    they work; past them (256 bytes: rows 16..31) the copy is refused."""
    m = numpy.arange(256, dtype=U16) * 5
    out = numpy.zeros(128, U32)
    module.launch("dynamic_rows", *WARP, (m, out), shared_mem=512)
    numpy.testing.assert_array_equal(out.reshape(32, 4), fragments(m.reshape(4, 8, 8)))
    if emu.sanitize_mode() == "address":
        return  # AddressSanitizer reports the overflow itself
    with pytest.raises(emu.EmuKernelError, match=r"cp.async: .* not a 16-byte row"):
        module.launch("dynamic_rows", *WARP, (m, out), shared_mem=256)


# ---- cp.async -----------------------------------------------------------------------------

def test_cp_async_copies_src_bytes_and_zero_fills(module):
    rng = numpy.random.default_rng(3)
    src = rng.integers(1, 256, 512).astype(numpy.uint8)  # no zero byte: fills are visible
    nbytes = numpy.array([16, 0, 1, 4, 5, 8, 15, 16] * 4, numpy.int32)
    out = numpy.full(512, 7, numpy.uint8)
    module.launch("cp_async_zero_fill", *WARP, (src, nbytes, out))
    expected = src.reshape(32, 16).copy()
    expected[numpy.arange(16)[None, :] >= nbytes[:, None]] = 0
    numpy.testing.assert_array_equal(out.reshape(32, 16), expected)


@needs_nan_filled_shared
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_cp_async_completes_only_at_its_wait(module, mode):
    """mode 0 waits right (both stages equal x); mode 1 reads stage 1 after wait<1> and a
    __syncthreads (NaN: still in flight; a barrier completes nothing); mode 2 never commits
    stage 1, so wait<1> may leave stage 0 pending (it is the most recent committed group)
    and wait<0> does not cover stage 1: every value read is the NaN the block started with."""
    x = numpy.arange(1, 257, dtype=F32)
    y = numpy.zeros(256, F32)
    module.launch("cp_async_pipeline", *WARP, (x, y, numpy.int32(mode)))
    stage0, stage1 = y[:128], y[128:]
    numpy.testing.assert_array_equal(stage0, numpy.nan if mode == 2 else x[:128])
    numpy.testing.assert_array_equal(stage1, x[128:] if mode == 0 else numpy.nan)


# ---- TF32 ---------------------------------------------------------------------------------

def tf32_reference(x: numpy.ndarray) -> numpy.ndarray:
    """cvt.rna.tf32.f32 in float64 arithmetic, independent of the bit trick: finite x
    rounded to 11 significant bits (quantum 2^(e - 10), at least 2^-136 for subnormals),
    ties away from zero, past the largest tf32 to inf; inf kept; NaN's low 13 bits cleared."""
    x = numpy.asarray(x, F32)
    bits = x.view(U32)
    out = bits & U32(0xFFFFE000)  # inf and NaN: only masked
    finite = numpy.isfinite(x)
    v = numpy.abs(x[finite].astype(numpy.float64))
    _, e = numpy.frexp(v)  # v = m 2^e, 0.5 <= m < 1: the leading bit is 2^(e - 1)
    quantum = numpy.ldexp(1.0, numpy.maximum(e - 1, -126) - 10)
    rounded = numpy.floor(v / quantum + 0.5) * quantum
    largest = (2.0 - 2.0**-10) * 2.0**127
    rounded = numpy.where(rounded > largest, numpy.inf, rounded)
    signed = numpy.copysign(rounded, x[finite].astype(numpy.float64)).astype(F32)
    out[finite] = signed.view(U32)
    return out


def test_to_tf32_edge_values(module):
    one = 1.0
    edges = [0.0, -0.0, one, one + 2**-11, one + 2**-11 - 2**-23, one + 3 * 2**-11,
             -(one + 2**-11), -(one + 3 * 2**-11), 2.0**-126, 2.0**-149, 2.0**-137,
             3 * 2.0**-137, 2.0**-137 - 2.0**-149, 2.0**-126 - 2.0**-149,
             numpy.finfo(F32).max, -numpy.finfo(F32).max, (2 - 2**-10) * 2.0**127,
             numpy.inf, -numpy.inf]
    specials = numpy.array([0x7FC00000, 0xFFC00001, 0x7F800001, 0x7F801FFF, 0x7F802000,
                            0x00001000, 0x00000FFF, 0x80001000, 0x3F801000, 0x3F803000],
                           U32).view(F32)
    rng = numpy.random.default_rng(11)
    random = (rng.standard_normal(400) * 2.0 ** rng.integers(-140, 120, 400)).astype(F32)
    x = numpy.concatenate([numpy.array(edges, F32), specials, random])
    y = numpy.zeros(x.size, U32)
    module.launch("tf32_round", (2,), (256,), (x, y, numpy.int64(x.size)))
    numpy.testing.assert_array_equal(y, tf32_reference(x))
    # hand-checked: ties away, overflow, subnormal tie, NaN payload cleared to inf, canonical NaN
    v = dict(zip(x.view(U32).tolist()[:len(edges) + len(specials)], y.tolist()))
    f = lambda value: int(numpy.array(value, F32).view(U32))  # noqa: E731
    assert v[f(one + 2**-11)] == f(one + 2**-10) and v[f(one + 3 * 2**-11)] == f(one + 2**-9)
    assert v[f(one + 2**-11 - 2**-23)] == f(one)
    assert v[f(numpy.finfo(F32).max)] == 0x7F800000 and v[0x00001000] == 0x00002000
    assert v[0x00000FFF] == 0 and v[0x7F800001] == 0x7F800000 and v[0x7FC00000] == 0x7FC00000
    assert v[0xFFC00001] == 0xFFC00000


def test_mma_tf32_against_float64(module):
    """Random operands: the emulated mma equals the float32 sum in k order of the exact
    products of tf32-rounded operands, and the float64 product to float32 accuracy;
    integer operands: the float64 product exactly."""
    rng = numpy.random.default_rng(5)
    for integer in (False, True):
        if integer:
            a, b, c = (rng.integers(-64, 65, s).astype(F32) for s in ((16, 8), (8, 8), (16, 8)))
        else:
            a, b, c = (rng.standard_normal(s).astype(F32) for s in ((16, 8), (8, 8), (16, 8)))
        d = numpy.zeros((16, 8), F32)
        module.launch("mma_tf32", *WARP, (a, b, c, d, numpy.int32(1)))
        at = tf32_reference(a).view(F32).astype(numpy.float64)
        bt = tf32_reference(b).view(F32).astype(numpy.float64)
        exact = at @ bt + c
        if integer:
            numpy.testing.assert_array_equal(d, exact)
            continue
        in_order = c.copy()
        for k in range(8):
            in_order = (in_order + (at[:, k:k + 1] * bt[k:k + 1, :]).astype(F32)).astype(F32)
        numpy.testing.assert_array_equal(d, in_order)
        bound = 8 * numpy.finfo(F32).eps * (numpy.abs(at) @ numpy.abs(bt) + numpy.abs(c))
        assert numpy.all(numpy.abs(d - exact) <= bound)
        assert numpy.any(tf32_reference(a) != a.view(U32))  # the rounding was exercised
        # raw float bits as operands: the mma reads their upper 19 bits (truncation)
        module.launch("mma_tf32", *WARP, (a, b, c, d, numpy.int32(0)))
        truncated = [(v.view(U32) & U32(0xFFFFE000)).view(F32).astype(numpy.float64)
                     for v in (a, b)]
        in_order = c.copy()
        for k in range(8):
            in_order = (in_order + (truncated[0][:, k:k + 1] * truncated[1][k:k + 1, :])
                        .astype(F32)).astype(F32)
        numpy.testing.assert_array_equal(d, in_order)


# ---- NVRTC --------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_planted_kernels_compile_under_nvrtc(arch):
    nvrtc = pytest.importorskip("nvrtc")
    try:
        nvrtc.library()
    except nvrtc.NvrtcUnavailable as error:
        pytest.skip(str(error))
    defines = "".join(f"#define {name} {value}\n" for name, value in kernels.CONSTANTS.items())
    result = nvrtc.compile_cubin(defines + source(),
                                 [*kernels.NVRTC_OPTIONS, f"--gpu-architecture={arch}",
                                  nvrtc.VERBOSE], "tensor_core_movement.cu")
    assert result.ok, result.log
    usages = nvrtc.parse_ptxas(result.log)
    assert set(usages) == {"ldmatrix_forms", "ldmatrix_banks", "cp_async_zero_fill",
                           "cp_async_pipeline", "tf32_round", "mma_tf32", "ldmatrix_mma",
                           "dynamic_rows"}
    for usage in usages.values():
        assert not (usage.spill_stores or usage.spill_loads or usage.local_bytes
                    or usage.stack_frame), usage
