"""Training-step benchmarks (issue: autograd, nn, fused optimizers), side by side in one run.

Two ways to run it:

- as a family of ``python -m benchmarks`` (``--family training``): :func:`cases` gives the
  MLP step (baseline: the same step hand-written with the array module — NumPy on the CPU,
  CuPy and PyTorch on the GPU) and the fused Adam over 100 tensors (baseline: the update
  written per tensor with the array module; PyTorch's ``Adam(fused=True)`` on the GPU);
- standalone, ``python benchmarks/bench_training.py``, which also compares against PyTorch
  on the CPU (the harness's CPU baseline is NumPy only):

1. One training step (forward, cross-entropy, backward, optimizer step) of an MLP
   784-1024-1024-10 at batch 512, and of the digits CNN (``train --model cnn``) on 28x28
   images at batch 128, gpuops vs PyTorch eager (CPU, or GPU when usable).
   The SGD MLP step also as a CUDA graph (``train --cuda-graph``; GPU only) and under
   bfloat16 autocast (``gpuops.autocast`` vs ``torch.autocast``).
2. An Adam step over 100 parameter tensors: the fused ``gpuops.adam_step`` (one call, one
   launch on a GPU) vs calling it once per tensor, vs ``torch.optim.Adam`` (foreach on CPU,
   fused=True on GPU).

Medians of interleaved rounds (wall clock on the CPU; CUDA events on the GPU).
Writes benchmarks/results/training-<device>.json and .md.

    python benchmarks/bench_training.py [--rounds 7] [--steps 5]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gpuops  # noqa: E402
from gpuops import Tensor, nn  # noqa: E402
from gpuops.optim import SGD, Adam  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


# ---- harness family (python -m benchmarks --family training) ---------------------------

_LAYERS = ((784, 1024), (1024, 1024), (1024, 10))


def _reference_mlp_step(m, x, labels, onehot, state: dict) -> None:
    """The MLP step written by hand with array module ``m`` (SGD, momentum 0.9)."""
    if m.__name__ == "torch":
        if "torch" not in state:
            model = m.nn.Sequential(m.nn.Linear(784, 1024), m.nn.ReLU(), m.nn.Linear(1024, 1024),
                                    m.nn.ReLU(), m.nn.Linear(1024, 10)).to(x.device)
            state["torch"] = (model, m.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
        model, opt = state["torch"]
        loss = m.nn.functional.cross_entropy(model(x), labels.long())
        opt.zero_grad()
        loss.backward()
        opt.step()
        return
    if m.__name__ not in state:
        rng = numpy.random.default_rng(0)
        params = []
        for fan_in, fan_out in _LAYERS:
            bound = 1 / numpy.sqrt(fan_in)
            params += [m.asarray(rng.uniform(-bound, bound, (fan_out, fan_in)), dtype=m.float32),
                       m.asarray(rng.uniform(-bound, bound, fan_out), dtype=m.float32)]
        state[m.__name__] = (params, [m.zeros_like(p) for p in params])
    params, bufs = state[m.__name__]
    w1, b1, w2, b2, w3, b3 = params
    h1 = m.maximum(x @ w1.T + b1, 0)
    h2 = m.maximum(h1 @ w2.T + b2, 0)
    z = h2 @ w3.T + b3
    z -= z.max(axis=1, keepdims=True)
    p = m.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    g3 = (p - onehot) / len(x)
    g2 = (g3 @ w3) * (h2 > 0)
    g1 = (g2 @ w2) * (h1 > 0)
    grads = [g1.T @ x, g1.sum(0), g2.T @ h1, g2.sum(0), g3.T @ h2, g3.sum(0)]
    for w, g, b in zip(params, grads, bufs):
        b *= 0.9
        b += g
        w -= 0.01 * b


def cases(env):
    """Cases for the benchmark harness (``python -m benchmarks --family training``)."""
    from benchmarks.harness import Case
    step, (x, labels) = mlp_step(env.on_gpu, "sgd")
    xp = env.xp
    onehot = xp.zeros((len(labels), 10), xp.float32)
    onehot[xp.arange(len(labels)), labels] = 1
    state: dict = {}
    n_params = sum(a * b + b for a, b in _LAYERS)
    mlp = Case("MLP 784-1024-1024-10 SGD step, batch 512", lambda *_: step(),
               (x, labels, onehot), 4 * n_params * 4,
               lambda m, x, labels, onehot: _reference_mlp_step(m, x, labels, onehot, state),
               note="compute-bound (GB/s: parameter traffic only); baseline hand-written")
    params, grads, m1, v1 = _adam_arrays(env.on_gpu)
    counter = {"step": 0}

    def fused(*_):
        counter["step"] += 1
        gpuops.adam_step(params, grads, m1, v1, step=counter["step"])

    adam_state: dict = {}

    def reference_adam(m, *_):
        if m.__name__ == "torch":
            if "opt" not in adam_state:
                tp = [m.tensor(gpuops.to_cpu(p), device="cuda", requires_grad=True)
                      for p in params]
                for p, g in zip(tp, grads):
                    p.grad = m.tensor(gpuops.to_cpu(g), device="cuda")
                adam_state["opt"] = m.optim.Adam(tp, lr=1e-3, fused=True)
            adam_state["opt"].step()
            return
        if m.__name__ not in adam_state:
            adam_state[m.__name__] = ([m.asarray(gpuops.to_cpu(p)) for p in params],
                                      [m.asarray(gpuops.to_cpu(g)) for g in grads],
                                      [m.zeros(p.shape, m.float32) for p in params],
                                      [m.zeros(p.shape, m.float32) for p in params], [0])
        ps, gs, ms, vs, t = adam_state[m.__name__]
        t[0] += 1
        for p, g, mi, vi in zip(ps, gs, ms, vs):
            mi *= 0.9
            mi += 0.1 * g
            vi *= 0.999
            vi += 0.001 * g * g
            p -= (1e-3 / (1 - 0.9 ** t[0])) * mi / (m.sqrt(vi / (1 - 0.999 ** t[0])) + 1e-8)

    n = sum(p.size for p in params)
    steps = [mlp, *_step_cases(env, Case, x, labels, onehot, 4 * n_params * 4)]
    adam = Case("adam_step, 100 tensors (fused: 1 launch)", fused, (), 4 * n * 7, reference_adam,
                note="baseline: the update per tensor in the array module; torch fused=True")
    return [*steps, adam]


def _step_cases(env, Case, x, labels, onehot, parameter_bytes: int) -> list:
    """The MLP step as a CUDA graph (GPU only) and under bfloat16 autocast, and the CNN step,
    each against PyTorch eager (and the hand-written float32 MLP step in the array module)."""
    found = []
    replay = graph_mlp_step(env.on_gpu)
    if replay is not None:
        state: dict = {}
        found.append(Case("MLP 784-1024-1024-10 SGD step, batch 512, CUDA graph replay",
                          lambda *_: replay(), (x, labels, onehot), parameter_bytes,
                          lambda m, *a: _reference_mlp_step(m, *a, state),
                          note="train --cuda-graph; baselines eager"))
    bf16_step, _ = mlp_step(env.on_gpu, "sgd", autocast=gpuops.bfloat16)
    torch_state: dict = {}

    def autocast_reference(m, x, labels, onehot):
        if m.__name__ != "torch":
            return _reference_mlp_step(m, x, labels, onehot, torch_state)
        if "step" not in torch_state:
            torch_state["step"] = torch_mlp_step(m, str(x.device), "sgd", (x, labels),
                                                 autocast=m.bfloat16)
        torch_state["step"]()

    found.append(Case("MLP 784-1024-1024-10 SGD step, batch 512, bfloat16 autocast",
                      lambda *_: bf16_step(), (x, labels, onehot), parameter_bytes,
                      autocast_reference,
                      note="torch: torch.autocast(bfloat16); numpy/cupy: float32 by hand",
                      torch_on_cpu=True))
    cnn, (images, cnn_labels) = cnn_step(env.on_gpu)
    cnn_state: dict = {}

    def cnn_reference(torch, images, cnn_labels):
        if "step" not in cnn_state:
            cnn_state["step"] = torch_cnn_step(torch, str(images.device), (images, cnn_labels))
        cnn_state["step"]()

    found.append(Case(f"CNN (train --model cnn) 28x28 SGD step, batch {CNN_BATCH}",
                      lambda *_: cnn(), (images, cnn_labels), 0, cnn_reference,
                      note="baseline: PyTorch eager only", modules=("torch",),
                      torch_on_cpu=True))
    return found


def _adam_arrays(on_gpu: bool):
    rng = numpy.random.default_rng(1)
    shapes = [(256, 256) if i % 2 else (256,) for i in range(100)]
    put = gpuops.to_gpu if on_gpu else (lambda a: a)
    params = [put(rng.standard_normal(s, dtype=numpy.float32)) for s in shapes]
    grads = [put(rng.standard_normal(s, dtype=numpy.float32)) for s in shapes]
    return params, grads, [put(numpy.zeros(s, numpy.float32)) for s in shapes], \
        [put(numpy.zeros(s, numpy.float32)) for s in shapes]


def _timer(on_gpu: bool):
    """f, n -> seconds per call of f (n calls after one warm-up call)."""
    if not on_gpu:
        def run(f, n):
            f()
            start = time.perf_counter()
            for _ in range(n):
                f()
            return (time.perf_counter() - start) / n
        return run
    import cupy

    def run_gpu(f, n):
        f()
        begin, end = cupy.cuda.Event(), cupy.cuda.Event()
        begin.record()
        for _ in range(n):
            f()
        end.record()
        end.synchronize()
        return cupy.cuda.get_elapsed_time(begin, end) / 1e3 / n
    return run_gpu


def _interleaved(cases: dict, rounds: int, steps: int, timer) -> dict:
    times = {name: [] for name in cases}
    for _ in range(rounds):
        for name, f in cases.items():
            times[name].append(timer(f, steps))
    return {name: statistics.median(t) for name, t in times.items()}


def mlp_step(on_gpu: bool, optimizer: str, autocast=None):
    """One training step of the MLP; ``autocast``: a 16-bit dtype to run it under
    :func:`gpuops.autocast` (float32 parameters, 16-bit matrix products)."""
    rng = numpy.random.default_rng(0)
    x = rng.random((512, 784), dtype=numpy.float32)
    y = rng.integers(0, 10, 512)
    nn.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 1024, activation="relu"),
                          nn.Linear(1024, 1024, activation="relu"), nn.Linear(1024, 10))
    if on_gpu:
        model.to_gpu()
        x, y = gpuops.to_gpu(x), gpuops.to_gpu(y)
    opt = (SGD(model.parameters(), lr=0.01, momentum=0.9) if optimizer == "sgd"
           else Adam(model.parameters(), lr=1e-3))
    loss_fn = nn.CrossEntropyLoss()
    xt = Tensor(x)

    def step():
        with gpuops.autocast(autocast) if autocast is not None else contextlib.nullcontext():
            loss = loss_fn(model(xt), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step, (x, y)


def graph_mlp_step(on_gpu: bool):
    """The SGD MLP step captured as a CUDA graph (:mod:`gpuops.graph`, as ``train
    --cuda-graph``) after one eager warm-up step: the replay, or None without a GPU."""
    if not on_gpu:
        return None
    from gpuops import graph
    step, data = mlp_step(on_gpu, "sgd")
    step()
    return graph.capture(lambda *_: step(), data).replay


def _torch_tensor(torch, a, device: str):
    """``a`` (NumPy, CuPy or torch) as a torch tensor on ``device``."""
    return (a if isinstance(a, torch.Tensor) else torch.as_tensor(gpuops.to_cpu(a))).to(device)


def torch_mlp_step(torch, device: str, optimizer: str, data, autocast=None):
    x, y = (_torch_tensor(torch, a, device) for a in data)
    model = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 10)).to(device)
    opt = (torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9) if optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), lr=1e-3))

    def step():
        with torch.autocast(device, dtype=autocast, enabled=autocast is not None):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


CNN_BATCH = 128


def cnn_step(on_gpu: bool):
    """One SGD step of ``python -m gpuops train --model cnn`` on MNIST-sized images (the
    conv/ReLU/LRN/max-pool network of :func:`gpuops.train.build_model`), batch 128."""
    from gpuops.train import build_model
    rng = numpy.random.default_rng(0)
    x = rng.random((CNN_BATCH, 1, 28, 28), dtype=numpy.float32)
    y = rng.integers(0, 10, CNN_BATCH)
    nn.manual_seed(0)
    model = build_model("cnn", (1, 28, 28), 10)
    if on_gpu:
        model.to_gpu()
        x, y = gpuops.to_gpu(x), gpuops.to_gpu(y)
    opt = SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    loss_fn = nn.CrossEntropyLoss()
    xt = Tensor(x)

    def step():
        loss = loss_fn(model(xt), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step, (x, y)


def torch_cnn_step(torch, device: str, data):
    """The same network and step in PyTorch eager (LocalResponseNorm, Dropout as in gpuops)."""
    x, y = (_torch_tensor(torch, a, device) for a in data)
    f = torch.nn
    model = f.Sequential(f.Conv2d(1, 32, 3, padding=1), f.ReLU(),
                         f.LocalResponseNorm(5, alpha=1e-3, beta=0.75, k=2.0), f.MaxPool2d(2),
                         f.Conv2d(32, 64, 3, padding=1), f.ReLU(), f.MaxPool2d(2), f.Flatten(),
                         f.Linear(64 * 7 * 7, 128), f.ReLU(), f.Dropout(0.25),
                         f.Linear(128, 10)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def adam_cases(on_gpu: bool, torch):
    rng = numpy.random.default_rng(1)
    shapes = [(256, 256) if i % 2 else (256,) for i in range(100)]
    xp = gpuops.get_array_module(gpuops.to_gpu(numpy.zeros(1))) if on_gpu else numpy
    params = [xp.asarray(rng.standard_normal(s, dtype=numpy.float32)) for s in shapes]
    grads = [xp.asarray(rng.standard_normal(s, dtype=numpy.float32)) for s in shapes]
    m = [xp.zeros_like(p) for p in params]
    v = [xp.zeros_like(p) for p in params]
    state = {"step": 0}

    def fused():
        state["step"] += 1
        gpuops.adam_step(params, grads, m, v, step=state["step"])

    def per_tensor():
        state["step"] += 1
        for i in range(len(params)):
            gpuops.adam_step([params[i]], [grads[i]], [m[i]], [v[i]], step=state["step"])

    cases = {"gpuops.adam_step (fused, 1 call)": fused,
             "gpuops.adam_step per tensor (100 calls)": per_tensor}
    if torch is not None:
        device = "cuda" if on_gpu else "cpu"
        tparams = [torch.tensor(gpuops.to_cpu(p), device=device, requires_grad=True)
                   for p in params]
        for p, g in zip(tparams, grads):
            p.grad = torch.tensor(gpuops.to_cpu(g), device=device)
        kind = dict(fused=True) if on_gpu else dict(foreach=True)
        topt = torch.optim.Adam(tparams, lr=1e-3, **kind)
        cases[f"torch.optim.Adam({', '.join(f'{k}=True' for k in kind)})"] = topt.step
    n = sum(int(numpy.prod(s)) for s in shapes)
    return cases, n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    on_gpu = gpuops.gpu_available()
    try:
        import torch
        if on_gpu and not torch.cuda.is_available():
            torch = None
    except ImportError:
        torch = None
    timer = _timer(on_gpu)
    device = "gpu" if on_gpu else "cpu"
    rows = []
    for optimizer in ("sgd", "adam"):
        ours, data = mlp_step(on_gpu, optimizer)
        cases = {"gpuops": ours}
        if torch is not None:
            cases["torch"] = torch_mlp_step(torch, "cuda" if on_gpu else "cpu", optimizer, data)
        t = _interleaved(cases, args.rounds, args.steps, timer)
        rows.append({"benchmark": f"MLP 784-1024-1024-10 step, batch 512, {optimizer}",
                     "gpuops_ms": t["gpuops"] * 1e3,
                     "torch_ms": t["torch"] * 1e3 if "torch" in t else None,
                     "speedup_vs_torch": t["torch"] / t["gpuops"] if "torch" in t else None})
    replay = graph_mlp_step(on_gpu)
    if replay is not None:
        ours, data = mlp_step(on_gpu, "sgd")
        cases = {"gpuops": ours, "graph": replay}
        if torch is not None:
            cases["torch"] = torch_mlp_step(torch, "cuda", "sgd", data)
        t = _interleaved(cases, args.rounds, args.steps, timer)
        rows.append({"benchmark": "MLP 784-1024-1024-10 step, batch 512, sgd, CUDA graph "
                                  "(train --cuda-graph) vs torch eager",
                     "gpuops_ms": t["graph"] * 1e3,
                     "torch_ms": t["torch"] * 1e3 if "torch" in t else None,
                     "speedup_vs_torch": t["torch"] / t["graph"] if "torch" in t else None,
                     "graph_speedup": t["gpuops"] / t["graph"]})
    ours, data = mlp_step(on_gpu, "sgd", autocast=gpuops.bfloat16)
    cases = {"gpuops": ours}
    if torch is not None:
        cases["torch"] = torch_mlp_step(torch, "cuda" if on_gpu else "cpu", "sgd", data,
                                        autocast=torch.bfloat16)
    t = _interleaved(cases, args.rounds, args.steps, timer)
    rows.append({"benchmark": "MLP 784-1024-1024-10 step, batch 512, sgd, bfloat16 autocast "
                              "(gpuops.autocast vs torch.autocast)",
                 "gpuops_ms": t["gpuops"] * 1e3,
                 "torch_ms": t["torch"] * 1e3 if "torch" in t else None,
                 "speedup_vs_torch": t["torch"] / t["gpuops"] if "torch" in t else None})
    ours, data = cnn_step(on_gpu)
    cases = {"gpuops": ours}
    if torch is not None:
        cases["torch"] = torch_cnn_step(torch, "cuda" if on_gpu else "cpu", data)
    t = _interleaved(cases, args.rounds, args.steps, timer)
    rows.append({"benchmark": f"CNN (train --model cnn) 28x28 step, batch {CNN_BATCH}, sgd",
                 "gpuops_ms": t["gpuops"] * 1e3,
                 "torch_ms": t["torch"] * 1e3 if "torch" in t else None,
                 "speedup_vs_torch": t["torch"] / t["gpuops"] if "torch" in t else None})
    cases, n = adam_cases(on_gpu, torch)
    t = _interleaved(cases, args.rounds, args.steps, timer)
    fused = t["gpuops.adam_step (fused, 1 call)"]
    for name, seconds in t.items():
        rows.append({"benchmark": f"Adam, 100 tensors ({n / 1e6:.2f} M floats): {name}",
                     "gpuops_ms": seconds * 1e3 if name.startswith("gpuops") else None,
                     "torch_ms": None if name.startswith("gpuops") else seconds * 1e3,
                     "speedup_vs_torch": None,
                     "fused_speedup": seconds / fused})
    meta = {"device": device, "python": platform.python_version(), "numpy": numpy.__version__,
            "torch": None if torch is None else torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "rounds": args.rounds, "steps_per_round": args.steps,
            "note": "medians of interleaved rounds; speedup > 1 means gpuops is faster"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"training-{device}.json").write_text(json.dumps({"meta": meta, "rows": rows},
                                                                indent=2) + "\n")
    lines = [f"# Training benchmarks ({device})", "", f"{meta}", "",
             "| benchmark | gpuops ms | torch ms | torch/gpuops | time / fused | eager / graph |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        def fmt(v, spec):
            return "" if v is None else format(v, spec)
        lines.append(f"| {r['benchmark']} | {fmt(r['gpuops_ms'], '.2f')} | "
                     f"{fmt(r['torch_ms'], '.2f')} | {fmt(r['speedup_vs_torch'], '.2f')} | "
                     f"{fmt(r.get('fused_speedup'), '.2f')} | "
                     f"{fmt(r.get('graph_speedup'), '.2f')} |")
    (RESULTS / f"training-{device}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
