"""The ``python -m gpuops`` commands. Each subcommand lives in one function."""
from __future__ import annotations

import argparse
import importlib.util
import platform
import shutil
from importlib import metadata

import numpy

from . import backend, cupy_launcher, distributed, kernels


def info(_args: argparse.Namespace) -> int:
    """Print versions, the GPU (if any), test backends and the kernel cache."""
    import gpuops
    print(f"gpuops   {gpuops.__version__}")
    print(f"python   {platform.python_version()}")
    print(f"numpy    {numpy.__version__}")
    cp = backend._cupy()
    print(f"cupy     {cp.__version__ if cp is not None else 'not installed'}")
    print(f"mpi      {_mpi()}")
    if cp is not None and backend.gpu_available():
        props = cp.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        print(f"gpu      yes: {name} (compute capability {props['major']}.{props['minor']})")
    else:
        print("gpu      no usable CUDA GPU")
    suite = ["numpy"]
    if shutil.which("g++") and importlib.util.find_spec("gpuops.emu") is not None:
        suite.append("emu")
    if backend.gpu_available():
        suite.append("cupy")
    print(f"test backends  {', '.join(suite)}")
    print(f"kernel sources {kernels.cuda_dir()} ({', '.join(kernels.families())})")
    print(f"kernel cache   {cupy_launcher.cache_dir()}")
    return 0


def _mpi() -> str:
    """mpi4py's version and the mpiexec that ``train --nproc`` runs (mpi4py.MPI is not
    imported: that would start MPI)."""
    try:
        mpi4py = f"mpi4py {metadata.version('mpi4py')}"
    except metadata.PackageNotFoundError:
        mpi4py = "mpi4py not installed"
    mpiexec = distributed.find_mpiexec()
    hint = "" if mpiexec and "not" not in mpi4py else (
        " (train --nproc needs both: pip install 'gpuops[distributed]')")
    return f"{mpi4py}, mpiexec {mpiexec or 'not found'}{hint}"


def demo(_args: argparse.Namespace) -> int:
    """Run a few operators and their gradients on the best available backend."""
    import gpuops
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal((4, 3)).astype(numpy.float32)
    b = rng.standard_normal(3).astype(numpy.float32)
    where = "GPU (CuPy kernels)" if gpuops.gpu_available() else "CPU (NumPy)"
    if gpuops.gpu_available():
        x, b = gpuops.to_gpu(x), gpuops.to_gpu(b)
    y = gpuops.add(x, b)
    gy = gpuops.get_array_module(y).ones_like(y)
    print(f"backend: {where}")
    print("x + b =\n", gpuops.to_cpu(y))
    print("d(sum(x + b))/db =", gpuops.to_cpu(gpuops.add_wrt_x2(x, b, y, gy)))
    s = gpuops.sin(x)
    print("d(sum(sin x))/dx == cos x:",
          bool(numpy.allclose(gpuops.to_cpu(gpuops.sin_wrt_x1(x, s, gy)),
                              numpy.cos(gpuops.to_cpu(x)), atol=1e-6)))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpuops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, GPU, test backends, kernel cache").set_defaults(run=info)
    sub.add_parser("demo", help="a few operators on the best backend").set_defaults(run=demo)
    from . import train
    train_parser = sub.add_parser("train", help="train a model (default: MLP on digits; "
                                  "--model gpt: a byte-level GPT)",
                                  description=train.__doc__)
    train.add_arguments(train_parser)
    train_parser.set_defaults(run=train.main)
    # parse_args would report a subcommand's unknown options with the top-level usage.
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command = sub.choices[args.command]
        command.error(f"unrecognized arguments: {' '.join(unknown)} "
                      f"(see {command.prog} --help)")
    return args.run(args)
