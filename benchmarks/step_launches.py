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
  backend's array module (on CuPy each is an allocation plus a memset launch), by call site;
- uploads: ``xp.asarray/array`` of host data by gpuops code (on CuPy a host-to-device copy),
  by call site;
- host microseconds per step: the median over ``--steps`` timed steps (after warm-up steps),
  with the counting off (the counts come from separate steps).

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


def measure(model_name: str, steps: int = 300, warmup: int = 5) -> dict:
    """Launches, fills and uploads of one step (the step after ``warmup`` steps) and the
    median host time of ``steps`` steps of ``model_name``."""
    step = make_step(model_name)
    recorder = RecordingLauncher()
    calls = ArrayCalls()
    with backend.use_cpu_launcher(recorder):
        for _ in range(warmup):
            step()
        recorder.launches.clear()
        with calls.counting():
            step()
        launches = list(recorder.launches)
        recorder.record = False
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    return {"model": model_name,
            "launches": len(launches),
            "by_kernel": Counter(f"{family}/{kernel}" for family, kernel, *_ in launches),
            "sequence": [f"{kernel} grid={grid}" for _family, kernel, grid, *_ in launches],
            "fills": calls.fills, "uploads": calls.uploads,
            "us_median": statistics.median(times) * 1e6, "us_min": min(times) * 1e6,
            "steps": steps}


def markdown(results: list[dict], label: str) -> str:
    lines = [f"## {label}", "",
             f"Python {platform.python_version()}, NumPy {numpy.__version__}, "
             f"{platform.processor() or platform.machine()}; batch {BATCH}, "
             f"SGD(momentum=0.9, nesterov=True); host time: median (min) of "
             f"{results[0]['steps']} steps.", "",
             "| model | launches | fills (memsets) | uploads | host µs/step |",
             "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['launches']} | {sum(r['fills'].values())} | "
                     f"{sum(r['uploads'].values())} | {r['us_median']:.0f} "
                     f"({r['us_min']:.0f}) |")
    for r in results:
        lines += ["", f"### {r['model']}: launches by kernel", "", "| kernel | per step |",
                  "|---|---|"]
        lines += [f"| {k} | {n} |" for k, n in sorted(r["by_kernel"].items())]
        for title, counts in (("fills", r["fills"]), ("uploads", r["uploads"])):
            if counts:
                lines += ["", f"{r['model']} {title} by call site: "
                          + ", ".join(f"`{site}` x{n}" for site, n in sorted(counts.items()))]
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
    parser.add_argument("--out", type=Path, help="write the Markdown tables to this file")
    parser.add_argument("--label", default="Measured", help="the Markdown section's title")
    args = parser.parse_args(argv)
    results = []
    for name in args.model or MODELS:
        r = measure(name, args.steps)
        results.append(r)
        print(f"{name}: {r['launches']} launches, {sum(r['fills'].values())} fills, "
              f"{sum(r['uploads'].values())} uploads, {r['us_median']:.0f} us/step median "
              f"({r['us_min']:.0f} min)")
        for kernel, n in sorted(r["by_kernel"].items()):
            print(f"  {n:3d} {kernel}")
        for title, counts in (("fill", r["fills"]), ("upload", r["uploads"])):
            for site, n in sorted(counts.items()):
                print(f"  {n:3d} {title} {site}")
        if args.sequence:
            for line in r["sequence"]:
                print(f"      {line}")
    text = markdown(results, args.label)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
