"""``python -m benchmarks.emu_profile [--family F ...]``: every benchmark case, at a small size,
on the emulator's counting mode (issue 13 C; ``gpuops.emu.profile``).

Writes ``benchmarks/results/emu-profile.json`` and ``.md``: one row per kernel launch with
the sectors per request of its global loads and stores, the bank-conflict ways of its
shared loads and stores, bytes moved (sectors x 32) and the distinct footprint, the
worst source line, ptxas' registers and static shared memory (NVRTC, sm_90, when
installed) with the occupancy they allow at the launch's block size and its limiter;
per case, the bytes moved over the case's minimum bytes and a roofline prediction for an
H200: the minimum traffic, and the modelled traffic, at the measured 4.3 TB/s
device-to-device copy rate.
"""
from __future__ import annotations

import argparse
import importlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy

from gpuops import emu, kernels
from gpuops.emu import counters, occupancy

from . import harness
from .__main__ import family_modules

HERE = Path(__file__).resolve().parent
H200_COPY_BYTES_PER_S = 4.3e12  # measured device-to-device copy (bytes read + written)
SIZE = 1 << 17  # elements of a "large" operand: NCHW cases need 128 x 1024
# Below this fraction of the minimum bytes, a case reaches memory the counters do not see:
# arrays addressed through a pointer table (the fused optimizer steps), not passed as
# arguments, are not attributed to global memory.
INCOMPLETE = 0.9
NOT_PROFILED = ("overhead",)  # Python time per call of tiny operators, 1000s of launches


def _ptxas_usage() -> Any:
    """tests/support/nvrtc.py, when it and NVRTC are there (else None)."""
    sys.path.insert(0, str(HERE.parent / "tests" / "support"))
    try:
        import nvrtc  # type: ignore[import-not-found]
        nvrtc.library()
    except Exception:  # noqa: BLE001 - any reason: occupancy is left out
        return None
    return nvrtc


_usage_cache: dict[str, dict[str, Any]] = {}


def usage(nvrtc: Any, family: str) -> dict[str, Any]:
    """ptxas' per-kernel usage of ``cuda/<family>.cu`` on sm_90."""
    if nvrtc is None:
        return {}
    if family not in _usage_cache:
        result = nvrtc.compile_cubin(kernels.source(family),
                                     [*kernels.NVRTC_OPTIONS, "--gpu-architecture=sm_90",
                                      nvrtc.VERBOSE], f"{family}.cu")
        _usage_cache[family] = nvrtc.parse_ptxas(result.log) if result.ok else {}
    return _usage_cache[family]


def row(family: str, case: str, launches: list[emu.LaunchReport], nvrtc: Any) -> dict[str, Any]:
    """The launches of one kernel (same block and shared memory) in a case, summed."""
    report = counters.merge(launches)
    out = {"family": family, "case": case, "launches": len(launches), **report.as_dict()}
    kernel_usage = usage(nvrtc, report.label).get(report.kernel)
    if kernel_usage is not None:
        threads = report.block[0] * report.block[1] * report.block[2]
        occ = occupancy.from_usage(kernel_usage, threads, report.shared_mem)
        out.update(registers=kernel_usage.registers, static_shared=kernel_usage.shared_bytes,
                   occupancy_blocks=occ.blocks, occupancy_warps=occ.warps,
                   occupancy=occ.fraction, occupancy_limiter="+".join(occ.limiters))
    return out


def profile_case(family: str, case: harness.Case, nvrtc: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        with emu.profile() as reports:
            case.run(*case.inputs)
    except (emu.CounterOverflow, emu.EmuBuildError, emu.EmuKernelError) as error:
        reason = str(error).splitlines()[0]
        return {"family": family, "case": case.name, "skipped": reason}
    moved = sum(r.bytes_moved() for r in reports)
    ratio = moved / case.bytes if case.bytes else None
    return {"family": family, "case": case.name, "min_bytes": case.bytes, "bytes_moved": moved,
            "moved_over_min": ratio, "incomplete": ratio is not None and ratio < INCOMPLETE,
            "h200_min_us": 1e6 * case.bytes / H200_COPY_BYTES_PER_S,
            "h200_modelled_us": 1e6 * moved / H200_COPY_BYTES_PER_S,
            "emulator_s": time.perf_counter() - started,
            "kernels": [row(family, case.name, group, nvrtc) for group in _by_kernel(reports)]}


def _by_kernel(reports: list[emu.LaunchReport]) -> list[list[emu.LaunchReport]]:
    groups: dict[tuple, list[emu.LaunchReport]] = {}
    for report in reports:
        groups.setdefault((report.label, report.kernel, report.block, report.shared_mem),
                          []).append(report)
    return list(groups.values())


def _git(args: list[str]) -> str:
    done = subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def markdown(cases: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = ["# Emulator memory profile (counting mode)", "",
             f"{meta['date']}; {meta['size']} elements per large operand (quick shapes); "
             f"H200 roofline at {H200_COPY_BYTES_PER_S / 1e12:.1f} TB/s; occupancy "
             f"{'from NVRTC sm_90' if meta['nvrtc'] else 'not computed (no NVRTC)'}; "
             f"git {meta['git']}{' with uncommitted changes' if meta['uncommitted_changes'] else ''}.",
             "",
             "sec/req: global sectors per request (ideal: 4 for 4-byte, 8 for 8-byte, 16 for "
             "16-byte lanes, coalesced); ways: shared wavefronts per phase (1 = no conflict, "
             "'-' = no shared access). moved / min: global sectors x 32 over the case's "
             "minimum bytes; sectors are requests to L1, re-reads included, which a cache may "
             "serve, so this bounds the DRAM traffic from above (the JSON also has each "
             "kernel's distinct footprint).", "",
             "| family | case | kernel | block | sec/req ld | sec/req st | ways ld | ways st | "
             "moved / min | occupancy | H200 min / modelled us | worst line |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for case in cases:
        if "skipped" in case:
            lines.append(f"| {case['family']} | {case['case']} | skipped: {case['skipped']} "
                         f"|||||||||")
            continue
        ratio = f"{case['moved_over_min']:.2f}" if case["moved_over_min"] else "-"
        if case["incomplete"]:
            ratio += " (incomplete: pointer-table arrays not counted)"
        roof = f"{case['h200_min_us']:.2f} / {case['h200_modelled_us']:.2f}"
        for i, launch in enumerate(case["kernels"]):
            def ways(op: str) -> str:
                value = launch[f"bank_conflict_ways_{op}"]
                return f"{value:.2f}" if value else "-"
            occ = (f"{launch['occupancy']:.0%} ({launch['occupancy_limiter']})"
                   if "occupancy" in launch else "-")
            worst = (launch["worst"] or "").split(" ", 1)[0]
            block = "x".join(str(d) for d in launch["block"] if d > 1) or "1"
            lines.append(
                f"| {case['family']} | {case['case'] if i == 0 else ''} | {launch['kernel']}"
                f"{' x' + str(launch['launches']) if launch['launches'] > 1 else ''} | "
                f"{block} | {launch['sectors_per_request_ld']:.2f} | "
                f"{launch['sectors_per_request_st']:.2f} | {ways('ld')} | {ways('st')} | "
                f"{ratio if i == 0 else ''} | {occ} | {roof if i == 0 else ''} | {worst} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    available = family_modules()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.emu_profile", description=__doc__)
    parser.add_argument("--family", action="append", choices=sorted(available),
                        help="only this family (repeatable); default: all but "
                             f"{', '.join(NOT_PROFILED)}")
    parser.add_argument("--size", type=int, default=SIZE,
                        help=f"elements per large operand (default {SIZE})")
    parser.add_argument("--out", type=Path, default=harness.RESULTS)
    args = parser.parse_args(argv)
    env = harness.Env(numpy, False, True, args.size)
    nvrtc = _ptxas_usage()
    cases = []
    families = args.family or sorted(set(available) - set(NOT_PROFILED))
    for family in families:
        module = importlib.import_module(available[family])
        if not hasattr(module, "cases"):
            continue
        for case in module.cases(env):
            result = profile_case(family, case, nvrtc)
            cases.append(result)
            if "skipped" in result:
                print(f"{family:<12} {case.name:<40} skipped: {result['skipped']}", flush=True)
                continue
            launches = sum(k["launches"] for k in result["kernels"])
            print(f"{family:<12} {case.name:<40} {launches} launches, moved/min "
                  f"{result['moved_over_min'] or 0:.2f}, {result['emulator_s']:.1f} s", flush=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "size": args.size, "nvrtc": nvrtc is not None,
            "git": _git(["rev-parse", "--short", "HEAD"]),
            "uncommitted_changes": bool(_git(["status", "--porcelain", "--", "cuda", "gpuops"])),
            "python": platform.python_version(), "numpy": numpy.__version__,
            "families": families}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "emu-profile.json").write_text(json.dumps({"meta": meta, "cases": cases},
                                                          indent=1) + "\n")
    (args.out / "emu-profile.md").write_text(markdown(cases, meta))
    print(f"# wrote {args.out / 'emu-profile.json'}, {args.out / 'emu-profile.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
