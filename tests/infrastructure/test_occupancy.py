"""Occupancy calculator (gpuops/emu/occupancy.py) against figures derived by hand from the
CUDA occupancy rules for sm_90 (H100/H200): 64 warps, 32 blocks, 65536 registers per SM
given to warps in units of 256 (the warps that fit rounded down to a multiple of 4),
228 KiB of shared memory per SM with 1 KiB reserved per block and 128-byte granules,
227 KiB at most per block. Then on a real ptxas report (NVRTC, when installed).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from gpuops.emu.occupancy import SM_80, SM_90, from_usage, occupancy


def test_light_kernel_fills_the_sm():
    # 32 registers: 32 x 32 = 1024 per warp -> 64 warps; 256 threads = 8 warps per block:
    # 8 blocks by warps and by registers; shared 1 KiB reserved -> 228 blocks.
    occ = occupancy(registers=32, threads=256)
    assert (occ.blocks, occ.warps, occ.fraction) == (8, 64, 1.0)
    assert occ.limits == {"warps": 8, "registers": 8, "shared": 228, "blocks": 32}
    assert occ.limiters == ("warps", "registers") and occ.limiter == "warps"


def test_255_and_252_registers_give_one_block_of_256():
    # ceil(255 x 32 / 256) x 256 = 8192 per warp (252: 8064 -> 8192 as well):
    # 65536 / 8192 = 8 warps = one block of 8 warps; 12.5 % occupancy.
    for registers in (255, 252):
        occ = occupancy(registers=registers, threads=256)
        assert (occ.blocks, occ.warps, occ.limiter) == (1, 8, "registers")
        assert occ.fraction == 0.125


def test_register_file_rounds_warps_to_multiples_of_4():
    # 40 registers: 1280 per warp; 65536 / 1280 = 51.2 -> 51 -> 48 (multiple of 4);
    # 128 threads = 4 warps: 12 blocks (by warps alone 16): 48 warps, 75 %.
    occ = occupancy(registers=40, threads=128)
    assert (occ.blocks, occ.warps, occ.fraction, occ.limiter) == (12, 48, 0.75, "registers")
    # 37 registers round up to 40 (5 units of 8 per thread); 96 threads = 3 warps:
    # 48 // 3 = 16 blocks (by warps 21).
    occ = occupancy(registers=37, threads=96)
    assert (occ.blocks, occ.warps, occ.limits["warps"]) == (16, 48, 21)


def test_block_needing_more_than_the_register_file_cannot_launch():
    # 1024 threads x 64 registers = 65536: one block fits exactly (32 warps, 50 %; by
    # warps alone 2 blocks).
    occ = occupancy(registers=64, threads=1024)
    assert (occ.blocks, occ.warps, occ.limiters) == (1, 32, ("registers",))
    assert occ.limits["warps"] == 2
    # 65 registers: 2304 per warp x 32 warps = 73728 > 65536: no block at all.
    occ = occupancy(registers=65, threads=1024)
    assert (occ.blocks, occ.limiter) == (0, "registers")


def test_shared_memory_limits():
    # 48 KiB static + 1 KiB reserved = 50176 bytes (392 granules of 128) per block:
    # 233472 // 50176 = 4 blocks = 32 warps of 8-warp blocks.
    occ = occupancy(registers=32, threads=256, shared_bytes=48 * 1024)
    assert (occ.blocks, occ.warps, occ.limiter) == (4, 32, "shared")
    # 100 KiB dynamic: 103424 per block -> 2 blocks.
    assert occupancy(32, 256, dynamic_shared=100 * 1024).blocks == 2
    # 1000 bytes: 2024 rounds up to 2048 -> 114 blocks (not binding).
    assert occupancy(32, 256, shared_bytes=1000).limits["shared"] == 114
    # 227 KiB fits one block; a byte more does not.
    assert occupancy(32, 256, dynamic_shared=227 * 1024).blocks == 1
    occ = occupancy(32, 256, dynamic_shared=227 * 1024 + 1)
    assert (occ.blocks, occ.limiter) == (0, "shared")
    # sm_80 (A100): 164 KiB per SM: 167936 // 50176 = 3 blocks.
    assert occupancy(32, 256, shared_bytes=48 * 1024, arch=SM_80).blocks == 3


def test_small_blocks_hit_the_block_limit():
    # 32 threads = 1 warp: 64 blocks by warps, but at most 32 blocks: 32 warps, 50 %.
    occ = occupancy(registers=16, threads=32)
    assert (occ.blocks, occ.warps, occ.fraction, occ.limiter) == (32, 32, 0.5, "blocks")
    # 48 threads still take 2 whole warps: 32 blocks, 64 warps.
    assert occupancy(16, 48).warps == 64
    assert "limited by blocks" in str(occ)


def test_bad_arguments():
    with pytest.raises(ValueError, match="1025 threads"):
        occupancy(32, 1025)
    with pytest.raises(ValueError, match="256 registers"):
        occupancy(256, 128)
    with pytest.raises(ValueError, match="negative"):
        occupancy(32, 128, dynamic_shared=-1)


def test_from_a_ptxas_report():
    """ptxas' figures for the planted tile kernel: tile[32][33] floats = 4224 bytes of
    static shared memory; 4224 + 1024 = 5248 = 41 granules: 233472 // 5248 = 44 blocks."""
    nvrtc = pytest.importorskip("nvrtc", reason="tests/support not on the path")
    try:
        nvrtc.library()
    except nvrtc.NvrtcUnavailable as error:
        pytest.skip(f"NVRTC unavailable: {error}")
    from gpuops import kernels

    source = (Path(__file__).resolve().parent / "emu_kernels" / "memory_patterns.cu").read_text()
    result = nvrtc.compile_cubin(source, [*kernels.NVRTC_OPTIONS, "--gpu-architecture=sm_90",
                                          nvrtc.VERBOSE], "memory_patterns.cu")
    assert result.ok, result.log
    usage = nvrtc.parse_ptxas(result.log)["tile_transpose_padded"]
    assert usage.shared_bytes == 32 * 33 * 4
    occ = from_usage(usage, threads=256)
    assert occ.limits["shared"] == 44 and occ.shared_bytes == 4224
    assert occ == occupancy(usage.registers, 256, 4224, arch=SM_90)
    assert occ.blocks == min(8, occ.limits["registers"])
