"""Memory counters of the emulator (gpuops.emu counting mode, gpuops/emu/counters.py):
planted access patterns (emu_kernels/memory_patterns.cu) with exact expected counts
derived by hand in each test, the operators' kernels through ``emu.profile()``, and the
default build mode left as it was.

Units: a warp request is one instruction executed by the lanes of one warp; a sector is
32 bytes of global memory; a shared request takes one wavefront per phase (the warp for
accesses of up to 4 bytes, half-warps for 8, quarter-warps for 16) times the most
distinct 4-byte words on one of the 32 banks.
"""
from __future__ import annotations

from pathlib import Path

import numpy
import pytest

emu = pytest.importorskip("gpuops.emu", reason="gpuops.emu missing")
if emu.compiler() is None:
    pytest.skip("no g++: the emulator cannot build kernels", allow_module_level=True)

import gpuops  # noqa: E402
from gpuops import kernels  # noqa: E402

pytestmark = pytest.mark.emu
KERNELS = Path(__file__).resolve().parent / "emu_kernels"
F32 = numpy.float32
LD_REQ = "l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum"
LD_SEC = "l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum"
ST_REQ = "l1tex__t_requests_pipe_lsu_mem_global_op_st.sum"
ST_SEC = "l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum"
SH_LD = "smsp__sass_inst_executed_op_shared_ld.sum"
SH_ST = "smsp__sass_inst_executed_op_shared_st.sum"
SH_LD_WAVES = "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum"
SH_ST_WAVES = "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_st.sum"
SH_LD_CONFLICTS = "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum"
SH_ST_CONFLICTS = "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum"


@pytest.fixture(scope="module")
def patterns():
    return emu.load(KERNELS / "memory_patterns.cu", counters=True)


def test_coalesced_float_load_is_4_sectors_per_request(patterns):
    # 2 blocks of 32 threads: 2 warps, one load and one store each; a warp's 32
    # consecutive floats are 128 bytes = 4 sectors (the arrays start 256-aligned).
    x, y = numpy.arange(64, dtype=F32), numpy.zeros(64, F32)
    report = patterns.launch("copy_coalesced", (2,), (32,), (x, y))
    numpy.testing.assert_array_equal(y, x)
    assert report.metrics[LD_REQ] == 2 and report.metrics[LD_SEC] == 8
    assert report.metrics[ST_REQ] == 2 and report.metrics[ST_SEC] == 8
    assert report.sectors_per_request("ld") == 4.0 and report.sectors_per_request("st") == 4.0
    assert report.sectors_over_ideal("ld") == 1.0 and report.sectors_over_ideal("st") == 1.0
    assert report.bytes_moved() == 16 * 32 and report.footprint_bytes == 16 * 32
    assert report.requested_bytes == {"ld": 256, "st": 256}
    assert report.metrics[SH_LD] == 0 and report.atomics == 0
    assert report.accesses == 128  # 64 threads x (1 load + 1 store), nothing else


def test_stride_of_32_floats_is_32_sectors_per_request(patterns):
    # Lane i reads x[32 i]: 128 bytes apart, each lane in its own sector: 32 per request.
    x, y = numpy.arange(64 * 32, dtype=F32), numpy.zeros(64, F32)
    report = patterns.launch("load_strided32", (2,), (32,), (x, y))
    numpy.testing.assert_array_equal(y, x[::32])
    assert (report.metrics[LD_REQ], report.metrics[LD_SEC]) == (2, 64)
    assert (report.metrics[ST_REQ], report.metrics[ST_SEC]) == (2, 8)
    assert report.sectors_per_request("ld") == 32.0
    assert report.sectors_over_ideal("ld") == 8.0 and report.sectors_over_ideal("st") == 1.0
    # The worst line is the strided load: 64 sectors where 8 would carry its 256 bytes.
    worst = report.worst
    assert worst is not None and (worst.space, worst.op) == ("global", "ld")
    assert "x[32 * i]" in worst.site.text and worst.excess == 64 - 8
    assert worst.site.line > 0 and worst.site.where.endswith(f":{worst.site.line}")


def test_strided_store(patterns):
    x, y = numpy.arange(64, dtype=F32), numpy.zeros(64 * 32, F32)
    report = patterns.launch("store_strided32", (2,), (32,), (x, y))
    numpy.testing.assert_array_equal(y[::32], x)
    assert (report.metrics[LD_REQ], report.metrics[LD_SEC]) == (2, 8)
    assert (report.metrics[ST_REQ], report.metrics[ST_SEC]) == (2, 64)
    assert report.sectors_per_request("st") == 32.0
    assert report.worst is not None and report.worst.op == "st"


def test_float4_copy_is_16_sectors_per_request(patterns):
    # 16-byte accesses: one request per warp moves 32 x 16 = 512 bytes = 16 sectors.
    x = numpy.arange(64 * 4, dtype=F32)
    y = numpy.zeros_like(x)
    report = patterns.launch("copy_float4", (2,), (32,), (x, y))
    numpy.testing.assert_array_equal(y, x)
    assert (report.metrics[LD_REQ], report.metrics[LD_SEC]) == (2, 32)
    assert (report.metrics[ST_REQ], report.metrics[ST_SEC]) == (2, 32)
    assert report.sectors_per_request("ld") == 16.0
    assert report.sectors_over_ideal("ld") == 1.0  # 16 sectors is the ideal at 16 bytes a lane
    assert report.accesses == 128  # one 16-byte load and store per thread


def test_broadcast_and_single_lane(patterns):
    # Every lane reads x[0]: 1 sector per request. z[i] stores: 4 sectors per warp; the
    # store by lane 0 alone is a request of 1 sector.
    x, y, z = numpy.arange(8, dtype=F32), numpy.zeros(2, F32), numpy.zeros(64, F32)
    report = patterns.launch("broadcast", (2,), (32,), (x, y, z))
    assert (report.metrics[LD_REQ], report.metrics[LD_SEC]) == (2, 2)
    assert (report.metrics[ST_REQ], report.metrics[ST_SEC]) == (2 + 2, 2 * 4 + 2 * 1)
    assert report.sectors_over_ideal("ld") == 1.0 and report.sectors_over_ideal("st") == 1.0
    # Footprint: x's first sector, y's one sector, z's 8 sectors.
    assert report.footprint_sectors == 1 + 1 + 8


def test_transposed_tile_without_padding_is_32_way(patterns):
    # Block (32, 8): each warp (one threadIdx.y) runs each loop 4 times: 8 warps x 4 =
    # 32 requests per instruction. Row-wise stores: 32 words on 32 banks, 1 wavefront.
    # Column reads tile[c][r], c = lane: words 32 c + r all on bank r: 32 wavefronts.
    x = numpy.arange(1024, dtype=F32)
    y = numpy.zeros_like(x)
    report = patterns.launch("tile_transpose_unpadded", (1,), (32, 8), (x, y))
    numpy.testing.assert_array_equal(y.reshape(32, 32), x.reshape(32, 32).T)
    m = report.metrics
    assert (m[SH_ST], m[SH_ST_WAVES], m[SH_ST_CONFLICTS]) == (32, 32, 0)
    assert (m[SH_LD], m[SH_LD_WAVES], m[SH_LD_CONFLICTS]) == (32, 32 * 32, 32 * 31)
    assert report.bank_conflict_ways("ld") == 32.0 and report.bank_conflict_ways("st") == 1.0
    assert (m[LD_REQ], m[LD_SEC], m[ST_REQ], m[ST_SEC]) == (32, 128, 32, 128)
    worst = report.worst
    assert worst is not None and (worst.space, worst.op) == ("shared", "ld")
    assert "tile[c][r]" in worst.site.text and worst.excess == 32 * 31


def test_transposed_tile_with_padding_has_no_conflict(patterns):
    # tile[32][33]: words 33 c + r fall on banks (c + r) % 32, all distinct.
    x = numpy.arange(1024, dtype=F32)
    y = numpy.zeros_like(x)
    report = patterns.launch("tile_transpose_padded", (1,), (32, 8), (x, y))
    numpy.testing.assert_array_equal(y.reshape(32, 32), x.reshape(32, 32).T)
    m = report.metrics
    assert (m[SH_LD], m[SH_LD_WAVES], m[SH_LD_CONFLICTS]) == (32, 32, 0)
    assert (m[SH_ST], m[SH_ST_WAVES], m[SH_ST_CONFLICTS]) == (32, 32, 0)
    assert report.bank_conflict_ways("ld") == 1.0


def test_shared_store_conflicts_in_dynamic_shared_memory(patterns):
    # buffer[32 c + r] = ...: a warp's stores go down a column (one bank): 32-way; the
    # reads back along rows are conflict-free.
    x = numpy.arange(1024, dtype=F32)
    y = numpy.zeros_like(x)
    report = patterns.launch("shared_store_column", (1,), (32, 8), (x, y), shared_mem=4096)
    numpy.testing.assert_array_equal(y.reshape(32, 32), x.reshape(32, 32).T)
    m = report.metrics
    assert (m[SH_ST], m[SH_ST_WAVES], m[SH_ST_CONFLICTS]) == (32, 1024, 992)
    assert (m[SH_LD], m[SH_LD_WAVES], m[SH_LD_CONFLICTS]) == (32, 32, 0)


def test_8_byte_shared_accesses_by_half_warp(patterns):
    # One warp. Stores d[lane], d[lane + 32]: 2 requests of 2 half-warp phases (16 x 8 =
    # 128 bytes each), conflict-free: 4 wavefronts. Loads: d[63 - lane] 2 wavefronts; d[2 lane]:
    # in a phase, lanes l and l + 8 hit the same banks with different words: 2 ways per
    # phase, 4 wavefronts, 2 conflicts; d[5] by every lane: 1 word pair per phase, 2.
    x = numpy.arange(64, dtype=numpy.float64)
    y = numpy.zeros(32)
    report = patterns.launch("shared_doubles", (1,), (32,), (x, y))
    lane = numpy.arange(32)
    numpy.testing.assert_array_equal(y, x[63 - lane] + x[2 * lane] + x[5])
    m = report.metrics
    assert (m[SH_ST], m[SH_ST_WAVES], m[SH_ST_CONFLICTS]) == (2, 4, 0)
    assert (m[SH_LD], m[SH_LD_WAVES], m[SH_LD_CONFLICTS]) == (3, 2 + 4 + 2, 2)
    # Global: two loads of 256 bytes (8 sectors each), one store of 256 bytes.
    assert (m[LD_REQ], m[LD_SEC], m[ST_REQ], m[ST_SEC]) == (2, 16, 1, 8)


def test_shared_scalar_broadcast(patterns):
    # Block of 64: thread 0 stores `total` (1 request, 1 wavefront); each of the 2 warps
    # reads it (a broadcast: 1 wavefront each). x[0] by thread 0: 1 request, 1 sector.
    x, y = numpy.arange(4, dtype=F32) + 7, numpy.zeros(64, F32)
    report = patterns.launch("shared_scalar", (1,), (64,), (x, y))
    assert (y == 7).all()
    m = report.metrics
    assert (m[SH_ST], m[SH_ST_WAVES], m[SH_LD], m[SH_LD_WAVES]) == (1, 1, 2, 2)
    assert (m[LD_REQ], m[LD_SEC], m[ST_REQ], m[ST_SEC]) == (1, 1, 2, 8)


def test_shared_variables_of_a_template_function(patterns):
    # Block of 64 = 2 warps. Stores: posted[warp] by each warp's lane 0 (2 requests),
    # total by thread 0 (1). Loads: posted[0], posted[1] by thread 0 (the same
    # instruction twice: 2 requests), total by each warp (2). One wavefront each.
    x, y = numpy.arange(64, dtype=F32), numpy.zeros(64, F32)
    report = patterns.launch("template_shared", (1,), (64,), (x, y))
    assert (y == x[0] + x[32]).all()
    m = report.metrics
    assert (m[SH_ST], m[SH_ST_WAVES], m[SH_LD], m[SH_LD_WAVES]) == (3, 3, 4, 4)
    # x[threadIdx.x] is only used by the lanes 0 (g++ sinks the load into their branch,
    # as nvcc may): 1 sector per warp.
    assert (m[LD_REQ], m[LD_SEC], m[ST_REQ], m[ST_SEC]) == (2, 2, 2, 8)


def test_template_shared_memory_counts_without_other_shared_variables():
    # template_shared.cu has no __shared__ variable outside a template function. 2 blocks
    # of 64 threads (2 warps each): block 0 stores tile[t] (2 requests), both blocks load
    # it (4), every warp stores out (4 requests of 4 sectors). One wavefront each.
    module = emu.load(KERNELS / "template_shared.cu", counters=True)
    out = numpy.zeros(128, F32)
    report = module.launch("unwritten_template_shared", (2,), (64,), (out,))
    m = report.metrics
    assert (m[SH_ST], m[SH_ST_WAVES], m[SH_LD], m[SH_LD_WAVES]) == (2, 2, 4, 4)
    assert (m[LD_REQ], m[ST_REQ], m[ST_SEC]) == (0, 4, 16)


def test_locals_do_not_count(patterns):
    # A stack array written and read by every thread: only x[i] and y[i] are counted.
    x, y = numpy.arange(64, dtype=F32), numpy.zeros(64, F32)
    report = patterns.launch("with_locals", (2,), (32,), (x, y, numpy.int32(3)))
    numpy.testing.assert_array_equal(y, x + 3)
    assert report.accesses == 128
    assert (report.metrics[LD_REQ], report.metrics[ST_REQ]) == (2, 2)


def test_a_view_is_placed_in_its_base_array(patterns):
    # x[1:] starts 4 bytes into a 256-aligned allocation: each warp's 128 bytes straddle
    # 5 sectors, as they would on a GPU.
    base = numpy.arange(65, dtype=F32)
    y = numpy.zeros(64, F32)
    report = patterns.launch("copy_coalesced", (2,), (32,), (base[1:], y))
    numpy.testing.assert_array_equal(y, base[1:])
    assert (report.metrics[LD_REQ], report.metrics[LD_SEC]) == (2, 10)


def test_atomics_counted_apart():
    # primitives.atomics: x[i] and keys[i] loaded in a grid-stride loop (n = 1000 over
    # 3 x 128 threads: threads t < 232 run 3 rounds, the rest 2; warps 0-7 have lanes in
    # a third round: 8 x 3 + 4 x 2 = 32 requests per load), then atomicAdd / atomicMax.
    module = emu.load(KERNELS / "primitives.cu", counters=True)
    rng = numpy.random.default_rng(2)
    x = rng.integers(-100, 100, 1000).astype(numpy.float64)
    keys = rng.integers(-10**6, 10**6, 1000).astype(numpy.int32)
    total, top = numpy.zeros(1), numpy.full(1, -2**31, numpy.int32)
    report = module.launch("atomics", (3,), (128,), (x, total, keys, top, numpy.int64(1000)))
    assert total[0] == x.sum() and top[0] == keys.max()
    assert report.metrics[LD_REQ] == 2 * 32
    assert report.metrics[ST_REQ] == 0
    assert report.atomics >= 2 * 1000


def test_merge_sums_launches(patterns):
    x, y = numpy.arange(64 * 32, dtype=F32), numpy.zeros(64, F32)
    one = patterns.launch("load_strided32", (2,), (32,), (x, y))
    merged = emu.counters.merge([one, patterns.launch("load_strided32", (2,), (32,), (x, y))])
    assert merged.metrics == {name: 2 * value for name, value in one.metrics.items()}
    assert merged.worst is not None and merged.worst.excess == 2 * one.worst.excess
    assert merged.accesses == 2 * one.accesses and merged.sectors_per_request("ld") == 32.0


def test_too_many_accesses_raise(patterns, monkeypatch):
    monkeypatch.setattr(emu, "MAX_RECORDS", 32)  # one record per thread of the block
    x, y = numpy.arange(32, dtype=F32), numpy.zeros(32, F32)
    with pytest.raises(emu.CounterOverflow, match="GPUOPS_EMU_COUNT_MAX_RECORDS"):
        patterns.launch("copy_coalesced", (1,), (32,), (x, y))


def test_sanitizer_runtime_is_not_loaded(patterns):
    # The counting build uses ThreadSanitizer's instrumentation with its own hooks;
    # libtsan itself, which cannot be loaded into a running Python, stays out.
    with open("/proc/self/maps") as maps:
        assert "libtsan" not in maps.read()


def test_default_mode_is_untouched(patterns):
    plain = emu.load(KERNELS / "memory_patterns.cu")
    assert plain.mode == "" and not plain.counting and plain.path != patterns.path
    assert "-plain-" in plain.path.name and "-count-" in patterns.path.name
    x, y = numpy.arange(64, dtype=F32), numpy.zeros(64, F32)
    assert plain.launch("copy_coalesced", (2,), (32,), (x, y)) is None
    numpy.testing.assert_array_equal(y, x)


def test_profile_operators_through_the_emu_backend():
    # exp over 1024 float32: exp_f32 runs a grid-stride loop over 16-byte vectors (4 floats
    # per thread per round, cuda/half.cuh's Vec16), so 1024 / (32 * 4) = 8 load and 8 store
    # requests of 16 sectors each: the same 128 sectors as one float per thread.
    x = numpy.random.default_rng(0).standard_normal((16, 64)).astype(F32)
    with emu.profile() as reports:
        y = gpuops.exp(x)
    numpy.testing.assert_allclose(y, numpy.exp(x), rtol=1e-6)
    (report,) = reports
    assert (report.label, report.kernel) == ("elementwise", "exp_f32")
    m = report.metrics
    assert (m[LD_REQ], m[LD_SEC], m[ST_REQ], m[ST_SEC]) == (8, 128, 8, 128)
    assert report.bytes_moved() == 2 * x.nbytes == report.footprint_bytes
    assert report.as_dict()["sectors_per_request_ld"] == 16.0
    # Lines are mapped back to cuda/: exp_f32's accesses are the 16-byte vector loads and
    # stores of cuda/half.cuh (load_vec16 / store_vec16), the worst (ties: the last) a store.
    source = (kernels.cuda_dir() / "half.cuh").read_text().splitlines()
    line = source.index("    *reinterpret_cast<Vec16<T>*>(p) = v;") + 1
    assert report.worst is not None and report.worst.site.where == f"half.cuh:{line}"


def test_launcher_with_counters_records_reports():
    launcher = emu.EmuLauncher(counters=True, record=False)
    x = numpy.arange(256, dtype=F32)
    y = numpy.zeros_like(x)
    launcher.launch("elementwise", "neg_f32", (1,), (256,), (x, y, numpy.int64(256)))
    numpy.testing.assert_array_equal(y, -x)
    (report,) = launcher.reports
    # 256 floats as 64 16-byte vectors: 2 warp requests of 16 sectors
    assert report.metrics[LD_REQ] == 2 and report.metrics[LD_SEC] == 32
    assert str(report).startswith("elementwise.neg_f32 grid (1, 1, 1) block (256, 1, 1)")


def test_pointer_table_arrays_count_when_registered_as_indirect():
    # sgd_step_f32 reaches p, g and the velocity through a pointer table (cuda/optim.cu).
    # Without ``indirect`` only the table's loads count (uniform: 1 sector per request);
    # with it, per tensor of n floats from a 256-aligned base, each array moves
    # 4 sectors per full warp and ceil(4 r / 32) for a last warp of r floats: 1024 floats
    # 128 sectors, 300 floats (9 warps + 12) 9 x 4 + 2 = 38. Stores: p and the velocity;
    # loads: g, the velocity and p, plus the table's.
    rng = numpy.random.default_rng(0)
    shapes = [(1024,), (300,)]
    params = [rng.standard_normal(s).astype(F32) for s in shapes]
    grads = [rng.standard_normal(s).astype(F32) for s in shapes]
    velocities = [numpy.zeros(s, F32) for s in shapes]
    with emu.profile() as unattributed:
        gpuops.sgd_step(params, grads, velocities, lr=0.1, momentum=0.9)
    with emu.profile(indirect=[*params, *grads, *velocities]) as reports:
        gpuops.sgd_step(params, grads, velocities, lr=0.1, momentum=0.9)
    (blind,), (report,) = unattributed, reports
    assert report.kernel == blind.kernel == "sgd_step_f32"
    table_sectors = blind.metrics[LD_SEC]
    assert blind.metrics[LD_REQ] == table_sectors and blind.metrics[ST_REQ] == 0
    per_array = 128 + 38
    assert report.metrics[ST_SEC] == 2 * per_array
    assert report.metrics[ST_REQ] == 2 * (32 + 10)
    assert report.metrics[LD_SEC] == table_sectors + 3 * per_array
    assert report.sectors_over_ideal("ld") == report.sectors_over_ideal("st") == 1.0

