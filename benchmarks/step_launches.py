"""``python -m benchmarks.step_launches``: what the host does for one training step.

For the MLP and the CNN of ``python -m gpuops train`` (``gpuops.train.build_model``, MNIST
shape 1x28x28, 10 classes, batch 512, ``CrossEntropyLoss``, SGD with momentum 0.9 and
Nesterov as ``train.py`` builds it), steps run on NumPy arrays through the kernel path
with a :class:`~benchmarks.launch_fakes.RecordingLauncher` under
:func:`gpuops.backend.use_cpu_launcher`: every argument check, output allocation, grid
size and launch call of a GPU step is made, no kernel runs (the arrays' contents are
garbage; nothing runs on a GPU). Per step it reports

- kernel launches, by kernel;
- device fills: ``xp.zeros/ones/full`` and their ``*_like`` made by gpuops code through the
  backend's array module (on CuPy each is an allocation plus a memset launch), by call site,
  per step (the mean over 20 steps);
- uploads: ``xp.asarray/array`` of host data by gpuops code (on CuPy a host-to-device copy),
  by call site, per step (the mean over 20 steps: the optimizer uploads a chunk table only
  when the gradients come at addresses it has not seen; NumPy's allocator cycles through a
  few, CuPy's memory pool hands a step the blocks of the step before);
- host microseconds per step: the median (and the minimum) wall time over ``--steps`` timed
  steps, and the median CPU time of the thread (steadier on a shared machine), after the
  warm-up and with the counting off (the counts come from separate steps).

Fills and uploads are told from host-only NumPy calls by the call site's source line: the
call goes through an ``xp`` name (``xp.``, ``call.xp.``, ``self.xp.``), the backend's array
module, which is CuPy on the GPU (on this CPU path it is NumPy).

``--out FILE`` writes the Markdown tables (one section, titled ``--label``).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import linecache
import platform
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy

from gpuops import backend, nn, optim
from gpuops.autograd import Tensor
from gpuops.train import build_model

from .launch_fakes import RecordingLauncher

BATCH = 512
IMAGE = (1, 28, 28)
CLASSES = 10
MODELS = ("mlp", "cnn")
FILLS = ("zeros", "ones", "full", "zeros_like", "ones_like", "full_like")
UPLOADS = ("asarray", "array")
_GPUOPS = str(Path(__file__).resolve().parents[1] / "gpuops")


def make_step(model_name: str, seed: int = 0) -> Callable[[], Any]:
    """One training step of ``model_name`` as ``train.py`` takes it (zero_grad, forward,
    loss, backward, SGD step) on fixed random NumPy data."""
    nn.manual_seed(seed)
    model = build_model(model_name, IMAGE, CLASSES)
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    criterion = nn.CrossEntropyLoss()
    rng = numpy.random.default_rng(seed)
    x = rng.standard_normal((BATCH, *IMAGE)).astype(numpy.float32)
    labels = rng.integers(0, CLASSES, BATCH)

    def step() -> Any:
        logits = model(Tensor(x))
        loss = criterion(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    return step


class ArrayCalls:
    """Counts the fills and uploads gpuops makes through the backend's array module, by
    call site (``file:line``), while :meth:`counting` is open."""

    def __init__(self) -> None:
        self.fills: Counter = Counter()
        self.uploads: Counter = Counter()

    def _wrap(self, name: str, original: Callable, sink: Counter) -> Callable:
        through_xp = re.compile(rf"\bxp\.{name}\(")

        @functools.wraps(original)
        def counted(*args: Any, **kwargs: Any) -> Any:
            frame = sys._getframe(1)
            path = frame.f_code.co_filename
            if path.startswith(_GPUOPS):
                line = linecache.getline(path, frame.f_lineno)
                if through_xp.search(line):
                    site = f"gpuops/{Path(path).relative_to(_GPUOPS).as_posix()}:{frame.f_lineno}"
                    sink[f"{site} xp.{name}"] += 1
            return original(*args, **kwargs)

        return counted

    @contextlib.contextmanager
    def counting(self) -> Iterator["ArrayCalls"]:
        saved = {name: getattr(numpy, name) for name in FILLS + UPLOADS}
        for name in FILLS:
            setattr(numpy, name, self._wrap(name, saved[name], self.fills))
        for name in UPLOADS:
            setattr(numpy, name, self._wrap(name, saved[name], self.uploads))
        try:
            yield self
        finally:
            for name, original in saved.items():
                setattr(numpy, name, original)


def measure(model_name: str, steps: int = 300, warmup: int = 5, counted: int = 20) -> dict:
    """Launches of one step (the step after ``warmup`` steps), fills and uploads per step
    (over ``counted`` steps: a table upload happens only when the gradients land at new
    addresses) and the median host time of ``steps`` steps of ``model_name``."""
    step = make_step(model_name)
    recorder = RecordingLauncher()
    calls = ArrayCalls()
    with backend.use_cpu_launcher(recorder):
        for _ in range(warmup):
            step()
        recorder.launches.clear()
        step()
        launches = list(recorder.launches)
        with calls.counting():
            for _ in range(counted):
                step()
        recorder.record = False
        times, cpu = [], []
        for _ in range(steps):
            start, start_cpu = time.perf_counter(), time.thread_time()
            step()
            cpu.append(time.thread_time() - start_cpu)
            times.append(time.perf_counter() - start)
    return {"model": model_name,
            "launches": len(launches),
            "by_kernel": Counter(f"{family}/{kernel}" for family, kernel, *_ in launches),
            "sequence": [f"{kernel} grid={grid}" for _family, kernel, grid, *_ in launches],
            "fills": {k: n / counted for k, n in calls.fills.items()},
            "uploads": {k: n / counted for k, n in calls.uploads.items()},
            "us_median": statistics.median(times) * 1e6, "us_min": min(times) * 1e6,
            "cpu_us_median": statistics.median(cpu) * 1e6,
            "steps": steps}


def split(model_name: str, steps: int = 300, warmup: int = 5) -> dict[str, float]:
    """CPU microseconds per step inside the parts of a step: the GEMM launcher
    (``gpuops.ops.matmul.gemm``, every call), the model's forward, the loss, backward (the
    engine: ``Tensor.backward`` less the gradient functions it calls), the gradient
    functions, the optimizer step; and the whole step. Timed with wrappers (their own cost
    included), so the parts are estimates."""
    from gpuops import autograd
    from gpuops.ops import matmul
    spent: Counter = Counter()
    saved: list[tuple[Any, str, Any]] = []

    def timed(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)
        saved.append((owner, name, original))

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                spent[label] += time.thread_time() - start

        setattr(owner, name, wrapper)

    step = make_step(model_name)
    timed(matmul, "gemm", "gemm() calls")
    timed(nn.Sequential, "forward", "model forward")
    timed(nn.CrossEntropyLoss, "forward", "loss forward")
    timed(autograd.Tensor, "backward", "backward")
    timed(autograd.Function, "backward", "gradient functions")
    timed(optim.SGD, "step", "optimizer step")
    try:
        with backend.use_cpu_launcher(RecordingLauncher(record=False)):
            for _ in range(warmup):
                step()
            spent.clear()
            start = time.thread_time()
            for _ in range(steps):
                step()
            total = time.thread_time() - start
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)
    out = {label: spent[label] / steps * 1e6 for label in spent}
    out["backward engine"] = out.pop("backward") - out["gradient functions"]
    out["whole step"] = total / steps * 1e6
    return out


def markdown(results: list[dict], label: str) -> str:
    lines = [f"## {label}", "",
             f"Python {platform.python_version()}, NumPy {numpy.__version__}, "
             f"{platform.processor() or platform.machine()}; batch {BATCH}, "
             f"SGD(momentum=0.9, nesterov=True); host time over "
             f"{results[0]['steps']} steps.", "",
             "| model | launches | fills (memsets) per step | uploads per step "
             "| host µs/step: wall median (min) | CPU µs/step median |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['launches']} | {sum(r['fills'].values()):g} | "
                     f"{sum(r['uploads'].values()):g} | {r['us_median']:.0f} "
                     f"({r['us_min']:.0f}) | {r['cpu_us_median']:.0f} |")
    for r in results:
        if "split" in r:
            lines += ["", f"{r['model']}: CPU µs per step by part (`--split`; nested: gemm() "
                      "calls are inside the forward and the gradient functions): "
                      + ", ".join(f"{k} {v:.0f}" for k, v in r["split"].items())]
    for r in results:
        lines += ["", f"### {r['model']}: launches by kernel", "", "| kernel | per step |",
                  "|---|---|"]
        lines += [f"| {k} | {n} |" for k, n in sorted(r["by_kernel"].items())]
        for title, counts in (("fills", r["fills"]), ("uploads", r["uploads"])):
            if counts:
                lines += ["", f"{r['model']} {title} by call site: "
                          + ", ".join(f"`{site}` x{n:g}" for site, n in sorted(counts.items()))]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_launches",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, action="append",
                        help="mlp or cnn (repeatable; default both)")
    parser.add_argument("--steps", type=int, default=300, help="timed steps (default 300)")
    parser.add_argument("--sequence", action="store_true",
                        help="also print every launch of the step in order")
    parser.add_argument("--split", action="store_true",
                        help="also time the parts of a step (GEMM launcher, forward, loss, "
                        "backward engine, gradient functions, optimizer)")
    parser.add_argument("--out", type=Path, help="write the Markdown tables to this file")
    parser.add_argument("--label", default="Measured", help="the Markdown section's title")
    args = parser.parse_args(argv)
    results = []
    for name in args.model or MODELS:
        r = measure(name, args.steps)
        results.append(r)
        print(f"{name}: {r['launches']} launches, {sum(r['fills'].values()):g} fills, "
              f"{sum(r['uploads'].values()):g} uploads, {r['us_median']:.0f} us/step median "
              f"({r['us_min']:.0f} min), CPU {r['cpu_us_median']:.0f} us/step median")
        for kernel, n in sorted(r["by_kernel"].items()):
            print(f"  {n:3d} {kernel}")
        for title, counts in (("fill", r["fills"]), ("upload", r["uploads"])):
            for site, n in sorted(counts.items()):
                print(f"  {n:5.2f} {title} {site}")
        if args.split:
            r["split"] = split(name, args.steps)
            print("  CPU us/step: " + ", ".join(f"{k} {v:.0f}" for k, v in r["split"].items()))
        if args.sequence:
            for line in r["sequence"]:
                print(f"      {line}")
    text = markdown(results, args.label)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
