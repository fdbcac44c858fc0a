"""Occupancy: how many blocks of a kernel an SM holds at once, and which limit binds.

Pure Python, from what ptxas reports for a kernel (registers per thread, static shared
memory: ``tests/support/nvrtc.py`` reads them from NVRTC's ``--ptxas-options=-v``) and a
launch's block size and dynamic shared memory, by the rules of CUDA's occupancy
calculator (``cudaOccupancyMaxActiveBlocksPerMultiprocessor``):

* warps: ``max_warps // warps_per_block`` (warps_per_block = ceil(threads / 32));
* blocks: at most ``max_blocks`` per SM;
* registers: a warp is given ``ceil(32 r / 256) * 256`` registers (r per thread); the
  register file holds ``65536 // that`` warps, rounded down to a multiple of 4 (one
  quarter of the file per SM sub-partition), so ``that_many // warps_per_block``
  blocks; none at all when one block needs more than 65536 registers;
* shared memory: a block takes static + dynamic + 1 KiB (reserved by the runtime per
  block, sm_80 and later), rounded up to 128 bytes, out of 228 KiB per SM (sm_90;
  164 KiB on sm_80); none when static + dynamic exceed the 227 KiB (163 KiB) a block
  may have.

The resident blocks are the smallest of the four; the limiters are the ones that give
it (ties name several)::

    occupancy(registers=40, threads=128)   # 12 blocks, 48 warps (75 %), 'registers'
"""
from __future__ import annotations

import dataclasses
import math
from typing import Protocol

__all__ = ["Architecture", "SM_80", "SM_90", "ARCHITECTURES", "Occupancy", "occupancy",
           "from_usage"]


@dataclasses.dataclass(frozen=True)
class Architecture:
    """Per-SM limits of a compute capability (CUDA C++ Programming Guide, Table
    "Technical Specifications per Compute Capability", and the occupancy calculator's
    allocation granularities)."""

    name: str
    max_warps: int = 64
    max_blocks: int = 32
    max_threads_per_block: int = 1024
    registers: int = 65536  # per SM; also the most one block may use
    register_unit: int = 256  # registers are given to a warp in multiples of this
    warp_granularity: int = 4  # warps per SM from the register file: a multiple of this
    max_registers_per_thread: int = 255
    shared_per_sm: int = 228 * 1024
    shared_per_block: int = 227 * 1024  # static + dynamic, opt-in maximum
    reserved_shared_per_block: int = 1024
    shared_unit: int = 128


SM_90 = Architecture("sm_90")  # H100, H200
SM_80 = Architecture("sm_80", shared_per_sm=164 * 1024, shared_per_block=163 * 1024)  # A100
ARCHITECTURES = {arch.name: arch for arch in (SM_80, SM_90)}


@dataclasses.dataclass(frozen=True)
class Occupancy:
    """Resident blocks and warps per SM; ``limits`` holds the blocks each resource alone
    would allow, ``limiters`` those equal to ``blocks`` (in the order warps, registers,
    shared, blocks)."""

    arch: str
    threads: int
    registers: int
    shared_bytes: int  # static + dynamic per block
    blocks: int
    warps_per_block: int
    limits: dict[str, int]
    limiters: tuple[str, ...]

    @property
    def warps(self) -> int:
        return self.blocks * self.warps_per_block

    @property
    def limiter(self) -> str:
        return self.limiters[0]

    @property
    def fraction(self) -> float:
        """Resident warps over the SM's maximum (the 'theoretical occupancy')."""
        return self.warps / ARCHITECTURES[self.arch].max_warps

    def __str__(self) -> str:
        return (f"{self.blocks} blocks x {self.warps_per_block} warps = {self.warps} warps "
                f"({100 * self.fraction:.1f} %) per SM on {self.arch}, limited by "
                f"{' and '.join(self.limiters)}")


def occupancy(registers: int, threads: int, shared_bytes: int = 0, dynamic_shared: int = 0,
              arch: Architecture | str = SM_90) -> Occupancy:
    """Occupancy of a kernel using ``registers`` per thread and ``shared_bytes`` of static
    shared memory, launched with ``threads`` per block and ``dynamic_shared`` bytes."""
    spec = ARCHITECTURES[arch] if isinstance(arch, str) else arch
    if not 1 <= threads <= spec.max_threads_per_block:
        raise ValueError(f"occupancy: {threads} threads per block; {spec.name} allows 1 to "
                         f"{spec.max_threads_per_block}")
    if not 0 <= registers <= spec.max_registers_per_thread:
        raise ValueError(f"occupancy: {registers} registers per thread; {spec.name} allows "
                         f"at most {spec.max_registers_per_thread}")
    if shared_bytes < 0 or dynamic_shared < 0:
        raise ValueError(f"occupancy: negative shared memory ({shared_bytes}, {dynamic_shared})")
    warps_per_block = math.ceil(threads / 32)
    limits = {"warps": spec.max_warps // warps_per_block}
    # Registers: whole units per warp; the file holds a multiple of warp_granularity warps.
    per_warp = math.ceil(registers * 32 / spec.register_unit) * spec.register_unit
    if per_warp == 0:
        limits["registers"] = spec.max_blocks
    elif per_warp * warps_per_block > spec.registers:
        limits["registers"] = 0  # the launch fails: too many resources requested
    else:
        warps = spec.registers // per_warp // spec.warp_granularity * spec.warp_granularity
        limits["registers"] = warps // warps_per_block
    shared = shared_bytes + dynamic_shared
    if shared > spec.shared_per_block:
        limits["shared"] = 0
    else:
        taken = math.ceil((shared + spec.reserved_shared_per_block) / spec.shared_unit) \
            * spec.shared_unit
        limits["shared"] = spec.shared_per_sm // taken
    limits["blocks"] = spec.max_blocks
    blocks = min(limits.values())
    limiters = tuple(name for name, value in limits.items() if value == blocks)
    return Occupancy(spec.name, threads, registers, shared, blocks, warps_per_block, limits,
                     limiters)


class Usage(Protocol):
    """What ptxas reports for a kernel (``tests/support/nvrtc.py``'s ``KernelUsage``)."""

    @property
    def registers(self) -> int: ...

    @property
    def shared_bytes(self) -> int: ...


def from_usage(usage: Usage, threads: int, dynamic_shared: int = 0,
               arch: Architecture | str = SM_90) -> Occupancy:
    """:func:`occupancy` from a ptxas report's registers and static shared memory."""
    return occupancy(usage.registers, threads, usage.shared_bytes, dynamic_shared, arch)
