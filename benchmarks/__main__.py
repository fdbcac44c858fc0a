"""``python -m benchmarks [--family NAME ...] [--quick]``: time every operator family.
``python -m benchmarks --profile [--family NAME ...]``: the emulator's memory profile instead
(benchmarks/emu_profile.py: ``benchmarks/results/emu-profile.json`` and ``.md``).

Discovers ``benchmarks/bench_<family>.py`` modules, runs their cases on the GPU when
CuPy and a device are usable (else on the CPU with NumPy), prints a table and writes
JSON + Markdown under ``benchmarks/results/``. See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

import numpy

import gpuops

from . import harness

HERE = Path(__file__).resolve().parent


def family_modules() -> dict[str, str]:
    """family name -> module name, for every ``bench_<family>.py`` here."""
    return {info.name[len("bench_"):]: f"{__package__}.{info.name}"
            for info in pkgutil.iter_modules([str(HERE)]) if info.name.startswith("bench_")}


def main(argv: list[str]) -> int:
    if "--profile" in argv:  # its own options (--family, --size, --out)
        from . import emu_profile
        return emu_profile.main([a for a in argv if a != "--profile"])
    available = family_modules()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--family", action="append", choices=sorted(available),
                        help="only this family (repeatable); default: all")
    parser.add_argument("--quick", action="store_true",
                        help="1/16 of the sizes and fewer repeats (a smoke run)")
    parser.add_argument("--cpu", action="store_true", help="use the CPU even if a GPU is usable")
    parser.add_argument("--out", type=Path, default=harness.RESULTS,
                        help=f"folder for the result files (default {harness.RESULTS})")
    parser.add_argument("--profile", action="store_true",
                        help="the counting emulator's memory profile of every case and "
                             "kernel instead (python -m benchmarks --profile --help)")
    args = parser.parse_args(argv)

    on_gpu = gpuops.gpu_available() and not args.cpu
    if on_gpu:
        import cupy
        xp = cupy
    else:
        xp = numpy
    size = (1 << 24) if on_gpu else (1 << 22)
    env = harness.Env(xp, on_gpu, args.quick, size // 16 if args.quick else size)
    families = args.family or sorted(available)
    info = harness.environment(on_gpu)
    copy_gbps = harness.copy_bandwidth(on_gpu, 5 if args.quick else 21)
    timing = ("GPU: CUDA events around each call, 3 warm-up calls, median of 21 "
              "(quick: 2, 5)" if on_gpu else
              "CPU: time.perf_counter (elapsed) and time.thread_time (CPU time) around each "
              "call, 3 warm-up calls, median of 21 (quick: 2, 5); gpuops and its baseline "
              "take turns in each repeat")
    print(f"# {harness.device_label(info)}: {env.size} elements per large operand; {timing}")
    if copy_gbps:
        print(f"# device-to-device copy {copy_gbps:.0f} GB/s")
    results = []
    for family in families:
        module = importlib.import_module(available[family])
        for case in module.cases(env):
            result = harness.measure(family, case, env, copy_gbps)
            results.append(result)
            ratios = "  ".join(f"x{k} {v:.2f}" for k, v in result.ratios.items())
            ratios += "".join(f"  x{k} {v:.2f} (CPU time)" for k, v in result.cpu_ratios.items())
            print(f"{family:<12} {case.name:<34} {result.seconds * 1e3:9.3f} ms "
                  f"{result.gbps:8.1f} GB/s  {ratios}", flush=True)
    warm = harness.warm_start(on_gpu)
    extra = {"size": env.size, "quick": args.quick, "families_selected": bool(args.family),
             "families": families, "copy_gbps": copy_gbps, "warm_start": warm,
             "timing": timing}
    if "cold_s" in warm:
        print(f"# warm start ({warm['op']}): cold {warm['cold_s']:.2f} s, "
              f"warm {warm['warm_s']:.2f} s")
    paths = harness.write(results, info, extra, families, args.out)
    print("# wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
