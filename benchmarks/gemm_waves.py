"""``python -m benchmarks.gemm_waves [--out FILE]``: how well each GEMM of a training step
fills an H200 (132 SMs), before and after the GEMM was sized to the GPU.

One training step each of the MLP (784-256-256-10) and the CNN of ``python -m gpuops train``
(``gpuops.train.build_model``, batch 512 of 1x28x28, via
:func:`benchmarks.step_launches.make_step`) and of the GPT (``gpuops.gpt.GPT`` at the
``train --model gpt`` defaults: batch 16, block 64, 2 layers, 4 heads, 64 wide, 256 bytes,
AdamW) runs on NumPy arrays through the kernel path with a
:class:`~benchmarks.launch_fakes.RecordingLauncher` (an H200's 132 SMs; nothing runs).
Every call of the GEMM launcher (:func:`gpuops.ops.matmul.gemm`) is noted with its shape
(M, N, K, output batches nz, reduction batch nr), the operator function that called it,
and the :func:`gpuops.ops.matmul.plan` it got ("after"); "before" is the launch the
launcher made before plans existed: the dtype's one tile configuration (float32
128x128), no split.

Per GEMM: blocks, waves = ceil(blocks / slots) and wave efficiency = blocks / (waves *
slots), the share of the GPU's block slots the launch occupies, slots = 132 x the tiles'
resident blocks per SM (``Tiles.per_sm``): 1 for the SIMT kernels (the float32 128x128
kernel's register use allows one; the 64x64 tiles would allow more, so their figure is a
lower bound of the GPU's occupancy but the right measure of how many SMs get work), 2 for
the tensor-core kernel (128 threads, 255 registers); the tensor-core launch *before* plans
counts 1 (its 256-thread, 248-register kernel held one block per SM). Per step: the FLOP-weighted efficiency
sum(F) / sum(F / efficiency), the SM share a step's GEMM time would get if each GEMM's
time were its FLOPs over its efficiency (a model, not a measurement).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy

from gpuops import backend, nn, optim
from gpuops.gpt import GPT
from gpuops.ops import matmul as matmul_module

from .launch_fakes import SM_COUNT, RecordingLauncher
from .step_launches import make_step

GPT_SHAPE = dict(vocab_size=256, block_size=64, n_layer=2, n_head=4, n_embd=64)
GPT_BATCH = 16


@dataclass
class Gemm:
    caller: str
    dtype: str
    m: int
    n: int
    k: int
    nz: int
    nr: int
    before: matmul_module.Plan
    after: matmul_module.Plan

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k * self.nz * self.nr


def before_plan(launcher: Any, dtype: Any, m: int, n: int, k: int, nz: int) -> matmul_module.Plan:
    """The launch before plans: the dtype's first (largest) tiles, one split."""
    dtype = numpy.dtype(dtype)
    tiles = (matmul_module._TENSOR_CORE if dtype in backend.SIXTEEN_BIT_DTYPES
             and launcher.tensor_cores else matmul_module._SIMT[dtype])[0]
    grid = (math.ceil(n / tiles.bn), min(math.ceil(m / tiles.bm), 65535), min(nz, 65535))
    return matmul_module.Plan(dataclasses.replace(tiles, per_sm=1), 1, grid)


def _caller() -> str:
    """The first function up the stack outside the GEMM launcher (the operator's)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_name in ("gemm", "plan", "noting",
                                                          "_geometry"):
        frame = frame.f_back
    return frame.f_code.co_name.strip("_") if frame is not None else "?"


def record(step: Callable[[], Any], steps: int = 2) -> list[Gemm]:
    """The GEMMs of the last of ``steps`` calls of ``step`` on the recording launcher."""
    launcher = RecordingLauncher()
    noted: list[Gemm] = []
    original = matmul_module.plan

    def noting(launcher_: Any, dtype: Any, m: int, n: int, k: int, nz: int = 1,
               nr: int = 1, tf32: bool = False) -> matmul_module.Plan:
        after = original(launcher_, dtype, m, n, k, nz, nr, tf32)
        noted.append(Gemm(_caller(), numpy.dtype(dtype).name, m, n, k, nz, nr,
                          before_plan(launcher_, dtype, m, n, k, nz), after))
        return after

    cache = matmul_module._geometries
    matmul_module.plan = noting  # type: ignore[assignment]
    # gemm keeps each layout's plan: a cache that keeps nothing, so that every GEMM of the
    # step plans (is noted), the second of two layers of the same shape too
    matmul_module._geometries = _KeepsNothing()
    try:
        with backend.use_cpu_launcher(launcher):
            for _ in range(steps):
                noted.clear()
                step()
    finally:
        matmul_module.plan = original  # type: ignore[assignment]
        matmul_module._geometries = cache
    return list(noted)


class _KeepsNothing(dict):
    def __setitem__(self, key: Any, value: Any) -> None:
        pass


def gpt_step(seed: int = 0) -> Callable[[], Any]:
    """One GPT training step (forward, loss, backward, AdamW) on fixed random bytes."""
    nn.manual_seed(seed)
    model = GPT(**GPT_SHAPE)
    optimizer = optim.AdamW(model.parameters(), lr=3e-3)
    rng = numpy.random.default_rng(seed)
    ids = rng.integers(0, GPT_SHAPE["vocab_size"], (GPT_BATCH, GPT_SHAPE["block_size"] + 1))

    def step() -> Any:
        loss = model.loss(ids[:, :-1], ids[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    return step


def waves(plan: matmul_module.Plan) -> tuple[int, float]:
    """The plan's waves over the GPU's block slots and its wave efficiency."""
    slots = SM_COUNT * plan.tiles.per_sm
    w = max(1, math.ceil(plan.blocks / slots))
    return w, plan.blocks / (w * slots)


def _tiles(plan: matmul_module.Plan) -> str:
    return f"{plan.tiles.kernel} {plan.tiles.bm}x{plan.tiles.bn}"


def _weighted(gemms: list[Gemm], which: str) -> float:
    total = sum(g.flops for g in gemms)
    cost = sum(g.flops / waves(getattr(g, which))[1] for g in gemms)
    return total / cost if cost else 0.0


def table(title: str, gemms: list[Gemm]) -> str:
    lines = [f"## {title}", "",
             f"{len(gemms)} GEMM launches; FLOP-weighted wave efficiency "
             f"{_weighted(gemms, 'before'):.0%} before, {_weighted(gemms, 'after'):.0%} after; "
             f"{sum(g.after.splits > 1 for g in gemms)} split (in the same launch).",
             "",
             "| # | caller | dtype | M x N x K | nz | nr | before: tiles | blocks | waves | eff "
             "| after: tiles | splits | blocks | waves | eff |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, g in enumerate(gemms, 1):
        bw, be = waves(g.before)
        aw, ae = waves(g.after)
        lines.append(f"| {i} | {g.caller} | {g.dtype} | {g.m} x {g.n} x {g.k} | {g.nz} | {g.nr} "
                     f"| {_tiles(g.before)} | {g.before.blocks} | {bw} | {be:.0%} "
                     f"| {_tiles(g.after)} | {g.after.splits} | {g.after.blocks} | {aw} "
                     f"| {ae:.0%} |")
    return "\n".join(lines) + "\n"


def _commit() -> str:
    """The checkout's commit (with '+changes' when the tree differs from it), or '?'."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, text=True, capture_output=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + ("+changes" if dirty else "")


def report() -> str:
    parts = ["# GEMM waves of a training step on an H200 (132 SMs)", "",
             f"Generated by `python -m benchmarks.gemm_waves` at commit {_commit()} "
             "(RecordingLauncher: the kernel path's launches, nothing run). Wave efficiency = blocks / (waves x 132 "
             "x resident blocks per SM: 1 SIMT, 2 tensor cores). *before*: one tile configuration per dtype, no split; "
             "*after*: `gpuops.ops.matmul.plan` (tiles by shape and SM count, split-K).", ""]
    for title, step in (("MLP 784-256-256-10, batch 512", make_step("mlp")),
                        ("CNN (train --model cnn), batch 512", make_step("cnn")),
                        (f"GPT {GPT_SHAPE}, batch {GPT_BATCH}", gpt_step())):
        parts.append(table(title, record(step)))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="also write the Markdown report to this file")
    args = parser.parse_args(argv)
    text = report()
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
