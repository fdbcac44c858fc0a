"""Memory counters of the emulator: what a GPU's memory system would see of a launch.

The counting build mode (``build.COUNT``; ``emu.load(..., counters=True)``,
``EmuLauncher(counters=True)``, :func:`gpuops.emu.profile`) compiles a kernel library
with g++'s ThreadSanitizer instrumentation, which turns every load, store and atomic
into a call, and ``counters.h`` implementing those calls (the sanitizer's runtime is
never loaded): each records address, size, the calling instruction (return address)
and the emulated block and thread.
Accesses inside the launch's array arguments (and the arrays registered as reached
through a pointer table: ``indirect``) are *global*, inside the block's shared memory
(static ``__shared__`` and the dynamic buffer) *shared*; everything else (a thread's
locals, which a GPU keeps in registers) is not recorded.

:func:`analyse` groups the accesses of a warp into requests as the hardware does:
the accesses of one instruction (same return address) at the same dynamic occurrence
(the k-th time each lane executes it) form one request. Per request:

* global: the 32-byte sectors it touches. Each array is placed at its own 256-byte
  aligned base (as ``cudaMalloc`` would), so sectors do not depend on where NumPy put
  it; a view is placed inside its base array.
* shared: 32 banks of 4 bytes; the wavefronts are the most distinct 4-byte words that
  fall on one bank (a broadcast of one word costs nothing), counted per phase: the
  whole warp for accesses of up to 4 bytes, half-warps for 8 bytes, quarter-warps for
  16 bytes (each phase moves at most 128 bytes). Bank conflicts = wavefronts - phases.

The figures are reported under Nsight Compute's metric names (see :data:`METRICS`).
Atomics are counted apart (``atomics``, thread-level operations), as ncu does
(``_op_atom``/``_op_red``), and the emulator's own bookkeeping (the mma.sync register
exchange) not at all.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any, Sequence

import numpy

RECORD = numpy.dtype([("addr", "<u8"), ("pc", "<u8"), ("block", "<u4"), ("thread", "<u4"),
                      ("size", "<u4"), ("flags", "<u4")])  # gpuops_emu_count_record
STORE, SHARED, ATOMIC = 1, 2, 4
SECTOR = 32
BANKS, BANK_BYTES = 32, 4
# Virtual distance between two arrays' bases (a multiple of cudaMalloc's 256-byte alignment).
_RANGE_STRIDE = 1 << 40

METRICS = (
    "l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum",
    "l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum",
    "l1tex__t_requests_pipe_lsu_mem_global_op_st.sum",
    "l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum",
    "smsp__sass_inst_executed_op_shared_ld.sum",
    "smsp__sass_inst_executed_op_shared_st.sum",
    "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum",
    "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_st.sum",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum",
    "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum",
)


class CounterOverflow(RuntimeError):
    """A launch made more accesses than the counting mode keeps (``max_records``)."""


def global_ranges(args: Sequence[Any], indirect: Sequence[Any] = ()) -> list[tuple[int, int]]:
    """The address ranges [begin, end) of the allocations behind the array arguments
    (a view's base array) and the arrays of ``indirect`` (those a kernel reaches through
    pointers that an argument holds: cuda/optim.cu's pointer table), overlapping ones
    merged, in address order."""
    from numpy.lib import array_utils  # numpy >= 2

    spans = []
    for arg in [*args, *indirect]:
        if not isinstance(arg, numpy.ndarray) or arg.size == 0:
            continue
        root = arg
        while isinstance(root.base, numpy.ndarray):
            root = root.base
        spans.append(array_utils.byte_bounds(root))
        spans.append(array_utils.byte_bounds(arg))  # in case the base is not an ndarray
    merged: list[tuple[int, int]] = []
    for begin, end in sorted(spans):
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((begin, end))
    return merged


@dataclasses.dataclass(frozen=True)
class Site:
    """Where an instruction comes from: the innermost frame in the kernel's source
    (``file``, ``line``, ``text``) and the inlined call chain (innermost first)."""

    file: str
    line: int
    text: str
    functions: tuple[str, ...]
    origin: str = ""  # "gpuops.cuh:62": the same line in cuda/ (a family's listing inlines them)

    @property
    def where(self) -> str:
        return self.origin or f"{Path(self.file).name}:{self.line}"


@functools.lru_cache(maxsize=1)
def _cuda_lines() -> dict[str, str]:
    """Stripped line -> its first "file:line" in cuda/ (the family sources first)."""
    from .. import kernels

    found: dict[str, str] = {}
    folder = kernels.cuda_dir()
    for path in sorted(folder.glob("*.cu")) + sorted(folder.glob("*.cuh")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            found.setdefault(line.strip(), f"{path.name}:{number}")
    return found


def _origin(listing: str, text: str) -> str:
    """Where a family listing's line comes from in cuda/ (a test's own source: itself)."""
    name = Path(listing).name
    if "-count-" not in name or not text:
        return ""
    label = name.split("-count-")[0]
    from .. import kernels

    if not (kernels.cuda_dir() / f"{label}.cu").is_file():
        return ""
    return _cuda_lines().get(text, "")


_EMULATOR_FILES = ("cuda_emu.h", "counters.h")
# cuda/mma.cuh's wrappers whose emulation records accesses (ldmatrix's rows, cp.async's
# copy): a site is the kernel's line that calls them, not the wrapper's body.
_WRAPPERS = frozenset({"ldmatrix_x4", "ldmatrix_x4_trans", "ldmatrix_x2", "ldmatrix_x2_trans",
                       "cp_async_16"})


@functools.lru_cache(maxsize=64)
def _lines(path: str) -> tuple[str, ...]:
    try:
        return tuple(Path(path).read_text().splitlines())
    except OSError:
        return ()


def symbolize(library: str | Path, pcs: Sequence[int]) -> dict[int, Site]:
    """Source sites of return addresses ``pcs`` (offsets into ``library``, a ``-g`` build),
    by ``addr2line`` on the call instruction (pc - 1)."""
    unknown = Site("?", 0, "", ())
    tool = shutil.which("addr2line")
    if tool is None or not pcs:
        return {pc: unknown for pc in pcs}
    done = subprocess.run([tool, "-e", str(library), "-a", "-f", "-i", "-C",
                           *[hex(pc - 1) for pc in pcs]], capture_output=True, text=True)
    frames: dict[int, list[tuple[str, str, int]]] = {}
    current: list[tuple[str, str, int]] = []
    lines = done.stdout.splitlines()
    order = iter(pcs)
    i = 0
    while i < len(lines):
        if lines[i].startswith("0x"):
            current = frames.setdefault(next(order), [])
            i += 1
            continue
        function = lines[i]
        location = lines[i + 1] if i + 1 < len(lines) else "??:0"
        file, _, line = location.rpartition(":")
        number = line.split()[0] if line.split() else "0"
        current.append((function, file, int(number) if number.isdigit() else 0))
        i += 2
    sites = {}
    for pc in pcs:
        chain = frames.get(pc, [])
        source = next(((f, n) for fn, f, n in chain
                       if Path(f).name not in _EMULATOR_FILES and not f.startswith("/usr/")
                       and f not in ("", "??") and fn.split("(")[0] not in _WRAPPERS), None)
        if source is None:
            sites[pc] = Site("?", 0, "", tuple(fn for fn, _, _ in chain))
            continue
        path, row = source
        text = _lines(path)
        line = text[row - 1].strip() if 0 < row <= len(text) else ""
        sites[pc] = Site(path, row, line, tuple(fn for fn, _, _ in chain), _origin(path, line))
    return sites


def _emulator_internal(site: Site) -> bool:
    """The mma.sync emulation's register exchange through a shared table (registers on
    a GPU)."""
    return any(f.startswith("gpuops_emu_mma") for f in site.functions)


@dataclasses.dataclass
class Instruction:
    """The requests of one source line, one memory space and direction."""

    site: Site
    space: str  # 'global' or 'shared'
    op: str  # 'ld' or 'st'
    requests: int = 0
    sectors: int = 0  # global
    ideal_sectors: int = 0  # global: ceil(distinct bytes / 32) per request
    wavefronts: int = 0  # shared
    ideal_wavefronts: int = 0  # shared: phases
    bytes: int = 0  # distinct bytes the lanes asked for, per request, summed

    @property
    def excess(self) -> int:
        """Sectors (global) or wavefronts (shared) beyond the ideal."""
        return self.sectors - self.ideal_sectors + self.wavefronts - self.ideal_wavefronts

    @property
    def per_request(self) -> float:
        """Sectors per request (global) or ways (wavefronts per phase; shared)."""
        if self.space == "global":
            return self.sectors / self.requests if self.requests else 0.0
        return self.wavefronts / self.ideal_wavefronts if self.ideal_wavefronts else 0.0

    def __str__(self) -> str:
        unit = "sectors/request" if self.space == "global" else "ways"
        return (f"{self.site.where} {self.space} {self.op}: {self.requests} requests, "
                f"{self.per_request:.2f} {unit}, excess {self.excess}  `{self.site.text}`")


@dataclasses.dataclass
class LaunchReport:
    """One launch's counters. ``metrics`` holds :data:`METRICS` by Nsight Compute name;
    the rest is derived from them or from the accesses."""

    label: str
    kernel: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int
    metrics: dict[str, int]
    instructions: list[Instruction]  # worst first (excess, then sectors)
    footprint_sectors: int  # distinct global sectors touched by the launch
    requested_bytes: dict[str, int]  # 'ld'/'st': distinct bytes asked for, per request, summed
    atomics: int  # atomic accesses (thread level), not in the ld/st figures
    accesses: int  # recorded thread-level loads and stores (atomics excluded)

    def sectors_per_request(self, op: str = "ld") -> float:
        requests = self.metrics[f"l1tex__t_requests_pipe_lsu_mem_global_op_{op}.sum"]
        sectors = self.metrics[f"l1tex__t_sectors_pipe_lsu_mem_global_op_{op}.sum"]
        return sectors / requests if requests else 0.0

    def sectors_over_ideal(self, op: str = "ld") -> float:
        """Global sectors over the ideal ones (per request, ceil(distinct bytes the lanes
        asked for / 32)), for 'ld' or 'st': 1.0 = every request coalesced, whatever its
        width; 0.0 = no global request."""
        sectors = ideal = 0
        for inst in self.instructions:
            if inst.space == "global" and inst.op == op:
                sectors += inst.sectors
                ideal += inst.ideal_sectors
        return sectors / ideal if ideal else 0.0

    def bank_conflict_ways(self, op: str = "ld") -> float:
        """Average wavefronts per ideal wavefront of shared requests (1.0: no conflict)."""
        wavefronts = self.metrics[f"l1tex__data_pipe_lsu_wavefronts_mem_shared_op_{op}.sum"]
        conflicts = self.metrics[f"l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_{op}.sum"]
        ideal = wavefronts - conflicts
        return wavefronts / ideal if ideal else 0.0

    def bytes_moved(self, op: str | None = None) -> int:
        """Global bytes moved (sectors x 32) for 'ld', 'st' or both (None)."""
        ops = ("ld", "st") if op is None else (op,)
        return SECTOR * sum(self.metrics[f"l1tex__t_sectors_pipe_lsu_mem_global_op_{o}.sum"]
                            for o in ops)

    @property
    def footprint_bytes(self) -> int:
        return SECTOR * self.footprint_sectors

    @property
    def worst(self) -> Instruction | None:
        return self.instructions[0] if self.instructions else None

    def as_dict(self) -> dict[str, Any]:
        worst = self.worst
        return {"label": self.label, "kernel": self.kernel, "grid": list(self.grid),
                "block": list(self.block), "shared_mem": self.shared_mem, **self.metrics,
                "sectors_per_request_ld": self.sectors_per_request("ld"),
                "sectors_per_request_st": self.sectors_per_request("st"),
                "sectors_over_ideal_ld": self.sectors_over_ideal("ld"),
                "sectors_over_ideal_st": self.sectors_over_ideal("st"),
                "bank_conflict_ways_ld": self.bank_conflict_ways("ld"),
                "bank_conflict_ways_st": self.bank_conflict_ways("st"),
                "bytes_moved_ld": self.bytes_moved("ld"), "bytes_moved_st": self.bytes_moved("st"),
                "footprint_bytes": self.footprint_bytes, "atomics": self.atomics,
                "worst": None if worst is None else str(worst)}

    def __str__(self) -> str:
        lines = [f"{self.label}.{self.kernel} grid {self.grid} block {self.block}"]
        lines += [f"  {name:<58} {value}" for name, value in self.metrics.items()]
        lines.append(f"  sectors/request ld {self.sectors_per_request('ld'):.2f} "
                     f"st {self.sectors_per_request('st'):.2f}; bank-conflict ways "
                     f"ld {self.bank_conflict_ways('ld'):.2f} st {self.bank_conflict_ways('st'):.2f}")
        lines.append(f"  bytes moved {self.bytes_moved()} (footprint {self.footprint_bytes})")
        if self.worst is not None:
            lines.append(f"  worst: {self.worst}")
        return "\n".join(lines)


def _distinct_per_group(group: numpy.ndarray, value: numpy.ndarray, ngroups: int) -> numpy.ndarray:
    """Per group id in [0, ngroups): how many distinct values."""
    if group.size == 0:
        return numpy.zeros(ngroups, numpy.int64)
    order = numpy.lexsort((value, group))
    g, v = group[order], value[order]
    new = numpy.ones(g.size, bool)
    new[1:] = (g[1:] != g[:-1]) | (v[1:] != v[:-1])
    return numpy.bincount(g[new], minlength=ngroups)


def _group(columns: list[numpy.ndarray]) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Group rows by equal values in every column: (group id of each row, the first row of
    each group). One int64 key when the columns' ranges fit in it, else a lexsort."""
    n = columns[0].size
    if n == 0:
        return numpy.zeros(0, numpy.int64), numpy.zeros(0, numpy.int64)
    spans = [int(c.max()) + 1 for c in columns]
    if all(c.min() >= 0 for c in columns) and math.prod(spans) < 2**62:
        key = numpy.zeros(n, numpy.int64)
        for column, span in zip(columns, spans):
            key = key * span + column
        _, first_of, group = numpy.unique(key, return_index=True, return_inverse=True)
        return group.reshape(-1), first_of
    _, first_of, group = numpy.unique(numpy.stack(columns, 1), axis=0, return_index=True,
                                      return_inverse=True)
    return group.reshape(-1), first_of


def _expand(start: numpy.ndarray, count: numpy.ndarray) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(index of the record, start + k) for k in range(count) of every record."""
    owner = numpy.repeat(numpy.arange(start.size), count)
    first = numpy.cumsum(count) - count
    return owner, start[owner] + (numpy.arange(owner.size) - first[owner])


def analyse(records: numpy.ndarray, sites: dict[int, Site], *, label: str, kernel: str,
            grid: tuple[int, int, int], block: tuple[int, int, int],
            shared_mem: int) -> LaunchReport:
    """Group ``records`` (:data:`RECORD`, each emulated thread's in program order) into
    warp requests and count them."""
    all_pcs, all_index = numpy.unique(records["pc"], return_inverse=True)
    internal = numpy.array([_emulator_internal(sites[int(pc)]) for pc in all_pcs], bool)
    records = records[~internal[all_index.reshape(-1)]]
    atomic = (records["flags"] & ATOMIC) != 0
    atomics = int(atomic.sum())
    records = records[~atomic]
    n = records.size
    flags = records["flags"].astype(numpy.int64)
    store, shared = (flags & STORE) != 0, (flags & SHARED) != 0
    size = records["size"].astype(numpy.int64)
    # Global addresses: the offset into the range, from a 256-aligned virtual base.
    addr = records["addr"].astype(numpy.int64)
    addr = numpy.where(shared, addr, ((flags >> 8) + 1) * _RANGE_STRIDE + addr)
    thread = records["thread"].astype(numpy.int64)
    blk = records["block"].astype(numpy.int64)
    pcs, pc_index = numpy.unique(records["pc"], return_inverse=True)
    pc_index = pc_index.reshape(-1).astype(numpy.int64)
    # Occurrence: the k-th execution of this instruction by this thread.
    position = numpy.arange(n)
    order = numpy.lexsort((position, pc_index, thread, blk))
    starts = numpy.ones(n, bool)
    if n:
        s_blk, s_thr, s_pc = blk[order], thread[order], pc_index[order]
        starts[1:] = (s_blk[1:] != s_blk[:-1]) | (s_thr[1:] != s_thr[:-1]) | (s_pc[1:] != s_pc[:-1])
    group_start = numpy.maximum.accumulate(numpy.where(starts, numpy.arange(n), 0)) if n \
        else numpy.zeros(0, numpy.int64)
    occurrence = numpy.empty(n, numpy.int64)
    occurrence[order] = numpy.arange(n) - group_start
    # A request: (block, warp, instruction, occurrence, space), one direction per instruction.
    columns = [blk, thread // 32, pc_index, occurrence, shared.astype(numpy.int64)]
    request, first_of = _group(columns)
    nreq = first_of.size
    req_pc = pc_index[first_of]
    req_shared = shared[first_of]
    req_store = numpy.zeros(nreq, bool)
    req_store[request] = store
    req_size = numpy.zeros(nreq, numpy.int64)
    numpy.maximum.at(req_size, request, size)
    # Distinct bytes asked for per request (lanes reading one address count it once).
    bytes_asked = numpy.zeros(nreq, numpy.int64)
    if n:
        pair = numpy.lexsort((size, addr, request))
        r, a = request[pair], addr[pair]
        new = numpy.ones(n, bool)
        new[1:] = (r[1:] != r[:-1]) | (a[1:] != a[:-1])
        numpy.add.at(bytes_asked, r[new], size[pair][new])
    # Global: sectors per request; the launch's distinct sectors.
    glob = ~shared
    first = addr[glob] // SECTOR
    count = (addr[glob] + size[glob] - 1) // SECTOR - first + 1
    owner, sector = _expand(first, count)
    sectors = _distinct_per_group(request[glob][owner], sector, nreq)
    footprint = int(numpy.unique(sector).size)
    ideal_sectors = numpy.where(req_shared, 0, -(-bytes_asked // SECTOR))
    # Shared: wavefronts per request = per phase, the most distinct words on one bank.
    lanes = 32 // numpy.clip(size[shared] // BANK_BYTES, 1, 4)
    phase = request[shared] * 4 + (thread[shared] % 32) // lanes
    first_word = addr[shared] // BANK_BYTES
    words = (addr[shared] + size[shared] - 1) // BANK_BYTES - first_word + 1
    owner, word = _expand(first_word, words)
    phases, phase_id = numpy.unique(phase[owner], return_inverse=True)
    phase_id = phase_id.reshape(-1)
    bank_key = phase_id * BANKS + word % BANKS
    ways = _distinct_per_group(bank_key, word, phases.size * BANKS).reshape(-1, BANKS).max(1) \
        if phases.size else numpy.zeros(0, numpy.int64)
    wavefronts = numpy.bincount(phases // 4, weights=ways, minlength=nreq).astype(numpy.int64)
    ideal_wavefronts = numpy.bincount(phases // 4, minlength=nreq)

    metrics: dict[str, int] = {}
    for op, is_store in (("ld", False), ("st", True)):
        g = ~req_shared & (req_store == is_store)
        s = req_shared & (req_store == is_store)
        metrics[f"l1tex__t_requests_pipe_lsu_mem_global_op_{op}.sum"] = int(g.sum())
        metrics[f"l1tex__t_sectors_pipe_lsu_mem_global_op_{op}.sum"] = int(sectors[g].sum())
        metrics[f"smsp__sass_inst_executed_op_shared_{op}.sum"] = int(s.sum())
        metrics[f"l1tex__data_pipe_lsu_wavefronts_mem_shared_op_{op}.sum"] = int(wavefronts[s].sum())
        metrics[f"l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_{op}.sum"] = int(
            (wavefronts[s] - ideal_wavefronts[s]).sum())
    metrics = {name: metrics[name] for name in METRICS}

    # Per instruction (pc, space, direction), then merged per source line.
    code = (req_pc * 2 + req_shared) * 2 + req_store
    codes, which = numpy.unique(code, return_inverse=True)
    which = which.reshape(-1)
    totals = {name: numpy.bincount(which, weights=values, minlength=codes.size).astype(numpy.int64)
              for name, values in (("requests", numpy.ones(nreq)), ("sectors", sectors),
                                   ("ideal_sectors", ideal_sectors), ("wavefronts", wavefronts),
                                   ("ideal_wavefronts", ideal_wavefronts), ("bytes", bytes_asked))}
    by_line: dict[tuple[str, int, str, str], Instruction] = {}
    for j, c in enumerate(codes):
        site = sites[int(pcs[c // 4])]
        space, op = ("shared" if c & 2 else "global"), ("st" if c & 1 else "ld")
        entry = by_line.setdefault((site.file, site.line, space, op), Instruction(site, space, op))
        entry.requests += int(totals["requests"][j])
        entry.sectors += int(totals["sectors"][j])
        entry.ideal_sectors += int(totals["ideal_sectors"][j])
        entry.wavefronts += int(totals["wavefronts"][j])
        entry.ideal_wavefronts += int(totals["ideal_wavefronts"][j])
        entry.bytes += int(totals["bytes"][j])
    instructions = sorted(by_line.values(), key=lambda e: (-e.excess, -e.sectors - e.wavefronts))
    requested = {op: int(bytes_asked[~req_shared & (req_store == (op == "st"))].sum())
                 for op in ("ld", "st")}
    return LaunchReport(label, kernel, grid, block, int(shared_mem), metrics, instructions,
                        footprint, requested, atomics, n)



def merge(reports: Sequence[LaunchReport]) -> LaunchReport:
    """One report for several launches of one kernel (the first's label, kernel, grid,
    block and shared memory): counters, instructions and footprints summed (the footprint
    then counts a sector once per launch that touches it)."""
    first = reports[0]
    lines: dict[tuple[str, int, str, str], Instruction] = {}
    for report in reports:
        for inst in report.instructions:
            key = (inst.site.file, inst.site.line, inst.space, inst.op)
            entry = lines.setdefault(key, Instruction(inst.site, inst.space, inst.op))
            entry.requests += inst.requests
            entry.sectors += inst.sectors
            entry.ideal_sectors += inst.ideal_sectors
            entry.wavefronts += inst.wavefronts
            entry.ideal_wavefronts += inst.ideal_wavefronts
            entry.bytes += inst.bytes
    return dataclasses.replace(
        first, metrics={name: sum(r.metrics[name] for r in reports) for name in METRICS},
        instructions=sorted(lines.values(), key=lambda e: (-e.excess, -e.sectors - e.wavefronts)),
        footprint_sectors=sum(r.footprint_sectors for r in reports),
        requested_bytes={op: sum(r.requested_bytes[op] for r in reports) for op in ("ld", "st")},
        atomics=sum(r.atomics for r in reports), accesses=sum(r.accesses for r in reports))
